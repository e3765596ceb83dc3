"""CSV log: header, one flushed row per segment, refusing mixed headers, surviving SIGKILL."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from support.outputs import kill_writer

from emomon.model.errors import EmomonError
from emomon.streamer.outputs.csv_log import CsvLog
from emomon.streamer.outputs.record import Row

EMOTIONS = ("anger", "sadness", "neutral")


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_rows_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "out" / "log.csv"
    with CsvLog(path, EMOTIONS) as log:
        log.write(Row("a.wav", 0, 1.0, 2.5, "", {"anger": 0.7, "sadness": 0.1, "neutral": 0.2}, 12.34, id="r-a-0000"))
        log.write(Row("mic", 1, 3.0, 4.0, "2026-11-24T12:00:00+00:00", None, None, "dropped"))
    rows = read(path)
    assert rows[0]["id"] == "r-a-0000" and rows[1]["id"] == ""
    assert list(rows[0]) == [
        "id", "source", "segment", "start_s", "end_s", "duration_s", "wall_time", *EMOTIONS,
        "top_emotion", "latency_ms", "status",
    ]  # fmt: skip
    assert rows[0]["duration_s"] == "1.500" and rows[0]["top_emotion"] == "anger" and rows[0]["latency_ms"] == "12.3"
    assert rows[1]["status"] == "dropped" and rows[1]["anger"] == "" and rows[1]["wall_time"].startswith("2026")


def test_append_with_same_header_and_refuse_another(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    with CsvLog(path, EMOTIONS) as log:
        log.write(Row("a", 0, 0.0, 1.0, shares={"anger": 1.0, "sadness": 0.0, "neutral": 0.0}))
    with CsvLog(path, EMOTIONS) as log:
        log.write(Row("b", 0, 0.0, 1.0, shares={"anger": 0.0, "sadness": 1.0, "neutral": 0.0}))
    assert [r["source"] for r in read(path)] == ["a", "b"]
    with pytest.raises(EmomonError, match=f"CSV file '{path}' already has other columns"):
        CsvLog(path, ("Anger", "Boredom"))


@pytest.mark.system
def test_a_killed_writer_leaves_only_complete_rows(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    kill_writer(f"CsvLog({str(path)!r}, {EMOTIONS!r})", path, 20_000)
    rows = read(path)
    assert len(rows) > 100
    assert all(r["status"] == "ok" and r["neutral"] == "0.250000" for r in rows)  # every row whole
    assert path.read_bytes().endswith(b"\r\n")  # csv's line end: the last row is finished too
    assert [int(r["segment"]) for r in rows] == list(range(len(rows)))
