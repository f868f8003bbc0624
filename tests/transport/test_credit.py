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


def test_a_lone_sender_gets_three_quarters_of_the_buffer():
    c = Credit(RCVBUF, 65000)
    assert c.active == 0
    full = RCVBUF // datagram_charge(65000) * 65000 * 3 // 4
    assert c.bytes == full // CREDIT_UNIT * CREDIT_UNIT
    c.served("a", 65000, 0.0)
    assert c.active == 1 and c.bytes == full // CREDIT_UNIT * CREDIT_UNIT


def test_active_senders_share_and_quiet_ones_are_forgotten():
    c = Credit(RCVBUF, 65000, idle=0.05, period=0.01)
    c.served("a", 65000, 0.0)
    alone = c.units
    c.served("b", 65000, 0.001)                 # a newcomer shrinks the share at once
    assert c.active == 2 and c.units == alone // 2
    c.served("a", 65000, 0.04)
    c.tick(0.045)                        # b was served 44 ms ago: still active
    assert c.active == 2
    c.tick(0.06)                         # b quiet for 59 ms: forgotten
    assert c.active == 1 and c.units == alone
    c.tick(0.2)                          # nobody: the whole share is offered again
    assert c.active == 0 and c.units == alone


def test_small_requests_do_not_make_a_sender():
    """A host that only polls or sends an atomic now and then lives off the headroom:
    it does not shrink the bulk writers' parts."""
    c = Credit(RCVBUF, 65000)
    c.served("writer", 65000 * 32, 0.0)
    alone = c.units
    for i in range(10):
        c.served(("poller", i), 80, 0.001)
    c.served("small run", 65000 // 2 - 1, 0.001)
    assert c.active == 1 and c.units == alone
    c.served("half a datagram", 65000 // 2, 0.002)
    assert c.active == 2 and c.units == alone // 2


def test_the_share_is_never_less_than_one_datagram_nor_past_the_field():
    c = Credit(RCVBUF, 65000)
    for i in range(1000):
        c.served(i, 65000, 0.0)
    assert c.bytes >= 65000 and c.units == -(-65000 // CREDIT_UNIT)
    huge = Credit(1 << 40, 65000)
    assert huge.units == 0xFFFF          # the u16 of an ACK's group field


def test_bad_arguments_are_refused():
    for kw in ({"share": 0}, {"share": 1.5}, {"idle": 0}, {"period": -1}):
        with pytest.raises(ValueError):
            Credit(RCVBUF, 65000, **kw)
    with pytest.raises(ValueError):
        Credit(0, 65000)
