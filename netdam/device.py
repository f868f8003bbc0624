"""The device process: one firmware_model ``Device`` behind a UDP socket and, optionally,
shared-memory rings (DESIGN.md "device"; SPEC §1, §4.8, §4.9, §8).

Owns the I/O loop around the sans-I/O device: receive a datagram (UDP or a ring),
hand it to ``Device.receive``, send each answer back where the request came from and
each packet the device originates (REDUCE_FWD next hop, MULTICAST copies) to the member
it names, through the member-id -> address table and a reliability core of its own
(the responses to those packets come back here and are fed to that core, never to the
device). Also: the first stdout line (JSON: address, port, regions, shared-memory
names) so a parent can find the device, clean exit on SIGTERM/SIGINT with the counters
as the last stdout line, and the ``netdam device`` subcommand (``add_arguments`` /
``run``).

Fair service: each turn drains the socket into a ``FairQueue`` keyed by the sender's
address (bounded per source and in bytes) and then serves the sources round robin;
shared-memory rings are served round robin with a quota per ring. A flooding peer thus
waits behind itself, and what it sends beyond its share is dropped here, counted. Every
bound is a row of ``netdam.limits`` (flags of ``netdam device``). Every ACK sent over
UDP carries the sender's credit (``netdam.transport.credit``, SPEC §8.2): the bytes it
may have in flight so that all senders fit the receive buffer and none overfills its
queue. Region keys granted or revoked through the control plane are applied here
(``set_regions``).
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
import time
from dataclasses import dataclass, field, replace

from netdam import limits as _limits
from netdam.errors import UsageError
from netdam.signals import stop_on_signals
from netdam.transport.credit import Credit
from netdam.transport.fair import FairQueue
from netdam.transport.faults import FaultConfig, add_fault_arguments
from netdam.transport.reliability import RelConfig, Reliability
from netdam.transport.rxpool import RecvPool
from netdam.transport.shm import Backoff
from netdam.transport.udp import SPIN_TURN, UdpEndpoint, check_mtu, warn_if_exposed
from netdam.wire.codec import WireError, decode, encode_parts
from netdam.wire.fields import CAPS, DEFAULT_MTU, MAX_DATAGRAM, Cap, Opcode

#: opcodes that are responses (answers to packets this device originated)
_IS_RESPONSE = bytes(1 if op in CAPS and CAPS[op] & Cap.RESPONSE else 0 for op in range(256))
_OPCODE_AT = 3       # byte offset of the opcode in the fixed header (SPEC §2.1)
_SRC_AT = 12         # byte offset of the u16 src in the fixed header (SPEC §2.1)
_DST_AT = 14         # byte offset of the u16 dst
_ANY = 0xFFFF        # dst meaning "whichever device receives it"
_ACK = int(Opcode.ACK)
_VIA_SHM = "shm"     # marks a learned address that is a shared-memory slot
_BATCH = 64          # datagrams served per turn before looking at timers again
_QUANTUM = 32        # datagrams of one source served together per round (fair queue)
_INGEST = 1024       # datagrams drained from the socket per turn (cheap: no decoding)
_MAX_WAIT = 0.1      # longest sleep: how late a stop() from another thread is seen
                     # (a signal's stop ends the sleep at once: netdam.signals)
#: longest sleep of an idle device with shared-memory rings (the sleeps grow to it): a
#: host's doorbell wakes it sooner, so this only bounds a doorbell lost to the race the
#: rings document, and sets how often an idle device wakes (each costs a Python turn)
_IDLE_SLEEP_MAX = 0.05
PUBLISH = 0.2        # seconds between the counter snapshots other threads read


@dataclass
class DeviceConfig:
    """Everything a device process needs; ``peers`` maps member id -> (host, port)."""

    device_id: int = 1
    host: str = "127.0.0.1"
    port: int = 0
    mem_size: int = 1 << 20
    mtu: int = DEFAULT_MTU
    faults: FaultConfig = field(default_factory=FaultConfig)
    peers: dict[int, tuple[str, int]] = field(default_factory=dict)
    groups: dict[int, list[int]] = field(default_factory=dict)
    regions: list[dict] | None = None   #: default: one region over all memory, all rights
    shm: bool = False
    shm_slots: int = 4
    shm_ring_bytes: int = 8 << 20
    reliability: RelConfig = field(default_factory=RelConfig)
    spin: float = 5e-4     #: busy-poll this long after the last datagram before sleeping
    coordinator: str | None = None   #: register with this control plane (tcp://host:port)
    pcap: str | None = None          #: capture every datagram this device sends here
    node: int = 0                    #: the emulated node this device belongs to
    limits: dict = field(default_factory=dict)   #: overrides of netdam.limits.LIMITS
    auth: str | None = None          #: CURVE key directory for the control plane
    instructions: list[str] = field(default_factory=list)   #: "module:function" plugins
    ack_every: int = 16    #: ACK at most this many fragments of a message at once (SPEC §4.7)

    def __post_init__(self):
        """Refuse, with a ValueError naming it, a field no device could be built with."""
        if not 0 <= self.device_id < _ANY:
            raise ValueError(f"device id {self.device_id} outside 0..{_ANY - 1}")
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port {self.port} outside 0..65535")
        if self.mem_size < 1:
            raise ValueError(f"memory size {self.mem_size} must be positive")
        if self.shm_slots < 1:
            raise ValueError(f"shm slots {self.shm_slots} must be at least 1")
        if self.spin < 0 or self.node < 0:
            raise ValueError(f"spin {self.spin} and node {self.node} must not be negative")


def _rights_names(rights) -> list[str]:
    return [r.name for r in type(rights) if r.value and (rights & r) == r
            and bin(r.value).count("1") == 1]


class DeviceServer:
    """A Device with its transports. ``step()`` runs one turn of the loop; ``serve()``
    loops until ``stop()`` (or a signal)."""

    def __init__(self, config: DeviceConfig):
        from firmware_model import Device, Rights  # the device engine (sans-I/O)

        self.config = c = config
        check_mtu(c.mtu)
        self.limits = lim = _limits.resolve(c.limits)
        self.shm = None
        memory = None
        if c.shm:
            from netdam.transport.shm import DeviceShm
            self.shm = DeviceShm(c.mem_size, slots=c.shm_slots, ring_bytes=c.shm_ring_bytes,
                                 tag=f"d{c.device_id}-")
            memory = self.shm.memory
        try:
            self.device = Device(c.device_id, c.mem_size, memory=memory, mtu=c.mtu,
                                 ack_every=min(c.ack_every, lim["replay_window"]),
                                 answer_views=True,   # each turn's answers leave in it
                                 **_limits.part(lim, "engine"))
            for spec in c.instructions:
                _load_instructions(spec)(self.device)
            try:
                self.udp = UdpEndpoint(c.host, c.port, mtu=c.mtu, faults=c.faults)
            except OSError as exc:      # (an address not on this host, a port in use)
                raise UsageError(f"cannot bind UDP {c.host}:{c.port}: "
                                 f"{exc.strerror or exc}") from None
            if c.pcap:
                from netdam.capture.pcap import Capture
                self.udp.capture = Capture(c.pcap)
        except BaseException:
            if self.shm is not None:
                self.shm.close()
            raise
        self.regions = []
        for spec in c.regions or [{"base": 0, "length": c.mem_size}]:
            rights = spec.get("rights", Rights.ALL)
            if isinstance(rights, (list, tuple)):
                r = Rights(0)
                for name in rights:
                    r |= Rights[name.upper()]
                rights = r
            reg = self.device.register_region(spec["base"], spec["length"], rights=rights,
                                              pkey=spec.get("pkey", 0), key=spec.get("key"))
            self.regions.append({"key": reg.key, "base": reg.base, "length": reg.length,
                                 "rights": _rights_names(reg.rights), "pkey": reg.pkey})
        self.peers: dict[int, tuple[str, int]] = {}
        self._learned: dict[int, tuple] = {}   # member id -> where it last spoke from
        self._max_learned = lim["max_peers"]
        self.set_peers(c.peers)
        for gid, members in c.groups.items():
            self.device.set_group(int(gid), list(members))
        self.rel = Reliability(replace(c.reliability, max_queue=lim["forward_queue"],
                                       deadline=lim["forward_deadline"]))
        self.rxq = FairQueue(lim["peer_queue"], lim["rx_queue_bytes"])
        self.rxpool = RecvPool(MAX_DATAGRAM + 1, lim["rx_pool_slots"])
        self.credit = Credit(self.udp.buffer_sizes[0], c.mtu, per_source=lim["peer_queue"],
                             idle=lim["credit_idle"])
        self._shm_next = 0                     # the ring served first next turn
        self._granted: set[int] = set()        # keys registered through set_regions
        self._stop = False
        self._published: dict | None = None    # counters taken by the loop thread
        self._publish_due = 0.0
        self._backoff = Backoff(spin=c.spin, max_sleep=_IDLE_SLEEP_MAX)
        self._lone = None                  # (source, [datagram]) received into an empty
        #                                    queue: served as if popped from it
        self._due: float | None = None     # the next timer, as the last _timers found it
        self._timers_known = False         # False: something served since then
        if self.shm is not None:
            self.shm.set_wake_port(self.udp.address[1])
        self.forward_counters = {"forward_failed": 0, "forward_unroutable": 0,
                                 "responses_in": 0, "regions_refused": 0,
                                 "relayed_out": 0, "relayed_in": 0, "relay_dropped": 0}

    # -- configuration (the control plane feeds these) ------------------------------------
    def set_peers(self, peers: dict) -> None:
        """Member id -> (host, port) for packets the device sends to other members."""
        for k, v in peers.items():
            self.peers[int(k)] = (str(v[0]), int(v[1]))

    def set_group(self, group_id: int, members: list[int]) -> None:
        self.device.set_group(group_id, members)

    def set_chain(self, chain_id: int, members: list[int]) -> None:
        self.device.set_chain(chain_id, tuple(members))

    def set_regions(self, grants: list[dict], revoked: list[int]) -> None:
        """Apply the control plane's region keys: register granted ones not yet known,
        deregister revoked ones (from then on every request naming them fails BAD_KEY,
        including requests already queued or held). Whole-dict updates: safe against
        the loop thread."""
        from firmware_model import Rights
        dev = self.device
        for key in revoked:
            if dev is not None and dev.region(key) is not None:
                dev.deregister_region(key)
                self._granted.discard(key)
                self.regions = [r for r in self.regions if r["key"] != key]
        for g in grants:
            key = int(g["key"])
            if key in self._granted or key in revoked or dev is None:
                continue
            rights = Rights(0)
            for name in g.get("rights", ()):
                rights |= Rights[str(name).upper()]
            try:
                dev.register_region(int(g["base"]), int(g["length"]), rights=rights,
                                    pkey=int(g.get("pkey", 0)), key=key)
            except (ValueError, KeyError):
                self.forward_counters["regions_refused"] += 1
                continue
            self._granted.add(key)

    def info(self) -> dict:
        """What a parent or a host agent needs (the first stdout line)."""
        host, port = self.udp.address
        return {"id": self.config.device_id, "host": host, "port": port,
                "mtu": self.config.mtu, "mem_size": self.config.mem_size,
                "regions": self.regions, "pid": _pid(),
                "shm": self.shm.info() if self.shm else None}

    def counters(self) -> dict:
        """The device's counters plus the transports' (named after what they count)."""
        out = dict(self.device.counters())
        out.update(self.forward_counters)
        out.update({f"udp_{k}": v for k, v in self.udp.counters.items()})
        out.update({f"rel_{k}": v for k, v in self.rel.counters.items()})
        out.update({f"rx_{k}": v for k, v in self.rxq.counters.items()})
        out["rx_waiting"] = len(self.rxq)
        out.update({f"rx_pool_{k}": v for k, v in self.rxpool.counters.items()})
        out["udp_kernel_drops"] = self.udp.kernel_drops()
        out["credit_bytes"] = self.credit.bytes
        out["credit_senders"] = self.credit.active
        out.update({f"fault_{k}": v for k, v in self.udp.injector.counters.items()
                    if self.udp.injector.active})
        if self.shm is not None:
            out["shm_dropped_full"] = self.shm.dropped_full
        return out

    # -- the loop -------------------------------------------------------------------------
    def _to_member(self, dest: int, pkt, now: float) -> None:
        """A packet addressed by member id: an answer produced later (a timer) goes to
        where that member last spoke from; a request the device originates (REDUCE_FWD
        next hop, MULTICAST copy) goes reliably over UDP to the member's address."""
        if _IS_RESPONSE[pkt.opcode]:
            where = self._learned.get(dest)
            if where is None:
                self.forward_counters["forward_unroutable"] += 1
            elif where[0] is _VIA_SHM:
                self._to_ring(where[1], encode_parts(pkt))
            else:
                if pkt.opcode == _ACK:
                    pkt.group = self.credit.units_for(where)
                self.udp.send(pkt, where, now)
            return
        if dest not in self.peers:
            self.forward_counters["forward_unroutable"] += 1
            return
        if isinstance(pkt.payload, memoryview):   # held for retransmission: own it
            pkt.payload = bytes(pkt.payload)
        self.rel.submit(dest, pkt, now)

    def _to_ring(self, slot: int, parts) -> None:
        """A datagram onto a host's response ring, waking the host if it sleeps (a full
        ring drops it, counted there; the host retransmits)."""
        port = self.shm.send(slot, parts)
        if port:
            self.udp.ring_doorbell(port)

    def _emit_udp(self, outs, addr, now: float) -> None:
        """Answers go back to ``addr`` (the fragments of one answer, a READ_RESP cut to
        the MTU, in one burst); packets for other members go through ``_to_member``."""
        if len(outs) == 1 and outs[0].dest is None:     # one answer: no burst to gather
            pkt = outs[0].packet
            if pkt.opcode == _ACK:
                pkt.group = self.credit.units_for(addr)
            self.udp.send(pkt, addr, now)
            return
        bursts, units = self.udp.bursts(now), self.credit.units_for(addr)
        for dest, pkt in outs:
            if dest is None:
                if pkt.opcode == _ACK:
                    pkt.group = units       # the credit (SPEC §4.7): UDP answers only
                bursts.add(pkt, addr)
            else:
                self._to_member(dest, pkt, now)
        bursts.flush()

    def _emit_shm(self, outs, slot: int, now: float) -> None:
        for dest, pkt in outs:
            if dest is None:
                self._to_ring(slot, encode_parts(pkt))
            else:
                self._to_member(dest, pkt, now)

    def _response(self, view, now: float) -> bool:
        """Feed a response to the reliability core; False if it is not a valid one."""
        try:
            pkt = decode(view)
        except WireError:
            return False
        self.forward_counters["responses_in"] += 1
        self.rel.on_reply(pkt.src, pkt, now)
        return True

    # -- relay (SPEC §8.5, NCCL's PXN) -------------------------------------------------------
    def _relay_out(self, view, now: float) -> bool:
        """A host on our rings addressed another member we can reach: forward the
        datagram unchanged out of our port (the host keeps the reliability end to end).
        A member we cannot reach is left to the engine, which answers WRONG_DEVICE."""
        if len(view) <= _DST_AT + 1:
            return False
        dst = (view[_DST_AT] << 8) | view[_DST_AT + 1]
        if dst == self.device.device_id or dst == _ANY or dst not in self.peers:
            return False
        udp = self.udp   # the injector may hold a datagram back: never a ring view
        udp.send_bytes(bytes(view) if udp.injector.active else view, self.peers[dst], now)
        self.forward_counters["relayed_out"] += 1
        return True

    def _relay_in(self, view) -> bool:
        """An answer for a host on our rings (to a request we relayed): hand it over
        unchanged. True when the datagram was not ours (delivered or dropped)."""
        dst = (view[_DST_AT] << 8) | view[_DST_AT + 1]
        if dst == self.device.device_id:
            return False
        where = self._learned.get(dst)
        if where is not None and where[0] is _VIA_SHM:
            self._to_ring(where[1], [view])
            self.forward_counters["relayed_in"] += 1
        else:
            self.forward_counters["relay_dropped"] += 1
        return True

    def _learn(self, datagrams, where) -> None:
        """Remember where each member ``src`` of ``datagrams`` spoke from (answers made
        later go there); bounded by ``max_peers`` (oldest first out)."""
        learned = self._learned
        for src in dict.fromkeys((d[_SRC_AT] << 8) | d[_SRC_AT + 1]
                                 for d in datagrams if len(d) > _SRC_AT + 1):
            if learned.get(src) != where:
                learned[src] = where
                if len(learned) > self._max_learned:
                    del learned[next(iter(learned))]

    def _udp_turn(self, timeout: float) -> int:
        """Drain the socket into the fair queue (answers to this device's own forwards
        go straight to the reliability core), then serve it round robin by source."""
        return self._ingest(timeout) + self._serve_udp()

    def _ingest(self, timeout: float) -> int:
        """Drain the socket into the fair queue, each datagram into a slot of the receive
        pool (a queued datagram keeps its slot until it is served); consecutive
        datagrams from one address are queued together."""
        q, pool = self.rxq, self.rxpool
        got = self.udp.recv_batch(pool, _INGEST, timeout if not len(q) else 0.0)
        done, run, source = [], [], None
        for data, addr in got:
            if not data or (len(data) > _DST_AT + 1 and _IS_RESPONSE[data[_OPCODE_AT]]
                            and (self._relay_in(data)
                                 or self._response(data, time.monotonic()))):
                done.append(data)           # a doorbell, or an answer: handled
                continue
            if addr != source and run:
                done += q.push_run(source, run)
                run = []
            run.append(data)
            source = addr
        if len(run) == 1 and not len(q) and len(run[0]) <= q.max_bytes:
            self._lone = (source, run)      # alone and nothing waits: no queue to pass
        elif run:
            done += q.push_run(source, run)
        if done:                            # handled, or dropped by the queue's bounds
            pool.give_many(done)
        return len(got)                     # a doorbell counts: it is progress

    def _serve_udp(self) -> int:
        """Serve the fair queue: each source in turn hands over up to a quantum of its
        datagrams, which the engine takes together (``receive_many``: a run of WRITE
        fragments is applied in one pass and answered by coalesced ACKs)."""
        q, dev, give, credit, n = self.rxq, self.device, self.rxpool.give_many, self.credit, 0
        while n < _BATCH:
            item = self._lone or q.pop_run(_QUANTUM)
            if item is None:
                break
            self._lone = None
            addr, grams = item
            now = time.monotonic()
            credit.served(addr, sum(map(len, grams)), max(map(len, grams)), now)
            outs = dev.receive_many(grams, now)
            if outs:                    # the answers first: they are what a host waits for
                self._emit_udp(outs, addr, now)
            self._learn(grams, addr)    # for what goes to these members later (timers)
            n += len(grams)
            give(grams)
        return n

    def _shm_turn(self) -> int:
        """Serve the host rings round robin, at most a quota per ring per turn, starting
        with a different ring each turn; a ring's quota goes to the engine together
        (``receive_many``), and is released once its answers are out."""
        shm, dev, n = self.shm, self.device, 0
        rings = shm.requests
        quota = max(1, _BATCH // len(rings))
        start = self._shm_next
        self._shm_next = (start + 1) % len(rings)
        for j in range(len(rings)):
            slot = (start + j) % len(rings)
            ring = rings[slot]
            views = ring.peek_many(quota)
            if not views:
                continue
            now = time.monotonic()
            where = (_VIA_SHM, slot)
            local = []
            self._learn(views, where)
            for view in views:
                if not self._relay_out(view, now):
                    local.append(view)
            outs = dev.receive_many(local, now) if local else ()
            if outs:
                self._emit_shm(outs, slot, now)
            n += len(views)
            del views, local, view
            ring.advance()
        return n

    def _timers(self, now: float) -> float | None:
        """Run what is due; return the next deadline."""
        dev, rel, udp = self.device, self.rel, self.udp
        self.credit.tick(now)
        t = dev.next_timer()
        if t is not None and t <= now:
            for dest, pkt in dev.on_timer(now):
                self._to_member(pkt.dst if dest is None else dest, pkt, now)
            if self.shm is not None:     # a held request released may have written
                self._wake_watchers()
            t = dev.next_timer()
        r = rel.next_timer()
        if r is not None and r <= now:
            self.forward_counters["forward_failed"] += len(rel.handle_timer(now))
        if rel.wants_send():           # a message's fragments to one member: one burst
            peers, bursts = self.peers, udp.bursts(now)
            for dest, pkt in rel.datagrams_to_send(now):
                bursts.add(pkt, peers[dest])
            bursts.flush()
        r = rel.next_timer()              # after sending: retransmissions re-arm there
        u = udp.next_timer()
        if u is not None:
            udp.flush(now)
            u = udp.next_timer()
        due = t
        for x in (r, u):
            if x is not None and (due is None or x < due):
                due = x
        return due

    def step(self, timeout: float = _MAX_WAIT) -> int:
        """One turn: take datagrams (waiting up to ``timeout`` if there are none), run
        timers, send what is due. Returns the number of datagrams taken."""
        n = self._turn(timeout)
        if n:     # what was served may have armed timers or queued datagrams to send
            self._timers_known = False
            if self.shm is not None:
                self._wake_watchers()
        return n

    def _wake_watchers(self) -> None:
        """Ring the doorbell of every host on our rings whose watched words have reached
        their values (netdam.transport.shm, watch)."""
        for port in self.shm.watches_met():
            self.udp.ring_doorbell(port)

    def _turn(self, timeout: float) -> int:
        now = time.monotonic()
        due = self._due
        # Timers are run when one is due or the last turn served something (which may
        # have armed one); a turn that finds a datagram waiting after idle turns goes
        # straight to it, and the idle turn after it looks at the timers.
        if not self._timers_known or (due is not None and due <= now):
            due = self._due = self._timers(now)
            self._timers_known = True
        wait = timeout if due is None else max(0.0, min(timeout, due - now))
        n = self._udp_turn(0.0)
        if self.shm is not None:
            n += self._shm_turn()
        if n:
            self._backoff.reset()
            return n
        if wait <= 0:
            return 0
        pause = self._backoff.pause(wait)
        if not pause:                       # spinning: the next datagram is usually near
            if self.shm is None and self.udp.readable(now + min(wait, SPIN_TURN)):
                n = self._udp_turn(0.0)     # it came: served in this turn, as the agent
                if n:                       # does (rings are looked at by the next turn)
                    self._backoff.reset()
                return n
            return 0
        if self.shm is None:
            return self._udp_turn(wait)     # sleep in poll() until a datagram or a timer
        if self.shm.prepare_sleep():
            n = self._udp_turn(pause)       # a doorbell or a datagram wakes us
            self.shm.awake()
        return n

    def published_counters(self) -> dict:
        """The counters as the loop thread last took them (at most ``PUBLISH`` s old):
        what other threads (the control-plane member) read, never the live tables the
        loop is changing."""
        snap = self._published
        return snap if snap is not None else {}

    def serve(self) -> dict:
        """Loop until ``stop()``; returns the counters."""
        while not self._stop:
            self.step()
            now = time.monotonic()
            if now >= self._publish_due:
                self._published = self.counters()
                self._publish_due = now + PUBLISH
        return self.counters()

    def stop(self, *_args) -> None:
        self._stop = True

    def close(self) -> None:
        if self.udp.capture is not None:
            self.udp.capture.close()
        self.udp.close()
        self.device = None            # drop the engine's views of shared memory first
        if self.shm is not None:
            gc.collect()
            self.shm.close()
            self.shm = None


def _load_instructions(spec: str):
    """``module:function`` or ``path/file.py:function``: a function that registers
    user-defined instructions on the device it is given (``register_instruction``)."""
    import importlib
    import importlib.util
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise UsageError(f"--instructions {spec!r}: expected MODULE:FUNCTION")
    try:
        if where.endswith(".py"):
            loader = importlib.util.spec_from_file_location("netdam_user_instructions", where)
            mod = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(mod)
        else:
            mod = importlib.import_module(where)
        return getattr(mod, name)
    except (ImportError, OSError, AttributeError) as exc:
        raise UsageError(f"--instructions {spec!r}: {exc}") from None


def _pid() -> int:
    import os
    return os.getpid()


def serve(config: DeviceConfig, *, out=None) -> dict:
    """Run a device until SIGTERM/SIGINT: print its info as the first line of ``out``
    (JSON), serve, print ``{"counters": ...}`` as the last line, return the counters."""
    out = sys.stdout if out is None else out
    server = DeviceServer(config)
    member = None
    with stop_on_signals(server.stop) as wake:
        server.udp.wake_on(wake)     # a stop ends a sleep in poll() at once
        try:
            if config.coordinator:
                from netdam.control.member import DeviceMember
                member = DeviceMember(config.coordinator, server.info(), config.node,
                                      set_peers=server.set_peers, set_group=server.set_group,
                                      set_chain=server.set_chain,
                                      counters=server.published_counters,
                                      set_regions=server.set_regions, auth=config.auth)
            print(json.dumps(server.info()), file=out, flush=True)
            counters = server.serve()
            try:
                print(json.dumps({"counters": counters}), file=out, flush=True)
            except OSError:   # the parent went away (broken pipe): the counters go unread
                pass
            return counters
        finally:
            if member is not None:
                member.close()
            server.close()


class DeviceProcess:
    """A device run as a child process (``python -m netdam.device ...``): starts it, reads
    its info line within ``start_timeout``, and on ``stop()`` / context exit ends it with
    SIGTERM (SIGKILL after ``stop_timeout``) and collects its final counters."""

    def __init__(self, *args: str, start_timeout: float = 10.0, env: dict | None = None):
        import os
        import subprocess
        self.argv = [sys.executable, "-m", "netdam.device", *map(str, args)]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.final_counters: dict | None = None
        line = self._readline(start_timeout)
        if not line:
            self.kill()
            raise RuntimeError(f"device did not start: {' '.join(self.argv)} "
                               f"(exit {self.proc.poll()})")
        self.info: dict = json.loads(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> tuple[str, int]:
        return self.info["host"], self.info["port"]

    def _readline(self, timeout: float) -> str:
        import selectors
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return ""
        return self.proc.stdout.readline()

    def stop(self, sig: int = signal.SIGTERM, stop_timeout: float = 5.0) -> int:
        """End the device (``sig``), wait for it, read its counters; returns its exit code."""
        import subprocess
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=stop_timeout)
        for line in reversed((out or "").splitlines()):
            if line.startswith("{") and '"counters"' in line:
                self.final_counters = json.loads(line)["counters"]
                break
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the device dies without cleaning up (a crashed device)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.stop()
        elif self.proc.stdout and not self.proc.stdout.closed:
            self.proc.stdout.close()


# -- the `netdam device` subcommand ----------------------------------------------------
def _json_arg(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="UDP port (0: any free port)")
    parser.add_argument("--id", type=int, default=1, dest="device_id", help="member id")
    parser.add_argument("--mem-size", type=int, default=1 << 20, help="bytes of memory")
    parser.add_argument("--mtu", type=int, default=DEFAULT_MTU,
                        help="largest datagram the device sends (256..65507)")
    parser.add_argument("--peers", type=_json_arg, default={},
                        help='JSON {member_id: [host, port]} for forwarding and multicast')
    parser.add_argument("--groups", type=_json_arg, default={},
                        help='JSON {group_id: [member ids]}')
    parser.add_argument("--regions", type=_json_arg, default=None,
                        help='JSON [{"base":0,"length":N,"rights":["READ",...],"pkey":0}]')
    parser.add_argument("--shm", action="store_true",
                        help="also offer shared-memory rings to hosts on this node")
    parser.add_argument("--shm-slots", type=int, default=4, help="host ring pairs offered")
    parser.add_argument("--coordinator", metavar="ADDRESS",
                        help="register with the coordinator at tcp://HOST:PORT")
    parser.add_argument("--node", type=int, default=0, help="emulated node of this device")
    parser.add_argument("--pcap", metavar="FILE",
                        help="write every datagram this device sends to FILE (pcap)")
    parser.add_argument("--spin", type=float, default=5e-4,
                        help="seconds to busy-poll after a datagram before sleeping")
    parser.add_argument("--auth", metavar="DIR", default=None,
                        help="CURVE keys for the control plane (default: NETDAM_AUTH)")
    parser.add_argument("--instructions", metavar="MODULE:FUNC", action="append",
                        default=[], help="register user-defined instructions: FUNC(device)")
    parser.add_argument("--ack-every", type=int, default=16, metavar="N",
                        help="answer up to N consecutive fragments of a message with one "
                             "coalesced ACK (SPEC §4.7; 1: an ACK per datagram; default "
                             "%(default)s)")
    add_fault_arguments(parser)
    _limits.add_arguments(parser)


def config_from_args(args: argparse.Namespace) -> DeviceConfig:
    from netdam.control.auth import from_env
    limits = _limits.from_args(args)
    _limits.resolve(limits)          # a bad value is one readable line
    if args.ack_every < 1:
        raise UsageError(f"--ack-every {args.ack_every}: must be at least 1")
    try:
        return DeviceConfig(device_id=args.device_id, host=args.host, port=args.port,
                            mem_size=args.mem_size, mtu=check_mtu(args.mtu),
                            faults=FaultConfig.from_args(args), peers=args.peers or {},
                            groups=args.groups or {}, regions=args.regions, shm=args.shm,
                            shm_slots=args.shm_slots, spin=args.spin,
                            coordinator=args.coordinator, node=args.node, pcap=args.pcap,
                            limits=limits, auth=args.auth or from_env(),
                            instructions=list(args.instructions),
                            ack_every=args.ack_every)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    warn_if_exposed(args.host, f"device {args.device_id}")
    serve(config_from_args(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netdam.device",
                                     description="run one emulated netdam device")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
