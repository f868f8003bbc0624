"""``netdam soak``: mixed collectives and primitives under injected faults, checked.

Owns the soak run and its checker. It starts a LocalCluster with fault injection (the
usual ``--loss --dup --reorder --corrupt --delay --seed`` flags; a default mix when none
is given), runs one worker per rank (``python -m netdam.soak worker``) that loops over
all_reduce (every algorithm), all_gather and broadcast (on the hosts and through the
devices' multicast), reduce_scatter, barrier and the
agent's primitives (write/read, atomic_add, compare_swap, put_signal/wait_signal), each
checked against its expected value, for the given time. Rank 0 decides when to stop
(a broadcast at the top of every round), so every rank runs the same rounds.

The checker passes only with zero wrong results, zero errors, zero lost operations
(started but neither checked nor failed), flat memory (the RSS of every process of the
cluster without its shared memory, sampled after a warm-up round and at the end, grew by
less than the slack) and
every retransmission accounted for (the retransmission ledger below). Exit status 0
only when every check passed; ``--json FILE`` keeps the figures.

The retransmission ledger: every retransmitted datagram (hosts' and devices' reliability
cores) is either seen by a device (``rx_retransmits``), or was dropped or corrupted by
an injector (counted apart for retransmissions), or duplicated by one (seen twice), or
lost where the kernel or a full shared-memory ring dropped it (counted too). So
``sent - lost - corrupted + duplicated - seen`` must lie between 0 and those counted
kernel and ring drops.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time

#: the fault mix used when the command line names none
DEFAULT_FAULTS = {"loss": 0.01, "dup": 0.005, "reorder": 0.01, "corrupt": 0.005, "seed": 1}
WARM_ROUNDS = 2


def rss_kib(pid: int | None = None) -> int:
    """Resident set size of ``pid`` (default: this process) in KiB, from /proc, without
    its shared memory (``RssShmem``): the device memories and rings a process maps become
    resident as they are touched, which is no leak (on one node every rank touches more of
    them over a run), while a leak grows the process's own pages (``RssAnon``)."""
    fields = {}
    try:
        with open(f"/proc/{pid or 'self'}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "RssShmem:")):
                    name, value = line.split()[:2]
                    fields[name] = int(value)
    except OSError:
        pass
    return fields.get("VmRSS:", 0) - fields.get("RssShmem:", 0)


# -- the worker (one per rank) -----------------------------------------------------------
def _primitives(comm, i: int, state: dict) -> int:
    """One round of checked primitives on the next rank's home device; returns how
    many operations ran. Raises AssertionError on a wrong result."""
    import numpy as np
    from netdam.agent import Addr
    a, n = comm.agent, comm.size
    peer = comm.areas[(comm.rank + 1) % n].device
    mem = min(a.links[d].info["mem_size"] for d in a.links)
    base = Addr(peer, mem - (1 << 20) + comm.rank * (64 << 10))
    rng = np.random.default_rng(i * 7919 + comm.rank)
    data = rng.integers(0, 256, 1 + (i * 997) % 20000, dtype=np.uint8).tobytes()
    a.write(base + 4096, data)
    assert bytes(a.read(base + 4096, len(data))) == data, "read back differs"
    old = a.atomic_add(base, 3)
    assert old == state.get("counter", 0), f"atomic_add old {old}"
    state["counter"] = old + 3
    swapped = a.compare_swap(base + 8, state.get("cas", 0), i + 1)
    assert swapped == state.get("cas", 0), f"compare_swap old {swapped}"
    state["cas"] = i + 1
    a.put_signal(base + 64, data[:256], base + 16, 1)
    got = a.wait_signal(base + 16, i + 1, timeout=20)
    assert got == i + 1 and bytes(a.read(base + 64, len(data[:256]))) == data[:256]
    return 6


def _collectives(comm, i: int):
    """(name, run) pairs of checked collectives for round ``i``."""
    import numpy as np
    n, r = comm.size, comm.rank
    size = (256, 16 << 10, 64 << 10)[i % 3]
    base = np.arange(size, dtype=np.float32) % 251
    algos = ["ring", "recursive_doubling", None]
    if comm.offload_ok:
        algos += ["chain", "tree"]
    if comm.load_store_ok:    # one node (None takes it too, at these sizes)
        algos.append("load_store")
    algo = algos[i % len(algos)]
    spread = "multicast" if comm.offload_ok and i % 2 else None   # else the host's
    total = sum(base + k + i for k in range(n))

    def all_reduce():
        got = comm.all_reduce(base + r + i, algo=algo)
        assert np.array_equal(got, total), f"all_reduce ({algo}) differs"

    def all_gather():
        got = comm.all_gather(np.full(64, r * 1000 + i, np.int64), algo=spread)
        want = np.repeat((np.arange(n) * 1000 + i)[:, None], 64, axis=1)
        assert np.array_equal(got, want), "all_gather differs"

    def reduce_scatter():
        x = np.arange(n * 32, dtype=np.int64) + r
        got = comm.reduce_scatter(x)
        want = (np.arange(n * 32, dtype=np.int64) * n + n * (n - 1) // 2)[r * 32:(r + 1) * 32]
        assert np.array_equal(got, want), "reduce_scatter differs"

    def broadcast():
        root = i % n
        x = np.full(1000, i if r == root else -1, np.int32)
        comm.broadcast(x, root=root, algo=spread)
        assert (x == i).all(), "broadcast differs"

    return [(f"all_reduce {algo or 'auto'}", all_reduce),
            (f"all_gather {spread or 'auto'}", all_gather),
            ("reduce_scatter", reduce_scatter), (f"broadcast {spread or 'auto'}", broadcast),
            ("barrier", comm.barrier)]


def worker(seconds: float) -> int:
    """Run rounds until rank 0 says stop; print one JSON summary line."""
    import numpy as np
    import netdam
    from netdam.errors import NetdamError
    comm = netdam.init(timeout=30)
    out = {"rank": comm.rank, "started": 0, "ok": 0, "wrong": 0, "errors": 0,
           "messages": [], "rounds": 0}
    end = time.monotonic() + seconds
    state: dict = {}
    i = 0
    try:
        while True:
            go = np.array([1 if time.monotonic() < end or i < WARM_ROUNDS else 0], np.int32)
            comm.broadcast(go, root=0)
            if not go[0]:
                break
            steps = _collectives(comm, i) + [("primitives", lambda: _primitives(comm, i, state))]
            for name, run in steps:
                out["started"] += 1
                try:
                    extra = run()
                    out["ok"] += 1
                    if isinstance(extra, int):        # primitives: several operations
                        out["started"] += extra - 1
                        out["ok"] += extra - 1
                except AssertionError as exc:
                    out["wrong"] += 1
                    out["messages"].append(f"round {i} {name}: {exc}")
            i += 1
            if i == WARM_ROUNDS:
                out["rss_start_kib"] = rss_kib()
                print(json.dumps({"warm": comm.rank}), flush=True)
    except NetdamError as exc:
        out["errors"] += 1
        out["messages"].append(f"round {i}: {type(exc).__name__}: {exc}")
    out["rounds"] = i
    try:                        # quiesce: nothing of ours in flight when counting
        comm.close()
        deadline = time.monotonic() + 5.0
        while not comm.agent.rel.idle() and time.monotonic() < deadline:
            comm.agent.progress(0.01)
    except NetdamError as exc:
        out["errors"] += 1
        out["messages"].append(f"closing: {type(exc).__name__}: {exc}")
    out["rss_end_kib"] = rss_kib()
    out["rel"] = dict(comm.agent.rel.counters)
    out["agent"] = dict(comm.agent.counters)
    out["faults"] = dict(comm.agent.udp.injector.counters)
    out["kernel_drops"] = comm.agent.udp.kernel_drops() or 0
    print(json.dumps({"summary": out}), flush=True)
    return 0 if not (out["errors"] or out["wrong"]) else 1


# -- the parent ----------------------------------------------------------------------------
class _Lines(io.TextIOBase):
    """Collects the workers' prefixed output lines; notices when all are warm."""

    def __init__(self, ranks: int):
        self.lines: list[str] = []
        self.warm: set[int] = set()
        self.all_warm = threading.Event()
        self.ranks = ranks
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        with self._lock:
            for line in s.splitlines():
                self.lines.append(line)
                body = line.split("] ", 1)[-1]
                if body.startswith('{"warm"'):
                    self.warm.add(json.loads(body)["warm"])
                    if len(self.warm) == self.ranks:
                        self.all_warm.set()
        return len(s)

    def summaries(self) -> list[dict]:
        out = []
        for line in self.lines:
            body = line.split("] ", 1)[-1]
            if body.startswith('{"summary"'):
                out.append(json.loads(body)["summary"])
        return sorted(out, key=lambda s: s["rank"])


def _device_counters(cluster) -> dict[int, dict]:
    client = cluster.control(5)
    try:
        return {m["id"]: m["counters"] for m in client.status()["members"]
                if m["role"] == "device"}
    finally:
        client.close()


def _ledger(summaries: list[dict], devices: dict[int, dict]) -> dict:
    def dev(key):
        return sum(int(c.get(key) or 0) for c in devices.values())
    sent = sum(s["rel"]["retransmitted"] for s in summaries) + dev("rel_retransmitted")
    injected = {k: sum(s["faults"].get(k, 0) for s in summaries) + dev(f"fault_{k}")
                for k in ("lost_retransmits", "corrupted_retransmits",
                          "duplicated_retransmits", "lost", "corrupted", "duplicated",
                          "reordered")}
    seen = dev("rx_retransmits")
    vanished = sent - injected["lost_retransmits"] - injected["corrupted_retransmits"] \
        + injected["duplicated_retransmits"] - seen
    allowance = dev("udp_kernel_drops") + dev("shm_dropped_full") + \
        sum(s["agent"].get("shm_full", 0) + s.get("kernel_drops", 0) for s in summaries)
    return {"retransmitted": sent, "seen": seen, "injected": injected,
            "vanished": vanished, "kernel_or_ring_drops": allowance,
            "balanced": 0 <= vanished <= allowance}


def soak(seconds: float, nodes: int, devices_per_node: int, faults: dict, *,
         rss_slack_kib: int, mem_size: int = 32 << 20) -> dict:
    from netdam.cluster import LocalCluster
    from netdam.launch import run_hosts
    ranks = nodes * devices_per_node
    report: dict = {"seconds": seconds, "nodes": nodes, "ranks": ranks, "faults": faults}
    with LocalCluster(nodes=nodes, devices_per_node=devices_per_node, mem_size=mem_size,
                      dead_after=10.0, **faults) as c:
        pids = {"coordinator": c.pids[0]} | {f"device{d.id}": d.pid for d in c.devices}
        lines = _Lines(ranks)
        rss_start: dict[str, int] = {}
        rss_mid: dict[str, int] = {}

        def sample_when_warm():
            if lines.all_warm.wait(seconds + 120):
                t = time.monotonic()
                rss_start.update({k: rss_kib(p) for k, p in pids.items()})
                time.sleep(max(0.0, (seconds - (t - t0)) / 2))
                rss_mid.update({k: rss_kib(p) for k, p in pids.items()})
        t0 = time.monotonic()
        sampler = threading.Thread(target=sample_when_warm, daemon=True)
        sampler.start()
        code = run_hosts(c, ranks, [sys.executable, "-m", "netdam.soak", "worker",
                                    str(seconds)], out=lines, err=lines,
                         timeout=seconds + 180)
        report["wall_s"] = round(time.monotonic() - t0, 1)
        sampler.join(1.0)
        rss_end = {k: rss_kib(p) for k, p in pids.items()}
        time.sleep(1.5)                          # the devices' last heartbeats
        devices = _device_counters(c)
    summaries = lines.summaries()
    report["exit_code"] = code
    report["summaries"] = summaries
    report["rounds"] = min((s["rounds"] for s in summaries), default=0)
    for key in ("started", "ok", "wrong", "errors"):
        report[key] = sum(s[key] for s in summaries)
    report["lost"] = report["started"] - report["ok"] - report["wrong"] - report["errors"] \
        + (ranks - len(summaries))     # a rank that never reported lost everything
    report["messages"] = [m for s in summaries for m in s["messages"]] + \
        ([] if code == 0 else [f"a worker exited with {code}"]) + \
        ([ln for ln in lines.lines if "Traceback" in ln or "Error" in ln][:5]
         if len(summaries) < ranks else [])
    rss = {f"rank{s['rank']}": (s.get("rss_start_kib", 0), s["rss_end_kib"])
           for s in summaries}
    rss |= {k: (rss_start.get(k, 0), rss_end[k]) for k in pids}
    report["rss_kib"] = rss
    report["rss_mid_kib"] = rss_mid
    report["rss_flat"] = bool(rss) and all(0 < a and b - a < rss_slack_kib
                                           for a, b in rss.values())
    report["ledger"] = _ledger(summaries, devices) if summaries else {"balanced": False}
    report["device_naks"] = {d: c.get("naks", {}) for d, c in devices.items()}
    # receive buffers a device had to give up because something still referred to them
    report["rx_retained"] = sum(int(c.get("rx_pool_retained") or 0) for c in devices.values())
    report["clean"] = (code == 0 and report["wrong"] == 0 and report["errors"] == 0
                       and report["lost"] == 0 and report["rss_flat"]
                       and report["ledger"]["balanced"] and report["ok"] > 0
                       and report["rx_retained"] == 0)
    return report


def render(report: dict) -> None:
    from rich.table import Table

    from netdam.ui import report_console
    led = report["ledger"]
    inj = led.get("injected", {})
    t = Table(title=f"netdam soak: {report['seconds']:g} s, {report['ranks']} ranks on "
                    f"{report['nodes']} nodes, faults "
                    + ", ".join(f"{k}={v}" for k, v in report["faults"].items()))
    for col in ("figure", "value", "check"):
        t.add_column(col, justify="right" if col == "value" else "left")

    def row(name, value, ok=None):
        mark = "" if ok is None else ("[green]ok[/]" if ok else "[red]FAIL[/]")
        t.add_row(name, f"{value:,}" if isinstance(value, int) else str(value), mark)
    row("rounds (every rank)", report["rounds"])
    row("operations checked", report["ok"], report["ok"] > 0)
    row("wrong results", report["wrong"], report["wrong"] == 0)
    row("errors", report["errors"], report["errors"] == 0)
    row("lost operations", report["lost"], report["lost"] == 0)
    row("faults injected (lost / corrupted / duplicated / reordered)",
        " / ".join(str(inj.get(k, 0)) for k in ("lost", "corrupted", "duplicated",
                                                  "reordered")))
    row("retransmissions sent", led.get("retransmitted", 0))
    row("  seen by devices", led.get("seen", 0))
    row("  lost / corrupted / duplicated by injection",
        " / ".join(str(inj.get(k, 0)) for k in ("lost_retransmits", "corrupted_retransmits",
                                                  "duplicated_retransmits")))
    row("  unaccounted (<= kernel or ring drops "
        f"{led.get('kernel_or_ring_drops', 0)})", led.get("vanished", "-"),
        led.get("balanced", False))
    row("device receive buffers kept past serving", report.get("rx_retained", 0),
        report.get("rx_retained", 0) == 0)
    for name, (a, b) in report["rss_kib"].items():
        row(f"RSS {name} (KiB, start -> end)", f"{a:,} -> {b:,}", 0 < a and b - a <
            report["rss_slack_kib"])
    console = report_console()
    console.print(t)
    for m in report["messages"][:10]:
        console.print(f"[red]{m}[/]", highlight=False)
    console.print("[bold green]clean[/]" if report["clean"] else "[bold red]NOT clean[/]")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from netdam.transport.faults import add_fault_arguments
    p.add_argument("--minutes", type=float, default=1.0, help="how long (default 1)")
    p.add_argument("--seconds", type=float, default=None, help="how long, in seconds "
                   "(overrides --minutes)")
    p.add_argument("--nodes", type=int, default=3, help="nodes (default 3)")
    p.add_argument("--devices-per-node", type=int, default=1, metavar="K")
    p.add_argument("--rss-slack-mib", type=float, default=24.0,
                   help="largest RSS growth of any process that still counts as flat")
    p.add_argument("--json", metavar="FILE", help="write the figures here")
    add_fault_arguments(p)


def run(args: argparse.Namespace) -> int:
    from netdam.errors import UsageError
    from netdam.transport.faults import given_faults
    from netdam.ui import check_outputs, write_output
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    if seconds <= 0:
        raise UsageError(f"the soak needs a positive duration, not {seconds:g} s")
    if args.nodes < 2 and args.devices_per_node < 2:
        raise UsageError("the soak needs at least two ranks (--nodes or --devices-per-node)")
    faults = given_faults(args) or dict(DEFAULT_FAULTS)
    if args.rss_slack_mib < 0:
        raise UsageError(f"--rss-slack-mib must not be negative, not {args.rss_slack_mib:g}")
    check_outputs(args, "json")
    slack = int(args.rss_slack_mib * 1024)
    report = soak(seconds, args.nodes, args.devices_per_node, faults, rss_slack_kib=slack)
    report["rss_slack_kib"] = slack
    report["command"] = "netdam soak " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 \
        else "netdam soak"
    render(report)
    if args.json:
        write_output("json", args.json, json.dumps(report, indent=1))
    return 0 if report["clean"] else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        sys.exit(worker(float(sys.argv[2])))
    print("usage: netdam soak [--minutes M | --seconds S] (this module runs workers)",
          file=sys.stderr)
    sys.exit(2)
