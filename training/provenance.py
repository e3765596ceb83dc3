"""Where a bundle came from: the data, the settings, the machine and the libraries it was
trained with (bundle.json's provenance)."""

from __future__ import annotations

import logging
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..model.settings import to_dict
from ..model.specs import LAYERED
from .datasets import LICENCES, Dataset
from .sessions import training_device

if TYPE_CHECKING:
    from ..config import Config  # the whole config.toml, assembled on top

log = logging.getLogger("emomon")


def slug(spec) -> str:
    return spec.kind if spec.kind not in LAYERED else Path(spec.name.rstrip("/")).name.lower()


def _licence(kinds: tuple[str, ...]) -> str:
    known = [LICENCES[k] for k in kinds if k in LICENCES]
    if not known:
        return "the licences of the training data apply"
    return "; ".join(known) + ". A model trained on it is for non-commercial research use only."


def ran_on(cfg: Config) -> dict:
    """Where each part of the run ran: the machine, and the device and compute dtype of the
    feature extraction and of the training (bfloat16 autocast while adapting, where chosen)."""
    from ..model.compute import choose_dtype, cpu_name

    device = training_device(cfg)
    extract, _ = choose_dtype(cfg.runtime.dtype, device)
    where = {"cpu": cpu_name(), "device": str(device)}
    if device.type == "cuda":
        where["gpu"] = torch.cuda.get_device_name(device)
    if cfg.train.adapt != "none":
        adapting = "bfloat16" if extract == "bfloat16" else "float32"
        where |= {"features": f"{device} float32", "adapting": f"{device} {adapting}"}
    else:
        where["features"] = f"{device} {extract}"
    return where


def provenance(cfg: Config, ds: Dataset, n_items: int, argv: list[str]) -> dict:
    import transformers

    return {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "emomon " + " ".join(argv),
        "dataset": {
            "kind": list(cfg.dataset.kinds),
            "data": list(cfg.dataset.paths),
            "files_used": n_items,
            "files_left_out": len(ds.problems),
            "speakers": len(ds.speakers()),
        },  # fmt: skip
        "licence": _licence(cfg.dataset.kinds),
        "config": {
            name: to_dict(getattr(cfg, name))
            for name in ("encoder", "regressor", "train", "dataset", "evaluation", "augment", "runtime")
        },
        "ran_on": ran_on(cfg),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "platform": sys.platform,
        },  # fmt: skip
    }
