"""`emomon serve` for real: the server in its own process on loopback with the default
model, real WebSocket clients (the `websockets` package) streaming real speech."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.data import REPO
from support.processes import Server, free_port, pcm, segments, stream
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

pytestmark = [pytest.mark.system, pytest.mark.weights]


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


def test_healthz_and_page(server: Server) -> None:
    status, body = server.get("/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["model"] == "default"
    assert len(health["emotions"]) == 9 and health["streams"] == 0
    status, page = server.get("/")
    assert status == 200 and "/v1/stream" in page and "audioWorklet" in page


def test_audio_is_not_compressed(server: Server) -> None:
    """The client offers permessage-deflate (websockets does by default); the server declines."""
    with connect(server.url, open_timeout=20) as ws:
        assert "permessage-deflate" in ws.request.headers.get("Sec-WebSocket-Extensions", "")
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None


@pytest.mark.parametrize("rate", [16000, 8000, 44100])
def test_a_stream_gets_one_segment_per_sentence(server: Server, rate: int) -> None:
    messages, code = stream(f"{server.url}?sample_rate={rate}", pcm(rate), rate=rate)
    ready = messages[0]
    assert ready["type"] == "ready" and ready["sample_rate"] == rate and len(ready["emotions"]) == 9
    segs = segments(messages)
    assert [s["segment"] for s in segs] == list(range(6)) and all(s["status"] == "ok" for s in segs)
    for i, s in enumerate(segs):
        assert abs(s["start_s"] - (1.0 + 3.0 * i)) <= 0.2  # times of this stream's audio
        assert abs(sum(s["shares"].values()) - 1.0) < 1e-3 and s["top_emotion"] == max(s["shares"], key=s["shares"].get)
    assert messages[-1] == {"type": "end"} and code == 1000


def test_streams_run_together_and_keep_their_own_results(server: Server) -> None:
    """Two clients at once, one of them sending garbage in the middle: each gets its own
    segments in order; the bad one is closed alone."""
    out: dict[str, tuple] = {}
    good = threading.Thread(target=lambda: out.update(good=stream(server.url, pcm())))
    good.start()
    time.sleep(1.0)
    with connect(server.url) as ws:
        ws.recv(timeout=20)
        ws.send(b"\x00\x01\x02")  # an odd byte count
        err = json.loads(ws.recv(timeout=20))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=20)
        assert err["type"] == "error" and "even number of bytes" in err["message"] and ws.close_code == 1003
    good.join(120)
    messages, code = out["good"]
    assert [s["segment"] for s in segments(messages)] == list(range(6)) and code == 1000


@pytest.mark.parametrize(
    "send,code,words",
    [
        (b"\x00" * (1 << 20 | 2), 1009, "at most 1048576 bytes"),
        ("hello", 1003, "Unknown text message"),
        (json.dumps({"type": "pause"}), 1003, "Unknown text message"),
    ],
)
def test_bad_messages_get_one_error_and_a_close_code(server: Server, send, code: int, words: str) -> None:
    with connect(server.url, max_size=None) as ws:
        assert json.loads(ws.recv(timeout=20))["type"] == "ready"
        ws.send(send)
        err = json.loads(ws.recv(timeout=20))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=20)
    assert err["type"] == "error" and words in err["message"] and ws.close_code == code


@pytest.mark.parametrize("rate", ["7999", "48001", "fast"])
def test_an_unknown_sample_rate_is_refused(server: Server, rate: str) -> None:
    with connect(f"{server.url}?sample_rate={rate}") as ws:
        err = json.loads(ws.recv(timeout=20))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=20)
    assert err["type"] == "error" and "sample_rate" in err["message"] and ws.close_code == 1008


def test_a_fast_client_is_slowed_to_four_times_real_time(server: Server) -> None:
    data = pcm()  # 18 s of audio: at most 4x real time takes at least 4.5 s
    t = time.monotonic()
    messages, code = stream(server.url, data, chunk_s=1.0)
    assert time.monotonic() - t >= 18.6 / 4 - 0.5 and code == 1000
    assert len(segments(messages)) == 6


def test_metrics_count_streams_and_segments(server: Server) -> None:
    stream(server.url, pcm())
    status, text = server.get("/metrics")
    assert status == 200
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"}
    assert values['emomon_segments_total{status="ok"}'] >= 6 and values["emomon_streams"] == 0
    assert values["emomon_latency_seconds_count"] >= 6 and values["emomon_streams_opened_total"] >= 1
    assert values["emomon_queue"] == 0 and values["emomon_queue_size"] == 64  # all scored; [serve] queue_size


def test_more_streams_than_allowed_are_refused() -> None:
    s = Server("--max-streams", "1")
    try:
        with connect(s.url) as first:
            assert json.loads(first.recv(timeout=20))["type"] == "ready"
            with connect(s.url) as second:
                err = json.loads(second.recv(timeout=20))
                with pytest.raises(ConnectionClosed):
                    second.recv(timeout=20)
            assert err["type"] == "error" and "limit of 1 streams" in err["message"] and second.close_code == 1013
    finally:
        s.stop()


def test_token_is_required_when_set() -> None:
    s = Server("--token", "s3cret")
    try:
        with pytest.raises(InvalidStatus) as refused:
            connect(s.url, open_timeout=20)
        assert refused.value.response.status_code in (401, 403)
        with pytest.raises(InvalidStatus):
            connect(s.url, additional_headers={"Authorization": "Bearer wrong"}, open_timeout=20)
        bearer = {"additional_headers": {"Authorization": "Bearer s3cret"}}
        for kw, url in ((bearer, s.url), ({}, f"{s.url}?token=s3cret")):
            with connect(url, open_timeout=20, **kw) as ws:
                assert json.loads(ws.recv(timeout=20))["type"] == "ready"
    finally:
        s.stop()


def test_a_stream_that_falls_silent_gets_its_results_and_is_closed(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[serve]\nidle_timeout_s = 1.5\n")
    s = Server("--config", str(cfg))
    try:
        with connect(s.url, open_timeout=20) as ws:
            assert json.loads(ws.recv(timeout=20))["type"] == "ready"
            ws.send(pcm()[: 2 * 16000 * 2])  # 1 s of silence and the first second of a sentence: a segment is open
            t = time.monotonic()
            messages = []
            with pytest.raises(ConnectionClosed):
                while True:
                    messages.append(json.loads(ws.recv(timeout=20)))
            waited = time.monotonic() - t
        assert [m["type"] for m in messages] == ["segment", "error"] and messages[0]["status"] == "ok"
        assert 0.9 <= messages[0]["start_s"] <= 1.1 and messages[0]["end_s"] == pytest.approx(2.0, abs=0.05)
        assert messages[1]["message"] == "Nothing received for 1.5 s: the stream is closed to free its place."
        assert ws.close_code == 1008 and 1.5 <= waited < 10
        assert 'emomon_refused_total{reason="idle"} 1.0' in s.get("/metrics")[1]
    finally:
        s.stop()


def test_pages_of_other_sites_cannot_open_streams(server: Server) -> None:
    """A browser names the page that opens the socket (Origin): the server's own page may,
    another site may not; a program that sends no Origin is not concerned."""
    with pytest.raises(InvalidStatus) as refused:
        connect(server.url, origin="http://evil.example", open_timeout=20)
    assert refused.value.response.status_code == 403
    for origin in (f"http://127.0.0.1:{server.port}", None):
        with connect(server.url, origin=origin, open_timeout=20) as ws:
            assert json.loads(ws.recv(timeout=20))["type"] == "ready"
    assert 'emomon_refused_total{reason="origin"} 1.0' in server.get("/metrics")[1]


def test_origins_named_in_the_settings_may_open_streams() -> None:
    s = Server("--origin", "https://app.example")
    try:
        with connect(s.url, origin="https://app.example", open_timeout=20) as ws:
            assert json.loads(ws.recv(timeout=20))["type"] == "ready"
        with pytest.raises(InvalidStatus):
            connect(s.url, origin="https://app.example.evil", open_timeout=20)
    finally:
        s.stop()
    out = subprocess.run(
        [sys.executable, "-m", "emomon.cli", "serve", "--origin", "app.example", "--port", str(free_port())],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "'app.example' is not an origin" in out.stderr


def test_binding_beyond_loopback_needs_a_token() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "emomon.cli", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr == (
        "emomon: Refusing to serve on 0.0.0.0 without a token: set --token (or [serve] token), or bind 127.0.0.1.\n"
    )


def test_sigterm_finishes_open_streams_and_closes_them_with_1001(tmp_path: Path) -> None:
    s = Server("--csv", str(tmp_path / "serve.csv"), "--jsonl", str(tmp_path / "serve.jsonl"))
    data = pcm()
    with connect(s.url) as ws:
        ws.recv(timeout=20)
        ws.send(data[: 2 * 16000 * 8])  # 8 s: two sentences, the third under way
        time.sleep(2.0)
        s.proc.send_signal(signal.SIGTERM)
        got = []
        with pytest.raises(ConnectionClosed):
            while True:
                got.append(json.loads(ws.recv(timeout=30)))
    stdout, _ = s.stop()
    assert ws.close_code == 1001 and s.proc.returncode == 0
    assert [m["segment"] for m in segments(got)] == [0, 1, 2]  # the open segment was flushed and sent
    rows = list(csv.DictReader((tmp_path / "serve.csv").open()))
    assert len(rows) == 3 and all(r["stream"] == "1" and r["source"] == "stream-1" for r in rows)
    records = [json.loads(x) for x in (tmp_path / "serve.jsonl").read_text().splitlines()]
    assert [(r["stream"], r["segment"]) for r in records if r["type"] == "segment"] == [(1, 0), (1, 1), (1, 2)]


def test_a_client_that_vanishes_costs_nothing_more(server: Server) -> None:
    with connect(server.url) as ws:
        ws.recv(timeout=20)
        ws.send(pcm()[: 2 * 16000 * 5])
    # gone mid-segment; the server keeps serving others
    messages, code = stream(server.url, pcm())
    assert len(segments(messages)) == 6 and code == 1000
    assert json.loads(server.get("/healthz")[1])["streams"] == 0


def test_the_model_in_the_servers_own_process_gives_the_same_results(server: Server, tmp_path: Path) -> None:
    """[serve] model_process = false: the same segments and shares as with the model process."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[serve]\nmodel_process = false\n")
    inline = Server("--config", str(cfg))
    try:
        here, code = stream(inline.url, pcm())
    finally:
        inline.stop()
    there, _ = stream(server.url, pcm())
    assert code == 1000 and len(segments(here)) == 6
    for a, b in zip(segments(here), segments(there)):
        assert a["segment"] == b["segment"] and a["shares"] == b["shares"]


