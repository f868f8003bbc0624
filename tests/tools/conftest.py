"""What the tools' tests share: a tool refused a bad argument in one readable line."""

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
