"""The host agent against real device processes: every primitive gives the same results
on the shared-memory path and on the UDP path; faults (loss, duplication, reordering,
corruption) never change the effects (exactly-once for reduce, atomics and signals,
byte-exact reads); a dead device fails pending operations with NetdamTimeout within the
bound; every MTU works; a host watching words of its node's device is woken when one
arrives."""

import contextlib
import os
import signal
import threading
import time

import numpy as np
import pytest

from firmware_model import alu
from netdam.agent import Addr, Agent, NakError, NetdamTimeout
from netdam.device import DeviceConfig, DeviceProcess, DeviceServer
from netdam.transport.faults import FaultConfig
from netdam.transport.reliability import RelConfig
from netdam.transport.shm import leaked
from netdam.wire.fields import MAX_DATAGRAM, DType, RedOp, Status

pytestmark = pytest.mark.timeout(60)

KEY = 0x1234ABCD
MEM = 1 << 20
REGIONS = f'[{{"base": 0, "length": {MEM}, "key": {KEY}}}]'


def _device(*extra, dev_id=1):
    return DeviceProcess("--id", dev_id, "--mem-size", MEM, "--regions", REGIONS, *extra)


def _exercise(ag: Agent, dev: int) -> dict:
    """Every primitive once; returns what each produced."""
    a = Addr(dev, 0)
    out = {}
    blob = bytes(range(256)) * 160                       # 40 KiB: several 9000-byte frags
    ag.write(a + 4096, blob)
    out["read"] = bytes(ag.read(a + 4096, len(blob)))
    out["read_small"] = bytes(ag.read(a + 4096 + 13, 7))
    out["fadd"] = [ag.atomic_add(a + 64, 5), ag.atomic_add(a + 64, 2**64 - 1),
                   int.from_bytes(ag.read(a + 64, 8), "little")]
    out["cas"] = [ag.compare_swap(a + 72, 0, 99), ag.compare_swap(a + 72, 0, 7),
                  ag.compare_swap(a + 72, 99, 7), int.from_bytes(ag.read(a + 72, 8), "little")]
    vec = np.arange(1000, dtype=np.float32)
    ag.write(a + 65536, np.ones(1000, np.float32))
    ag.reduce(a + 65536, vec)
    ag.reduce(a + 65536, vec, op=RedOp.SUM)
    out["reduce"] = np.frombuffer(ag.read(a + 65536, 4000), np.float32).tolist()
    ag.put_signal(a + 100000, b"payload!" * 1000, a + 128, 3)
    out["signal"] = ag.wait_signal(a + 128, 3, timeout=5)
    out["signalled_data"] = bytes(ag.read(a + 100000, 8000))
    ag.fence(dev)
    ag.multicast(3, a + 150000, b"mcast" * 600)          # group 3 = this device alone
    out["multicast"] = bytes(ag.read(a + 150000, 3000))
    hs = [ag.write_nb(a + 200000 + 8 * i, i.to_bytes(8, "little")) for i in range(20)]
    hs.append(ag.atomic_add_nb(a + 80, 1))
    got = []
    end = time.monotonic() + 5
    while len(got) < len(hs) and time.monotonic() < end:
        got += ag.poll(timeout=0.5)
    assert set(got) == set(hs) and all(h.done() for h in hs)
    out["nb"] = bytes(ag.read(a + 200000, 160))
    with pytest.raises(NakError) as exc:
        ag.write(Addr(dev, 0, rkey=KEY ^ 1), b"x")
    out["nak"] = exc.value.status
    with pytest.raises(NakError) as exc:
        ag.read(Addr(dev, MEM - 8, rkey=KEY), 64)
    out["nak_oob"] = exc.value.status
    acts = np.linspace(-3, 5, 300, dtype=np.float32)     # 3 fp8 blocks, the last short
    ag.write(a + 400000, acts)
    ag.quantize_fp8(a + 400000, 300, a + 402000, a + 402400, dtype=DType.FLOAT32)
    out["fp8"] = bytes(ag.read(a + 402000, 300)) + bytes(ag.read(a + 402400, 12))
    ag.dequantize_fp8(a + 402000, 300, a + 403000, a + 402400, dtype=DType.FLOAT32)
    out["dequant"] = bytes(ag.read(a + 403000, 1200))
    large = bytes(range(251)) * 1200                    # 300 KiB: direct on shm
    ag.write(a + 300000, large)
    out["large"] = bytes(ag.read(a + 300000, len(large))) == large
    out["large_slice"] = bytes(ag.read(a + 300000 + 100, 50))
    return out


