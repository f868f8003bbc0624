"""LocalCluster: a whole emulated cluster as local processes, started and stopped as one.

Owns the lifecycle of a cluster's processes: one coordinator, ``nodes x devices_per_node``
device processes (each registered with the coordinator under a fixed id), the bootstrap
environment for host processes, the cluster file that ``netdam status`` finds, and
teardown with no orphans (children die with their parent: PR_SET_PDEATHSIG on Linux) and
no leftover shared memory. ``netdam launch`` and ``netdam demo`` are built on it.

Isolation (RELIABILITY.md): everything binds loopback unless ``host=`` says otherwise
(a warning then); every cluster has its own random partition key and region key; with
``auth=True`` (or a key directory) the control plane requires CURVE keys, which the
cluster's own processes get through the environment; ``limits=`` sets the devices'
resource limits (``netdam.limits``).
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from netdam.control.client import ControlClient
from netdam.control.status import runtime_dir
from netdam.errors import NetdamError, UsageError
from netdam import limits as _limits
from netdam.control import auth as _auth
from netdam.transport.faults import FLAGS, fault_config
from netdam.transport.udp import check_mtu, warn_if_exposed

#: faults accepted as keyword arguments and forwarded to every member (see transport.faults)
FAULT_KEYS = tuple(FLAGS)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(cmd: list[str], *, cpu: int | None = None, **kw) -> subprocess.Popen:
    """Start a child that is terminated if this process dies, bound to ``cpu`` if given
    (before it runs anything)."""
    if os.name != "posix":
        return subprocess.Popen(cmd, **kw)

    def prepare() -> None:     # in the child between fork and exec
        _die_with_parent()
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
    return subprocess.Popen(cmd, preexec_fn=prepare, **kw)


def check_mtu_option(mtu: int | None) -> None:
    """A cluster's datagram size as asked for (None: the default): a UsageError outside
    what a datagram may be (LocalCluster's argument, a command's ``--mtu``)."""
    if mtu is not None:
        try:
            check_mtu(mtu)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def read_json_line(proc: subprocess.Popen, timeout: float, what: str) -> dict:
    """The first stdout line of ``proc`` as JSON, within ``timeout`` seconds."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    closed = False
    try:
        while time.monotonic() < deadline:
            if sel.select(timeout=0.1):
                line = proc.stdout.readline()
                if not line:
                    closed = True       # it closed its output: it is ending, if not over
                    break
                try:
                    return json.loads(line)
                except ValueError:
                    continue  # a log line before the announcement
            if proc.poll() is not None:
                break
    finally:
        sel.close()
    code = proc.poll()
    if code is None and closed:
        try:
            code = proc.wait(1.0)
        except subprocess.TimeoutExpired:
            pass
    if code is not None:
        raise NetdamError(f"{what} exited with {code} before it started (its error went to "
                          "stderr)")
    raise NetdamError(f"{what} did not start within {timeout:g} s")


@dataclass(frozen=True)
class DeviceInfo:
    id: int
    node: int
    endpoint: tuple[str, int]
    pid: int
    shm: dict | None    # the device's shared-memory names (see transport.shm)


