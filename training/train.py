"""The training loop: the paper's recipe on cached embeddings.

MSE loss, Adam (lr 1e-4), batches of 128, up to N epochs, best epoch chosen on the devel
set's mean Spearman with early stopping. All per-emotion regressors train together as one
`RegressorBank`: the loss is the mean of the per-emotion MSEs, and since each model's
parameters get gradients only from its own emotion and Adam is elementwise, this is the
same as training the nine models one by one (bar float rounding), in one pass.

Two additions for corpora with different label sets and for small data:
- a mask per file of the emotions its corpus labels: the loss only looks at those
  (masked MSE, or cross-entropy with the shares renormalised over them), and the devel
  Spearman only at emotions every devel file labels;
- augmented views: each epoch draws, per file, its clean features or one of its
  augmented copies (seeded, so a run is reproducible).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..model.adapter import Adapter
from ..model.bundle import new_bank
from ..model.regressor import RegressorBank, pool_each
from ..model.specs import RegressorSpec
from .metrics import spearman_per_column
from .settings import TrainSettings

log = logging.getLogger("emomon")


@dataclass
class Split:
    """Features of one split, unpadded, with their share targets."""

    features: list[torch.Tensor]  # each (T, D) or (K, T, D), float32
    targets: np.ndarray  # (N, E)
    masks: np.ndarray | None = None  # (N, E) bool: emotions each file's corpus labels; None = all
    views: list[list[torch.Tensor]] = field(default_factory=list)  # per file: its augmented copies
    # Architecture 3 only: (1 + views, N, F) pooled statistics of the features and of each
    # augmented view (model.regressor.pool_statistics). When set, fit() trains the head on
    # them and reads `features` for their shape alone.
    pooled: torch.Tensor | None = None
    sums: torch.Tensor | None = None  # with `pooled`: (N, 3, D) model.normalize.frame_sums of each file
    weights: np.ndarray | None = None  # (N,) each file's weight in the loss (mean 1); None = equal ([train] balance)

    def __len__(self) -> int:
        return len(self.features)

    def mask_array(self) -> np.ndarray:
        return np.ones(self.targets.shape, dtype=bool) if self.masks is None else self.masks


def masked_loss(
    y: torch.Tensor, t: torch.Tensor, m: torch.Tensor, kind: str, w: torch.Tensor | None = None
) -> torch.Tensor:
    """Loss over the emotions each file labels: y, t (B, E) shares, m (B, E) bool, w (B,)
    each file's weight (None = equal).

    "mse": mean squared error over the labelled entries. "ce": cross-entropy of the
    target shares against the predicted shares renormalised over the labelled emotions
    (a softmax output restricted to them), so an emotion a corpus cannot label is never
    pushed down by it.
    """
    m = m.to(y.dtype)
    w = torch.ones(y.shape[0], dtype=y.dtype, device=y.device) if w is None else w.to(y.dtype)
    if kind == "mse":
        return (((y - t) ** 2) * m * w[:, None]).sum() / (m * w[:, None]).sum().clamp(min=1e-12)
    p = (y * m) / (y * m).sum(1, keepdim=True).clamp(min=1e-12)
    return (-(t * m * torch.log(p.clamp(min=1e-8))).sum(1) * w).sum() / w.sum().clamp(min=1e-12)


def batch_loss(y: torch.Tensor, t: torch.Tensor, m: torch.Tensor, kind: str, w: torch.Tensor | None) -> torch.Tensor:
    """masked_loss of a batch's outputs (B, E), or for an ensemble (B, K, E) the mean of its
    K members' own losses (each member its own distribution)."""
    if y.dim() == 3:
        return torch.stack([masked_loss(y[:, k], t, m, kind, w) for k in range(y.shape[1])]).mean()
    return masked_loss(y, t, m, kind, w)