def test_two_model_processes_share_the_streams(server: Server) -> None:
    """serve --workers 2: two model processes of one core each; streams opened together go
    one to each (the least loaded) and score as on one model process."""
    two = Server("--workers", "2")
    try:
        health = json.loads(two.get("/healthz")[1])["model_process"]
        assert health["workers"] == 2 and health["streams"] == [0, 0] and health["up"]
        out: dict[int, tuple] = {}
        clients = [threading.Thread(target=lambda i=i: out.update({i: stream(two.url, pcm(), chunk_s=0.5)}))
                   for i in range(2)]  # fmt: skip
        for c in clients:
            c.start()
        seen = []
        while any(c.is_alive() for c in clients):
            seen.append(json.loads(two.get("/healthz")[1])["model_process"]["streams"])
            time.sleep(0.05)
        assert [1, 1] in seen and [2, 0] not in seen and [0, 2] not in seen
        assert "emomon_workers 2.0" in two.get("/metrics")[1]
    finally:
        _, err = two.stop()
    assert "Traceback" not in err
    one, _ = stream(server.url, pcm())
    for messages, code in out.values():
        assert code == 1000 and len(segments(messages)) == 6
        for a, b in zip(segments(messages), segments(one)):
            assert a["segment"] == b["segment"] and a["shares"] == pytest.approx(b["shares"], abs=1e-3)


