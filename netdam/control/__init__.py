"""netdam.control: the control plane over pyzmq.

The coordinator (``coordinator.py``) runs the sans-I/O ``ClusterState`` behind a ROUTER
socket and publishes membership events on a PUB socket; members talk to it through
``ControlClient`` (``client.py``). Nothing here touches the data path.
"""

from netdam.control.client import ControlClient, ControlError, ControlTimeout
from netdam.control.coordinator import Coordinator
from netdam.control.state import ClusterState

__all__ = ["ClusterState", "ControlClient", "ControlError", "ControlTimeout", "Coordinator"]
