"""The explorer page in a real headless Chromium (tests/support/browser.py) against a real demo
gateway: what a person sees and does. Skipped, saying why, where Chromium is absent."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from support.browser import Browser, Page, chromium_or_skip
from support.gateway_proc import GatewayProcess


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium_or_skip()
    b = Browser()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def demo() -> Iterator[GatewayProcess]:
    gw = GatewayProcess()  # the demo (default.toml)
    yield gw
    gw.stop()


def explorer(browser: Browser, gw: GatewayProcess) -> Page:
    return browser.page(f"http://{gw.host}:{gw.port}/explorer")


def test_the_page_loads(browser: Browser, demo: GatewayProcess) -> None:
    page = explorer(browser, demo)
    assert page.evaluate("document.title") == "genapi explorer"
    assert page.wait_for("window.__explorerReady === true")
    assert page.errors() == []


def token(*args: str) -> str:
    """`genapi token ...` (signed with the demo's secret), as a person would paste it."""
    out = subprocess.run([sys.executable, "-m", "genapi", "token", *args], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def connect(page: Page, jwt: str = "") -> str:
    """Fills the token field, presses Connect and waits for the status; the status text."""
    page.evaluate(f"document.querySelector('#token').value = {json.dumps(jwt)}")
    page.evaluate("document.querySelector('#connect-button').click()")
    return page.wait_for(
        "/^(Connected|Not connected:)/.test(document.querySelector('#status').textContent)"
        " && document.querySelector('#status').textContent"
    )


LISTED = """[...document.querySelectorAll('#api-list .service')].map(s =>
    [s.dataset.service, [...s.querySelectorAll('button.function')].map(b => b.dataset.requestType)])"""


def test_lists_what_discovery_shows_the_caller(browser: Browser, demo: GatewayProcess) -> None:
    page = explorer(browser, demo)
    assert connect(page) == "Connected anonymously."
    listed = dict(page.wait_for(f"document.querySelector('#api-list .service') && {LISTED}"))
    assert "echo" in listed["demo"] and "register" in listed["demo"] and "count" in listed["demo"]
    assert "whoami" not in listed["demo"] and "admin_stats" not in listed["demo"]  # not for anonymous callers
    assert list(listed) == ["demo"]  # genapi.list_apis itself is never listed
    # search narrows the list
    page.evaluate("const s = document.querySelector('#search'); s.value = 'regis'; s.dispatchEvent(new Event('input'))")
    assert dict(page.evaluate(LISTED)) == {"demo": ["register"]}
    # with an admin token, what discovery shows an admin
    page = explorer(browser, demo)
    assert connect(page, token("--sub", "alice", "--role", "admin")) == "Connected as alice (roles: admin)."
    listed = dict(page.wait_for(f"document.querySelector('#api-list .service') && {LISTED}"))
    assert "whoami" in listed["demo"] and "admin_stats" in listed["demo"]
    frames = page.evaluate("[...document.querySelectorAll('#frames li')].map(li => [li.className, li.textContent])")
    sent = [json.loads(text) for kind, text in frames if kind == "sent"]
    assert sent[0][2:4] == ["api:explorer", "phx_join"]
    assert sent[1][3:] == [
        "phoenix_gen_api",
        {**sent[1][4], "service": "genapi", "request_type": "list_apis", "args": {}},
    ]
    assert page.errors() == []


def test_a_refused_token_says_so(browser: Browser, demo: GatewayProcess) -> None:
    page = explorer(browser, demo)
    assert connect(page, "not-a-jwt").startswith("Not connected: ")
    assert page.evaluate("document.querySelectorAll('#api-list button.function').length") == 0