class LocalCluster:
    """``with LocalCluster(nodes=2, devices_per_node=2, loss=0.01) as c: ...``

    Devices get ids 1..nodes*devices_per_node, node-major. ``c.env(rank)`` is the
    bootstrap environment of host ``rank``; ``c.launch(script, args)`` runs hosts.
    ``spin``: seconds a device (and, through NETDAM_SPIN, a host's agent) busy-polls
    before sleeping (default: their own defaults when the machine has a core per device
    and per host rank, else 0).
    """

    def __init__(self, nodes: int = 2, devices_per_node: int = 1, *, mem_size: int = 64 << 20,
                 mtu: int | None = None, pcap: str | os.PathLike | None = None,
                 dead_after: float = 3.0, shm: bool = True, host: str = "127.0.0.1",
                 start_timeout: float = 30.0, name: str | None = None,
                 auth: bool | str | os.PathLike | None = None, limits: dict | None = None,
                 spin: float | None = None, **faults):
        bad = set(faults) - set(FAULT_KEYS)
        if bad:
            raise UsageError(f"unknown LocalCluster options {sorted(bad)}; faults are "
                             f"{', '.join(FAULT_KEYS)}")
        if nodes < 1 or devices_per_node < 1:
            raise UsageError(f"need at least one node and one device per node, not "
                             f"{nodes} x {devices_per_node}")
        if mem_size < 1:
            raise UsageError(f"device memory of {mem_size} bytes: must be positive")
        check_mtu_option(mtu)
        self.nodes, self.devices_per_node = nodes, devices_per_node
        self.mem_size, self.mtu, self.shm, self.host = mem_size, mtu, shm, host
        self.dead_after, self.start_timeout = dead_after, start_timeout
        # Devices busy-poll after traffic only when the machine has a core for each
        # device and each host rank; otherwise a spinning device takes the core a woken
        # rank or device needs (on 2 cores, 4 spinning devices slowed small collectives)
        n = nodes * devices_per_node
        self.spin = spin if spin is not None else (None if 2 * n <= (os.cpu_count() or 1)
                                                   else 0.0)
        self.faults = fault_config(faults)
        self.pcap = Path(pcap) if pcap else None
        if self.pcap is not None and not self.pcap.parent.is_dir():
            raise UsageError(f"capture {self.pcap}: no such directory {self.pcap.parent}")
        self.limits = dict(limits or {})
        _limits.resolve(self.limits)            # unknown or bad limits: UsageError now
        self._auth_arg = auth
        self.auth: Path | None = None           # the key directory, once started
        self._auth_tmp: str | None = None
        self.name = name or f"netdam-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.coordinator: str | None = None
        self.pkey: int | None = None
        self.devices: list[DeviceInfo] = []
        self._procs: list[subprocess.Popen] = []
        self._cluster_file: Path | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def _cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "netdam", *args]

    def start(self) -> "LocalCluster":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _auth_argv(self) -> list[str]:
        return ["--auth", str(self.auth)] if self.auth else []

    def _start(self) -> None:
        warn_if_exposed(self.host, f"cluster {self.name}")
        if self._auth_arg is True:
            import tempfile
            self._auth_tmp = tempfile.mkdtemp(prefix="netdam-keys-")
            self.auth = _auth.create_keys(self._auth_tmp)
        elif self._auth_arg:
            self.auth = Path(self._auth_arg)
        coord = spawn(self._cmd("coordinator", "--host", self.host, "--dead-after",
                                str(self.dead_after), "--cluster", self.name,
                                *self._auth_argv()),
                      stdout=subprocess.PIPE, text=True)
        self._procs.append(coord)
        info = read_json_line(coord, self.start_timeout, "coordinator")
        self.coordinator, self.pkey = info["control"], info["pkey"]
        # one region over each device's memory, with the same (random) key everywhere so
        # chained and multicast packets, which keep their rkey, are valid on every hop
        self.rkey = secrets.randbits(32) | 1
        region = {"base": 0, "length": self.mem_size, "key": self.rkey, "pkey": self.pkey}
        pending = []
        for node in range(self.nodes):
            for k in range(self.devices_per_node):
                dev_id = 1 + node * self.devices_per_node + k
                cmd = self._cmd("device", "--id", str(dev_id), "--node", str(node),
                                "--host", self.host, "--port", "0",
                                "--mem-size", str(self.mem_size),
                                "--coordinator", self.coordinator,
                                "--regions", json.dumps([region]))
                if self.mtu:
                    cmd += ["--mtu", str(self.mtu)]
                if self.shm:
                    cmd += ["--shm"]
                if self.spin is not None:
                    cmd += ["--spin", str(self.spin)]
                cmd += self.faults.to_argv() + self._auth_argv()
                cmd += _limits.to_argv(self.limits)
                if self.pcap:
                    cmd += ["--pcap", str(self.pcap_part(f"dev{dev_id}"))]
                proc = spawn(cmd, stdout=subprocess.PIPE, text=True)
                self._procs.append(proc)
                pending.append((dev_id, node, proc))
        for dev_id, node, proc in pending:
            ann = read_json_line(proc, self.start_timeout, f"device {dev_id}")
            self.devices.append(DeviceInfo(dev_id, node, (ann["host"], ann["port"]),
                                           proc.pid, ann.get("shm")))
        self._wait_registered()
        self._write_cluster_file()

    def _wait_registered(self) -> None:
        client = self.control()
        try:
            deadline = time.monotonic() + self.start_timeout
            want = {d.id for d in self.devices}
            while time.monotonic() < deadline:
                got = {m["id"] for m in client.topology()["members"] if m["role"] == "device"}
                if want <= got:
                    break
                time.sleep(0.05)
            else:
                raise NetdamError(f"devices {sorted(want - got)} did not register in time")
            # group 1 = every device (the world's multicast group); wait until every
            # device has learnt it, so the first in-network collective finds it
            client.request("group", group=1, members=sorted(want))
            while time.monotonic() < deadline:
                counters = {m["id"]: m["counters"] for m in client.status()["members"]}
                if all(1 in counters.get(d, {}).get("groups", []) for d in want):
                    return
                time.sleep(0.05)
            raise NetdamError("devices did not learn the multicast group in time")
        finally:
            client.close()

    def control(self, timeout: float | None = None) -> ControlClient:
        """A control-plane client of this cluster (with its keys when authenticated)."""
        return ControlClient(self.coordinator, timeout=timeout or self.start_timeout,
                             auth=self.auth)

    def _write_cluster_file(self) -> None:
        d = runtime_dir()
        d.mkdir(parents=True, exist_ok=True)
        self._cluster_file = d / f"{self.name}.json"
        self._cluster_file.write_text(json.dumps({
            "name": self.name, "pid": os.getpid(), "control": self.coordinator,
            "devices": [d.__dict__ | {"endpoint": list(d.endpoint)} for d in self.devices]}))

    def pcap_part(self, member: str) -> Path:
        """The per-process capture file of ``member`` (merged into ``pcap`` at stop)."""
        return self.pcap.with_name(f".{self.pcap.name}.{member}.part")

    def stop(self) -> None:
        """Terminate every child (SIGTERM, then SIGKILL after 5 s): devices first, so they
        can say goodbye to the coordinator, then the coordinator. Idempotent."""
        devices, coordinator = self._procs[1:], self._procs[:1]
        for group in (devices, coordinator):
            for p in group:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5.0
            for p in group:
                try:
                    p.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5.0)
                if p.stdout:
                    p.stdout.close()
        self._procs.clear()
        self._cleanup_shm()
        if self._cluster_file is not None:
            self._cluster_file.unlink(missing_ok=True)
            self._cluster_file = None
        if self.pcap is not None and self.devices:
            self._merge_pcap()
        if self._auth_tmp is not None:
            import shutil
            shutil.rmtree(self._auth_tmp, ignore_errors=True)
            self._auth_tmp = None

    def _cleanup_shm(self) -> None:
        """Unlink shared memory a killed device could not unlink itself."""
        import shutil
        for d in self.devices:
            if not d.shm:
                continue
            names = [d.shm["memory"]] + [n for pair in d.shm["slots"] for n in pair]
            for name in names:
                try:
                    os.unlink(os.path.join("/dev/shm", name.lstrip("/")))
                except (FileNotFoundError, PermissionError):
                    pass
            shutil.rmtree(d.shm["lockdir"], ignore_errors=True)

    def _merge_pcap(self) -> None:
        from netdam.capture.pcap import merge
        parts = sorted(self.pcap.parent.glob(f".{self.pcap.name}.*.part"))
        if parts:
            merge(parts, self.pcap)
        for p in self.pcap.parent.glob(f".{self.pcap.name}.*.part*"):  # parts + notes
            p.unlink(missing_ok=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- hosts ------------------------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def env(self, rank: int, world_size: int) -> dict[str, str]:
        """Bootstrap environment of host ``rank`` (netdam's own variables)."""
        per_node = -(-world_size // self.nodes)
        node = min(rank // per_node, self.nodes - 1)
        env = {"NETDAM_RANK": str(rank), "NETDAM_WORLD_SIZE": str(world_size),
               "NETDAM_LOCAL_RANK": str(rank - node * per_node),
               "NETDAM_LOCAL_WORLD_SIZE": str(per_node), "NETDAM_NODE": str(node),
               "NETDAM_COORDINATOR": self.coordinator, "NETDAM_CLUSTER": self.name}
        if self.mtu:
            env["NETDAM_MTU"] = str(self.mtu)
        if self.spin is not None:               # hosts poll like their devices
            env["NETDAM_SPIN"] = str(self.spin)
        if self.pcap:
            env["NETDAM_PCAP"] = str(self.pcap_part(f"host{rank}"))
        env.update(self.faults.to_env())
        env.update(_auth.env_for(self.auth))
        return env

    def kill_device(self, dev_id: int, sig: int = signal.SIGKILL) -> None:
        """Kill one device process (for failure tests)."""
        d = next((d for d in self.devices if d.id == dev_id), None)
        if d is None:
            raise UsageError(f"no device {dev_id} in this cluster")
        os.kill(d.pid, sig)
