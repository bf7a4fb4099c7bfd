"""The explorer page in a real headless Chromium (tests/support/browser.py) against a real demo
gateway: what a person sees and does. Skipped, saying why, where Chromium is absent."""

from __future__ import annotations

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
