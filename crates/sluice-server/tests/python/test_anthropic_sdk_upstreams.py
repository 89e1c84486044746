"""Drives sluice's `/v1/messages` with the official Anthropic Python SDK's `messages.stream`,
with tools and with extended thinking, for models on an Anthropic upstream (`claude`) and
on an OpenAI-compatible one (`oai`).

Run by tests/python_sdk.rs, which starts one fake upstream speaking both formats and a
gateway in front of it, and passes the gateway's root URL in `SLUICE_BASE_URL`. The fake's
answer is chosen per request with `x_fake` (carried through sluice's translations): a tool
call, or a transcript replayed as the provider documents it (Anthropic's `thinking` block
with `thinking_delta` and `signature_delta`; an OpenAI-compatible server's
`reasoning_content` deltas, as DeepSeek and vLLM send them). Plain script: one line per
check, then `N passed, N failed`; the exit code is non-zero if any check failed.
"""

import json
import os
import sys
import traceback

import anthropic

import tangled

client = anthropic.Anthropic(
    base_url=os.environ["SLUICE_BASE_URL"], api_key="sk-ant-test", max_retries=0, timeout=10
)
MODELS = ["claude", "oai"]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather now",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
THOUGHT = ["The user asks about Paris. ", "Check the forecast."]
ANSWER = "Paris is sunny."


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def sse(name, data):
    prefix = f"event: {name}\n" if name else ""
    return f"{prefix}data: {json.dumps(data)}\n\n"


