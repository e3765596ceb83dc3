"""Checkpoints of the adapted fits (`[train] adapt`): a file per fit after every epoch (the
trained tensors, the optimiser, the random generators' states, the history), written
atomically, in a folder named by the digest of the settings that made them;
`emomon train --resume` continues from them (training/adapt.py)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..model.errors import ConfigError, EmomonError

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger("emomon")


class Checkpoints:
    """Adapted fits, one file each (named by the fit: protocol and fold), in one folder with
    the digest of the training settings that made them (run.json). `resume`: fits continue
    from their files, and a folder of other settings is refused in one sentence. Without
    it every fit starts over; the files of fits of the same settings that this run does not
    train stay for a later run to resume, a folder of other settings is emptied."""

    def __init__(self, folder: Path, cfg: Config, resume: bool) -> None:
        from ..model.files import write_atomic

        self.folder, self.resume = folder, resume
        self.digest = run_digest(cfg)
        marker = folder / "run.json"
        try:
            had = json.loads(marker.read_text()).get("digest") if marker.is_file() else None
        except (OSError, ValueError, AttributeError):
            had = None
        if resume and marker.is_file() and had != self.digest:
            raise ConfigError(
                f"The checkpoints in {folder} are of other settings than this run's; run without --resume to "
                "start over, or give the settings they were made with."
            )
        if resume and had is None:
            log.info("--resume: no checkpoints in %s yet; starting from the beginning", folder)
        if had != self.digest:
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("*.safetensors"):
                old.unlink()
            write_atomic(marker, json.dumps({"digest": self.digest}).encode())

    def path(self, fit: str) -> Path:
        return self.folder / (hashlib.sha256(fit.encode()).hexdigest()[:16] + ".safetensors")

    def save(self, fit: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        from safetensors.torch import save

        from ..model.files import write_atomic

        data = save({n: t.contiguous() for n, t in tensors.items()}, metadata={"fit": fit, "meta": json.dumps(meta)})
        write_atomic(self.path(fit), data)

    def load(self, fit: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        from safetensors import SafetensorError, safe_open

        path = self.path(fit)
        if not self.resume or not path.is_file():
            return None
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {n: f.get_tensor(n) for n in f.keys()}
            if meta.get("fit") != fit:
                raise ValueError("another fit's")
            return tensors, json.loads(meta["meta"])
        except (SafetensorError, ValueError, KeyError, OSError) as e:
            raise EmomonError(f"Checkpoint {path} cannot be read ({e}); run without --resume to start over.") from e


def run_digest(cfg: Config) -> str:
    """What a fit's checkpoint depends on: the settings that change the fits, so not
    [evaluation] (a fit is named by its protocol and fold: runs of one training recipe with
    other protocols share a folder, and `--resume` reuses the fits they have in common) nor
    where the outputs go."""
    from ..model.settings import to_dict

    t = replace(cfg.train, out="", checkpoint_dir="", cache_dir="")
    parts = {name: to_dict(getattr(cfg, name)) for name in ("dataset", "encoder", "regressor", "augment")}
    parts["train"] = to_dict(t)
    parts["runtime"] = {"dtype": cfg.runtime.dtype}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        if name.startswith("opt."):
            _, i, k = name.split(".", 2)
            state.setdefault(int(i), {})[k] = t
    sd["state"] = state
    opt.load_state_dict(sd)
