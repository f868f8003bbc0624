"""Where a host process learns who it is: rank, world size, node, coordinator.

Owns reading the bootstrap environment of every launcher netdam supports, in this order
of precedence (the first whose variables are set wins):

| source  | rank                 | world size           | local rank              | coordinator                 |
|---------|----------------------|----------------------|-------------------------|-----------------------------|
| netdam  | NETDAM_RANK          | NETDAM_WORLD_SIZE    | NETDAM_LOCAL_RANK       | NETDAM_COORDINATOR          |
| torchrun| RANK                 | WORLD_SIZE           | LOCAL_RANK              | MASTER_ADDR:MASTER_PORT     |
| Slurm   | SLURM_PROCID         | SLURM_NTASKS         | SLURM_LOCALID           | NETDAM_COORDINATOR or MASTER_ADDR/PORT |
| Open MPI| OMPI_COMM_WORLD_RANK | OMPI_COMM_WORLD_SIZE | OMPI_COMM_WORLD_LOCAL_RANK | same as Slurm            |

The node index comes from NETDAM_NODE, else GROUP_RANK (torchrun), SLURM_NODEID,
OMPI_COMM_WORLD_NODE_ID, else rank // local world size. Problems are UsageErrors that
say which variable is wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from netdam.errors import UsageError

#: (source, rank, size, local rank, local size) variable names, in precedence order
SOURCES = (
    ("netdam", "NETDAM_RANK", "NETDAM_WORLD_SIZE", "NETDAM_LOCAL_RANK", "NETDAM_LOCAL_WORLD_SIZE"),
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),
)
NODE_VARS = ("NETDAM_NODE", "GROUP_RANK", "SLURM_NODEID", "OMPI_COMM_WORLD_NODE_ID")
#: the coordinator listens this far above MASTER_PORT when only torchrun-style vars exist
COORDINATOR_PORT_OFFSET = 1


@dataclass(frozen=True)
class Bootstrap:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node: int
    coordinator: str | None  # tcp://host:port, or None when this process must start one
    source: str


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        if default is None:
            raise UsageError(f"{name} is not set")
        return default
    try:
        return int(raw.split("(")[0])  # SLURM_NTASKS_PER_NODE may read "2(x3)"
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not an integer") from None


def _coordinator(env: Mapping[str, str]) -> str | None:
    if env.get("NETDAM_COORDINATOR"):
        return env["NETDAM_COORDINATOR"]
    if env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        port = _int(env, "MASTER_PORT") + COORDINATOR_PORT_OFFSET
        return f"tcp://{env['MASTER_ADDR']}:{port}"
    return None


def detect(env: Mapping[str, str] | None = None) -> Bootstrap:
    """Read the bootstrap environment (``os.environ`` by default)."""
    env = os.environ if env is None else env
    for source, rank_v, size_v, lrank_v, lsize_v in SOURCES:
        if rank_v not in env:
            continue
        rank, size = _int(env, rank_v), _int(env, size_v)
        if size < 1:
            raise UsageError(f"{size_v}={size} must be at least 1")
        if not 0 <= rank < size:
            raise UsageError(f"{rank_v}={rank} outside 0..{size - 1} ({size_v}={size})")
        local_rank = _int(env, lrank_v, rank)
        local_size = _int(env, lsize_v, size)
        node = next((_int(env, v) for v in NODE_VARS if env.get(v)), None)
        if node is None:
            node = rank // max(local_size, 1)
        return Bootstrap(rank, size, local_rank, local_size, node, _coordinator(env), source)
    raise UsageError("no bootstrap environment: run under `netdam launch`, torchrun, srun or "
                     "mpirun, or set NETDAM_RANK, NETDAM_WORLD_SIZE and NETDAM_COORDINATOR")
