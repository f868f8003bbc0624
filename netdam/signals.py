"""How a long-running process (a device, the coordinator) stops on SIGTERM or SIGINT.

Owns ``stop_on_signals``: the handlers that ask the process's loop to stop, and a file
descriptor the loop polls beside its sockets so that a stop asked for during a sleep
ends the sleep at once. A Python handler alone runs only once the sleep is over, since
an interrupted ``poll()`` is retried with the time left (PEP 475), which made every
idle device and coordinator take up to its longest sleep to stop.
"""

from __future__ import annotations

import signal
import socket
from contextlib import contextmanager
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[int]:
    """While inside, SIGTERM and SIGINT call ``stop()`` and make the file descriptor it
    yields readable (``signal.set_wakeup_fd``): a loop that polls it beside its own
    sockets wakes then. Main thread only. The handlers and the wakeup fd in place
    before are put back on the way out."""
    readable, writable = socket.socketpair()
    writable.setblocking(False)       # set_wakeup_fd wants it; a full buffer is fine
    old = {s: signal.signal(s, lambda *_: stop()) for s in STOP_SIGNALS}
    old_fd = signal.set_wakeup_fd(writable.fileno(), warn_on_full_buffer=False)
    try:
        yield readable.fileno()
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, handler in old.items():
            signal.signal(s, handler)
        readable.close()
        writable.close()


__all__ = ["STOP_SIGNALS", "stop_on_signals"]
