"""A chat stream whose tool calls are as tangled as OpenAI-compatible servers make them, for
the SDK scripts (the same stream as tests/common/tangled.rs, less the call whose arguments
are never JSON, which the Anthropic SDK refuses outright): calls started before any
arguments, arguments interleaved between calls and with text, a call's JSON complete and
then more of it, a function without parameters (`""` throughout), text after the calls.
`CALLS` and `TEXTS` are what each call and each piece of text should come out as, in turn:
TEXTS[0], CALLS[0], CALLS[1], TEXTS[1], CALLS[2], CALLS[3], TEXTS[2].
"""

import json

CALLS = [
    ("c0", "get_weather", '{"city":"Paris"}\n'),
    ("c1", "get_time", '{"tz":"CET"}'),
    ("c2", "now", ""),
    ("c3", "lookup", '{"q":"x"}'),
]
TEXTS = ["Let me check.", " One moment.", "Done."]


def _chunk(delta, finish=None):
    c = {"id": "chatcmpl-tangled", "object": "chat.completion.chunk", "created": 1, "model": "up",
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(c)}\n\n"


def _call(i, args):
    call_id, name, _ = CALLS[i]
    return _chunk({"tool_calls": [{"index": i, "id": call_id, "type": "function",
                                   "function": {"name": name, "arguments": args}}]})


def _more(i, args):
    return _chunk({"tool_calls": [{"index": i, "function": {"arguments": args}}]})


def stream():
    usage = {"id": "chatcmpl-tangled", "object": "chat.completion.chunk", "created": 1, "model": "up",
             "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}}
    return [
        _chunk({"role": "assistant", "content": TEXTS[0]}),
        _call(0, ""),
        _call(1, ""),
        _more(0, '{"city":'),
        _chunk({"content": TEXTS[1]}),
        _more(1, '{"tz":"CET"}'),
        _more(0, '"Paris"}'),
        _more(0, "\n"),
        _call(2, ""),
        _call(3, CALLS[3][2]),
        _chunk({"content": TEXTS[2]}),
        _chunk({}, "tool_calls"),
        f"data: {json.dumps(usage)}\n\n",
        "data: [DONE]\n\n",
    ]
