"""Drives sluice's Files API (`/v1/files`, stored by sluice) with the official OpenAI Python
SDK, over real HTTP: files.create / list / retrieve / content / delete, and the errors the
SDK raises for bad uploads and unknown files.

Run by tests/python_sdk.rs with the gateway's base URL in `SLUICE_BASE_URL`. Plain script,
no pytest: one line per check, then `N passed, N failed`; non-zero exit if any failed.
"""

import io
import os
import sys
import traceback

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["SLUICE_BASE_URL"], api_key="sk-test", max_retries=0, timeout=30)

LINES = b'{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def test_create_retrieve_content_delete():
    f = client.files.create(file=("input.jsonl", io.BytesIO(LINES)), purpose="batch")
    check(f.id.startswith("file-"), f"id: {f.id!r}")
    check(f.object == "file", f"object: {f.object!r}")
    check(f.bytes == len(LINES), f"bytes: {f.bytes}")
    check(f.filename == "input.jsonl", f"filename: {f.filename!r}")
    check(f.purpose == "batch", f"purpose: {f.purpose!r}")
    check(f.status == "processed", f"status: {f.status!r}")
    check(f.expires_at == f.created_at + 30 * 24 * 3600, "batch files expire in 30 days")
    got = client.files.retrieve(f.id)
    check(got == f, f"retrieve: {got!r} != {f!r}")
    content = client.files.content(f.id)
    check(content.read() == LINES, "content differs")
    listed = [x.id for x in client.files.list(purpose="batch")]
    check(f.id in listed, f"{f.id} not in {listed}")
    deleted = client.files.delete(f.id)
    check(deleted.id == f.id and deleted.deleted and deleted.object == "file", f"delete: {deleted!r}")
    try:
        client.files.retrieve(f.id)
        raise AssertionError("a deleted file was found")
    except openai.NotFoundError as e:
        check(e.status_code == 404, f"status: {e.status_code}")
        check(e.code == "file_not_found", f"code: {e.code!r}")


def test_list_pages_with_the_cursor():
    made = [
        client.files.create(file=(f"n{i}.txt", io.BytesIO(b"note %d" % i)), purpose="user_data").id
        for i in range(3)
    ]
    page = client.files.list(purpose="user_data", limit=1, order="asc")
    check(len(page.data) == 1 and page.has_more, f"first page: {page!r}")
    # The SDK follows `after` (the last id) page after page.
    seen = [f.id for f in client.files.list(purpose="user_data", limit=1, order="asc")]
    check([i for i in seen if i in made] == made, f"pages: {seen} vs {made}")
    for i in made:
        client.files.delete(i)


def test_expires_after_and_a_file_from_disk(tmp=os.environ.get("TMPDIR", "/tmp")):
    path = os.path.join(tmp, f"sluice-sdk-{os.getpid()}.txt")
    with open(path, "wb") as out:
        out.write(b"x" * 300_000)
    try:
        with open(path, "rb") as fh:
            f = client.files.create(
                file=fh, purpose="user_data", expires_after={"anchor": "created_at", "seconds": 3600}
            )
    finally:
        os.remove(path)
    check(f.bytes == 300_000, f"bytes: {f.bytes}")
    check(f.expires_at == f.created_at + 3600, f"expires_at: {f.expires_at}")
    check(client.files.content(f.id).read() == b"x" * 300_000, "content differs")
    client.files.delete(f.id)


def test_bad_uploads_are_bad_requests():
    for kwargs, says in [
        (dict(file=("a.jsonl", io.BytesIO(LINES)), purpose="nope"), "unknown purpose"),
        (dict(file=("a.csv", io.BytesIO(b"a,b\n")), purpose="batch"), "unsupported file type"),
        (dict(file=("a.jsonl", io.BytesIO(b"")), purpose="batch"), "empty"),
    ]:
        try:
            client.files.create(**kwargs)
            raise AssertionError(f"accepted: {kwargs}")
        except openai.BadRequestError as e:
            check(says in str(e), f"{says!r} not in {e}")


def test_unknown_file_is_not_found():
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        try:
            call("file-doesnotexist")
            raise AssertionError(f"{call.__name__} found it")
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
