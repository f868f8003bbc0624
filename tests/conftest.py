"""Fixtures shared by the tests that run host programs on a real local cluster."""

import io
import sys

import pytest

from netdam.launch import run_hosts


@pytest.fixture
def run_job(tmp_path):
    """``run_job(cluster, script, n, job=..., env=None, timeout=90)``: run the Python
    ``script`` text as n host ranks of ``cluster``; assert every rank exited 0 and printed
    ``rank R ok``; return everything the ranks printed."""
    def run(cluster, script: str, n: int, *, job: str, env: dict | None = None,
            timeout: float = 90) -> str:
        path = tmp_path / f"{job}.py"
        path.write_text(script)
        out = io.StringIO()
        code = run_hosts(cluster, n, [sys.executable, str(path)], out=out, err=out,
                         timeout=timeout, extra_env={"NETDAM_JOB": job, **(env or {})})
        text = out.getvalue()
        assert code == 0, text
        for r in range(n):
            assert f"rank {r} ok" in text, text
        return text
    return run
