"""Network streams (issue 41): `emomon replay URL` against real servers on loopback, a
file served over HTTP and a live radio-like stream (tests/support/stream_server.py) that
drops and comes back, or does not; a URL that never answers."""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.data import SAMPLE
from support.media import encode
from support.processes import free_port

from emomon.model.audio import SAMPLE_RATE, read_audio
from emomon.model.errors import AudioError
from emomon.streamer.audio.sources import InputSettings, open_source

CLI = [sys.executable, "-m", "emomon.cli"]
SERVER = Path(__file__).resolve().parent / "support" / "stream_server.py"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def wait_port(port_file: Path, proc: subprocess.Popen, timeout: float = 30) -> int:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if port_file.exists() and port_file.read_text():
            return int(port_file.read_text())
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "the server ended"
        time.sleep(0.05)
    raise AssertionError("the server did not start")


@pytest.fixture(scope="module")
def mp3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("radio")
    return encode(read_audio(SAMPLE), SAMPLE_RATE, folder / "sample.mp3", "mp3")


def radio(mp3: Path, tmp_path: Path, drop_at: float, outage: float) -> tuple[subprocess.Popen, int]:
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), str(mp3), str(port_file), "--drop-at", str(drop_at), "--outage", str(outage)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return proc, wait_port(port_file, proc)


# ------------------------------------------------------------------ opening (fast tier: sockets here, no process)


def test_a_url_that_never_answers_is_one_sentence_within_the_timeout() -> None:
    quiet = socket.socket()
    quiet.bind(("127.0.0.1", 0))
    quiet.listen(1)  # accepts the connection, never says a word
    url = f"http://127.0.0.1:{quiet.getsockname()[1]}/live"
    t = time.monotonic()
    with pytest.raises(AudioError, match=rf"Audio input '{url}' did not answer within 1.5 s\."):
        open_source(url, settings=InputSettings(timeout_s=1.5))
    assert time.monotonic() - t < 6
    quiet.close()
    port = free_port()
    with pytest.raises(
        AudioError, match=rf"'http://127.0.0.1:{port}/x' cannot be read as audio by FFmpeg \(Connection"
    ):
        open_source(f"http://127.0.0.1:{port}/x")


def test_a_url_is_named_without_its_secrets() -> None:
    from emomon.model.media import shown

    assert shown("https://user:pw@radio.example:8443/live.mp3?token=abc") == "https://radio.example:8443/live.mp3"
    assert shown("rtsp://[::1]:8554/cam") == "rtsp://[::1]:8554/cam"
    assert shown("-") == "stdin" and shown("a/b.m4a") == "a/b.m4a"


# ------------------------------------------------------------------ replay over the network


@pytest.mark.system
@pytest.mark.weights
def test_a_file_over_http_replays_as_the_file_does(tmp_path: Path) -> None:
    """A progressive download (python -m http.server, a real process): a file with a
    length, so it is not live, and --speed 0 replays it as fast as the model goes; the rows
    are the file's own, the source the URL. The M4A has its index first ("faststart"): an
    index at the end needs a server that answers range requests, which http.server does not."""
    m4a = encode(read_audio(SAMPLE), SAMPLE_RATE, tmp_path / "memo.m4a", "m4a", faststart=True)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                               str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/memo.m4a"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        out = subprocess.run([*CLI, "replay", url, str(m4a), "--speed", "0", "--no-dashboard", "--csv", "log.csv"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert out.returncode == 0, out.stderr
    finally:
        server.terminate()
        server.wait(10)
    got = rows(tmp_path / "log.csv")
    by_url = [r for r in got if r["source"] == url]
    by_file = [r for r in got if r["source"] == str(m4a)]
    assert len(by_url) == len(by_file) == 6
    for a, b in zip(by_url, by_file):
        assert (a["start_s"], a["end_s"], a["top_emotion"]) == (b["start_s"], b["end_s"], b["top_emotion"])
    assert "12 segment(s) from 2 input(s)" in out.stdout


@pytest.mark.system
@pytest.mark.weights
def test_a_live_stream_that_drops_and_comes_back_keeps_both_sides_and_a_lost_row(mp3: Path, tmp_path: Path) -> None:
    """The radio cuts the connection 7.5 s in and answers 503 for 2 s; replay opens it again
    (within [input] reconnect_s) and goes on from where the programme is then. The rows
    before and after are kept, the time away is one `lost` row, and --duration ends the run
    with its summary (exit 0). Live, so in real time whatever --speed says."""
    proc, port = radio(mp3, tmp_path, drop_at=7.5, outage=2.0)
    (tmp_path / "config.toml").write_text("[input]\nreconnect_s = 8.0\ntimeout_s = 3.0\n")
    url = f"http://127.0.0.1:{port}/live.mp3"
    try:
        t = time.monotonic()
        out = subprocess.run([*CLI, "replay", url, "--speed", "0", "--duration", "17", "--no-dashboard", "--csv",
                              "live.csv"], cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
        wall = time.monotonic() - t
    finally:
        proc.terminate()
        proc.wait(10)
    assert out.returncode == 0, out.stderr + out.stdout
    assert wall > 14  # paced by the stream, not by --speed 0
    got = rows(tmp_path / "live.csv")
    lost = [r for r in got if r["status"] == "lost"]
    ok = [r for r in got if r["status"] == "ok"]
    assert len(lost) == 1 and lost[0]["segment"] == "-1"
    gap = (float(lost[0]["start_s"]), float(lost[0]["end_s"]))
    assert 6.5 < gap[0] < 7.6 and 1.5 < gap[1] - gap[0] < 4.5, gap  # 2 s off the air, and the reconnect's tries
    before = [r for r in ok if float(r["start_s"]) < gap[0]]  # sentences 1 and 2, and what the drop cut of 3
    after = [r for r in ok if float(r["start_s"]) >= gap[1] - 0.05]
    assert len(before) >= 2 and len(after) >= 1 and len(before) + len(after) == len(ok), got
    assert {r["source"] for r in got} == {url}
    assert f"{len(ok)} segment(s) from 1 input(s)" in out.stdout


@pytest.mark.system
@pytest.mark.weights
def test_a_live_stream_that_does_not_come_back_ends_in_one_sentence_and_keeps_what_was_heard(
    mp3: Path, tmp_path: Path
) -> None:
    proc, port = radio(mp3, tmp_path, drop_at=7.5, outage=60.0)
    (tmp_path / "config.toml").write_text("[input]\nreconnect_s = 2.0\ntimeout_s = 2.0\n")
    url = f"http://127.0.0.1:{port}/live.mp3"
    try:
        out = subprocess.run([*CLI, "replay", url, "--no-dashboard", "--csv", "live.csv"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)
    assert out.returncode == 1
    said = [line for line in out.stdout.splitlines() if line.startswith("emomon: ")]
    assert len(said) == 1 and said[0].startswith(f"emomon: Stream '{url}' was lost after 7.")
    assert "did not come back within 2 s" in said[0] and "Traceback" not in out.stdout + out.stderr
    got = rows(tmp_path / "live.csv")
    assert [r["status"] for r in got] == ["ok", "ok"]  # the two sentences heard before the drop
