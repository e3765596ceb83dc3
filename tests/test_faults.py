"""The fault matrix: what emomon keeps when a part of it fails. Each case failed before the
change that made it hold (issue 38).

- the model process killed (kill -9) mid-stream under 8 live streams (serve): a result for
  every segment, ok or error naming the cause, and the end within 30 s; later segments ok;
  /healthz 503, then 200; no traceback;
- the model process dying again and again (serve): the server stops, one sentence, exit 2;
- the model process hanging (ModelProcess): the call ends after model_timeout_s, a new one answers;
- an output on a full disk at start (replay): one sentence, exit 1, no audio read;
- an output on a disk that fills mid-run, or past a file-size limit (replay): one sentence,
  the other outputs complete, every row before the fault whole, exit 1;
- a file name that is not UTF-8 (replay, batch, --resume): scored, every output readable by
  pandas, pyarrow and DuckDB;
- four processes exporting one bundle to a cold ONNX cache: one export, all four score;
- a cache folder others can write, or none at all: one sentence; a batch worker that cannot
  load the model stops the run;
- a page rebound by DNS to 127.0.0.1, and sample_rate "²" (serve): 403 / close 1008, counted;
- the --server client's token: in a header, never in the address;
- two runs on one batch output folder: the second refused, naming the first;
- a folder reached through links, twice, and a link back up (batch): each file once;
- a file name that a spreadsheet would run as a formula (CSV logs): quoted, read back by plot.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from support.data import SAMPLE
from support.models import make_bundle, save_tiny_whisper
from support.processes import Server, pcm, run_cli, segments

CLI = [sys.executable, "-m", "emomon.cli"]
LATIN1 = os.fsdecode(b"caf\xe9.wav")  # a name Python reads with a surrogate: not UTF-8


def health(server: Server) -> tuple[int, dict]:
    try:
        status, body = server.get("/healthz")
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read().decode()
    return status, json.loads(body)


def model_child(server: Server):
    """The server's model process (multiprocessing's spawned child, not its resource tracker)."""
    import psutil

    kids = psutil.Process(server.proc.pid).children(recursive=True)
    [child] = [k for k in kids if "spawn_main" in " ".join(k.cmdline())]
    return child


def live_stream(url: str, data: bytes, start_in_s: float, out: dict, key: int) -> None:
    """A client streaming in real time (0.25 s chunks), then end; every message and the close code."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    time.sleep(start_in_s)
    messages = []
    with connect(url, open_timeout=30) as ws:
        messages.append(json.loads(ws.recv(timeout=30)))
        step, t0 = 4000 * 2, time.monotonic()
        for k, i in enumerate(range(0, len(data), step)):
            ws.send(data[i : i + step])
            time.sleep(max(0.0, t0 + (k + 1) * 0.25 - time.monotonic()))
        ws.send(json.dumps({"type": "end"}))
        ended = time.monotonic()
        with contextlib.suppress(ConnectionClosed):
            while True:
                messages.append(json.loads(ws.recv(timeout=60)))
    out[key] = (messages, ws.close_code, time.monotonic() - ended)


# -- the model process ---------------------------------------------------------------------
@pytest.mark.system
@pytest.mark.weights
def test_a_killed_model_process_fails_its_segments_and_the_streams_go_on(tmp_path: Path) -> None:
    """Eight live streams; the model process is stopped while it scores (SIGSTOP, so that its
    call is in flight for certain), then killed as the OOM killer would (SIGKILL)."""
    server = Server("--csv", str(tmp_path / "serve.csv"))
    try:
        out: dict[int, tuple] = {}
        data = pcm()
        clients = [threading.Thread(target=live_stream, args=(server.url, data, 0.15 * i, out, i)) for i in range(8)]
        for c in clients:
            c.start()
        time.sleep(5.5)  # the first sentence of each stream scored, the second ends at ~6 s
        child = model_child(server)
        child.send_signal(signal.SIGSTOP)
        time.sleep(1.5)  # the second sentences close and their call waits on the stopped process
        child.send_signal(signal.SIGKILL)
        seen = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and (not seen or seen[-1] != 200 or 503 not in seen):
            seen.append(health(server)[0])
            time.sleep(0.2)
        for c in clients:
            c.join(90)
        status, body = health(server)
    finally:
        _, stderr = server.stop()
    assert 503 in seen and seen[-1] == 200 and seen.index(503) < len(seen) - 1  # degraded, then ok again
    assert (
        status == 200
        and body["status"] == "ok"
        and body["model_process"] == {"up": True, "restarts": 1, "workers": 1, "streams": [0]}
    )
    failed = []
    for messages, code, waited in out.values():
        got = segments(messages)
        assert [m["segment"] for m in got] == list(range(6))  # a result for every segment
        assert all(m["status"] in ("ok", "error") for m in got) and got[-1]["status"] == "ok"  # later ones ok again
        assert messages[-1] == {"type": "end"} and code == 1000 and waited < 30
        failed += [m for m in got if m["status"] == "error"]
    errors = {m["error"] for m in failed}
    assert failed and all("The model process died (killed by SIGKILL)" in e for e in errors), errors
    assert "Traceback" not in stderr and "The model process died (killed by SIGKILL); starting a new one." in stderr
    with (tmp_path / "serve.csv").open(newline="") as f:
        assert len(list(csv.DictReader(f))) == 48  # every segment logged, the failed ones as errors


