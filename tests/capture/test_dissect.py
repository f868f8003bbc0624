"""`netdam dissect`: the table keeps undecodable packets with their error, --flows counts
equal counts computed here independently, --filter selects what it says and rejects
garbage with the column, a truncated or corrupt capture is one line naming the record,
the ladder draws as text and SVG, and `netdam dissector` installs the Lua plugin."""

import argparse
import statistics
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict

import pytest

from netdam.capture import dissect
from netdam.capture.filters import FilterError, compile_filter
from netdam.capture.frames import netdam_frames
from netdam.capture.sample import SAMPLE_CREDIT, write_sample
from netdam.cli import main
from netdam.wire import Flag, Opcode, Status, decode
from netdam_proto import DISSECTOR


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("cap") / "s.pcapng"
    return path, write_sample(path)


def _run(capsys, *argv):
    """(exit code, stdout, stderr with the console's line wrapping undone)."""
    code = main(["dissect", *map(str, argv)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, " ".join(out.err.split())


def test_every_packet_is_listed_bad_crc_with_its_error(sample, capsys):
    path, frames = sample
    code, out, _ = _run(capsys, path)
    assert code == 0
    assert f"{len(frames)} of {len(frames)} netdam packets" in out
    bad = [i for i, f in enumerate(frames, 1) if f.corrupted]
    assert bad and "BAD_CRC" in out
    decoded = list(netdam_frames(path))
    assert [f.number for f in decoded if f.error] == bad
    assert all(f.packet is not None for f in decoded)     # shown with fields, not dropped


def test_an_acks_credit_is_listed_in_bytes(sample, capsys):
    path, frames = sample
    code, out, _ = _run(capsys, path, "--filter", "opcode==ACK && device==4")
    credited = [f for f in frames if f.packet.opcode == Opcode.ACK and f.packet.group]
    assert code == 0 and credited
    assert out.count(f"credit {SAMPLE_CREDIT:,} B") == len(credited)


def test_flows_equal_independent_counts(sample):
    path, frames = sample
    got = {(s.src, s.dst): s for s in dissect.flow_stats(list(netdam_frames(path)))}
    packets, size, dups, retrans, naks = Counter(), Counter(), Counter(), Counter(), \
        defaultdict(Counter)
    seen, keys = defaultdict(set), defaultdict(set)
    for f in frames:
        k = (f.src, f.dst)
        p = decode(f.datagram, check_crc=False)
        packets[k] += 1
        size[k] += len(f.datagram)
        if f.datagram in seen[k]:
            dups[k] += 1
        else:
            key = (p.src, p.dst, p.seq, p.opcode, p.frag_off)
            if p.flags & Flag.RETRANSMIT or key in keys[k]:
                retrans[k] += 1
            keys[k].add(key)
        seen[k].add(f.datagram)
        if p.opcode == Opcode.NAK:
            naks[k][Status(p.status).name] += 1
    assert set(got) == set(packets)
    for k, s in got.items():
        assert (s.packets, s.bytes, s.duplicates, s.retransmissions) == \
            (packets[k], size[k], dups[k], retrans[k]), k
        assert dict(s.naks) == dict(naks[k])
    assert sum(retrans.values()) == 2 and sum(dups.values()) == 1
    # latency: host -> device 3 requests, first request datagram to first response
    host_dev3 = got[(("127.0.0.1", 40001), ("127.0.0.1", 18089))]
    lat = host_dev3.latency()
    assert lat is not None
    assert lat[0] == pytest.approx(1e-4, abs=2e-6)
    assert lat[1] == pytest.approx(statistics.median(host_dev3.latencies))
    assert max(host_dev3.latencies) == pytest.approx(3e-4, abs=2e-6)   # the lost WRITE


def test_flows_command_prints_the_table(sample, capsys):
    code, out, _ = _run(capsys, sample[0], "--flows")
    assert code == 0 and "127.0.0.1:40001 -> 127.0.0.1:18089" in out
    assert "OUT_OF_BOUNDS=1" in out and "BAD_KEY=1" in out


@pytest.mark.parametrize("expr, want", [
    ("opcode==READ", lambda p: p.opcode == Opcode.READ),
    ("opcode == nak && status != OK", lambda p: p.opcode == Opcode.NAK),
    ("status!=OK", lambda p: p.status != 0),
    ("src==3", lambda p: p.src == 3),
    ("device==4", lambda p: 4 in (p.src, p.dst)),
    ("device!=1", lambda p: 1 not in (p.src, p.dst)),
    ("seq>=10 && seq<20", lambda p: 10 <= p.seq < 20),
    ("req_id==106 || req==107", lambda p: p.req_id in (106, 107)),
    ("!(opcode==ACK) and flag==RETRANSMIT", lambda p: p.flags & Flag.RETRANSMIT
     and p.opcode != Opcode.ACK),
    ("addr >= 0x100000000", lambda p: p.addr >= 1 << 32),
    ("flag == MORE_FRAGS", lambda p: p.flags & Flag.MORE_FRAGS),
])
def test_filter_selects_what_it_says(sample, expr, want):
    path, frames = sample
    pred = compile_filter(expr)
    got = [f.number for f in netdam_frames(path) if pred(f)]
    expected = [i for i, f in enumerate(frames, 1)
                if want(decode(f.datagram, check_crc=False))]
    assert got == expected and got


def test_filter_on_errors_and_notes(sample):
    path, frames = sample
    assert [f.number for f in netdam_frames(path) if compile_filter("error==1")(f)] == \
        [i for i, f in enumerate(frames, 1) if f.corrupted]
    assert [f.number for f in netdam_frames(path) if compile_filter("note==1")(f)] == \
        [i for i, f in enumerate(frames, 1) if f.note]


@pytest.mark.parametrize("expr, message", [
    ("opcode=READ", "column 7: unexpected '='"),
    ("opcode==", "expected a value for opcode, found the end"),
    ("opcode==FETCH", "column 9: not a opcode name"),
    ("colour==3", "column 1: unknown field"),
    ("seq>=1 &&", "expected a field name"),
    ("(seq==1", "expected ')'"),
    ("seq==1 seq==2", "column 8: expected '&&', '||' or the end"),
    ("seq==READ", "seq takes a number"),
    ("__import__('os')", "column 12: unexpected"),
    ("!", "expected a field name"),
    ("flag < RETRANSMIT", "flag takes == or !="),
])
def test_filter_rejects_garbage_with_a_clear_error(expr, message):
    with pytest.raises(FilterError, match="bad filter") as info:
        compile_filter(expr)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_empty_filter_matches_everything():
    assert compile_filter("  ")(object())


def test_bad_filter_on_the_command_line_is_one_line(sample, capsys):
    code, out, err = _run(capsys, sample[0], "--filter", "opcode=READ")
    assert code == 2 and "column 7" in err


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_truncated_capture_is_one_line_naming_the_record(tmp_path, capsys, fmt):
    path = tmp_path / f"t.{fmt}"
    frames = write_sample(path)
    data = path.read_bytes()
    path.write_bytes(data[:-30])                     # the last record is cut short
    code, out, err = _run(capsys, path)
    assert code == 1
    assert f"record {len(frames)} is truncated or corrupt" in err


def test_cut_record_header_names_the_record(tmp_path, capsys):
    path = tmp_path / "h.pcap"
    frames = write_sample(path)
    path.write_bytes(path.read_bytes() + b"\x01\x02\x03")   # 3 bytes of a next header
    code, _, err = _run(capsys, path)
    assert code == 1 and f"record {len(frames) + 1} is truncated" in err


def test_corrupt_length_names_the_record(tmp_path, capsys):
    path = tmp_path / "c.pcap"
    write_sample(path)
    data = bytearray(path.read_bytes())
    data[24 + 8:24 + 12] = (10 ** 9).to_bytes(4, "little")    # record 1's caplen
    path.write_bytes(bytes(data))
    code, _, err = _run(capsys, path)
    assert code == 1 and "record 1 is truncated or corrupt" in err


def test_not_a_capture(tmp_path, capsys):
    path = tmp_path / "n.pcap"
    path.write_bytes(b"this is not a capture file at all")
    code, _, err = _run(capsys, path)
    assert code == 1 and "not a pcap or pcapng file" in err


def test_ladder_text_and_svg(sample, capsys, tmp_path):
    path, frames = sample
    svg = tmp_path / "l.svg"
    code, out, _ = _run(capsys, path, "--ladder", "--limit", 20, "--svg", svg)
    assert code == 0
    assert "member 1" in out and "127.0.0.1:18089" in out
    assert "READ #1" in out and "▶" in out and "◀" in out
    root = ET.fromstring(svg.read_text())
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "READ #1" in texts and "READ_RESP #1" in texts
    assert len(list(root.iter("{http://www.w3.org/2000/svg}line"))) >= 20


def test_ladder_window_by_time(sample, capsys):
    path, frames = sample
    code, out, _ = _run(capsys, path, "--ladder", "--from", "0.0037", "--to", "0.0042")
    assert code == 0
    assert "NAK MISALIGNED" in out and "dropped: loss" in out and "✗" in out
    assert "READ #1" not in out


def test_png_without_matplotlib_is_one_line(sample, capsys, tmp_path, monkeypatch):
    import builtins
    real = builtins.__import__

    def no_matplotlib(name, *a, **kw):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code, _, err = _run(capsys, sample[0], "--png", tmp_path / "l.png")
    assert code == 2 and "needs matplotlib" in err


def test_dissector_install_and_path(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WIRESHARK_CONFIG_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert main(["dissector", "path"]) == 0
    assert "not installed" in capsys.readouterr().out
    assert main(["dissector", "install"]) == 0
    target = tmp_path / ".local/lib/wireshark/plugins/netdam.lua"
    assert target.read_bytes() == DISSECTOR.read_bytes()
    capsys.readouterr()
    assert main(["dissector", "path"]) == 0
    out = capsys.readouterr().out
    assert str(DISSECTOR) in out and "installed, current" in out


def test_plugin_dir_per_platform(tmp_path):
    env = {"HOME": "/home/u"}
    assert dissect.plugin_dir(env, "linux") == \
        dissect.Path("/home/u/.local/lib/wireshark/plugins")
    assert dissect.plugin_dir(env, "darwin") == \
        dissect.Path("/home/u/.local/lib/wireshark/plugins")
    assert dissect.plugin_dir({"APPDATA": "C:/Users/u/AppData/Roaming"}, "win32") == \
        dissect.Path("C:/Users/u/AppData/Roaming/Wireshark/plugins")
    assert dissect.plugin_dir({"WIRESHARK_CONFIG_DIR": "/cfg", "HOME": "/h"}, "linux") == \
        dissect.Path("/cfg/plugins")
    assert dissect.legacy_plugin_dir({"HOME": "/h"}) == \
        dissect.Path("/h/.config/wireshark/plugins")
    assert dissect.legacy_plugin_dir({"HOME": "/h", "XDG_CONFIG_HOME": "/x"}) == \
        dissect.Path("/x/wireshark/plugins")


def test_add_arguments_parse():
    p = argparse.ArgumentParser()
    dissect.add_arguments(p)
    args = p.parse_args(["f.pcap", "--flows", "--filter", "src==3", "--limit", "5"])
    assert args.flows and args.limit == 5 and args.filter == "src==3"
    with pytest.raises(SystemExit):
        p.parse_args(["f.pcap", "--svg", "a", "--png", "b"])
