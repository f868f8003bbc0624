"""The device's counters, named after the event they count (SPEC_device §9).

Owns the numbers ``Device.counters()`` reports: datagrams and bytes in and out, per
opcode, rejections per status, drops, duplicates, held requests and modeled busy time.
``snapshot()`` is a plain JSON-serialisable dict (a copy), so callers may keep or ship it.
"""

from __future__ import annotations

import copy

from netdam.wire.fields import Opcode, Status

#: the flat counters, all starting at zero
NAMES = (
    "rx_packets", "rx_bytes", "tx_packets", "tx_bytes",
    "dropped_crc",          # CRC32C mismatch: dropped, never answered
    "dropped_malformed",    # not a netdam datagram at all (short, bad magic): dropped
    "duplicates",           # sequenced requests seen again (not applied again)
    "rx_retransmits",       # requests that carried the RETRANSMIT flag (new or duplicate)
    "held",                 # requests held for an ordering condition
    "acks_deferred",        # ACKs folded into a later ACK that answers a run (SPEC §4.7)
    "hold_expired",         # held requests NAKed BUSY at their deadline
    "responses_ignored",    # response opcodes that reached the device (NAKs are never answered)
    "signals",              # signal words incremented (PUT_SIGNAL, chain, multicast)
    "signals_expired",      # messages whose signal never fired (incomplete at timeout)
    "joins_expired",        # joined chain starts dropped: their group never completed
    "forwarded",            # packets emitted to other devices (chain hops, multicast copies)
    "peers_evicted", "peers_expired",
    "internal_errors",      # bugs caught at the top of receive (never expected)
    "busy_ns",              # modeled busy time of executed instructions (TimingModel)
)


def opcode_name(opcode: int, user_names: dict[int, str] | None = None) -> str:
    if user_names and opcode in user_names:
        return user_names[opcode]
    try:
        return Opcode(opcode).name
    except ValueError:
        return f"0x{opcode:02X}"


def status_name(status: int) -> str:
    try:
        return Status(status).name
    except ValueError:
        return f"0x{status:02X}"


class Counters:
    """Named counters; ``by_opcode`` and ``naks`` are keyed by readable names."""

    def __init__(self):
        self.flat: dict[str, float] = dict.fromkeys(NAMES, 0)
        self.by_opcode: dict[str, dict[str, float]] = {}
        self.naks: dict[str, int] = {}

    def add(self, name: str, n: float = 1) -> None:
        self.flat[name] += n

    def request(self, name: str, nbytes: int, packets: int = 1) -> None:
        row = self.by_opcode.get(name)
        if row is None:
            row = self.by_opcode[name] = {"packets": 0, "bytes": 0, "busy_ns": 0.0}
        row["packets"] += packets
        row["bytes"] += nbytes

    def busy(self, name: str, ns: float) -> None:
        self.flat["busy_ns"] += ns
        row = self.by_opcode.get(name)
        if row is not None:
            row["busy_ns"] += ns

    def rejected(self, status: int) -> None:
        key = status_name(status)
        self.naks[key] = self.naks.get(key, 0) + 1

    def snapshot(self) -> dict:
        out = dict(self.flat)
        out["by_opcode"] = copy.deepcopy(self.by_opcode)
        out["naks"] = dict(self.naks)
        return out


__all__ = ["Counters", "NAMES", "opcode_name", "status_name"]
