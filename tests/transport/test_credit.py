"""The receiver's credit (SPEC §8.2): a device's receive buffer shared by its active
senders, counted in what the kernel charges per datagram."""

import socket

import pytest

from netdam.transport.credit import Credit, datagram_charge
from netdam.wire.fields import CREDIT_UNIT

pytestmark = pytest.mark.timeout(30)

RCVBUF = 8 << 20


def _kept_by_kernel(size: int, asked: int = 2 << 20) -> tuple[int, int]:
    """(datagrams of ``size`` bytes a loopback socket with SO_RCVBUF ``asked`` keeps
    before it drops, the buffer size the kernel reports)."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, asked)
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, asked)
        rx.bind(("127.0.0.1", 0))
        rcvbuf = rx.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        data = bytes(size)
        for _ in range(rcvbuf // size + 64):        # more than could ever fit
            tx.sendto(data, rx.getsockname())
        rx.setblocking(False)
        kept = 0
        try:
            while True:
                rx.recv(70000)
                kept += 1
        except BlockingIOError:
            return kept, rcvbuf
    finally:
        rx.close()
        tx.close()


@pytest.mark.parametrize("size", [1500, 9000, 65000])
def test_the_charge_never_promises_more_than_the_kernel_keeps(size):
    """The model is checked against this kernel: the datagrams it says fit a buffer all
    fit, and it does not waste more than a fifth of the buffer."""
    kept, rcvbuf = _kept_by_kernel(size)
    modelled = rcvbuf // datagram_charge(size)
    assert modelled <= kept, (size, modelled, kept)
    assert modelled >= 0.8 * kept, (size, modelled, kept)


def _charged(c: Credit, source, size: int) -> int:
    """Bytes of receive buffer ``source``'s credit may fill with ``size``-byte datagrams."""
    return c.units_for(source) * CREDIT_UNIT // size * datagram_charge(size)


def test_a_lone_writer_may_fill_three_quarters_of_the_buffer():
    c = Credit(RCVBUF, 65000)
    c.served("a", 65000 * 32, 65000, 0.0)
    assert c.active == 1
    assert 0.7 * RCVBUF <= _charged(c, "a", 65000) <= 0.75 * RCVBUF
    assert c.bytes == c.units_for("a") * CREDIT_UNIT


def test_bulk_senders_share_and_quiet_ones_are_forgotten():
    c = Credit(RCVBUF, 65000, idle=0.05, period=0.01)
    c.served("a", 65000 * 32, 65000, 0.0)
    alone = c.units_for("a")
    assert c.units_for("b") < alone           # a newcomer is offered its part once it joins
    c.served("b", 65000 * 32, 65000, 0.001)      # and it shrinks the others' at once
    assert c.active == 2
    assert c.units_for("a") == c.units_for("b") <= alone // 2
    assert c.units_for("newcomer") < c.units_for("a")     # it would be the third
    assert _charged(c, "a", 65000) + _charged(c, "b", 65000) <= 0.75 * RCVBUF
    c.served("a", 65000 * 32, 65000, 0.04)
    c.tick(0.045)                              # b's last run was 44 ms ago: still active
    assert c.active == 2
    c.tick(0.06)                               # quiet for 59 ms: forgotten
    assert c.active == 1 and c.units_for("a") == alone
    c.tick(0.2)
    assert c.active == 0


def test_small_requests_do_not_make_a_sender():
    """A host that only polls or sends an atomic now and then lives off the headroom:
    it does not shrink the bulk writers' parts."""
    c = Credit(RCVBUF, 65000)
    c.served("writer", 65000 * 32, 65000, 0.0)
    alone = c.units_for("writer")
    for i in range(10):
        c.served(("poller", i), 80, 80, 0.001)
    c.served("small run", 65000 // 2 - 1, 9000, 0.001)
    assert c.active == 1 and c.units_for("writer") == alone
    c.served("half a datagram", 65000 // 2, 65000 // 2, 0.002)
    assert c.active == 2 and c.units_for("writer") < alone


def test_a_small_request_between_bulk_runs_keeps_the_senders_part():
    """A bulk writer that sends one small request (a credit, a signal) keeps the part
    of its bulk runs' datagrams; a source of small requests alone is offered its part
    in their size (what the device queues per source)."""
    c = Credit(RCVBUF, 65000, per_source=256)
    c.served("writer", 65000 * 32, 65000, 0.0)
    alone = c.units_for("writer")
    c.served("writer", 80, 80, 0.001)
    assert c.units_for("writer") == alone
    c.served("poller", 80, 80, 0.001)
    assert c.units_for("poller") * CREDIT_UNIT <= 0.75 * 256 * 80 + CREDIT_UNIT


@pytest.mark.parametrize("size", [1500, 9000])
def test_small_datagrams_are_counted_in_what_they_cost(size):
    """A sender of small datagrams gets fewer payload bytes: its datagrams cost the
    buffer more than their size, and the device queues only so many per source."""
    c = Credit(RCVBUF, 65000, per_source=256)
    c.served("big", 65000 * 32, 65000, 0.0)
    c.served("small", size * 32, size, 0.0)
    assert c.units_for("small") * CREDIT_UNIT <= 0.75 * 256 * size     # the queue
    assert _charged(c, "big", 65000) + _charged(c, "small", size) <= 0.75 * RCVBUF
    assert c.units_for("small") < c.units_for("big")


def test_the_share_is_never_less_than_one_datagram_nor_past_the_field():
    c = Credit(RCVBUF, 65000)
    for i in range(1000):
        c.served(i, 65000, 65000, 0.0)
    assert c.units_for(0) * CREDIT_UNIT >= 65000
    assert c.units_for(0) == -(-65000 // CREDIT_UNIT)
    huge = Credit(1 << 40, 65000, per_source=1 << 20)
    assert huge.units_for("anyone") == 0xFFFF


def test_bad_arguments_are_refused():
    for kw in ({"share": 0}, {"share": 1.5}, {"idle": 0}, {"period": -1}, {"per_source": 0}):
        with pytest.raises(ValueError):
            Credit(RCVBUF, 65000, **kw)
    with pytest.raises(ValueError):
        Credit(0, 65000)
