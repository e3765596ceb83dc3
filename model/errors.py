"""Errors meant for the person running emomon.

Every `EmomonError` carries one clear sentence that names the file or setting at fault
and what is wrong with it. The command line prints that sentence and exits non-zero;
anything else that escapes is a bug and keeps its traceback.
"""


class EmomonError(Exception):
    """An error whose message is fit to show to the user as it is."""


class ConfigError(EmomonError):
    """A setting in config.toml (or a dict standing in for it) is unknown or of the wrong type."""


class EncoderLoadError(EmomonError):
    """The speech encoder's weights or configuration could not be loaded."""


class BundleError(EmomonError):
    """A model bundle folder is missing, incomplete, corrupt or inconsistent."""


class AudioError(EmomonError):
    """An audio file is missing, unreadable, corrupt, empty or of an unsupported format."""


def require(extra: str, what: str, *modules: str) -> None:
    """Stop with one sentence when a part of emomon is used without its optional packages:
    `require("serve", "emomon serve", "starlette", "uvicorn")`."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise EmomonError(f"{what} needs {', '.join(missing)}: pip install 'emomon[{extra}]'.")
