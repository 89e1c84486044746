"""Drives a running sluice with the official OpenAI Python SDK, over real HTTP.

Run by tests/python_sdk.rs, which starts a fake upstream and a gateway in front of it
(models `m` for chat and `emb` for embeddings) and passes the gateway's base URL in
`SLUICE_BASE_URL` (e.g. http://127.0.0.1:PORT/v1). Plain script, no pytest: each check is
a function; one line is printed per check, then `N passed, N failed`; the exit code is
non-zero if any check failed.
"""

import json
import os
import sys
import traceback

import httpx
import openai
from openai import OpenAI

BASE_URL = os.environ["SLUICE_BASE_URL"]
EXPECTED_TEXT = "Hello from the fake upstream."
MESSAGES = [{"role": "user", "content": "hi"}]

client = OpenAI(base_url=BASE_URL, api_key="sk-test", max_retries=0, timeout=10)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def test_chat_non_streaming():
    r = client.chat.completions.create(model="m", messages=MESSAGES)
    check(r.object == "chat.completion", f"object: {r.object!r}")
    check(len(r.choices) == 1, f"choices: {r.choices!r}")
    msg = r.choices[0].message
    check(msg.role == "assistant", f"role: {msg.role!r}")
    check(msg.content == EXPECTED_TEXT, f"content: {msg.content!r}")
    check(r.choices[0].finish_reason == "stop", f"finish_reason: {r.choices[0].finish_reason!r}")
    check(r.usage is not None, "usage missing")
    check(r.usage.prompt_tokens == 12, f"prompt_tokens: {r.usage.prompt_tokens}")
    check(r.usage.completion_tokens == 9, f"completion_tokens: {r.usage.completion_tokens}")
    check(r.usage.total_tokens == 21, f"total_tokens: {r.usage.total_tokens}")


def test_chat_streaming():
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    text = ""
    finish = None
    chunks = 0
    for chunk in stream:
        chunks += 1
        check(chunk.object == "chat.completion.chunk", f"object: {chunk.object!r}")
        check(chunk.usage is None, f"usage not asked for, got {chunk.usage!r}")
        for choice in chunk.choices:
            if choice.delta.content:
                text += choice.delta.content
            if choice.finish_reason:
                finish = choice.finish_reason
    check(text == EXPECTED_TEXT, f"text: {text!r}")
    check(finish == "stop", f"finish_reason: {finish!r}")
    check(chunks >= 2, f"only {chunks} chunk(s)")


def test_chat_streaming_with_usage():
    stream = client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    check(chunks, "no chunks")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(text == EXPECTED_TEXT, f"text: {text!r}")
    last = chunks[-1]
    check(last.choices == [], f"last chunk has choices: {last.choices!r}")
    check(last.usage is not None, f"last chunk has no usage: {last!r}")
    check(last.usage.prompt_tokens == 12, f"prompt_tokens: {last.usage.prompt_tokens}")
    check(last.usage.completion_tokens == 5, f"completion_tokens: {last.usage.completion_tokens}")
    check(last.usage.total_tokens == 17, f"total_tokens: {last.usage.total_tokens}")
    with_usage = [c for c in chunks if c.usage is not None]
    check(len(with_usage) == 1, f"{len(with_usage)} chunks carry usage")


def test_completions_create():
    r = client.completions.create(model="m", prompt="Once upon a time", max_tokens=7)
    check(r.object == "text_completion", f"object: {r.object!r}")
    check(len(r.choices) == 1, f"choices: {r.choices!r}")
    check(r.choices[0].text == EXPECTED_TEXT, f"text: {r.choices[0].text!r}")
    check(r.choices[0].finish_reason == "stop", f"finish_reason: {r.choices[0].finish_reason!r}")
    check(r.usage is not None and r.usage.total_tokens == 21, f"usage: {r.usage!r}")


