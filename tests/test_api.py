"""netdam.init: a bad setting in the environment is refused by name before the rank
joins the job (no traceback from deep inside, nothing left registered)."""

import io
import sys

import pytest

from netdam.cluster import LocalCluster
from netdam.launch import run_hosts


@pytest.mark.timeout(90)
def test_bad_environment_settings_are_refused_by_name(tmp_path):
    script = tmp_path / "join.py"
    script.write_text("import netdam\nnetdam.init(timeout=10)\nprint('joined', flush=True)\n")
    cases = [("NETDAM_MTU", "abc", "NETDAM_MTU='abc': expected a datagram size in 256..65507"),
             ("NETDAM_MTU", "10", "NETDAM_MTU='10': expected a datagram size"),
             ("NETDAM_SPIN", "soon", "NETDAM_SPIN='soon': expected seconds"),
             ("NETDAM_CHECK_ARGS", "yes", "NETDAM_CHECK_ARGS='yes': expected 0 or 1")]
    with LocalCluster(nodes=1, mem_size=1 << 20) as c:
        for var, value, text in cases:
            out = io.StringIO()
            code = run_hosts(c, 1, [sys.executable, str(script)], out=out, err=out,
                             timeout=30, extra_env={var: value})
            got = out.getvalue()
            assert code != 0 and text in got and "joined" not in got, got
