"""UDP glue: the scale-out path between netdam endpoints (SPEC §1, §2.4).

Owns one UDP socket: large socket buffers, receiving into one preallocated buffer
(``recv`` returns a view of it, valid until the next ``recv``), scatter-gather sends of
``encode_parts`` (header, payload view, trailer: the payload is never copied in Python),
the configured MTU, and the fault ``Injector`` on this side's sends (held-back datagrams
wait in a small heap flushed by ``flush(now)`` / ``next_timer()``). No protocol logic.
Also the one rule for where netdam listens: loopback by default; any other address is
an explicit choice that ``warn_if_exposed`` announces on stderr.
"""

from __future__ import annotations

import errno
import heapq
import ipaddress
import itertools
import operator
import os
import select
import socket
import sys
import time

from netdam.transport.faults import FaultConfig, Injector
from netdam.wire import fast
from netdam.wire.codec import Packet, encode_head, encode_parts
from netdam.wire.fields import DEFAULT_MTU, HEADER_FIELDS, MAX_DATAGRAM, MIN_MTU
from netdam.wire.frag import Fragment

#: socket buffer size asked for: 4 MiB is the largest an unprivileged process gets by
#: default on Linux (net.core.rmem_max / wmem_max)
SOCKET_BUFFER = 4 << 20

#: the header fields that fragments of one message share (all but seq, frag_off, flags)
_TEMPLATE = operator.attrgetter(*(f for f in HEADER_FIELDS if f in Packet.__slots__ and f not in
                                  ("seq", "frag_off", "flags")), "route")
_REQ_ID = operator.attrgetter("req_id")
#: longest busy-poll (``readable``) before a loop looks at its timers again
SPIN_TURN = 200e-6
#: what a batched send returns when the send buffer is full (-errno)
_FULL = (0, -errno.EAGAIN, -errno.ENOBUFS)
#: errors a send may hit that mean "the datagram is lost", as on a real network
_LOSSY = (errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED, errno.EHOSTUNREACH,
          errno.ENETUNREACH, errno.EPERM)


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address (127.0.0.0/8, ::1, "localhost")?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, what: str, out=None) -> bool:
    """Print one warning line when ``what`` binds ``host``, not loopback; True if so."""
    if is_loopback(host):
        return False
    print(f"warning: {what} binds {host}, not loopback: anything that can reach it can "
          "talk to it (see RELIABILITY.md, isolation)", file=out or sys.stderr)
    return True


def check_mtu(mtu: int) -> int:
    if not MIN_MTU <= int(mtu) <= MAX_DATAGRAM:
        raise ValueError(f"mtu {mtu} outside {MIN_MTU}..{MAX_DATAGRAM}")
    return int(mtu)


