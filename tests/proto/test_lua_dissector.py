"""proto/netdam.lua read by a real tshark: every header field of every packet of the
sample capture equals what the codec decodes, display filters select the expected
frames, NAKs and bad CRCs carry expert info, responses point at their requests, the
heuristic finds netdam on automatic ports, and `netdam dissector install` puts the
plugin where tshark loads it. Skipped (with the reason) when tshark is not installed."""

import os
import shutil
import subprocess

import pytest

from netdam.capture.sample import SAMPLE_CREDIT, write_sample
from netdam.cli import main
from netdam.wire import Flag, Opcode, Status, decode
from netdam_proto import DISSECTOR
from netdam_proto.definition import load

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(
    TSHARK is None, reason="tshark is not installed (CI installs it with apt-get install tshark)")

FIELDS = ("opcode", "flags", "status", "dtype", "redop", "hop", "nhops", "src", "dst",
          "pkey", "group", "rkey", "seq", "ack", "req_id", "payload_len", "addr", "addr2",
          "imm", "length", "frag_off")


def tshark(path, *args, lua=True, env=None):
    cmd = [TSHARK, "-n", "-r", str(path)]
    if lua:
        cmd[1:1] = ["-X", f"lua_script:{DISSECTOR}"]
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Lua" not in proc.stderr or "rror" not in proc.stderr, proc.stderr
    return proc.stdout


def as_int(text: str) -> int:
    if text in ("True", "true"):
        return 1
    if text in ("False", "false"):
        return 0
    return int(text, 0)


def rows(path, *fields, two_pass=False, filt=None):
    args = ["-T", "fields", "-E", "separator=,", "-E", "aggregator=;"]
    if two_pass:
        args.insert(0, "-2")
    if filt:
        args += ["-Y", filt]
    for f in ("frame.number",) + fields:
        args += ["-e", f]
    out = tshark(path, *args)
    return [line.split(",") for line in out.splitlines() if line]