@pytest.fixture(scope="module")
def results():
    """Run the same program over shm and over UDP (each its own device process)."""
    res = {}
    for path in ("shm", "udp"):
        with _device("--shm", "--groups", '{"3": [5]}', dev_id=5) as dev, \
                Agent(timeout=5) as ag:
            assert ag.add_device(dev.info, path=path) == path
            res[path] = _exercise(ag, 5)
            direct = ag.counters["direct_writes"] + ag.counters["direct_reads"]
            assert direct == (2 if path == "shm" else 0)
            assert ag.counters["signals_in_place"] == (1 if path == "shm" else 0)
    return res


def test_primitives_same_results_on_shm_and_udp(results):
    shm, udp = results["shm"], results["udp"]
    assert shm == udp
    blob = bytes(range(256)) * 160
    assert udp["read"] == blob and udp["read_small"] == blob[13:20]
    assert udp["fadd"] == [0, 5, 4]
    assert udp["cas"] == [0, 99, 99, 7]
    assert udp["reduce"] == (1 + 2 * np.arange(1000, dtype=np.float32)).tolist()
    assert udp["signal"] == 3 and udp["signalled_data"] == b"payload!" * 1000
    assert udp["nb"] == b"".join(i.to_bytes(8, "little") for i in range(20))
    assert udp["nak"] == Status.BAD_KEY and udp["nak_oob"] == Status.OUT_OF_BOUNDS
    assert udp["multicast"] == b"mcast" * 600
    q, scales = alu.quantize_fp8(np.linspace(-3, 5, 300, dtype=np.float32), DType.FLOAT32,
                                 DType.FP8_E4M3)
    assert udp["fp8"] == q + scales
    assert udp["dequant"] == alu.dequantize_fp8(q, scales, DType.FP8_E4M3, DType.FLOAT32)
    assert udp["large"] and udp["large_slice"] == (bytes(range(251)) * 2)[100:150]


def test_a_handle_waited_on_never_shows_in_the_completion_queue():
    """wait() consumes the completion, whether the handle was done before or not; only
    handles nobody waited on are polled (so the queue cannot pile up)."""
    with _device() as dev, Agent(timeout=5) as ag:
        ag.add_device(dev.info, path="udp")
        waited = [ag.write_nb(Addr(1, 8 * i), b"12345678") for i in range(200)]
        end = time.monotonic() + 5
        while not all(h.done() for h in waited) and time.monotonic() < end:
            ag.progress(0.01)
        for h in waited:
            h.wait()                     # finished already: still consumed
        polled = [ag.read_nb(Addr(1, 0), 8) for _ in range(3)]
        got = []
        while len(got) < 3 and time.monotonic() < end:
            got += ag.poll(timeout=0.5)
        assert set(got) == set(polled) and ag.poll() == []


def test_a_forged_region_description_maps_nothing():
    """The agent asks the device before mapping: wrong keys map no memory, and a large
    write with them goes through the rings and is refused there."""
    with _device("--shm") as dev, Agent(timeout=5) as ag:
        forged = dict(dev.info, regions=[dict(r, key=r["key"] ^ 0x55)
                                         for r in dev.info["regions"]])
        ag.add_device(forged, path="shm")
        with pytest.raises(PermissionError):
            ag.map_device_memory(Addr(1, 0), 4096)
        with pytest.raises(NakError) as exc:
            ag.write(Addr(1, 0), bytes(512 << 10))
        assert exc.value.status == Status.BAD_KEY
        assert ag.counters["direct_writes"] == 0


