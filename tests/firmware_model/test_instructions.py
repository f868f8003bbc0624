"""The instruction table and user-defined instructions. Invariant: every request opcode of
the wire definition is one row carrying exactly its CAPS bits, and a user instruction gets
the same protection checks as a built-in before its handler runs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import Rig, is_nak
from crc32c import crc32c

from firmware_model import InstructionError, Out
from firmware_model.instructions import BUILTINS, InstructionTable, need_for
from firmware_model.memory import Rights
from netdam.wire.fields import CAPS, Cap, DType, Opcode, Status

XOR = 0xC1
CRC = 0xC2


def test_one_row_per_request_opcode_with_its_caps():
    table = InstructionTable()
    for op, caps in CAPS.items():
        row = table.get(op)
        if caps & Cap.RESPONSE:
            assert row is None
        else:
            assert row.caps == caps and row.name == op.name
    assert table.get(Opcode.FENCE).implied and len(BUILTINS) == 12


def test_rights_follow_caps():
    assert need_for(Cap.READS) == (Rights.READ,)
    assert need_for(Cap.READS | Cap.WRITES | Cap.REDUCE) == (Rights.REDUCE,)
    assert need_for(Cap.ATOMIC | Cap.READS) == (Rights.ATOMIC,)
    assert Rights.REMOTE_WRITE in need_for(Cap.WRITES)


@pytest.mark.parametrize("opcode", [0x00, 0x01, 0xBF, 0xFF, 0x100])
def test_register_rejects_opcodes_outside_the_user_range(opcode):
    with pytest.raises(ValueError):
        InstructionTable().register_instruction(opcode, lambda c, p: [], Cap(0))


def test_register_rejects_response_caps_and_duplicates():
    t = InstructionTable()
    with pytest.raises(ValueError):
        t.register_instruction(0xC0, lambda c, p: [], Cap.RESPONSE)
    t.register_instruction(0xC0, lambda c, p: [], Cap(0))
    with pytest.raises(ValueError):
        t.register_instruction(0xC0, lambda c, p: [], Cap(0))
    t.register_instruction(0xC0, lambda c, p: [], Cap(0), replace=True)
    with pytest.raises(ValueError):
        t.register_instruction(0xC3, "not callable", Cap(0))


def xor_with_constant(ctx, pkt):
    """XOR every uint64 of [addr, addr + length) with imm; imm 0 is refused."""
    if pkt.imm == 0:
        raise InstructionError(Status.USER_ERROR, "constant must be nonzero")
    words = ctx.array(np.uint64, pkt.addr, pkt.length // 8)
    words ^= np.uint64(pkt.imm)
    return []


def crc_of_range(ctx, pkt):
    value = crc32c(ctx.mem(pkt.addr, pkt.length))
    return [ctx.reply(pkt, Opcode.READ_RESP, value.to_bytes(4, "little"), length=4)]


@pytest.fixture
def user_rig():
    rig = Rig()
    rig.dev.register_instruction(XOR, xor_with_constant,
                                 Cap.READS | Cap.WRITES | Cap.ALIGNED, name="XOR_CONST")
    rig.dev.register_instruction(CRC, crc_of_range, Cap.READS | Cap.IDEMPOTENT | Cap.RESPONDS)
    return rig


def test_custom_xor_instruction(user_rig):
    rig = user_rig
    rig.dev.memory[0:16] = np.array([1, 2], np.uint64).tobytes()
    ack = rig.one(XOR, addr=0, length=16, dtype=DType.UINT64, imm=0xFF)
    assert ack.opcode == Opcode.ACK and ack.imm == XOR
    assert np.frombuffer(bytes(rig.dev.memory[0:16]), np.uint64).tolist() == [0xFE, 0xFD]
    assert rig.dev.counters()["by_opcode"]["XOR_CONST"]["packets"] == 1


def test_custom_crc_instruction_responds(user_rig):
    rig = user_rig
    rig.dev.memory[100:200] = bytes(range(100))
    resp = rig.one(CRC, addr=100, length=100)
    assert resp.opcode == Opcode.READ_RESP
    assert int.from_bytes(resp.payload, "little") == crc32c(bytes(range(100)))


def test_custom_instruction_bad_arguments_is_user_error(user_rig):
    rig = user_rig
    before = rig.snapshot()
    nak = rig.one(XOR, addr=0, length=16, dtype=DType.UINT64, imm=0)
    assert is_nak(nak, Status.USER_ERROR) and nak.imm == XOR
    assert rig.snapshot() == before and rig.dev.counters()["naks"] == {"USER_ERROR": 1}


def test_custom_instruction_gets_the_access_checks(user_rig):
    rig = user_rig
    calls = []
    rig.dev.register_instruction(XOR, lambda c, p: calls.append(p) or [],
                                 Cap.READS | Cap.WRITES | Cap.ALIGNED, replace=True)
    for fields, status in [(dict(addr=1 << 15, length=16), Status.OUT_OF_BOUNDS),
                           (dict(addr=4, length=16), Status.MISALIGNED),
                           (dict(addr=0, length=16, rkey=1), Status.BAD_KEY),
                           (dict(addr=0, length=16, payload=b"x"), Status.LENGTH_MISMATCH)]:
        nak = rig.one(XOR, dtype=DType.UINT64, **fields)
        assert is_nak(nak, status), fields
    assert calls == []


def test_custom_instruction_that_crashes_is_user_error(user_rig):
    rig = user_rig
    rig.dev.register_instruction(0xC7, lambda c, p: 1 / 0, Cap(0))
    assert is_nak(rig.one(0xC7), Status.USER_ERROR)
    assert rig.dev.counters()["internal_errors"] == 0


def test_custom_instruction_can_forward(user_rig):
    rig = user_rig
    rig.dev.register_instruction(0xC8, lambda c, p: [c.forward(9, p)], Cap.FORWARDS)
    outs = rig.request(0xC8)
    assert [d for d, _ in outs] == [9, None]
    fwd = outs[0][1]
    assert fwd.src == rig.dev.device_id and fwd.dst == 9 and fwd.seq == 0
    assert isinstance(Out(None, fwd), tuple)
