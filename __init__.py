"""emomon: a real-time speech emotion-share monitor; `from emomon import Predictor` (README,
docs/architecture.md). The API loads on first use, so `import emomon` stays free of torch."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_API = {
    "Predictor": "emomon.model.predictor",
    "Prediction": "emomon.model.predictor",
    "load_bundle": "emomon.model.bundle",
    "read_audio": "emomon.model.audio",
    "DEFAULT_BUNDLE": "emomon.model.bundle",
    "EmomonError": "emomon.model.errors",
    "load_config": "emomon.config",
}
__all__ = [*_API, "__version__"]

if TYPE_CHECKING:
    from emomon.config import load_config as load_config
    from emomon.model.audio import read_audio as read_audio
    from emomon.model.bundle import DEFAULT_BUNDLE as DEFAULT_BUNDLE
    from emomon.model.bundle import load_bundle as load_bundle
    from emomon.model.errors import EmomonError as EmomonError
    from emomon.model.predictor import Prediction as Prediction
    from emomon.model.predictor import Predictor as Predictor


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'emomon' has no attribute {name!r}")
