"""The coordinator over real zmq sockets: requests, malformed messages, events, and a
silent member declared dead within the bound."""

import json
import os
import threading
import time

import pytest
import zmq

from netdam.control import ControlClient, ControlError, ControlTimeout, Coordinator


@pytest.fixture
def coordinator():
    coord = Coordinator(dead_after=0.5)
    t = threading.Thread(target=coord.serve, daemon=True)
    t.start()
    yield coord
    coord.stop()
    t.join(timeout=5)


def test_register_topology_status(coordinator):
    c = ControlClient(coordinator.address, timeout=2.0)
    reply = c.register("device", node=0, endpoint=["127.0.0.1", 9999])
    assert reply["id"] == c.id and c.pkey == coordinator.state.pkey
    topo = c.topology()
    assert topo["members"][0]["endpoint"] == ["127.0.0.1", 9999]
    assert topo["events"].startswith("tcp://127.0.0.1:")
    assert c.status()["members"][0]["alive"] is True
    c.close()


def test_refusal_and_malformed_messages_get_error_replies(coordinator):
    c = ControlClient(coordinator.address, timeout=2.0)
    with pytest.raises(ControlError, match="unknown op"):
        c.request("frobnicate")
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(coordinator.address)
    for junk in ([b"\xff\xfe not json"], [b"a", b"b"], [b"[1,2]"]):
        raw.send_multipart(junk)
        assert raw.poll(2000), "no reply to a malformed message"
        reply = json.loads(raw.recv_multipart()[-1])
        assert reply["ok"] is False and reply["error"]
    raw.close()
    assert coordinator.bad_requests >= 4
    assert c.request("status")["ok"]  # still serving
    c.close()


def test_silent_member_declared_dead_within_bound(coordinator):
    watcher = ControlClient(coordinator.address, timeout=2.0)
    watcher.register("host")
    watcher.start_heartbeat(0.1)
    events = watcher.events()
    time.sleep(0.3)  # let the subscription connect before the member joins
    victim = ControlClient(coordinator.address, timeout=2.0)
    vid = victim.register("device")["id"]
    start = time.monotonic()
    dead = None
    while time.monotonic() - start < 3.0:
        ev = events.next(timeout=0.5)
        if ev and ev["event"] == "dead":
            dead = ev
            break
    elapsed = time.monotonic() - start
    assert dead is not None and dead["id"] == vid
    assert elapsed < 0.5 + 1.0  # bound + a loop tick + slack
    alive = {m["id"]: m["alive"] for m in watcher.status()["members"]}
    assert alive == {watcher.id: True, vid: False}
    events.close()
    watcher.close()
    victim.close()


def test_no_coordinator_times_out():
    c = ControlClient("tcp://127.0.0.1:1", timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(ControlTimeout, match="did not answer"):
        c.status()
    assert time.monotonic() - t0 < 2.0
    c.close()


@pytest.mark.timeout(30)
def test_a_port_it_cannot_have_is_one_usage_error():
    import socket
    from netdam.errors import UsageError
    with pytest.raises(UsageError, match="port 99999 outside 0..65535"):
        Coordinator(port=99999)
    with socket.socket() as taken:                  # a TCP port another socket holds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"cannot bind tcp://127.0.0.1:{port}: "):
            Coordinator(port=port)


def test_an_event_wait_ends_when_its_wake_fd_is_readable(coordinator):
    c = ControlClient(coordinator.address, timeout=2.0)
    events = c.events()
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        start = time.monotonic()
        assert events.next(30.0, wake=r) is None
        assert time.monotonic() - start < 15    # the fd ended it, not the 30 s
    finally:
        os.close(r)
        os.close(w)
        events.close()
        c.close()
