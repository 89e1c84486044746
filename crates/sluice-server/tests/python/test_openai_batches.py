"""Drives sluice's Batch API (`/v1/batches`, run by sluice itself) with the official OpenAI
Python SDK, over real HTTP: files.create(purpose="batch"), batches.create, retrieve until
completed, list, the output file's content (one line per input line, with its custom_id),
a cancel, and the errors the SDK raises for an unknown input file and an unknown batch.

Run by tests/python_sdk.rs with the gateway's base URL in `SLUICE_BASE_URL` (model `m` on a
fake upstream). Plain script, no pytest: one line per check, then `N passed, N failed`.
"""

import io
import json
import os
import sys
import time
import traceback

import openai
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


def test_batch_runs_to_completion():
    f = client.files.create(file=("input.jsonl", io.BytesIO(lines(20, "req"))), purpose="batch")
    b = client.batches.create(
        input_file_id=f.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "sdk"},
    )
    check(b.id.startswith("batch_"), f"id: {b.id!r}")
    check(b.object == "batch" and b.input_file_id == f.id, f"batch: {b!r}")
    check(b.metadata == {"job": "sdk"}, f"metadata: {b.metadata!r}")
    done = wait(b.id, {"completed", "failed"})
    check(done.status == "completed", f"status: {done.status} {done.errors!r}")
    counts = done.request_counts
    check((counts.total, counts.completed, counts.failed) == (20, 20, 0), f"counts: {counts!r}")
    check(done.error_file_id is None, f"error file: {done.error_file_id!r}")
    content = client.files.content(done.output_file_id).read().decode()
    out = [json.loads(line) for line in content.splitlines()]
    check(len(out) == 20, f"{len(out)} output lines")
    check(sorted(o["custom_id"] for o in out) == sorted(f"req-{i}" for i in range(20)), "custom_ids")
    for o in out:
        check(o["response"]["status_code"] == 200, f"line: {o}")
        check(o["response"]["body"]["object"] == "chat.completion", f"line: {o}")
    listed = [x.id for x in client.batches.list(limit=10)]
    check(b.id in listed, f"{b.id} not in {listed}")


def test_cancel():
    f = client.files.create(file=("input.jsonl", io.BytesIO(lines(3, "c"))), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    try:
        c = client.batches.cancel(b.id)
        check(c.status in ("cancelling", "cancelled", "completed", "finalizing"), f"status: {c.status}")
    except openai.ConflictError as e:
        # Three fast lines may finish before the cancel arrives: then it is refused as such.
        check(e.code == "batch_not_cancellable", f"conflict: {e}")
    done = wait(b.id, {"cancelled", "completed"})
    counts = done.request_counts
    check(counts.completed <= 3, f"counts: {counts!r}")


def test_unknown_input_file_is_a_400():
    try:
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
        raise AssertionError("created")
    except openai.BadRequestError as e:
        check(e.param == "input_file_id", f"param: {e.param!r}")


def test_unknown_batch_is_a_404():
    try:
        client.batches.retrieve("batch_doesnotexist")
        raise AssertionError("found")
    except openai.NotFoundError:
        pass


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
