"""Drives sluice's `/v1/responses` with the official OpenAI Python SDK (`responses.create`,
`responses.stream`, `responses.parse`) for models on an Anthropic upstream (`claude`) and on
a Gemini upstream (`gem`): tools, structured output, `previous_response_id` and reasoning.
(The OpenAI-compatible upstream is driven by test_openai_sdk.py.)

Run by tests/python_sdk.rs, which starts one fake upstream speaking both formats and a
gateway in front of it, passes the gateway's base URL in `SLUICE_BASE_URL`, and afterwards
checks what went upstream (a continued response's conversation). The fake's answer is
chosen per request with `x_fake`: a tool call, content, or a transcript replayed as the
provider documents it. Plain script: one line per check, then `N passed, N failed`; the exit
code is non-zero if any check failed.
"""

import json
import os
import sys
import traceback

from openai import OpenAI

import tangled

client = OpenAI(base_url=os.environ["SLUICE_BASE_URL"], api_key="sk-test", max_retries=0, timeout=10)
MODELS = ["claude", "gem"]
EXPECTED_TEXT = "Hello from the fake upstream."
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
WEATHER_CALL = {"tool_call": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
THOUGHT = ["The user asks about Paris. ", "Check the forecast."]
ANSWER = "Paris is sunny."


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def thinking_transcript(model):
    """The upstream's stream of a thought and an answer, in the upstream's own format."""
    if model == "claude":
        def ev(name, data):
            return f"event: {name}\ndata: {json.dumps(data)}\n\n"

        def delta(i, d):
            return ev("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})

        return [
            ev("message_start", {"type": "message_start", "message": {
                "id": "msg_sdk1", "type": "message", "role": "assistant", "model": "up", "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
            ev("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "thinking", "thinking": ""}}),
            delta(0, {"type": "thinking_delta", "thinking": THOUGHT[0]}),
            delta(0, {"type": "thinking_delta", "thinking": THOUGHT[1]}),
            delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxB"}),
            ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ev("content_block_start", {"type": "content_block_start", "index": 1,
                                       "content_block": {"type": "text", "text": ""}}),
            delta(1, {"type": "text_delta", "text": ANSWER}),
            ev("content_block_stop", {"type": "content_block_stop", "index": 1}),
            ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": 30}}),
            ev("message_stop", {"type": "message_stop"}),
        ]

    def data(parts, finish=None, usage=None):
        c = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            c["finishReason"] = finish
        return f"data: {json.dumps({'candidates': [c], 'usageMetadata': usage or {'promptTokenCount': 12}})}\n\n"

    return [
        data([{"text": THOUGHT[0], "thought": True}]),
        data([{"text": THOUGHT[1], "thought": True}]),
        data([{"text": ANSWER}], "STOP", {"promptTokenCount": 12, "candidatesTokenCount": 10,
                                          "thoughtsTokenCount": 20, "totalTokenCount": 42}),
    ]


def test_responses_create_with_tools():
    for model in MODELS:
        r = client.responses.create(
            model=model, input="Weather in Paris?", tools=[WEATHER_TOOL], extra_body={"x_fake": WEATHER_CALL}
        )
        calls = [o for o in r.output if o.type == "function_call"]
        check(len(calls) == 1 and calls[0].name == "get_weather", f"{model}: output: {r.output!r}")
        check(json.loads(calls[0].arguments) == {"city": "Paris"}, f"{model}: arguments: {calls[0].arguments!r}")
        check(r.status == "completed", f"{model}: status: {r.status!r}")
        call = calls[0]
        r2 = client.responses.create(
            model=model,
            input=[
                {"role": "user", "content": "Weather in Paris?"},
                {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'},
            ],
            tools=[WEATHER_TOOL],
        )
        check(r2.output_text == EXPECTED_TEXT, f"{model}: output_text: {r2.output_text!r}")


def test_responses_stream_with_tools():
    for model in MODELS:
        with client.responses.stream(
            model=model, input="Weather in Paris?", tools=[WEATHER_TOOL], extra_body={"x_fake": WEATHER_CALL}
        ) as stream:
            events = list(stream)
            final = stream.get_final_response()
        deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
        check(json.loads("".join(deltas)) == {"city": "Paris"}, f"{model}: deltas: {deltas!r}")
        check([e.sequence_number for e in events] == list(range(len(events))), f"{model}: sequence numbers")
        check(events[-1].type == "response.completed", f"{model}: last: {events[-1].type}")
        call = final.output[-1]
        check(call.type == "function_call" and call.name == "get_weather", f"{model}: final: {final.output!r}")
        check(json.loads(call.arguments) == {"city": "Paris"}, f"{model}: arguments: {call.arguments!r}")


def parallel_calls_transcript(model):
    """The upstream's stream of two calls (Paris, then Rome), in the upstream's own format."""
    if model == "claude":
        def ev(name, data):
            return f"event: {name}\ndata: {json.dumps(data)}\n\n"

        out = [ev("message_start", {"type": "message_start", "message": {
            "id": "msg_sdk2", "type": "message", "role": "assistant", "model": "up", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}}})]
        for i, city in enumerate(["Paris", "Rome"]):
            out.append(ev("content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                "type": "tool_use", "id": f"toolu_{i}", "name": "get_weather", "input": {}}}))
            for piece in ['{"city": ', json.dumps(city) + "}"]:
                out.append(ev("content_block_delta", {"type": "content_block_delta", "index": i,
                                                      "delta": {"type": "input_json_delta", "partial_json": piece}}))
            out.append(ev("content_block_stop", {"type": "content_block_stop", "index": i}))
        out.append(ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use",
                                                                           "stop_sequence": None},
                                        "usage": {"output_tokens": 30}}))
        out.append(ev("message_stop", {"type": "message_stop"}))
        return out
    parts = [{"functionCall": {"name": "get_weather", "args": {"city": c}}} for c in ["Paris", "Rome"]]
    c = {"content": {"role": "model", "parts": parts}, "index": 0, "finishReason": "STOP"}
    usage = {"promptTokenCount": 12, "candidatesTokenCount": 10, "totalTokenCount": 22}
    return [f"data: {json.dumps({'candidates': [c], 'usageMetadata': usage})}\n\n"]


def test_responses_stream_parallel_calls_end_one_by_one():
    for model in MODELS:
        with client.responses.stream(
            model=model, input="Weather in Paris and Rome?", tools=[WEATHER_TOOL],
            extra_body={"x_fake": {"replay": parallel_calls_transcript(model)}},
        ) as stream:
            events = list(stream)
            final = stream.get_final_response()
        # Each call is done (arguments, then the item) before the next one is added, as
        # OpenAI streams them.
        order = [(e.type, e.output_index) for e in events if e.type in (
            "response.output_item.added", "response.function_call_arguments.done", "response.output_item.done")]
        expected = [(kind, i) for i in (0, 1) for kind in (
            "response.output_item.added", "response.function_call_arguments.done", "response.output_item.done")]
        check(order == expected, f"{model}: order: {order!r}")
        check([e.sequence_number for e in events] == list(range(len(events))), f"{model}: sequence numbers")
        cities = [json.loads(o.arguments)["city"] for o in final.output if o.type == "function_call"]
        check(cities == ["Paris", "Rome"], f"{model}: final: {final.output!r}")


def test_responses_stream_with_tangled_calls():
    """Calls started together, interleaved with each other and with text, from an
    OpenAI-compatible upstream (`oai`): every item whole and in turn through the SDK's own
    accumulator, nothing of an item after its `output_item.done`."""
    with client.responses.stream(
        model="oai", input="Weather in Paris?", tools=[WEATHER_TOOL],
        extra_body={"x_fake": {"replay": tangled.stream()}},
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    open_item, added = None, 0
    for e in events:
        index = getattr(e, "output_index", None)
        if e.type == "response.output_item.added":
            check(open_item is None and index == added, f"added: {e!r}")
            open_item, added = index, added + 1
        elif e.type == "response.output_item.done":
            check(index == open_item, f"done: {e!r}")
            open_item = None
        elif index is not None:
            check(index == open_item, f"an event outside its item: {e!r}")
    check(open_item is None and added == 7, f"items: {added}")
    kinds = [o.type for o in final.output]
    check(kinds == ["message", "function_call", "function_call", "message", "function_call", "function_call",
                    "message"], f"output: {kinds!r}")
    texts = [final.output[i].content[0].text for i in (0, 3, 6)]
    check(texts == tangled.TEXTS, f"texts: {texts!r}")
    calls = [(o.call_id, o.name, o.arguments) for o in final.output if o.type == "function_call"]
    check(calls == tangled.CALLS, f"calls: {calls!r}")
    check(final.output_text == "".join(tangled.TEXTS), f"output_text: {final.output_text!r}")


def test_responses_structured_output():
    from pydantic import BaseModel

    class Answer(BaseModel):
        answer: str

    for model in MODELS:
        r = client.responses.parse(
            model=model, input="yes or no?", text_format=Answer,
            extra_body={"x_fake": {"content": '{"answer":"yes"}'}},
        )
        check(r.output_parsed == Answer(answer="yes"), f"{model}: parsed: {r.output_parsed!r}")


def test_responses_previous_response_id():
    for model in MODELS:
        first = client.responses.create(model=model, input=f"My name is Ann ({model}).")
        second = client.responses.create(model=model, input="What is my name?", previous_response_id=first.id)
        check(second.previous_response_id == first.id, f"{model}: previous: {second.previous_response_id!r}")
        check(second.output_text == EXPECTED_TEXT, f"{model}: output_text: {second.output_text!r}")


def test_responses_stream_with_reasoning():
    for model in MODELS:
        with client.responses.stream(
            model=model, input="Weather in Paris?", reasoning={"effort": "low", "summary": "auto"},
            extra_body={"x_fake": {"replay": thinking_transcript(model)}},
        ) as stream:
            events = list(stream)
            final = stream.get_final_response()
        summary = [e.delta for e in events if e.type == "response.reasoning_summary_text.delta"]
        check(summary == THOUGHT, f"{model}: summary deltas: {summary!r}")
        kinds = [o.type for o in final.output]
        check(kinds == ["reasoning", "message"], f"{model}: output: {final.output!r}")
        check(final.output[0].summary[0].text == "".join(THOUGHT), f"{model}: reasoning: {final.output[0]!r}")
        check(final.output_text == ANSWER, f"{model}: output_text: {final.output_text!r}")
        if model != "claude":
            continue
        # Anthropic's signed thinking goes back with the turn it belongs to: through a
        # stored response (previous_response_id), and through encrypted_content replayed
        # by a client that stores nothing (store=False, as Codex does).
        again = client.responses.create(
            model=model, input="And Rome?", previous_response_id=final.id, reasoning={"effort": "low"}
        )
        check(again.status == "completed", f"{model}: continued: {again!r}")
        with client.responses.stream(
            model=model, input="Weather in Paris?", reasoning={"effort": "low"}, store=False,
            include=["reasoning.encrypted_content"],
            extra_body={"x_fake": {"replay": thinking_transcript(model)}},
        ) as stream:
            unstored = stream.get_final_response()
        encrypted = unstored.output[0].encrypted_content
        check(encrypted and encrypted.startswith("sluice-thinking:"), f"{model}: encrypted: {encrypted!r}")
        replayed = client.responses.create(
            model=model, store=False, reasoning={"effort": "low"},
            input=[{"role": "user", "content": "Weather in Paris?"}]
            + [o.model_dump(exclude_none=True) for o in unstored.output]
            + [{"role": "user", "content": "And Rome? (replayed)"}],
        )
        check(replayed.status == "completed", f"{model}: replayed: {replayed!r}")


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
