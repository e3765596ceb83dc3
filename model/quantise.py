"""int8 for the ONNX export: a calibration kept in the bundle, and the quantisation it drives.

Static int8 gives every quantised matrix product's input one fixed scale, so a segment's
result does not depend on the segments it shares a graph call with (dynamic int8 takes
each call's scale from its whole input). The scales come from a calibration on speech
(`calibrate`, run by `python -m emomon.training.calibrate`), stored in the bundle as
`int8_ranges.json`:

- `smooth`: per-channel scales s for the outputs of the two LayerNorms of each encoder
  layer (SmoothQuant's equalisation, alpha 0.8): the LayerNorm's weight and bias are
  divided by s and the input columns of the projections it feeds (query, key, value; fc1)
  multiplied by it. Exact in float (the products are unchanged); it moves the few
  outlier channels of Whisper's LayerNorm outputs into the weights, whose int8 scales
  are per output channel, so that the activations' one scale fits the other channels.
- `inputs`: the smallest and largest input, after smoothing, of every quantised layer:
  the attention projections (q, k, v, out) and the feed-forward blocks (fc1, fc2) of each
  encoder layer. Which layers is the measured choice (docs/onnx.md): these six per layer
  kept the top emotion of 97.4 % of Emo-DB sentences at 14 ms per 2 s segment, the
  feed-forward blocks alone 97.4 % at 18 ms, without smoothing 97.2 %.

A bundle without a calibration gets dynamic int8 of the feed-forward blocks, which the
engine then runs one segment per call.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BundleError, ExportError

if TYPE_CHECKING:
    from .predictor import Predictor

RANGES = "int8_ranges.json"  # a bundle's int8 calibration
ALPHA = 0.8  # SmoothQuant's migration strength: measured 0.5 and 0.8 (docs/onnx.md)
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2")
FEED_FORWARD = r"encoder\.layers\.\d+\.fc[12]"  # what dynamic int8 quantises
# each layer's two LayerNorms and the projections whose input they are (smoothing's pairs)
FEEDS = {"self_attn_layer_norm": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
         "final_layer_norm": ("fc1",)}  # fmt: skip


@dataclass
class Calibration:
    """A bundle's int8 calibration: smoothing scales by LayerNorm, input ranges by layer."""

    inputs: dict[str, tuple[float, float]]
    smooth: dict[str, list[float]] = field(default_factory=dict)
    source: str = ""
    alpha: float | None = ALPHA

    @classmethod
    def read(cls, folder: str | Path) -> Calibration | None:
        """The bundle's calibration; None when it has none."""
        path = Path(folder) / RANGES
        if not path.exists():
            return None
        try:
            body = json.loads(path.read_text())
            inputs = {str(k): (float(lo), float(hi)) for k, (lo, hi) in body["inputs"].items()}
            smooth = {str(k): [float(x) for x in v] for k, v in body.get("smooth", {}).items()}
            return cls(inputs, smooth, str(body.get("source", "")), body.get("alpha"))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BundleError(f"The int8 calibration '{path}' cannot be read ({e}).") from e

    def write(self, folder: str | Path) -> Path:
        """Into the bundle (its export cache key changes with it)."""
        from .files import write_atomic

        path = Path(folder) / RANGES
        body = {"method": "minmax over each segment alone, float32, after smoothing", "alpha": self.alpha,
                "source": self.source, "smooth": self.smooth,
                "inputs": {k: [lo, hi] for k, (lo, hi) in sorted(self.inputs.items())}}  # fmt: skip
        write_atomic(path, (json.dumps(body) + "\n").encode())
        return path


def smooth(model, scales: dict[str, list[float]]) -> None:
    """Apply the smoothing scales to a Whisper encoder in place (exact in float)."""
    import torch

    with torch.no_grad():
        for name, values in scales.items():
            i, norm = re.fullmatch(r"encoder\.layers\.(\d+)\.(\w+)", name).groups()  # type: ignore[union-attr]
            layer = model.layers[int(i)]
            s = torch.tensor(values, dtype=layer.fc1.weight.dtype)
            ln = getattr(layer, norm)
            ln.weight /= s
            ln.bias /= s
            for lin in FEEDS[norm]:
                layer.get_submodule(lin).weight *= s[None, :]


def _record(modules: dict, segments, encoder, per_channel: bool) -> dict:
    """Each module's input over the segments (each alone): per-channel |max| or (min, max)."""
    import torch

    seen: dict = {}

    def hook(name):
        def record(_module, inputs):
            x = inputs[0].reshape(-1, inputs[0].shape[-1])
            if per_channel:
                a = x.abs().amax(0)
                seen[name] = a if name not in seen else torch.maximum(seen[name], a)
            else:
                lo, hi = seen.get(name, (0.0, 0.0))
                seen[name] = (min(lo, float(x.min())), max(hi, float(x.max())))

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]  # type: ignore[attr-defined]
    try:
        with torch.inference_mode():
            for s in segments:
                encoder.encode([s])
    finally:
        for h in handles:
            h.remove()
    return seen


