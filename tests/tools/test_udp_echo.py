"""The C baselines of tools/bench_transport.py (tools/udp_echo.c) do what the table says
they do: the echo echoes, the plain stream delivers every byte, and the work stream's
datagrams carry CRC32C trailers that netdam's own check accepts and that its sink
really checks (a damaged datagram is counted, not copied)."""

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from crc32c import crc32c

from netdam.wire.fields import HEADER_LEN

TOOLS = Path(__file__).resolve().parents[2] / "tools"
pytestmark = pytest.mark.skipif(not (shutil.which("gcc") or shutil.which("cc")),
                                reason="no C compiler")


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    sys.path.insert(0, str(TOOLS))
    try:
        import bench_transport
    finally:
        sys.path.remove(str(TOOLS))
    return bench_transport, bench_transport.compile_echo(str(tmp_path_factory.mktemp("c")))


def _sink(path, mode, port, expect, *extra):
    p = subprocess.Popen([path, mode, str(port), str(expect), *map(str, extra)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


@pytest.mark.timeout(60)
def test_the_echo_answers_with_the_same_bytes(exe):
    bench, path = exe
    port = bench.free_port()
    srv = subprocess.Popen([path, "server", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(b"netdam!", ("127.0.0.1", port))
            assert s.recv(100) == b"netdam!"
            s.sendto(b"q", ("127.0.0.1", port))          # one byte ends it
        assert srv.wait(5) == 0
    finally:
        srv.kill()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stream,sink", [("stream", "sink"), ("stream-work", "sink-work"),
                                         ("stream-mem", "sink")])
def test_each_stream_delivers_every_byte(exe, stream, sink):
    bench, path = exe
    port, total = bench.free_port(), 40 * 9000      # well within the sink's buffer
    mem = [1 << 20] if stream != "stream" else []
    receiver = _sink(path, sink, port, total, *(mem if sink == "sink-work" else []))
    subprocess.run([path, stream, str(port), "9000", str(total), *map(str, mem)],
                   timeout=30, check=True)
    out = receiver.communicate(timeout=10)[0].split()
    assert int(out[0]) == total and float(out[1]) > 0
    assert out[2:] == (["0"] if sink == "sink-work" else [])   # the work sink refused none


@pytest.mark.timeout(60)
def test_the_work_sink_checks_each_trailer(exe):
    bench, path = exe
    port = bench.free_port()
    body = bytes(range(256)) * 8 + b"head" * (HEADER_LEN // 4)
    good = body + crc32c(body).to_bytes(4, "big")
    bad = bytearray(good)
    bad[HEADER_LEN + 5] ^= 0x10                       # a payload bit flipped on the way
    sink = _sink(path, "sink-work", port, 3 * len(good), 1 << 16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in (good, bytes(bad), good):
            s.sendto(d, ("127.0.0.1", port))
    got, _secs, refused = sink.communicate(timeout=10)[0].split()
    assert (int(got), int(refused)) == (3 * len(good), 1)


@pytest.mark.timeout(60)
def test_the_work_stream_sends_trailers_netdam_accepts(exe):
    bench, path = exe
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        subprocess.run([path, "stream-work", str(s.getsockname()[1]), "3000", str(3 * 3000),
                        str(1 << 16)], timeout=30, check=True)
        grams = [s.recv(65536) for _ in range(3)]
    assert [len(g) for g in grams] == [3000] * 3
    for g in grams:
        assert crc32c(g[:-4]) == int.from_bytes(g[-4:], "big")
    payloads = [g[HEADER_LEN:-4] for g in grams]
    assert len(set(payloads)) == 3                    # consecutive parts of its memory


@pytest.mark.timeout(60)
def test_the_memory_stream_sends_the_work_streams_datagrams_without_the_crc(exe):
    bench, path = exe
    grams = {}
    for mode in ("stream-work", "stream-mem"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            subprocess.run([path, mode, str(s.getsockname()[1]), "3000", str(2 * 3000),
                            str(1 << 16)], timeout=30, check=True)
            grams[mode] = [s.recv(65536) for _ in range(2)]
    assert [g[:-4] for g in grams["stream-mem"]] == [g[:-4] for g in grams["stream-work"]]
    assert {g[-4:] for g in grams["stream-mem"]} == {bytes(4)}
