"""Drives sluice's native Responses upstream path with the official OpenAI Python SDK.

Run by tests/python_sdk.rs against a gateway whose provider has `responses = "native"`,
so `/v1/responses` goes to the fake upstream's own `/v1/responses` (OpenAI's documented
format) and comes back as it came. Plain script, as test_openai_sdk.py.
"""

import json
import os
import sys
import traceback

import openai
from openai import OpenAI

BASE_URL = os.environ["SLUICE_BASE_URL"]
EXPECTED_TEXT = "Hello from the fake upstream."
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
WEATHER_CALL = {"tool_call": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}

client = OpenAI(base_url=BASE_URL, api_key="sk-test", max_retries=0, timeout=10)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def test_create():
    r = client.responses.create(model="m", input="hi", instructions="Be brief.")
    check(r.id.startswith("resp_fake_"), f"the upstream's id: {r.id!r}")
    check(r.output_text == EXPECTED_TEXT, f"output_text: {r.output_text!r}")
    check(r.usage.input_tokens == 12 and r.usage.output_tokens == 9, f"usage: {r.usage!r}")


def test_stream_helper_with_tools():
    with client.responses.stream(
        model="m", input="Weather in Paris?", tools=[WEATHER_TOOL], extra_body={"x_fake": WEATHER_CALL}
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    check("".join(deltas) == '{"city":"Paris"}' and len(deltas) >= 2, f"deltas: {deltas!r}")
    call = final.output[0]
    check(call.type == "function_call" and call.name == "get_weather", f"final: {final.output!r}")
    # The result fed back, continuing the stored response.
    r = client.responses.create(
        model="m",
        previous_response_id=final.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}],
        tools=[WEATHER_TOOL],
    )
    check(r.output_text == EXPECTED_TEXT, f"output_text: {r.output_text!r}")
    check(r.previous_response_id == final.id, f"previous: {r.previous_response_id!r}")


def test_structured_output():
    from pydantic import BaseModel

    class Answer(BaseModel):
        answer: str

    r = client.responses.parse(
        model="m", input="yes or no?", text_format=Answer, extra_body={"x_fake": {"content": '{"answer":"yes"}'}}
    )
    check(r.output_parsed == Answer(answer="yes"), f"parsed: {r.output_parsed!r}")


def test_built_in_tools_reach_the_native_upstream():
    r = client.responses.create(model="m", input="news?", tools=[{"type": "web_search_preview"}])
    check(r.status == "completed", f"status: {r.status!r}")


def test_previous_response_id_retrieve_and_items():
    first = client.responses.create(model="m", input="My name is Ann.")
    second = client.responses.create(model="m", input="What is my name?", previous_response_id=first.id)
    check(second.previous_response_id == first.id, f"previous: {second.previous_response_id!r}")
    got = client.responses.retrieve(second.id)
    check(got.output_text == EXPECTED_TEXT, f"retrieved: {got!r}")
    kinds = [(i.type, i.role) for i in client.responses.input_items.list(second.id)]
    check(kinds == [("message", "user"), ("message", "assistant"), ("message", "user")], f"items: {kinds!r}")
    client.responses.delete(second.id)
    try:
        client.responses.retrieve(second.id)
    except openai.NotFoundError:
        pass
    else:
        raise AssertionError("a deleted response was found")


def test_a_stream_cut_midway_ends_with_an_error_event():
    stream = client.responses.create(
        model="m", input="hi", stream=True, extra_body={"x_fake": {"cut_after_chunks": 4}}
    )
    events = list(stream)
    last = events[-1]
    check(last.type == "error", f"last event: {last!r}")
    check(last.code == "stream_interrupted", f"code: {last.code!r}")
    check(last.sequence_number == events[-2].sequence_number + 1, f"sequence: {last!r}")
    check(all(e.type != "response.completed" for e in events), "completed anyway")


def main():
    tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
    failed = 0
    for name, f in tests:
        try:
            f()
            print(f"ok   {name}")
        except Exception:
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
