"""`emomon export`: a bundle as one ONNX graph, samples in, emotion shares out.

The graph holds everything the Predictor runs for one segment: Whisper's log-mel front end
(an STFT over the segment's own length), the encoder layers the bundle uses, the input
normalisation, the regressor bank, the calibration temperature and the clamp to [0, 1].
It is traced from the same torch code the Predictor runs (model/whisper.py, regressor.py),
so there is one implementation of the maths and the export is checked against it.

    inputs   samples   float32 (N,)     16 kHz mono, N >= 0.25 s and <= 30 s
             session   float64 (3, D)   adaptive bundles only: the session's statistics
                                        (frame count in every column, mean, sum of
                                        squared deviations); zeros start a session
             update    bool ()          adaptive bundles only: fold this segment into the
                                        session (false: an interim result, state unchanged)
    outputs  shares    float32 (E,)     in the order of metadata "emotions"
             attention float32 (M, T')  bundles whose head has attention weights
             session_out float64 (3, D) adaptive bundles only: the state for the next segment
             emotions  string (E,)      the emotions' names (also in the metadata)

The adaptive normalisation ("speaker" / "corpus" mode, model/normalize.py) is FeatureNorm's
arithmetic in float64 with the training prior baked in: fold the segment into the session
(Chan's merge), cap its weight at session_frames, merge with the prior worth prior_frames,
standardise. State lives outside the graph, so one file serves any number of streams.

Metadata (`metadata_props`): emotions (JSON list), emomon version, bundle name and digest,
licence, normalisation mode, attention hop, precision, encoder and adapter. The int8 variant
(model/quantise.py) quantises the encoder layers' matrix products with weights: statically
with the bundle's calibration (fixed activation scales, so batching cannot change a
result), else dynamically (the feed-forward blocks, scales per call); the front end,
attention scores and head stay float32.

Export needs torch, onnx and onnxscript (`pip install 'emomon[onnx]'`); running the file
needs only onnxruntime (model/onnx_engine.py), or onnxruntime-node (docs/onnx.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .bundle import DEFAULT_BUNDLE, MANIFEST, file_sha256
from .errors import BundleError, ExportError, require
from .quantise import RANGES

if TYPE_CHECKING:
    import torch

    from .predictor import Predictor

EXPORT_VERSION = 2  # bump when the graph's inputs, outputs or maths change: old cached exports are redone
OPSET = 18
PRECISIONS = ("float32", "int8")
EXPORTABLE_KINDS = ("whisper",)
MAX_BATCH = 1024  # segments per graph call; the engine sends at most [runtime] max_batch


@dataclass(frozen=True)
class ExportInfo:
    """What an exported file says about itself (its metadata), checked on load."""

    path: Path
    sha256: str
    precision: str
    bundle_digest: str


def bundle_digest(folder: str | Path) -> str:
    """Names a bundle's exact content: the SHA-256 of its bundle.json, which records its
    weights' SHA-256 and its encoder weights' digest, and of its int8 calibration, with the
    export format's version."""
    manifest = Path(folder) / MANIFEST
    try:
        data = manifest.read_bytes()
        ranges = Path(folder) / RANGES  # the int8 calibration (model/quantise.py)
        if ranges.exists():
            data += ranges.read_bytes()
    except OSError as e:
        raise BundleError(f"Model bundle '{folder}' cannot be read ({e.filename}: {e.strerror}).") from e
    return hashlib.sha256(data + f"\nemomon-onnx-{EXPORT_VERSION}".encode()).hexdigest()


def cache_dir() -> Path:
    """$EMOMON_ONNX_CACHE, else $XDG_CACHE_HOME/emomon/onnx (~/.cache/emomon/onnx): created
    0700, and refused in one sentence when it cannot be, or when another user could write
    into it (an ONNX file there is a program ONNX Runtime runs)."""
    if os.environ.get("EMOMON_ONNX_CACHE"):
        path = Path(os.environ["EMOMON_ONNX_CACHE"])
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emomon" / "onnx"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = path.stat()
    except OSError as e:
        raise ExportError(
            f"The ONNX cache folder '{path}' cannot be created: {e.strerror or e}; set EMOMON_ONNX_CACHE to a "
            "folder of your own."
        ) from e
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or st.st_uid != os.getuid():
        raise ExportError(
            f"The ONNX cache folder '{path}' can be written by other users (mode {stat.S_IMODE(st.st_mode):o}, "
            f"owner {st.st_uid}): refusing to run what it holds; chmod 700 it, or set EMOMON_ONNX_CACHE to a "
            "folder of your own."
        )
    return path


