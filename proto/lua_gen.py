"""Generator of the Wireshark Lua dissector (proto/netdam.lua) from proto/netdam.toml.

Owns the dissector's text; proto/gen.py writes and checks it with the other
derived files.
"""

from __future__ import annotations

from pathlib import Path

from netdam_proto.definition import Definition


def targets(d: Definition) -> dict[Path, str]:
    return {}
