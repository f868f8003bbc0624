"""Sequence-number arithmetic modulo 2^32 (SPEC §8, after RFC 1982 serial numbers).

Owns comparison and distance of the header's ``seq`` and ``ack`` fields so that every
user (reliability core, replay window, capture tools) wraps around the same way.
"""

MOD = 1 << 32
HALF = 1 << 31


def seq_add(a: int, n: int) -> int:
    """a + n modulo 2^32."""
    return (a + n) & (MOD - 1)


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b in (-2^31, 2^31]: positive when a is after b."""
    d = (a - b) & (MOD - 1)
    return d - MOD if d > HALF else d


def seq_lt(a: int, b: int) -> bool:
    """a comes before b (SPEC §8); undefined for numbers exactly 2^31 apart."""
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    return seq_diff(a, b) <= 0
