"""``netdam demo``, the README's main job, end to end: a real local cluster runs every
collective and algorithm, each checked against NumPy, and says so; faults injected on
the wire leave every case correct; bad arguments are one readable line."""

import os
import subprocess
import sys

import pytest

from netdam.demo import plan

ENV = {**os.environ, "COLUMNS": "200"}


def _demo(*argv: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netdam", "demo", *argv],
                          capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.mark.timeout(180)
def test_the_main_job_runs_every_case_and_checks_it():
    p = _demo()
    assert p.returncode == 0, p.stdout + p.stderr
    n = len(plan(4, chain=True))
    assert f"all {n} cases correct" in p.stdout
    assert "FAIL" not in p.stdout and "Traceback" not in p.stderr
    for name in ("all_reduce", "chain", "tree", "hierarchical", "all_gather", "moe",
                 "barrier"):
        assert name in p.stdout, name


@pytest.mark.timeout(240)
def test_the_main_job_is_still_correct_with_faults_on_the_wire():
    p = _demo("--nodes", "2", "--devices-per-node", "1", "--loss", "0.02", "--dup",
              "0.02", "--reorder", "0.05", "--corrupt", "0.005", "--seed", "7", timeout=220)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"all {len(plan(2, chain=True))} cases correct" in p.stdout


def test_an_all_gather_case_gives_each_rank_its_share_of_the_size():
    """The demo sizes an all_gather as nccl-tests does: the gathered array."""
    cases = {(c["collective"], c["count"]) for c in plan(4, chain=True)}
    assert ("all_gather", 1024 // 4) in cases and ("reduce_scatter", 1024) in cases


@pytest.mark.parametrize("argv,text", [(["--nodes", "0"], "at least 1"),
                                       (["--loss", "2"], "loss")])
def test_bad_arguments_are_one_line(argv, text):
    p = _demo(*argv, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert text in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) <= 2, p.stderr