@pytest.fixture(scope="module", params=["pcap", "pcapng"])
def sample(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("lua") / f"s.{request.param}"
    return path, write_sample(path)


def test_every_field_of_every_packet_matches_the_codec(sample):
    path, frames = sample
    got = rows(path, *(f"netdam.{f}" for f in FIELDS), "netdam.route.entry")
    assert len(got) == len(frames)
    for row, frame in zip(got, frames):
        p = decode(frame.datagram, check_crc=False)
        want = {f: getattr(p, f) for f in FIELDS if hasattr(p, f)}
        want["nhops"] = len(p.route)
        want["payload_len"] = len(p.payload)
        values = dict(zip(FIELDS, row[1:1 + len(FIELDS)]))
        assert {f: as_int(v) for f, v in values.items()} == want, f"frame {row[0]}"
        route = row[1 + len(FIELDS)]
        assert tuple(int(x) for x in route.split(";") if x) == p.route


def test_protocol_column_on_default_and_automatic_ports(sample):
    path, frames = sample
    protos = [r[1] for r in rows(path, "_ws.col.Protocol")]
    assert protos == ["NetDAM"] * len(frames)
    ports = {f.src[1] for f in frames} | {f.dst[1] for f in frames}
    assert len(ports) > 2            # the heuristic, not only the registered port


def test_display_filters_select_the_expected_frames(sample):
    path, frames = sample
    naks = [str(i) for i, f in enumerate(frames, 1)
            if decode(f.datagram, check_crc=False).opcode == Opcode.NAK]
    got = [r[0] for r in rows(path, filt=f"netdam.opcode == {int(Opcode.NAK)} "
                                         "&& netdam.status != 0")]
    assert got == naks and len(naks) == 3
    reads = [str(i) for i, f in enumerate(frames, 1)
             if decode(f.datagram, check_crc=False).opcode == Opcode.READ]
    assert [r[0] for r in rows(path, filt="netdam.opcode == 1 && netdam.status == 0")] == reads
    bad = [str(i) for i, f in enumerate(frames, 1) if f.corrupted]
    assert [r[0] for r in rows(path, filt="netdam.crc_ok == 0")] == bad
    assert [r[0] for r in rows(path, filt="netdam.crc.status == 0")] == bad
    retrans = [str(i) for i, f in enumerate(frames, 1)
               if decode(f.datagram, check_crc=False).flags & Flag.RETRANSMIT]
    assert [r[0] for r in rows(path, filt="netdam.flags.retransmit == 1")] == retrans
    big = [str(i) for i, f in enumerate(frames, 1)
           if decode(f.datagram, check_crc=False).addr >= 1 << 32]
    assert [r[0] for r in rows(path, filt="netdam.addr >= 0x100000000")] == big


def test_expert_info_on_naks_and_bad_crc(sample):
    path, frames = sample
    naks = rows(path, "_ws.expert.message", "_ws.expert.severity",
                filt="netdam.expert.nak")
    statuses = {Status(decode(f.datagram, check_crc=False).status).name
                for f in frames if decode(f.datagram, check_crc=False).opcode == Opcode.NAK}
    assert len(naks) == 3
    assert {s for r in naks for s in statuses if s in r[1]} == statuses
    bad = rows(path, "_ws.expert.message", filt="netdam.expert.bad_crc")
    assert [r[0] for r in bad] == [str(i) for i, f in enumerate(frames, 1) if f.corrupted]
    assert "CRC32C mismatch" in bad[0][1]


def test_info_column(sample):
    path, frames = sample
    info = {int(r[0]): r[1] for r in rows(path, "_ws.col.Info")}
    assert info[1] == "READ 1->3 seq=1 req=100 addr=0x1000 len=16"
    nak = next(i for i, f in enumerate(frames, 1)
               if decode(f.datagram, check_crc=False).status == Status.OUT_OF_BOUNDS)
    assert info[nak].startswith("NAK OUT_OF_BOUNDS 3->1 ")


def test_an_acks_credit_is_shown_in_bytes(sample):
    """An ACK's group is the receiver's credit (SPEC §8.2): the tree shows it in bytes as
    netdam.ack.credit (filterable) and the info column says credit=..."""
    path, frames = sample
    credited = [i for i, f in enumerate(frames, 1)
                if f.packet.opcode == Opcode.ACK and f.packet.group]
    assert credited
    got = rows(path, "netdam.ack.credit", "_ws.col.Info", filt="netdam.ack.credit")
    assert [int(r[0]) for r in got] == credited
    assert all(int(r[1]) == SAMPLE_CREDIT and r[2].endswith(f" credit={SAMPLE_CREDIT}")
               for r in got)


def test_requests_and_responses_are_matched(sample):
    path, frames = sample
    got = {int(r[0]): r[1:] for r in rows(path, "netdam.response_in", "netdam.request_in",
                                          "netdam.time", two_pass=True)}
    assert got[1][0] == "2" and got[2][1] == "1"
    assert float(got[2][2]) == pytest.approx(1e-4, abs=1e-6)
    responses = [i for i, f in enumerate(frames, 1)
                 if decode(f.datagram, check_crc=False).opcode in
                 (Opcode.ACK, Opcode.NAK, Opcode.READ_RESP, Opcode.ATOMIC_RESP)]
    assert all(got[i][1] for i in responses)      # every response names its request
    lost = next(i for i, f in enumerate(frames, 1) if f.dropped)
    assert got[lost + 1][0] == got[lost][0] != ""  # the retransmission shares the answer


def test_every_definition_name_is_in_the_dissector():
    text = DISSECTOR.read_text()
    d = load()
    for table in (d.opcodes, d.statuses, d.dtypes, d.redops, d.flags):
        for e in table:
            assert f'"{e.name}"' in text
    for f in d.header:
        assert f'"netdam.{f.name}"' in text


def test_installed_plugin_is_loaded_by_tshark(sample, tmp_path, monkeypatch):
    path, frames = sample
    monkeypatch.delenv("WIRESHARK_CONFIG_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["dissector", "install"]) == 0
    env = dict(os.environ, HOME=str(tmp_path))
    out = tshark(path, "-T", "fields", "-e", "netdam.opcode", lua=False, env=env)
    assert len([x for x in out.splitlines() if x]) == len(frames)
