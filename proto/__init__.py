"""netdam_proto: locates the files of proto/, the language-neutral wire format.

proto/ holds the one machine-readable definition of the netdam packet (netdam.toml),
the prose specification (SPEC.md), the Wireshark Lua dissector and the golden vectors.
It installs as the package ``netdam_proto`` so that an installed netdam finds its own
definition; this module only says where the files are.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFINITION = HERE / "netdam.toml"
SPEC = HERE / "SPEC.md"
DISSECTOR = HERE / "netdam.lua"
GOLDEN = HERE / "golden.json"

__all__ = ["HERE", "DEFINITION", "SPEC", "DISSECTOR", "GOLDEN"]
