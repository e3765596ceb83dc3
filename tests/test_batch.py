"""`emomon batch` end to end with the shipped default model on real Emo-DB speech: rows equal
replay's, a manifest's columns carried, stereo calls per channel, files that break off or
are missing, --resume after SIGTERM and SIGKILL, a worker killed mid-run, bad input."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import soxr
from support.data import load_clip
from support.outputs import segment_marks
from support.processes import machine_lock

from emomon.cli import main
from emomon.model.audio import SAMPLE_RATE
from emomon.streamer.batch.inputs import expand
from emomon.streamer.batch.store import output_columns

pytestmark = [pytest.mark.system, pytest.mark.corpora, pytest.mark.weights]


@pytest.fixture(scope="module", autouse=True)
def _ray_alone():
    """Ray runs here (its two-node cluster, a local instance): no other test's Ray meanwhile."""
    with machine_lock("ray"):
        yield


CLI = [sys.executable, "-m", "emomon.cli"]
# int8 scores every segment in its own encoder pass (model/compute.py: configure), so batch and replay,
# which group segments differently, give the same shares on any CPU.
CONFIG = '[runtime]\ndtype = "int8"\n\n[batch]\npart_s = 0.0\n'


def speech(names: list[str], pause_s: float = 1.0, lead_s: float = 0.5) -> np.ndarray:
    """Emo-DB sentences one after another with pauses between them."""
    parts = [np.zeros(int(lead_s * SAMPLE_RATE), np.float32)]
    for n in names:
        parts += [load_clip(n), np.zeros(int(pause_s * SAMPLE_RATE), np.float32)]
    return np.concatenate(parts)


def build_inputs(folder: Path) -> dict[str, Path]:
    """A mono 16 kHz file, a 44.1 kHz stereo FLAC in a sub-folder, a stereo call (a different
    speaker on each channel, taking turns), a FLAC that breaks off after two sentences, and
    the call's two channels alone."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    names = {"a": "a.wav", "b": "sub/b.flac", "call": "call.wav", "broken": "broken.flac", "left": "left.wav",
             "right": "right.wav"}  # fmt: skip
    paths = {k: folder / v for k, v in names.items()}
    sf.write(paths["a"], speech(["03a01Wa.wav", "03a02Wb.wav"]), SAMPLE_RATE)
    b = soxr.resample(speech(["08a01Na.wav", "08a01Fd.wav", "08a02Ac.wav"]), SAMPLE_RATE, 44100)
    sf.write(paths["b"], np.stack([b, 0.5 * b], axis=1), 44100)
    agent = speech(["09a01Nb.wav", "09a01Fa.wav"], pause_s=3.0)
    customer = np.concatenate([np.zeros(int(2.5 * SAMPLE_RATE), np.float32), speech(["10a01Wa.wav", "10a02Wa.wav"])])
    n = max(len(agent), len(customer))
    left, right = np.pad(agent, (0, n - len(agent))), np.pad(customer, (0, n - len(customer)))
    sf.write(paths["call"], np.stack([left, right], axis=1), SAMPLE_RATE)
    sf.write(paths["left"], left, SAMPLE_RATE)
    sf.write(paths["right"], right, SAMPLE_RATE)
    sf.write(paths["broken"], speech(["11a01Wc.wav", "11a02Ec.wav", "11a01Nd.wav", "11a02Fb.wav"], 0.7), SAMPLE_RATE,
             format="FLAC")  # fmt: skip
    raw = bytearray(paths["broken"].read_bytes())
    cut = int(len(raw) * 0.6)
    raw[cut : cut + 4000] = b"\xff" * 4000  # the decoder loses sync here
    paths["broken"].write_bytes(bytes(raw))
    return paths


def run_cli(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=600, **kw)


def segments(out: Path) -> list[dict]:
    return pq.read_table(out / "segments").to_pylist()


def by_segment(rows: list[dict]) -> dict[tuple, dict]:
    """Rows keyed by (source, channel, segment); fails on a row seen twice."""
    keyed = {(r["source"], r["channel"], r["segment"]): r for r in rows}
    assert len(keyed) == len(rows), "a segment is in the output twice"
    return keyed


def assert_same_rows(got: list[dict], want: list[dict], emotions: tuple[str, ...]) -> None:
    g, w = by_segment(got), by_segment(want)
    assert g.keys() == w.keys()
    for k in w:
        assert (g[k]["start_s"], g[k]["end_s"], g[k]["status"]) == (w[k]["start_s"], w[k]["end_s"], w[k]["status"])
        for e in emotions:
            assert g[k][e] == pytest.approx(w[k][e], abs=1e-5), (k, e)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The inputs, a manifest over them (with a missing file and two columns of its own), and
    one uninterrupted batch run of that manifest with 2 workers: the reference."""
    root = tmp_path_factory.mktemp("batch")
    (root / "config.toml").write_text(CONFIG)
    paths = build_inputs(root / "audio")
    manifest = root / "audio" / "calls.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "call_id", "agent"])
        for i, k in enumerate(("a", "b", "call", "broken")):
            w.writerow([paths[k].relative_to(root / "audio"), 100 + i, f"agent{i % 2}"])
        w.writerow(["gone.wav", 104, "agent0"])
    done = run_cli(["batch", str(manifest), "--out", "ref", "--workers", "2"], root)
    return {"root": root, "paths": paths, "manifest": manifest, "ref": root / "ref", "proc": done}


