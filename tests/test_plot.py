"""`emomon plot`: logs written by emomon's own writers -> a picture; a window, a few
emotions, speaker lanes; anything that is not an emomon output refused in one sentence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.data import REPO, SAMPLE
from support.outputs import segment_marks
from support.processes import run_cli

from emomon.streamer.outputs.csv_log import CsvLog
from emomon.streamer.outputs.jsonl_log import JsonlLog
from emomon.streamer.outputs.palette import TOL_MUTED
from emomon.streamer.outputs.plot import read_recording
from emomon.streamer.outputs.record import Row

EMOTIONS = ("anger", "calm", "happiness", "sadness")


def rows(n: int, speakers: bool = False) -> list[Row]:
    """n segments of 2 s every 3 s, the top emotion going round; every fifth dropped."""
    out = []
    for i in range(n):
        shares = np.full(len(EMOTIONS), 0.1)
        shares[i % len(EMOTIONS)] = 0.7
        status = "dropped" if i % 5 == 4 else "ok"
        out.append(Row("call.wav", i, 3.0 * i, 3.0 * i + 2.0, shares=dict(zip(EMOTIONS, shares / shares.sum()))
                       if status == "ok" else None, status=status, id=f"r-call-{i:04d}",
                       speaker=(f"speaker {1 + i % 2}" if speakers else None)))  # fmt: skip
    return out


def write_csv(path: Path, items: list[Row], speakers: bool = False) -> Path:
    with CsvLog(path, EMOTIONS, speakers=speakers) as log:
        for r in items:
            log.write(r)
    return path


def test_a_csv_log_becomes_a_png_of_its_scored_segments(tmp_path: Path) -> None:
    import matplotlib.image

    write_csv(tmp_path / "log.csv", rows(20))
    done = run_cli("plot", "log.csv", "-o", "call.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "16 segments" in done.stdout  # 20 less the 4 dropped
    image = matplotlib.image.imread(tmp_path / "call.png")
    assert image.shape[1] > 1000 and image.shape[0] > 300
    # every emotion's colour is in the picture
    pixels = {tuple(np.round(p[:3] * 255).astype(int)) for p in image.reshape(-1, image.shape[-1])[::7]}
    for hex_colour in TOL_MUTED[: len(EMOTIONS)]:
        assert tuple(int(hex_colour[k : k + 2], 16) for k in (1, 3, 5)) in pixels, hex_colour


def test_json_lines_with_speakers_draw_a_lane_per_speaker_and_a_window(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "log.jsonl")
    for r in rows(30, speakers=True):
        log.write(r)
    log.close()
    rec = read_recording(tmp_path / "log.jsonl")
    assert rec.lane_kind == "speaker" and sorted(set(rec.lane)) == ["speaker 1", "speaker 2"]
    assert list(rec.emotions) == list(EMOTIONS) and len(rec.start) == 24
    done = run_cli("plot", "log.jsonl", "-o", "w.svg", "--from", "10", "--to", "40", "--emotions", "anger,calm",
                   cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    # segments overlapping 10-40 s: 3..13, less the dropped 4, 9 and 14
    assert "9 segments, 2 speakers" in done.stdout and segment_marks(tmp_path / "w.svg") == 9
    svg = (tmp_path / "w.svg").read_text()
    assert 'id="shares-anger"' in svg and 'id="shares-calm"' in svg and 'id="shares-sadness"' not in svg


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (lambda d: (d / "x.csv").write_text("a,b\n1,2\n"), ["x.csv"], "not an emomon output: it has no segment column"),
        (lambda d: (d / "x.jsonl").write_text("{nope\n"), ["x.jsonl"], "'x.jsonl' is not JSON Lines"),
        (lambda d: (d / "x.wav").write_bytes(b"RIFF"), ["x.wav"], "plot reads a .csv or .jsonl log or a batch"),
        (lambda d: (d / "folder").mkdir(), ["folder"], "'folder' is not an emomon batch output folder"),
        (lambda d: None, ["gone.csv"], "'gone.csv' does not exist."),
        (lambda d: write_csv(d / "l.csv", rows(6)), ["l.csv", "--emotions", "joy"], "--emotions: 'joy' is not one of"),
        (lambda d: write_csv(d / "l.csv", rows(6)), ["l.csv", "--from", "9", "--to", "3"], "--to 3.0 must come after"),
        (lambda d: write_csv(d / "l.csv", rows(6)), ["l.csv", "-o", "x.jpg"], "'x.jpg' must end in .png or .svg."),
        (lambda d: write_csv(d / "l.csv", rows(6)), ["l.csv", "--file", "other.wav"], "holds no recording named"),
        (lambda d: write_csv(d / "l.csv", rows(6)), ["l.csv", "--from", "100"], "no scored segment to plot"),
        (lambda d: write_csv(d / "l.csv", rows(6)), ["l.csv", "-o", "gone/x.png"], "'gone/x.png' cannot be written"),
    ],
)  # fmt: skip
def test_what_plot_cannot_draw_is_one_sentence(tmp_path: Path, setup, args: list[str], message: str) -> None:
    setup(tmp_path)
    done = run_cli("plot", *args, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.weights
def test_plot_of_a_replay_of_the_bundled_sample(tmp_path: Path) -> None:
    """The sample's six sentences, replayed with the default model: six marks, the angry one red."""
    done = run_cli("replay", str(SAMPLE), "--speed", "0", "--csv", "s.csv", "--no-dashboard", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    drawn = run_cli("plot", "s.csv", "-o", "s.svg", cwd=tmp_path)
    assert drawn.returncode == 0 and "6 segments" in drawn.stdout, drawn.stderr
    assert segment_marks(tmp_path / "s.svg") == 6
    rec = read_recording(tmp_path / "s.csv")
    assert rec.emotions[int(np.argmax(rec.shares[1]))] == "anger"  # its second sentence


def test_the_page_and_the_pictures_share_one_palette() -> None:
    import json
    import re

    page = (REPO / "streamer" / "serve" / "web" / "index.html").read_text()
    listed = re.search(r"const PALETTE = (\[[^\]]*\]);", page)
    assert listed is not None and tuple(json.loads(listed.group(1))) == TOL_MUTED


def test_a_broken_batch_folder_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "run" / "segments").mkdir(parents=True)
    (tmp_path / "run" / "run.json").write_text('{"format": "emomon-batch", "format_version": 1}')
    empty = run_cli("plot", "run", cwd=tmp_path)
    assert empty.returncode == 2 and "holds no scored segments yet" in empty.stderr
    (tmp_path / "run" / "segments" / "part-0-00000.parquet").write_bytes(b"not parquet")
    broken = run_cli("plot", "run", cwd=tmp_path)
    assert broken.returncode == 2 and "Batch output folder 'run' cannot be read" in broken.stderr, broken.stderr
    assert broken.stderr.count("\n") == 1
