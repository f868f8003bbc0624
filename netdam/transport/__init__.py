"""netdam.transport: how netdam datagrams move between endpoints.

Owns the sans-I/O reliability core (``reliability``: sequence numbers, acks,
retransmission, send window; SPEC §8), fault injection (``faults``), and the two thin
I/O paths: UDP for scale-out (``udp``) and shared-memory rings for scale-up (``shm``).
Submodules are imported on demand so that a process pays only for the path it uses.
"""

from netdam.transport.faults import FaultConfig, Injector, add_fault_arguments
from netdam.transport.reliability import Failed, RelConfig, Reliability, Retired

__all__ = ["FaultConfig", "Injector", "add_fault_arguments", "Failed", "RelConfig",
           "Reliability", "Retired"]
