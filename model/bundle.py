"""Model bundles: a folder with `bundle.json` and the regressor weights in safetensors.

    my-model/
      bundle.json             format version, emotions, encoder + regressor specs,
                              input normalisation, training metrics, data provenance
      regressors.safetensors  the RegressorBank's stacked parameters
      adapter.safetensors     optional: LoRA matrices for the encoder's first layers, or
                              those layers fine-tuned (model/adapter.py), put into its
                              weights when it loads

The encoder's own weights are not copied: `bundle.json` names them by hub id + revision
(or a local folder) and, for transformers encoders, by a digest of their values
(`encoder_weights.sha256`, model/compute.py: `weights_digest`), so that a bundle refuses
to run on other weights than those it was trained on. Loading checks everything it can
before any weight is used and turns each problem into one `BundleError` sentence that
names the file: no pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BundleError, ConfigError
from .settings import from_dict, to_dict
from .specs import EncoderSpec, RegressorSpec

if TYPE_CHECKING:
    from .adapter import Adapter
    from .regressor import RegressorBank

DEFAULT_BUNDLE = Path(__file__).resolve().parent / "default"  # shipped with the package, offline
FORMAT = "emomon-bundle"
FORMAT_VERSION = 1
MANIFEST = "bundle.json"
WEIGHTS = "regressors.safetensors"
ADAPTER = "adapter.safetensors"
DIGEST_OF = "the encoder's state dict rounded to float16, names sorted"


@dataclass
class Bundle:
    """Everything needed to turn encoder features into emotion shares."""

    emotions: tuple[str, ...]
    encoder: EncoderSpec
    regressor: RegressorSpec
    input_dim: int  # D: the encoder's feature size
    mixed_layers: int  # K for encoder.layer = "weighted", else 0
    norm_mean: list[float]  # per input dimension, from the training data
    norm_std: list[float]
    bank: RegressorBank
    norm_mode: str = "global"  # "global", "speaker" or "corpus" (model/normalize.py)
    norm_prior_frames: int = 3000  # weight of the training statistics in "speaker" mode
    norm_session_frames: int = 0  # "speaker" mode: cap on the session's weight; 0 = none
    # softmax outputs: shares ** (1 / T), renormalised (model.regressor.temper); T fitted on
    # held-out speakers of the training corpora (the median of the evaluation folds')
    temperature: float = 1.0
    metrics: dict[str, Any] = field(default_factory=dict)  # evaluation results
    provenance: dict[str, Any] = field(default_factory=dict)  # data, command, versions
    encoder_digest: str = ""  # weights_digest of the encoder it was trained on; "" = not recorded
    adapter: Adapter | None = None  # LoRA matrices merged into the encoder's weights when it loads

    @property
    def n_models(self) -> int:
        return len(self.emotions) if self.regressor.head == "per_emotion" else self.regressor.ensemble

    @property
    def out_dim(self) -> int:
        return 1 if self.regressor.head == "per_emotion" else len(self.emotions)


def new_bank(
    regressor: RegressorSpec, emotions: tuple[str, ...], input_dim: int, mixed_layers: int = 0
) -> RegressorBank:
    """A freshly initialised bank with the layout a bundle of these emotions expects."""
    from .regressor import RegressorBank

    per_emotion = regressor.head == "per_emotion"
    return RegressorBank(
        regressor,
        input_dim,
        n_models=len(emotions) if per_emotion else regressor.ensemble,
        out_dim=1 if per_emotion else len(emotions),
        mixed_layers=mixed_layers,
    )


def save_bundle(bundle: Bundle, path: str | Path) -> Path:
    """Write `bundle` to the folder `path` (created if needed); returns the folder."""
    from safetensors.torch import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().cpu().contiguous() for n, p in bundle.bank.state_dict().items()}
    save_file(tensors, folder / WEIGHTS, metadata={"format": FORMAT})
    adapter = None
    if bundle.adapter is not None:
        if not bundle.encoder_digest:
            raise BundleError("A bundle with an adapter must record the encoder weights it adapts (encoder_digest).")
        save_file(bundle.adapter.state, folder / ADAPTER, metadata={"format": FORMAT})
        adapter = {"kind": bundle.adapter.kind, **to_dict(bundle.adapter.spec), "file": ADAPTER,
                   "sha256": file_sha256(folder / ADAPTER)}  # fmt: skip
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "emotions": list(bundle.emotions),
        "encoder": to_dict(bundle.encoder),
        "regressor": to_dict(bundle.regressor),
        "input_dim": bundle.input_dim,
        "mixed_layers": bundle.mixed_layers,
        "normalization": {
            "mode": bundle.norm_mode,
            "prior_frames": bundle.norm_prior_frames,
            "session_frames": bundle.norm_session_frames,
            "mean": list(bundle.norm_mean),
            "std": list(bundle.norm_std),
        },
        "calibration": {"temperature": bundle.temperature},
        "weights": {"file": WEIGHTS, "sha256": file_sha256(folder / WEIGHTS)},
        **({"encoder_weights": {"sha256": bundle.encoder_digest, "of": DIGEST_OF}} if bundle.encoder_digest else {}),
        **({"adapter": adapter} if adapter else {}),
        "metrics": bundle.metrics,
        "provenance": bundle.provenance,
    }
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(folder / MANIFEST)  # never leave a half-written manifest behind
    return folder


def load_bundle(path: str | Path) -> Bundle:
    """Read and validate the bundle folder `path`; every problem is one BundleError sentence."""
    folder = Path(path)
    if not folder.exists():
        raise BundleError(f"Model bundle '{folder}' does not exist.")
    if not folder.is_dir():
        raise BundleError(f"Model bundle '{folder}' is not a folder (expected {MANIFEST} and {WEIGHTS} inside).")
    manifest_path = folder / MANIFEST
    m = _read_manifest(manifest_path)
    where = str(manifest_path)

    def need(key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in m:
            raise BundleError(f"{where} has no '{key}' entry.")
        if not isinstance(m[key], kind) or isinstance(m[key], bool):
            raise BundleError(f"{where}: '{key}' has the wrong type ({type(m[key]).__name__}).")
        return m[key]

    emotions = tuple(need("emotions", list))
    if not emotions or not all(isinstance(e, str) and e for e in emotions):
        raise BundleError(f"{where}: 'emotions' must be a non-empty list of names.")
    if len(set(emotions)) != len(emotions):
        raise BundleError(f"{where}: 'emotions' lists a name twice.")
    try:
        encoder = from_dict(EncoderSpec, need("encoder", dict), f"{MANIFEST}: encoder")
        regressor = from_dict(RegressorSpec, need("regressor", dict), f"{MANIFEST}: regressor")
    except ConfigError as e:
        raise BundleError(f"{folder}: {e}") from e
    input_dim, mixed = need("input_dim", int), need("mixed_layers", int)
    if input_dim < 1 or mixed < 0 or (mixed > 0) != (encoder.layer == "weighted"):
        raise BundleError(f"{where}: input_dim / mixed_layers do not fit the encoder's layer setting.")
    norm = need("normalization", dict)
    mean, std = norm.get("mean"), norm.get("std")
    for name, stats in (("mean", mean), ("std", std)):
        if not isinstance(stats, list) or len(stats) != input_dim:
            raise BundleError(f"{where}: normalization.{name} must list {input_dim} numbers (one per input dimension).")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in stats):
            raise BundleError(f"{where}: normalization.{name} holds a value that is not a finite number.")
    if min(std) <= 0:
        raise BundleError(f"{where}: normalization.std must be positive.")
    mode, prior, cap = norm.get("mode", "global"), norm.get("prior_frames", 3000), norm.get("session_frames", 0)
    if mode not in ("global", "speaker", "corpus"):
        raise BundleError(f"{where}: normalization.mode {mode!r} is not 'global', 'speaker' or 'corpus'.")
    if not isinstance(prior, int) or isinstance(prior, bool) or prior < 0:
        raise BundleError(f"{where}: normalization.prior_frames must be a whole number >= 0.")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
        raise BundleError(f"{where}: normalization.session_frames must be a whole number >= 0.")

    cal = m.get("calibration", {})  # absent in bundles made before calibration: T = 1
    temperature = cal.get("temperature", 1.0) if isinstance(cal, dict) else None
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0.05 <= temperature <= 20:
        raise BundleError(f"{where}: calibration.temperature must be a number between 0.05 and 20.")
    if temperature != 1.0 and regressor.output_activation != "softmax":
        raise BundleError(
            f"{where}: calibration.temperature needs a softmax output, not '{regressor.output_activation}'."
        )
    weights = need("weights", dict)
    recorded = m.get("encoder_weights", {})  # absent in bundles of openSMILE encoders and older ones
    digest = recorded.get("sha256", "") if isinstance(recorded, dict) else None
    if not isinstance(digest, str) or (digest and not re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise BundleError(f"{where}: encoder_weights.sha256 must be 64 hexadecimal digits.")
    bundle = Bundle(
        emotions=emotions,
        encoder=encoder,
        regressor=regressor,
        input_dim=input_dim,
        mixed_layers=mixed,
        norm_mean=[float(v) for v in mean],
        norm_std=[float(v) for v in std],
        bank=None,  # type: ignore[arg-type]  # filled below, once the weights check out
        norm_mode=mode,
        norm_prior_frames=prior,
        norm_session_frames=cap,
        temperature=float(temperature),
        metrics=m.get("metrics", {}),
        provenance=m.get("provenance", {}),
        encoder_digest=digest,
    )
    bundle.bank = _load_weights(_inside(folder, weights.get("file", WEIGHTS), where), weights.get("sha256"), bundle)
    if "adapter" in m:
        bundle.adapter = _load_adapter(folder, m["adapter"], bundle, where)
    return bundle


def _load_adapter(folder: Path, entry: Any, bundle: Bundle, where: str) -> Adapter:
    """The bundle's adapter (LoRA or fine-tuned layers): its settings checked, its file's SHA-256 checked before
    safetensors parses it; one sentence for each problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from .adapter import Adapter, LayersSpec, LoraSpec

    if not isinstance(entry, dict) or entry.get("kind") not in ("lora", "layers"):
        raise BundleError(f'{where}: \'adapter\' must be a table with "kind": "lora" or "layers".')
    if bundle.encoder.kind != "whisper" or not bundle.encoder_digest:
        raise BundleError(f"{where}: an adapter needs a Whisper encoder and its encoder_weights.sha256.")
    settings = {k: v for k, v in entry.items() if k not in ("kind", "file", "sha256")}
    try:
        spec = from_dict(LoraSpec if entry["kind"] == "lora" else LayersSpec, settings, f"{MANIFEST}: adapter")
    except (ConfigError, ValueError) as e:
        raise BundleError(f"{folder}: {e}") from e
    if not isinstance(entry.get("sha256"), str):
        raise BundleError(f"{where} has no adapter.sha256: emomon checks the adapter before it reads it.")
    path = _inside(folder, entry.get("file", ADAPTER), where)
    if not path.is_file():
        raise BundleError(f"Model bundle '{folder}' has no adapter file {path.name}.")
    data = read_verified(path, entry["sha256"], "Adapter file", MANIFEST)
    try:
        state = load(data)
    except (SafetensorError, ValueError) as e:
        raise BundleError(f"Adapter file {path} is not a valid safetensors file ({e}).") from e
    return Adapter(spec, {k: v.float() for k, v in state.items()})


