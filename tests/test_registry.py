"""The versioned registry and the FunConfig/Response structs."""

import msgspec
import pytest

from genapi.request.registry import Disabled, NotFound, Registry
from genapi.structs import FunConfig, Response


def cfg(version, rt="get", **kw):
    return FunConfig(service="svc", request_type=rt, nodes="local", timeout=1000, mfa="m:f", version=version, **kw)


def test_add_get_latest_disable_enable_delete_list():
    r: Registry = Registry()
    for v in ("1.0.0", "2.0.0", "10.0.0", "9.1.0"):
        r.add(cfg(v), attached=v)
    assert r.get("svc", "get", "2.0.0").version == "2.0.0"
    assert r.get_latest("svc", "get").version == "10.0.0"  # numeric, not lexicographic
    assert r.lookup("svc", "get", "0.0.0")[1] == "10.0.0"
    r.disable("svc", "get", "10.0.0")
    assert r.get_latest("svc", "get").version == "9.1.0"
    with pytest.raises(Disabled):
        r.get("svc", "get", "10.0.0")
    assert r.get("svc", "get", "1.0.0").version == "1.0.0"  # other versions unaffected
    r.enable("svc", "get", "10.0.0")
    assert r.get_latest("svc", "get").version == "10.0.0"
    r.delete("svc", "get", "10.0.0")
    assert r.get_latest("svc", "get").version == "9.1.0"
    with pytest.raises(NotFound):
        r.get("svc", "get", "10.0.0")
    with pytest.raises(NotFound):
        r.get("svc", "nope")
    with pytest.raises(NotFound):
        r.delete("svc", "get", "7.0.0")
    r.add(cfg(None, rt="other"))
    assert [c.version for c in r.list()] == ["1.0.0", "2.0.0", "9.1.0", None]
    assert r.functions() == {"svc": {"get": ["1.0.0", "2.0.0", "9.1.0"], "other": [None]}}
    assert len(r) == 4


def test_all_disabled_is_disabled_not_missing():
    r: Registry = Registry()
    r.add(cfg("1.0.0", disabled=True))
    with pytest.raises(Disabled):
        r.get_latest("svc", "get")
    r.delete("svc", "get", "1.0.0")
    with pytest.raises(NotFound):
        r.get_latest("svc", "get")


def test_add_replaces_same_version():
    r: Registry = Registry()
    r.add(cfg("1.0.0"), "a")
    r.add(cfg("1.0.0"), "b")
    assert len(r) == 1 and r.lookup("svc", "get", "1.0.0")[1] == "b"


def test_response_wire_shape_has_the_seven_keys_and_kind():
    enc = msgspec.json.encode
    assert msgspec.json.decode(enc(Response.sync("r", {"a": 1}))) == {
        "kind": "answer",
        "request_id": "r",
        "result": {"a": 1},
        "success": True,
        "error": None,
        "async": False,
        "has_more": False,
        "can_retry": False,
    }
    assert msgspec.json.decode(enc(Response.ack("r")))["async"] is True
    chunk = msgspec.json.decode(enc(Response.chunk("r", 5)))
    assert (chunk["async"], chunk["has_more"], chunk["result"]) == (True, True, 5)
    end = msgspec.json.decode(enc(Response.stream_end("r")))
    assert (end["async"], end["has_more"], end["result"], end["success"]) == (True, False, None, True)
    err = msgspec.json.decode(enc(Response.fail("r", "boom", can_retry=True)))
    assert (err["success"], err["error"], err["can_retry"]) == (False, "boom", True)


def test_fun_config_defaults_match_the_reference():
    c = cfg("1.0.0")
    assert (
        c.choose_node_mode,
        c.arg_types,
        c.arg_orders,
        c.response_type,
        c.check_permission,
        c.permission_callback,
        c.disabled,
        c.retry,
        c.before_execute,
        c.after_execute,
        c.hook_timeout,
        c.request_info,
    ) == ("random", None, [], "sync", False, None, False, None, None, None, 5000, False)
    assert c.errors() == []
    assert FunConfig(service="s", request_type="r", nodes="local", timeout="infinity", mfa="m:f").timeout_ms() is None
    bad = FunConfig(
        service="",
        request_type="",
        nodes=[],
        timeout=99,
        mfa="x",
        response_type="x",
        check_permission={"arg": ""},
        retry=-1,
        hook_timeout=-5,
        arg_orders="list",
    )
    fields = [e.split(":")[0] for e in bad.errors()]
    assert fields == [
        "request_type",
        "service",
        "nodes",
        "timeout",
        "mfa",
        "response_type",
        "check_permission",
        "arg_orders",
        "retry",
        "hook_timeout",
    ]


def test_a_recording_registry_names_the_keys_each_change_touched():
    r: Registry = Registry()
    r.add(cfg("1.0.0"))
    assert r.changes() == set()  # not recording: nothing kept
    r.record()
    assert r.changes() is None  # what came before recording is unknown: everything
    r.add(cfg("2.0.0"))
    r.disable("svc", "get", "1.0.0")
    r.add(cfg(None, rt="other"))
    r.delete("svc", "other", None)
    assert r.changes() == {("svc", "get", "2.0.0"), ("svc", "get", "1.0.0"), ("svc", "other", None)}
    assert r.changes() == set()  # each call starts afresh
    r.replace_all([(cfg("3.0.0"), None)])
    assert r.changes() is None  # swapped whole
    r.enable("svc", "get", "3.0.0")
    assert r.changes() == {("svc", "get", "3.0.0")}


def test_replace_leaves_the_unchanged_configs_in_place_and_names_only_what_changed():
    from genapi.config import parse
    from genapi.request.bind import Functions

    functions = Functions.checked(parse("[auth]\nrequire_verified_user_id = false\n"))
    registry = functions.registry
    service = [
        FunConfig(service="p", request_type=f"f{i}", mfa="m:f", nodes=["127.0.0.1:1"], version="1") for i in range(5)
    ]
    old = [(c.service, c.request_type, c.version) for c in service]
    functions.replace([], service)
    registry.record()
    registry.changes()
    entries = {k: registry.item(*k) for k in old}
    again = [msgspec.structs.replace(c) for c in service]  # equal, other objects (a push of the same)
    again[1] = msgspec.structs.replace(service[1], timeout=1234)
    del again[3]
    functions.replace(old, again)
    assert registry.changes() == {old[1], old[3]}
    for k in (old[0], old[2], old[4]):
        assert registry.item(*k) is entries[k]  # the same config and Entry: nothing rebound
    assert registry.item(*old[1])[0].timeout == 1234 and registry.item(*old[3]) is None
