"""/dashboard in a real headless Chromium (tests/support/browser.py, the DevTools protocol on a
pipe) against a real gateway of two workers: refused without admin credentials (401) and with a
token lacking the role (403), live counters that move after real calls, a function disabled then
enabled through the confirmation dialog (and real clients refused, then served), and the
README's screenshot, made by this run."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from support.gateway_proc import GatewayProcess
from test_dashboard import CONFIG, calls, token

browser = pytest.importorskip("support.browser", reason="the browser harness (tests/support/browser.py) is absent")

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "dashboard.png"


@pytest.fixture(scope="module")
def gw() -> Any:
    g = GatewayProcess(CONFIG, extra_args=["--workers", "2"])
    yield g
    assert g.stop() == 0


@pytest.fixture(scope="module")
def chromium() -> Any:
    with browser.Browser() as b:
        yield b


def connect_with(page: Any, credential: str) -> None:
    """Types `credential` into the field and presses Enter: the keyboard, as a person would."""
    page.evaluate("(() => { const c = document.getElementById('credential'); c.value = ''; c.focus(); })()")
    page.type(credential)
    enter = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
    page.send("Input.dispatchKeyEvent", {"type": "keyDown", **enter, "text": "\r"})  # the text: a form submits
    page.send("Input.dispatchKeyEvent", {"type": "keyUp", **enter})


def text(page: Any, selector: str) -> Any:
    return page.evaluate(f"document.querySelector({json.dumps(selector)})?.textContent ?? null")


def click(page: Any, selector: str) -> None:
    assert page.evaluate(
        f"(() => {{ const b = document.querySelector({json.dumps(selector)}); b?.click(); return !!b; }})()"
    )


def test_refused_without_admin_credentials(gw: GatewayProcess, chromium: Any) -> None:
    page = chromium.page(f"http://{gw.host}:{gw.port}/dashboard")
    assert "admin credential" in text(page, "#message")
    assert page.evaluate("document.getElementById('board').hidden") is True
    connect_with(page, "not-a-credential")
    page.wait_for("document.getElementById('message').textContent.includes('401')")
    assert page.evaluate("document.getElementById('board').hidden") is True
    connect_with(page, token(["ops"]))
    page.wait_for("document.getElementById('message').textContent.includes('403')")
    assert page.evaluate("document.getElementById('board').hidden") is True
    assert page.errors() == []


def test_live_counters_and_a_function_disabled_then_enabled(gw: GatewayProcess, chromium: Any) -> None:
    page = chromium.page(f"http://{gw.host}:{gw.port}/dashboard")
    connect_with(page, token(["admin"]))
    page.wait_for(
        "!document.getElementById('board').hidden && document.querySelectorAll('#workers tbody tr').length === 2"
    )
    row = '#requests tr[data-function="d.echo"] td.ok'
    before = int(text(page, row) or 0)
    assert all(r.success for r in asyncio.run(calls(gw, "echo", 5)))
    page.wait_for(f"Number(document.querySelector({json.dumps(row)})?.textContent) === {before + 5}")
    page.wait_for("document.querySelector('#chart-rate path.line') !== null")  # two samples: a line

    fn = '#functions tr[data-function="d.echo"]'
    click(page, f"{fn} button")  # disable, then cancel: nothing changes
    page.wait_for("document.getElementById('confirm').open")
    click(page, "#confirm-no")
    page.wait_for("!document.getElementById('confirm').open")
    assert text(page, f"{fn} td.state") == "enabled"
    assert asyncio.run(calls(gw, "echo", 1))[0].success

    # Asked, refused and asked again in one go, then confirmed: the refusal's close event arrives
    # while the second question is open and must not answer it.
    assert page.evaluate(
        f"""(() => {{
            const b = () => document.querySelector({json.dumps(fn + " button")});
            b().click();
            document.getElementById('confirm-no').click();
            b().click();
            return document.getElementById('confirm').open;
        }})()"""
    )
    time.sleep(0.2)  # the queued close event is dispatched
    assert page.evaluate("document.getElementById('confirm').open"), "the second question was answered unasked"
    click(page, "#confirm-yes")
    page.wait_for(f"document.querySelector({json.dumps(fn + ' td.state')})?.textContent === 'disabled'")
    for _ in range(4):  # over both workers
        (r,) = asyncio.run(calls(gw, "echo", 1))
        assert not r.success and "disabled" in r.error, r
    page.wait_for("Number(document.getElementById('errors-kind-disabled')?.textContent) === 4")  # errors by kind

    click(page, f"{fn} button")  # enable, confirmed
    page.wait_for("document.getElementById('confirm').open")
    click(page, "#confirm-yes")
    page.wait_for(f"document.querySelector({json.dumps(fn + ' td.state')})?.textContent === 'enabled'")
    for _ in range(4):
        assert asyncio.run(calls(gw, "echo", 1))[0].success

    assert all(r.success for r in asyncio.run(calls(gw, "echo", 20)))  # the screenshot shows them, refreshed
    page.wait_for(f"Number(document.querySelector({json.dumps(row)})?.textContent) === {before + 5 + 1 + 4 + 20}")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(SCREENSHOT)
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.errors() == []
