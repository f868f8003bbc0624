"""ClusterState, sans-I/O: every request gets a reply, bad ones an error reply; members
silent for longer than the bound are declared dead exactly once."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdam.control.state import HANDLERS, ClusterState


def _ok(reply: dict) -> dict:
    assert reply["ok"], reply
    return reply


def test_register_assigns_ids_and_shares_the_pkey():
    s = ClusterState()
    a = _ok(s.handle({"op": "register", "role": "device", "node": 0,
                      "endpoint": ["127.0.0.1", 5000]}, 0.0))
    b = _ok(s.handle({"op": "register", "role": "host", "node": 0}, 0.0))
    assert a["id"] != b["id"] and a["pkey"] == b["pkey"] == s.pkey
    topo = _ok(s.handle({"op": "topology"}, 0.0))
    assert {m["id"] for m in topo["members"]} == {a["id"], b["id"]}
    dev = next(m for m in topo["members"] if m["role"] == "device")
    assert dev["endpoint"] == ["127.0.0.1", 5000]


def test_wanted_id_taken_is_refused():
    s = ClusterState()
    _ok(s.handle({"op": "register", "role": "device", "want_id": 7}, 0.0))
    r = s.handle({"op": "register", "role": "device", "want_id": 7}, 0.0)
    assert not r["ok"] and "taken" in r["error"]


def test_dead_after_silence_and_alive_again():
    s = ClusterState(dead_after=1.0)
    mid = _ok(s.handle({"op": "register", "role": "device"}, 0.0))["id"]
    other = _ok(s.handle({"op": "register", "role": "host"}, 0.0))["id"]
    s.events.clear()
    _ok(s.handle({"op": "heartbeat", "id": other, "counters": {"tx": 1}}, 0.9))
    assert s.check_health(0.9) == []
    assert s.check_health(1.5) == [mid]
    assert s.check_health(1.6) == []  # reported once
    assert s.events == [{"event": "dead", "id": mid, "role": "device", "name": f"device{mid}"}]
    reply = _ok(s.handle({"op": "heartbeat", "id": other}, 1.7))
    assert reply["dead"] == [mid]
    _ok(s.handle({"op": "heartbeat", "id": mid}, 2.0))
    assert s.events[-1] == {"event": "alive", "id": mid}
    status = _ok(s.handle({"op": "status"}, 2.0))
    hb = next(m for m in status["members"] if m["id"] == other)
    assert hb["counters"] == {"tx": 1}


def test_groups_and_regions():
    s = ClusterState()
    ids = [_ok(s.handle({"op": "register", "role": "device"}, 0.0))["id"] for _ in range(3)]
    g = _ok(s.handle({"op": "group", "members": ids}, 0.0))["group"]
    assert _ok(s.handle({"op": "topology"}, 0.0))["groups"] == {str(g): ids}
    bad = s.handle({"op": "group", "members": [ids[0], 999]}, 0.0)
    assert not bad["ok"] and "999" in bad["error"]
    _ok(s.handle({"op": "region", "id": ids[0], "name": "buf", "base": 0, "length": 64,
                  "rkey": 0xABCD}, 0.0))
    assert _ok(s.handle({"op": "lookup", "name": "buf"}, 0.0))["region"]["rkey"] == 0xABCD
    assert not s.handle({"op": "lookup", "name": "nope"}, 0.0)["ok"]


@pytest.mark.parametrize("req", [
    None, 3, "x", [], {}, {"op": "nope"}, {"op": "register"}, {"op": "register", "role": "cat"},
    {"op": "register", "role": "device", "want_id": -1},
    {"op": "register", "role": "device", "endpoint": "nowhere"},
    {"op": "heartbeat"}, {"op": "heartbeat", "id": "x"}, {"op": "heartbeat", "id": 42},
    {"op": "group", "members": "abc"}, {"op": "region", "id": 1},
])
def test_bad_requests_get_error_replies(req):
    s = ClusterState()
    s.handle({"op": "register", "role": "device"}, 0.0)
    reply = s.handle(req, 0.0)
    assert reply["ok"] is False and reply["error"]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["op", "id", "role", "members", "name", "base",
                                        "length", "rkey", "want_id", "endpoint", "counters"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                 st.sampled_from(sorted(HANDLERS)),
                                 st.lists(st.integers(), max_size=3))))
def test_any_request_gets_a_reply(req):
    s = ClusterState()
    s.handle({"op": "register", "role": "device"}, 0.0)
    reply = s.handle(req, 1.0)
    assert reply["ok"] in (True, False)


def test_ids_of_departed_members_are_not_reused():
    s = ClusterState()
    first = _ok(s.handle({"op": "register", "role": "host"}, 0.0))["id"]
    _ok(s.handle({"op": "leave", "id": first}, 0.0))
    second = _ok(s.handle({"op": "register", "role": "host"}, 0.0))["id"]
    assert second != first


def test_chains_are_held_and_checked():
    s = ClusterState()
    devs = [_ok(s.handle({"op": "register", "role": "device"}, 0.0))["id"] for _ in range(3)]
    host = _ok(s.handle({"op": "register", "role": "host"}, 0.0))["id"]
    cid = _ok(s.handle({"op": "chain", "members": devs[::-1]}, 0.0))["chain"]
    assert _ok(s.handle({"op": "topology"}, 0.0))["chains"] == {str(cid): devs[::-1]}
    bad = s.handle({"op": "chain", "members": [devs[0], host]}, 0.0)
    assert not bad["ok"] and "not a device" in bad["error"]