def thinking_transcript(model):
    """The upstream's stream of a thought and an answer, in the upstream's own format."""
    if model == "claude":
        def delta(i, d):
            return sse("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})

        return [
            sse("message_start", {"type": "message_start", "message": {
                "id": "msg_sdk1", "type": "message", "role": "assistant", "model": "up", "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
            sse("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "thinking", "thinking": ""}}),
            delta(0, {"type": "thinking_delta", "thinking": THOUGHT[0]}),
            delta(0, {"type": "thinking_delta", "thinking": THOUGHT[1]}),
            delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxB"}),
            sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse("content_block_start", {"type": "content_block_start", "index": 1,
                                        "content_block": {"type": "text", "text": ""}}),
            delta(1, {"type": "text_delta", "text": ANSWER}),
            sse("content_block_stop", {"type": "content_block_stop", "index": 1}),
            sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": 30}}),
            sse("message_stop", {"type": "message_stop"}),
        ]

    def chunk(delta, finish=None, usage=None):
        c = {"id": "chatcmpl-sdk1", "object": "chat.completion.chunk", "created": 1, "model": "up",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage:
            c["choices"] = []
            c["usage"] = usage
        return sse(None, c)

    return [
        chunk({"role": "assistant", "content": None, "reasoning_content": THOUGHT[0]}),
        chunk({"reasoning_content": THOUGHT[1]}),
        chunk({"content": ANSWER}),
        chunk({}, "stop"),
        chunk(None, usage={"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42,
                           "completion_tokens_details": {"reasoning_tokens": 20}}),
        "data: [DONE]\n\n",
    ]


def test_messages_stream_with_tools():
    for model in MODELS:
        with client.messages.stream(
            model=model,
            max_tokens=256,
            tools=[WEATHER_TOOL],
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            extra_body={"x_fake": {"tool_call": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}},
        ) as stream:
            pieces = [e.partial_json for e in stream if e.type == "input_json"]
            final = stream.get_final_message()
        check(len(pieces) >= 2, f"{model}: argument pieces: {pieces!r}")
        check(json.loads("".join(pieces)) == {"city": "Paris"}, f"{model}: pieces: {pieces!r}")
        check(final.stop_reason == "tool_use", f"{model}: stop_reason: {final.stop_reason!r}")
        uses = [b for b in final.content if b.type == "tool_use"]
        check(len(uses) == 1 and uses[0].name == "get_weather", f"{model}: content: {final.content!r}")
        check(uses[0].input == {"city": "Paris"}, f"{model}: input: {uses[0].input!r}")
        # The result goes back, and the conversation goes on.
        reply = client.messages.create(
            model=model,
            max_tokens=256,
            tools=[WEATHER_TOOL],
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [b.model_dump() for b in final.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "21 C"}]},
            ],
        )
        check(reply.stop_reason == "end_turn" and reply.content[0].type == "text", f"{model}: reply: {reply!r}")


def test_messages_stream_with_thinking():
    for model in MODELS:
        with client.messages.stream(
            model=model,
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            extra_body={"x_fake": {"replay": thinking_transcript(model)}},
        ) as stream:
            events = list(stream)
            thoughts = [e.thinking for e in events if e.type == "thinking"]
            final = stream.get_final_message()
        check(thoughts == THOUGHT, f"{model}: thinking events: {thoughts!r}")
        # Anthropic's count is in its message_start, which sluice's carries; the OpenAI-format
        # upstream's comes at the end (message_start has sluice's estimate).
        start = next(e for e in events if e.type == "message_start").message.usage.input_tokens
        if model == "claude":
            check(start == 12, f"{model}: message_start input_tokens: {start}")
        check(start > 0, f"{model}: message_start input_tokens: {start}")
        check(final.usage.input_tokens == 12, f"{model}: usage: {final.usage!r}")
        kinds = [b.type for b in final.content]
        check(kinds == ["thinking", "text"], f"{model}: content: {final.content!r}")
        check(final.content[0].thinking == "".join(THOUGHT), f"{model}: thinking: {final.content[0]!r}")
        check(final.content[1].text == ANSWER, f"{model}: text: {final.content[1]!r}")
        check(final.stop_reason == "end_turn", f"{model}: stop_reason: {final.stop_reason!r}")
        check(final.usage.output_tokens == 30, f"{model}: usage: {final.usage!r}")
        signed = model == "claude"
        check(bool(final.content[0].signature) == signed, f"{model}: signature: {final.content[0]!r}")
        # The thinking goes back with the next turn (signed blocks reach Anthropic as they were).
        reply = client.messages.create(
            model=model,
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [b.model_dump() for b in final.content]},
                {"role": "user", "content": "And in Rome?"},
            ],
        )
        check(reply.content[-1].type == "text", f"{model}: reply: {reply!r}")


def test_messages_stream_with_tangled_calls():
    """Calls started together, interleaved with each other and with text, from an
    OpenAI-compatible upstream: every block whole and in turn through the SDK's own
    accumulator, nothing of a block after its stop."""
    with client.messages.stream(
        model="oai",
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        extra_body={"x_fake": {"replay": tangled.stream()}},
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    open_block, started = None, 0
    for e in events:
        if e.type == "content_block_start":
            check(open_block is None and e.index == started, f"start: {e!r}")
            open_block, started = e.index, started + 1
        elif e.type == "content_block_delta":
            check(e.index == open_block, f"a delta outside its block: {e!r}")
        elif e.type == "content_block_stop":
            check(e.index == open_block, f"stop: {e!r}")
            open_block = None
    check(open_block is None and started == 7, f"blocks: {started}")
    kinds = [b.type for b in final.content]
    check(kinds == ["text", "tool_use", "tool_use", "text", "tool_use", "tool_use", "text"], f"content: {kinds!r}")
    texts = [final.content[i].text for i in (0, 3, 6)]
    check(texts == tangled.TEXTS, f"texts: {texts!r}")
    calls = [(b.id, b.name, b.input) for b in final.content if b.type == "tool_use"]
    expected = [(i, n, json.loads(a) if a else {}) for i, n, a in tangled.CALLS]
    check(calls == expected, f"calls: {calls!r}")
    check(final.stop_reason == "tool_use", f"stop_reason: {final.stop_reason!r}")


def main():
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
            print(f"ok   {name}")
            passed += 1
        except Exception:  # noqa: BLE001 - report every failure and go on
            print(f"FAIL {name}")
            traceback.print_exc(file=sys.stdout)
            failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
