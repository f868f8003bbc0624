"""netdam.capture: netdam traffic as pcap files, and the tools that read them.

Owns the capture side of the project: ``pcap`` (the per-process ``Capture`` sink that
transports call for every datagram, the reader and ``merge``), ``dissect`` (the
``netdam dissect`` and ``netdam dissector`` commands), ``frames`` (capture records decoded
as netdam packets), ``filters`` (the ``--filter`` expression language), ``flows`` (per
peer-pair statistics) and ``ladder`` (sequence diagrams in the terminal and as SVG).
The Wireshark dissector itself is generated into proto/netdam.lua by proto/lua_gen.py.
"""

from netdam.capture.pcap import Capture, CaptureError, capture_from_env, merge, read_frames

__all__ = ["Capture", "CaptureError", "capture_from_env", "merge", "read_frames"]
