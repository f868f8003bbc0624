"""The resource limits of a device process: one table, its flags and its documentation.

Owns every bound on the state a device keeps for others (what RELIABILITY.md tabulates):
the engine's replay windows, peers, held requests and signal messages
(``firmware_model.Device``), the receive queue that serves peers fairly
(``netdam.transport.fair``), and the queue of packets the device forwards to other
devices (``netdam.transport.reliability``). Each row names the knob, its default, its
``netdam device`` flag, what it bounds and what happens at the limit. ``resolve``
checks overrides against the table; ``add_arguments`` / ``from_args`` give the flags.
"""

from __future__ import annotations

import argparse
from typing import NamedTuple

from netdam.errors import UsageError


class Limit(NamedTuple):
    name: str          #: keyword (Device / FairQueue / RelConfig knob)
    default: float
    kind: type
    part: str          #: which component takes it: engine, rx, forward
    bounds: str        #: what it bounds
    at_limit: str      #: what happens when the bound is reached

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


LIMITS: tuple[Limit, ...] = (
    Limit("replay_window", 4096, int, "engine", "sequence numbers tracked per peer",
          "a request further than this from the peer's cumulative ack: NAK "
          "SEQ_OUT_OF_WINDOW"),
    Limit("max_peers", 1024, int, "engine", "peers with a replay window (and learnt "
          "reply addresses)", "the least recently seen peer is evicted (peers_evicted), "
          "its held requests dropped"),
    Limit("peer_timeout", 30.0, float, "engine", "seconds a silent peer's state is kept; "
          "also the life of an incomplete signal message and of a joined start whose "
          "group never completes (SPEC §4.9)", "the peer is forgotten (peers_expired); "
          "the message's signal never fires (signals_expired); the held starts are "
          "dropped (joins_expired)"),
    Limit("hold_timeout", 1.0, float, "engine", "seconds a request may wait for an "
          "ordering condition", "NAK BUSY (hold_expired); the sender may retry"),
    Limit("max_held", 1024, int, "engine", "held requests per peer", "NAK BUSY"),
    Limit("max_held_bytes", 64 << 20, int, "engine", "payload bytes held, all peers",
          "NAK BUSY"),
    Limit("max_messages", 4096, int, "engine", "fragmented signal messages in progress "
          "(the device's reassembly state)", "a new message's fragments: NAK BUSY"),
    Limit("peer_queue", 256, int, "rx", "received datagrams waiting per source "
          "(served round robin)", "dropped (rx_dropped_source_full); the sender "
          "retransmits"),
    Limit("rx_queue_bytes", 32 << 20, int, "rx", "received bytes waiting, all sources",
          "dropped (rx_dropped_full); the sender retransmits"),
    Limit("rx_pool_slots", 256, int, "rx", "reusable 64 KiB receive buffers (made on "
          "first need)", "a datagram is received into a new buffer "
          "(rx_pool_exhausted); nothing is lost"),
    Limit("credit_idle", 0.2, float, "rx", "seconds a source still counts as an active "
          "sender after its last bulk run: the active senders share the receive "
          "buffer's credit (SPEC §8.2)", "it no longer counts; the others' credit grows "
          "(credit_bytes, credit_senders)"),
    Limit("forward_queue", 4096, int, "forward", "packets waiting to be forwarded to one "
          "device (chain hops, multicast copies)", "the forward fails at once "
          "(forward_failed)"),
    Limit("forward_deadline", 5.0, float, "forward", "seconds a forwarded packet is "
          "retransmitted before it is given up", "forward_failed; the requester's own "
          "deadline reports the loss"),
)
BY_NAME = {row.name: row for row in LIMITS}


def resolve(overrides: dict | None = None) -> dict:
    """Every limit's value: the defaults, with ``overrides`` (names from LIMITS)."""
    values = {row.name: row.default for row in LIMITS}
    for name, value in (overrides or {}).items():
        row = BY_NAME.get(name)
        if row is None:
            raise UsageError(f"unknown limit {name!r}; known: {', '.join(BY_NAME)}")
        if value is None:
            continue
        value = row.kind(value)
        if value <= 0:
            raise UsageError(f"{row.flag} must be positive, not {value}")
        values[name] = value
    return values


def part(values: dict, which: str) -> dict:
    """The values of one component (engine, rx, forward)."""
    return {row.name: values[row.name] for row in LIMITS if row.part == which}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("resource limits (see RELIABILITY.md)")
    for row in LIMITS:
        group.add_argument(row.flag, dest=f"limit_{row.name}", type=row.kind, default=None,
                           metavar="N", help=f"{row.bounds} (default {row.default:g}); at "
                                             f"the limit: {row.at_limit}")


def from_args(args: argparse.Namespace) -> dict:
    """The limits a command line gave (only those)."""
    return {row.name: v for row in LIMITS
            if (v := getattr(args, f"limit_{row.name}", None)) is not None}


def to_argv(overrides: dict | None) -> list[str]:
    out: list[str] = []
    for name, value in (overrides or {}).items():
        out += [BY_NAME[name].flag, str(value)]
    return out


def markdown_table() -> str:
    """The limits as the Markdown table RELIABILITY.md carries (checked by a test)."""
    lines = ["| limit | default | flag | bounds | at the limit |", "|---|---|---|---|---|"]
    for row in LIMITS:
        default = f"{row.default:,}" if row.kind is int else f"{row.default:g} s"
        lines.append(f"| {row.name} | {default} | `{row.flag}` | {row.bounds} | "
                     f"{row.at_limit} |")
    return "\n".join(lines)


__all__ = ["Limit", "LIMITS", "resolve", "part", "add_arguments", "from_args", "to_argv",
           "markdown_table"]
