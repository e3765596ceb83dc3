"""Shared by the benchmark scripts: markdown tables and their sections of docs/benchmarks.md."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path


def median_ms(fn: Callable[[], object], repeats: int, sync: Callable[[], object] | None = None) -> float:
    """Median wall time of `repeats` calls of fn, in ms, after one warm-up call (first-call
    allocations and kernel selection); `sync` (e.g. torch.cuda.synchronize) ends each call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def cpu_name() -> str:
    """The CPU's model name: timings compare only on the same one."""
    from emomon.model.compute import cpu_name as name

    return name()


def study_args(ap, variants, root: Path) -> None:
    """The options the training studies share (compare_regressors, study_seven_corpora)."""
    ap.add_argument("--only", nargs="*", choices=list(variants), help="run these variants only")
    ap.add_argument("--again", action="store_true", help="train runs that are already saved again")
    ap.add_argument("--cache", default="", help="embedding cache folder ([train] cache_dir)")
    ap.add_argument("--table", action="store_true", help="only rewrite the table from the saved results")
    ap.add_argument("--out", type=Path, default=root / "benchmarks" / "results")
    ap.add_argument("--doc", type=Path, default=root / "docs" / "training.md")


def result_args(ap, name: str, quick: str = "a small run that checks the script; nothing saved") -> None:
    """--quick, --out (benchmarks/results/<name>.json) and --doc (docs/benchmarks.md): the
    options of a benchmark that saves one JSON file and one section of docs/benchmarks.md."""
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--out", type=Path, default=root / "benchmarks" / "results" / f"{name}.json")
    ap.add_argument("--doc", type=Path, default=root / "docs" / "benchmarks.md")


def table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(h for _, h in cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join("| " + " | ".join(str(r[k]) for k, _ in cols) + " |\n" for r in rows)


def update_doc(doc: Path, body: str, name: str, title: str) -> None:
    """Replace the text between <!-- name:begin --> and <!-- name:end --> (or add a section)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\n"
    if begin in text and end in text:
        text = text[: text.index(begin) + len(begin)] + "\n" + body + text[text.index(end) :]
    else:
        text += f"\n## {title}\n\n{begin}\n{body}{end}\n"
    doc.write_text(text)