def test_rows_equal_what_replay_logs_and_the_manifest_columns_come_along(world: dict) -> None:
    root, paths, ref = world["root"], world["paths"], world["ref"]
    assert world["proc"].returncode == 1, world["proc"].stderr  # two files could not be scored
    files = [paths[k] for k in ("a", "b", "call", "broken")]
    replayed = run_cli(["replay", *map(str, files), "--speed", "0", "--csv", "replay.csv", "--no-dashboard"], root)
    assert replayed.returncode == 1 and "is corrupt after" in replayed.stdout  # the broken file, as in batch
    with (root / "replay.csv").open(newline="") as f:
        logged = list(csv.DictReader(f))
    schema = pq.read_schema(ref / "segments" / next(p.name for p in (ref / "segments").glob("part-*.parquet")))
    emotions = tuple(schema.names[schema.names.index("duration_s") + 1 : schema.names.index("top_emotion")])
    assert len(emotions) == 9
    rows = segments(ref)
    assert len(rows) == len(logged) >= 8
    got = by_segment(rows)
    for r in logged:
        b = got[(r["source"], None, int(r["segment"]))]
        assert f"{b['start_s']:.3f}" == r["start_s"] and f"{b['end_s']:.3f}" == r["end_s"]
        assert b["status"] == r["status"] == "ok" and b["top_emotion"] == r["top_emotion"]
        for e in emotions:
            assert abs(b[e] - float(r[e])) <= 1e-5, (r["source"], r["segment"], e)
        assert b["id"].endswith(r["id"][-5:])  # ...-NNNN, after the run and a tag of its own
    for b in rows:
        assert b["call_id"] in (100, 101, 102, 103) and b["agent"] in ("agent0", "agent1")
        assert len(b["sha256"]) == 64 and b["sample_rate"] in (16000, 44100) and b["file_duration_s"] > 1
    # the part files are whole, and a query engine reads the folder as it is
    import duckdb

    anger = duckdb.sql(
        f"SELECT call_id, avg(anger) AS anger, count(*) AS n FROM '{ref}/segments/*.parquet' "
        "WHERE status = 'ok' GROUP BY call_id ORDER BY call_id"
    ).fetchall()
    assert [c for c, _, _ in anger] == [100, 101, 102, 103] and sum(n for *_, n in anger) == len(rows)
    assert anger[0][1] > anger[2][1]  # file a is two angry sentences, the call is calm then angry


def test_errors_files_and_summary_say_what_happened(world: dict) -> None:
    ref = world["ref"]
    with (ref / "errors.csv").open(newline="") as f:
        errors = {Path(r["path"]).name: r["error"] for r in csv.DictReader(f)}
    assert errors.keys() == {"gone.wav", "broken.flac"}
    assert errors["gone.wav"].endswith("does not exist.") and "is corrupt after" in errors["broken.flac"]
    files = {Path(r["path"]).name: r for r in pq.read_table(ref / "files.parquet").to_pylist()}
    assert files.keys() == {"a.wav", "b.flac", "call.wav", "broken.flac", "gone.wav"}
    assert files["broken.flac"]["segments"] >= 1  # what came before the break is kept
    assert files["b.flac"]["channels"] == 2 and files["b.flac"]["call_id"] == 101
    summary = json.loads((ref / "summary.json").read_text())
    assert summary["files"] == 5 and summary["errors"] == 2 and summary["complete"] is True
    assert summary["segments"] == sum(f["segments"] for f in files.values()) == len(segments(ref))
    assert summary["audio_hours"] == pytest.approx(sum(f["file_duration_s"] or 0 for f in files.values()) / 3600, 1e-3)
    assert summary["model"]["bundle"] == "default" and summary["settings"]["channels"] == "mix"
    assert summary["this_run"]["throughput"] > 0 and summary["runtime"]["dtype"] == "int8"
    assert not list(ref.rglob(".*.tmp"))


