"""Capture files of netdam traffic: the per-process sink, the reader and the merge.

Owns how netdam datagrams become pcap / pcapng records and back:

- ``Capture`` is the sink a transport calls for every datagram it sends or receives
  (``record``). It wraps each datagram in real Ethernet/IPv4 (or IPv6)/UDP headers, so
  tcpdump, tshark, Wireshark and scapy read the file as ordinary traffic, and writes it
  with scapy's ``PcapWriter`` / ``PcapNgWriter``. The headers are packed with ``struct``
  from a per-address-pair template (building scapy packet objects per datagram costs
  about 1 ms, the template a few microseconds; see tools/bench_capture.py). Datagrams a
  fault injector dropped, duplicated or corrupted are recorded with a note: a pcapng
  packet comment, or for classic pcap a side table ``<path>.faults.json`` of frame
  numbers and notes.
- One file per process, by design: a ``Capture`` belongs to the process that opened it.
  Its buffer is flushed before ``fork`` and a forked child cannot write to it, so a
  cluster never interleaves two writers in one file. ``merge`` joins the per-process
  files into one time-ordered capture at the end of a run.
- ``read_frames`` iterates over any pcap / pcapng file (read with scapy's readers) and
  turns truncation into a ``CaptureError`` naming the record.

Timestamps are wall-clock seconds (``time.time()``): files of different processes are
merged by them.

Imports: scapy is imported when a capture is opened or read, not with this module, which
every transport imports; a process that never captures (most devices and ranks) does
not pay scapy's import, about a fifth of a second of CPU at each start.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import socket
import struct
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from netdam.errors import NetdamError, UsageError

#: link type of the records Capture writes (Ethernet)
DLT_EN10MB = 1
#: environment variable naming this process's capture file (set by the launcher)
ENV_PCAP = "NETDAM_PCAP"
#: suffix of the side table of notes next to a classic pcap
FAULTS_SUFFIX = ".faults.json"
FORMATS = ("pcap", "pcapng")

_ETH = struct.Struct("!6s6sH")
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_MAX_IP4_PAYLOAD = 0xFFFF - 20 - 8


class CaptureError(NetdamError):
    """A capture file that cannot be read or written (truncated, corrupt, not a pcap)."""


class _Annotated(bytes):
    """A frame with pcapng comments: scapy's writers read ``comments`` off the packet."""

    comments: list[bytes]


def _mac(ip: bytes) -> bytes:
    """A stable MAC for an address: locally administered unicast, or the IP multicast MAC."""
    if len(ip) == 4:
        if 224 <= ip[0] <= 239:
            return b"\x01\x00\x5e" + bytes([ip[1] & 0x7F]) + ip[2:]
        return b"\x02\x00" + ip
    if ip[0] == 0xFF:
        return b"\x33\x33" + ip[-4:]
    return b"\x02" + ip[-5:]