def _graph_module(predictor: Predictor):
    """The torch module that is traced: one segment through the Predictor's own code."""
    import torch
    from torch import nn

    from .normalize import ADAPTIVE
    from .regressor import temper
    from .whisper import CONV_STRIDE, HOP

    bundle, enc = predictor.bundle, predictor.encoder
    adaptive = bundle.norm_mode in ADAPTIVE
    prior_mean = torch.tensor(bundle.norm_mean, dtype=torch.float64)
    prior_var = torch.tensor(bundle.norm_std, dtype=torch.float64) ** 2
    pf, cap = float(bundle.norm_prior_frames), float(bundle.norm_session_frames)

    def standardise(h: torch.Tensor, frames: torch.Tensor, session: torch.Tensor | None, update: torch.Tensor | None):
        """h (B, T, D) or (B, K, T, D) of true lengths `frames` (B,) -> standardised h (zero
        past each segment's end) and each segment's new session state (B, 3, D)."""
        B, T, D = h.shape[0], h.shape[-2], h.shape[-1]
        valid = torch.arange(T)[None, :] < frames[:, None]  # (B, T)
        valid = (valid[:, None, :, None] if h.dim() == 4 else valid[:, :, None]).expand_as(h[..., :1])
        if session is None:  # "global": the training statistics
            std = prior_var.sqrt().clamp(min=1e-5)
            return (h - prior_mean.float()) / std.float() * valid, None
        v = valid.reshape(B, -1, 1).double()  # (B, F, 1): each segment's frames (all K layers)
        x = h.reshape(B, -1, D).double() * v
        count = v.sum(1)  # (B, 1)
        keep = update.double()[:, None]  # (B, 1)
        nb = count * keep
        mb = x.sum(1) / count.clamp(min=1.0)
        m2b = (((x - mb[:, None]) * v) ** 2).sum(1) * keep
        na, ma, m2a = session.unbind(1)  # each (B, D)
        total = na + nb
        delta = mb - ma
        safe = total.clamp(min=1.0)
        ms = ma + delta * (nb / safe)
        m2s = m2a + m2b + delta**2 * (na * nb / safe)
        w = total.clamp(max=cap) if cap else total
        scale = w / safe
        n = pf + w
        d = ms - prior_mean
        mean = prior_mean + d * (w / n.clamp(min=1.0))
        m2 = prior_var * pf + m2s * scale + d**2 * (pf * w / n.clamp(min=1.0))
        std = torch.where(n > 0, (m2 / n.clamp(min=1.0)).sqrt(), prior_var.sqrt()).clamp(min=1e-5)
        shape = (B, 1, 1, D) if h.dim() == 4 else (B, 1, D)
        out = (h - mean.float().reshape(shape)) / std.float().reshape(shape) * valid
        return out, torch.stack([total, ms, m2s], dim=1)

    class ScoringGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.bank = enc.model, bundle.bank

        def forward(self, samples, lengths, session=None, update=None):
            samples = samples * (torch.arange(samples.shape[1])[None, :] < lengths[:, None])  # zero past the end
            mel = enc.log_mels(samples, lengths)  # (B, n_mels, Tm)
            mel_lengths = lengths // HOP
            h = enc.forward(mel, mel_lengths, mask=True)
            frames = (mel_lengths - 1) // CONV_STRIDE + 1
            h, state = standardise(h, frames, session, update)
            shares, attn = self.bank(h, frames)
            out = [temper(shares, bundle.temperature).clamp(0.0, 1.0)]
            if attn is not None:
                out.append(attn)
            if state is not None:
                out.append(state)
            return tuple(out)

    return ScoringGraph().eval(), adaptive