def calibrate(
    predictor: Predictor, segments, source: str, alpha: float | None = ALPHA, layers: tuple[str, ...] = PROJECTIONS
) -> Calibration:
    """Smoothing scales from the LayerNorm outputs' channel maxima against the weights'
    (`alpha`; None: no smoothing), applied to `predictor`'s encoder, then the input range of
    each of `layers` in every encoder layer (the layers a static export quantises)."""
    import torch

    enc = predictor.encoder.model.layers
    # a LayerNorm's output is the input of the first projection it feeds
    norms = {(i, n): layer.get_submodule(fed[0]) for i, layer in enumerate(enc) for n, fed in FEEDS.items()}
    amax = _record(norms, segments, predictor.encoder, per_channel=True) if alpha is not None else {}
    scales = {}
    for (i, norm), a in amax.items():
        w = torch.cat([enc[i].get_submodule(f).weight for f in FEEDS[norm]]).abs().amax(0)
        s = (a.clamp(min=1e-5) ** alpha / w.clamp(min=1e-5) ** (1 - alpha)).clamp(1e-2, 1e2)
        scales[f"encoder.layers.{i}.{norm}"] = [float(x) for x in s.detach()]
    smooth(predictor.encoder.model, scales)
    inputs = {f"encoder.layers.{i}.{p}": layer.get_submodule(p) for i, layer in enumerate(enc) for p in layers}
    return Calibration(_record(inputs, segments, predictor.encoder, per_channel=False), scales, source, alpha)


def module_of(node) -> str:
    """The torch module a node came from ("encoder.layers.0.fc1"), by the exporter's record."""
    scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "[]")
    try:
        names = [n for n in ast.literal_eval(scopes) if isinstance(n, str) and "." in n]
    except (ValueError, SyntaxError):
        return ""
    return names[-1] if names else ""


def quantise(path: Path, calibration: Calibration | None) -> bool:
    """int8 quantisation of the export at `path`, in place (weights int8 per output channel):
    static with the calibration, else dynamic of the feed-forward blocks. Returns whether a
    segment's result is independent of its batch-mates."""
    import onnx

    model = onnx.load(str(path))
    if calibration is None:
        nodes = [n for n in model.graph.node if n.op_type == "MatMul" and re.fullmatch(FEED_FORWARD, module_of(n))]
    else:
        nodes = [n for n in model.graph.node if n.op_type == "MatMul" and module_of(n) in calibration.inputs]
        if not nodes:
            raise ExportError("The bundle's int8 calibration names no layer of its encoder's graph.")
    out = path.with_name(path.name + ".int8")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser's advice to pre-process goes to the root logger
    try:
        if calibration is None:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(path, out, weight_type=QuantType.QInt8, per_channel=True,
                             nodes_to_quantize=[n.name for n in nodes], op_types_to_quantize=["MatMul"])  # fmt: skip
        else:
            _static(path, out, {n.name: calibration.inputs[module_of(n)] for n in nodes},
                    {n.name: n.input[0] for n in nodes})  # fmt: skip
    finally:
        root.setLevel(level)
    q = onnx.load(str(out))
    static = calibration is not None
    values = {"precision": "int8", "batch_independent": str(static).lower(),
              "quantisation": "static" if static else "dynamic"}  # fmt: skip
    for p in q.metadata_props:
        p.value = values.get(p.key, p.value)
    onnx.save_model(q, str(path), save_as_external_data=False)
    out.unlink()
    return static


def _static(path: Path, out: Path, ranges: dict[str, tuple[float, float]], inputs: dict[str, str]) -> None:
    """ONNX Runtime's static QDQ quantisation of the named MatMul nodes, their inputs' ranges
    given instead of a calibration run: uint8 activations, int8 weights per output channel,
    outputs in float32."""
    import inspect

    import numpy as np
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData, save_tensors_data

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise ExportError("A calibrated int8 export needs onnxruntime 1.32 or later (pip install -U onnxruntime).")
    table = {inputs[n]: tuple(np.float32(v) for v in r) for n, r in ranges.items()}
    cache = path.with_name(path.name + ".ranges.json")
    try:
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, table), cache)
        quantize_static(path, out, None, quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_quantize=list(ranges), calibration_cache_path=cache,
                        extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]})  # fmt: skip
    finally:
        cache.unlink(missing_ok=True)
