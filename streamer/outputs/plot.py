"""`emomon plot`: a recording's rows -> one picture (PNG or SVG) of how it went.

Reads what emomon wrote: replay's or live's CSV log, a JSON Lines log, or a batch output
folder (one file of it, read from the Parquet dataset with a filter on its source, so a
large run is never loaded whole). Draws, over the recording's time:

- the shares of every emotion as a stacked band over each scored segment, blank where no
  one spoke (the speech segments are where the bands are);
- one lane per speaker (or per channel, or one lane), each segment a bar in its top
  emotion's colour (named on the bar too while there are at most 40); the legend names
  the colours.

Colours: Paul Tol's "muted" qualitative palette (nine colours, told apart with the common
colour-vision deficiencies), the same as the serve page's (outputs/palette.py). Matplotlib
draws with its Agg or SVG back-end, nothing on screen; it loads only when a picture is made.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...model.errors import EmomonError
from .csv_log import read_cell
from .palette import colours
from .record import FIELDS

NEEDED = ("segment", "start_s", "end_s", "top_emotion", "status")  # what a picture reads of each row


def _around_shares(record: str) -> tuple[str, str]:
    """The flat record's fields just before and just after its emotion columns (record.py's FIELDS)."""
    names = [f.name for f in FIELDS if record in f.records]
    at = names.index("shares")
    return names[at - 1], names[at + 1]


BEFORE_SHARES = tuple(sorted({_around_shares(r)[0] for r in "cp"}))  # CSV: wall_time; Parquet: duration_s
AFTER_SHARES = _around_shares("c")[1]  # top_emotion, in both
LABELLED = 40  # up to this many segments, each lane bar names its top emotion


@dataclass
class Recording:
    """The scored segments of one source, in time order."""

    source: str
    emotions: list[str]
    start: np.ndarray  # (N,) seconds
    end: np.ndarray
    shares: np.ndarray  # (N, E); a segment without shares (dropped, failed) is not kept
    lane: list[str]  # per segment: its speaker or channel, "" for one lane
    lane_kind: str  # "speaker", "channel" or ""


def emotions_of(columns: list[str], where: str) -> list[str]:
    """The emotion columns of a flat record (CSV or Parquet): after BEFORE_SHARES, before AFTER_SHARES."""
    missing = [c for c in NEEDED if c not in columns]
    if missing:
        raise EmomonError(f"'{where}' is not an emomon output: it has no {missing[0]} column.")
    first = max(columns.index(c) for c in BEFORE_SHARES if c in columns) + 1 if set(BEFORE_SHARES) & set(columns) else 0
    emotions = columns[first : columns.index(AFTER_SHARES)]
    if not emotions:
        raise EmomonError(f"'{where}' is not an emomon output: it has no emotion columns before {AFTER_SHARES}.")
    return emotions


def _pick(sources: list[str], file: str | None, where: str) -> str:
    """The one source to plot: `file` (its full name or a path ending in it), or the only one."""
    if file is None:
        if len(sources) == 1:
            return sources[0]
        shown = ", ".join(sources[:3]) + (", ..." if len(sources) > 3 else "")
        raise EmomonError(f"'{where}' holds {len(sources)} recordings ({shown}): name one with --file.")
    hits = [s for s in sources if s == file or Path(s).as_posix().endswith("/" + Path(file).as_posix().lstrip("/"))]
    if len(hits) != 1:
        what = "no recording" if not hits else f"{len(hits)} recordings"
        raise EmomonError(f"'{where}' holds {what} named '{file}'.")
    return hits[0]


def _lanes(rows: list[dict]) -> tuple[list[str], str]:
    for kind in ("speaker", "channel"):
        values = [str(r.get(kind) or "") for r in rows]
        if any(values):
            return values, kind
    return [""] * len(rows), ""


def _recording(rows: list[dict], emotions: list[str], source: str, where: str, flat: bool = False) -> Recording:
    """Scored segments (status ok, not interim) of `source`, in time order; `flat`: the shares
    are a column per emotion (CSV, Parquet), else a "shares" object (JSON Lines)."""
    kept = [r for r in rows if r.get("status") == "ok" and r.get("type", "segment") != "interim"]
    try:
        start = np.array([float(r["start_s"]) for r in kept])
        end = np.array([float(r["end_s"]) for r in kept])
        shares = np.array([[float((r if flat else r["shares"])[e]) for e in emotions] for r in kept])
        shares = shares.reshape(len(kept), len(emotions))
    except (KeyError, TypeError, ValueError) as e:
        raise EmomonError(f"'{where}' has a segment of {source} without its times or shares ({e}).") from None
    order = np.argsort(start, kind="stable")
    lane, kind = _lanes([kept[i] for i in order])
    return Recording(source, emotions, start[order], end[order], shares[order], lane, kind)


def read_csv(path: Path, file: str | None) -> Recording:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            emotions = emotions_of(list(reader.fieldnames or []), str(path))
            rows = [{k: read_cell(v) if isinstance(v, str) else v for k, v in r.items()} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise EmomonError(f"'{path}' cannot be read as a CSV log: {e}.") from None
    source = _pick(sorted({r.get("source", "") for r in rows}), file, str(path))
    return _recording([r for r in rows if r.get("source", "") == source], emotions, source, str(path), flat=True)


def read_jsonl(path: Path, file: str | None) -> Recording:
    rows: list[dict] = []
    try:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict) or any(k not in row for k in ("segment", "start_s", "end_s")):
                        raise EmomonError(f"'{path}' line {n} is not an emomon segment record.")
                    rows.append(row)
    except (OSError, UnicodeDecodeError) as e:
        raise EmomonError(f"'{path}' cannot be read: {e}.") from None
    except ValueError as e:
        raise EmomonError(f"'{path}' is not JSON Lines: {e}.") from None
    emotions = next((list(r["shares"]) for r in rows if isinstance(r.get("shares"), dict)), None)
    if not emotions:
        raise EmomonError(f"'{path}' holds no scored segment with shares.")
    source = _pick(sorted({str(r.get("source", "")) for r in rows}), file, str(path))
    return _recording([r for r in rows if str(r.get("source", "")) == source], emotions, source, str(path))


def read_batch(folder: Path, file: str | None) -> Recording:
    """One file of a batch output folder: the dataset filtered on its source."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    try:
        run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        run = None
    if not isinstance(run, dict) or run.get("format") != "emomon-batch":
        raise EmomonError(f"'{folder}' is not an emomon batch output folder (no run.json of format emomon-batch).")
    parts = sorted((folder / "segments").glob("part-*.parquet"))
    if not parts:
        raise EmomonError(f"Batch output folder '{folder}' holds no scored segments yet.")
    import pyarrow as pa

    try:
        data = ds.dataset([str(p) for p in parts], format="parquet")
        emotions = emotions_of(data.schema.names, str(folder))
        listed = folder / "files.parquet"
        if listed.exists():
            sources = sorted(set(pq.read_table(listed, columns=["source"]).column("source").to_pylist()))
        else:  # a run still going: the source column alone
            sources = sorted(set(data.to_table(columns=["source"]).column("source").to_pylist()))
        source = _pick(sources, file, str(folder))
        cols = [c for c in ("segment", "start_s", "end_s", "status", "speaker", "channel") if c in data.schema.names]
        rows = data.to_table(columns=cols + emotions, filter=ds.field("source") == source).to_pylist()
    except (OSError, pa.ArrowException) as e:
        raise EmomonError(f"Batch output folder '{folder}' cannot be read: {e}.") from None
    return _recording(rows, emotions, source, str(folder), flat=True)


