"""Drives sluice's web console (`/ui`) in a real browser: Debian's Chromium under Playwright.

Run by tests/console.rs, which starts a fake upstream and a gateway in front of it (master
key in `SLUICE_MASTER_KEY`, models `m` and `c`, route `r` with `c` as its canary, the cache
on, every request's payload sampled; a config reload changes the master key to
`SLUICE_NEXT_MASTER_KEY`) and passes its URL in `SLUICE_BASE_URL`, the browser in `SLUICE_CHROMIUM` and where to
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
# The master key a config reload changes it to (the last check).
NEXT_MASTER = os.environ["SLUICE_NEXT_MASTER_KEY"]
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
    # The last 24 hours come from the gateway's memory (`/admin/history`), drawn on load.
    expect(page.locator("#history-summary")).to_contain_text("3 requests (0 errors)")
    expect(page.locator("#overview-history figcaption", has_text="Latency p50 and p95")).to_be_visible()
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


def go(page_name, heading):
    page.goto(f"{BASE_URL}/ui#{page_name}")
    expect(page.locator("#page h2")).to_have_text(heading)


def test_spend_by_model_over_a_range_exports_csv():
    go("spend", "Spend")
    page.select_option("#spend-form select[name=by]", "model")
    page.click("#spend-form button[type=submit]")
    row = page.locator("#spend-table tbody tr", has_text="m")
    expect(row.first).to_contain_text("3")
    with page.expect_download() as info:
        page.click("#spend-csv")
    path = info.value.path()
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    check(lines[0].startswith("model,requests,errors,"), f"CSV header: {lines[:1]}")
    check(any(line.startswith("m,3,0,") for line in lines[1:]), f"CSV rows: {lines}")
    shot("spend")
    # A backwards range is refused with the API's message.
    page.fill("#spend-form input[name=from]", "2026-12-03")
    page.fill("#spend-form input[name=to]", "2026-12-01")
    page.click("#spend-form button[type=submit]")
    expect(page.locator("#spend-result .error")).to_contain_text("backwards")


state = {}


def test_a_key_is_created_its_secret_shown_once_and_it_works():
    go("keys", "Keys")
    form = page.locator("form", has=page.locator("button", has_text="Create key"))
    form.locator("input[name=name]").fill("console-key")
    form.locator("input[name=rpm]").fill("5")
    form.locator("input[name=budget_usd]").fill("2.5")
    form.locator("button[type=submit]").click()
    secret = page.locator("#new-secret").inner_text().strip()
    check(len(secret) >= 20, f"secret: {secret!r}")
    state["secret"] = secret
    row = page.locator("#keys-table tr[data-key=console-key]")
    expect(row).to_contain_text("active")
    shot("keys")
    status, body = chat(key=secret)
    check(status == 200, f"chat with the new key: {status} {body}")
    # Once: coming back to the page does not show it.
    go("overview", "Overview")
    go("keys", "Keys")
    expect(row).to_be_visible()
    check(secret not in page.content(), "the secret is shown again")


def test_a_keys_limits_are_edited():
    row = page.locator("#keys-table tr[data-key=console-key]")
    row.locator("button.edit").click()
    editor = page.locator("#keys-table tr.editor form")
    editor.locator("input[name=rpm]").fill("7")
    editor.locator("select[name=budget_period]").select_option("month")
    editor.locator("button[type=submit]").click()
    expect(row).to_contain_text("month")
    status, key = api("GET", "/admin/keys/console-key")
    check(status == 200 and key["rpm"] == 7, f"rpm: {key}")
    check(key["budget_period"] == "month" and key["budget_usd"] == 2.5, f"budget: {key}")


def test_a_key_is_revoked():
    page.once("dialog", lambda d: d.accept())
    row = page.locator("#keys-table tr[data-key=console-key]")
    row.locator("button.revoke").click()
    expect(row).to_contain_text("revoked")
    status, _ = chat(key=state["secret"])
    check(status == 401, f"a revoked key answered {status}")


def test_the_request_log_shows_the_keys_requests_newest_first():
    # One answer the upstream refuses (400), recorded like any other.
    status, _ = chat(x_fake={"status": 400})
    check(status == 400, f"refused chat: {status}")
    go("requests", "Requests")
    rows = page.locator("#requests-table tbody tr")
    # Newest first: the refused one on top, then the key's (a revoked key's 401 never
    # reached the log: it had no key to charge).
    expect(rows.first).to_contain_text("400")
    expect(rows.nth(1)).to_contain_text("console-key")
    page.fill("#requests-form input[name=key]", "console-key")
    page.click("#requests-form button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("200")
    expect(page.locator("#requests-note")).to_contain_text("the end of the log")
    # Its sampled payload: the body as sent upstream and the answer.
    rows.first.locator("button.sample").click()
    view = page.locator("#sample-view")
    expect(view).to_contain_text("Request (as sent upstream)")
    expect(view.locator("pre").first).to_contain_text('"hi"')
    expect(view.locator("pre").nth(1)).to_contain_text("chat.completion")
    shot("requests")
    page.fill("#requests-form input[name=key]", "")
    page.select_option("#requests-form select[name=status]", "errors")
    page.click("#requests-form button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("400")
    rows.first.locator("button.sample").click()
    expect(page.locator("#sample-view")).to_contain_text("Not kept (a stream, or an error)")
    # Paged by cursor, one row a page, through the API.
    status, page1 = api("GET", "/admin/requests?limit=1")
    check(status == 200 and len(page1["data"]) == 1 and page1["next_cursor"], f"{page1}")
    status, page2 = api("GET", f"/admin/requests?limit=1&cursor={page1['next_cursor']}")
    check(status == 200 and page2["data"][0]["key_name"] == "console-key", f"{page2}")
    check(page2["data"][0]["id"] < page1["data"][0]["id"], "pages out of order")
    # A cursor altered by hand is refused, and a filter that names no column too.
    forged = page1["next_cursor"].replace(".", "9.", 1)
    status, body = api("GET", f"/admin/requests?cursor={forged}")
    check(status == 400 and "cursor" in body["error"]["message"], f"{status} {body}")
    status, body = api("GET", "/admin/requests?colour=red")
    check(status == 400 and "colour" in body["error"]["message"], f"{status} {body}")
    # Without the master key: nothing.
    status, body = api("GET", "/admin/requests", key="sk-not-the-master-key")
    check(status == 401 and "data" not in body, f"{status} {body}")


def test_a_canary_rollback_is_reflected_in_the_admin_api():
    go("routes", "Routes")
    route = page.locator("section.route[data-route=r]")
    expect(route.locator(".canary-percent")).to_have_text("10%")
    expect(route).to_contain_text("closed")
    route.locator("button.advance").click()
    expect(route.locator(".canary-percent")).to_have_text("50%")
    shot("routes")
    route.locator("button.rollback").click()
    expect(route.locator(".canary-percent")).to_have_text("0%")
    status, body = api("GET", "/admin/routes")
    canary = body["routes"][0]["canary"]
    check(status == 200 and canary["percent"] == 0 and canary["rollbacks"] == 1, f"{body}")


def test_a_canary_promotion_is_reflected_in_the_admin_api():
    route = page.locator("section.route[data-route=r]")
    route.locator("button.promote").click()
    expect(route.locator(".canary-percent")).to_have_text("100%")
    expect(route).to_contain_text("stage 3 of 3")
    shot("routes-promoted")
    status, body = api("GET", "/admin/routes")
    canary = body["routes"][0]["canary"]
    check(status == 200 and canary["percent"] == 100 and canary["rollbacks"] == 1, f"{body}")


def test_the_cache_is_shown_and_cleared():
    status, before = api("GET", "/admin/cache")
    check(status == 200 and before["store"]["entries"] >= 1, f"cache before: {before}")
    go("cache", "Cache")
    expect(tile("cache-hits")).to_have_text("1 / 1")
    shot("cache")
    page.once("dialog", lambda d: d.accept())
    page.click("#cache-clear")
    expect(page.locator("#cache-cleared")).to_contain_text("removed")
    expect(tile("cache-entries")).to_have_text("0")
    status, after = api("GET", "/admin/cache")
    check(after["store"]["entries"] == 0, f"cache after: {after}")


def test_the_local_models_page_says_there_are_none():
    go("models", "Local models")
    expect(page.locator("#page")).to_contain_text("No local models are configured")
    shot("models")


def test_the_overview_counts_every_request_and_plots_its_history():
    go("overview", "Overview")
    # The three at the start, the new key's, its refused one after revocation (401) and
    # the one the upstream refused (400).
    expect(tile("requests")).to_have_text("6")
    # A fresh page draws the history from the server, not from its own reads: every
    # request is in it, the refused ones as errors, with their latency.
    page.reload()
    expect(tile("requests")).to_have_text("6")
    expect(page.locator("#history-summary")).to_contain_text("6 requests (2 errors)")
    status, history = api("GET", "/admin/history?minutes=60")
    check(status == 200, f"history: {status} {history}")
    check(sum(p["requests"] for p in history["points"]) == 6, f"history: {history}")
    check(any(p["p95_seconds"] for p in history["points"]), f"no p95: {history}")
    # The minute in progress is read again every 5 s: a request now shows without a reload.
    check(chat()[0] == 200, "one more request")
    expect(page.locator("#history-summary")).to_contain_text("7 requests (2 errors)", timeout=12_000)
    check(page.locator(".chart .u-legend").count() >= 8, "legends")
    shot("overview-live")


def test_a_rotated_master_key_drops_the_stored_key_and_shows_the_form():
    go("keys", "Keys")
    check(stored_key() == MASTER, "signed in before the rotation")
    # The operator changes the master key and reloads the config.
    status, body = api("POST", "/admin/config/reload")
    check(status == 200 and body["status"] == "reloaded", f"reload: {status} {body}")
    status, _ = api("GET", "/admin/keys")
    check(status == 401, f"the old key still opens the admin API: {status}")
    # The console's next call with the stored key is refused: it drops the key and shows
    # the form, with no data behind it.
    page.goto(f"{BASE_URL}/ui#routes")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-error")).to_contain_text("Signed out")
    expect(page.locator("#page")).to_be_hidden()
    expect(page.locator("#nav")).to_be_hidden()
    check(stored_key() is None, "the refused key was kept")
    check(page.locator("section.route").count() == 0, "route data shown after the sign-out")
    shot("signed-out")
    # A reload of the page stays signed out.
    page.reload()
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#page")).to_be_hidden()
    # The old key is refused at the form; the new one signs in.
    sign_in(MASTER)
    expect(page.locator("#login-error")).to_contain_text("not the master key")
    check(stored_key() is None, "the old key was kept")
    sign_in(NEXT_MASTER)
    # Back on the page that was open, with its data.
    expect(page.locator("#page h2")).to_have_text("Routes")
    expect(page.locator("section.route[data-route=r]")).to_be_visible()
    check(stored_key() == NEXT_MASTER, "the new key is not in the session")


def test_no_console_errors():
    check(not problems, f"browser errors: {problems}")


CHECKS = [
    test_traffic_goes_through_the_fake_upstream,
    test_the_form_shows_and_no_data,
    test_a_wrong_key_is_refused,
    test_the_right_key_shows_the_overview_with_the_real_numbers,
    test_a_reload_keeps_the_session_and_signing_out_forgets_it,
    test_spend_by_model_over_a_range_exports_csv,
    test_a_key_is_created_its_secret_shown_once_and_it_works,
    test_a_keys_limits_are_edited,
    test_a_key_is_revoked,
    test_the_request_log_shows_the_keys_requests_newest_first,
    test_a_canary_rollback_is_reflected_in_the_admin_api,
    test_a_canary_promotion_is_reflected_in_the_admin_api,
    test_the_cache_is_shown_and_cleared,
    test_the_local_models_page_says_there_are_none,
    test_the_overview_counts_every_request_and_plots_its_history,
    test_a_rotated_master_key_drops_the_stored_key_and_shows_the_form,
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
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page.set_default_timeout(10_000)
        expect.set_options(timeout=10_000)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on(
            "console",
            lambda m: m.type == "error"
            # The checks provoke a 401 (a wrong key) and a 400 (a backwards range) on purpose.
            and not any(f"status of {code}" in m.text for code in (400, 401))
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
