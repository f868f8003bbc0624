"""Serial arithmetic (SPEC §8.1) wraps at 2^32 the same way everywhere."""

from hypothesis import given
from hypothesis import strategies as st

from netdam.wire.seqnum import seq_add, seq_diff, seq_le, seq_lt


def test_wraparound():
    assert seq_add(0xFFFFFFFF, 1) == 0
    assert seq_lt(0xFFFFFFFF, 0) and not seq_lt(0, 0xFFFFFFFF)
    assert seq_diff(2, 0xFFFFFFFE) == 4 and seq_diff(0xFFFFFFFE, 2) == -4


@given(st.integers(0, 2**32 - 1), st.integers(1, 2**31 - 1))
def test_later_is_after(a, n):
    b = seq_add(a, n)
    assert seq_lt(a, b) and seq_le(a, b) and not seq_lt(b, a)
    assert seq_diff(b, a) == n
