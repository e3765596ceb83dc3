"""Errors meant for the person running emomon.

Every `EmomonError` carries one clear sentence that names the file or setting at fault
and what is wrong with it. The command line prints that sentence and exits non-zero;
anything else that escapes is a bug and keeps its traceback.
"""


def printable(text: str) -> str:
    """`text` (a file name, or a sentence naming one) as UTF-8-safe text.

    Python keeps the bytes of a file name that are not UTF-8 as lone surrogates ('caf\\udce9',
    os.fsdecode); no UTF-8 writer takes those. Here each such byte becomes its escape
    '\\xe9' ('caf\\xe9.wav'), as Python's backslashreplace writes it: the same in every output
    (CSV, JSON Lines, Parquet, errors.csv, messages), readable, and telling the byte."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class EmomonError(Exception):
    """An error whose message is fit to show to the user as it is (file names made printable).
    `exit_code`: what the command line exits with."""

    exit_code = 2

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(printable(str(message)), *args)


class ConfigError(EmomonError):
    """A setting in config.toml (or a dict standing in for it) is unknown or of the wrong type."""


class EncoderLoadError(EmomonError):
    """The speech encoder's weights or configuration could not be loaded."""


class BundleError(EmomonError):
    """A model bundle folder is missing, incomplete, corrupt or inconsistent."""


class ExportError(EmomonError):
    """A bundle cannot be exported to ONNX, or an exported file is damaged."""


class AudioError(EmomonError):
    """An audio file is missing, unreadable, corrupt, empty or of an unsupported format."""


class OutputError(EmomonError):
    """An output (a log file, stdout) cannot be opened or written: a full disk, no permission."""

    exit_code = 1


def require(extra: str, what: str, *modules: str) -> None:
    """Stop with one sentence when a part of emomon is used without its optional packages:
    `require("serve", "emomon serve", "starlette", "uvicorn")`."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise EmomonError(f"{what} needs {', '.join(missing)}: pip install 'emomon[{extra}]'.")