def balance_weights(corpora: list[str], speakers: list[str], how: str) -> np.ndarray | None:
    """Each training file's loss weight, mean 1, so that no corpus (or speaker) dominates.

    "corpus": every corpus weighs the same in all, however many files it has (nEMO's 4,481
    files then count as much as IndoWave's 240); "speaker": every corpus the same, and
    within it every speaker the same; "none": None, every file the same.
    """
    if how == "none":
        return None
    c = np.asarray(corpora)
    units = c if how == "corpus" else np.char.add(np.char.add(c, "\0"), np.asarray(speakers))
    w = np.zeros(len(c))
    n_corpora = len(set(corpora))
    for corpus in set(corpora):
        own = c == corpus
        members = sorted(set(units[own]))
        for u in members:
            where = units == u
            w[where] = 1.0 / (n_corpora * len(members) * where.sum())
    return (w * len(w)).astype(np.float32)


@dataclass
class FitResult:
    bank: RegressorBank
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss, devel rho
    # an adapted fit (training/adapt.py): the encoder's trained top (None: the frozen encoder
    # won), what the bundle carries of it, and the adaptation epoch chosen (0 = none)
    top: torch.nn.Module | None = None
    adapter: Adapter | None = None
    adapt_epoch: int | None = None


def collate(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (T, D) or (K, T, D) sequences along T -> (B, T, D) or (B, K, T, D), lengths (B,)."""
    from torch.nn.utils.rnn import pad_sequence

    lengths = torch.tensor([f.shape[-2] for f in features])
    if features[0].dim() == 3:  # (K, T, D): pad along T
        x = pad_sequence([f.transpose(0, 1) for f in features], batch_first=True).transpose(1, 2)
    else:
        x = pad_sequence(features, batch_first=True)
    return x, lengths


def predict(bank: RegressorBank, features: list[torch.Tensor], batch_size: int = 128, device="cpu") -> np.ndarray:
    """Shares (N, E) for normalised features, in evaluation mode without gradients.

    Batches gather files of similar length (padding costs compute, never the result: a
    segment's output is the same alone or in any padded batch); rows come back in input order.
    """
    bank.eval()
    order = np.argsort([f.shape[-2] for f in features], kind="stable")
    out = np.zeros((len(features), bank.n_outputs), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, len(features), batch_size):
            idx = order[i : i + batch_size]
            x, n = collate([features[j] for j in idx])
            out[idx] = bank(x.to(device), n.to(device))[0].float().cpu().numpy()
    return out


def length_batches(lengths: np.ndarray, batch_size: int, gen: torch.Generator, window: int = 4) -> list[list[int]]:
    """One epoch's batches for sequence inputs: a random order cut into windows of `window`
    batches, each window sorted by length and cut into batches, the batches then shuffled.

    Every file is in exactly one batch. Files of similar length pad little (an epoch of
    Architecture 2 on Emo-DB's Whisper frames: 9.5 s in random batches, 5.4 s fully
    sorted), and the window keeps which files share a batch random from epoch to epoch.
    """
    order = torch.randperm(len(lengths), generator=gen).numpy()
    batches = []
    span = batch_size * window
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def fit(
    train: Split,
    devel: Split | None,
    emotions: tuple[str, ...],
    spec: RegressorSpec,
    settings: TrainSettings,
    epochs: int | None = None,
    device: str = "cpu",
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train a bank on `train`; choose the epoch with the best devel mean Spearman.

    Features come already normalised (training.experiment.fit_normalised). Without a
    devel split, trains exactly `epochs` (or settings.epochs) epochs and keeps the last.
    """
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    mixed = train.features[0].shape[0] if train.features[0].dim() == 3 else 0
    bank = new_bank(spec, emotions, train.features[0].shape[-1], mixed).to(device)
    # The fused kernel: one pass over each parameter instead of a dozen (1.6x faster steps
    # for the pooled head on CPU).
    fused = torch.device(device).type in ("cpu", "cuda")
    opt = torch.optim.Adam(bank.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, fused=fused)
    targets = torch.as_tensor(train.targets, dtype=torch.float32)
    masks = torch.as_tensor(train.mask_array())
    weights = None if train.weights is None else torch.as_tensor(train.weights, dtype=torch.float32)
    n_views = min((len(v) for v in train.views), default=0)
    if devel is not None:
        scored = devel.mask_array().all(0)  # emotions every devel file labels
        if not scored.any():
            raise ValueError("the devel files share no labelled emotion")

    # Architecture 3 pools fixed (already normalised) features before any trained layer, so
    # each file's statistics are computed once and the epochs train the head alone: the
    # same maths as bank(x, lengths), without padding and pooling every batch again.
    pooled = spec.arch == 3 and not mixed and not spec.attentive
    if pooled:
        if train.pooled is not None:
            versions = train.pooled
            n_views = versions.shape[0] - 1
        else:
            views = [pool_each([v[k] for v in train.views], spec.pooling) for k in range(n_views)]
            versions = torch.stack([pool_each(train.features, spec.pooling), *views])
        versions = versions.to(device)  # (1 + views, N, F)
        devel_in = None
        if devel is not None:
            devel_in = devel.pooled[0] if devel.pooled is not None else pool_each(devel.features, spec.pooling)
            devel_in = devel_in.to(device)

    members = spec.ensemble > 1  # an ensemble's heads train on their own losses, side by side

    def batch_forward(idx: list[int], view: list[int]) -> torch.Tensor:
        """(B, E) outputs, or (B, K, E) for an ensemble of K."""
        if pooled:
            return bank.head(versions[torch.tensor([view[j] for j in idx]), torch.tensor(idx)], members)
        x, n = collate([train.views[j][view[j] - 1] if view[j] else train.features[j] for j in idx])
        return bank(x.to(device), n.to(device), members)[0]

    def devel_predict() -> np.ndarray:
        if not pooled:
            return predict(bank, devel.features, device=device)
        bank.eval()
        with torch.inference_mode():
            return bank.head(devel_in).float().cpu().numpy()

    best = (-np.inf, 0, copy.deepcopy(bank.state_dict()))
    history = []
    n_epochs = epochs or settings.epochs

    def epoch_batches() -> tuple[list[list[int]], list[int]]:
        """This epoch's batches and the version each file trains on (0 = clean, k = view k)."""
        if pooled:  # nothing is padded: plain random batches
            order = torch.randperm(len(train), generator=gen).tolist()
            view = torch.randint(0, n_views + 1, (len(train),), generator=gen).tolist()
            return [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)], view
        view = torch.randint(0, n_views + 1, (len(train),), generator=gen).tolist()
        lengths = np.array([(train.views[j][v - 1] if v else train.features[j]).shape[-2] for j, v in enumerate(view)])
        return length_batches(lengths, settings.batch_size, gen), view

    for epoch in range(1, n_epochs + 1):
        bank.train()
        total = 0.0
        batches, view = epoch_batches()
        for idx in batches:
            y = batch_forward(idx, view)
            w = None if weights is None else weights[idx].to(device)
            t, m = targets[idx].to(device), masks[idx].to(device)
            loss = batch_loss(y, t, m, settings.loss, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        row = {"epoch": epoch, "train_loss": total / len(train)}
        if devel is not None:
            pred = devel_predict()[:, scored]
            rho = spearman_per_column(pred, devel.targets[:, scored])
            row.update(
                devel_loss=float(np.mean((pred - devel.targets[:, scored]) ** 2)), devel_spearman=float(np.mean(rho))
            )
            if row["devel_spearman"] > best[0]:
                best = (row["devel_spearman"], epoch, copy.deepcopy(bank.state_dict()))
            row["best_epoch"] = best[1]
        history.append(row)
        if on_epoch:
            on_epoch(row)
        if devel is not None and settings.patience and epoch - best[1] >= settings.patience:
            break
    if devel is not None:
        bank.load_state_dict(best[2])
        best_epoch = best[1]
    else:
        best_epoch = n_epochs
    return FitResult(bank.cpu().eval(), best_epoch, history)
