"""One segment record (streamer/outputs/record.py): the CSV log, the JSON Lines log, serve's
WebSocket message and its decoder, and batch's Parquet schema and reserved names all come
from the one table of fields, and each writes what the others write of a segment."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow as pa

from emomon.model.predictor import Prediction
from emomon.streamer.audio.segmenter import Segment
from emomon.streamer.batch.store import output_columns, segment_schema
from emomon.streamer.outputs.csv_log import CsvLog
from emomon.streamer.outputs.jsonl_log import JsonlLog
from emomon.streamer.outputs.record import FIELDS, Job, Result, Row, columns
from emomon.streamer.serve.hub import message

EMOTIONS = ("anger", "sadness", "neutral")
SHARES = {"anger": 0.6123456, "sadness": 0.1876544, "neutral": 0.2}


def result(interim: bool = False, speaker: str | None = "Anna", part: int = 2, status: str = "ok") -> Result:
    seg = Segment(np.zeros(16000, np.float32), 1.23456, 2.5, 7)
    p = Prediction(SHARES, None, 0.0, 1.3, 1.0, 1.0, 1) if status == "ok" else None
    job = Job("call.wav", seg, interim=interim, stream=3, speaker=speaker, part=part)
    return Result(job, status, p, error="" if status == "ok" else "boom", latency_ms=12.345)


def test_every_field_belongs_to_a_record_and_names_are_unique() -> None:
    names = [f.name for f in FIELDS]
    assert len(names) == len(set(names))
    assert all(f.records and set(f.records) <= set("cjwp") for f in FIELDS)
    assert columns("c", EMOTIONS)[:3] == ["id", "source", "segment"]
    assert columns("c", EMOTIONS, stream=True, speaker=True)[:5] == ["id", "stream", "source", "segment", "speaker"]
    assert columns("p", EMOTIONS)[-len(EMOTIONS) - 2 :] == [*EMOTIONS, "top_emotion", "status"]


def test_csv_and_json_lines_write_the_same_segment(tmp_path) -> None:
    row = Row.of(result(), "r-call-0007-2", "2026-12-05T10:00:01.235+00:00")
    with CsvLog(tmp_path / "a.csv", EMOTIONS, streams=True, speakers=True) as log:
        log.write(row)
    jsonl = JsonlLog(tmp_path / "a.jsonl")
    jsonl.write(row)
    jsonl.close()
    with open(tmp_path / "a.csv", newline="") as f:
        (cells,) = list(csv.DictReader(f))
    obj = json.loads((tmp_path / "a.jsonl").read_text())
    assert list(cells) == columns("c", EMOTIONS, stream=True, speaker=True)
    assert list(obj) == [f.name for f in FIELDS if "j" in f.records]
    for name in ("id", "source", "speaker", "wall_time", "top_emotion", "status"):
        assert cells[name] == obj[name]
    for name in ("segment", "stream"):
        assert int(cells[name]) == obj[name]
    for name in ("start_s", "end_s", "duration_s", "latency_ms"):
        assert float(cells[name]) == obj[name]  # the same decimals in both
    assert {e: float(cells[e]) for e in EMOTIONS} == obj["shares"] == {e: round(v, 6) for e, v in SHARES.items()}
    assert cells["start_s"] == "1.235" and cells["latency_ms"] == "12.3"


def test_interim_rows_say_so_in_each_record(tmp_path) -> None:
    row = Row.of(result(interim=True))
    assert row.flat("c", EMOTIONS)["status"] == "interim"
    obj = row.to_json("j", EMOTIONS)
    assert obj["type"] == "interim" and obj["status"] == "ok"
    assert message(result(interim=True), EMOTIONS)["type"] == "interim"


def test_the_websocket_message_decodes_to_the_same_row() -> None:
    for r in (result(), result(speaker=None, part=0), result(status="error"), result(interim=True)):
        msg = json.loads(json.dumps(message(r, EMOTIONS)))
        assert list(msg) == [f.name for f in FIELDS if "w" in f.records and (not f.when or msg.get(f.name))]
        back = Row.from_json(msg, "call.wav", EMOTIONS)
        sent = Row.of(r)
        assert (back.segment, back.speaker, back.part, back.status, back.error, back.interim) == (
            sent.segment, sent.speaker, sent.part, sent.status, sent.error, sent.interim
        )  # fmt: skip
        assert back.start_s == round(sent.start_s, 3) and back.latency_ms == round(sent.latency_ms, 1)
        if sent.shares is None:
            assert back.shares is None and msg["top_emotion"] is None
        else:
            assert back.shares == {e: round(v, 4) for e, v in SHARES.items()}
            assert back.top_emotion == sent.top_emotion


def test_parquet_schema_and_reserved_names_follow_the_record() -> None:
    for speakers in (False, True):
        schema = segment_schema(EMOTIONS, pa.schema([("site", pa.string())]), speakers)
        own = columns("p", EMOTIONS, speaker=speakers)
        assert schema.names == [*own, "file_duration_s", "sample_rate", "sha256", "site"]
        assert set(own) <= output_columns(EMOTIONS, speakers) and "site" not in output_columns(EMOTIONS, speakers)
        row = Row.of(result(speaker="Anna" if speakers else None), "id-1").flat("p", EMOTIONS, speaker=speakers)
        table = pa.Table.from_pylist([{**row, "site": "x"}], schema=schema)  # the types take the values
        assert table.column("anger").type == pa.float32() and table.column("segment")[0].as_py() == 7
    assert "speaker" in output_columns(EMOTIONS, True) and "speaker" not in output_columns(EMOTIONS, False)
