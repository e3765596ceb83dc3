"""The paper's sequence regressors (Mohapatra et al., ACM MM 2023) and a fused bank of them.

Two implementations of the same maths, kept side by side on purpose:

- `Regressor` is one model, written the way the paper describes it with stock layers
  (nn.Conv1d, packed nn.LSTM). It is the reference: easy to read, easy to check.
- `RegressorBank` holds M such models with their parameters stacked on a leading axis
  and runs all of them in ONE call (grouped convolutions, batched attention and
  feed-forward; only the LSTM recurrence runs model by model, see `_lstm`). The paper
  trains one regressor per emotion; the bank is how the nine of them run together. `RegressorBank.from_regressors` and
  `.regressor(m)` convert between the two, and the tests hold them equal.

Architecture 1: Conv1d D->768->384->192 (ReLU) -> MaxPool(2) -> LayerNorm -> 2-layer LSTM
-> masked mean over valid frames -> FF 512->256->64->8->1 (ReLU between layers).
Architecture 2: same trunk; query = both LSTM layers' final hidden states, concatenated
and projected to the hidden size; keys = values = LSTM outputs; scaled dot-product
attention with a softmax over valid frames only -> FF 512->256->128->64->1 with
LayerNorm and ReLU between layers and ReLU on the output (shares are >= 0).

Architecture 3 (emomon's, not the paper's): statistics pooling. Each input dimension's
mean, standard deviation, extremes or percentiles over the segment's real frames
(`spec.pooling`), then the Architecture-2 feed-forward head. On small corpora and
hand-crafted descriptors it learns far more than the sequence models; on SSL features it
is the usual strong baseline (x-vector / SUPERB style statistics pooling). With the
statistics "amean" and "astd" it is attentive statistics pooling (Okabe et al. 2018): a
small tanh layer scores every frame, the softmax of the scores over the real frames
weighs the mean and standard deviation, and those weights are the segment's attention.

Normalisation (a deliberate departure from the original): the authors' code applies
LayerNorm over the whole zero-padded (time, channel) block and normalises a padded
attention vector, which ties every prediction to one fixed corpus-wide maximum length
(398 frames) and lets padding change the result. A live monitor sees segments of any
length, so here LayerNorm works per frame over channels only and attention softmaxes
over the true frames only. A segment then gets the same output alone or inside any
padded batch, at any maximum length.

Masking: padded frames are zeroed before every convolution, so a segment inside a
padded batch sees exactly the zero "same" padding it would see alone.

Shapes: B batch, T frames, D input dim, M models, C channels, H LSTM hidden size,
L LSTM layers, K encoder layers mixed (only with the learned layer weighting).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .specs import RegressorSpec


def _activate(z: Tensor, kind: str) -> Tensor:
    """The output activation over the last axis (all emotions for "softmax")."""
    if kind == "softmax":
        return z.softmax(-1)
    return F.relu(z) if kind == "relu" else torch.sigmoid(z) if kind == "sigmoid" else z


def temper(shares: Tensor, temperature: float) -> Tensor:
    """Temperature scaling of softmax shares (B, E): softmax(logits / T) computed from the
    shares themselves (shares ** (1 / T), renormalised). T > 1 flattens over-confident
    shares, T < 1 sharpens; the top emotion never changes."""
    if temperature == 1.0:
        return shares
    z = torch.log(shares.clamp(min=1e-12)) / temperature
    return (z - z.amax(-1, keepdim=True)).softmax(-1)


def dropout(z: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout, as F.dropout, from a uniform draw: on CPU, torch's Bernoulli sampler
    (which F.dropout uses) is slower than rand + compare, and on the pooled head's wide
    input it was most of a training step (docs/architecture.md, "Measurements behind the code")."""
    if not training or p == 0.0:
        return z
    return z * (torch.rand_like(z) >= p).to(z.dtype) * (1.0 / (1.0 - p))