def test_each_channel_of_a_call_is_its_own_stream(world: dict) -> None:
    root, paths = world["root"], world["paths"]
    files = [str(paths[k]) for k in ("call", "left", "right")]
    done = run_cli(["batch", *files, "--out", "each", "--channels", "each", "--workers", "1"], root)
    assert done.returncode == 0, done.stderr
    rows = segments(root / "each")
    call = [r for r in rows if r["source"] == files[0]]
    assert {r["channel"] for r in call} == {0, 1}
    emotions = ("anger", "neutral", "sadness")
    for channel, alone in ((0, files[1]), (1, files[2])):
        mine = [{**r, "source": "x", "channel": 0} for r in call if r["channel"] == channel]
        theirs = [{**r, "source": "x"} for r in rows if r["source"] == alone]
        assert len(mine) == 2
        assert_same_rows(mine, theirs, emotions)
    # the agent speaks first, the customer answers on the other channel
    first = {c: min(r["start_s"] for r in call if r["channel"] == c) for c in (0, 1)}
    assert first[0] < first[1]
    assert len({r["id"] for r in rows}) == len(rows)
    # emomon plot reads the call out of the folder (a filter on its source): a lane per channel
    drawn = run_cli(["plot", "each", "--file", Path(files[0]).name, "-o", "call.svg"], root)
    assert drawn.returncode == 0, drawn.stderr
    assert "4 segments, 2 channels" in drawn.stdout and segment_marks(root / "call.svg") == 4
    many = run_cli(["plot", "each"], root)
    assert many.returncode == 2 and "holds 3 recordings" in many.stderr and "name one with --file" in many.stderr


