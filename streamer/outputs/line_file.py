"""A log file written one whole line at a time, for the CSV and JSON Lines logs.

Each line goes to the operating system with `os.write` as it is written (no buffer of
Python's to lose, nothing left to flush at close), so a run killed even with SIGKILL
leaves only whole lines. When a write fails part-way (a full disk, a file-size limit, an
I/O error), the file is cut back to its last whole line before the error is raised, so
what was written before the fault stays readable. The error is an `OutputError`: one
sentence naming the file, the system's reason and its errno.
"""

from __future__ import annotations

import errno as errnos
import os
import sys

from ...model.errors import OutputError, printable


def reason(e: OSError) -> str:
    """'No space left on device (errno 28)'."""
    code = f" (errno {e.errno}: {errnos.errorcode.get(e.errno, '?')})" if e.errno else ""
    return f"{e.strerror or e}{code}"


class LineFile:
    """`path` opened to append lines; "-" is standard output (never cut back: it may be a pipe)."""

    def __init__(self, path: str, what: str) -> None:
        self.path, self.what = path, what
        self.where = "standard output" if path == "-" else f"{what} '{printable(path)}'"
        self.lines = 0
        if path == "-":
            self.fd, self.size, self.own = 1, 0, False
            return
        try:
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            raise OutputError(f"{self.where} cannot be opened for writing: {reason(e)}.") from e
        self.own = True
        self.size = os.fstat(self.fd).st_size  # where the last whole line ends
        self.regular = os.path.isfile(path)

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def write(self, text: str) -> None:
        """Append `text` (whole lines, ending in a newline); on failure cut back and raise OutputError."""
        if not self.own:  # standard output, as sys.stdout is now (a test or caller may have replaced it)
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except BrokenPipeError:
                raise
            except OSError as e:
                raise OutputError(f"{self.where} cannot be written: {reason(e)}.") from e
            self.lines += text.count("\n")
            return
        data = memoryview(text.encode("utf-8"))
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, data[done:])
        except OSError as e:
            kept = self._cut_back()
            raise OutputError(f"{self.where} cannot be written: {reason(e)}; {kept}.") from e
        self.size += done
        self.lines += text.count("\n")

    def _cut_back(self) -> str:
        """Remove a partly written line; say what the file keeps."""
        if self.own and self.regular:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                return "its last line may be cut short"
        return f"the {self.lines} line(s) before it are whole" if self.lines else "nothing was written to it"

    def close(self) -> None:
        if self.own and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1
