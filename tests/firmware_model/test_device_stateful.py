"""A hypothesis stateful test of the device: several peers send sequenced requests (new,
retransmitted, reordered, far out of window, with bogus keys or partitions), hostile
bytes arrive between them, and time moves. Invariant after every step: the device's
memory equals a model in which every accepted request was applied exactly once and
nothing else changed memory; protected memory never changes; every answer is one a
request may get; the device's state stays within its limits; nothing raised."""

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from firmware_model import Device, Rights
from netdam.wire.codec import Packet, decode, encode
from netdam.wire.fields import Flag, Opcode, Status

MEM = 1 << 12
OPEN = (0, 2048)            # a writable region; the rest is a read-only canary
CANARY = (2048, 2048)
PKEY = 9
# every peer keeps its window for the whole run: an evicted or expired peer's window
# starts afresh, so an old duplicate would be new again (RELIABILITY.md, retry safety)
LIMITS = dict(replay_window=16, max_peers=4, max_held=2, max_held_bytes=256,
              hold_timeout=0.5, peer_timeout=1e6, max_messages=4)
PEERS = (100, 101, 102, 103)


class DeviceMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dev = Device(1, MEM, **LIMITS)
        self.key = self.dev.register_region(*OPEN, Rights.ALL, pkey=PKEY).key
        canary = self.dev.register_region(*CANARY, Rights.READ, pkey=PKEY)
        self.dev.memory[CANARY[0]:] = bytes(random.Random(5).randbytes(CANARY[1]))
        self.canary = bytes(self.dev.memory[CANARY[0]:])
        self.canary_key = canary.key
        self.model = bytearray(MEM)
        self.model[CANARY[0]:] = self.canary
        self.seq = {p: 1000 * p for p in PEERS}
        self.sent: dict[int, list[Packet]] = {p: [] for p in PEERS}
        self.applied: dict[tuple[int, int], bool] = {}
        self.now = 0.0
        self.req = 0

    def _send(self, pkt: Packet) -> list[Packet]:
        outs = self.dev.receive(encode(pkt), self.now)
        replies = [decode(encode(o.packet)) for o in outs]
        for r in replies:
            assert r.opcode in (Opcode.ACK, Opcode.NAK, Opcode.READ_RESP, Opcode.ATOMIC_RESP)
            assert r.opcode != Opcode.NAK or r.status != Status.OK
        return replies

    def _write(self, peer: int, addr: int, data: bytes, seq: int, **kw) -> Packet:
        self.req += 1
        return Packet(opcode=Opcode.WRITE, src=peer, dst=1, rkey=kw.get("rkey", self.key),
                      pkey=kw.get("pkey", PKEY), seq=seq, req_id=self.req,
                      flags=Flag.ACK_REQ, addr=addr, length=len(data), payload=data)

    def _record(self, pkt: Packet, replies: list[Packet]) -> None:
        """Apply to the model what the device said it applied."""
        for r in replies:
            if r.seq == pkt.seq and r.opcode == Opcode.ACK:
                ident = (pkt.src, pkt.seq)
                if not self.applied.get(ident):
                    self.applied[ident] = True
                    self.model[pkt.addr:pkt.addr + len(pkt.payload)] = pkt.payload

    @rule(peer=st.sampled_from(PEERS), addr=st.integers(0, OPEN[1] - 16),
          data=st.binary(min_size=1, max_size=16))
    def write(self, peer, addr, data):
        pkt = self._write(peer, addr, data, self.seq[peer])
        self.seq[peer] += 1
        self.sent[peer].append(pkt)
        self._record(pkt, self._send(pkt))

    @precondition(lambda self: any(self.sent.values()))
    @rule(data=st.data())
    def retransmit(self, data):
        """An old request again (a retransmission or a network duplicate)."""
        peer = data.draw(st.sampled_from([p for p in PEERS if self.sent[p]]))
        pkt = data.draw(st.sampled_from(self.sent[peer]))
        again = pkt.copy(flags=pkt.flags | Flag.RETRANSMIT)
        replies = self._send(again)
        if self.applied.get((peer, pkt.seq)):
            # applied once already: never again, whatever the answer
            assert all(r.opcode != Opcode.ACK or r.seq == pkt.seq for r in replies)
        self._record(pkt, replies)

    @rule(peer=st.sampled_from(PEERS), skip=st.integers(1, 3))
    def reorder(self, peer, skip):
        """A later request overtakes ``skip`` earlier ones (which arrive later, maybe)."""
        self.seq[peer] += skip
        pkt = self._write(peer, 64 * skip, b"R" * 8, self.seq[peer])
        self.seq[peer] += 1
        self.sent[peer].append(pkt)
        self._record(pkt, self._send(pkt))

    @rule(peer=st.sampled_from(PEERS), far=st.sampled_from([-(1 << 31), -100, 100, 1 << 20]))
    def out_of_window(self, peer, far):
        pkt = self._write(peer, 0, b"F" * 8, (self.seq[peer] + far) & 0xFFFFFFFF)
        replies = self._send(pkt)
        if self.dev.counters()["peers"] and replies and replies[0].opcode == Opcode.NAK:
            assert replies[0].status in (Status.SEQ_OUT_OF_WINDOW,)
        self._record(pkt, replies)

    @rule(peer=st.sampled_from(PEERS), which=st.sampled_from(["rkey", "pkey", "canary"]),
          addr=st.integers(0, MEM - 8))
    def hostile_keys(self, peer, which, addr):
        kw = {"rkey": 0xDEAD} if which == "rkey" else {"pkey": PKEY + 1} if which == "pkey" \
            else {"rkey": self.canary_key}
        pkt = self._write(peer, addr, b"X" * 8, self.seq[peer], **kw)
        self.seq[peer] += 1
        replies = self._send(pkt)
        assert all(r.opcode == Opcode.NAK for r in replies if r.seq == pkt.seq)

    @rule(blob=st.binary(max_size=200))
    def garbage(self, blob):
        self.dev.receive(blob, self.now)

    @rule(dt=st.sampled_from([0.1, 0.6, 6.0]))
    def time_passes(self, dt):
        self.now += dt
        if (t := self.dev.next_timer()) is not None and t <= self.now:
            for o in self.dev.on_timer(self.now):
                assert o.packet.opcode == Opcode.NAK

    @invariant()
    def memory_matches_the_model(self):
        assert bytes(self.dev.memory) == bytes(self.model)
        assert bytes(self.dev.memory[CANARY[0]:]) == self.canary

    @invariant()
    def state_is_bounded(self):
        c = self.dev.counters()
        assert c["internal_errors"] == 0
        assert c["peers"] <= LIMITS["max_peers"]
        assert c["held_now"] <= LIMITS["max_held"] * LIMITS["max_peers"]
        assert c["messages_in_progress"] <= LIMITS["max_messages"]


DeviceMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestDevice = DeviceMachine.TestCase