def export_bundle(
    folder: str | Path | None,
    out: str | Path,
    precision: str = "float32",
    before_rename: Callable[[ExportInfo], None] | None = None,
) -> ExportInfo:
    """Export the bundle at `folder` (None: the shipped default) to the ONNX file `out`,
    written under a temporary name of its own and renamed once whole (`before_rename` is
    called with its digest just before)."""
    require("onnx", "emomon export", "onnx", "onnxscript", "onnxruntime")
    if precision not in PRECISIONS:
        raise ExportError(f"Precision '{precision}' is not one of {', '.join(PRECISIONS)}.")
    import torch

    from .. import __version__
    from .bundle import load_bundle
    from .predictor import Predictor
    from .quantise import Calibration, quantise, smooth

    folder = Path(DEFAULT_BUNDLE if folder is None else folder)
    bundle = load_bundle(folder)
    if bundle.encoder.kind not in EXPORTABLE_KINDS:
        raise ExportError(
            f"Model bundle '{folder}' uses a '{bundle.encoder.kind}' encoder; emomon exports "
            f"{', '.join(EXPORTABLE_KINDS)} bundles to ONNX."
        )
    if bundle.regressor.arch != 3:
        raise ExportError(
            f"Model bundle '{folder}' has Architecture-{bundle.regressor.arch} regressors (an LSTM); emomon "
            "exports pooled (Architecture 3) bundles to ONNX, as the shipped default."
        )
    predictor = Predictor.from_bundle(folder, device="cpu", dtype="float32")
    calibration = Calibration.read(folder) if precision == "int8" else None
    if calibration is not None:
        smooth(predictor.encoder.model, calibration.smooth)  # exact in float; int8 then fits (model/quantise.py)
    graph, adaptive = _graph_module(predictor)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.partial")  # one of its own per writer
    example = torch.zeros(2, 32000)
    example[:, ::7] = 0.1  # any sound: the graph does not depend on the values
    batch = torch.export.Dim("batch", max=MAX_BATCH)
    args: tuple = (example, torch.tensor([32000, 24000]))
    names = ["samples", "lengths"]
    shapes: dict = {"samples": {0: batch, 1: torch.export.Dim.DYNAMIC}, "lengths": {0: batch}}
    if adaptive:
        args += (torch.zeros(2, 3, bundle.input_dim, dtype=torch.float64), torch.tensor([True, False]))
        names += ["session", "update"]
        shapes.update(session={0: batch}, update={0: batch})
    outputs = ["shares"]
    attention = bundle.regressor.arch == 2 or bundle.regressor.attentive
    if attention:
        outputs.append("attention")
    if adaptive:
        outputs.append("session_out")
    digest = bundle_digest(folder)
    with torch.inference_mode(False), torch.no_grad():
        program = _quiet_export(graph, args, names, outputs, shapes)
    import onnx

    model = program.model_proto
    meta = {
        "emotions": json.dumps(list(bundle.emotions)),
        "emomon_version": __version__,
        "export_version": str(EXPORT_VERSION),
        "bundle": folder.resolve().name,
        "bundle_digest": digest,
        "licence": str(bundle.provenance.get("licence", "")),
        "normalization": bundle.norm_mode,
        "attention_hop_s": str(bundle.regressor.attention_stride * predictor.encoder.frame_hop_s),
        "attention_stride": str(bundle.regressor.attention_stride),
        "precision": precision,
        "batch_independent": "true",  # float32; _quantise says whether its int8 is
        "quantisation": "",
        "encoder": f"{bundle.encoder.name} layer {bundle.encoder.layer}",
        "adapter": bundle.adapter.describe() if bundle.adapter else "",  # folded into the graph's weights
    }
    _add_emotion_names(model, bundle.emotions)
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    model.doc_string = f"emomon {__version__}: emotion shares of a 16 kHz speech segment ({folder.resolve().name})"
    try:
        onnx.save_model(model, str(tmp), save_as_external_data=False)
        if precision == "int8":
            quantise(tmp, calibration)
        info = ExportInfo(out, file_sha256(tmp), precision, digest)
        if before_rename is not None:
            before_rename(info)  # the cache writes its digest record first, so the two always agree
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return info


def _add_emotion_names(model, emotions: tuple[str, ...]) -> None:
    """A constant output `emotions` (string, (E,)): runtimes without access to the metadata
    (onnxruntime-node, onnxruntime-web) read the names with the shares."""
    from onnx import TensorProto, helper

    names = helper.make_tensor("emotion_names", TensorProto.STRING, [len(emotions)], [e.encode() for e in emotions])
    model.graph.node.append(helper.make_node("Constant", [], ["emotions"], value=names))
    model.graph.output.append(helper.make_tensor_value_info("emotions", TensorProto.STRING, [len(emotions)]))


def _quiet_export(graph, args, names, outputs, shapes):
    """torch.onnx.export (the dynamo exporter) without its progress lines; a trace that would
    fix the segment length raises instead of silently exporting a fixed-length graph."""
    import contextlib
    import io
    import logging
    import warnings

    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        # torch.export first: it raises where the trace would fix the segment's length (the
        # ONNX exporter would fall back to a fixed-length graph), and its program is exported as is
        program = torch.export.export(graph, args, dynamic_shapes=tuple(shapes.values()), strict=False)
        return torch.onnx.export(
            program,
            args,
            input_names=names,
            output_names=outputs,
            dynamic_shapes=tuple(shapes.values()),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
