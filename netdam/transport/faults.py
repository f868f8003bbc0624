"""netdam's own fault injection, per link, seeded and counted.

Owns what a lossy network does to the datagrams one sender puts on one link: loss,
duplication, reordering, delay, corruption (one byte flipped; the receiver's CRC32C
catches it and counts ``dropped_crc``, SPEC §3) and a bandwidth cap (token bucket).
``FaultConfig`` is the knob set, read from the environment (NETDAM_LOSS, NETDAM_DUP,
NETDAM_REORDER, NETDAM_CORRUPT, NETDAM_DELAY, NETDAM_SEED, NETDAM_RATE_GBPS) or from
command-line flags (``add_fault_arguments`` / ``FaultConfig.from_args``).

``Injector`` is sans-I/O: ``apply(datagram, now)`` returns the ``(send_at, datagram)``
pairs to put on the wire instead; the I/O glue holds them until ``send_at``. Its
``counters`` account for every fault it injected, so a test or a capture can check that
what arrived equals what was sent minus what was dropped plus what was duplicated.
Faults that hit a retransmission (header flag RETRANSMIT) are also counted apart
(``*_retransmits``), so a soak can account for every retransmission.
"""

from __future__ import annotations

import argparse
import os
import random
from dataclasses import asdict, dataclass, fields

from netdam.errors import UsageError

#: environment variable -> FaultConfig field
ENV = {
    "NETDAM_LOSS": "loss",
    "NETDAM_DUP": "dup",
    "NETDAM_REORDER": "reorder",
    "NETDAM_CORRUPT": "corrupt",
    "NETDAM_DELAY": "delay",
    "NETDAM_SEED": "seed",
    "NETDAM_RATE_GBPS": "rate_gbps",
}

#: FaultConfig field -> (command-line flag, type, help)
FLAGS = {
    "loss": ("--loss", float, "probability a datagram is dropped"),
    "dup": ("--dup", float, "probability a datagram is sent twice"),
    "reorder": ("--reorder", float, "probability a datagram is held back behind later ones"),
    "corrupt": ("--corrupt", float, "probability one byte of a datagram is flipped"),
    "delay": ("--delay", float, "extra one-way latency in seconds"),
    "seed": ("--seed", int, "seed of the fault generator (reproducible faults)"),
    "rate_gbps": ("--rate-gbps", float, "bandwidth cap of the link in Gbit/s"),
}

_PROBABILITIES = ("loss", "dup", "reorder", "corrupt")
_FLAGS_LO = 5                 # low byte of the u16 header flags (SPEC §2.1)
_RETRANSMIT_BIT = 1 << 6      # Flag.RETRANSMIT


def _is_retransmit(data) -> bool:
    return len(data) > _FLAGS_LO and bool(data[_FLAGS_LO] & _RETRANSMIT_BIT)


@dataclass(frozen=True)
class FaultConfig:
    """What the link does to datagrams. Probabilities in [0, 1], delay in seconds."""

    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    corrupt: float = 0.0
    rate_gbps: float | None = None
    seed: int | None = None
    reorder_hold: float = 0.002  #: how long a reordered datagram is held back

    def __post_init__(self):
        for name in _PROBABILITIES:
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"fault {name}={v} is not a probability in [0, 1]")
        if self.delay < 0 or self.reorder_hold < 0:
            raise ValueError("delay and reorder_hold must be >= 0")
        if self.rate_gbps is not None and self.rate_gbps <= 0:
            raise ValueError(f"rate_gbps={self.rate_gbps} must be positive")

    @property
    def active(self) -> bool:
        """True when the link does anything at all to datagrams."""
        return bool(self.loss or self.dup or self.reorder or self.delay or self.corrupt
                    or self.rate_gbps)

    @classmethod
    def from_env(cls, environ=None) -> "FaultConfig":
        env = os.environ if environ is None else environ
        kw = {}
        for var, name in ENV.items():
            raw = env.get(var)
            if raw not in (None, ""):
                kw[name] = _convert(name, raw, var)
        return cls(**kw)

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ=None) -> "FaultConfig":
        """Flags given on the command line win over the environment."""
        base = asdict(cls.from_env(environ))
        for name in FLAGS:
            v = getattr(args, name, None)
            if v is not None:
                base[name] = v
        return cls(**base)

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce this config in a child process."""
        out = {}
        for var, name in ENV.items():
            v = getattr(self, name)
            if v not in (None, 0, 0.0):
                out[var] = str(v)
        return out

    def to_argv(self) -> list[str]:
        """The command-line flags that reproduce this config."""
        out: list[str] = []
        for name, (flag, _, _) in FLAGS.items():
            v = getattr(self, name)
            if v not in (None, 0, 0.0):
                out += [flag, str(v)]
        return out


def _convert(name: str, raw: str, where: str):
    kind = FLAGS[name][1]
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{where}={raw!r}: expected {kind.__name__}") from None


def add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--loss --dup --reorder --corrupt --delay --seed --rate-gbps`` (default: the
    environment's NETDAM_* values, else no fault)."""
    group = parser.add_argument_group("fault injection (on this side's sends)")
    for name, (flag, kind, help_text) in FLAGS.items():
        group.add_argument(flag, dest=name, type=kind, default=None, help=help_text)