def read_recording(path: str | Path, file: str | None = None) -> Recording:
    """Whatever emomon wrote at `path`, as one source's segments; one sentence otherwise."""
    path = Path(path)
    if path.is_dir():
        return read_batch(path, file)
    if not path.exists():
        raise EmomonError(f"'{path}' does not exist.")
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return read_jsonl(path, file)
    if path.suffix.lower() == ".csv":
        return read_csv(path, file)
    raise EmomonError(f"'{path}' is not an emomon output: plot reads a .csv or .jsonl log or a batch output folder.")


def window(rec: Recording, emotions: list[str] | None, t0: float | None, t1: float | None) -> Recording:
    """The segments overlapping [t0, t1] and, with `emotions`, only those (in the record's order)."""
    if emotions:
        unknown = [e for e in emotions if e not in rec.emotions]
        if unknown:
            raise EmomonError(f"--emotions: '{unknown[0]}' is not one of this recording's ({', '.join(rec.emotions)}).")
    keep = np.ones(len(rec.start), bool)
    if t0 is not None:
        keep &= rec.end > t0
    if t1 is not None:
        keep &= rec.start < t1
    if t0 is not None and t1 is not None and t1 <= t0:
        raise EmomonError(f"--to {t1} must come after --from {t0}.")
    chosen = [e for e in rec.emotions if not emotions or e in emotions]
    idx = [rec.emotions.index(e) for e in chosen]
    return Recording(rec.source, chosen, rec.start[keep], rec.end[keep], rec.shares[keep][:, idx],
                     [x for x, k in zip(rec.lane, keep) if k], rec.lane_kind)  # fmt: skip