class UdpEndpoint:
    """A bound UDP socket speaking netdam datagrams.

    ``send(packet, addr)`` encodes and sends (through the injector when faults are
    configured); ``recv(timeout)`` returns ``(view, addr)`` or None. Non-blocking
    underneath; ``recv`` waits with poll() up to ``timeout`` seconds.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, mtu: int = DEFAULT_MTU,
                 faults: FaultConfig | Injector | None = None,
                 buffer_size: int = SOCKET_BUFFER):
        self.mtu = check_mtu(mtu)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, buffer_size)
            except OSError:
                pass
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()
        try:
            self._inode = os.fstat(self.sock.fileno()).st_ino
        except OSError:
            self._inode = -1
        self._buf = bytearray(MAX_DATAGRAM + 1)
        self._poll = select.poll()
        self._poll.register(self.sock.fileno(), select.POLLIN)
        inj = faults if isinstance(faults, Injector) else Injector(faults)
        self.injector = inj
        self._held: list[tuple[float, int, bytes, tuple, str | None]] = []
        self._tick = 0
        self.counters = {"tx_datagrams": 0, "tx_bytes": 0, "rx_datagrams": 0, "rx_bytes": 0,
                         "tx_errors": 0}
        #: a netdam.capture.pcap.Capture recording every datagram this endpoint sends
        #: (and every one its injector drops, marked); None: no capture
        self.capture = None

    @property
    def buffer_sizes(self) -> tuple[int, int]:
        """(SO_RCVBUF, SO_SNDBUF) as the kernel granted them."""
        return (self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))

    def fileno(self) -> int:
        return self.sock.fileno()

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped for this socket (its receive buffer was full),
        from /proc/net/udp; None where that is not available."""
        host, port = self.address[:2]
        table = "/proc/net/udp6" if ":" in host else "/proc/net/udp"
        suffix = f":{port:04X}"
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[1].endswith(suffix) and cols[9] == str(self._inode):
                        return int(cols[-1])
        except (OSError, IndexError, ValueError, StopIteration):
            return None
        return None

    # -- sending -------------------------------------------------------------------------
    def send(self, packet: Packet, addr: tuple[str, int], now: float | None = None) -> None:
        """Encode ``packet`` and send it to ``addr`` (scatter-gather, no payload copy)."""
        parts = encode_parts(packet)
        if self.injector.active:
            self._inject(parts, addr, time.monotonic() if now is None else now)
        else:
            self._sendmsg(parts, addr)

    def send_many(self, packets: list[Packet], addr: tuple[str, int],
                  now: float | None = None) -> None:
        """Send packets to ``addr``: when they are fragments of one message (headers equal
        but for seq, frag_off, flags and payload), the fast path is built and no fault
        injection or capture needs each datagram, as one ``sendmmsg`` of datagrams
        stamped in C; else one ``send`` each. What the kernel refuses (a full buffer) is lost, as with ``send``."""
        if len(packets) < 2 or not fast.AVAILABLE or self.injector.active \
                or self.capture is not None or ":" in addr[0] or not _one_message(packets):
            for p in packets:
                self.send(p, addr, now)
            return
        burst = fast.Burst(encode_head(packets[0]), [p.seq for p in packets],
                           [p.frag_off for p in packets], [int(p.flags) for p in packets],
                           [p.payload for p in packets])
        done, tries = 0, 0
        while done < burst.n:
            r = burst.send(self.sock, addr, done)
            if r > 0:
                done += r
                continue
            if r not in _FULL or tries:
                break
            tries += 1          # the send buffer is full: wait briefly for room once
            select.select((), (self.sock,), (), 0.05)
        c = self.counters
        c["tx_errors"] += burst.n - done
        c["tx_datagrams"] += done
        c["tx_bytes"] += burst.bytes_of(done)

    def send_messages(self, packets: list, addr: tuple[str, int],
                      now: float | None = None) -> None:
        """Send packets to ``addr``, each run of one message's (one ``req_id``) with
        ``send_many``: what ``Bursts`` does, for a list already in hand."""
        for _, run in itertools.groupby(packets, _REQ_ID):
            self.send_many(list(run), addr, now)

    def bursts(self, now: float | None = None) -> "Bursts":
        """A collector that sends each run of consecutive packets to one address of one
        message (one ``req_id``) with ``send_many``; ``flush()`` sends the last run."""
        return Bursts(self, now)

    def send_bytes(self, data, addr: tuple[str, int], now: float | None = None) -> None:
        """Send an already encoded datagram (through the injector when active)."""
        if self.injector.active:
            self._inject(data, addr, time.monotonic() if now is None else now)
        else:
            self._sendmsg((data,), addr)

    def _sendmsg(self, parts, addr, note: str | None = None) -> None:
        try:
            n = self.sock.sendmsg(parts, (), 0, addr)
        except BlockingIOError:
            # the send buffer is full: wait briefly for room rather than drop
            select.select((), (self.sock,), (), 0.05)
            try:
                n = self.sock.sendmsg(parts, (), 0, addr)
            except OSError:
                self.counters["tx_errors"] += 1
                return
        except OSError as exc:
            if exc.errno in _LOSSY:
                self.counters["tx_errors"] += 1
                return
            raise
        self.counters["tx_datagrams"] += 1
        self.counters["tx_bytes"] += n
        if self.capture is not None:
            self.capture.record(None, self.address, addr, parts, note)

    def ring_doorbell(self, port: int) -> None:
        """Wake a shared-memory consumer on this node: an empty datagram to its port."""
        try:
            self.sock.sendto(b"", ("127.0.0.1", port))
        except OSError:
            self.counters["tx_errors"] += 1

    def _inject(self, data, addr, now: float) -> None:
        before = dict(self.injector.counters) if self.capture is not None else None
        outs = self.injector.apply(data, now)
        note = None
        if before is not None:   # name what the injector did, for the capture
            done = [k for k in ("lost", "corrupted", "duplicated", "reordered", "delayed",
                                "rate_limited") if self.injector.counters[k] != before[k]]
            note = ", ".join(done) or None
            if not outs:
                self.capture.record(None, self.address, addr, data, note, dropped=True)
        for at, dgram in outs:
            if at <= now:
                self._sendmsg((dgram,), addr, note)
            else:
                self._tick += 1
                heapq.heappush(self._held, (at, self._tick, dgram, addr, note))

    def next_timer(self) -> float | None:
        """When a held-back datagram is due (None: nothing held)."""
        return self._held[0][0] if self._held else None

    def flush(self, now: float) -> int:
        """Send every held-back datagram that is due; returns how many."""
        held, n = self._held, 0
        while held and held[0][0] <= now:
            _, _, dgram, addr, note = heapq.heappop(held)
            self._sendmsg((dgram,), addr, note)
            n += 1
        return n

    # -- receiving -----------------------------------------------------------------------
    def _receive(self, call, timeout: float | None, arg=None):
        """``call(arg)`` on the socket, waiting with poll() up to ``timeout`` seconds (0:
        do not wait; None: wait forever) while nothing is there; None if nothing came."""
        try:
            return call(arg)
        except BlockingIOError:
            if not self._wait_readable(timeout):
                return None
            try:
                return call(arg)
            except BlockingIOError:
                return None
        except ConnectionRefusedError:
            return None

    def recv(self, timeout: float | None = 0.0):
        """One datagram as ``(memoryview, addr)``, or None after ``timeout`` seconds
        (0: do not wait; None: wait forever). The view is valid until the next call."""
        return self.recv_into(self._buf, timeout)

    def recv_into(self, buf: bytearray, timeout: float | None = 0.0):
        """As ``recv``, but into ``buf`` (at least ``MAX_DATAGRAM + 1`` bytes, so an
        oversized datagram shows as one): ``(memoryview of buf, addr)`` or None. The view
        stays valid as long as ``buf`` is not received into again."""
        r = self._receive(self._recv_into, timeout, buf)
        if r is None:
            return None
        n, addr = r
        self.counters["rx_datagrams"] += 1
        self.counters["rx_bytes"] += n
        return memoryview(buf)[:n], addr

    def recv_bytes(self, timeout: float | None = 0.0):
        """As ``recv``, but the datagram is its own ``bytes`` (received straight into
        it, no copy): for a caller that keeps datagrams beyond the next receive."""
        r = self._receive(self._recv_owned, timeout)
        if r is None:
            return None
        self.counters["rx_datagrams"] += 1
        self.counters["rx_bytes"] += len(r[0])
        return r

    def _wait_readable(self, timeout: float | None) -> bool:
        """Sleep in poll() until a datagram is waiting, up to ``timeout`` seconds (0: do
        not wait; None: wait forever); whether one is."""
        if timeout == 0.0:
            return False
        ms = -1 if timeout is None else max(0, int(timeout * 1000 + 0.999))
        return bool(self._poll.poll(ms))

    def wake_on(self, fd: int) -> None:
        """Also end every wait of this endpoint in poll() once ``fd`` is readable (a
        signal's wakeup fd: a sleeping device then stops at once on SIGTERM, not after
        its sleep); a receive that finds nothing then returns nothing."""
        self._poll.register(fd, select.POLLIN)

    def waiting(self) -> bool:
        """Whether a datagram is waiting, by one poll() that does not wait: cheaper than
        a receive that finds nothing (that one raises inside the socket module)."""
        return bool(self._poll.poll(0))

    def readable(self, until: float) -> bool:
        """Busy-poll (no sleep, no exception per try) until a datagram is waiting or the
        monotonic clock reaches ``until``; whether one is waiting."""
        poll, clock = self._poll.poll, time.monotonic
        while not poll(0):
            if clock() >= until:
                return False
        return True

    def recv_batch(self, pool, limit: int, timeout: float | None = 0.0) -> list:
        """Up to ``limit`` datagrams that are waiting, as ``(view, addr)``, each received
        into a slot of ``pool`` (a ``RecvPool``: ``take()`` a slot, ``unused(slot)`` back;
        when it has none, into the datagram's own ``bytes``); waits up to ``timeout``
        seconds for the first (0: do not wait; None: wait forever). One call for a
        burst: what ``recv_into`` does per datagram, without a Python frame each."""
        out = []
        sock, nbytes = self.sock, 0
        while len(out) < limit:
            if len(out) == 1 and not self._poll.poll(0):
                break                   # one alone, as a request mostly is: no failed try
            slot = pool.take()
            try:
                if slot is None:
                    data, addr = sock.recvfrom(MAX_DATAGRAM + 1)
                else:
                    n, addr = sock.recvfrom_into(slot)
                    data = memoryview(slot)[:n]
            except BlockingIOError:
                if slot is not None:
                    pool.unused(slot)
                if out or not self._wait_readable(timeout):
                    break
                timeout = 0.0           # something arrived: take it, then what follows
                continue
            except ConnectionRefusedError:
                if slot is not None:
                    pool.unused(slot)
                break
            out.append((data, addr))
            nbytes += len(data)
        if out:
            self.counters["rx_datagrams"] += len(out)
            self.counters["rx_bytes"] += nbytes
        return out

    def _recv_into(self, buf):
        return self.sock.recvfrom_into(buf)

    def _recv_owned(self, _unused):
        return self.sock.recvfrom(MAX_DATAGRAM + 1)

    def close(self) -> None:
        try:
            self._poll.unregister(self.sock.fileno())
        except (KeyError, ValueError, OSError):
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _one_message(packets) -> bool:
    """Whether ``packets`` are fragments of one message: headers equal but for seq,
    frag_off, flags and payload (Fragments of one head are, by construction)."""
    first = packets[0]
    if type(first) is Fragment:
        head = first.head
        if all(type(p) is Fragment and p.head is head for p in packets):
            return True
    return len(set(map(_TEMPLATE, packets))) == 1


class Bursts:
    """Consecutive packets of one message to one address, sent together (``send_many``)."""

    __slots__ = ("udp", "now", "frags", "to")

    def __init__(self, udp: UdpEndpoint, now: float | None):
        self.udp, self.now, self.frags, self.to = udp, now, [], None

    def add(self, pkt: Packet, addr) -> None:
        frags = self.frags
        if frags and (pkt.req_id != frags[0].req_id or addr != self.to):
            self.flush()
        self.frags.append(pkt)
        self.to = addr

    def flush(self) -> None:
        if self.frags:
            self.udp.send_many(self.frags, self.to, self.now)
            self.frags = []


__all__ = ["UdpEndpoint", "Bursts", "SOCKET_BUFFER", "check_mtu", "is_loopback", "warn_if_exposed"]