def _addr(ip: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        pass
    try:
        return socket.inet_pton(socket.AF_INET6, ip.split("%")[0])
    except OSError:
        raise UsageError(f"capture: {ip!r} is not an IPv4 or IPv6 address") from None


class _Template:
    """Ethernet/IP/UDP headers of one (src, dst) address pair; only lengths vary."""

    __slots__ = ("v4", "eth", "src", "dst", "ports", "base_sum")

    def __init__(self, src: tuple, dst: tuple):
        s, d = _addr(src[0]), _addr(dst[0])
        if len(s) != len(d):  # mixed families: map the IPv4 side into IPv6
            s, d = (b"\0" * 10 + b"\xff\xff" + x if len(x) == 4 else x for x in (s, d))
        self.v4 = len(s) == 4
        self.src, self.dst = s, d
        self.eth = _ETH.pack(_mac(d), _mac(s), 0x0800 if self.v4 else 0x86DD)
        self.ports = (int(src[1]), int(dst[1]))
        if self.v4:
            # ones'-complement sum of the IPv4 header words that never change
            words = struct.unpack("!10H", _IP4.pack(0x45, 0, 0, 0, 0x4000, 64, 17, 0, s, d))
            self.base_sum = sum(words)

    def headers(self, n: int, ident: int) -> bytes:
        udp = _UDP.pack(self.ports[0], self.ports[1], 8 + n, 0)
        if self.v4:
            total = 28 + n
            c = self.base_sum + total + ident
            c = (c & 0xFFFF) + (c >> 16)
            c = (c & 0xFFFF) + (c >> 16)
            ip = _IP4.pack(0x45, 0, total, ident, 0x4000, 64, 17, ~c & 0xFFFF, self.src, self.dst)
        else:
            ip = _IP6.pack(0x60000000, 8 + n, 17, 64, self.src, self.dst)
        return self.eth + ip + udp


_open_captures: "weakref.WeakSet[Capture]" = weakref.WeakSet()


def _before_fork() -> None:
    for c in list(_open_captures):
        c.flush()


def _after_fork_in_child() -> None:
    for c in list(_open_captures):
        c._detach()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def _fmt_of(path: Path, fmt: str | None) -> str:
    if fmt is None:
        fmt = "pcapng" if path.suffix.lower() == ".pcapng" else "pcap"
    if fmt not in FORMATS:
        raise UsageError(f"capture format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return fmt


class Capture:
    """Writes every datagram a process sends or receives to one capture file.

    ``Capture(path, fmt="pcap")`` opens (truncates) ``path``; ``fmt`` is "pcap" or
    "pcapng" (None: from the suffix). Call ``record`` per datagram, ``close`` at the end
    (or use it as a context manager); ``flush`` happens by itself every
    ``flush_interval`` seconds of capture time, so a killed process loses at most that.
    """

    def __init__(self, path: str | os.PathLike, fmt: str | None = "pcap", *,
                 snaplen: int = 262144, flush_interval: float = 1.0):
        self.path = Path(path)
        self.fmt = _fmt_of(self.path, fmt)
        self.frames = 0                  #: records written so far
        self.notes: list[dict] = []      #: {frame, time, note, dropped} of annotated frames
        self.pid = os.getpid()
        self.flush_interval = flush_interval
        self._templates: dict[tuple, _Template] = {}
        self._ident = 0
        self._last_flush = None
        self._notes_written = 0
        from scapy.utils import PcapNgWriter, PcapWriter   # (module docstring: imports)
        try:
            if self.fmt == "pcap":
                self._file = open(self.path, "wb", buffering=1 << 16)
                self._writer = PcapWriter(self._file, linktype=DLT_EN10MB, snaplen=snaplen)
            else:
                self._writer = PcapNgWriter(str(self.path))
                self._writer.linktype = DLT_EN10MB
                self._file = None
            self._writer.write_header(None)
        except OSError as exc:
            raise CaptureError(f"cannot write capture {self.path}: {exc.strerror}") from None
        self._closed = False
        _open_captures.add(self)
        if self.fmt == "pcap":
            self._faults_path().unlink(missing_ok=True)

    def _faults_path(self) -> Path:
        return self.path.with_name(self.path.name + FAULTS_SUFFIX)

    def record(self, ts: float | None, src: Sequence, dst: Sequence, datagram,
               note: str | None = None, dropped: bool = False) -> None:
        """Append one datagram sent from ``src`` (ip, port) to ``dst`` (ip, port) at ``ts``
        (wall-clock seconds; None = now). ``datagram`` is bytes-like or a sequence of
        bytes-like parts (as given to sendmsg). ``note`` says what a fault injector did
        to it; ``dropped`` marks a datagram that never reached ``dst``."""
        if self._closed:
            raise UsageError(f"capture {self.path} is closed (or belongs to another process)")
        if ts is None:
            ts = time.time()
        if not isinstance(datagram, (bytes, bytearray, memoryview)):
            datagram = b"".join(datagram)
        n = len(datagram)
        key = (src[0], src[1], dst[0], dst[1])
        t = self._templates.get(key)
        if t is None:
            t = self._templates[key] = _Template(src, dst)
        if t.v4 and n > _MAX_IP4_PAYLOAD:
            raise UsageError(f"capture: a {n}-byte datagram does not fit one IPv4 packet")
        self._ident = (self._ident + 1) & 0xFFFF
        frame = t.headers(n, self._ident) + bytes(datagram)
        if note is not None or dropped:
            text = note or ""
            if dropped:
                text = f"dropped: {text}" if text else "dropped"
            self.write_frame(ts, frame, text, dropped)
        else:
            self.write_frame(ts, frame)

    def write_frame(self, ts: float, frame: bytes, note: str | None = None,
                    dropped: bool = False, wirelen: int | None = None) -> None:
        """Append one whole Ethernet frame (``record`` builds them; ``merge`` copies them)."""
        self.frames += 1
        if note:
            self.notes.append({"frame": self.frames, "time": ts, "note": note,
                               "dropped": bool(dropped)})
            if self.fmt == "pcapng":
                frame = _Annotated(frame)
                frame.comments = [f"netdam: {note}".encode()]
        us = round(ts * 1_000_000)
        if self.fmt == "pcap":
            self._writer.write_packet(frame, sec=us // 1_000_000, usec=us % 1_000_000,
                                      wirelen=wirelen)
        else:   # the pcapng writer takes one float timestamp and truncates ts * 1e6:
            # half a microsecond of margin makes that exact (float error < 0.3 us)
            self._writer.write_packet(frame, sec=(us + 0.5) / 1_000_000, wirelen=wirelen)
        if self._last_flush is None:
            self._last_flush = ts
        elif ts - self._last_flush >= self.flush_interval:
            self.flush()
            self._last_flush = ts

    def flush(self) -> None:
        """Push buffered records (and the side table of notes) to the file."""
        if self._closed:
            return
        self._writer.flush()
        if self.fmt == "pcap" and len(self.notes) != self._notes_written:
            write_notes(self.path, self.notes)
            self._notes_written = len(self.notes)

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._writer.close()
        self._closed = True
        _open_captures.discard(self)

    def _detach(self) -> None:
        """In a forked child: forget the parent's file without writing to it."""
        self._closed = True
        try:
            if self._file is not None:
                self._file.close()          # buffer is empty: flushed before fork
            else:
                self._writer.close()
        except OSError:
            pass

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Capture({str(self.path)!r}, fmt={self.fmt!r}, frames={self.frames})"


def capture_from_env(environ=None, fmt: str | None = None) -> Capture | None:
    """The Capture named by $NETDAM_PCAP (set by the launcher for each process), or None."""
    env = os.environ if environ is None else environ
    path = env.get(ENV_PCAP)
    return Capture(path, fmt) if path else None


# -- notes side table -----------------------------------------------------------------------

def write_notes(path: str | os.PathLike, notes: list[dict]) -> None:
    """Write the side table of annotated frames of the classic pcap ``path``."""
    side = Path(path).with_name(Path(path).name + FAULTS_SUFFIX)
    tmp = side.with_name(side.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"capture": Path(path).name, "frames": notes}, indent=1))
    os.replace(tmp, side)


