"""Adapting the encoder itself (`[train] adapt`, issue 39): the top of the encoder trains
beside the head.

The frozen part runs once. Each file's hidden state `start` (the input of the lowest
layer that trains: 0 for layers 1-3, the convolutions' output) is cached like any other
embedding, clean and augmented (training/cache.py), and every step runs the layers above
it with gradients:

    cached hidden state `start` -> layers start+1 .. L (LoRA or their own weights)
      -> each unit's standardisation (a corpus, in "corpus" mode) -> pooled statistics
      -> the head -> the masked loss

"lora" trains low-rank matrices beside the attention and feed-forward projections
(model/adapter.py; merged into the weights when the bundle loads, so inference costs what
it costs without them); "layers" trains the layers' own weights, with `layer_decay`
slowing the lower ones. Every adapted fit starts from the head the frozen recipe trained
on the same fold (epoch 0 in its history: the frozen model), and keeps the epoch with the
best devel mean Spearman, epoch 0 included: adapting can only be chosen where it helps on
held-out speakers.

The standardisation follows the encoder as it changes: at each epoch's start every
unit's statistics are taken again from up to `STATS_SAMPLE` of its files (no gradient
flows through them); the fitted model's prior is the adapted frames' statistics over all
its training files, as the frozen recipe's is.

Each epoch ends in a checkpoint (training/checkpoints.py); `emomon train --resume` continues
a run from them and gives the weights the uninterrupted run gives.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..model.adapter import Adapter, LayersSpec, LoraLinear, LoraSpec, adapter_state, add_lora, layers_state
from ..model.normalize import frame_sums, stats_from_sums
from ..model.regressor import pool_statistics
from .checkpoints import Checkpoints, optimizer_tensors, restore_optimizer
from .encoder_top import EncoderTop, load_top, trained_layers
from .metrics import spearman_per_column
from .train import FitResult, Split, batch_loss, collate, length_batches

if TYPE_CHECKING:
    from ..config import Config
    from .settings import TrainSettings

log = logging.getLogger("emomon")

STATS_SAMPLE = 256  # files per unit whose adapted frames give its statistics at an epoch's start
BATCH_FRAMES = 16_000  # frames per no-gradient batch (passes over files to pool or to take statistics)


def mask_frames(x: torch.Tensor, lengths: torch.Tensor, s: TrainSettings, gen: torch.Generator) -> torch.Tensor:
    """SpecAugment-like masking of a batch of hidden states (B, T, D) with true lengths (B,).

    In each clip, spans of `s.mask_span` frames starting at random (their count
    mask_time * frames / span, rounded up or down at random: overlaps aside, `s.mask_time`
    of its frames on average) and `s.mask_channels` of its channels take the clip's mean,
    so that the layers above learn not to lean on any one moment or channel. Returns a new
    tensor; padded frames are left as they are."""
    out = x.clone()
    d = x.shape[2]
    for b, n in enumerate(lengths.tolist()):
        clip = out[b, :n]
        mean = x[b, :n].mean(0)
        spans = int(s.mask_time * n / s.mask_span + torch.rand((), generator=gen))
        if spans:
            starts = torch.randint(0, max(1, n - s.mask_span + 1), (spans,), generator=gen)
            frames = (starts[:, None] + torch.arange(s.mask_span)).clamp_(max=n - 1).flatten()
            clip[frames] = mean
        if s.mask_channels:
            channels = torch.randperm(d, generator=gen)[: round(s.mask_channels * d)]
            clip[:, channels] = mean[channels]
    return out


def autocast(cfg: Config):
    """bfloat16 autocast where the configured compute dtype is bfloat16 (`auto` on CPUs with
    fast bfloat16 kernels), else float32; int8 is for inference only and trains in float32."""
    from ..model.compute import choose_dtype, resolve_device

    device = resolve_device(cfg.runtime.device)
    dtype, _ = choose_dtype(cfg.runtime.dtype, device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def through(
    top: EncoderTop, frames: list[torch.Tensor], stats: tuple[str, ...], cfg: Config
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every file's hidden state `start` through `top` without gradients: (N, F) pooled
    statistics of the output frames and (N, 3, D) their frame sums (model.normalize.frame_sums)."""
    from ..model.compute import plan_batches, resolve_device

    device = resolve_device(cfg.runtime.device)
    top.to(device).eval()
    pooled: list[torch.Tensor | None] = [None] * len(frames)
    sums: list[torch.Tensor | None] = [None] * len(frames)
    with torch.inference_mode(), autocast(cfg):
        for idx in plan_batches([f.shape[0] for f in frames], True, BATCH_FRAMES):
            x, n = collate([frames[k].float() for k in idx])
            h = top(x.to(device), n.to(device)).float()
            p = pool_statistics(h, n.to(device), stats).cpu() if stats else torch.zeros(len(idx), 0)
            for r, k in enumerate(idx):
                pooled[k] = p[r]
                sums[k] = frame_sums(h[r, : int(n[r])].cpu())
    if not frames:
        return torch.zeros(0, 0), torch.zeros(0, 3, 0, dtype=torch.float64)
    return torch.stack(pooled), torch.stack(sums)