def test_shm_segments_are_gone_after_the_device_exits():
    with _device("--shm", dev_id=6) as dev:
        names = [dev.info["shm"]["memory"]] + [n for pair in dev.info["shm"]["slots"]
                                               for n in pair]
        assert set(names) <= set(leaked())
        with Agent(timeout=3) as ag:
            ag.add_device(dev.info)
            view = ag.map_device_memory(Addr(6, 1024), 16)
            view[:] = 7
            assert ag.read(Addr(6, 1024), 16) == b"\x07" * 16
            del view
    assert not set(names) & set(leaked())


def test_faults_keep_exactly_once_and_byte_exact():
    faults = FaultConfig(loss=0.1, dup=0.05, reorder=0.1, corrupt=0.01, seed=7)
    rel = RelConfig(rto_initial=0.02, rto_min=0.01, rto_max=0.1, deadline=8)
    with _device("--mtu", 1500, *FaultConfig(**{**faults.__dict__, "seed": 8}).to_argv(),
                 dev_id=7) as dev, \
            Agent(timeout=8, faults=faults, reliability=rel, mtu=1500) as ag:
        ag.add_device(dev.info, path="udp")
        a = Addr(7, 0)
        blob = os.urandom(60000)
        ag.write(a + 8192, blob)
        assert ag.read(a + 8192, len(blob)) == blob
        n = 40
        olds = [ag.atomic_add(a, 1) for _ in range(n)]
        assert sorted(olds) == list(range(n))
        assert int.from_bytes(ag.read(a, 8), "little") == n
        vec = np.ones(3000, np.int32)           # 12000 bytes: 9 fragments at MTU 1500
        hs = [ag.reduce_nb(a + 100000, vec) for _ in range(10)]
        ag.wait_all(hs)
        assert (np.frombuffer(ag.read(a + 100000, 12000), np.int32) == 10).all()
        for i in range(5):
            ag.put_signal(a + 120000, bytes([i]) * 5000, a + 16, 2)
        assert ag.wait_signal(a + 16, 10, timeout=5) == 10
        assert int.from_bytes(ag.read(a + 16, 8), "little") == 10
        assert ag.read(a + 120000, 5000) == bytes([4]) * 5000
        assert ag.rel.counters["retransmitted"] > 0
        assert ag.udp.injector.counters["corrupted"] + ag.udp.injector.counters["lost"] > 0
    k = dev.final_counters
    assert k is not None and k.get("dropped_crc", 0) > 0


@pytest.mark.parametrize("faults", [FaultConfig(), FaultConfig(dup=0.2, reorder=0.2, seed=3)])
def test_read_answers_taken_in_a_burst_complete_as_runs(faults):
    """A device in this process answers a READ before the agent looks, so the agent
    takes the answer's fragments as one burst and completes them as runs; duplicated
    and reordered answers still give the bytes, once."""
    srv = DeviceServer(DeviceConfig(device_id=3, mem_size=MEM, mtu=9000, faults=faults))
    try:
        with Agent(timeout=5, mtu=9000) as ag:
            ag.add_device(srv.info(), path="udp")
            blob = os.urandom(300_000)                 # 34 answers of 9000 bytes
            for op in (lambda: ag.write_nb(Addr(3, 0), blob),
                       lambda: ag.read_nb(Addr(3, 0), len(blob))):
                h = op()
                end = time.monotonic() + 5
                while not h.done() and time.monotonic() < end:
                    srv.step(0.0)
                    ag.progress(0.0)
            assert h.wait() == blob
            assert ag.counters["answers_in_runs"] > 0 and not ag.counters["dropped_malformed"]
    finally:
        srv.close()


