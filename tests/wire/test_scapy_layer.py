"""The scapy layer: rdpcap dissects netdam datagrams with no extra code, the summary is
one line, answers() pairs responses with their requests, and the CRC is computed."""

from scapy.all import IP, UDP, Ether, raw, rdpcap, wrpcap

from netdam.wire import UDP_PORT, Flag, NetDAM, Opcode, Packet, Status, decode, encode


def _frame(pkt: Packet, to_device: bool = True):
    sport, dport = (40000, UDP_PORT) if to_device else (UDP_PORT, 40000)
    return Ether() / IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=sport, dport=dport) \
        / NetDAM(encode(pkt))


def test_rdpcap_dissects_netdam(tmp_path):
    req = Packet(opcode=Opcode.READ, flags=Flag.ACK_REQ, src=1, dst=2, seq=5, req_id=77,
                 addr=0x100, length=8)
    resp = Packet(opcode=Opcode.READ_RESP, src=2, dst=1, seq=5, req_id=77, addr=0x100,
                  length=8, payload=b"\x01" * 8)
    path = tmp_path / "t.pcap"
    wrpcap(str(path), [_frame(req), _frame(resp, to_device=False)])
    frames = rdpcap(str(path))
    assert [f[NetDAM].opcode for f in frames] == [Opcode.READ, Opcode.READ_RESP]
    assert frames[1][NetDAM].data == b"\x01" * 8
    assert decode(raw(frames[1][NetDAM])).req_id == 77
    assert frames[1][NetDAM].answers(frames[0][NetDAM])
    assert not frames[0][NetDAM].answers(frames[1][NetDAM])
    assert frames[0][NetDAM].hashret() == frames[1][NetDAM].hashret()


def test_summary_is_one_line_and_names_nak_status():
    nak = NetDAM(encode(Packet(opcode=Opcode.NAK, status=Status.BAD_KEY, src=2, dst=1,
                               req_id=3)))
    text = nak.mysummary()
    assert "\n" not in text and "NAK" in text and "BAD_KEY" in text


def test_crc_filled_when_unset_and_kept_when_given():
    built = raw(NetDAM(opcode=Opcode.WRITE, data=b"abc"))
    assert decode(built).payload.tobytes() == b"abc"
    bad = raw(NetDAM(opcode=Opcode.WRITE, data=b"abc", crc=0))
    assert bad[-4:] == b"\x00\x00\x00\x00"


def test_trailing_bytes_are_padding_not_payload():
    data = encode(Packet(opcode=Opcode.ACK)) + b"\x00\x00"
    layer = NetDAM(data)
    assert layer.opcode == Opcode.ACK and bytes(layer.payload) == b"\x00\x00"


def _fresh(code: str) -> str:
    """Run ``code`` in a new interpreter (nothing imported yet); its stdout."""
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def test_processes_that_never_capture_do_not_import_scapy():
    out = _fresh("import sys, netdam.wire, netdam.device, netdam.api, netdam.cluster, "
                 "netdam.control.coordinator; print(sorted(m for m in sys.modules "
                 "if m == 'scapy' or m.startswith('scapy.')))")
    assert out == "[]"


def test_naming_the_layer_registers_it_for_rdpcap(tmp_path):
    pkt = Packet(opcode=Opcode.READ, src=1, dst=2, seq=5, req_id=77, addr=0x100, length=8)
    path = tmp_path / "one.pcap"
    wrpcap(str(path), [_frame(pkt)])
    for code in (   # the layer named, and the old way: scapy first, then the package
            "from netdam.wire import NetDAM\nfrom scapy.all import rdpcap\n",
            "from scapy.all import rdpcap\nimport netdam.wire\n"):
        out = _fresh(code + f"print(rdpcap({str(path)!r})[0].lastlayer().name)")
        assert out == "NetDAM", code