def test_completions_stream():
    stream = client.completions.create(
        model="m",
        prompt="Once upon a time",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    check(chunks, "no chunks")
    check(all(c.object == "text_completion" for c in chunks), "a chunk is not a text_completion")
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    check(text == EXPECTED_TEXT, f"text: {text!r}")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check(finishes == ["stop"], f"finish reasons: {finishes!r}")
    last = chunks[-1]
    check(last.usage is not None and last.usage.prompt_tokens == 12, f"last chunk: {last!r}")


def test_completions_without_a_prompt_is_a_400():
    try:
        client.completions.create(model="m", prompt=None)
    except openai.BadRequestError as e:
        check(e.status_code == 400, f"status: {e.status_code}")
        check(e.param == "prompt", f"param: {e.param!r}")
    else:
        raise AssertionError("a completion without a prompt was accepted")


def test_embeddings():
    r = client.embeddings.create(model="emb", input=["a", "bb"])
    check(r.object == "list", f"object: {r.object!r}")
    check(len(r.data) == 2, f"{len(r.data)} vectors")
    for i, d in enumerate(r.data):
        check(d.index == i, f"index: {d.index} at {i}")
        check(isinstance(d.embedding, list) and d.embedding, f"embedding {i}: {d.embedding!r}")
        check(all(isinstance(x, float) for x in d.embedding), f"embedding {i} not floats")
    check(len(r.data[0].embedding) == len(r.data[1].embedding), "vectors differ in length")


def test_unknown_model_is_not_found():
    try:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    except openai.NotFoundError as e:
        check(e.status_code == 404, f"status: {e.status_code}")
        check("gpt-9" in e.message, f"message: {e.message!r}")
        check(e.code == "model_not_found", f"code: {e.code!r}")
        return
    raise AssertionError("no error raised")


def test_upstream_400_passes_through():
    err = {
        "error": {
            "message": "Invalid value for 'temperature'",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_value",
        }
    }
    try:
        client.chat.completions.create(
            model="m",
            messages=MESSAGES,
            extra_body={"x_fake": {"status": 400, "error_body": json.dumps(err)}},
        )
    except openai.BadRequestError as e:
        check(e.status_code == 400, f"status: {e.status_code}")
        check("Invalid value for 'temperature'" in e.message, f"message: {e.message!r}")
        check(e.param == "temperature", f"param: {e.param!r}")
        check(e.code == "invalid_value", f"code: {e.code!r}")
        return
    raise AssertionError("no error raised")


def test_mid_stream_failure_raises_api_error():
    stream = client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        stream=True,
        extra_body={"x_fake": {"cut_after_chunks": 2}},
    )
    received = []
    try:
        for chunk in stream:
            received.append(chunk)
    except (openai.APIStatusError, openai.APIConnectionError) as e:
        raise AssertionError(f"expected an in-stream APIError, got {type(e).__name__}: {e!r}")
    except openai.APIError as e:
        check(e.message, "error without a message")
        check(isinstance(e.body, dict), f"body: {e.body!r}")
        check(e.body.get("code") == "stream_interrupted", f"body: {e.body!r}")
        check(len(received) == 2, f"{len(received)} chunks before the error")
        return
    raise AssertionError(f"stream ended without an error after {len(received)} chunks")


def test_raw_response_headers():
    raw = client.chat.completions.with_raw_response.create(
        model="m",
        messages=MESSAGES,
        extra_headers={"x-request-id": "req-python-sdk"},
    )
    check(raw.status_code == 200, f"status: {raw.status_code}")
    check(raw.headers.get("x-sluice-model") == "m", f"x-sluice-model: {raw.headers.get('x-sluice-model')!r}")
    check(
        raw.headers.get("x-request-id") == "req-python-sdk",
        f"x-request-id: {raw.headers.get('x-request-id')!r}",
    )
    parsed = raw.parse()
    check(parsed.choices[0].message.content == EXPECTED_TEXT, f"content: {parsed.choices[0].message.content!r}")
    # Without a client-supplied id, sluice makes one up.
    raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    check(raw.headers.get("x-request-id"), "no x-request-id generated")


WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
WEATHER_CALL = {"tool_call": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}


def test_responses_create():
    r = client.responses.create(model="m", input="hi", instructions="Be brief.", max_output_tokens=50)
    check(r.object == "response", f"object: {r.object!r}")
    check(r.id.startswith("resp_"), f"id: {r.id!r}")
    check(r.status == "completed", f"status: {r.status!r}")
    check(r.output_text == EXPECTED_TEXT, f"output_text: {r.output_text!r}")
    check(r.output[0].type == "message", f"output: {r.output!r}")
    check(r.usage.input_tokens == 12, f"input_tokens: {r.usage.input_tokens}")
    check(r.usage.output_tokens == 9, f"output_tokens: {r.usage.output_tokens}")
    check(r.usage.total_tokens == 21, f"total_tokens: {r.usage.total_tokens}")


def test_responses_stream_true():
    stream = client.responses.create(model="m", input="hi", stream=True)
    events = list(stream)
    types = [e.type for e in events]
    check(types[:2] == ["response.created", "response.in_progress"], f"types: {types}")
    check(types[-1] == "response.completed", f"types: {types}")
    check([e.sequence_number for e in events] == list(range(len(events))), "sequence numbers")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    check(text == EXPECTED_TEXT, f"text: {text!r}")
    final = events[-1].response
    check(final.output_text == EXPECTED_TEXT, f"final: {final.output_text!r}")
    check(final.usage.output_tokens == 5, f"usage: {final.usage!r}")


def test_responses_function_call():
    r = client.responses.create(
        model="m", input="Weather in Paris?", tools=[WEATHER_TOOL], extra_body={"x_fake": WEATHER_CALL}
    )
    call = r.output[0]
    check(call.type == "function_call", f"output: {r.output!r}")
    check(call.name == "get_weather", f"name: {call.name!r}")
    check(json.loads(call.arguments) == {"city": "Paris"}, f"arguments: {call.arguments!r}")
    # And the result fed back.
    r2 = client.responses.create(
        model="m",
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'},
        ],
        tools=[WEATHER_TOOL],
    )
    check(r2.output_text == EXPECTED_TEXT, f"output_text: {r2.output_text!r}")


