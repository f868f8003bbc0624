"""netdam.signals: a stop signal calls stop() and wakes a loop sleeping in poll()."""

import os
import select
import signal

import pytest

from netdam.signals import STOP_SIGNALS, stop_on_signals


@pytest.mark.parametrize("sig", STOP_SIGNALS)
def test_a_stop_signal_calls_stop_and_makes_the_fd_readable(sig):
    stops, before = [], signal.getsignal(sig)
    with stop_on_signals(lambda: stops.append(sig)) as fd:
        poll = select.poll()
        poll.register(fd, select.POLLIN)
        assert poll.poll(0) == []          # nothing yet: a loop would sleep
        os.kill(os.getpid(), sig)
        assert poll.poll(10_000)           # readable: the sleep ends (at once, in fact)
        assert stops == [sig]
    assert signal.getsignal(sig) is before   # the handler in place before is back
    assert signal.set_wakeup_fd(-1) == -1    # and no wakeup fd was left behind
