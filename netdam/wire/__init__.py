"""netdam.wire: the netdam packet at run time (SPEC §2-§8).

The codec, fragmentation and the enums are re-exported here. The scapy layer is not
imported with the package: every device, rank and coordinator imports the codec
through it, and scapy's import costs each of them about a fifth of a second at start.
``from netdam.wire import NetDAM`` (or ``import netdam.wire.scapy_layer``) imports the
layer, which registers it, so ``rdpcap`` dissects netdam datagrams from then on. When
scapy is loaded already as this package is first imported (``from scapy.all import
rdpcap`` then ``import netdam.wire``), the layer is registered at once, as it always was.
"""

import sys

from netdam.wire.codec import (FIELD_MAX, Packet, WireError, decode, encode, encode_into,
                               encode_parts, overhead)
from netdam.wire.fields import (CAPS, DTYPE_SIZE, HEADER_LEN, RESPONSE, UDP_PORT, Cap, DType,
                                Flag, Opcode, RedOp, Status)

if "scapy.layers.inet" in sys.modules:   # scapy is here already: registering is cheap
    from netdam.wire.scapy_layer import NetDAM


def __getattr__(name: str):
    """``NetDAM``, the scapy layer, imported (and registered) on first use (PEP 562)."""
    if name == "NetDAM":
        from netdam.wire.scapy_layer import NetDAM
        return NetDAM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FIELD_MAX", "Packet", "WireError", "decode", "encode", "encode_into",
           "encode_parts", "overhead", "CAPS", "DTYPE_SIZE", "HEADER_LEN", "RESPONSE",
           "UDP_PORT", "Cap", "DType", "Flag", "Opcode", "RedOp", "Status", "NetDAM"]
