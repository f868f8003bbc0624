"""Shared-memory rings carry datagrams in order and byte-exact across processes, wrap
around, report full instead of overwriting, refuse a memory mapping the region does not
grant, wake a host watching memory words exactly when one arrives, and leave no named
segment behind."""

import multiprocessing as mp

import numpy as np
import pytest

from netdam.transport.shm import (LAYOUT, SPLIT_MIN, WATCH_MAX, Backoff, DeviceShm, Ring,
                                  ShmClient, copy, leaked)
from netdam.wire import Opcode, Packet, decode, encode_parts


def test_ring_wraps_and_reports_full():
    ring = Ring(capacity=4096)
    try:
        peer = Ring(ring.name, create=False)
        for round_ in range(50):
            sizes = [1 + (round_ * 7 + i * 131) % 900 for i in range(3)]
            for i, n in enumerate(sizes):
                assert ring.push([bytes([i]) * n, b"!"])
            for i, n in enumerate(sizes):
                v = peer.peek()
                assert bytes(v) == bytes([i]) * n + b"!"
                del v
                peer.advance()
            assert peer.peek() is None
        while ring.push([b"x" * 1000]):
            pass
        assert len(ring) > 3000
        with pytest.raises(ValueError):
            ring.push([b"x" * 3000])
        peer.close()
    finally:
        ring.close()
    assert ring.name not in leaked()


def _producer(name: str, n: int) -> None:
    ring = Ring(name, create=False)
    back = Backoff()
    import time
    for i in range(n):
        p = Packet(opcode=Opcode.WRITE, seq=i, payload=i.to_bytes(4, "little") * (i % 50))
        while not ring.push(encode_parts(p)):
            time.sleep(back.pause())
        back.reset()
    ring.close()


def test_peek_many_takes_records_across_the_wrap_and_advance_releases_them_all():
    ring = Ring(capacity=1024)
    try:
        sent = got = 0
        for _ in range(20):                         # every record crosses the end at times
            while ring.push([bytes([sent % 256]) * (40 + sent % 90)]):
                sent += 1
            views = ring.peek_many(3)
            assert 1 <= len(views) <= 3
            for v in views:
                assert bytes(v) == bytes([got % 256]) * (40 + got % 90)
                got += 1
            del views, v
            ring.advance()
        rest = ring.peek_many(1000)
        assert len(rest) == sent - got
        del rest
        ring.advance()
        assert ring.peek_many(5) == [] and len(ring) == 0
    finally:
        ring.close()


def test_ring_across_processes_in_order():
    n = 3000
    ring = Ring(capacity=64 << 10)
    proc = mp.get_context("spawn").Process(target=_producer, args=(ring.name, n))
    proc.start()
    try:
        import time
        seen, back, end = 0, Backoff(), time.monotonic() + 8
        while seen < n and time.monotonic() < end:
            v = ring.peek()
            if v is None:
                time.sleep(back.pause())
                continue
            back.reset()
            p = decode(v)
            assert p.seq == seen and bytes(p.payload) == seen.to_bytes(4, "little") * (seen % 50)
            del p, v
            ring.advance()
            seen += 1
        assert seen == n
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
        ring.close()


def test_device_slots_claim_and_leak_free():
    dev = DeviceShm(1 << 16, slots=2, ring_bytes=1 << 16, tag="t-")
    names = dev.names
    try:
        assert set(names) <= set(leaked())
        a, b = ShmClient(dev.info()), ShmClient(dev.info())
        assert {a.slot, b.slot} == {0, 1}
        with pytest.raises(ConnectionError):
            ShmClient(dev.info())
        assert a.send([b"ping"]) == 0              # sent; the device is awake: no doorbell
        v = dev.requests[a.slot].peek()
        assert bytes(v) == b"ping"
        del v
        dev.requests[a.slot].advance()
        assert dev.send(a.slot, [b"pong"]) == 0
        v = a.recv()
        assert bytes(v) == b"pong"
        del v
        a.release()
        a.close()
        c = ShmClient(dev.info())        # a's slot is free again
        assert c.slot == a.slot
        c.close()
        b.close()
    finally:
        dev.close()
    assert not set(names) & set(leaked())


