"""What the tools' tests share: a tool run to its JSON figures, a tool that refused a bad
argument in one readable line, and the bad arguments every tool that runs a job of
float32 ranks (``rankjob.check_job``) refuses."""

import json
import subprocess
import sys

import pytest


@pytest.fixture
def refused():
    """``refused(tool, args, msg)``: ``python TOOL ARGS`` exits 2 with ``msg`` on stderr
    and no traceback."""
    def check(tool, args: list[str], msg: str) -> None:
        p = subprocess.run([sys.executable, str(tool), *args], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 2 and msg in p.stderr, p.stderr
        assert "Traceback" not in p.stderr, p.stderr
    return check


@pytest.fixture
def ran(tmp_path):
    """``ran(tool, args)``: ``python TOOL ARGS --json FILE`` exits 0 (within 140 s);
    returns what it printed and the figures it wrote."""
    def run(tool, args: list[str]) -> tuple[str, dict]:
        out = tmp_path / "figures.json"
        p = subprocess.run([sys.executable, str(tool), *args, "--json", str(out)],
                           capture_output=True, text=True, timeout=140)
        assert p.returncode == 0, p.stderr
        return p.stdout, json.loads(out.read_text())
    return run


@pytest.fixture(params=[(["--count", "0"], "--count must be at least 1"),
                        (["--nodes", "1"], "--nodes must be at least 2"),
                        (["--size", "lots"], "not a size"),
                        (["--size", "6"], "--size must be a multiple of 4")],
                ids=["count", "nodes", "size-text", "size-odd"])
def bad_job_args(request):
    """``(args, message)``: a bad argument of a job tool and what its refusal says."""
    return request.param