@pytest.mark.parametrize("path", ["udp", "shm"])
def test_killed_device_fails_pending_operations_within_the_bound(path):
    dev = _device("--shm", dev_id=8)
    try:
        with Agent(timeout=1.0) as ag:
            ag.add_device(dev.info, path=path)
            ag.write(Addr(8, 0), b"alive")
            dev.kill()
            start = time.monotonic()
            hs = [ag.read_nb(Addr(8, 0), 5), ag.atomic_add_nb(Addr(8, 8), 1),
                  ag.write_nb(Addr(8, 16), b"x" * 100000),
                  ag.write_nb(Addr(8, 1 << 19), b"y" * 300000)]   # direct on shm
            for h in hs:
                with pytest.raises(NetdamTimeout, match="device 8") as exc:
                    h.wait()
                assert isinstance(exc.value, TimeoutError)
            with pytest.raises(NetdamTimeout, match="fence on device 8"):
                ag.fence(8)
            assert time.monotonic() - start < 1.0 + 1.0 + 0.5
    finally:
        dev.kill()


@pytest.mark.parametrize("mtu", [1500, 9000, MAX_DATAGRAM])
def test_every_mtu(mtu):
    with _device("--mtu", mtu, dev_id=9) as dev, Agent(timeout=5, mtu=mtu) as ag:
        ag.add_device(dev.info, path="udp")
        blob = os.urandom(200000)
        ag.write(Addr(9, 1000), blob)
        assert ag.read(Addr(9, 1000), len(blob)) == blob
        assert ag.read(Addr(9, 1003), 1) == blob[3:4]
        assert ag.read(Addr(9, 1000), 0) == b""
        assert ag.atomic_add(Addr(9, 240000), 3) == 0
        assert dev.info["mtu"] == mtu


def test_a_watch_wakes_the_host_when_a_peer_writes_the_word():
    """A host sleeping with a watch on its node's device (shared memory) is woken by the
    device's doorbell when another host's ATOMIC_FADD, over UDP, reaches the value; with
    nothing arriving it sleeps the whole timeout; a device reached over UDP cannot be
    watched. With answers=False an answer does not end the sleep. wait_signal on such a
    device watches its word the same way, with no READ."""
    from netdam.errors import UsageError
    word = Addr(7, 512)
    slow_rto = RelConfig(rto_initial=2.0, rto_min=2.0, rto_max=4.0, deadline=5.0)
    with _device("--shm", "--spin", "0", dev_id=7) as dev, \
            Agent(timeout=5, spin=0, reliability=slow_rto) as ag, \
            Agent(timeout=5) as peer:   # ag sleeps at once (no spinning), no timer cuts it
        assert ag.add_device(dev.info, path="shm") == "shm" and ag.can_watch(7)
        peer.add_device(dev.info, path="udp")
        assert not peer.can_watch(7)
        with pytest.raises(UsageError, match="not on this node"):
            peer.progress(0.1, watch=(7, [(512, 1)]))
        ag.write(word, bytes(8))
        t0 = time.monotonic()
        ag.progress(0.3, watch=(7, [(512, 1)]))
        assert time.monotonic() - t0 >= 0.25             # nothing came: a real sleep
        os.kill(dev.pid, signal.SIGSTOP)                 # the answer comes mid-sleep:
        h = ag.write_nb(Addr(7, 1024), b"answered")
        waker = threading.Timer(0.1, os.kill, (dev.pid, signal.SIGCONT))
        waker.start()
        try:
            t0 = time.monotonic()
            ag.progress(0.5, watch=(7, [(512, 1)]), answers=False)
            assert time.monotonic() - t0 >= 0.45         # it did not end the sleep
            assert h.done()                              # it was taken when it ended
        finally:
            waker.join()
            os.kill(dev.pid, signal.SIGCONT)
        writer = threading.Timer(0.2, lambda: peer.atomic_add(word, 2))
        writer.start()
        try:
            t0 = time.monotonic()
            while int.from_bytes(ag.read(word, 8), "little") < 2:
                ag.progress(30.0, watch=(7, [(512, 2)]))
                assert time.monotonic() - t0 < 15, "the doorbell never came"
        finally:
            writer.join()
        assert time.monotonic() - t0 < 15                # woken, not timed out (30 s)

        # wait_signal looks at such a word in place, sends no READ and is woken likewise
        assert ag.wait_signal(word, 0) == 2              # the first wait maps the region
        sleeps = ag.counters["sleeps"]
        assert ag.wait_signal(word, 2) == 2              # there already: done, no sleep
        assert ag.counters["sleeps"] == sleeps
        ops = ag.counters["ops"]
        writer = threading.Timer(0.2, lambda: peer.put_signal(Addr(7, 4096), b"done", word, 3))
        writer.start()
        try:
            t0 = time.monotonic()
            assert ag.wait_signal(word, 5, timeout=30) == 5
            assert time.monotonic() - t0 < 15
        finally:
            writer.join()
        assert ag.counters["ops"] == ops + 1             # the wait itself: no READ
        assert ag.counters["signals_in_place"] == 3
        assert bytes(ag.read(Addr(7, 4096), 4)) == b"done"


