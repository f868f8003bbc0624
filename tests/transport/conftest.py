"""Fixtures of the transport tests: two real UDP endpoints on loopback."""

import pytest

from netdam.transport.udp import UdpEndpoint


@pytest.fixture
def pair():
    a, b = UdpEndpoint(), UdpEndpoint()
    yield a, b
    a.close()
    b.close()
