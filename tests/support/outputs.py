"""What the outputs leave behind: a log's writer killed mid-row, a plot's segment marks."""

from __future__ import annotations

from pathlib import Path


def kill_writer(log: str, path: Path, min_bytes: int) -> None:
    """Run a process that writes rows to the log `log` (a constructor call on `path`) as
    fast as it can, and SIGKILL it once `path` holds `min_bytes`: what a crash leaves."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import itertools\nfrom emomon.streamer.outputs.csv_log import CsvLog\n"
        "from emomon.streamer.outputs.record import Row\n"
        "from emomon.streamer.outputs.jsonl_log import JsonlLog\n"
        f"log = {log}\n"
        "for i in itertools.count():\n"
        "    log.write(Row('mic', i, i, i + 1.0, shares={'anger': 0.5, 'sadness': 0.25, 'neutral': 0.25}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < min_bytes):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def segment_marks(svg: Path) -> int:
    """The segment marks of an `emomon plot` SVG: the paths of its "segments" group."""
    import xml.etree.ElementTree as ET

    ns = {"svg": "http://www.w3.org/2000/svg"}
    group = ET.parse(svg).getroot().find(".//svg:g[@id='segments']", ns)
    assert group is not None, f"{svg} has no segments group"
    return len(group.findall(".//svg:path", ns))