def test_map_device_memory_follows_region_rights():
    dev = DeviceShm(1 << 16, slots=1, ring_bytes=1 << 16, tag="t-")
    try:
        cli = ShmClient(dev.info())
        rw = {"key": 1, "base": 4096, "length": 8192, "rights": ["READ", "WRITE"], "pkey": 3}
        view = cli.map_device_memory(rw, pkey=3, offset=8, length=16)
        view[:] = np.arange(16, dtype=np.uint8)
        assert bytes(dev.memory[4096 + 8:4096 + 24]) == bytes(range(16))
        ro = dict(rw, rights=["READ"])
        with pytest.raises(PermissionError, match="write"):
            cli.map_device_memory(ro, pkey=3)
        r = cli.map_device_memory(ro, pkey=3, write=False)
        assert not r.flags.writeable and r[8] == 0
        with pytest.raises(PermissionError, match="partition"):
            cli.map_device_memory(rw, pkey=0)
        with pytest.raises(PermissionError, match="outside"):
            cli.map_device_memory(rw, pkey=3, offset=8000, length=500)
        del view, r
        cli.close()
    finally:
        dev.close()


@pytest.mark.parametrize("n", [0, 100, SPLIT_MIN - 1, SPLIT_MIN + 4099])
def test_copy_is_exact_whether_or_not_it_is_split(n):
    src = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    dst = bytearray(n + 8)
    copy(memoryview(dst)[4:4 + n], src)      # a read-only source, an offset target
    assert dst[4:4 + n] == src and dst[:4] == bytes(4) and dst[4 + n:] == bytes(4)


def test_copy_refuses_buffers_of_different_lengths():
    with pytest.raises(ValueError, match="copy of 3 bytes into 2"):
        copy(bytearray(2), b"abc")


def test_doorbell_only_when_the_consumer_sleeps():
    ring = Ring(capacity=4096)
    try:
        ring.set_wake_port(4242)
        assert ring.push([b"a"]) and ring.doorbell() == 0
        assert not ring.prepare_sleep()          # data waiting: no sleep announced
        ring.peek()
        ring.advance()
        assert ring.prepare_sleep()
        assert ring.push([b"b"]) and ring.doorbell() == 4242
        ring.awake()
        assert ring.doorbell() == 0
    finally:
        ring.close()


def test_a_watch_fires_once_when_a_word_arrives():
    """The host arms a watch on two words; the device reports its wake port only once one
    of them reaches its value, then not again until the host arms it anew."""
    dev = DeviceShm(1 << 16, slots=2, ring_bytes=1 << 16, tag="t-")
    try:
        dev.set_wake_port(1)                         # the device's own port: unused here
        cli = ShmClient(dev.info(), wake_port=4242)
        other = ShmClient(dev.info(), wake_port=4343)
        words = np.ndarray((8,), np.uint64, dev.memory, 1024)
        assert dev.watches_met() == []               # nobody watches
        assert cli.watch([(1024, 3), (1032 + 8, 1)])
        assert dev.watches_met() == []               # armed, neither word there yet
        words[0] = 2
        assert dev.watches_met() == []
        words[2] = 1                                 # the second condition holds
        assert dev.watches_met() == [4242]
        assert dev.watches_met() == []               # one-shot: disarmed by firing
        assert not cli.watch([(1024, 2)])            # already there: no sleep, not armed
        assert dev.watches_met() == []
        assert cli.watch([(1024, 5)]) and other.watch([(1024, 9)])
        words[0] = 5
        assert dev.watches_met() == [4242]           # only the host whose word came
        cli.unwatch()
        other.unwatch()
        words[0] = 10
        assert dev.watches_met() == []               # a host that woke disarms itself
        assert other.watch([(1024, 99)])
        other.close()                                # it leaves with its watch armed
        heir = ShmClient(dev.info(), wake_port=4444)
        words[0] = 100
        assert dev.watches_met() == []               # its slot's new owner is not rung
        heir.close()
        cli.close()
    finally:
        dev.close()


def test_a_watch_refuses_words_it_cannot_hold():
    dev = DeviceShm(1 << 16, slots=1, ring_bytes=1 << 16, tag="t-")
    try:
        cli = ShmClient(dev.info())
        for bad in (12, -8, (1 << 16) - 4, 1 << 16):
            with pytest.raises(ValueError, match="aligned u64"):
                cli.watch([(bad, 1)])
        with pytest.raises(ValueError, match=f"1 to {WATCH_MAX}"):
            cli.watch([(8 * i, 1) for i in range(WATCH_MAX + 1)])
        with pytest.raises(ValueError):
            cli.watch([])
        assert dev.watches_met() == []               # nothing was left armed
        cli.close()
    finally:
        dev.close()


def test_rings_of_another_layout_are_refused_with_a_reason():
    """A host never reads rings laid out by another netdam version (an agent on path
    auto then takes UDP)."""
    dev = DeviceShm(1 << 16, slots=1, ring_bytes=1 << 16, tag="t-")
    try:
        old = {k: v for k, v in dev.info().items() if k != "layout"}
        with pytest.raises(ConnectionError, match=f"layout 1 .* layout {LAYOUT}"):
            ShmClient(old)
        ShmClient(dev.info()).close()                # the same layout: claimed
    finally:
        dev.close()
