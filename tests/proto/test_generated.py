"""Every file derived from proto/netdam.toml is current, and the definition is coherent."""

import pytest

from netdam.wire import CAPS, Cap, Opcode
from netdam_proto import gen
from netdam_proto.definition import DefinitionError, load, parse
from netdam_proto import DEFINITION


def test_derived_files_are_current():
    assert gen.stale() == [], "run `python -m netdam_proto.gen`"


def test_header_offsets_add_up():
    d = load()
    ends = [f.offset + f.size for f in d.header]
    assert ends[-1] == d.protocol["header_len"] == 72
    assert [f.offset for f in d.header[1:]] == ends[:-1]


def test_spec_tables_match_definition():
    text = (DEFINITION.parent / "SPEC.md").read_text()
    d = load()
    for op in d.opcodes:
        assert f"| 0x{op.code:02X} | `{op.name}` |" in text
    for st in d.statuses:
        assert f"| {st.code} | `{st.name}` |" in text


def test_every_request_that_responds_names_its_response():
    for op, caps in CAPS.items():
        assert bool(caps & Cap.RESPONDS) == (op in (Opcode.READ, Opcode.ATOMIC_FADD,
                                                     Opcode.ATOMIC_CAS))


def test_inconsistent_definition_is_refused():
    text = DEFINITION.read_text().replace("header_len = 72", "header_len = 70")
    with pytest.raises(DefinitionError, match="add up"):
        parse(text)