def wait_for_parts(out: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(list((out / "segments").glob("part-*.parquet"))) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_resume_after_sigterm_and_sigkill_equals_an_uninterrupted_run(world: dict) -> None:
    import psutil

    root, manifest, out = world["root"], str(world["manifest"]), world["root"] / "resumed"
    args = [*CLI, "batch", manifest, "--out", str(out), "--workers", "1"]
    first = subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_parts(out, 1, first)
    first.send_signal(signal.SIGTERM)
    stdout, _ = first.communicate(timeout=120)
    assert first.returncode == 130 and "--resume" in stdout
    assert json.loads((out / "summary.json").read_text())["complete"] is False
    again = run_cli(["batch", manifest, "--out", str(out), "--workers", "1"], root)
    assert again.returncode == 2 and "already holds a batch run: add --resume" in again.stderr
    second = subprocess.Popen([*args, "--resume"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    held = len(list((out / "segments").glob("part-*.parquet")))
    wait_for_parts(out, held + 1, second)
    workers = psutil.Process(second.pid).children(recursive=True)
    second.kill()  # SIGKILL: no goodbye; its worker goes with it
    second.wait(timeout=30)
    psutil.wait_procs(workers, timeout=30)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    for part in (out / "segments").glob("part-*.parquet"):
        pq.read_table(part)  # every part is whole
    third = run_cli(["batch", manifest, "--out", str(out), "--resume"], root)
    assert third.returncode == 1, third.stderr  # the two files that cannot be scored
    assert "already done" in third.stdout
    assert_same_rows(segments(out), segments(world["ref"]), ("anger", "boredom", "neutral"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["files"] == 5 and summary["errors"] == 2
    assert not list(out.rglob(".*.tmp"))


def test_a_worker_killed_mid_run_is_replaced_and_every_file_is_there_once(world: dict) -> None:
    import psutil

    root, manifest, out = world["root"], str(world["manifest"]), world["root"] / "killed"
    proc = subprocess.Popen([*CLI, "batch", manifest, "--out", str(out), "--workers", "2"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for_parts(out, 1, proc)
    workers = [p for p in psutil.Process(proc.pid).children() if "resource_tracker" not in " ".join(p.cmdline())]
    assert len(workers) == 2
    for w in workers:  # model/memory.py: what keeps a worker's memory flat (libtcmalloc-minimal4 in CI)
        assert "libtcmalloc" in Path(f"/proc/{w.pid}/maps").read_text()
        assert w.environ()["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"
    assert "LD_PRELOAD" not in psutil.Process(proc.pid).environ()  # the driver's own is as it was
    workers[0].kill()
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    assert_same_rows(segments(out), segments(world["ref"]), ("anger", "happiness", "sadness"))
    assert json.loads((out / "summary.json").read_text())["files"] == 5


def test_a_full_disk_is_one_sentence_and_resume_goes_on(world: dict) -> None:
    """Files may grow to 3,000 bytes (RLIMIT_FSIZE; SIGXFSZ ignored, so a write fails with
    EFBIG as on a full disk): run.json fits, the first part does not."""
    import resource

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited by the workers, as the limit is
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    root, out = world["root"], world["root"] / "full"
    args = ["batch", str(world["paths"]["a"]), "--out", str(out), "--workers", "1"]
    full = subprocess.run([*CLI, *args], cwd=root, capture_output=True, text=True, timeout=600,
                          preexec_fn=small_disk)  # fmt: skip
    assert full.returncode == 2, full.stderr
    err = full.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emomon: ") and "cannot be written: File too large" in err[0], err
    assert "--resume" in err[0]
    assert (out / "run.json").is_file()
    assert not list((out / "segments").glob("part-*")) and not list(out.rglob(".*.tmp"))  # no part, whole or half
    again = run_cli([*args, "--resume"], root)
    assert again.returncode == 0, again.stderr
    assert sorted(r["segment"] for r in segments(out)) == [0, 1]  # the two sentences


def test_inputs_expand_folders_patterns_and_manifests_largest_first(world: dict, tmp_path: Path) -> None:
    audio = world["root"] / "audio"
    (audio / "notes.txt").write_text("not audio")
    items, extra = expand([str(audio)])
    names = [Path(it.source).name for it in items]
    assert set(names) == {"a.wav", "b.flac", "call.wav", "broken.flac", "left.wav", "right.wav"}  # sub/ too
    assert [it.size for it in items] == sorted((it.size for it in items), reverse=True)
    assert len(extra) == 0
    items, _ = expand([str(audio / "*.wav"), str(audio / "a.wav")])
    assert sorted(Path(it.source).name for it in items) == ["a.wav", "call.wav", "left.wav", "right.wav"]  # once
    items, extra = expand([str(world["manifest"])])
    assert extra.names == ["call_id", "agent"] and len(items) == 5
    assert {it.extra["call_id"] for it in items} == {100, 101, 102, 103, 104}
    call_centre = tmp_path / "calls.csv"  # a speaker column of its own is usual in call centres
    call_centre.write_text(f"path,speaker\n{audio / 'a.wav'},Ann\n")
    items, extra = expand([str(call_centre)], output_columns(("anger",), speakers=False))
    assert extra.names == ["speaker"] and items[0].extra == {"speaker": "Ann"}  # without --speakers it is theirs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere.wav", "--out", "o"], "Input 'nowhere.wav' does not exist."),
        (["empty", "--out", "o"], "Input folder 'empty' holds no audio files"),
        (["audio/*.mp3", "--out", "o"], "Input pattern 'audio/*.mp3' matches no file."),
        (["bad.csv", "--out", "o"], "Manifest 'bad.csv' has no 'path' column (its columns: file, call)."),
        # the tracker's `speaker` column: a manifest's own would have made a second one (an unreadable output)
        (["agents.csv", "--out", "o", "--speakers"],
         "Manifest 'agents.csv' has a column 'speaker' that the output has too; rename it."),
        (["agents.csv", "--out", "o", "--channels", "each"],
         "Manifest 'agents.csv' has a column 'channel' that the output has too; rename it."),
        (["audio/a.wav"], "Say where the results go: --out DIR"),
        (["audio/a.wav", "--out", "config.toml"], "Output folder 'config.toml' is a file, not a folder."),
        (["audio/a.wav", "--out", "config.toml/o"], "'config.toml/o' cannot be created: Not a directory"),
        (["audio/a.wav", "--out", "ref"], "Output folder 'ref' already holds a batch run: add --resume"),
        (["audio/a.wav", "--out", "ref", "--resume", "--channels", "each"],
         "Output folder 'ref' was scored with other settings (channels: 'mix' there, 'each' now)"),
        (["audio/a.wav", "--out", "o", "--workers", "-1"], "emomon batch: workers must be 0 (automatic) or more"),
        (["audio/a.wav", "--out", "o", "--engine", "ray", "--address", "127.0.0.1:1"],
         "Ray cluster at '127.0.0.1:1' cannot be reached: Connection refused."),
    ],
)  # fmt: skip
def test_bad_input_is_one_sentence(world: dict, args: list[str], message: str, capsys, monkeypatch) -> None:
    root = world["root"]
    (root / "empty").mkdir(exist_ok=True)
    (root / "bad.csv").write_text("file,call\na.wav,1\n")
    (root / "agents.csv").write_text("path,speaker\naudio/a.wav,Ann\n" if "--speakers" in args else
                                     "path,channel\naudio/a.wav,left\n")  # fmt: skip
    monkeypatch.chdir(root)
    before = sorted(p.name for p in root.rglob("*"))
    assert main(["batch", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emomon: ") and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in root.rglob("*")) == before  # nothing written, the earlier run untouched
    shutil.rmtree(root / "o", ignore_errors=True)


# A second `ray start` on this machine: Ray's CLI refuses to join a cluster in its
# single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), and outside that mode it rewrites
# 127.0.0.1 to the machine's outward address and binds every server to all interfaces
# (ray-project/ray#59110). So the CLI's one check is lifted, and everything stays on loopback.
SECOND_NODE = """
import sys, types
import ray._private.ray_constants as constants
import ray.scripts.scripts as cli
lifted = types.ModuleType("ray_constants")
lifted.__dict__.update(constants.__dict__)
lifted.ENABLE_RAY_CLUSTER = True
cli.ray_constants = lifted
sys.argv = ["ray", "start", *sys.argv[1:]]
cli.main()
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster() -> dict:
    """A real two-node Ray cluster on loopback: `ray start --head` and a second `ray start
    --address`, one CPU each, token authentication, no usage statistics."""
    import os
    import secrets

    ray = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # fmt: skip
    address = f"127.0.0.1:{free_port()}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run([ray, "start", "--head", f"--port={address.split(':')[1]}", "--include-dashboard=false",
                        *common], env=env, check=True, capture_output=True, timeout=120)  # fmt: skip
        subprocess.run([sys.executable, "-c", SECOND_NODE, f"--address={address}", *common], env=env, check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        yield {"address": address, "env": env}
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


def copies(world: dict, n: int) -> Path:
    """A manifest of `n` copies of every scoreable input of the reference run."""
    root = world["root"]
    manifest = root / f"copies{n}.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "call_id", "agent"])
        for k in range(n):
            for i, name in enumerate(("a", "b", "call", "broken")):
                src = world["paths"][name]
                dst = root / f"copy{k}" / src.name
                dst.parent.mkdir(exist_ok=True)
                shutil.copyfile(src, dst)
                w.writerow([dst, 100 + i, f"agent{i % 2}"])
    return manifest


def as_original(rows: list[dict], world: dict) -> dict[str, list[dict]]:
    """Rows grouped by copy folder, with the source the reference run has for that file."""
    by_name = {p.name: str(p) for p in world["paths"].values()}
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(Path(r["source"]).parent.name, []).append({**r, "source": by_name[Path(r["source"]).name]})
    return out


def test_ray_on_two_nodes_survives_a_killed_worker_with_every_file_once(world: dict, ray_cluster: dict) -> None:
    import psutil

    root, out = world["root"], world["root"] / "ray2"
    manifest = copies(world, 3)
    cmd = [*CLI, "batch", str(manifest), "--out", str(out), "--engine", "ray", "--address", ray_cluster["address"],
           "--workers", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=root, env=ray_cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    wait_for_parts(out, 1, proc)
    actors = [p for p in psutil.process_iter(["cmdline"])
              if "StreamScore" in " ".join(p.info["cmdline"] or [])]  # the default adapts: stream scorers  # fmt: skip
    assert actors, "no scoring actor found"
    env = actors[0].environ()  # the cache bound; no tcmalloc preload on a cluster's unknown nodes
    assert env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64" and env["MALLOC_ARENA_MAX"] == "2"
    assert "LD_PRELOAD" not in env
    actors[0].kill()  # SIGKILL, mid-run: Ray restarts the actor and sends its piece again
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr  # the three broken copies
    for part in (out / "segments").glob("part-*.parquet"):
        pq.read_table(part)
    assert not list(out.rglob(".*.tmp"))
    groups = as_original(segments(out), world)
    ref = segments(world["ref"])
    assert sorted(groups) == ["copy0", "copy1", "copy2"]
    for rows in groups.values():
        assert_same_rows(rows, ref, ("anger", "neutral", "sadness"))
    files = pq.read_table(out / "files.parquet").to_pylist()
    assert len(files) == len({f["path"] for f in files}) == 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["errors"] == 3 and summary["runtime"]["engine"] == "ray"


def test_ray_on_a_local_instance_gives_the_local_engines_rows(world: dict) -> None:
    root, out = world["root"], world["root"] / "ray1"
    done = run_cli(["batch", str(world["manifest"]), "--out", str(out), "--engine", "ray", "--workers", "1"], root)
    assert done.returncode == 1, done.stderr
    assert_same_rows(segments(out), segments(world["ref"]), ("anger", "fear", "surprise"))
    assert "Token authentication" not in done.stderr and "core_worker" not in done.stderr  # Ray's notes need -v
