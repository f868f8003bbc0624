"""Closed-form (alpha-beta) models the simulator is checked against.

Owns the textbook formulas, with the wire's real per-datagram overhead folded into the
bandwidth term: a message of S bytes costs ``alpha + S / B_eff`` where ``B_eff`` is the
link rate times the payload share of a full datagram (netdam header and trailer, and
the Ethernet/IP/UDP framing of ``timing.FRAME_OVERHEAD``).

- ring allreduce: 2(n-1) steps of S/n bytes: ``2(n-1)/n * S / B + 2(n-1) * alpha``
- binomial-tree broadcast: ceil(log2 n) rounds of S: ``ceil(log2 n) * (alpha + S / B)``
- recursive-doubling allreduce (n a power of two): ``log2 n * (alpha + S / B)``

plus one term the textbook leaves out and netdam's reliability core adds (SPEC §8.3): a
sender's first datagram to a new peer travels alone and the rest of the message waits
for its answer, one round trip (``first_contact_ns``) per new peer on the critical path:
once for the ring, every round for the tree and recursive doubling.
"""

from __future__ import annotations

import math

from firmware_model.timing import FRAME_OVERHEAD
from netdam.wire.codec import overhead
from netdam.wire.frag import max_payload


def effective_gbytes(link_gbps: float, mtu: int) -> float:
    """Payload GB/s of a link carrying full datagrams of ``mtu`` bytes."""
    payload = max_payload(mtu)
    return link_gbps / 8 * payload / (payload + overhead(0) + FRAME_OVERHEAD)


def ring_allreduce_ns(n: int, size: int, gbytes: float, alpha_ns: float,
                      first_contact_ns: float = 0.0) -> float:
    return 2 * (n - 1) / n * size / gbytes + 2 * (n - 1) * alpha_ns + first_contact_ns


def binomial_broadcast_ns(n: int, size: int, gbytes: float, alpha_ns: float,
                          first_contact_ns: float = 0.0) -> float:
    return math.ceil(math.log2(n)) * (alpha_ns + size / gbytes + first_contact_ns)


def recursive_doubling_ns(n: int, size: int, gbytes: float, alpha_ns: float,
                          first_contact_ns: float = 0.0) -> float:
    return math.log2(n) * (alpha_ns + size / gbytes + first_contact_ns)


#: (collective, algorithm) -> model(n, size, GB/s, alpha, first contact) -> ns
MODELS = {
    ("all_reduce", "ring"): ring_allreduce_ns,
    ("broadcast", "binomial"): binomial_broadcast_ns,
    ("all_reduce", "recursive_doubling"): recursive_doubling_ns,
}

__all__ = ["MODELS", "binomial_broadcast_ns", "effective_gbytes", "recursive_doubling_ns",
           "ring_allreduce_ns"]
