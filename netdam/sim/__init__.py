"""netdam.sim: a discrete-event simulator of a NetDAM fabric at scale.

Owns the simulated world: virtual time (engine), links and topologies, the network that
moves datagrams through them, devices (the unchanged ``firmware_model.Device`` in the
per-packet mode, a model of it in the timing-only modes), hosts that run the unchanged
collective generators of ``netdam.collectives``, the closed-form models it is checked
against, and the ``netdam sim`` command. Entry point: ``simulate(SimConfig(...))``.
"""

from netdam.sim.engine import SimError
from netdam.sim.run import ALGORITHMS, COLLECTIVES, MODES, SimConfig, SimResult, simulate

__all__ = ["ALGORITHMS", "COLLECTIVES", "MODES", "SimConfig", "SimError", "SimResult",
           "simulate"]
