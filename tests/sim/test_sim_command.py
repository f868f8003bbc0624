"""``netdam sim``: a table for one run, JSON that says what the run modeled, a sweep
with an SVG plot, and one readable line with exit status 2 for bad arguments."""

import json
import subprocess
import sys

import pytest

from netdam.cli import main


def test_one_run_prints_time_bandwidth_and_the_busiest_link(capsys):
    assert main(["sim", "all_reduce", "--nodes", "4", "--size", "64K", "--algo", "chain",
                 "--topology", "ring"]) == 0
    out = capsys.readouterr().out
    assert "busiest" in out and "dev" in out and "ok" in out


def test_json_holds_time_and_bandwidths(capsys):
    assert main(["sim", "all_reduce", "--nodes", "4", "--size", "1M", "--mode", "chunk",
                 "--json", "-"]) == 0
    [r] = json.loads(capsys.readouterr().out)
    assert r["config"]["nodes"] == 4 and r["config"]["mode"] == "chunk"
    assert r["time_us"] > 0 and r["busbw_GBps"] == pytest.approx(r["algbw_GBps"] * 1.5)
    assert r["correct"] is None and r["busiest_link"]["utilisation"] > 0


def test_sweep_writes_one_line_per_algorithm(tmp_path, capsys):
    svg = tmp_path / "t.svg"
    out = tmp_path / "r.json"
    assert main(["sim", "all_reduce", "--nodes", "4", "--sweep", "size", "-b", "4K", "-e",
                 "64K", "-f", "4", "--algo", "ring,chain,tree", "--mode", "sized",
                 "--plot", str(svg), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["config"]["algo"], r["config"]["size"]) for r in rows] == [
        (a, s) for a in ("ring", "chain", "tree") for s in (4096, 16384, 65536)]
    text = svg.read_text()
    assert text.startswith("<svg") and text.count("<polyline") == 3
    assert "chain" in text and ">64K<" in text      # size ticks as nccl-tests names sizes


def test_sweep_over_nodes(capsys):
    assert main(["sim", "broadcast", "--sweep", "nodes", "--node-counts", "2,4,8",
                 "--mode", "chunk", "--json", "-"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["config"]["nodes"] for r in rows] == [2, 4, 8]
    assert rows[0]["time_us"] < rows[2]["time_us"]


@pytest.mark.parametrize("argv,words", [
    (["--algo", "bogus"], "no algorithm 'bogus'"),
    (["--size", "3"], "multiple of 4"),
    (["--topology", "torus2d", "--nodes", "7", "--dims", "2x2"], "do not hold 7"),
    (["--loss", "0.1", "--mode", "chunk"], "need --mode packet"),
    (["--sweep", "size", "-b", "1M", "-e", "1K"], "-b <= -e"),
    (["--size", "lots"], "not a size"),
    (["--json", "/no-such-dir/x.json"], "--json /no-such-dir/x.json: no such directory"),
    (["--plot", "/no-such-dir/x.svg"], "--plot /no-such-dir/x.svg: no such directory"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, words):
    p = subprocess.run([sys.executable, "-m", "netdam", "sim", "all_reduce", *argv],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    err = " ".join(p.stderr.split())
    assert words in err and "Traceback" not in p.stderr
