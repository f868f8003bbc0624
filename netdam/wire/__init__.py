"""netdam.wire: the netdam packet at run time (SPEC §2-§8).

Importing it registers the scapy layer, so ``rdpcap`` dissects netdam datagrams.
The codec, fragmentation and the enums are re-exported here.
"""

from netdam.wire.codec import (FIELD_MAX, Packet, WireError, decode, encode, encode_into,
                               encode_parts, overhead)
from netdam.wire.fields import (CAPS, DTYPE_SIZE, HEADER_LEN, RESPONSE, UDP_PORT, Cap, DType,
                                Flag, Opcode, RedOp, Status)
from netdam.wire.scapy_layer import NetDAM

__all__ = ["FIELD_MAX", "Packet", "WireError", "decode", "encode", "encode_into",
           "encode_parts", "overhead", "CAPS", "DTYPE_SIZE", "HEADER_LEN", "RESPONSE",
           "UDP_PORT", "Cap", "DType", "Flag", "Opcode", "RedOp", "Status", "NetDAM"]
