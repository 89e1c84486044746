"""Drives sluice's `/v1/messages` with the official Anthropic Python SDK, over real HTTP.

Run by tests/python_sdk.rs, which starts a fake OpenAI-shaped upstream and a gateway in front
of it (chat model `m`) and passes the gateway's root URL in `SLUICE_BASE_URL` (the SDK adds
`/v1/messages`). Plain script: one line per check, then `N passed, N failed`; the exit code
is non-zero if any check failed.
"""

import os
import sys
import traceback

import anthropic

client = anthropic.Anthropic(
    base_url=os.environ["SLUICE_BASE_URL"], api_key="sk-ant-test", max_retries=0, timeout=10
)
EXPECTED = "Hello from the fake upstream."


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def test_messages_non_streaming():
    m = client.messages.create(
        model="m", max_tokens=64, system="Be brief.", messages=[{"role": "user", "content": "hi"}]
    )
    check(m.type == "message", f"type: {m.type!r}")
    check(m.role == "assistant", f"role: {m.role!r}")
    check(m.content[0].type == "text" and m.content[0].text == EXPECTED, f"content: {m.content!r}")
    check(m.stop_reason == "end_turn", f"stop_reason: {m.stop_reason!r}")
    check(m.usage.input_tokens == 12 and m.usage.output_tokens == 9, f"usage: {m.usage!r}")


def test_messages_streaming():
    with client.messages.stream(
        model="m", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    check(text == EXPECTED, f"text: {text!r}")
    check(final.stop_reason == "end_turn", f"stop_reason: {final.stop_reason!r}")
    check(final.usage.output_tokens == 5, f"usage: {final.usage!r}")
    check(final.usage.input_tokens == 12, f"usage: {final.usage!r}")


def test_messages_raw_events():
    events = list(
        client.messages.create(
            model="m", max_tokens=64, stream=True, messages=[{"role": "user", "content": "hi"}]
        )
    )
    kinds = [e.type for e in events]
    check(kinds[0] == "message_start" and kinds[-1] == "message_stop", f"events: {kinds}")
    # The OpenAI-format upstream counts the prompt at the end: message_start has sluice's
    # estimate (not 0), message_delta the upstream's 12, which the SDK's final message keeps.
    start = events[0].message.usage.input_tokens
    check(start > 0, f"message_start input_tokens: {start}")
    delta = next(e for e in events if e.type == "message_delta")
    check(delta.usage.input_tokens == 12, f"message_delta usage: {delta.usage!r}")


def test_unknown_model_is_not_found():
    try:
        client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    except anthropic.NotFoundError as e:
        check(e.status_code == 404, f"status: {e.status_code}")
        check("nope" in str(e), f"message: {e}")
        return
    raise AssertionError("expected NotFoundError")


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