def unit_stats(
    top: EncoderTop, frames: list[torch.Tensor], units: list[str], cfg: Config, gen: torch.Generator
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each unit's (mean, std) (D,) of `top`'s output frames, from up to STATS_SAMPLE of its files."""
    by_unit: dict[str, list[int]] = {}
    for i, u in enumerate(units):
        by_unit.setdefault(u, []).append(i)
    out = {}
    for u in sorted(by_unit):
        members = by_unit[u]
        if len(members) > STATS_SAMPLE:
            pick = torch.randperm(len(members), generator=gen)[:STATS_SAMPLE].sort().values.tolist()
            members = [members[k] for k in pick]
        _, sums = through(top, [frames[i] for i in members], (), cfg)
        out[u] = stats_from_sums(sums)
    return out


@dataclass
class Trainable:
    """What an adapted fit trains in the encoder: its parameter groups, and how to save it."""

    groups: list[dict]
    adapters: dict[str, LoraLinear]  # "lora" only
    base: dict[str, torch.Tensor]  # "layers" only: the trained layers' weights before training (top's names)

    def adapter(self, top: EncoderTop, cfg: Config) -> Adapter:
        """The trained part as a bundle carries it, named by the whole encoder's layer indices."""
        layers = tuple(i - 1 for i in trained_layers(cfg))
        shift = top.start

        def renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out = {}
            for name, t in state.items():
                _, i, rest = name.split(".", 2)
                out[f"layers.{int(i) + shift}.{rest}"] = t
            return out

        if self.adapters:
            t = cfg.train
            spec = LoraSpec(rank=t.lora_rank, alpha=t.lora_alpha, layers=layers)
            return Adapter(spec, renamed(adapter_state(self.adapters)))
        own = LayersSpec(layers=tuple(i - shift for i in layers))
        return Adapter(LayersSpec(layers=layers, delta=True), renamed(layers_state(top, own, self.base)))


def make_trainable(top: EncoderTop, cfg: Config) -> Trainable:
    """Adapters (or the layers themselves) made trainable, one parameter group per layer:
    the top trained layer at encoder_lr, each one below at layer_decay times the one above."""
    t = cfg.train
    layers = trained_layers(cfg)
    own = tuple(i - 1 - top.start for i in layers)  # indices into top.layers
    adapters: dict[str, LoraLinear] = {}
    if t.adapt == "lora":
        adapters = add_lora(top, LoraSpec(rank=t.lora_rank, alpha=t.lora_alpha, layers=own))
    base = {} if t.adapt == "lora" else layers_state(top, LayersSpec(layers=own))
    groups = []
    for i, k in zip(layers, own):
        if t.adapt == "lora":
            params = [p for n, m in adapters.items() if n.startswith(f"layers.{k}.") for p in (m.lora_a, m.lora_b)]
        else:
            params = list(top.layers[k].parameters())
        for p in params:
            p.requires_grad_(True)
        groups.append({"params": params, "lr": t.encoder_lr * t.layer_decay ** (layers[-1] - i), "weight_decay": 0.0})
    return Trainable(groups, adapters, base)


def _trained_state(top: EncoderTop, bank: nn.Module) -> dict[str, torch.Tensor]:
    """Everything an adapted fit changes, by name: the encoder's trainable tensors and the head."""
    state = {f"top.{n}": p.detach().clone() for n, p in top.named_parameters() if p.requires_grad}
    state |= {f"head.{n}": t.detach().clone() for n, t in bank.state_dict().items()}
    return state


def _load_trained(top: EncoderTop, bank: nn.Module, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        params = dict(top.named_parameters())
        for n, t in state.items():
            if n.startswith("top."):
                params[n[4:]].copy_(t)
    bank.load_state_dict({n[5:]: t for n, t in state.items() if n.startswith("head.")})


def adapt_fit(
    prefix: list[torch.Tensor],
    views: list[list[torch.Tensor]],
    train: Split,
    units: list[str],
    devel: tuple[list[torch.Tensor], np.ndarray, np.ndarray, list[str]] | None,
    warm: FitResult,
    cfg: Config,
    name: str,
    checkpoints: Checkpoints | None = None,
    epochs: int | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> tuple[FitResult, torch.Tensor | None]:
    """Adapt the encoder's top and the head together, from the frozen fit `warm`.

    prefix: each training file's cached hidden state `start` (T, D); views: each file's
    augmented copies of it; train: their targets, masks and loss weights (its features are
    not read); units: each file's normalisation unit; devel: (prefix frames, targets,
    masks, units) of the devel files, for the epoch choice (None: train `epochs`, keep the
    last). Returns the fit (its `top` and `adapter` set) and (N, 3, D) the training files'
    frame sums through the chosen top (the fitted model's prior statistics); where epoch 0
    (the frozen model) is chosen, the fit has no top and the sums are None.
    """
    from ..model.compute import resolve_device
    from ..model.normalize import group_standardise_stats
    from ..model.regressor import normalise_pooled

    s, spec = cfg.train, cfg.regressor
    device = resolve_device(cfg.runtime.device)
    torch.manual_seed(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    top = load_top(cfg, "")
    trainable = make_trainable(top, cfg)
    top.to(device)
    bank = copy.deepcopy(warm.bank).to(device)
    opt = torch.optim.Adam(
        [*trainable.groups, {"params": list(bank.parameters()), "lr": s.head_lr, "weight_decay": s.weight_decay}]
    )
    targets = torch.as_tensor(train.targets, dtype=torch.float32)
    masks = torch.as_tensor(train.mask_array())
    weights = None if train.weights is None else torch.as_tensor(train.weights, dtype=torch.float32)
    n_views = min((len(v) for v in views), default=0)
    n_epochs = epochs or s.adapt_epochs
    unit_index = {u: k for k, u in enumerate(sorted(set(units)))}
    file_unit = torch.tensor([unit_index[u] for u in units])
    if devel is not None:
        d_frames, d_targets, d_masks, d_units = devel
        scored = d_masks.all(0)

    def devel_score() -> float:
        pooled, sums = through(top, d_frames, spec.pooling, cfg)
        mean, std = group_standardise_stats(sums, d_units)
        bank.eval()
        with torch.inference_mode():
            pred = bank.head(normalise_pooled(pooled, mean, std, spec.pooling).to(device)).float().cpu().numpy()
        return float(np.mean(spearman_per_column(pred[:, scored], d_targets[:, scored])))

    history: list[dict] = []
    start_epoch = 1
    best: tuple[float, int, dict] = (-math.inf, 0, _trained_state(top, bank))
    saved = checkpoints.load(name) if checkpoints else None
    if saved is not None:
        tensors, meta = saved
        _load_trained(top, bank, {n[4:]: t for n, t in tensors.items() if n.startswith("now.")})
        restore_optimizer(opt, tensors)
        gen.set_state(tensors["rng.gen"])
        torch.set_rng_state(tensors["rng.torch"])
        history, start_epoch = meta["history"], meta["epoch"] + 1
        best = (meta["best_score"], meta["best_epoch"], {n[5:]: t for n, t in tensors.items() if n.startswith("best.")})
        if meta.get("done"):
            start_epoch = n_epochs + 1
        log.info("%s: resumed after epoch %d from %s", name, meta["epoch"], checkpoints.path(name))
    elif devel is not None:  # epoch 0: the frozen model, so that adapting is chosen only where it helps
        score = devel_score()
        best = (score, 0, _trained_state(top, bank))
        history.append({"epoch": 0, "train_loss": float("nan"), "devel_spearman": score, "best_epoch": 0})

    def save(epoch: int, done: bool = False) -> None:
        if checkpoints is None:
            return
        tensors = {f"now.{n}": t for n, t in _trained_state(top, bank).items()}
        tensors |= {f"best.{n}": t for n, t in best[2].items()}
        tensors |= optimizer_tensors(opt)
        tensors |= {"rng.gen": gen.get_state(), "rng.torch": torch.get_rng_state()}
        meta = {"epoch": epoch, "history": history, "best_score": best[0], "best_epoch": best[1], "done": done}
        checkpoints.save(name, tensors, meta)

    for epoch in range(start_epoch, n_epochs + 1):
        stats = unit_stats(top, prefix, units, cfg, gen)
        mean = torch.stack([stats[u][0] for u in sorted(unit_index)]).to(device)  # (U, D)
        std = torch.stack([stats[u][1] for u in sorted(unit_index)]).to(device)
        view = torch.randint(0, n_views + 1, (len(prefix),), generator=gen).tolist()
        lengths = np.array([(views[j][v - 1] if v else prefix[j]).shape[0] for j, v in enumerate(view)])
        top.train()
        bank.train()
        total = 0.0
        for idx in length_batches(lengths, s.adapt_batch_size, gen):
            x, n = collate([(views[j][view[j] - 1] if view[j] else prefix[j]).float() for j in idx])
            if s.mask_time or s.mask_channels:
                x = mask_frames(x, n, s, gen)
            x, n = x.to(device), n.to(device)
            u = file_unit[idx].to(device)
            with autocast(cfg):
                h = top(x, n)
                h = (h.float() - mean[u][:, None]) / std[u][:, None]
                y = bank(h, n, True)[0]  # (B, members, E)
            t, m = targets[idx].to(device), masks[idx].to(device)
            w = None if weights is None else weights[idx].to(device)
            loss = batch_loss(y.float(), t, m, s.loss, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        row = {"epoch": epoch, "train_loss": total / len(prefix)}
        if devel is not None:
            row["devel_spearman"] = devel_score()
            if row["devel_spearman"] > best[0]:
                best = (row["devel_spearman"], epoch, _trained_state(top, bank))
            row["best_epoch"] = best[1]
        history.append(row)
        save(epoch)
        if on_epoch:
            on_epoch(row)
        if devel is not None and s.patience and epoch - best[1] >= s.patience:
            break
    if devel is not None:
        _load_trained(top, bank, best[2])
        chosen = best[1]
    else:
        chosen = n_epochs
        best = (math.nan, chosen, _trained_state(top, bank))
    save(max(n_epochs, history[-1]["epoch"] if history else 0), done=True)
    bank = bank.cpu().eval()
    if chosen == 0:  # the frozen model won on held-out speakers: nothing to carry
        return FitResult(bank, warm.best_epoch, history, adapt_epoch=0), None
    _, sums = through(top, prefix, (), cfg)
    adapter = trainable.adapter(top, cfg)
    top.cpu().eval()
    for p in top.parameters():
        p.requires_grad_(False)
    return FitResult(bank, warm.best_epoch, history, top=top, adapter=adapter, adapt_epoch=chosen), sums
