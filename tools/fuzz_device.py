"""Fuzz a running netdam device over the wire for N seconds.

Sends batches of hostile datagrams — random bytes, truncated and bit-flipped valid
packets, and structurally valid but hostile requests (huge lengths, addresses that wrap
around 2^64, bogus keys and partitions, unknown and user-defined opcodes, sequence
numbers far ahead or behind, floods of overlapping fragments, user-defined instructions
with bad arguments) — from several sender ids. After every batch it checks that the
device still answers a READ, and that a read-only canary region still holds what it held
at the start. With ``--spawn`` it starts its own device (with a read-only canary, a
writable region and the user-defined instructions of ``register_user_instructions``)
and also checks that the device's memory use stays bounded and that every rejection was
counted by status.

    python tools/fuzz_device.py --spawn --seconds 10
    python tools/fuzz_device.py --host 127.0.0.1 --port 18089 --canary-key 0x1234 --seconds 60

Exit status 0 when every check held; a JSON summary with ``--json FILE``.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import time
from collections import Counter

from netdam.wire import Flag, Opcode, Packet, Status, WireError, decode, encode

CANARY, CANARY_LEN = 0, 4096
OPEN_BASE, MEM = 4096, 1 << 20
XOR8, CHECKSUM, BUGGY = 0xC5, 0xC6, 0xC7     #: the spawned device's user instructions


def register_user_instructions(device) -> None:
    """User-defined instructions for the spawned device (``--instructions``): XOR8 xors
    its range with ``imm`` and refuses imm 0; CHECKSUM answers a sum of its range;
    BUGGY raises an unexpected exception (a bug in user code must become USER_ERROR)."""
    import numpy as np
    from firmware_model.instructions import InstructionError
    from netdam.wire.fields import Cap

    def xor8(ctx, pkt):
        if pkt.imm == 0 or pkt.length % 8:
            raise InstructionError(Status.USER_ERROR, "imm 0 or a ragged length")
        words = ctx.array(np.uint64, pkt.addr, pkt.length // 8)
        words ^= np.uint64(pkt.imm & ((1 << 64) - 1))
        return []

    def checksum(ctx, pkt):
        total = int(np.frombuffer(bytes(ctx.mem(pkt.addr, pkt.length)), np.uint8).sum())
        return [ctx.reply(pkt, Opcode.READ_RESP, total.to_bytes(8, "little"), length=8)]

    def buggy(ctx, pkt):
        return [1 / 0]

    device.register_instruction(XOR8, xor8, Cap.READS | Cap.WRITES | Cap.ALIGNED,
                                name="XOR8")
    device.register_instruction(CHECKSUM, checksum, Cap.READS | Cap.IDEMPOTENT | Cap.RESPONDS,
                                name="CHECKSUM")
    device.register_instruction(BUGGY, buggy, Cap(0), name="BUGGY")


def hostile_classes(rng: random.Random, key: int, canary_key: int) -> list[bytes]:
    """One datagram of every structurally valid hostile class the harness promises.
    Unsequenced (no ACK_REQ: checked on arrival, whatever the sender's window), except
    the ones whose point is their sequence number."""
    from netdam.wire.fields import DType
    src = rng.choice([7, 8, 9])

    def req(**kw):
        base = dict(opcode=Opcode.WRITE, flags=0, src=src, dst=1, rkey=key,
                    seq=rng.getrandbits(32), req_id=rng.getrandbits(32), addr=OPEN_BASE)
        base.update(kw)
        base.setdefault("length", len(base.get("payload", b"")))
        return encode(Packet(**base))
    far = rng.getrandbits(32)
    return [
        req(opcode=Opcode.READ, length=0xFFFFFFFF),                       # huge length
        req(opcode=Opcode.MEMCPY, length=1 << 31, addr2=MEM),             # huge copy
        req(addr=(1 << 64) - 8, payload=bytes(16)),                       # wraps 2^64
        req(opcode=Opcode.READ, addr=(1 << 64) - 1, length=2),
        req(payload=bytes(8), length=8, frag_off=(1 << 32) - 4),          # frag past end
        req(seq=far, flags=Flag.ACK_REQ, payload=bytes(8)),               # far ahead/behind
        req(seq=(far + (1 << 31)) & 0xFFFFFFFF, flags=Flag.ACK_REQ, payload=bytes(8)),
        req(rkey=rng.getrandbits(32) | 1, payload=bytes(8)),              # bogus key
        req(pkey=rng.getrandbits(16) | 1, payload=bytes(8)),              # bogus partition
        req(rkey=canary_key, addr=CANARY, payload=b"overwrite"),          # read-only region
        req(opcode=rng.choice([0x00, 0x7F, 0xBF, 0xFF])),                 # unknown opcode
        req(opcode=XOR8, addr=OPEN_BASE, length=12, imm=1,
            dtype=DType.UINT64),                                          # misaligned
        req(opcode=XOR8, addr=OPEN_BASE, length=12, imm=1),               # ragged length
        req(opcode=XOR8, addr=CANARY, length=8, imm=5, rkey=canary_key),  # no write right
        req(opcode=XOR8, addr=OPEN_BASE, length=8, imm=0),                # refused imm
        req(opcode=CHECKSUM, addr=MEM - 4, length=64),                    # out of bounds
        req(opcode=CHECKSUM, addr=OPEN_BASE, length=8, payload=b"x"),     # stray payload
        req(opcode=BUGGY),                                                # a crashing handler
    ]


def hostile(rng: random.Random, keys: list[int]) -> bytes:
    """One hostile datagram."""
    kind = rng.randrange(6)
    if kind == 0:                                       # random bytes
        return rng.randbytes(rng.randrange(0, 300))
    op = rng.choice([int(o) for o in Opcode] + [0x00, 0x7F, 0xC0, 0xC7, 0xFE, 0xFF])
    pkt = Packet(
        opcode=op, flags=rng.getrandbits(16) & ~int(Flag.MCAST_COPY), dtype=rng.randrange(20),
        redop=rng.randrange(10), src=rng.choice([7, 8, 9, rng.getrandbits(16)]), dst=1,
        pkey=rng.choice([0, 0, rng.getrandbits(16)]),
        rkey=rng.choice(keys + [rng.getrandbits(32)]),
        seq=rng.choice([rng.getrandbits(32), 0, 0xFFFFFFFF, 1 << 31]),
        req_id=rng.getrandbits(32),
        addr=rng.choice([0, CANARY + 8, OPEN_BASE, MEM - 8, (1 << 64) - 8, rng.getrandbits(64)]),
        addr2=rng.choice([0, CANARY, MEM, rng.getrandbits(64)]), imm=rng.getrandbits(64),
        length=rng.choice([0, 8, 64, 1 << 31, 0xFFFFFFFF, rng.getrandbits(32)]),
        frag_off=rng.choice([0, 8, 1 << 30, rng.getrandbits(32)]),
        group=rng.choice([0, 1, rng.getrandbits(16)]),
        payload=rng.randbytes(rng.choice([0, 8, 16, 100, 1000])))
    if op == Opcode.REDUCE_FWD and rng.random() < 0.5:
        pkt.route = tuple(rng.getrandbits(16) for _ in range(rng.randrange(1, 6)))
        pkt.hop = rng.randrange(len(pkt.route))
    data = bytearray(encode(pkt))
    if kind == 1:                                       # truncated
        return bytes(data[:rng.randrange(len(data))])
    if kind == 2:                                       # bit-flipped
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    return bytes(data)


def fragment_flood(rng: random.Random, key: int) -> list[bytes]:
    """Overlapping WRITE fragments of one message into the open region, any order."""
    req, src = rng.getrandbits(32), rng.choice([7, 8, 9])
    out = []
    for _ in range(rng.randrange(5, 40)):
        off = rng.randrange(0, 2048)
        out.append(encode(Packet(opcode=Opcode.WRITE, flags=Flag.MORE_FRAGS, src=src, dst=1,
                                 rkey=key, req_id=req, addr=OPEN_BASE, length=4096,
                                 frag_off=off, payload=rng.randbytes(rng.choice([8, 64])))))
    return out


class Probe:
    """Liveness and canary check: an unsequenced READ from a socket of its own."""

    def __init__(self, addr, canary_key: int | None, timeout: float = 2.0):
        self.addr, self.key, self.timeout = addr, canary_key, timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1" if addr[0].startswith("127.") else "", 0))
        self.sock.settimeout(timeout)
        self.req = 0

    def read(self, addr: int, length: int) -> bytes | None:
        """The bytes read, the NAK status name (as bytes) if refused, None if silent."""
        self.req += 1
        pkt = Packet(opcode=Opcode.READ, src=0xFFFE, dst=1, rkey=self.key or 0,
                     req_id=self.req, addr=addr, length=length)
        self.sock.sendto(encode(pkt), self.addr)
        deadline = time.monotonic() + self.timeout
        got = bytearray(length)
        seen = 0
        while time.monotonic() < deadline:
            try:
                data, _ = self.sock.recvfrom(65535)
                p = decode(data)
            except socket.timeout:
                return None
            except WireError:
                continue
            if p.req_id != self.req:
                continue
            if p.opcode == Opcode.NAK:
                return Status(p.status).name.encode()   # refused, but alive
            got[p.frag_off:p.frag_off + len(p.payload)] = p.payload
            seen += len(p.payload)
            if seen >= length:
                return bytes(got)
        return None


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run(args) -> dict:
    rng = random.Random(args.seed)
    dev = None
    if args.spawn:
        from netdam.device import DeviceProcess
        regions = [{"base": CANARY, "length": CANARY_LEN, "rights": ["READ"], "key": 0x0CA9A7},
                   {"base": OPEN_BASE, "length": MEM - OPEN_BASE, "key": 0x0BE17}]
        dev = DeviceProcess("--id", "1", "--mem-size", str(MEM), "--regions",
                            json.dumps(regions), "--instructions",
                            f"{__file__}:register_user_instructions")
        addr, keys, canary_key = dev.address, [0x0CA9A7, 0x0BE17], 0x0CA9A7
    else:
        addr, canary_key = (args.host, args.port), args.canary_key
        keys = [k for k in (args.canary_key, args.open_key) if k]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    probe = Probe(addr, canary_key)
    summary = {"batches": 0, "sent": 0, "replies": Counter(), "failures": []}
    try:
        canary = probe.read(CANARY, CANARY_LEN) if canary_key else None
        rss0 = rss_kib(dev.pid) if dev else None
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            batch = [hostile(rng, keys) for _ in range(args.batch)]
            if args.spawn or args.open_key:
                batch += fragment_flood(rng, keys[-1])
                batch += hostile_classes(rng, keys[-1], canary_key or 0)
            for data in batch:
                try:
                    sock.sendto(data, addr)
                except (BlockingIOError, OSError):
                    pass
            summary["sent"] += len(batch)
            time.sleep(0.01)
            while True:                                  # count what came back
                try:
                    reply = decode(sock.recv(65535))
                except (BlockingIOError, OSError):
                    break
                except WireError:
                    summary["replies"]["undecodable"] += 1
                    continue
                name = Opcode(reply.opcode).name if reply.opcode in Opcode._value2member_map_ \
                    else hex(reply.opcode)
                if reply.opcode == Opcode.NAK:
                    name = f"NAK {Status(reply.status).name}"
                summary["replies"][name] += 1
            summary["batches"] += 1
            if probe.read(CANARY, 8) is None:
                summary["failures"].append(f"batch {summary['batches']}: no answer")
                break
            if canary is not None and probe.read(CANARY, CANARY_LEN) != canary:
                summary["failures"].append(f"batch {summary['batches']}: canary changed")
                break
        if dev is not None:
            grow = rss_kib(dev.pid) - rss0
            summary["rss_growth_kib"] = grow
            if grow > args.max_rss_growth_kib:
                summary["failures"].append(f"device memory grew by {grow} KiB")
    finally:
        if dev is not None:
            dev.stop()
            c = dev.final_counters or {}
            summary["device_naks"] = c.get("naks", {})
            summary["device_internal_errors"] = c.get("internal_errors", 0)
            if summary["device_internal_errors"]:
                summary["failures"].append("the device caught internal errors")
            # every NAK that came back was counted: as a rejection by status, or as a
            # duplicate answered with its saved NAK (the replay window, SPEC §8.3)
            summary["device_duplicates"] = c.get("duplicates", 0)
            naks_seen = sum(v for k, v in summary["replies"].items() if k.startswith("NAK"))
            counted = sum(summary["device_naks"].values()) + summary["device_duplicates"]
            if counted < naks_seen:
                summary["failures"].append(f"{naks_seen} NAKs came back, the device counted "
                                           f"{counted}")
    summary["replies"] = dict(summary["replies"])
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spawn", action="store_true", help="start a device of our own")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18089)
    ap.add_argument("--canary-key", type=lambda s: int(s, 0), default=None,
                    help="key of a read-only region whose content must not change")
    ap.add_argument("--open-key", type=lambda s: int(s, 0), default=None,
                    help="key of a writable region (hostile writes go there too)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=200, help="datagrams per batch")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-rss-growth-kib", type=int, default=64 << 10)
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args(argv)
    if not args.spawn and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: fuzzing {args.host}; only ever point this at your own device",
              file=sys.stderr)
    summary = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    print(json.dumps({k: v for k, v in summary.items() if k != "replies"}))
    print("replies:", json.dumps(summary["replies"]))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
