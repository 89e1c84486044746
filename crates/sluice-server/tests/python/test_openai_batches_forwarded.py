"""Drives a batch that sluice forwards to a provider's own Batch API (`batch = "native"` on
the fake upstream) with the official OpenAI Python SDK, over real HTTP: files.create,
batches.create, retrieve until completed, the output file's content (one line per input
line, its custom_id, the model name the client asked for), and a cancel passed on upstream.

Run by tests/python_sdk.rs with the gateway's base URL in `SLUICE_BASE_URL` (model `m`, sent
upstream as `upstream-m`, on a provider whose batches are forwarded). Plain script, no
pytest: one line per check, then `N passed, N failed`.
"""

import io
import json
import os
import sys
import time
import traceback

from openai import OpenAI

client = OpenAI(base_url=os.environ["SLUICE_BASE_URL"], api_key="sk-test", max_retries=0, timeout=30)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def lines(n, prefix):
    out = []
    for i in range(n):
        out.append(json.dumps({
            "custom_id": f"{prefix}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": f"hello {i}"}]},
        }))
    return ("\n".join(out) + "\n").encode()


def wait(batch_id, statuses):
    deadline = time.time() + 60
    while True:
        b = client.batches.retrieve(batch_id)
        if b.status in statuses:
            return b
        check(time.time() < deadline, f"batch still {b.status}")
        time.sleep(0.05)


def test_a_forwarded_batch_completes():
    f = client.files.create(file=("input.jsonl", io.BytesIO(lines(5, "fwd"))), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    check(b.id.startswith("batch_"), f"id: {b.id!r}")
    running = wait(b.id, {"in_progress", "finalizing", "completed"})
    check(running.request_counts.total == 5, f"counts: {running.request_counts!r}")
    done = wait(b.id, {"completed", "failed"})
    check(done.status == "completed", f"status: {done.status} {done.errors!r}")
    counts = done.request_counts
    check((counts.total, counts.completed, counts.failed) == (5, 5, 0), f"counts: {counts!r}")
    out = [json.loads(line) for line in client.files.content(done.output_file_id).read().decode().splitlines()]
    check(sorted(o["custom_id"] for o in out) == sorted(f"fwd-{i}" for i in range(5)), "custom_ids")
    for o in out:
        check(o["response"]["status_code"] == 200, f"line: {o}")
        check(o["response"]["body"]["model"] == "m", f"model: {o}")
        check(o["response"]["body"]["choices"][0]["message"]["content"], f"content: {o}")


def test_a_forwarded_batch_is_cancelled():
    f = client.files.create(file=("input.jsonl", io.BytesIO(lines(3, "c"))), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait(b.id, {"in_progress"})
    c = client.batches.cancel(b.id)
    check(c.status == "cancelling", f"status: {c.status}")
    done = wait(b.id, {"cancelled", "completed"})
    check(done.status == "cancelled", f"status: {done.status}")
    errors = [json.loads(line) for line in client.files.content(done.error_file_id).read().decode().splitlines()]
    check(sorted(e["custom_id"] for e in errors) == ["c-0", "c-1", "c-2"], f"errors: {errors}")
    check(all(e["error"]["code"] == "batch_cancelled" for e in errors), f"errors: {errors}")


def main():
    checks = [v for k, v in sorted(globals().items()) if k.startswith("test_") and callable(v)]
    passed = failed = 0
    for fn in checks:
        try:
            fn()
            passed += 1
            print(f"ok   {fn.__name__}")
        except Exception:
            failed += 1
            print(f"FAIL {fn.__name__}")
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