def test_replay_through_the_server_logs_what_a_local_replay_logs(tmp_path: Path) -> None:
    # int8 scores each segment in its own encoder pass (model/compute.py: configure), so the server and a
    # local replay, which batch segments differently, give the same shares on any CPU (under
    # bf16 they differ by about 1e-3 on a CPU with AMX).
    # A WebM/Opus copy of the sample (48 kHz) goes too: through --server the client resamples it
    # (the same Resampler a local run cuts it with) and sends 16 kHz PCM.
    cfg = tmp_path / "c.toml"
    cfg.write_text('[runtime]\ndtype = "int8"\n')
    (tmp_path / "copy.webm").write_bytes(opus("webm"))
    server = Server("--config", str(cfg))
    cli = [sys.executable, "-m", "emomon.cli", "--config", str(cfg), "replay", "--sample", "copy.webm",
           "--no-dashboard", "--speed", "0"]  # fmt: skip
    try:
        remote = subprocess.run([*cli, "--server", f"ws://127.0.0.1:{server.port}", "--csv", "remote.csv"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    finally:
        server.stop()
    local = subprocess.run([*cli, "--csv", "local.csv"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
    assert f"12 segment(s) from 2 file(s) via ws://127.0.0.1:{server.port}" in remote.stdout
    rows = {name: list(csv.DictReader((tmp_path / f"{name}.csv").open())) for name in ("remote", "local")}
    assert len(rows["remote"]) == len(rows["local"]) == 12
    assert [r["source"] for r in rows["remote"]] == [r["source"] for r in rows["local"]]
    for a, b in zip(rows["remote"], rows["local"]):
        keys = ("segment", "start_s", "end_s", "top_emotion")
        assert [a[k] for k in keys] == [b[k] for k in keys]
        # the same model on the same segments: the server sends 4 decimals. The WebM's decoded
        # samples also go over the wire as 16-bit PCM (the sample's own are 16-bit already), and
        # Opus gives peaks past 1.0, which 16 bits clip: its loudest sentence moves by 0.007
        tolerance = 5e-5 if a["source"].endswith(".wav") else 0.02
        for e in ("anger", "happiness", "sadness"):
            assert abs(float(a[e]) - float(b[e])) <= tolerance, (a["source"], a["segment"], e)


def test_a_refused_remote_stream_is_one_sentence(tmp_path: Path) -> None:
    s = Server("--token", "s3cret")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "emomon.cli", "replay", "--sample", "--no-dashboard",
             "--server", f"ws://127.0.0.1:{s.port}", "--token", "wrong"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        s.stop()
    assert out.returncode == 2
    assert out.stderr == f"emomon: Server ws://127.0.0.1:{s.port} refused the stream: the token is missing or wrong.\n"


def test_serve_jsonl_goes_to_a_file_not_stdout() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "emomon.cli", "serve", "--port", str(free_port()), "--jsonl", "-"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr == "emomon: emomon serve writes JSON Lines to a file (--jsonl FILE), not to stdout.\n"


def test_speakers_per_stream(tmp_path: Path) -> None:
    """serve --speakers: two streams of the same two-speaker call at once, each with its own speakers."""
    from concurrent.futures import ThreadPoolExecutor

    from support.speakers import SAME_TOML, build_conversation

    call, _ = build_conversation(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(SAME_TOML)
    s = Server("--config", str(cfg), "--speakers", "--csv", str(tmp_path / "all.csv"))
    try:
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda _: stream(s.url, pcm(path=call), chunk_s=0.5), range(2)))
    finally:
        s.stop()
    for messages, code in runs:
        got = segments(messages)
        assert code == 1000
        assert [m["speaker"] for m in got] == ["speaker 1", "speaker 2"] * 3  # numbered per stream
        assert [m.get("part") for m in got[-2:]] == [1, 2] and got[-2]["segment"] == got[-1]["segment"]
    with (tmp_path / "all.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["speaker"] for r in rows} == {"speaker 1", "speaker 2"}


# ------------------------------------------------------------------ compressed streams (issue 41)


def opus(fmt: str) -> bytes:
    """The bundled sample as a browser's MediaRecorder writes it: Opus at 32 kb/s in WebM
    (Chromium) or Ogg (Firefox), by PyAV's encoder."""
    import tempfile

    from support.data import SAMPLE
    from support.media import encode

    from emomon.model.audio import SAMPLE_RATE, read_audio

    with tempfile.TemporaryDirectory() as tmp:
        return encode(read_audio(SAMPLE), SAMPLE_RATE, Path(tmp) / f"sample.{fmt}", "webm").read_bytes()


@pytest.mark.parametrize("fmt", ["webm", "ogg"])
def test_an_opus_stream_gives_the_segments_pcm_gives(server: Server, fmt: str) -> None:
    """WebM/Opus and Ogg/Opus in chunks of about a quarter second (MediaRecorder's
    timeslice), against the same speech as 16-bit PCM: the same six segments within 60 ms,
    the same top emotion where the PCM stream's is clear, at a tenth of the bytes."""
    data = opus(fmt)
    got, code = stream(f"{server.url}?format={fmt}", data, step=1000)  # 32 kb/s: 1000 bytes is 0.25 s
    want, _ = stream(server.url, pcm())
    assert code == 1000 and got[0]["sample_rate"] == 48000 and got[-1] == {"type": "end"}, got[-3:]
    assert len(data) < len(pcm()) / 5
    g, w = segments(got), segments(want)
    assert len(g) == len(w) == 6
    for a, b in zip(g, w):
        assert abs(a["start_s"] - b["start_s"]) <= 0.06 and abs(a["end_s"] - b["end_s"]) <= 0.06
        top = sorted(b["shares"].values(), reverse=True)
        if top[0] - top[1] >= 0.1:
            assert a["top_emotion"] == b["top_emotion"]


def test_an_undecodable_opus_stream_is_closed_alone_and_counted(server: Server) -> None:
    out: dict[str, tuple] = {}
    good = threading.Thread(target=lambda: out.update(good=stream(server.url, pcm())))
    good.start()
    with connect(f"{server.url}?format=webm", max_size=None) as ws:
        assert json.loads(ws.recv(timeout=20))["sample_rate"] == 48000
        for _ in range(3):
            ws.send(bytes(range(256)) * 8)  # chunks that are no WebM at all
        ws.send(json.dumps({"type": "end"}))
        said = []
        with pytest.raises(ConnectionClosed):
            while True:
                said.append(json.loads(ws.recv(timeout=30)))
    errors = [m for m in said if m["type"] == "error"]
    assert ws.close_code == 1007 and len(errors) == 1 and "stream" in errors[0]["message"], said
    good.join(120)
    assert [s["segment"] for s in segments(out["good"][0])] == list(range(6)) and out["good"][1] == 1000
    _, text = server.get("/metrics")
    assert 'emomon_refused_total{reason="undecodable"} 1.0' in text


def test_an_unknown_format_is_refused(server: Server) -> None:
    with connect(f"{server.url}?format=mp3") as ws:
        err = json.loads(ws.recv(timeout=20))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=20)
    assert err["message"] == "format 'mp3' is not one of pcm16, webm, ogg." and ws.close_code == 1008