def fault_config(faults: dict) -> FaultConfig:
    """The FaultConfig of fault keyword values (None: not given); a value it refuses is
    a UsageError (LocalCluster's arguments, a command line's flags)."""
    try:
        return FaultConfig(**{k: v for k, v in faults.items() if v is not None})
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def given_faults(args: argparse.Namespace) -> dict:
    """The fault flags a command line actually gave, as LocalCluster keyword arguments;
    a UsageError for a value ``FaultConfig`` refuses, before anything starts."""
    faults = {name: v for name in FLAGS if (v := getattr(args, name, None)) is not None}
    fault_config(faults)
    return faults


class Injector:
    """Applies a FaultConfig to the datagrams of one link (sans-I/O, seeded)."""

    def __init__(self, config: FaultConfig | None = None):
        self.config = config or FaultConfig()
        self.active = self.config.active
        self._rng = random.Random(self.config.seed)
        self._link_free = 0.0     # token bucket: when the link has drained what it holds
        rate = self.config.rate_gbps
        self._byte_time = 8.0 / (rate * 1e9) if rate else 0.0
        self._burst = 64 << 10    # bytes the bucket lets through at once
        self.counters = {name: 0 for name in
                         ("seen", "sent", "lost", "duplicated", "reordered", "delayed",
                          "corrupted", "rate_limited", "lost_retransmits",
                          "corrupted_retransmits", "duplicated_retransmits")}

    def apply(self, datagram, now: float) -> list[tuple[float, bytes]]:
        """What goes on the wire instead of ``datagram`` (bytes, or a sequence of parts
        as from ``encode_parts``): zero, one or two ``(send_at, bytes)`` pairs."""
        c, rng, k = self.config, self._rng, self.counters
        data = datagram if isinstance(datagram, (bytes, bytearray, memoryview)) \
            else b"".join(datagram)
        k["seen"] += 1
        retx = _is_retransmit(data)
        if c.loss and rng.random() < c.loss:
            k["lost"] += 1
            k["lost_retransmits"] += retx
            return []
        at = now
        if self._byte_time:
            cost = len(data) * self._byte_time
            start = max(now, self._link_free - self._burst * self._byte_time)
            self._link_free = max(self._link_free, now) + cost
            if start > now:
                k["rate_limited"] += 1
                at = start
        hit = False
        if c.corrupt and rng.random() < c.corrupt:
            hit = True
            buf = bytearray(data)
            buf[rng.randrange(len(buf))] ^= rng.randrange(1, 256)
            data = bytes(buf)
            k["corrupted"] += 1
            k["corrupted_retransmits"] += retx
        else:
            data = bytes(data)
        if c.delay:
            at += c.delay
            k["delayed"] += 1
        if c.reorder and rng.random() < c.reorder:
            at += c.reorder_hold
            k["reordered"] += 1
        out = [(at, data)]
        if c.dup and rng.random() < c.dup:
            out.append((at + rng.random() * c.reorder_hold, data))
            k["duplicated"] += 1
            k["duplicated_retransmits"] += retx and not hit
        k["sent"] += len(out)
        return out


def describe(config: FaultConfig) -> str:
    """One line naming the faults in force, for logs."""
    parts = [f"{f.name}={getattr(config, f.name)}" for f in fields(config)
             if f.name != "reorder_hold" and getattr(config, f.name) not in (None, 0, 0.0)]
    return ", ".join(parts) or "no faults"


__all__ = ["FaultConfig", "Injector", "add_fault_arguments", "given_faults", "describe",
           "ENV", "FLAGS"]