def test_usage_errors():
    with Agent(timeout=1) as ag:
        from netdam.errors import UsageError
        with pytest.raises(UsageError, match="unknown"):
            ag.read(Addr(99, 0), 8)
        with pytest.raises(UsageError):
            ag.add_device({"id": 1, "host": "127.0.0.1", "port": 1}, path="carrier-pigeon")


@pytest.mark.parametrize("path", ["udp", "shm"])
def test_a_bad_read_length_is_a_usage_error_before_anything_is_sent(path):
    from netdam.errors import UsageError
    with _device("--shm") as dev, Agent(timeout=5) as ag:
        ag.add_device(dev.info, path=path)
        for length in (-1, 2.5, "8", True):
            with pytest.raises(UsageError, match="expected a count of bytes"):
                ag.read(Addr(1, 0), length)
        with pytest.raises(UsageError, match="no region of device 1 holds"):
            ag.read(Addr(1, 0), 1 << 40)            # refused, not a terabyte allocated
        assert ag.read(Addr(1, 0), np.int64(8)) == bytes(8)   # a NumPy count is a count
        assert ag.rel.counters["sent"] == 1          # only that READ went out
        with pytest.raises(UsageError, match="unknown reduce op 99; known: sum, prod"):
            ag.reduce(Addr(1, 0), np.ones(4, np.float32), op=99)
        with pytest.raises(UsageError, match="a signal word holds 0..2"):
            ag.wait_signal(Addr(1, 8), -1)           # would never be reached: not waited
        assert ag.rel.counters["sent"] == 1


def test_nak_for_a_damaged_copy_is_retried_not_reported():
    """A MALFORMED NAK can only mean the device saw a damaged copy of our request: the
    agent retransmits instead of failing (a scripted device answers over a raw socket)."""
    import socket

    from netdam.wire import Flag, Opcode, Packet, decode, encode
    fake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fake.bind(("127.0.0.1", 0))
    fake.setblocking(False)
    info = {"id": 11, "host": "127.0.0.1", "port": fake.getsockname()[1],
            "regions": [{"key": 1, "base": 0, "length": 4096, "rights": ["WRITE"], "pkey": 0}]}
    answers = [Status.MALFORMED, Status.OK]
    seen = []
    with Agent(timeout=3, reliability=RelConfig(rto_initial=0.05, rto_min=0.01)) as ag:
        ag.add_device(info, path="udp")
        h = ag.write_nb(Addr(11, 0), b"abc")
        end = time.monotonic() + 3
        while not h.done() and time.monotonic() < end:
            ag.progress(0.005)
            try:
                data, addr = fake.recvfrom(70000)
            except BlockingIOError:
                continue
            p = decode(data)
            seen.append(p.has(Flag.RETRANSMIT))
            status = answers.pop(0)
            op = Opcode.NAK if status else Opcode.ACK
            fake.sendto(encode(Packet(opcode=op, status=status, src=11, dst=p.src, seq=p.seq,
                                      req_id=p.req_id)), addr)
        assert h.wait() is None
        assert seen == [False, True] and ag.counters["naks_damaged"] == 1
    fake.close()


