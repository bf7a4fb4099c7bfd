"""The explorer page in a real headless Chromium (tests/support/browser.py) against a real demo
gateway: what a person sees and does. Skipped, saying why, where Chromium is absent."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.browser import Browser, Page, chromium_or_skip
from support.gateway_proc import GatewayProcess
from test_explorer import demo_config


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
    # who the gateway takes the caller for, from its join reply (the device is not shown from the token)
    assert connect(page, token("--sub", "alice", "--role", "admin", "--device", "phone-1")) == (
        "Connected as alice (roles: admin), device phone-1."
    )
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


def choose(page: Page, request_type: str) -> None:
    """Clicks a listed function and waits for its form."""
    page.wait_for(f"!!document.querySelector('button.function[data-request-type={json.dumps(request_type)}]')")
    page.evaluate(f"document.querySelector('button.function[data-request-type={json.dumps(request_type)}]').click()")
    page.wait_for(f"document.querySelector('#detail-title').textContent === 'demo.{request_type}'")


def fill(page: Page, **fields: str) -> None:
    """Sets form fields as typing would (value, then an input event)."""
    for name, value in fields.items():
        page.evaluate(
            f"(() => {{ const i = document.querySelector('#arg-{name}'); i.value = {json.dumps(value)};"
            " i.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )


def press_call(page: Page) -> None:
    page.evaluate("document.querySelector('#result').dataset.state = ''; document.querySelector('#call').click()")


def outcome(page: Page) -> tuple[str, str]:
    """Waits for the call to end: (its final kind, the result box's text)."""
    state = page.wait_for("(s => s && s !== 'running' && s)(document.querySelector('#result').dataset.state)")
    return state, page.evaluate("document.querySelector('#result').textContent")


def errors_shown(page: Page) -> dict[str, str]:
    return dict(
        page.evaluate(
            "[...document.querySelectorAll('#call-form .field[data-arg]')].map(f =>"
            " [f.dataset.arg, f.querySelector('.error').textContent])"
        )
    )


def test_register_form_shows_the_gateways_error_beside_its_field(browser: Browser, demo: GatewayProcess) -> None:
    page = explorer(browser, demo)
    connect(page)
    choose(page, "register")
    kinds = page.evaluate(
        "[...document.querySelectorAll('#call-form [data-kind]')].map(i => [i.name, i.dataset.kind, i.tagName])"
    )
    assert kinds == [
        ["name", "string", "INPUT"],
        ["age", "num", "INPUT"],
        ["active", "boolean", "SELECT"],
        ["id", "uuid", "INPUT"],
        ["tags", "list_string", "TEXTAREA"],
    ]
    assert "up to 100 bytes" in page.evaluate("document.querySelector('#arg-name-hint').textContent")
    good = {"age": "42", "id": "6f1c1d1e-7c2b-4d0e-9b8a-3f2e1d0c9b8a", "tags": "a\nb"}
    fill(page, name="x" * 101, **good)
    page.evaluate("document.querySelector('#arg-active').value = 'true'")
    press_call(page)
    state, text = outcome(page)
    assert state == "error" and 'invalid argument size for "name", max 100 bytes' in text
    shown = errors_shown(page)
    assert 'invalid argument size for "name", max 100 bytes' in shown.pop("name")
    assert set(shown.values()) == {""}  # beside the field it names, and only there
    assert page.evaluate("document.activeElement.id") == "arg-name"  # focus goes to it
    fill(page, name="Ada")
    press_call(page)
    state, text = outcome(page)
    assert state == "answer", text
    assert json.loads(text.removeprefix("result: ")) == {
        "name": "Ada",
        "age": 42,
        "active": True,
        "id": good["id"],
        "tags": ["a", "b"],
    }
    assert set(errors_shown(page).values()) == {""}
    assert page.errors() == []


def test_echo_from_the_keyboard_and_its_snippets(browser: Browser, demo: GatewayProcess) -> None:
    page = explorer(browser, demo)
    connect(page)
    choose(page, "echo")
    page.evaluate("document.querySelector('#arg-text').focus()")
    page.type("hello")
    page.key("Enter", 13, "\r")  # submits the form, as a person would
    state, text = outcome(page)
    assert state == "answer" and json.loads(text.removeprefix("result: ")) == {"text": "hello", "n": 1}
    js = page.evaluate("document.querySelector('#snippet-js').textContent")
    py = page.evaluate("document.querySelector('#snippet-py').textContent")
    assert '"service":"demo","request_type":"echo","args":{"text":"hello"}' in js
    assert 'client.call("demo", "echo", {"text":"hello"}, version="1.0.0")' in py
    frames = page.evaluate("[...document.querySelectorAll('#frames li')].map(li => [li.className, li.textContent])")
    received = [json.loads(text) for kind, text in frames if kind == "received"]
    assert any(f[3] == "phoenix_gen_api" and f[4]["result"] == {"text": "hello", "n": 1} for f in received)


def test_async_and_fire_and_forget(browser: Browser, demo: GatewayProcess) -> None:
    page = explorer(browser, demo)
    connect(page)
    choose(page, "slow_echo")
    fill(page, text="later", delay_ms="10")
    press_call(page)
    state, text = outcome(page)
    assert state == "answer" and text.startswith("acknowledged (async)")
    assert json.loads(text.split("result: ", 1)[1]) == {"text": "later", "delay_ms": 10}
    choose(page, "note")
    fill(page, text="remember")
    press_call(page)
    assert outcome(page) == ("none", "sent: acknowledged by the gateway (fire and forget: no answer)")


def test_count_streams_and_cancels(browser: Browser, demo: GatewayProcess) -> None:
    page = explorer(browser, demo)
    connect(page)
    choose(page, "count")
    fill(page, n="100000", delay_ms="50")
    press_call(page)
    page.wait_for("(document.querySelector('#result').textContent.match(/chunk: /g) || []).length >= 3")
    assert page.evaluate("document.querySelector('#cancel').hidden") is False
    page.evaluate("document.querySelector('#cancel').click()")
    state, text = outcome(page)
    assert state == "cancelled"
    chunks = [int(line.removeprefix("chunk: ")) for line in text.splitlines() if line.startswith("chunk: ")]
    assert chunks == list(range(1, len(chunks) + 1)) and len(chunks) < 100000
    frames = page.evaluate("[...document.querySelectorAll('#frames li')].map(li => [li.className, li.textContent])")
    sent = [json.loads(t)[2:4] for kind, t in frames if kind == "sent"]
    assert ["api:explorer", "phx_leave"] in sent  # leaving the topic is what cancels on the gateway
    choose(page, "echo")  # and the page goes on working on the topic joined again
    fill(page, text="after")
    press_call(page)
    assert outcome(page)[0] == "answer"


def test_permission_error_without_a_token_then_success_with_one(browser: Browser, demo: GatewayProcess) -> None:
    page = explorer(browser, demo)
    alice = token("--sub", "alice")
    connect(page, alice)
    choose(page, "whoami")  # listed for an authenticated caller
    page.evaluate("document.querySelector('#disconnect-button').click()")
    page.wait_for("document.querySelector('#status').textContent.startsWith('Disconnected')")
    assert connect(page) == "Connected anonymously."  # the form stays open
    press_call(page)
    assert outcome(page) == ("error", "error: Permission denied")
    page.evaluate("document.querySelector('#disconnect-button').click()")
    page.wait_for("document.querySelector('#status').textContent.startsWith('Disconnected')")
    assert connect(page, alice) == "Connected as alice (no roles)."
    press_call(page)
    state, text = outcome(page)
    assert state == "answer" and json.loads(text.removeprefix("result: "))["user_id"] == "alice"


def test_discovery_off_says_so(browser: Browser) -> None:
    with GatewayProcess(demo_config(discovery="false")) as gw:
        page = explorer(browser, gw)
        assert connect(page) == "Connected anonymously."
        notice = page.wait_for("(n => n && n.textContent)(document.querySelector('#discovery-off'))")
        assert notice.startswith("Discovery is off on this gateway ([gateway] discovery = false)")
        assert page.evaluate("document.querySelectorAll('#api-list button.function').length") == 0


SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


def test_readme_screenshot_of_the_explorer(browser: Browser, demo: GatewayProcess) -> None:
    """The README's picture of the explorer, taken by this run (so it stays true): the register
    form after a call the gateway refused, the error beside its field."""
    page = explorer(browser, demo)
    connect(page)
    choose(page, "register")
    fill(page, name="x" * 101, age="42", id="6f1c1d1e-7c2b-4d0e-9b8a-3f2e1d0c9b8a", tags="admin\nops")
    press_call(page)
    assert outcome(page)[0] == "error"
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / "explorer.png"
    page.screenshot(path)
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width == 1280 and height >= 600
    readme = (SCREENSHOTS.parents[1] / "README.md").read_text()
    assert "](docs/screenshots/explorer.png)" in readme


KINDS = {
    "id": "6f1c1d1e-7c2b-4d0e-9b8a-3f2e1d0c9b8a",
    "at": "2026-01-02T03:04:05+00:00",
    "day": "2026-01-02T03:04:05",
    "tags": "a\nb",
    "scores": "1\n2.5",
    "meta": '{"name": "n", "email": "e"}',
    "rows": '[{"k": 1}]',
}


def test_every_argument_type_from_the_form(browser: Browser, demo: GatewayProcess) -> None:
    """demo.kinds takes one argument of each type family: the form sends each as the gateway wants
    it, a nullable one as null, a defaulted one left out; the gateway's errors land on their field."""
    page = explorer(browser, demo)
    connect(page)
    choose(page, "kinds")
    kinds = page.evaluate("[...document.querySelectorAll('#call-form [data-kind]')].map(i => [i.name, i.dataset.kind])")
    assert kinds == [
        ["id", "uuid"],
        ["at", "datetime"],
        ["day", "naive_datetime"],
        ["tags", "list_string"],
        ["scores", "list_num"],
        ["meta", "map"],
        ["flag", "boolean"],
        ["rows", "list_map"],
        ["anything", "any"],
    ]
    assert page.evaluate("document.querySelector('#arg-flag').value") == ""  # not sent: its default applies
    assert "keys name required; keys among email, name" in page.evaluate(
        "document.querySelector('#arg-meta-hint').textContent"
    )
    fill(page, **KINDS)
    page.evaluate("document.querySelector('#arg-anything-null').checked = true")
    press_call(page)
    state, text = outcome(page)
    assert state == "answer", text
    assert json.loads(text.removeprefix("result: ")) == {
        "id": KINDS["id"],
        "at": KINDS["at"],
        "day": KINDS["day"],
        "tags": ["a", "b"],
        "scores": [1, 2.5],
        "meta": {"name": "n", "email": "e"},
        "flag": False,
        "rows": [{"k": 1}],
        "anything": None,
        "types": {"at": "datetime", "tz": True},
    }
    fill(page, meta='{"email": "e"}')  # its required key "name" missing: the error is meta's
    press_call(page)
    assert outcome(page)[0] == "error"
    shown = errors_shown(page)
    assert shown.pop("meta") == 'Invalid argument: map argument missing required keys: ["name"] (argument "meta")'
    assert set(shown.values()) == {""}
    fill(page, meta=KINDS["meta"], at="yesterday")
    press_call(page)
    assert outcome(page)[0] == "error"
    shown = errors_shown(page)
    assert shown.pop("at") == 'Invalid argument: invalid datetime format for "at": "yesterday"'
    assert set(shown.values()) == {""}
    fill(page, at=KINDS["at"], rows="[{")  # not JSON: said beside it before anything is sent
    press_call(page)
    assert page.wait_for("document.querySelector('#arg-rows-error').textContent").startswith("not JSON: ")


def test_keyboard_only(browser: Browser, demo: GatewayProcess) -> None:
    """Connect, find, open and call a function with keys alone."""
    page = explorer(browser, demo)
    page.evaluate("document.querySelector('#token').focus()")
    page.key("Enter", 13, "\r")  # submits the connect form (no token: anonymous)
    page.wait_for("document.querySelector('#status').textContent === 'Connected anonymously.'")
    page.wait_for("!!document.querySelector('button.function')")
    page.evaluate("document.querySelector('#search').focus()")
    page.type("echo_plain")
    page.key("Tab", 9)  # to the one function left
    assert page.evaluate("document.activeElement.dataset.requestType") == "echo_plain"
    page.key("Enter", 13, "\r")
    page.wait_for("document.querySelector('#detail-title').textContent === 'demo.echo_plain'")
    assert page.evaluate("document.activeElement.id") == "arg-text"  # focus moves on to the form
    page.type("typed")
    page.key("Enter", 13, "\r")
    state, text = outcome(page)
    assert state == "answer" and json.loads(text.removeprefix("result: ")) == {"text": "typed", "n": 1}