def _inside(folder: Path, name: Any, where: str) -> Path:
    """The bundle's file `name`, refused unless it stays inside `folder` (after following
    symbolic links): a bundle.json must not make emomon open /etc/... or ~/.ssh/..."""
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        raise BundleError(f"{where}: weights.file must be a file name inside the bundle folder, not {name!r}.")
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise BundleError(f"{where}: weights.file '{name}' points outside the bundle folder; refusing to open it.")
    return path


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BundleError(f"Model bundle '{path.parent}' has no {MANIFEST}.")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BundleError(f"{path} is not valid JSON (line {e.lineno}: {e.msg}).") from e
    except (OSError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} cannot be read: {e}.") from e
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BundleError(f'{path} is not an emomon model bundle (no "format": "{FORMAT}").')
    version = m.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path} has format version {version!r}, which this emomon does not read "
            f"(it reads version {FORMAT_VERSION}); update emomon or re-export the bundle."
        )
    return m


def _load_weights(path: Path, sha256: Any, bundle: Bundle) -> RegressorBank:
    from safetensors import SafetensorError
    from safetensors.torch import load

    if not isinstance(sha256, str):
        raise BundleError(
            f"{path.parent / MANIFEST} has no weights.sha256: emomon checks the weights before it reads them."
        )
    if not path.is_file():
        raise BundleError(f"Model bundle '{path.parent}' has no weights file {path.name}.")
    data = read_verified(path, sha256, "Weights file", MANIFEST)
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as e:
        raise BundleError(f"Weights file {path} is not a valid safetensors file ({e}).") from e
    bank = new_bank(bundle.regressor, bundle.emotions, bundle.input_dim, bundle.mixed_layers)
    expected = bank.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        what = f"lacks tensor '{missing[0]}'" if missing else f"has an unknown tensor '{unexpected[0]}'"
        raise BundleError(f"Weights file {path} {what}: it does not match the regressor in {MANIFEST}.")
    first = next(iter(expected))
    if tensors[first].shape[0] != expected[first].shape[0]:
        raise BundleError(
            f"Weights file {path} holds {tensors[first].shape[0]} regressors but {MANIFEST} lists "
            f"{len(bundle.emotions)} emotions for its '{bundle.regressor.head}' head."
        )
    if bundle.out_dim > 1:
        last = f"ff__{len(bundle.regressor.ff)}__bias"
        if tensors[last].shape[-1] != len(bundle.emotions):
            raise BundleError(
                f"Weights file {path} gives {tensors[last].shape[-1]} outputs, but {MANIFEST} "
                f"lists {len(bundle.emotions)} emotions."
            )
    for name, ref in expected.items():
        if tensors[name].shape != ref.shape or tensors[name].dtype != ref.dtype:
            raise BundleError(
                f"Weights file {path}: tensor '{name}' has shape {tuple(tensors[name].shape)} "
                f"({tensors[name].dtype}), but {MANIFEST} implies {tuple(ref.shape)} ({ref.dtype})."
            )
    bank.load_state_dict(tensors)
    return bank.eval()


def read_verified(path: Path, sha256: str, what: str, manifest: str) -> bytes:
    """The bytes of `path` once their SHA-256 is the one `manifest` records (read once: the
    bytes hashed are the bytes parsed); one sentence, starting with `what`, otherwise."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BundleError(f"{what} {path} cannot be read: {e.strerror or e}.") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BundleError(f"{what} {path} is corrupt: its SHA-256 differs from the one in {manifest}.")
    return data


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
