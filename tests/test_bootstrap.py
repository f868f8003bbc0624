"""Every launcher's variables give the same Bootstrap; bad values are named."""

import pytest

from netdam.bootstrap import detect
from netdam.errors import UsageError


@pytest.mark.parametrize("env,source", [
    ({"NETDAM_RANK": "3", "NETDAM_WORLD_SIZE": "4", "NETDAM_LOCAL_RANK": "1",
      "NETDAM_LOCAL_WORLD_SIZE": "2", "NETDAM_COORDINATOR": "tcp://127.0.0.1:5555"}, "netdam"),
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
      "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "5554"}, "torchrun"),
    ({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
      "SLURM_NTASKS_PER_NODE": "2(x2)", "NETDAM_COORDINATOR": "tcp://127.0.0.1:5555"}, "slurm"),
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4",
      "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
      "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "5554"}, "openmpi"),
])
def test_launchers_agree(env, source):
    b = detect(env)
    assert (b.rank, b.world_size, b.local_rank, b.local_world_size, b.node) == (3, 4, 1, 2, 1)
    assert b.coordinator == "tcp://127.0.0.1:5555" and b.source == source


def test_netdam_variables_win_over_torchrun():
    env = {"NETDAM_RANK": "0", "NETDAM_WORLD_SIZE": "1", "RANK": "5", "WORLD_SIZE": "8"}
    assert detect(env).source == "netdam"


def test_explicit_node_variable():
    assert detect({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_NODEID": "3"}).node == 3


@pytest.mark.parametrize("env,match", [
    ({}, "no bootstrap environment"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x'"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "outside 0..1"),
    ({"RANK": "0"}, "WORLD_SIZE is not set"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "at least 1"),
])
def test_bad_environment_is_named(env, match):
    with pytest.raises(UsageError, match=match):
        detect(env)
