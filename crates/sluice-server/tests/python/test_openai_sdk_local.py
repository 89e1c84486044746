"""Drives sluice's local models with the official OpenAI Python SDK, over real HTTP: several
choices (`n`) and `logprobs`, streamed and accumulated by the SDK's own stream helper, agree
with the whole answer; so do forced tool calls in several choices.

Run by tests/local/choices.rs, which starts a gateway with local chat models and passes its
base URL in `SLUICE_BASE_URL` and the models' names in `SLUICE_LOCAL_MODELS` (comma
separated: a random-weight file, and the real SmolLM2 file when the test has it). Plain
script, no pytest: one line per check, then `N passed, N failed`; the exit code is non-zero
if any check failed.
"""

import json
import os
import sys
import traceback

from openai import OpenAI

BASE_URL = os.environ["SLUICE_BASE_URL"]
MODELS = [m for m in os.environ["SLUICE_LOCAL_MODELS"].split(",") if m]
MESSAGES = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}

client = OpenAI(base_url=BASE_URL, api_key="sk-test", max_retries=0, timeout=300)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def tokens(choice):
    if choice.logprobs is None or choice.logprobs.content is None:
        return []
    return [(t.token, t.logprob, len(t.top_logprobs)) for t in choice.logprobs.content]


def same_tokens(whole, streamed, what):
    a, b = tokens(whole), tokens(streamed)
    check([t[0] for t in a] == [t[0] for t in b], f"{what}: tokens {a!r} != {b!r}")
    check([t[2] for t in a] == [t[2] for t in b], f"{what}: alternatives {a!r} != {b!r}")
    for x, y in zip(a, b):
        check(abs(x[1] - y[1]) < 1e-3, f"{what}: logprob {x!r} != {y!r}")


def warm_and_create(args):
    """The whole answer, after a first one that leaves the model's slots holding the prompt as
    the stream then finds it (a prompt reused from a slot gives the same tokens as one evaluated
    afresh, but log probabilities that differ in the last digits)."""
    client.chat.completions.create(**args)
    return client.chat.completions.create(**args)


def accumulated(args):
    """The stream as the SDK's stream helper accumulates it (its snapshot: the final, parsed
    completion refuses a choice cut by `max_tokens`)."""
    with client.chat.completions.stream(**args) as stream:
        for _ in stream:
            pass
        return stream.current_completion_snapshot


def streamed_choices_with_logprobs(model):
    args = dict(
        model=model,
        messages=MESSAGES,
        n=2,
        seed=11,
        temperature=0.8,
        max_tokens=10,
        logprobs=True,
        top_logprobs=2,
    )
    whole = warm_and_create(args)
    check(len(whole.choices) == 2, f"choices: {whole.choices!r}")
    final = accumulated(args)
    check(len(final.choices) == 2, f"streamed choices: {final.choices!r}")
    for i, (w, s) in enumerate(zip(whole.choices, final.choices)):
        check(s.index == i, f"index {s.index} at {i}")
        check(w.message.content == s.message.content, f"choice {i}: {w.message.content!r} != {s.message.content!r}")
        check(w.finish_reason == s.finish_reason, f"choice {i}: {w.finish_reason} != {s.finish_reason}")
        check(tokens(w), f"choice {i}: no logprobs")
        same_tokens(w, s, f"choice {i}")
    # The raw chunks: both choices' deltas come, each with its own finish chunk.
    finished = {}
    for chunk in client.chat.completions.create(stream=True, **args):
        for c in chunk.choices:
            check(c.index not in finished, f"choice {c.index} after its finish: {chunk!r}")
            if c.finish_reason:
                finished[c.index] = c.finish_reason
    check(sorted(finished) == [0, 1], f"finish chunks: {finished!r}")


def streamed_forced_calls_in_choices(model):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The current weather in a city.",
                "parameters": WEATHER,
                "strict": True,
            },
        }
    ]
    args = dict(
        model=model,
        messages=MESSAGES,
        n=2,
        seed=5,
        temperature=0.8,
        max_tokens=400,
        tools=tools,
        tool_choice="required",
        logprobs=True,
    )
    whole = warm_and_create(args)
    final = accumulated(args)
    check(len(final.choices) == 2, f"streamed choices: {final.choices!r}")
    for i, (w, s) in enumerate(zip(whole.choices, final.choices)):
        check(w.finish_reason == "tool_calls", f"choice {i}: {w.finish_reason}")
        check(s.finish_reason == "tool_calls", f"choice {i} streamed: {s.finish_reason}")
        wc, sc = w.message.tool_calls[0].function, s.message.tool_calls[0].function
        check(wc.name == sc.name == "get_weather", f"choice {i}: {wc.name} {sc.name}")
        check(wc.arguments == sc.arguments, f"choice {i}: {wc.arguments!r} != {sc.arguments!r}")
        arguments = json.loads(sc.arguments)
        check(sc.parsed_arguments == arguments, f"choice {i}: parsed {sc.parsed_arguments!r}")
        check(set(arguments) == {"city", "unit"}, f"choice {i}: {arguments!r}")
        check(arguments["unit"] in ("celsius", "fahrenheit"), f"choice {i}: {arguments!r}")
        same_tokens(w, s, f"choice {i}")


def main():
    checks = []
    for model in MODELS:
        checks.append((f"{model}: streamed choices with logprobs", streamed_choices_with_logprobs, model))
        checks.append((f"{model}: streamed forced calls in choices", streamed_forced_calls_in_choices, model))
    passed = failed = 0
    for name, fn, model in checks:
        try:
            fn(model)
            print(f"PASS {name}")
            passed += 1
        except Exception:
            print(f"FAIL {name}")
            traceback.print_exc(file=sys.stdout)
            failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
