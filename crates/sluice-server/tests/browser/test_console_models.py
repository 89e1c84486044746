"""The console's local models page in a real browser (Chromium under Playwright): the pool,
and a model loaded and unloaded with its buttons.

Run by tests/local/console.rs against a gateway with one local model, `tiny` (a small GGUF file the
test writes), and the master key in `SLUICE_MASTER_KEY`; the same environment as
test_console.py otherwise. One line per check, then `N passed, N failed`.
"""

import os
import sys
import traceback

from playwright.sync_api import expect, sync_playwright

BASE_URL = os.environ["SLUICE_BASE_URL"]
MASTER = os.environ["SLUICE_MASTER_KEY"]
CHROMIUM = os.environ.get("SLUICE_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("SLUICE_SCREENSHOTS", "target/console-screenshots")

page = None


def row():
    return page.locator("#local-models tbody tr", has_text="tiny")


def test_the_pool_is_shown():
    page.goto(f"{BASE_URL}/ui#models")
    page.fill("#login-key", MASTER)
    page.click("#login button[type=submit]")
    expect(page.locator("#page h2")).to_have_text("Local models")
    expect(row()).to_contain_text("unloaded")
    expect(page.locator("[data-metric=local-loaded] strong")).to_have_text("0 of 1")


def test_a_model_is_loaded_and_unloaded():
    row().locator("button.load").click()
    expect(row()).to_contain_text("loaded")
    expect(row().locator("button.unload")).to_be_enabled()
    expect(page.locator("[data-metric=local-loaded] strong")).to_have_text("1 of 1")
    used = page.locator("[data-metric=local-memory] strong").inner_text()
    if used.startswith("0 B"):
        raise AssertionError(f"memory used: {used}")
    os.makedirs(SHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, "models-local.png"), full_page=True)
    row().locator("button.unload").click()
    expect(row().locator("button.load")).to_be_visible()
    expect(page.locator("[data-metric=local-loaded] strong")).to_have_text("0 of 1")


CHECKS = [test_the_pool_is_shown, test_a_model_is_loaded_and_unloaded]


def main():
    global page
    passed = failed = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        expect.set_options(timeout=20_000)
        for fn in CHECKS:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - report every failure, keep going
                failed += 1
                print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}", flush=True)
                traceback.print_exc()
                try:
                    os.makedirs(SHOTS, exist_ok=True)
                    page.screenshot(path=os.path.join(SHOTS, f"failed-{fn.__name__}.png"))
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
