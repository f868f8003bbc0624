"""netdam: a software NetDAM — emulated network-attached memory devices that are also
communication coprocessors.

The package holds everything around the device model (firmware_model): the wire codec
(netdam.wire), transports, the device process, host agents, collectives, the control
plane and the command line. The user-facing names are importable from here:
``netdam.init()`` (a host process joins its job and gets the world communicator) and
``netdam.LocalCluster`` (a whole emulated cluster as local processes). They load on
first use, so ``import netdam`` stays light.
"""

__version__ = "0.1.0"

_LAZY = {"init": ("netdam.api", "init"), "LocalCluster": ("netdam.cluster", "LocalCluster"),
         "Communicator": ("netdam.collectives.communicator", "Communicator"),
         "Agent": ("netdam.agent", "Agent"), "Addr": ("netdam.agent", "Addr")}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'netdam' has no attribute {name!r}")
