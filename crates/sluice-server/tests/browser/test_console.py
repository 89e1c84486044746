"""Drives sluice's web console (`/ui`) in a real browser: Debian's Chromium under Playwright.

Run by tests/console.rs, which starts a fake upstream and a gateway in front of it (master
key in `SLUICE_MASTER_KEY`, models `m` and `c`, route `r` with `c` as its canary, the cache
on) and passes its URL in `SLUICE_BASE_URL`, the browser in `SLUICE_CHROMIUM` and where to
write screenshots in `SLUICE_SCREENSHOTS`. Plain script, no pytest: the checks run in order
on one page (each builds on the one before); one line is printed per check, then
`N passed, N failed`; the exit code is non-zero if any check failed.
"""

import json
import os
import sys
import traceback
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE_URL = os.environ["SLUICE_BASE_URL"]
MASTER = os.environ["SLUICE_MASTER_KEY"]
CHROMIUM = os.environ.get("SLUICE_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("SLUICE_SCREENSHOTS", "target/console-screenshots")

page = None
problems = []  # console errors and page errors (a CSP violation shows up here)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def api(method, path, body=None, key=MASTER):
    """One call to the gateway outside the browser: (status, JSON answer)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE_URL + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def chat(key=MASTER, **extra):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    return api("POST", "/v1/chat/completions", body, key)


def shot(name):
    os.makedirs(SHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def stored_key():
    return page.evaluate("() => sessionStorage.getItem('sluice.master_key')")


def sign_in(key):
    page.fill("#login-key", key)
    page.click("#login button[type=submit]")


def tile(metric):
    return page.locator(f"[data-metric={metric}] strong")


# === the checks, in order ===


def test_traffic_goes_through_the_fake_upstream():
    # Two identical deterministic requests (a miss, then a hit) and one the cache bypasses.
    for extra in ({"temperature": 0}, {"temperature": 0}, {}):
        status, body = chat(**extra)
        check(status == 200, f"chat: {status} {body}")


def test_the_form_shows_and_no_data():
    page.goto(BASE_URL + "/ui")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#page")).to_be_hidden()
    expect(page.locator("#nav")).to_be_hidden()
    check(page.locator(".tile").count() == 0, "tiles before signing in")
    shot("login")


def test_a_wrong_key_is_refused():
    sign_in("sk-not-the-master-key")
    expect(page.locator("#login-error")).to_contain_text("not the master key")
    expect(page.locator("#page")).to_be_hidden()
    check(stored_key() is None, "a refused key was kept")


def test_the_right_key_shows_the_overview_with_the_real_numbers():
    sign_in(MASTER)
    expect(page.locator("#page h2")).to_have_text("Overview")
    expect(tile("requests")).to_have_text("3")
    expect(tile("cache-hit-rate")).to_have_text("50.0%")
    spend = tile("spend").inner_text()
    check(spend.startswith("$") and float(spend[1:]) > 0, f"spend: {spend}")
    expect(page.locator("figcaption", has_text="Spend a day")).to_be_visible()
    check(page.locator(".chart canvas").count() >= 8, "charts drawn")
    check(MASTER not in page.url, f"key in the URL: {page.url}")
    check(page.evaluate("() => document.cookie") == "", "a cookie was set")
    check(stored_key() == MASTER, "the key is not in the session")
    shot("overview")


def test_a_reload_keeps_the_session_and_signing_out_forgets_it():
    page.reload()
    expect(tile("requests")).to_have_text("3")
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    check(stored_key() is None, "the key outlived sign-out")
    sign_in(MASTER)
    expect(page.locator("#page h2")).to_have_text("Overview")


def test_no_console_errors():
    check(not problems, f"browser errors: {problems}")


CHECKS = [
    test_traffic_goes_through_the_fake_upstream,
    test_the_form_shows_and_no_data,
    test_a_wrong_key_is_refused,
    test_the_right_key_shows_the_overview_with_the_real_numbers,
    test_a_reload_keeps_the_session_and_signing_out_forgets_it,
    test_no_console_errors,
]


def main():
    global page
    print(f"console at {BASE_URL}/ui in {CHROMIUM}", flush=True)
    passed = failed = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(10_000)
        expect.set_options(timeout=10_000)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on(
            "console",
            lambda m: m.type == "error"
            # The refused sign-in and the sign-out's probe answer 401 by design.
            and "401" not in m.text
            and problems.append(f"console: {m.text}"),
        )
        for fn in CHECKS:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - report every failure, keep going
                failed += 1
                print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}", flush=True)
                traceback.print_exc()
                try:
                    shot(f"failed-{fn.__name__}")
                except Exception:  # noqa: BLE001 - the screenshot is a courtesy
                    pass
            else:
                passed += 1
                print(f"ok   {fn.__name__}", flush=True)
        browser.close()
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
