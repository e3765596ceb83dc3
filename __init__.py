"""emomon: a real-time speech emotion-share monitor.

The repository root is the `emomon` import package; its folders are the subpackages:
`emomon.model` (encoders, regressors, bundles, the Predictor), `emomon.streamer`
(capture, VAD segmentation, worker, dashboard, the `emomon` command) and
`emomon.training` (datasets, training, evaluation).

The public API, loaded on first use so that `import emomon` stays free of torch:

    from emomon import Predictor
    predictor = Predictor.from_bundle()          # the bundled default model
    [prediction] = predictor.predict([audio])     # float32 mono 16 kHz
    prediction.shares                             # {"anger": 0.12, ...}
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_API = {
    "Predictor": "emomon.model.predictor",
    "Prediction": "emomon.model.predictor",
    "load_bundle": "emomon.model.bundle",
    "DEFAULT_BUNDLE": "emomon.model.bundle",
    "EmomonError": "emomon.model.errors",
    "load_config": "emomon.streamer.config",
}
__all__ = [*_API, "__version__"]

if TYPE_CHECKING:
    from emomon.model.bundle import DEFAULT_BUNDLE as DEFAULT_BUNDLE
    from emomon.model.bundle import load_bundle as load_bundle
    from emomon.model.errors import EmomonError as EmomonError
    from emomon.model.predictor import Prediction as Prediction
    from emomon.model.predictor import Predictor as Predictor
    from emomon.streamer.config import load_config as load_config


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'emomon' has no attribute {name!r}")