def pooled_lengths(lengths: Tensor) -> Tensor:
    """Valid frames after MaxPool1d(2): floor(T / 2), never below one."""
    return torch.clamp(lengths // 2, min=1)


def _mask(lengths: Tensor, T: int) -> Tensor:
    """(B,) lengths -> (B, T) bool, True on real frames."""
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


def pool_statistics(x: Tensor, lengths: Tensor, stats: tuple[str, ...], weights: Tensor | None = None) -> Tensor:
    """Statistics of each dimension over the real frames: x (B, T, D) -> (B, len(stats) * D).

    "mean", "std" (population), "min", "max", "pNN" (the NN-th percentile, interpolated
    linearly between the two nearest frames, as numpy's default); "amean", "astd": the
    mean and standard deviation under `weights` (B, T), an attention over the frames that
    sums to 1 over the real ones. Padded frames never count, so a segment gives the same
    statistics alone or inside a padded batch.
    """
    B, T, D = x.shape
    valid = _mask(lengths, T)[:, :, None]  # (B, T, 1)
    n = lengths.clamp(min=1).to(x.dtype)[:, None]  # (B, 1)
    mean = (x * valid).sum(1) / n  # (B, D)
    ordered, amean = None, None
    out = []
    for stat in stats:
        if stat in ("amean", "astd"):
            if weights is None:
                raise ValueError(f"pooling statistic '{stat}' needs attention weights")
            if amean is None:
                w = (weights * valid[..., 0])[:, :, None]  # (B, T, 1)
                amean = (w * x).sum(1)  # (B, D)
            if stat == "amean":
                out.append(amean)
            else:
                var = (w * (x - amean[:, None]) ** 2).sum(1)
                out.append(torch.sqrt(var + 1e-6))
        elif stat == "mean":
            out.append(mean)
        elif stat == "std":
            var = (((x - mean[:, None]) * valid) ** 2).sum(1) / n
            out.append(torch.sqrt(var + 1e-6))  # the epsilon keeps the gradient finite at 0
        elif stat == "min":
            out.append(x.masked_fill(~valid, float("inf")).amin(1))
        elif stat == "max":
            out.append(x.masked_fill(~valid, float("-inf")).amax(1))
        else:  # "pNN": sorted real frames first, padding (+inf) last
            if ordered is None:  # sorted along a contiguous axis: faster than along T in place
                ordered = x.masked_fill(~valid, float("inf")).transpose(1, 2).contiguous().sort(-1).values  # (B, D, T)
            pos = (lengths.clamp(min=1) - 1).to(x.dtype) * (int(stat[1:]) / 100)  # (B,)
            lo = pos.floor().long()
            hi = torch.minimum(lo + 1, lengths.clamp(min=1) - 1)
            frac = (pos - lo.to(x.dtype))[:, None]  # (B, 1)
            a = ordered.gather(2, lo[:, None, None].expand(B, D, 1))[..., 0]
            b = ordered.gather(2, hi[:, None, None].expand(B, D, 1))[..., 0]
            out.append(a + (b - a) * frac)
    return torch.cat(out, dim=-1)


def frame_attention(x: Tensor, lengths: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """Attentive pooling's weights for M scorers: x (B, T, D), w1 (M, A, D), b1 (M, A),
    w2 (M, 1, A), b2 (M, 1) -> (M, B, T), a softmax over each segment's real frames."""
    h = torch.tanh(torch.einsum("btd,mad->mbta", x, w1) + b1[:, None, None, :])  # (M, B, T, A)
    scores = torch.einsum("mbta,ma->mbt", h, w2[:, 0]) + b2[:, :, None]  # (M, B, T)
    valid = _mask(lengths, x.shape[1])[None]  # (1, B, T)
    return scores.masked_fill(~valid, float("-inf")).softmax(-1)


def pool_each(features: list[Tensor], stats: tuple[str, ...]) -> Tensor:
    """pool_statistics of each unpadded (T_i, D) sequence on its own -> (N, len(stats) * D)."""
    if not features:
        return torch.zeros(0, 0)
    return torch.cat([pool_statistics(f[None].float(), torch.tensor([f.shape[0]]), stats) for f in features])


def normalise_pooled(pooled: Tensor, mean: Tensor, std: Tensor, stats: tuple[str, ...]) -> Tensor:
    """pool_statistics of the standardised frames (x - mean) / std, from pool_statistics of x.

    Every statistic commutes with a per-dimension affine map of positive scale (the mean,
    extremes and percentiles shift and scale; the standard deviation only scales), so a
    segment's statistics can be computed once and standardised by any training fold's
    mean and std: pooled (..., len(stats) * D), mean and std (D,).
    """
    z = pooled.unflatten(-1, (len(stats), -1))  # (..., S, D)
    mean, std = mean.to(pooled.dtype), std.to(pooled.dtype)
    out = []
    for i, stat in enumerate(stats):
        v = z[..., i, :]
        if stat == "std":  # pool_statistics returns sqrt(var + 1e-6)
            var = (v.double() ** 2 - 1e-6).clamp(min=0.0) / std.double() ** 2
            out.append(torch.sqrt(var + 1e-6).to(v.dtype))
        else:
            out.append((v - mean) / std)
    return torch.stack(out, -2).flatten(-2)


# --------------------------------------------------------------------------- reference


class Regressor(nn.Module):
    """One regressor of the paper, built from stock layers. Input (B, T, D) or (B, K, T, D)."""

    def __init__(self, spec: RegressorSpec, input_dim: int, out_dim: int = 1, mixed_layers: int = 0) -> None:
        super().__init__()
        self.spec, self.input_dim = spec, input_dim
        self.layer_logits = nn.Parameter(torch.zeros(mixed_layers)) if mixed_layers else None
        if spec.arch == 3:
            width = len(spec.pooling) * input_dim
            if spec.attentive:  # the frame scorer of attentive statistics pooling
                self.attn_in = nn.Linear(input_dim, spec.attention_dim)
                self.attn_out = nn.Linear(spec.attention_dim, 1)
        else:
            chans = (input_dim, *spec.conv_channels)
            self.convs = nn.ModuleList(
                nn.Conv1d(a, b, spec.kernel_size, padding=spec.kernel_size // 2) for a, b in zip(chans[:-1], chans[1:])
            )
            self.norm = nn.LayerNorm(chans[-1])
            self.lstm = nn.LSTM(chans[-1], spec.lstm_hidden, spec.lstm_layers, batch_first=True)
            width = spec.lstm_hidden
            self.query = nn.Linear(spec.lstm_layers * width, width) if spec.arch == 2 else None
        dims = (width, *spec.ff, out_dim)
        self.ff = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.ff_norms = nn.ModuleList(nn.LayerNorm(d) for d in spec.ff) if spec.arch != 1 else None

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.layer_logits is not None:  # (B, K, T, D) -> (B, T, D)
            x = torch.einsum("k,bktd->btd", self.layer_logits.softmax(0), x)
        if self.spec.arch == 3:
            attn = None
            if self.spec.attentive:
                scores = self.attn_out(torch.tanh(self.attn_in(x)))[..., 0]  # (B, T)
                attn = scores.masked_fill(~_mask(lengths, x.shape[1]), float("-inf")).softmax(-1)
            return self._head(pool_statistics(x, lengths, self.spec.pooling, attn)), attn
        B, T, _ = x.shape
        mask = _mask(lengths, T)[:, None, :]  # (B, 1, T)
        h = x.transpose(1, 2)  # (B, D, T)
        for conv in self.convs:
            h = F.relu(conv(h * mask))
        h = F.max_pool1d(h * mask, 2).transpose(1, 2)  # (B, T', C)
        h = self.norm(h)
        lp = pooled_lengths(lengths)
        Tp = h.shape[1]
        packed = pack_padded_sequence(h, lp.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=Tp)  # (B, T', H)
        valid = _mask(lp, Tp)  # (B, T')
        attn = None
        if self.spec.arch == 1:
            z = out.sum(1) / lp[:, None].to(out.dtype)  # padded outputs are zero
        else:
            q = self.query(h_n.transpose(0, 1).reshape(B, -1))  # (B, H)
            scores = torch.einsum("bth,bh->bt", out, q) / math.sqrt(out.shape[-1])
            attn = scores.masked_fill(~valid, float("-inf")).softmax(-1)  # (B, T')
            z = torch.einsum("bt,bth->bh", attn, out)
        return self._head(z), attn

    def _head(self, z: Tensor) -> Tensor:
        for i, lin in enumerate(self.ff):
            z = lin(dropout(z, self.spec.dropout, self.training))
            if i < len(self.ff) - 1:
                z = F.relu(self.ff_norms[i](z) if self.ff_norms is not None else z)
        if self.spec.output_activation == "softmax" and z.shape[-1] == 1:
            return z  # one emotion's logit: the softmax runs over the whole bank (RegressorBank)
        return _activate(z, self.spec.output_activation)


# --------------------------------------------------------------------------- fused bank


class RegressorBank(nn.Module):
    """M regressors with stacked parameters, run as one batched call.

    forward(x (B, T, D) or (B, K, T, D), lengths (B,)) ->
        (outputs (B, M * out_dim), attention (B, M, T') or None).
    """

    def __init__(
        self,
        spec: RegressorSpec,
        input_dim: int,
        n_models: int,
        out_dim: int = 1,
        mixed_layers: int = 0,
    ) -> None:
        super().__init__()
        self.spec, self.input_dim, self.n_models = spec, input_dim, n_models
        self.out_dim, self.mixed_layers = out_dim, mixed_layers
        M, k, H, L = n_models, spec.kernel_size, spec.lstm_hidden, spec.lstm_layers
        ref = [Regressor(spec, input_dim, out_dim, mixed_layers) for _ in range(M)]
        # Start from M independently initialised stock models, so the bank trains from the
        # same initial distribution as the paper's separate regressors.
        for name, tensor in self._stack(ref).items():
            self.register_parameter(name.replace(".", "__"), nn.Parameter(tensor))
        self._k, self._H = k, H
        # A weightless LSTM (on the meta device) through which each model's slice of the
        # stacked parameters is run; set around nn.Module so it is not a submodule and
        # adds nothing to the state dict.
        if spec.arch != 3:
            template = nn.LSTM(spec.conv_channels[-1], H, L, batch_first=True).to("meta")
            object.__setattr__(self, "_lstm_template", template)

    # Parameter names mirror Regressor.state_dict() with dots turned into "__".
    @staticmethod
    def _stack(models: list[Regressor]) -> dict[str, Tensor]:
        states = [m.state_dict() for m in models]
        return {n: torch.stack([s[n] for s in states]).clone() for n in states[0]}

    @classmethod
    def from_regressors(cls, models: list[Regressor]) -> RegressorBank:
        first = models[0]
        bank = cls(
            first.spec,
            first.input_dim,
            len(models),
            first.ff[-1].out_features,
            0 if first.layer_logits is None else first.layer_logits.numel(),
        )
        with torch.no_grad():
            for name, tensor in cls._stack(models).items():
                getattr(bank, name.replace(".", "__")).copy_(tensor)
        return bank

    def regressor(self, m: int) -> Regressor:
        """Model m of the bank as a stock `Regressor` (same weights)."""
        reg = Regressor(self.spec, self.input_dim, self.out_dim, self.mixed_layers)
        reg.load_state_dict({n.replace("__", "."): p[m] for n, p in self.named_parameters()})
        return reg

    def _p(self, name: str) -> Tensor:
        return getattr(self, name.replace(".", "__"))

    def _linear(self, x: Tensor, name: str) -> Tensor:
        """Per-model linear layer: x (M, B, I) -> (M, B, O)."""
        w, b = self._p(f"{name}.weight"), self._p(f"{name}.bias")  # (M, O, I), (M, O)
        return torch.baddbmm(b[:, None, :], x, w.transpose(1, 2))

    def _layer_norm(self, x: Tensor, name: str) -> Tensor:
        """Per-model LayerNorm over the last dim: x (M, B, ..., C)."""
        w, b = self._p(f"{name}.weight"), self._p(f"{name}.bias")  # (M, C)
        shape = (w.shape[0],) + (1,) * (x.dim() - 2) + (w.shape[1],)
        x = F.layer_norm(x, x.shape[-1:], eps=1e-5)
        return x * w.view(shape) + b.view(shape)

    def _lstm(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Each model's LSTM over x (M, B, T, C) -> outputs (M, B, T, H), h_n (M, L, B, H).

        The recurrence is the one stage that runs model by model: there is no batched LSTM
        kernel (torch.func.vmap has no rule for aten::lstm), and a hand-written recurrence
        batched over models is slower on CPU than M calls of the fused kernel
        (docs/architecture.md, "Measurements behind the code"), because each step then
        streams every model's weights from memory instead of keeping one model's in cache.
        Each call is the stock cuDNN / oneDNN kernel over a packed sequence, so padding costs
        nothing and matches `Regressor` exactly.
        """
        M, B, T, _ = x.shape
        outs, finals = [], []
        for m in range(M):
            weights = {n: p[m] for n, p in self._lstm_params.items()}
            packed = pack_padded_sequence(x[m], lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, (h_n, _) = functional_call(self._lstm_template, weights, (packed,))
            outs.append(pad_packed_sequence(out, batch_first=True, total_length=T)[0])
            finals.append(h_n)  # (L, B, H)
        return torch.stack(outs), torch.stack(finals)

    @property
    def _lstm_params(self) -> dict[str, Tensor]:
        return {n.split("__", 1)[1]: p for n, p in self.named_parameters() if n.startswith("lstm__")}

    def _first_conv(self, x: Tensor) -> Tensor:
        """All models' first convolution over one shared input x (B, D, T) -> (B, M*O, T).

        One GEMM over the unfolded input: oneDNN's direct convolution with M*O output
        channels is slower than this on CPU for the paper's sizes
        (docs/architecture.md, "Measurements behind the code").
        """
        w, b = self._p("convs.0.weight"), self._p("convs.0.bias")  # (M, O, D, k)
        B, D, T = x.shape
        k = self._k
        cols = F.pad(x, (k // 2, k // 2)).unfold(2, k, 1)  # (B, D, T, k)
        cols = cols.permute(0, 2, 1, 3).reshape(B, T, D * k)
        h = torch.matmul(cols, w.flatten(0, 1).flatten(1).T) + b.flatten()  # (B, T, M*O)
        return h.transpose(1, 2)

    @property
    def n_outputs(self) -> int:
        """Values per segment: every model's outputs side by side, or an ensemble's mean."""
        return self.out_dim if self.spec.ensemble > 1 else self.n_models * self.out_dim

    def forward(self, x: Tensor, lengths: Tensor, members: bool = False) -> tuple[Tensor, Tensor | None]:
        """-> (outputs (B, n_outputs), attention (B, M, T') or None); with `members`, an
        ensemble's outputs per member (B, M, out) instead of their mean (for training)."""
        if self.spec.arch == 3:
            return self._pooled(x, lengths, members)
        M, spec = self.n_models, self.spec
        if self.mixed_layers:  # each model mixes the encoder layers its own way
            w = self._p("layer_logits").softmax(-1)  # (M, K)
            x = torch.einsum("mk,bktd->bmdt", w, x)  # (B, M, D, T)
            B, _, D, T = x.shape
            h, groups = x.reshape(B, M * D, T), M
        else:  # one shared input: the first convolution is a single wide GEMM
            B, T, D = x.shape
            h, groups = x.transpose(1, 2), 1  # (B, D, T)
        mask = _mask(lengths, T)[:, None, :]  # (B, 1, T)
        for j in range(len(spec.conv_channels)):
            if j == 0 and groups == 1:
                h = self._first_conv(h * mask)
            else:
                w, b = self._p(f"convs.{j}.weight"), self._p(f"convs.{j}.bias")  # (M, O, I, k)
                h = F.conv1d(h * mask, w.flatten(0, 1), b.flatten(), padding=self._k // 2, groups=M)
            h = F.relu(h)  # (B, M*O, T)
        h = F.max_pool1d(h * mask, 2)  # (B, M*C, T')
        Tp = h.shape[-1]
        h = h.view(B, M, -1, Tp).permute(1, 0, 3, 2)  # (M, B, T', C)
        h = self._layer_norm(h, "norm")
        lp = pooled_lengths(lengths)
        out, h_n = self._lstm(h, lp)  # (M, B, T', H), (M, L, B, H)
        attn = None
        if spec.arch == 1:
            z = out.sum(2) / lp[None, :, None].to(out.dtype)  # (M, B, H)
        else:
            q = self._linear(h_n.permute(0, 2, 1, 3).reshape(M, B, -1), "query")  # (M, B, H)
            scores = torch.einsum("mbth,mbh->mbt", out, q) / math.sqrt(self._H)
            valid = _mask(lp, Tp)[None]  # (1, B, T')
            attn = scores.masked_fill(~valid, float("-inf")).softmax(-1)  # (M, B, T')
            z = torch.einsum("mbt,mbth->mbh", attn, out)
            attn = attn.transpose(0, 1)  # (B, M, T')
        return self._head(z, members), attn

    def _pooled(self, x: Tensor, lengths: Tensor, members: bool = False) -> tuple[Tensor, Tensor | None]:
        """Architecture 3: statistics pooling, shared by all models unless each mixes layers
        or weighs frames by its own attention; returns (outputs, attention (B, M, T) or None)."""
        M, stats = self.n_models, self.spec.pooling
        attn = None
        if self.mixed_layers:
            w = self._p("layer_logits").softmax(-1)  # (M, K)
            x = torch.einsum("mk,bktd->mbtd", w, x)  # (M, B, T, D)
        if self.spec.attentive:
            names = ("attn_in.weight", "attn_in.bias", "attn_out.weight", "attn_out.bias")
            if self.mixed_layers:  # each model's scorer over its own mix of layers
                attn = torch.cat(
                    [frame_attention(x[m], lengths, *(self._p(n)[m : m + 1] for n in names)) for m in range(M)]
                )
            else:
                attn = frame_attention(x, lengths, *(self._p(n) for n in names))  # (M, B, T)
        if self.mixed_layers or attn is not None:
            z = torch.stack(
                [
                    pool_statistics(x[m] if self.mixed_layers else x, lengths, stats, None if attn is None else attn[m])
                    for m in range(M)
                ]
            )  # (M, B, F)
        else:
            z = pool_statistics(x, lengths, stats).expand(M, -1, -1)  # (M, B, F)
        return self._head(z, members), None if attn is None else attn.transpose(0, 1)

    def head(self, pooled: Tensor, members: bool = False) -> Tensor:
        """Architecture 3 from precomputed statistics: (B, F) -> activated outputs (B, n_outputs);
        not for attentive pooling, whose statistics depend on trained weights."""
        return self._head(pooled.expand(self.n_models, -1, -1), members)

    def _head(self, z: Tensor, members: bool = False) -> Tensor:
        """Every model's feed-forward head: z (M, B, I) -> activated outputs (B, M * out), or
        for an ensemble the mean of its members' (B, out) (each member's own, with `members`)."""
        spec, (M, B, _) = self.spec, z.shape
        n_ff = len(spec.ff) + 1
        for i in range(n_ff):
            z = self._linear(dropout(z, spec.dropout, self.training), f"ff.{i}")
            if i < n_ff - 1:
                z = F.relu(self._layer_norm(z, f"ff_norms.{i}") if spec.arch != 1 else z)
        z = z.permute(1, 0, 2)  # (B, M, out)
        if spec.ensemble > 1:  # each member its own distribution; the shares are their mean
            y = _activate(z, spec.output_activation)
            return y if members else y.mean(1)
        return _activate(z.reshape(B, M * self.out_dim), spec.output_activation)  # a softmax spans every model