def read_notes(path: str | os.PathLike) -> dict[int, str]:
    """frame number -> note from the side table of ``path`` ({} when there is none)."""
    side = Path(path).with_name(Path(path).name + FAULTS_SUFFIX)
    try:
        doc = json.loads(side.read_text())
        return {int(r["frame"]): str(r["note"]) for r in doc.get("frames", [])}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CaptureError(f"{side}: not a netdam notes table ({exc})") from None


# -- reading ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """One record of a capture file."""

    number: int          #: 1-based, as Wireshark numbers frames
    time: float
    linktype: int
    data: bytes
    wirelen: int
    note: str | None = None


@contextmanager
def _quiet_scapy():
    """scapy logs its own warning for a truncated file; we raise CaptureError instead."""
    log = logging.getLogger("scapy.runtime")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _scan(path: Path, size: int) -> tuple[int, str] | None:
    """Walk the record headers of an uncompressed capture without reading packet data;
    return (record number, problem) of the first record that is not whole, or None.
    (scapy's readers stop silently at a cut-short record.)"""
    with open(path, "rb") as f:
        magic = f.read(4)
        if magic == b"\x0a\x0d\x0d\x0a":
            f.seek(8)
            bom = f.read(4)
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            pos, number = 0, 0
            while pos < size:
                f.seek(pos)
                head = f.read(8)
                if len(head) < 8:
                    return number + 1, f"{len(head)} stray bytes at the end of the file"
                btype, blen = struct.unpack(endian + "II", head)
                if btype in (2, 3, 6):
                    number += 1
                if blen < 12 or blen % 4:
                    return number + (btype not in (2, 3, 6)), f"block length {blen} is invalid"
                if pos + blen > size:
                    what = number if btype in (2, 3, 6) else number + 1
                    return what, (f"its block says {blen} bytes, the file holds "
                                  f"{size - pos}")
                pos += blen
            return None
        if magic[:2] == b"\x1f\x8b":
            return None
        endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        pos, number = 24, 0
        while pos < size:
            number += 1
            f.seek(pos)
            head = f.read(16)
            if len(head) < 16:
                return number, f"its 16-byte header is cut after {len(head)} bytes"
            caplen = struct.unpack(endian + "IIII", head)[2]
            if pos + 16 + caplen > size:
                return number, (f"its header says {caplen} bytes, the file holds "
                                f"{size - pos - 16}")
            pos += 16 + caplen
    return None


