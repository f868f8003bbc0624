"""What the tools' tests share: a tool run to its JSON figures, and a tool that refused
a bad argument in one readable line."""

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
