"""Per peer-pair statistics of netdam captures (``netdam dissect --flows``) and the
request/response matching they share with the Wireshark dissector.

Owns the definitions, stated once here and in the table's caption:

- a *flow* is one direction between two UDP endpoints (ip:port -> ip:port);
- a *duplicate* is a datagram byte-identical to an earlier one of its flow (a network
  or injected duplicate, or a saved response sent again);
- a *retransmission* is any other datagram that carries the RETRANSMIT flag or repeats
  the (src, dst, seq, opcode, frag_off) of an earlier datagram of its flow;
- a *transaction* is a request and its responses, matched like proto/netdam.lua does:
  key (req_id, src member, dst member); a response (an opcode with the "response"
  capability) answers the transaction of (req_id, its dst, its src), or else (the last
  hop of a REDUCE_FWD chain, a multicast member answering) the latest transaction its
  dst opened with that req_id; a request
  opens a new transaction unless one with that key is still unanswered or it carries
  RETRANSMIT. Latency is the time from the first request datagram of a transaction to
  its first response, and is counted in the request's flow.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from netdam.capture.frames import Endpoint, Frame, enum_name
from netdam.wire.fields import CAPS, Cap, Flag, Opcode, Status

_RETRANSMIT = int(Flag.RETRANSMIT)
_ANY = 0xFFFF


def is_response(opcode: int | None) -> bool:
    try:
        return bool(CAPS[Opcode(opcode)] & Cap.RESPONSE)
    except (ValueError, KeyError):
        return False


@dataclass
class Transaction:
    request: Frame
    response: Frame | None = None


def match(frames: Iterable[Frame]) -> tuple[dict[int, Transaction], dict[int, Transaction]]:
    """(request frame number -> transaction, response frame number -> transaction)."""
    open_: dict[tuple, Transaction] = {}
    latest: dict[tuple, Transaction] = {}
    by_req: dict[int, Transaction] = {}
    by_rsp: dict[int, Transaction] = {}
    for f in frames:
        if not f.fields or "req_id" not in f.fields:
            continue
        req_id, src, dst = f.fields["req_id"], f.fields["src"], f.fields["dst"]
        if is_response(f.fields.get("opcode")):
            t = (open_.get((req_id, dst, src)) or open_.get((req_id, dst, _ANY))
                 or latest.get((req_id, dst)))
            if t is not None:
                if t.response is None:
                    t.response = f
                by_rsp[f.number] = t
        else:
            key = (req_id, src, dst)
            t = open_.get(key)
            if t is None or (t.response is not None and not f.fields["flags"] & _RETRANSMIT):
                t = open_[key] = latest[(req_id, src)] = Transaction(f)
            by_req[f.number] = t
    return by_req, by_rsp


@dataclass
class FlowStats:
    src: Endpoint
    dst: Endpoint
    packets: int = 0
    bytes: int = 0
    retransmissions: int = 0
    duplicates: int = 0
    errors: int = 0
    naks: Counter = field(default_factory=Counter)       #: status name -> count
    latencies: list[float] = field(default_factory=list)  #: seconds

    def latency(self) -> tuple[float, float, float] | None:
        """(min, median, p99) in seconds, p99 by nearest rank; None without samples."""
        if not self.latencies:
            return None
        xs = sorted(self.latencies)
        p99 = xs[max(0, math.ceil(0.99 * len(xs)) - 1)]
        return xs[0], statistics.median(xs), p99


def flow_stats(frames: list[Frame]) -> list[FlowStats]:
    """Statistics of every flow, in order of first appearance."""
    flows: dict[tuple, FlowStats] = {}
    seen_bytes: dict[tuple, set] = {}
    seen_keys: dict[tuple, set] = {}
    for f in frames:
        k = (f.src, f.dst)
        s = flows.get(k)
        if s is None:
            s = flows[k] = FlowStats(f.src, f.dst)
            seen_bytes[k], seen_keys[k] = set(), set()
        s.packets += 1
        s.bytes += f.size
        if f.error:
            s.errors += 1
        if f.datagram in seen_bytes[k]:
            s.duplicates += 1
        elif f.fields:
            key = tuple(f.fields.get(n) for n in ("src", "dst", "seq", "opcode", "frag_off"))
            if f.fields.get("flags", 0) & _RETRANSMIT or key in seen_keys[k]:
                s.retransmissions += 1
            seen_keys[k].add(key)
        seen_bytes[k].add(f.datagram)
        if f.fields.get("opcode") == Opcode.NAK:
            s.naks[enum_name(Status, f.fields.get("status"))] += 1
    by_req, _ = match(frames)
    done = set()
    for t in by_req.values():
        if id(t) in done or t.response is None:
            continue
        done.add(id(t))
        flows[(t.request.src, t.request.dst)].latencies.append(
            t.response.time - t.request.time)
    return list(flows.values())


__all__ = ["FlowStats", "Transaction", "flow_stats", "is_response", "match"]