def test_a_long_message_is_timed_from_when_it_is_sent():
    """Cutting 32 MiB into 1500-byte datagrams takes tens of milliseconds, longer than
    the retransmission timeout on loopback (30 ms). The first datagrams' timers must
    start when they are sent, not when cutting began: else every message after the
    first resends its whole first window (a credit's worth, 192 datagrams here) before
    any answer could have come back: at least 3 x 192 resent over the 4 writes. A stall
    of the machine may still cost a window; two are allowed for (it failed once with
    one window allowed, while a benchmark ran beside it)."""
    data = np.random.default_rng(11).integers(0, 256, 32 << 20, dtype=np.uint8).tobytes()
    with DeviceProcess("--id", 1, "--mem-size", 33 << 20) as dev:
        with Agent(timeout=20, mtu=1500) as ag:
            ag.add_device(dev.info, path="udp")
            for _ in range(4):
                ag.write(Addr(1, 0), data)
            assert ag.read(Addr(1, 0), len(data)) == data
            assert ag.rel.counters["retransmitted"] < 2.5 * 192


def test_an_answer_waiting_when_its_timer_is_due_is_taken_not_resent():
    """A caller that keeps the agent from running past a retransmission timeout (it
    computes, or the machine stalls) finds the device's answers waiting in the socket:
    they retire their datagrams before the timers are looked at, so nothing is sent
    twice."""
    with _device() as dev:
        with Agent(timeout=5) as ag:
            ag.add_device(dev.info, path="udp")
            hs = [ag.write_nb(Addr(1, 4096 * i), bytes([i]) * 3000) for i in range(4)]
            time.sleep(4 * ag.rel.rto(1))            # answered long before this
            assert ag.progress(0.0) > 0
            ag.wait_all(hs, timeout=5)
            assert ag.rel.counters["retransmitted"] == 0


@contextlib.contextmanager
def _two_hosts_two_devices(reliability: RelConfig | None = None):
    """Two agents (hosts 901 and 902) that both reach devices 1 and 2 of a two-node
    cluster over UDP; the devices form multicast group 1."""
    from netdam.cluster import LocalCluster
    from netdam.control import ControlClient
    with LocalCluster(nodes=2, mem_size=MEM) as c:
        client = ControlClient(c.coordinator, timeout=5)
        infos = {m["id"]: m["info"] for m in client.topology()["members"]
                 if m["role"] == "device"}
        client.close()
        with Agent(host_id=901, timeout=5, reliability=reliability) as a, \
                Agent(host_id=902, timeout=5, reliability=reliability) as b:
            for ag in (a, b):
                for dev in (1, 2):
                    ag.add_device(infos[dev], path="udp")
            yield a, b


def test_joined_starts_run_once_every_member_has_joined():
    """Two hosts each hand their block's chain descriptor, flagged JOIN, to device 1
    (SPEC §4.9): after the first, no chain has run; after the second, both blocks are
    reduced and multicast with their signals on both devices. A join without a group is
    a usage error before anything is sent."""
    from netdam.errors import UsageError
    with _two_hosts_two_devices() as (a, b):
        data, signal_at, n = 4096, 64 << 10, 1024
        for dev in (1, 2):
            a.write(Addr(dev, data), np.full(2 * n, dev, np.float32))
            a.write(Addr(dev, signal_at), bytes(8))
        spans = {1: (a, 0, (1, 2)), 2: (b, n, (2, 1))}   # block -> host, first, route
        for block, (ag, first, route) in spans.items():
            ag.reduce_chain(route, Addr(route[0], data + 4 * first), 4 * n,
                            dtype=DType.FLOAT32, op=RedOp.SUM,
                            signal=Addr(route[0], signal_at), group=1, join=1)
            if block == 1:       # held: nothing ran, nothing was signalled
                time.sleep(0.2)
                assert all(a.read(Addr(d, signal_at), 8) == bytes(8) for d in (1, 2))
        for dev in (1, 2):
            assert a.wait_signal(Addr(dev, signal_at), 2, timeout=5) >= 2
            got = np.frombuffer(a.read(Addr(dev, data), 8 * n), np.float32)
            assert (got == 3).all(), dev
        with pytest.raises(UsageError, match="group"):
            a.reduce_chain((1, 2), Addr(1, data), 64, dtype=DType.FLOAT32, join=1)