def read_frames(path: str | os.PathLike, *, notes: bool = True) -> Iterator[Record]:
    """Every record of the pcap or pcapng file ``path``, in file order.

    Raises CaptureError (one line, naming the record) for a file that is not a capture
    or, once the whole records before it were yielded, for a record cut short.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CaptureError(f"{path}: {exc.strerror}") from None
    side = read_notes(path) if notes else {}
    from scapy.utils import RawPcapNgReader, Scapy_Exception   # (module docstring: imports)
    with _quiet_scapy():
        try:
            reader = RawPcapNgReader(str(path))   # falls back to classic pcap by magic
        except Scapy_Exception as exc:
            raise CaptureError(f"{path}: not a pcap or pcapng file ({exc})") from None
        except (EOFError, OSError, struct.error) as exc:
            raise CaptureError(f"{path}: unreadable capture header ({exc})") from None
        bad = _scan(path, size)
        ng = isinstance(reader, RawPcapNgReader)
        number = 0
        try:
            while bad is None or number + 1 < bad[0]:
                try:
                    data, meta = next(reader)
                except StopIteration:
                    break
                except (Scapy_Exception, struct.error, ValueError, OSError, EOFError) as exc:
                    raise CaptureError(f"{path}: record {number + 1} is corrupt ({exc})") from None
                number += 1
                if ng:
                    ts = ((meta.tshigh << 32) + meta.tslow) / meta.tsresol
                    linktype = meta.linktype
                    comments = meta.comments or []
                    note = "; ".join(c.decode("utf-8", "replace") if isinstance(c, bytes)
                                     else str(c) for c in comments) or None
                    if note and note.startswith("netdam: "):
                        note = note[len("netdam: "):]
                else:
                    ts = meta.sec + meta.usec / (1e9 if reader.nano else 1e6)
                    linktype = reader.linktype
                    note = None
                yield Record(number, ts, linktype, data, meta.wirelen, side.get(number, note))
        finally:
            reader.close()
    if bad is not None:
        raise CaptureError(f"{path}: record {bad[0]} is truncated or corrupt: {bad[1]}")


# -- merge ----------------------------------------------------------------------------------

def merge(paths: Iterable[str | os.PathLike], out: str | os.PathLike,
          fmt: str | None = None, *, strict: bool = False) -> int:
    """Merge per-process capture files into ``out``, ordered by time; returns the frame
    count. Notes (pcapng comments or side tables) follow their frames. ``fmt`` defaults to
    the suffix of ``out``. A part cut short by a killed process keeps its whole records
    (a warning is logged) unless ``strict``."""
    out = Path(out)
    paths = [Path(p) for p in paths]
    log = logging.getLogger("netdam.capture")

    def records(i: int, p: Path) -> Iterator[tuple[float, int, int, Record]]:
        try:
            for r in read_frames(p):
                yield (r.time, i, r.number, r)
        except CaptureError as exc:
            if strict:
                raise
            log.warning("merge: %s; keeping the records before it", exc)

    streams = [records(i, p) for i, p in enumerate(paths)]
    tmp = out.with_name(f".{out.name}.merging{os.getpid()}")
    cap = Capture(tmp, _fmt_of(out, fmt))
    try:
        for ts, i, _, r in heapq.merge(*streams):
            if r.linktype != DLT_EN10MB:
                raise CaptureError(f"merge: {paths[i]} has link type {r.linktype}; only "
                                   f"Ethernet captures (link type 1) can be merged")
            cap.write_frame(ts, r.data, r.note, bool(r.note and r.note.startswith("dropped")),
                            wirelen=r.wirelen)
        count = cap.frames
        cap.close()
    except BaseException:
        cap.close()
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + FAULTS_SUFFIX).unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    side_tmp = tmp.with_name(tmp.name + FAULTS_SUFFIX)
    side_out = out.with_name(out.name + FAULTS_SUFFIX)
    if side_tmp.exists():
        os.replace(side_tmp, side_out)
    else:
        side_out.unlink(missing_ok=True)
    return count


__all__ = ["Capture", "CaptureError", "Record", "capture_from_env", "merge", "read_frames",
           "read_notes", "write_notes", "ENV_PCAP", "FAULTS_SUFFIX"]
