"""The per-datagram fast path: batches of datagrams handled in C (fastpath.c).

Owns the Python face of ``netdam.wire._fastpath``: ``Batch`` (a list of datagrams
scanned at once: the checks and fields of ``codec.decode`` for each, CRC32C included),
copying a batch's payloads into device memory (or, on a host, the fragments of one
message into its buffer: ``msg_run``, ``copy_fragments``), and ``Burst`` (fragments of
one message stamped with their sequence numbers and CRCs and sent with one
``sendmmsg``). The
engines decide everything; this module only does their byte work for many datagrams
per Python call. ``AVAILABLE`` is False when the extension was not built; callers then
keep their pure-Python paths, which give the same results.
"""

from __future__ import annotations

import socket
import sys

try:
    from netdam.wire._fastpath import ffi, lib
    AVAILABLE = True
except ImportError:       # not built: every caller has a Python path
    ffi = lib = None
    AVAILABLE = False


def crc32c(data, value: int = 0) -> int:
    """CRC32C of ``data`` continuing from ``value`` (same as the crc32c package)."""
    buf = ffi.from_buffer("uint8_t[]", data)
    return lib.nd_crc32c(value, buf, len(buf))


def select_crc(widest: int = 2) -> str:
    """Use the widest CRC32C kernel this CPU runs, up to ``widest``: 0 the portable
    tables, 1 the crc32 instruction (SSE4.2), 2 (the default, chosen at import)
    carry-less folding (AVX-512 VPCLMULQDQ) for buffers of a KiB and more. Returns the
    name of the kernel in use; every kernel gives the same CRC."""
    return ffi.string(lib.nd_crc_select(widest)).decode()


def crc_kernel() -> str:
    """The name of the CRC32C kernel in use ("table", "sse4.2" or "vpclmulqdq")."""
    return ffi.string(lib.nd_crc_kernel()).decode()


class Batch:
    """Datagrams scanned together. ``hdrs[i].ok`` says whether ``codec.decode`` would
    accept datagram i; when it does, ``hdrs[i]`` holds its header fields (the names of
    SPEC §2.1) and ``payload_at``."""

    __slots__ = ("grams", "bufs", "ptrs", "hdrs", "n")

    def __init__(self, grams):
        self.grams = grams
        self.bufs = bufs = [ffi.from_buffer("uint8_t[]", g) for g in grams]   # kept alive
        self.n = n = len(bufs)
        self.ptrs = ffi.new("const uint8_t *[]", bufs)
        lens = ffi.new("uint32_t[]", [len(b) for b in bufs])
        self.hdrs = ffi.new("nd_hdr[]", n)
        lib.nd_scan(n, self.ptrs, lens, self.hdrs)

    def write_run(self, start: int, op: int, plain: tuple[int, int], me: int, any_: int,
                  dtypes: int):
        """The run of plain WRITE fragments from datagram ``start`` (``nd_write_run``):
        ``count``, ``uniform``, ``lo``, ``hi``, ``payload``."""
        out = ffi.new("nd_run *")
        lib.nd_write_run(self.n - start, self.hdrs + start, op, plain[0], plain[1], me,
                         any_, dtypes, out)
        return out

    def msg_run(self, start: int, op: int):
        """The fragments of one message with opcode ``op`` from datagram ``start``
        (``nd_msg_run``): ``count``, ``uniform`` (each starts where the one before
        ended), ``lo``, ``hi`` (the bytes of the message they cover), ``payload``."""
        out = ffi.new("nd_run *")
        lib.nd_msg_run(self.n - start, self.hdrs + start, op, out)
        return out

    def copy_fragments(self, buf, start: int, stop: int) -> None:
        """Write the payloads of datagrams ``start:stop`` at ``frag_off`` of ``buf`` (a
        writable buffer of their message's length, as ``msg_run`` checked them)."""
        dst = ffi.from_buffer("uint8_t[]", buf, require_writable=True)
        lib.nd_copy_fragments(dst, stop - start, self.ptrs + start, self.hdrs + start)

    def copy_payloads(self, memory, start: int, stop: int) -> None:
        """Write the payloads of datagrams ``start:stop`` at ``addr + frag_off`` of
        ``memory`` (a writable buffer). Every range must have been checked."""
        mem = ffi.from_buffer("uint8_t[]", memory, require_writable=True)
        lib.nd_copy_payloads(mem, stop - start, self.ptrs + start, self.hdrs + start)


class Burst:
    """Fragments of one message to one address, sent with one ``sendmmsg``.

    ``head`` is the encoded header (and route) of the message's first fragment; each
    fragment i gets ``seq[i]``, ``frag_off[i]``, ``flags[i]`` and its payload view,
    and its CRC is computed here over exactly the bytes sent.
    """

    def __init__(self, head: bytes, seqs, frag_offs, flags, payloads):
        n = self.n = len(payloads)
        self._keep = [ffi.from_buffer("uint8_t[]", p) for p in payloads]
        self.heads = ffi.new("uint8_t[]", head * n)
        self.head_len = len(head)
        self._lens = lens = [len(p) for p in self._keep]
        self.plen = ffi.new("uint32_t[]", lens)
        self.payloads = ffi.new("const uint8_t *[]", self._keep)
        self.trailers = ffi.new("uint8_t[]", 4 * n)
        lib.nd_stamp(n, self.heads, self.head_len, ffi.new("uint32_t[]", seqs),
                     ffi.new("uint32_t[]", frag_offs), self.plen,
                     ffi.new("uint32_t[]", flags), self.payloads, self.trailers)

    def size(self, i: int) -> int:
        """Bytes of datagram i."""
        return self.head_len + self.plen[i] + 4

    def bytes_of(self, count: int) -> int:
        """Bytes of datagrams ``0:count`` together."""
        return (self.head_len + 4) * count + sum(self._lens[:count])

    def datagram(self, i: int) -> bytes:
        """Datagram i as bytes (for captures and for injecting faults)."""
        h = self.head_len
        return (bytes(ffi.buffer(self.heads + i * h, h))
                + bytes(ffi.buffer(self.payloads[i], self.plen[i]))
                + bytes(ffi.buffer(self.trailers + 4 * i, 4)))

    def send(self, sock: socket.socket, addr: tuple[str, int], start: int = 0) -> int:
        """Send datagrams ``start:`` to ``addr`` (IPv4); how many the kernel took, or a
        negative errno when it took none."""
        ip = int.from_bytes(socket.inet_aton(addr[0]), sys.byteorder)
        port = socket.htons(addr[1])
        h = self.head_len
        return lib.nd_send_batch(sock.fileno(), self.n - start, self.heads + start * h, h,
                                 self.payloads + start, self.plen + start,
                                 self.trailers + 4 * start, ip, port)


__all__ = ["AVAILABLE", "Batch", "Burst", "crc32c", "crc_kernel", "select_crc"]