def test_responses_stream_helper_with_tools():
    with client.responses.stream(
        model="m", input="Weather in Paris?", tools=[WEATHER_TOOL], extra_body={"x_fake": WEATHER_CALL}
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    check(len(deltas) >= 2, f"argument deltas: {deltas!r}")
    check("".join(deltas) == '{"city":"Paris"}', f"deltas: {deltas!r}")
    call = final.output[0]
    check(call.type == "function_call" and call.call_id == "call_fake_1", f"final: {final.output!r}")
    check(json.loads(call.arguments) == {"city": "Paris"}, f"arguments: {call.arguments!r}")


def test_responses_structured_output():
    from pydantic import BaseModel

    class Answer(BaseModel):
        answer: str

    r = client.responses.parse(
        model="m", input="yes or no?", text_format=Answer, extra_body={"x_fake": {"content": '{"answer":"yes"}'}}
    )
    check(r.output_parsed == Answer(answer="yes"), f"parsed: {r.output_parsed!r}")


def test_responses_built_in_tool_is_refused():
    try:
        client.responses.create(model="m", input="news?", tools=[{"type": "web_search_preview"}])
    except openai.BadRequestError as e:
        check(e.status_code == 400, f"status: {e.status_code}")
        check("web_search_preview" in str(e), f"message: {e}")
    else:
        raise AssertionError("a built-in tool was not refused")


def test_responses_previous_response_id():
    first = client.responses.create(model="m", input="My name is Ann.")
    second = client.responses.create(model="m", input="What is my name?", previous_response_id=first.id)
    check(second.previous_response_id == first.id, f"previous: {second.previous_response_id!r}")
    check(second.output_text == EXPECTED_TEXT, f"output_text: {second.output_text!r}")
    try:
        client.responses.create(model="m", input="x", previous_response_id="resp_unknown")
    except openai.NotFoundError as e:
        check(e.status_code == 404, f"status: {e.status_code}")
    else:
        raise AssertionError("an unknown previous_response_id was not refused")


def test_responses_retrieve_input_items_and_delete():
    first = client.responses.create(model="m", input="My name is Ann.")
    second = client.responses.create(
        model="m",
        input=[{"role": "user", "content": "What is my name?"}],
        previous_response_id=first.id,
    )
    got = client.responses.retrieve(second.id)
    check(got.id == second.id, f"id: {got.id!r}")
    check(got.output_text == EXPECTED_TEXT, f"output_text: {got.output_text!r}")
    check(got.previous_response_id == first.id, f"previous: {got.previous_response_id!r}")
    # The conversation's items, newest first: this input, the first answer, the first input.
    items = list(client.responses.input_items.list(second.id))
    kinds = [(i.type, i.role) for i in items]
    check(kinds == [("message", "user"), ("message", "assistant"), ("message", "user")], f"items: {kinds!r}")
    check(items[0].content[0].text == "What is my name?", f"first item: {items[0]!r}")
    check(items[2].content[0].text == "My name is Ann.", f"last item: {items[2]!r}")
    # Paged one at a time by the SDK's cursor, oldest first.
    paged = [i.id for i in client.responses.input_items.list(second.id, limit=1, order="asc")]
    check(paged == [i.id for i in reversed(items)], f"paged: {paged!r}")
    # A streamed response is stored once its stream completes.
    with client.responses.stream(model="m", input="streamed") as stream:
        final = stream.get_final_response()
    check(client.responses.retrieve(final.id).output_text == EXPECTED_TEXT, "the streamed response")
    client.responses.delete(second.id)
    for call in (lambda: client.responses.retrieve(second.id), lambda: client.responses.delete(second.id)):
        try:
            call()
        except openai.NotFoundError as e:
            check(e.status_code == 404, f"status: {e.status_code}")
        else:
            raise AssertionError("a deleted response was found")
    unstored = client.responses.create(model="m", input="x", store=False)
    try:
        client.responses.retrieve(unstored.id)
    except openai.NotFoundError:
        pass
    else:
        raise AssertionError("a store: false response was retrieved")


def test_audio_speech_streams_the_audio():
    text = "Read this aloud."
    # The fake speaks 64 bytes of audio per character.
    with client.audio.speech.with_streaming_response.create(model="m", voice="alloy", input=text) as r:
        check(r.headers["content-type"] == "audio/mpeg", f"content-type: {r.headers['content-type']!r}")
        pieces = list(r.iter_bytes())
    audio = b"".join(pieces)
    check(len(audio) == 64 * len(text), f"audio bytes: {len(audio)}")
    whole = client.audio.speech.create(model="m", voice="alloy", input=text)
    check(whole.content == audio, "the same text, the same audio")


def test_audio_speech_cut_midway_raises():
    # 200 characters: 12,800 bytes of audio in four frames, the upstream cut after two and
    # sending no length. Audio has no error event: sluice aborts the response, so the SDK
    # raises instead of returning a short file that looks whole.
    text = "a" * 200
    cut = {"x_fake": {"cut_after_chunks": 2}}
    try:
        short = client.audio.speech.create(model="m", voice="alloy", input=text, extra_body=cut)
    except (openai.APIConnectionError, httpx.HTTPError):
        pass
    else:
        raise AssertionError(f"a cut upstream gave {len(short.content)} bytes as whole audio")
    with client.audio.speech.with_streaming_response.create(
        model="m", voice="alloy", input=text, extra_body=cut
    ) as r:
        got = []
        try:
            for piece in r.iter_bytes():
                got.append(piece)
        except httpx.HTTPError:
            return
    raise AssertionError(f"a cut upstream's stream ended cleanly after {len(b''.join(got))} bytes")


def test_audio_transcription_uploads_the_file():
    audio = bytes(range(256)) * 400
    r = client.audio.transcriptions.create(model="m", file=("lesson.wav", audio, "audio/wav"))
    check(f"model upstream-m heard {len(audio)} bytes of lesson.wav" in r.text, f"text: {r.text!r}")
    srt = client.audio.transcriptions.create(
        model="m", file=("lesson.wav", audio, "audio/wav"), response_format="srt"
    )
    check(isinstance(srt, str) and "-->" in srt, f"srt: {srt!r}")
    verbose = client.audio.transcriptions.create(
        model="m", file=("lesson.wav", audio, "audio/wav"), response_format="verbose_json"
    )
    check(verbose.duration > 0, f"duration: {verbose.duration!r}")
    translated = client.audio.translations.create(model="m", file=("talk.mp3", audio, "audio/mpeg"))
    check("talk.mp3" in translated.text, f"translation: {translated.text!r}")


def test_audio_transcription_stream():
    stream = client.audio.transcriptions.create(
        model="m", file=("a.wav", b"RIFF" * 100, "audio/wav"), stream=True
    )
    kinds = [event.type for event in stream]
    check(kinds[-1] == "transcript.text.done", f"events: {kinds!r}")
    check("transcript.text.delta" in kinds, f"events: {kinds!r}")


def test_audio_bad_upload_is_refused():
    try:
        client.audio.transcriptions.create(model="m", file=("virus.exe", b"MZ", "application/octet-stream"))
    except openai.BadRequestError as e:
        check("unsupported file type" in str(e), f"message: {e}")
    else:
        raise AssertionError("an .exe upload was not refused")


def test_images_generate_and_edit():
    r = client.images.generate(model="m", prompt="a lighthouse at dusk", n=2, size="1024x1024")
    check(len(r.data) == 2, f"images: {len(r.data)}")
    check(r.data[0].b64_json, "b64_json")
    edited = client.images.edit(model="m", image=("base.png", b"\x89PNG\r\n", "image/png"), prompt="add a boat")
    check(len(edited.data) == 1, f"edited: {len(edited.data)}")


def test_images_create_variation():
    r = client.images.create_variation(
        model="m", image=("base.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64, "image/png"), n=2, size="1024x1024"
    )
    check(len(r.data) == 2, f"variations: {len(r.data)}")
    check(r.data[1].b64_json, "b64_json")


def test_moderations():
    r = client.moderations.create(model="m", input=["hello", "I will kill the process"])
    check(not r.results[0].flagged and r.results[1].flagged, f"results: {r.results!r}")


CHECKS = [
    test_chat_non_streaming,
    test_chat_streaming,
    test_chat_streaming_with_usage,
    test_embeddings,
    test_unknown_model_is_not_found,
    test_upstream_400_passes_through,
    test_mid_stream_failure_raises_api_error,
    test_raw_response_headers,
    test_responses_create,
    test_responses_stream_true,
    test_responses_function_call,
    test_responses_stream_helper_with_tools,
    test_responses_structured_output,
    test_responses_built_in_tool_is_refused,
    test_responses_previous_response_id,
    test_responses_retrieve_input_items_and_delete,
    test_audio_speech_streams_the_audio,
    test_audio_speech_cut_midway_raises,
    test_audio_transcription_uploads_the_file,
    test_audio_transcription_stream,
    test_audio_bad_upload_is_refused,
    test_images_generate_and_edit,
    test_images_create_variation,
    test_moderations,
    test_completions_create,
    test_completions_stream,
    test_completions_without_a_prompt_is_a_400,
]


def main():
    print(f"openai {openai.__version__} against {BASE_URL}", flush=True)
    passed = failed = 0
    for fn in CHECKS:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {fn.__name__}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