def _light(colour: str) -> bool:
    """Whether black text reads better than white on this colour (its relative luminance)."""
    r, g, b = (int(colour[k : k + 2], 16) / 255 for k in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45


def plot(rec: Recording, out: Path, title: str | None = None, all_emotions: list[str] | None = None) -> dict:
    """Write the picture; the format follows out's suffix (.png or .svg). Returns what it drew."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch
    from matplotlib.pyplot import close, subplots

    if out.suffix.lower() not in (".png", ".svg"):
        raise EmomonError(f"Picture '{out}' must end in .png or .svg.")
    if not len(rec.start):
        raise EmomonError(f"'{rec.source}' has no scored segment to plot in this window.")
    palette = colours(all_emotions or rec.emotions)
    lanes = list(dict.fromkeys(rec.lane))
    fig, (top, bottom) = subplots(
        2, 1, sharex=True, figsize=(12, 3.2 + 0.45 * len(lanes)), height_ratios=[3, 0.5 + 0.45 * len(lanes)],
        layout="constrained",
    )  # fmt: skip
    x0, x1 = rec.start[:, None], rec.end[:, None]
    base = np.zeros(len(rec.start))
    for k, e in enumerate(rec.emotions):
        y0, y1 = base[:, None], (base + rec.shares[:, k])[:, None]
        boxes = np.stack([np.hstack([x0, y0]), np.hstack([x1, y0]), np.hstack([x1, y1]), np.hstack([x0, y1])], axis=1)
        top.add_collection(PolyCollection(boxes, facecolors=palette[e], edgecolors="none", gid=f"shares-{e}"))
        base = base + rec.shares[:, k]
    top.set_ylim(0, max(1.0, float(base.max())))
    top.set_ylabel("share of listeners")
    top.set_title(title or Path(rec.source).name or "recording", loc="left")
    row = np.array([lanes.index(x) for x in rec.lane], float)
    tops = [rec.emotions[i] for i in rec.shares.argmax(axis=1)]
    marks = np.stack([np.hstack([x0, row[:, None] - 0.35]), np.hstack([x1, row[:, None] - 0.35]),
                      np.hstack([x1, row[:, None] + 0.35]), np.hstack([x0, row[:, None] + 0.35])], axis=1)  # fmt: skip
    lane_colours = [palette[t] for t in tops]
    bottom.add_collection(PolyCollection(marks, facecolors=lane_colours, edgecolors="none", gid="segments"))
    if len(tops) <= LABELLED:  # few segments: each bar names its top emotion too
        for a, b, y, top in zip(rec.start, rec.end, row, tops):
            bottom.text((a + b) / 2, y, top, ha="center", va="center", fontsize=7, clip_on=True,
                        color="black" if _light(palette[top]) else "white")  # fmt: skip
    bottom.set_ylim(len(lanes) - 0.5, -0.5)
    bottom.set_yticks(range(len(lanes)), [x or "speech" for x in lanes])
    bottom.set_ylabel({"speaker": "speaker", "channel": "channel"}.get(rec.lane_kind, "top emotion"))
    bottom.set_xlabel("time in the recording (s)")
    pad = 0.01 * max(1.0, float(rec.end.max() - rec.start.min()))
    bottom.set_xlim(float(rec.start.min()) - pad, float(rec.end.max()) + pad)
    fig.legend(handles=[Patch(color=palette[e], label=e) for e in rec.emotions], loc="outside right upper",
               frameon=False)  # fmt: skip
    try:
        fig.savefig(out, dpi=110, metadata={"Date": None} if out.suffix.lower() == ".svg" else None)
    except OSError as e:
        raise EmomonError(f"Picture '{out}' cannot be written: {e.strerror or e}.") from None
    finally:
        close(fig)
    return {"segments": len(rec.start), "lanes": lanes, "emotions": rec.emotions, "out": str(out)}
