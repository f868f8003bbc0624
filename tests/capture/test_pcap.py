"""Capture writes real Ethernet/IP/UDP frames that scapy reads back with every field the
codec decoded; notes survive (pcapng comments, pcap side table); merge orders the
per-process files by time; a forked child cannot write its parent's file."""

import json
import logging
import os
import random

import pytest
from scapy.all import IP, UDP, Ether, IPv6, raw, rdpcap

from netdam.capture.pcap import Capture, CaptureError, merge, read_frames, read_notes
from netdam.capture.sample import sample_traffic, write_sample
from netdam.errors import UsageError
from netdam.wire import NetDAM, decode
from netdam.wire.codec import Packet, encode

HEADER_FIELDS = ("opcode", "flags", "status", "dtype", "redop", "hop", "src", "dst", "pkey",
                 "group", "rkey", "seq", "ack", "req_id", "addr", "addr2", "imm", "length",
                 "frag_off")


@pytest.fixture(params=["pcap", "pcapng"])
def fmt(request):
    return request.param


def test_scapy_dissects_every_packet_with_the_codec_fields(tmp_path, fmt):
    path = tmp_path / f"s.{fmt}"
    sample = write_sample(path, fmt)
    frames = rdpcap(str(path))
    assert len(frames) == len(sample)
    for got, want in zip(frames, sample):
        assert got[IP].src == want.src[0] and got[IP].dst == want.dst[0]
        assert (got[UDP].sport, got[UDP].dport) == (want.src[1], want.dst[1])
        assert bytes(got[UDP].payload) == want.datagram
        assert abs(float(got.time) - want.ts) < 1e-6
        layer = got[NetDAM] if NetDAM in got else NetDAM(bytes(got[UDP].payload))
        pkt = decode(want.datagram, check_crc=False)
        for name in HEADER_FIELDS:
            assert int(getattr(layer, name)) == getattr(pkt, name), name
        assert tuple(layer.getfieldval("route")) == pkt.route
        assert layer.data == bytes(pkt.payload)


def test_headers_are_valid(tmp_path):
    path = tmp_path / "s.pcap"
    write_sample(path)
    for frame in rdpcap(str(path)):
        ip = frame[IP]
        clean = ip.copy()
        del clean.chksum                          # scapy recomputes it
        assert IP(raw(clean)).chksum == ip.chksum
        assert ip.len == len(raw(ip)) and frame[UDP].len == len(raw(frame[UDP]))
        if ip.dst.startswith("239."):
            assert frame[Ether].dst == "01:00:5e:01:02:03"


def test_notes_become_pcapng_comments(tmp_path):
    path = tmp_path / "s.pcapng"
    sample = write_sample(path)
    frames = rdpcap(str(path))
    for got, want in zip(frames, sample):
        comments = [c.decode() for c in (got.comments or [])]
        if want.note or want.dropped:
            assert comments and want.note in comments[0]
            assert comments[0].startswith("netdam: dropped") == want.dropped
        else:
            assert not comments


def test_notes_of_classic_pcap_go_to_the_side_table(tmp_path):
    path = tmp_path / "s.pcap"
    sample = write_sample(path)
    table = json.loads((tmp_path / "s.pcap.faults.json").read_text())["frames"]
    expected = [(i, f.note) for i, f in enumerate(sample, 1) if f.note or f.dropped]
    assert [(r["frame"], r["note"].removeprefix("dropped: ")) for r in table] == expected
    assert [r["dropped"] for r in table] == [sample[i - 1].dropped for i, _ in expected]
    assert read_notes(path) == {r["frame"]: r["note"] for r in table}


def test_record_takes_parts_and_ipv6(tmp_path):
    p = Packet(opcode=1, src=1, dst=2, seq=9, req_id=4, payload=b"xyzw" * 2)
    data = encode(p)
    with Capture(tmp_path / "v6.pcap") as cap:
        cap.record(1.5, ("::1", 5000), ("fe80::2", 18089), [data[:10], memoryview(data[10:])])
        cap.record(None, ("127.0.0.1", 1), ("::1", 2), data)
    frames = rdpcap(str(tmp_path / "v6.pcap"))
    assert frames[0][IPv6].dst == "fe80::2" and bytes(frames[0][UDP].payload) == data
    assert frames[0][NetDAM].seq == 9
    assert frames[1][IPv6].src == "::ffff:127.0.0.1"
    with pytest.raises(UsageError, match="not an IPv4 or IPv6"):
        Capture(tmp_path / "x.pcap").record(0.0, ("nohost", 1), ("::1", 2), data)


def test_closed_capture_refuses_records(tmp_path):
    cap = Capture(tmp_path / "c.pcap")
    cap.close()
    with pytest.raises(UsageError, match="closed"):
        cap.record(0.0, ("127.0.0.1", 1), ("127.0.0.1", 2), b"x")


def _split_by_process(tmp_path, fmt):
    """The sample as three per-process files (host, device 3, devices 4 and 5)."""
    sample = sample_traffic()
    owner = {40001: "host", 18089: "dev3"}
    parts = {}
    for f in sample:
        who = owner.get(f.src[1], "dev45")
        if who not in parts:
            parts[who] = Capture(tmp_path / f".run.{fmt}.{who}.part", fmt)
        parts[who].record(f.ts, f.src, f.dst, f.datagram, note=f.note, dropped=f.dropped)
    for c in parts.values():
        c.close()
    return sample, [c.path for c in parts.values()]


def test_merge_orders_records_by_time_and_keeps_notes(tmp_path, fmt):
    sample, parts = _split_by_process(tmp_path, fmt)
    random.Random(1).shuffle(parts)
    out = tmp_path / f"run.{fmt}"
    assert merge(parts, out) == len(sample)
    records = list(read_frames(out))
    assert [r.time for r in records] == sorted(r.time for r in records)
    assert [r.data[42:] for r in records] == [f.datagram for f in sample]
    notes = {r.number: r.note for r in records if r.note}
    want = {i: ("dropped: " + f.note if f.dropped else f.note)
            for i, f in enumerate(sample, 1) if f.note}
    assert notes == want


def test_merge_keeps_the_whole_records_of_a_cut_part(tmp_path, caplog):
    sample, parts = _split_by_process(tmp_path, "pcap")
    host = next(p for p in parts if "host" in p.name)
    n_host = len(list(read_frames(host)))
    host.write_bytes(host.read_bytes()[:-10])          # killed mid-record
    out = tmp_path / "run.pcap"
    with caplog.at_level(logging.WARNING, logger="netdam.capture"):
        assert merge(parts, out) == len(sample) - 1
    assert f"record {n_host} is truncated" in caplog.text
    with pytest.raises(CaptureError, match=f"record {n_host} "):
        merge(parts, tmp_path / "strict.pcap", strict=True)
    assert not (tmp_path / "strict.pcap").exists()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_cannot_write_its_parents_capture(tmp_path):
    path = tmp_path / "p.pcap"
    data = encode(Packet(opcode=4, src=1, dst=2))
    cap = Capture(path)
    cap.record(1.0, ("127.0.0.1", 1), ("127.0.0.1", 2), data)
    pid = os.fork()
    if pid == 0:                                  # child
        code = 0
        try:
            cap.record(2.0, ("127.0.0.1", 1), ("127.0.0.1", 2), data)
            code = 3
        except UsageError:
            code = 0
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    cap.record(3.0, ("127.0.0.1", 1), ("127.0.0.1", 2), data)
    cap.close()
    assert [r.time for r in read_frames(path)] == [1.0, 3.0]
