"""Shared-memory glue: the scale-up path between a host and a device on the same node.

Owns the single-producer single-consumer rings (one per direction per host<->device
pair) that carry the very same encoded netdam datagrams as UDP, the device's memory
segment, how a host claims a ring pair, and the rule for mapping device memory into a
host. No system call per datagram on the data path: producers copy into the ring and
publish an index, consumers poll the index (``Backoff``: a bounded spin, then short
sleeps that grow). A consumer about to sleep sets its ring's ``sleeping`` word; a producer
that sees it after publishing rings the doorbell: an empty UDP datagram to the
consumer's socket, which the consumer sleeps on. (A wake-up lost to the store/load race
between the two costs at most one sleep, never a hang: sleeps are bounded.)

A host may also sleep until words of the device's memory change (``watch``): it writes
up to ``WATCH_MAX`` conditions "the u64 at device offset o is at least v" into its
response ring, arms them, then looks at the words once more itself; the device, after
each turn that took datagrams, checks the armed conditions of every ring and rings the
doorbell of a host when one holds, disarming it (a doorbell is one-shot). That doorbell
may go to a port of its own (``watch port``): a host can then sleep until a watched word
arrives while answers to its requests wait, unread, in its main socket. So a host
waiting for a peer's PUT_SIGNAL or ATOMIC_FADD sleeps in the kernel and wakes when the
word arrives, not on a timer. The device only compares words it holds; the memory
segment is open to the node's processes anyway, so a watch reveals nothing a mapping
could not.

Ring layout (one ``multiprocessing.shared_memory`` segment per ring)::

    0    u64 head      bytes ever published by the producer (only it writes)
    64   u64 tail      bytes ever consumed by the consumer (only it writes)
    128  u64 capacity  size of the data area, a multiple of 8
    136  u64 sleeping  1 while the consumer sleeps (only the consumer writes)
    144  u64 wake port the consumer's UDP port on 127.0.0.1 for a doorbell
    152  u64 watching  conditions armed, 0..WATCH_MAX (the consumer arms, the producer
                       disarms when it rings)
    160  u64 watch port  where a watch's doorbell goes (0: the wake port)
    168  u64 x 2 x WATCH_MAX  the conditions: (device memory offset, value) pairs
    256  data area     records: u32 length (little-endian), datagram, pad to 8;
                       a length of 0xFFFFFFFF means "skip to the start of the area"

Memory ordering: a producer writes the record first and then publishes ``head`` with
one aligned 8-byte store (a NumPy uint64 element assignment, a single instruction);
the consumer loads ``head`` and only then reads the record, and publishes ``tail`` only
after it has finished with the record. The data copy and the index store are separate
C calls, so the compiler cannot reorder them, and x86-64 keeps stores in order with
stores and loads in order with loads (total store order), which is all this protocol
needs. A weakly ordered CPU (ARM) would need a release fence before each index store
and an acquire fence after each index load; ``ORDERED_CPU`` says whether this machine
is one the rings are known to be correct on.

The device's info names this layout (``LAYOUT``); a host whose netdam lays rings out
otherwise refuses them (``ConnectionError``: an agent on path auto then uses UDP).

Claiming a ring pair: the device creates ``slots`` pairs; a host takes the first pair
whose request ring it can ``flock`` exclusively (on Linux the segment's own file in
/dev/shm; elsewhere a lock file in a directory the device names). The kernel drops the
lock if the host dies, so the pair is free again. A new owner discards any
stale responses and continues the request ring from its published head.

Mapping device memory (``ShmClient.map_device_memory``): a host on the same node may
map a range of the device's memory segment as a NumPy array for zero-copy access, but
only through a region it holds the key to, only inside that region, only with the
partition key of the region, and only with the rights the region grants: a writable
view needs the region's write right, a read-only view its read right. Anything else
raises ``PermissionError``. Direct stores bypass the device's ordering (SPEC §8.4), so
they are for bulk data that a later PUT_SIGNAL or FENCE publishes. ``copy`` moves the
bytes of such an access: a large copy is split over the machine's CPUs, one part per
thread (NumPy lets go of the GIL while it copies), the way a DMA engine runs channels.

Every named segment is unlinked by its creator on ``close`` (and by Python's resource
tracker if the creator dies); attaching processes never unlink.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import platform
import secrets
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import resource_tracker, shared_memory

import numpy as np

ORDERED_CPU = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")

_HEAD, _TAIL, _CAP, _SLEEPING, _PORT, _WATCHING, _WATCH_PORT, _CONDS, _DATA = \
    0, 64, 128, 136, 144, 152, 160, 168, 256
WATCH_MAX = (_DATA - _CONDS) // 16   #: conditions one watch may hold
#: the ring layout above; a device names it in its info and a host of another refuses
#: the rings (2: the watch words; 1, unnamed: before them)
LAYOUT = 2
_LEN = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SKIP = 0xFFFFFFFF
RING_BYTES = 8 << 20          #: default data area of one ring
PREFIX = "netdam-"            #: every segment netdam creates starts with this
_SHM_DIR = "/dev/shm"          # where POSIX shared memory lives on Linux


SPLIT_MIN = 4 << 20           #: copies at least this large are split across threads
_copiers: ThreadPoolExecutor | None = None
_copiers_lock = threading.Lock()


def _copy_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:     # not Linux
        return os.cpu_count() or 1


def copy(dst, src) -> None:
    """``dst[:] = src`` for byte buffers of equal length (the mapped path's bulk copy).
    From ``SPLIT_MIN`` bytes on, with more than one CPU to run on, the copy is cut into
    one part per CPU and the parts run at once; one CPU alone copies at the speed of
    its own memory requests, several reach more of the memory's bandwidth."""
    global _copiers
    d = np.frombuffer(dst, np.uint8)
    s = np.frombuffer(src, np.uint8)
    if d.size != s.size:
        raise ValueError(f"copy of {s.size} bytes into {d.size}")
    n = d.size
    k = _copy_threads() if n >= SPLIT_MIN else 1
    if k < 2:
        np.copyto(d, s)
        return
    if _copiers is None:
        with _copiers_lock:
            if _copiers is None:
                _copiers = ThreadPoolExecutor(k - 1, thread_name_prefix="netdam-copy")
    cut = [(n * i // k) & ~63 for i in range(k)] + [n]     # cache-line aligned parts
    parts = [_copiers.submit(np.copyto, d[cut[i]:cut[i + 1]], s[cut[i]:cut[i + 1]])
             for i in range(1, k)]
    np.copyto(d[:cut[1]], s[:cut[1]])
    for f in parts:
        f.result()


def _align8(n: int) -> int:
    return (n + 7) & ~7


class _Attached:
    """A segment opened by name without Python's resource tracker (which would unlink
    it when this process exits, Python < 3.13): only the creator may unlink."""

    def __init__(self, name: str):
        self.name = name.lstrip("/")
        fd = os.open(os.path.join(_SHM_DIR, self.name), os.O_RDWR)
        try:
            self._mmap = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        self.buf = memoryview(self._mmap)

    def close(self) -> None:
        if self.buf is not None:
            self.buf.release()
            self.buf = None
            self._mmap.close()


def _attach(name: str):
    if os.path.isdir(_SHM_DIR):
        return _Attached(name)
    shm = shared_memory.SharedMemory(name=name, create=False)  # not Linux: tracker it is
    try:
        resource_tracker.unregister("/" + name.lstrip("/"), "shared_memory")
    except Exception:  # noqa: BLE001 - tracker absent or already unregistered
        pass
    return shm


class Ring:
    """One SPSC ring of datagrams in a named shared-memory segment.

    The producer calls ``push(parts)``; the consumer calls ``peek()`` for a view of the
    oldest record and ``advance()`` once done with it.
    """

    def __init__(self, name: str | None = None, capacity: int = RING_BYTES, *,
                 create: bool = True):
        if create:
            capacity = _align8(capacity)
            self.shm = shared_memory.SharedMemory(
                name=name or f"{PREFIX}{secrets.token_hex(6)}", create=True,
                size=_DATA + capacity)
            self.shm.buf[:_DATA] = bytes(_DATA)
            struct.pack_into("<Q", self.shm.buf, _CAP, capacity)
        else:
            self.shm = _attach(name)
        self.owner = create
        self.name = self.shm.name
        buf = self.shm.buf
        self.capacity = struct.unpack_from("<Q", buf, _CAP)[0]
        self._head = np.ndarray((1,), np.uint64, buf, _HEAD)
        self._tail = np.ndarray((1,), np.uint64, buf, _TAIL)
        # sleeping, wake port, watching, watch port
        self._ctl = np.ndarray((4,), np.uint64, buf, _SLEEPING)
        self._conds = np.ndarray((WATCH_MAX, 2), np.uint64, buf, _CONDS)
        self._data = buf[_DATA:_DATA + self.capacity]
        self._my_head = int(self._head[0])    # producer's copy of head
        self._seen_tail = int(self._tail[0])  # producer's cached view of tail
        self._my_tail = int(self._tail[0])    # consumer's copy of tail
        self._seen_head = int(self._head[0])  # consumer's cached view of head
        self._pending = 0                     # consumer: bytes of the peeked record

    # -- producer ------------------------------------------------------------------------
    def resume_producing(self) -> None:
        """Take over as producer from the published head (a new owner of the ring)."""
        self._my_head = int(self._head[0])
        self._seen_tail = int(self._tail[0])

    def push(self, parts) -> bool:
        """Append one datagram given as a sequence of buffers; False if the ring is full."""
        n = 0
        for p in parts:
            n += len(p)
        need = _align8(4 + n)
        cap = self.capacity
        if need > cap // 2:
            raise ValueError(f"datagram of {n} bytes does not fit a ring of {cap}")
        head = self._my_head
        pos = head % cap
        waste = cap - pos if pos + need > cap else 0
        if head + waste + need - self._seen_tail > cap:
            self._seen_tail = int(self._tail[0])
            if head + waste + need - self._seen_tail > cap:
                return False
        data = self._data
        if waste:
            _LEN.pack_into(data, pos, _SKIP)
            head += waste
            pos = 0
        _LEN.pack_into(data, pos, n)
        at = pos + 4
        for p in parts:
            m = len(p)
            data[at:at + m] = p
            at += m
        head += need
        self._my_head = head
        self._head[0] = head          # publish: after the record is written
        return True

    def doorbell(self) -> int:
        """Producer, after ``push``: the consumer's wake port if it sleeps, else 0."""
        ctl = self._ctl
        return int(ctl[1]) if ctl[0] else 0

    def watched(self) -> np.ndarray | None:
        """Producer: the armed conditions ((offset, value) rows), or None."""
        k = int(self._ctl[2])
        return self._conds[:min(k, WATCH_MAX)] if k else None

    def fire(self) -> int:
        """Producer: a watched condition holds; disarm, and return where to ring."""
        ctl = self._ctl
        ctl[2] = 0
        return int(ctl[3]) or int(ctl[1])

    # -- consumer ------------------------------------------------------------------------
    def set_wake_port(self, port: int) -> None:
        """Consumer: where producers ring the doorbell (a UDP port on 127.0.0.1)."""
        self._ctl[1] = port

    def set_watch_port(self, port: int) -> None:
        """Consumer: where a watch's doorbell goes (0: the wake port), so a consumer can
        sleep on watched words alone while answers wait in its other socket."""
        self._ctl[3] = port

    def prepare_sleep(self) -> bool:
        """Consumer: announce a sleep; False (and no sleep announced) if data arrived."""
        self._ctl[0] = 1
        if int(self._head[0]) != self._my_tail:
            self._ctl[0] = 0
            return False
        return True

    def awake(self) -> None:
        self._ctl[0] = 0

    def arm(self, conds) -> None:
        """Consumer: wake me when one of ``conds`` ((offset, value) pairs, at most
        ``WATCH_MAX``) holds; the caller looks at the words itself after this."""
        k = len(conds)
        if not 0 < k <= WATCH_MAX:
            raise ValueError(f"a watch holds 1 to {WATCH_MAX} conditions, not {k}")
        self._conds[:k] = conds
        self._ctl[2] = k                 # armed: after the conditions are written

    def disarm(self) -> None:
        self._ctl[2] = 0

    def peek(self) -> memoryview | None:
        """A view of the oldest unconsumed datagram, or None if the ring is empty."""
        tail = self._my_tail
        if tail == self._seen_head:
            self._seen_head = int(self._head[0])
            if tail == self._seen_head:
                return None
        cap = self.capacity
        pos = tail % cap
        (n,) = _LEN.unpack_from(self._data, pos)
        if n == _SKIP:
            tail += cap - pos
            self._my_tail = tail
            self._tail[0] = tail
            return self.peek()
        self._pending = _align8(4 + n)
        return self._data[pos + 4:pos + 4 + n]

    def peek_many(self, limit: int) -> list[memoryview]:
        """Views of up to ``limit`` oldest unconsumed datagrams (``advance`` releases
        them all)."""
        views: list[memoryview] = []
        tail, head, cap, data = self._my_tail, self._seen_head, self.capacity, self._data
        while len(views) < limit:
            if tail == head:
                head = self._seen_head = int(self._head[0])
                if tail == head:
                    break
            pos = tail % cap
            (n,) = _LEN.unpack_from(data, pos)
            if n == _SKIP:
                tail += cap - pos
                continue
            views.append(data[pos + 4:pos + 4 + n])
            tail += _align8(4 + n)
        self._pending = tail - self._my_tail
        return views

    def advance(self) -> None:
        """Release the records returned by the last ``peek`` or ``peek_many``."""
        self._my_tail += self._pending
        self._pending = 0
        self._tail[0] = self._my_tail  # publish: after the record was used

    def discard_all(self) -> None:
        """Consumer: drop everything published so far (stale records of a previous owner)."""
        self._my_tail = self._seen_head = int(self._head[0])
        self._pending = 0
        self._tail[0] = self._my_tail

    def __len__(self) -> int:
        """Bytes published and not yet consumed."""
        return int(self._head[0]) - int(self._tail[0])

    def close(self) -> None:
        self._head = self._tail = self._ctl = self._conds = None
        self._data.release()
        self._data = None
        try:
            self.shm.close()
        except BufferError:
            pass
        if self.owner:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass


class Backoff:
    """Waiting without system calls first: spin ``spin`` seconds, then sleep ``min_sleep``
    doubling up to ``max_sleep``. ``reset()`` after any progress."""

    def __init__(self, spin: float = 50e-6, min_sleep: float = 20e-6,
                 max_sleep: float = 1e-3):
        self.spin, self.min_sleep, self.max_sleep = spin, min_sleep, max_sleep
        self._since = None
        self._sleep = min_sleep

    def reset(self) -> None:
        self._since = None
        self._sleep = self.min_sleep

    def pause(self, limit: float | None = None) -> float:
        """Wait a little (spin or sleep); returns the sleep length chosen (0 = spin)."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if now - self._since < self.spin:
            return 0.0
        s = self._sleep if limit is None else min(self._sleep, max(limit, 0.0))
        self._sleep = min(self._sleep * 2, self.max_sleep)
        return s


class WatchBell:
    """A host's socket for the doorbells of its watched words (the rings' ``watch
    port``), apart from ``answers_fd``, the socket its answers come to: a sleep can then
    end on a watched word alone, leaving answers unread until it ends."""

    def __init__(self, answers_fd: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self._alone, self._with_answers = select.poll(), select.poll()
        for poller in (self._alone, self._with_answers):
            poller.register(self.sock.fileno(), select.POLLIN)
        self._with_answers.register(answers_fd, select.POLLIN)

    def sleep(self, timeout: float, *, answers: bool) -> None:
        """Sleep in poll() up to ``timeout`` seconds, until a watch's doorbell or (with
        ``answers``) a datagram on the answers socket; the doorbells are taken."""
        (self._with_answers if answers else self._alone).poll(
            max(0, int(timeout * 1000 + 0.999)))
        try:
            while True:
                self.sock.recv(64)
        except BlockingIOError:
            pass

    def close(self) -> None:
        self.sock.close()


class DeviceShm:
    """The device side: its memory segment and ``slots`` ring pairs hosts can claim."""

    def __init__(self, mem_size: int, *, slots: int = 4, ring_bytes: int = RING_BYTES,
                 tag: str = ""):
        stem = f"{PREFIX}{tag}{os.getpid()}-{secrets.token_hex(4)}"
        # hosts flock the request ring's own file where POSIX shared memory is a file
        # system (Linux): nothing extra to leak if the device dies; else lock files
        self.lockdir = None if os.path.isdir(_SHM_DIR) else tempfile.mkdtemp(prefix=stem)
        self.memory_segment = shared_memory.SharedMemory(name=stem + "-mem", create=True,
                                                         size=max(mem_size, 1))
        self.mem_size = mem_size
        self.requests: list[Ring] = []
        self.responses: list[Ring] = []
        self.dropped_full = 0
        try:
            for i in range(slots):
                self.requests.append(Ring(f"{stem}-s{i}-req", ring_bytes))
                self.responses.append(Ring(f"{stem}-s{i}-resp", ring_bytes))
                if self.lockdir:
                    open(os.path.join(self.lockdir, f"slot{i}.lock"), "w").close()
        except BaseException:
            self.close()
            raise
        self.memory = self.memory_segment.buf[:mem_size]
        self._words = np.ndarray((mem_size // 8,), np.uint64, self.memory_segment.buf)

    @property
    def names(self) -> list[str]:
        """Every named segment this device created (for leak checks)."""
        return ([self.memory_segment.name] + [r.name for r in self.requests]
                + [r.name for r in self.responses])

    def info(self) -> dict:
        """What a host needs to attach (JSON-serialisable)."""
        return {"memory": self.memory_segment.name, "mem_size": self.mem_size,
                "lockdir": self.lockdir, "layout": LAYOUT,
                "slots": [[q.name, r.name] for q, r in zip(self.requests, self.responses)]}

    def send(self, slot: int, parts) -> int:
        """Put a datagram on slot's response ring (a full ring drops it, counted).
        Returns the host's doorbell port if it must be woken, else 0."""
        ring = self.responses[slot]
        if ring.push(parts):
            return ring.doorbell()
        self.dropped_full += 1
        return 0

    def watches_met(self) -> list[int]:
        """Where to ring (each host's watch port) for the hosts whose watch now holds,
        each disarmed: one of its conditions names an aligned word inside memory that
        has reached its value."""
        ports, words = [], self._words
        for ring in self.responses:
            conds = ring.watched()
            if conds is None:
                continue
            for offset, value in conds.tolist():
                i = offset >> 3
                if not offset & 7 and i < len(words) and int(words[i]) >= value:
                    ports.append(ring.fire())
                    break
        return ports

    def set_wake_port(self, port: int) -> None:
        for ring in self.requests:
            ring.set_wake_port(port)

    def prepare_sleep(self) -> bool:
        """Announce a sleep on every request ring; False if any has data (then awake)."""
        for ring in self.requests:
            if not ring.prepare_sleep():
                self.awake()
                return False
        return True

    def awake(self) -> None:
        for ring in self.requests:
            ring.awake()

    def close(self) -> None:
        if getattr(self, "memory", None) is not None:
            self.memory.release()
            self.memory = None
        for ring in self.requests + self.responses:
            ring.close()
        self.requests, self.responses = [], []
        self._words = None
        if self.memory_segment is not None:
            try:
                self.memory_segment.close()
            except BufferError:
                pass
            try:
                self.memory_segment.unlink()
            except FileNotFoundError:
                pass
            self.memory_segment = None
        if self.lockdir:
            shutil.rmtree(self.lockdir, ignore_errors=True)


class ShmClient:
    """The host side of one claimed ring pair (and the device's memory segment)."""

    def __init__(self, info: dict, wake_port: int = 0, watch_port: int = 0):
        layout = info.get("layout", 1)
        if layout != LAYOUT:
            raise ConnectionError(f"the device's rings are of layout {layout} and this "
                                  f"host's netdam speaks layout {LAYOUT}: run one netdam "
                                  "version on the node, or reach the device over UDP")
        self.info = info
        self._lock_fd = None
        self.slot = None
        for i, (req, resp) in enumerate(info["slots"]):
            lock = (os.path.join(info["lockdir"], f"slot{i}.lock") if info.get("lockdir")
                    else os.path.join(_SHM_DIR, req))
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._lock_fd, self.slot = fd, i
            break
        if self.slot is None:
            raise ConnectionError(f"all {len(info['slots'])} shared-memory slots of the "
                                  "device are taken")
        req, resp = info["slots"][self.slot]
        self.requests = Ring(req, create=False)
        self.requests.resume_producing()
        self.responses = Ring(resp, create=False)
        self.responses.discard_all()
        self.responses.set_wake_port(wake_port)
        self.responses.set_watch_port(watch_port)
        self.responses.disarm()          # a watch a dead previous owner left armed
        self._memory: shared_memory.SharedMemory | None = None
        self._views: list[np.ndarray] = []

    def send(self, parts) -> int:
        """Put a request on the ring: -1 if full, else the device's doorbell port if it
        must be woken, else 0."""
        ring = self.requests
        return ring.doorbell() if ring.push(parts) else -1

    def prepare_sleep(self) -> bool:
        return self.responses.prepare_sleep()

    def awake(self) -> None:
        self.responses.awake()

    def watch(self, conds) -> bool:
        """Arm a watch on device memory words (``Ring.arm``) and look at them once more:
        False (and nothing armed) if one holds already, so the caller must not sleep."""
        size = self.info["mem_size"]
        for offset, _ in conds:
            if offset & 7 or not 0 <= offset <= size - 8:
                raise ValueError(f"a watched word must be an aligned u64 inside the device's "
                                 f"{size} bytes, not at {offset:#x}")
        self.responses.arm(conds)
        buf = self._memory_buf()
        for offset, value in conds:
            if _U64.unpack_from(buf, offset)[0] >= value:
                self.responses.disarm()
                return False
        return True

    def unwatch(self) -> None:
        self.responses.disarm()

    def recv(self) -> memoryview | None:
        """The next response datagram (view valid until ``release``), or None."""
        return self.responses.peek()

    def release(self) -> None:
        self.responses.advance()

    def map_device_memory(self, region: dict, *, pkey: int = 0, offset: int = 0,
                          length: int | None = None, write: bool = True) -> np.ndarray:
        """A uint8 NumPy view of ``[base + offset, + length)`` of the device's memory,
        granted by ``region`` (a dict with key, base, length, rights, pkey as the device
        announced it). Raises PermissionError unless the protection rule in the module
        docstring holds."""
        rights = {r.upper() for r in region.get("rights", ())}
        need = "WRITE" if write else "READ"
        if need not in rights and not (write and "REMOTE_WRITE" in rights):
            raise PermissionError(f"region key 0x{region.get('key', 0):08X} does not grant "
                                  f"{need.lower()} (rights: {sorted(rights) or 'none'})")
        if pkey != region.get("pkey", 0):
            raise PermissionError(f"partition key {pkey} differs from the region's "
                                  f"{region.get('pkey', 0)}")
        rlen = region["length"]
        length = rlen - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > rlen:
            raise PermissionError(f"[{offset}, {offset + length}) lies outside the region "
                                  f"of {rlen} bytes")
        view = np.ndarray((length,), np.uint8, self._memory_buf(), region["base"] + offset)
        if not write:
            view.flags.writeable = False
        self._views.append(view)
        return view

    def _memory_buf(self) -> memoryview:
        """The device's memory segment, attached on first use."""
        if self._memory is None:
            self._memory = _attach(self.info["memory"])
        return self._memory.buf

    def close(self) -> None:
        """Detach (never unlinks: the device owns the segments) and free the slot."""
        self._views.clear()
        for ring in (self.requests, self.responses):
            ring.close()
        if self._memory is not None:
            try:
                self._memory.close()
            except BufferError:
                pass   # a caller still holds a mapped array; the mapping dies with it
            self._memory = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def leaked(prefix: str = PREFIX) -> list[str]:
    """Names of shared-memory segments starting with ``prefix`` (Linux: /dev/shm)."""
    try:
        return sorted(n for n in os.listdir(_SHM_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


__all__ = ["Ring", "Backoff", "DeviceShm", "ShmClient", "leaked", "ORDERED_CPU",
           "RING_BYTES", "PREFIX", "WATCH_MAX", "LAYOUT", "WatchBell"]