def _joined_round(a, b, expect: int, late: float) -> list:
    """One round of two quiet joined starts on devices 1 and 2 (block 1 from host a,
    block 2 from host b, each device's data all its own id): a's join goes ``late``
    seconds before b's, the hosts keep progressing meanwhile; then the round's signals
    reach ``expect`` on both devices and both hold the sums. Returns the two handles."""
    data, signal_at, n = 4096, 64 << 10, 1024
    for dev in (1, 2):
        a.write(Addr(dev, data), np.full(2 * n, dev, np.float32))
    hs = []
    for ag, first, route, wait in ((a, 0, (1, 2), late), (b, n, (2, 1), 0.0)):
        hs.append(ag.reduce_chain_nb(
            route, Addr(route[0], data + 4 * first), 4 * n, dtype=DType.FLOAT32,
            signal=Addr(route[0], signal_at), group=1, join=1, quiet=True))
        end = time.monotonic() + wait
        while time.monotonic() < end:
            ag.progress(0.005)
    for dev in (1, 2):
        assert a.wait_signal(Addr(dev, signal_at), expect, timeout=5) >= expect
        got = np.frombuffer(a.read(Addr(dev, data), 8 * n), np.float32)
        assert (got == 3).all(), (expect, dev)
    return hs


def test_quiet_joins_are_answered_by_the_signal_or_asked_again_when_late():
    """Joins sent with ``quiet`` (NO_RESPONSE, SPEC §4.9) get no ACK: each handle stays
    pending until its host has seen the round's signal and says ``answered``, and no
    ACK for them ever arrives. In a second round host a's join waits longer than its
    retransmission timeout for b's: the retransmission asks for the ACK, which finishes
    the handle, and the device applies the join once (the sums are those of one round).
    (A retransmission timeout of 0.3 s keeps a slow machine from retransmitting in the
    first round.)"""
    with _two_hosts_two_devices(RelConfig(rto_initial=0.3, rto_min=0.3, rto_max=0.6)) \
            as (a, b):
        hs = _joined_round(a, b, 2, 0.0)
        assert not any(h.done() for h in hs)           # no ACK: still pending
        for ag, h in zip((a, b), hs):
            ag.answered(h)
            assert h.done() and h.wait(0) is None
        time.sleep(0.05)
        for ag in (a, b):
            ag.progress(0.0)
            assert ag.rel.counters["retransmitted"] == 0
            assert ag.rel.counters["duplicate_replies"] == 0
            assert ag.rel.counters["answered"] == 1
        hs = _joined_round(a, b, 4, 2 * a.rel.rto(1))
        assert a.rel.counters["retransmitted"] >= 1 and hs[0].done()
        for ag, h in zip((a, b), hs):
            ag.answered(h)
            h.wait(1)


def test_a_join_that_usually_waits_long_is_learnt_and_not_resent():
    """Round after round host a's join waits 0.15 s for b's, longer than a's path RTO
    to the meeting device: the first joins are resent while a's quiet timeout grows
    (RELIABILITY.md), and once it has learnt how long its joins take to be answered, no
    more are resent, while its RTO stays the path's. Every round's sums are right."""
    with _two_hosts_two_devices() as (a, b):
        resent = []
        for r in range(1, 10):
            for ag, h in zip((a, b), _joined_round(a, b, 2 * r, 0.15)):
                ag.answered(h)
                h.wait(1)
            resent.append(a.rel.counters["retransmitted"])
        assert resent[0] >= 1                         # the path's RTO: resent at first
        assert resent[-1] == resent[-4]               # learnt: the last three not resent
        assert a.rel.rto(1) < 0.15 <= a.rel.quiet_timeout(1)
