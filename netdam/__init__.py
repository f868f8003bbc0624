"""netdam: a software NetDAM — emulated network-attached memory devices that are also
communication coprocessors.

The package holds everything around the device model (firmware_model): the wire codec
(netdam.wire), transports, the device process, host agents, collectives, the control
plane, the simulator and the command line.
"""

__version__ = "0.1.0"
