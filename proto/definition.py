"""The wire definition loaded from proto/netdam.toml, as plain typed objects.

This module owns reading and validating the single source of truth; everything else
(codec tables, scapy layer, SPEC.md tables, dissector) is derived from ``load()``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache

from netdam_proto import DEFINITION

#: struct format letter and size of each field type
FIELD_TYPES = {"u8": ("B", 1), "u16": ("H", 2), "u32": ("I", 4), "u64": ("Q", 8)}

#: capability names an opcode may carry (SPEC §4)
CAPABILITIES = (
    "reads", "writes", "atomic", "reduce", "idempotent", "aligned",
    "payload", "responds", "forwards", "response",
)


@dataclass(frozen=True)
class HeaderField:
    name: str
    type: str
    offset: int
    doc: str
    enum: str | None = None
    flags: str | None = None

    @property
    def size(self) -> int:
        return FIELD_TYPES[self.type][1]


@dataclass(frozen=True)
class Entry:
    """One named code: an opcode, flag bit, status, dtype or reduce op."""

    name: str
    code: int
    doc: str = ""
    caps: tuple[str, ...] = ()
    response: str | None = None
    size: int = 0
    numpy: str = ""


@dataclass(frozen=True)
class Definition:
    protocol: dict
    header: tuple[HeaderField, ...]
    flags: tuple[Entry, ...]
    opcodes: tuple[Entry, ...]
    statuses: tuple[Entry, ...]
    dtypes: tuple[Entry, ...]
    redops: tuple[Entry, ...]
    opcode_ranges: dict = field(default_factory=dict)

    @property
    def struct_format(self) -> str:
        return "!" + "".join(FIELD_TYPES[f.type][0] for f in self.header)

    def table(self, kind: str) -> tuple[Entry, ...]:
        return {"flags": self.flags, "opcode": self.opcodes, "status": self.statuses,
                "dtype": self.dtypes, "redop": self.redops}[kind]


class DefinitionError(ValueError):
    """proto/netdam.toml is inconsistent."""


def _entries(raw: list[dict], kind: str) -> tuple[Entry, ...]:
    out = []
    for row in raw:
        code = row["bit"] if kind == "flags" else row["code"]
        caps = tuple(row.get("caps", ()))
        bad = set(caps) - set(CAPABILITIES)
        if bad:
            raise DefinitionError(f"{kind} {row['name']}: unknown capabilities {sorted(bad)}")
        out.append(Entry(name=row["name"], code=code, doc=row.get("doc", ""), caps=caps,
                         response=row.get("response"), size=row.get("size", 0),
                         numpy=row.get("numpy", "")))
    names = [e.name for e in out]
    codes = [e.code for e in out]
    if len(set(names)) != len(names) or len(set(codes)) != len(codes):
        raise DefinitionError(f"{kind}: duplicate names or codes")
    return tuple(out)


def parse(text: str) -> Definition:
    raw = tomllib.loads(text)
    fields, offset = [], 0
    for row in raw["header"]:
        if row["type"] not in FIELD_TYPES:
            raise DefinitionError(f"header field {row['name']}: unknown type {row['type']}")
        f = HeaderField(name=row["name"], type=row["type"], offset=offset, doc=row["doc"],
                        enum=row.get("enum"), flags=row.get("flags"))
        fields.append(f)
        offset += f.size
    proto = raw["protocol"]
    if offset != proto["header_len"]:
        raise DefinitionError(f"header fields add up to {offset} bytes, header_len says "
                              f"{proto['header_len']}")
    d = Definition(protocol=proto, header=tuple(fields),
                   flags=_entries(raw["flags"], "flags"),
                   opcodes=_entries(raw["opcode"], "opcode"),
                   statuses=_entries(raw["status"], "status"),
                   dtypes=_entries(raw["dtype"], "dtype"),
                   redops=_entries(raw["redop"], "redop"),
                   opcode_ranges=raw.get("opcode_ranges", {}))
    opnames = {o.name for o in d.opcodes}
    for o in d.opcodes:
        if o.response and o.response not in opnames:
            raise DefinitionError(f"opcode {o.name}: response {o.response} is not an opcode")
    return d


@cache
def load() -> Definition:
    """The definition shipped with this netdam (proto/netdam.toml)."""
    return parse(DEFINITION.read_text())