@pytest.mark.system
@pytest.mark.weights
def test_a_model_process_that_keeps_dying_stops_the_server_in_one_sentence(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[serve]\nmodel_restarts = 2\n")
    server = Server("--config", str(cfg))
    try:
        first = model_child(server)
        first.kill()
        deadline = time.monotonic() + 60
        while health(server)[1]["model_process"]["restarts"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        model_child(server).kill()
        server.proc.wait(60)
    finally:
        _, stderr = server.stop()
    assert server.proc.returncode == 2 and "Traceback" not in stderr
    assert stderr.splitlines()[-1] == (
        "emomon: The model process died 2 times within 60 s (last: killed by SIGKILL); the server stopped."
    )


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """A tiny Whisper bundle with random weights (seconds to load, no pinned weights)."""
    from emomon.model.bundle import save_bundle
    from emomon.model.encoder import load_encoder
    from emomon.model.specs import EncoderSpec

    root = tmp_path_factory.mktemp("tiny")
    whisper = save_tiny_whisper(root / "whisper")
    enc = load_encoder(EncoderSpec(kind="whisper", name=str(whisper), layer=1), "cpu", "float32")
    return save_bundle(make_bundle(enc, arch=3, output="softmax", head="shared"), root / "bundle")


@pytest.mark.system
def test_a_model_process_that_stops_answering_is_replaced(tiny_bundle: Path) -> None:
    from emomon.streamer.serve.model_process import ModelProcess, ModelProcessDied

    model = ModelProcess(str(tiny_bundle), "cpu", "float32", call_timeout_s=2.0)
    try:
        segment = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
        [before] = model.predict([segment])
        os.kill(model._proc.pid, signal.SIGSTOP)  # alive, but never answers
        t = time.monotonic()
        with pytest.raises(ModelProcessDied, match="did not answer within 2 s; it was stopped and a new one"):
            model.predict([segment])
        assert time.monotonic() - t < 20  # bounded by the 2 s timeout, not a hang (not a speed goal)
        [after] = model.predict([segment])  # waits for the new process
        assert model.health() == {"up": True, "restarts": 1, "fatal": ""}
        assert after.shares == pytest.approx(before.shares, abs=1e-6)
    finally:
        model.close()


# -- outputs on a full disk ------------------------------------------------------------------
@pytest.mark.system
@pytest.mark.weights
@pytest.mark.parametrize("flag", ["--csv", "--jsonl"])
def test_an_output_that_cannot_be_written_at_start_stops_before_any_audio(tmp_path: Path, flag: str) -> None:
    ok = ["--csv", "ok.csv"] if flag == "--jsonl" else []
    out = subprocess.run([*CLI, "replay", "--sample", "--speed", "0", "--no-dashboard", flag, "/dev/full", *ok],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 1
    what = {"--csv": "CSV file", "--jsonl": "JSON Lines file"}[flag]
    if flag == "--csv":  # the header is written at start: nothing is read or scored
        assert out.stderr == (
            f"emomon: {what} '/dev/full' cannot be written: No space left on device (errno 28: ENOSPC); "
            "nothing was written to it.\n"
        )
        assert out.stdout == ""
    else:  # JSON Lines has no header: its first row fails, alone; the CSV is complete
        assert out.stderr.splitlines() == [
            f"emomon: {what} '/dev/full' cannot be written: No space left on device (errno 28: ENOSPC); nothing "
            "was written to it; the other outputs go on."
        ]
        assert "6 segment(s) from 1 file(s), 1 output(s) failed" in out.stdout
        with (tmp_path / "ok.csv").open(newline="") as f:
            assert [r["status"] for r in csv.DictReader(f)] == ["ok"] * 6


@pytest.mark.system
@pytest.mark.weights
def test_a_disk_that_fills_mid_run_stops_that_output_alone(tmp_path: Path) -> None:
    """The JSON Lines file on a 4 KiB tmpfs fills after a few of the 18 rows; the CSV on
    another disk and the printed lines go on to the end. The tmpfs lives in the process's
    own mount namespace, so it is copied out before that ends."""
    folder = tmp_path / "small"
    folder.mkdir()
    three = [str(SAMPLE)] * 3  # 18 segments
    cmd = [*CLI, "replay", *three, "--speed", "0", "--no-dashboard", "--csv", "ok.csv", "--jsonl",
           str(folder / "log.jsonl")]  # fmt: skip
    script = (f"mount -t tmpfs -o size=4k tmpfs {shlex.quote(str(folder))} && {{ {shlex.join(cmd)}; rc=$?; "
              f"cp {shlex.quote(str(folder / 'log.jsonl'))} copy.jsonl; exit $rc; }}")  # fmt: skip
    # a mount namespace of the test's own (unshare): nothing outlives it, no root needed
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 1, out.stderr
    [said] = [line for line in out.stderr.splitlines() if line.startswith("emomon:")]
    assert said.startswith(
        f"emomon: JSON Lines file '{folder / 'log.jsonl'}' cannot be written: No space left on "
        "device (errno 28: ENOSPC); the "
    ) and said.endswith("are whole; the other outputs go on.")
    lines = (tmp_path / "copy.jsonl").read_text().splitlines()
    assert 3 <= len(lines) < 18 and all(json.loads(x)["type"] == "segment" for x in lines)  # whole lines only
    with (tmp_path / "ok.csv").open(newline="") as f:
        assert len(list(csv.DictReader(f))) == 18
    assert out.stdout.count(" s  ") == 18 and "18 segment(s) from 3 file(s), 1 output(s) failed" in out.stdout


@pytest.mark.system
@pytest.mark.weights
def test_a_csv_past_a_file_size_limit_keeps_whole_rows_and_json_lines_go_on(tmp_path: Path) -> None:
    """RLIMIT_FSIZE: a write past the limit fails (EFBIG) part-way through a row; the row is cut
    back, the CSV stops, JSON Lines on stdout (a pipe: no limit) go on to the last segment."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))

    out = subprocess.run([*CLI, "replay", str(SAMPLE), str(SAMPLE), "--speed", "0", "--no-dashboard", "--csv",
                          "log.csv", "--jsonl", "-"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         preexec_fn=limit)  # fmt: skip
    assert out.returncode == 1
    assert len([json.loads(x) for x in out.stdout.splitlines()]) == 12
    [said] = [line for line in out.stderr.splitlines() if line.startswith("emomon:")]
    assert "CSV file 'log.csv' cannot be written: File too large (errno 27: EFBIG)" in said
    text = (tmp_path / "log.csv").read_text()
    assert text.endswith("\n") and len(text) <= 1500
    rows = list(csv.reader(text.splitlines()))
    assert 2 <= len(rows) < 13 and len({len(r) for r in rows}) == 1  # a header and whole rows


# -- names that are not UTF-8 -------------------------------------------------------------------
def latin1_folder(root: Path) -> Path:
    folder = root / "calls"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / "good.wav")
    shutil.copy(SAMPLE, folder / LATIN1)
    return folder


@pytest.mark.weights
def test_replay_scores_a_file_whose_name_is_not_utf8(tmp_path: Path) -> None:
    import duckdb
    import pandas as pd

    folder = latin1_folder(tmp_path)
    out = run_cli("replay", str(folder), "--speed", "0", "--no-dashboard", "--csv", "log.csv", "--jsonl", "log.jsonl",
                  cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    escaped = str(folder / "caf\\xe9.wav")  # the byte as its escape, everywhere
    table = pd.read_csv(tmp_path / "log.csv")
    assert sorted(set(table["source"])) == sorted({escaped, str(folder / "good.wav")}) and len(table) == 12
    records = pd.read_json(tmp_path / "log.jsonl", lines=True)
    assert (records["source"] == escaped).sum() == 6
    assert duckdb.sql(f"select count(*) from read_csv('{tmp_path / 'log.csv'}') where source = ?",
                      params=[escaped]).fetchall() == [(6,)]  # fmt: skip
    assert "caf\\xe9.wav #5" in out.stdout


@pytest.mark.system
@pytest.mark.weights
def test_batch_and_resume_score_a_file_whose_name_is_not_utf8(tmp_path: Path) -> None:
    import duckdb
    import pyarrow.parquet as pq

    folder = latin1_folder(tmp_path)
    first = subprocess.run([*CLI, "batch", str(folder / "good.wav"), "--out", "o", "--workers", "1"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr
    again = subprocess.run([*CLI, "batch", str(folder), "--out", "o", "--workers", "1", "--resume"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "1 file(s) to score (1 already done)" in again.stdout
    files = pq.read_table(tmp_path / "o" / "files.parquet").to_pylist()
    escaped = str(folder / "caf\\xe9.wav")
    assert sorted(f["path"] for f in files) == sorted([escaped, str(folder / "good.wav")])
    assert all(f["status"] == "ok" and f["segments"] == 6 for f in files)
    rows = duckdb.sql(f"select source, count(*) from '{tmp_path / 'o' / 'segments'}/*.parquet' group by source")
    assert sorted(rows.fetchall()) == sorted([(escaped, 6), (str(folder / "good.wav"), 6)])
    with (tmp_path / "o" / "errors.csv").open(newline="") as f:
        assert list(csv.reader(f)) == [["path", "source", "error"]]
    done = subprocess.run([*CLI, "batch", str(folder), "--out", "o", "--resume"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and "0 file(s) to score (2 already done)" in done.stdout


# -- the ONNX cache ---------------------------------------------------------------------------
@pytest.mark.system
def test_four_processes_on_a_cold_cache_export_once_and_all_score(tiny_bundle: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "EMOMON_ONNX_CACHE": str(cache)}
    cmd = [*CLI, "-v", "replay", "--sample", "--speed", "0", "--no-dashboard", "--onnx", "--model", str(tiny_bundle)]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]  # fmt: skip
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e for _, e in results]
    assert all("6 segment(s) from 1 file(s)" in o for o, _ in results)
    assert sum(e.count("exporting") for _, e in results) == 1  # one process exported, three waited and read it
    assert len(list(cache.glob("*.onnx"))) == 1 and len(list(cache.glob("*.sha256"))) == 1
    assert not list(cache.glob(".*"))  # no temporary file left
    assert (cache.stat().st_mode & 0o777) == 0o700


def test_a_cache_folder_others_can_write_is_refused(tmp_path: Path, monkeypatch) -> None:
    from emomon.model.export import ExportError, cache_dir

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setenv("EMOMON_ONNX_CACHE", str(shared))
    with pytest.raises(ExportError, match=r"can be written by other users \(mode 777") as e:
        cache_dir()
    assert "\n" not in str(e.value)
    monkeypatch.setenv("EMOMON_ONNX_CACHE", "/dev/null/cache")
    with pytest.raises(ExportError, match="'/dev/null/cache' cannot be created: Not a directory"):
        cache_dir()


@pytest.mark.system
def test_a_batch_worker_that_cannot_load_the_model_stops_the_run(tiny_bundle: Path, tmp_path: Path) -> None:
    env = {**os.environ, "EMOMON_ONNX_CACHE": "/dev/null/x"}
    out = subprocess.run([*CLI, "batch", str(SAMPLE), "--out", "o", "--onnx", "--model", str(tiny_bundle),
                          "--workers", "1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr == (
        "emomon: Worker 0 cannot load the model: The ONNX cache folder '/dev/null/x' cannot be created: Not a "
        "directory; set EMOMON_ONNX_CACHE to a folder of your own.\n"
    )


# -- serve: hosts and parameters ----------------------------------------------------------------
def raw_request(port: int, host: str, origin: str, path: str = "/v1/stream?sample_rate=16000") -> str:
    """A WebSocket handshake (a plain GET for another path) with the Host and Origin a
    rebound page would send."""
    import socket

    upgrade = "Connection: close\r\n"
    if path.startswith("/v1/stream"):
        upgrade = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n")  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n{upgrade}\r\n".encode())
        answer = s.recv(65536)
        while not answer.startswith(b"HTTP/1.1 101") and (more := s.recv(65536)):  # a body comes after its headers
            answer += more
        return answer.decode("latin-1")


@pytest.mark.system
@pytest.mark.weights
def test_dns_rebinding_and_a_unicode_digit_rate_are_refused() -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server = Server("--allow-host", "emomon.example")
    try:
        port = server.port
        rebound = raw_request(port, f"evil.example:{port}", f"http://evil.example:{port}")
        assert rebound.startswith("HTTP/1.1 403")
        page = raw_request(port, f"evil.example:{port}", f"http://evil.example:{port}", "/metrics")
        assert page.startswith("HTTP/1.1 403") and "is not one this server answers to" in page
        own = raw_request(port, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}")
        assert own.startswith("HTTP/1.1 101")
        named = raw_request(port, f"emomon.example:{port}", f"http://emomon.example:{port}")  # --allow-host
        assert named.startswith("HTTP/1.1 101")
        with connect(f"{server.url}?sample_rate=%C2%B2", open_timeout=20) as ws:  # '²': str.isdigit() is True
            err = json.loads(ws.recv(timeout=20))
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=20)
        assert err == {"type": "error", "message": "sample_rate '²' is not a whole number from 8000 to 48000."}
        assert ws.close_code == 1008
        metrics = server.get("/metrics")[1]
        assert 'emomon_refused_total{reason="host"} 2.0' in metrics
        assert 'emomon_refused_total{reason="rate"} 1.0' in metrics
    finally:
        _, stderr = server.stop()
    assert "Traceback" not in stderr


@pytest.mark.system
def test_the_server_client_sends_its_token_in_a_header_not_the_address(tmp_path: Path) -> None:
    """A stand-in server on loopback records what `replay --server --token` asks for."""
    from websockets.sync.server import serve

    seen: list[tuple[str, str]] = []

    def handler(ws) -> None:
        seen.append((ws.request.path, ws.request.headers.get("Authorization", "")))
        ws.send(json.dumps({"type": "ready", "stream": 1, "model": "stand-in", "emotions": ["calm"]}))
        for msg in ws:
            if isinstance(msg, str):
                ws.send(json.dumps({"type": "end"}))
                return

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        out = subprocess.run([*CLI, "replay", "--sample", "--speed", "0", "--no-dashboard", "--server",
                              f"ws://127.0.0.1:{port}", "--token", "s3cret"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        server.shutdown()
    assert out.returncode == 0, out.stderr
    assert seen == [("/v1/stream?sample_rate=16000", "Bearer s3cret")]


# -- batch: the output folder and the inputs ------------------------------------------------------
@pytest.mark.system
@pytest.mark.weights
def test_a_second_run_on_one_output_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(6):
        shutil.copy(SAMPLE, folder / f"{i}.wav")
    first = subprocess.Popen([*CLI, "batch", str(folder), "--out", "o", "--workers", "1"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "o" / "run.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = subprocess.run([*CLI, "batch", str(folder), "--out", "o", "--resume"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert first.poll() is None  # still running when the second asked
    finally:
        stdout, _ = first.communicate(timeout=300)
    assert second.returncode == 2
    assert second.stderr == (
        f"emomon: Output folder 'o' is in use by another emomon batch (pid {first.pid} on {os.uname().nodename} "
        f"since {second.stderr.split(' since ')[1].split(')')[0]}); wait for it to end, or choose another folder.\n"
    )
    assert first.returncode == 0 and "6 file(s), 0.03 h of audio, 36 segment(s)" in stdout


@pytest.mark.system
@pytest.mark.weights
def test_a_folder_reached_through_links_is_scored_once_per_file(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    real = tmp_path / "real"
    (real / "day1").mkdir(parents=True)
    shutil.copy(SAMPLE, real / "day1" / "a.wav")
    (real / "today").symlink_to(real / "day1")  # the same folder twice
    (real / "loop").symlink_to(real)  # a link back up the tree
    calls = tmp_path / "calls"
    calls.mkdir()
    (calls / "archive").symlink_to(real)  # rglob did not follow this one
    out = subprocess.run([*CLI, "batch", str(calls), str(real / "day1" / "a.wav"), "--out", "o", "--workers", "1"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    files = pq.read_table(tmp_path / "o" / "files.parquet").to_pylist()
    assert [f["path"] for f in files] == [str(real / "day1" / "a.wav")] and files[0]["segments"] == 6


# -- CSV cells that would be formulas ---------------------------------------------------------------
def test_csv_cells_that_would_be_formulas_are_quoted_and_read_back(tmp_path: Path) -> None:
    from emomon.streamer.audio.segmenter import Segment
    from emomon.streamer.outputs.csv_log import CsvLog
    from emomon.streamer.outputs.plot import read_csv
    from emomon.streamer.outputs.record import Row

    emotions = ("anger", "calm")
    names = ['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "\tx", "\rx", "plain"]
    with CsvLog(tmp_path / "log.csv", emotions) as log:
        for i, name in enumerate(names):
            seg = Segment(np.zeros(0, np.float32), 1.0 * i, 1.0 * i + 0.5, i)
            log.write(Row(name, seg.index, seg.start_s, seg.end_s, shares={"anger": 0.25, "calm": 0.75}))
    with (tmp_path / "log.csv").open(newline="") as f:
        cells = [r["source"] for r in csv.DictReader(f)]
    assert cells == ["'" + n for n in names[:-1]] + ["plain"]
    for name in names:
        assert read_csv(tmp_path / "log.csv", name).source == name  # emomon plot reads them as they were
