"""/docs as a reader opens it: Debian's headless Chromium, cut off from every address but this
machine's, renders the API's operations from the API's own Swagger UI files."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.e2e.conftest import free_port

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (scripts/ensure-tools.sh installs it)"
)

# No internet: every request but loopback goes to a proxy port where nothing listens, and no
# name but localhost resolves.
OFFLINE = (
    f"--proxy-server=http://127.0.0.1:{free_port()}",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--disable-quic",
)
QUIET = (
    "--no-sandbox",  # root in a container
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # A fresh profile per launch (Playwright's default).
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=[*OFFLINE, *QUIET])
        try:
            yield launched
        finally:
            launched.close()


def test_the_docs_page_shows_the_operations_without_internet(system, browser):
    from playwright.sync_api import Error, expect

    with pytest.raises(Error, match="ERR_PROXY_CONNECTION_FAILED|ERR_NAME_NOT_RESOLVED"):
        browser.new_page().goto("https://cdn.jsdelivr.net/npm/swagger-ui-dist/")  # offline

    page = browser.new_page()
    problems: list[str] = []
    requested: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: requested.append(r.url))

    response = page.goto(f"{system.base_url}/docs")
    assert response is not None and response.ok
    assert "script-src 'self'" in response.headers["content-security-policy"]

    post_orders = page.locator(".opblock-post", has=page.locator("[data-path='/orders']"))
    expect(post_orders).to_be_visible(timeout=20_000)
    expect(post_orders.locator(".opblock-summary-method")).to_have_text("POST")
    authorize = page.get_by_role("button", name="Authorize")
    expect(authorize).to_be_visible()
    authorize.click()
    expect(page.get_by_text("bearerAuth", exact=False).first).to_be_visible()

    # Nothing was refused (a CSP violation is a console error), nothing asked beyond the API.
    assert problems == []
    own = re.compile(re.escape(system.base_url) + r"/")
    assert [url for url in requested if not own.match(url)] == []
    assert any(url.endswith("/swagger-ui-bundle.js") for url in requested)
