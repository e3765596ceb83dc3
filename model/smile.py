"""openSMILE's low-level descriptors through its SMILEapi, without the functionals.

`opensmile.Smile.process_signal` builds a new openSMILE instance from the feature set's
configuration for every signal, runs the *whole* configuration (the 6,373 ComParE
functionals included, although only the frame-level descriptors are read back) and wraps
the frames in a pandas index. The functionals and the rebuilding are about a third of the
time (benchmarks/bench_default_model.py times both ways in one run).

`SmileLLD` runs the same configuration files with the functionals left out: the feature
set's top configuration is rewritten with its `*func.conf.inc` includes and the
`funcconcat` component removed, every relative path made absolute, and the result
handed to one SMILEapi instance that is reset after each signal instead of rebuilt. The
descriptors are bit-for-bit those of `process_signal` (tests/test_encoder.py holds both
sets to that on real speech).

One instance is not thread-safe: each encoder owns its own.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from .audio import to_pcm16
from .errors import EncoderLoadError

INCLUDE = re.compile(r"^\s*\\\{([^\\}][^}]*)\}\s*$")  # \{file.inc}: a literal include
OPTION_DEFAULT = re.compile(r"\\cm\[(\w+)\{([^}?][^}]*)\}")  # \cm[name{default}: ...]: an option with a path default
SECTION = re.compile(r"^\s*\[([^:\]]+)(:[^\]]*)?\]")  # [instance:type]
INSTANCE = re.compile(r"^\s*instance\[([^\]]+)\]")

SOURCE = "extsource"
SINK = "extsink"
SINK_B = SINK.encode("ascii")


def lld_config(config_path: Path) -> tuple[str, dict[str, str]]:
    """The feature set's top configuration without its functionals, and the options it needs.

    Returns the configuration text, with its includes made absolute, and the path-valued
    options that the included files declare with relative defaults (resolved against the
    top configuration's folder, as openSMILE would)."""
    folder = config_path.parent
    lines, skipping = [], False
    for line in config_path.read_text(encoding="utf-8").splitlines():
        section = SECTION.match(line)
        include = INCLUDE.match(line)
        if section:
            skipping = "funcconcat" in section.group(1)
        elif line.lstrip().startswith("\\{"):  # any include ends a section
            skipping = False
        if skipping:
            continue
        instance = INSTANCE.match(line)
        if instance and "funcconcat" in instance.group(1):
            continue
        if include:
            target = include.group(1)
            if target.endswith("func.conf.inc"):
                continue
            line = "\\{" + str((folder / target).resolve()) + "}"
        lines.append(line)
    options: dict[str, str] = {}
    for inc in re.findall(r"\\\{([^\\}][^}]*)\}", "\n".join(lines)):
        for name, default in OPTION_DEFAULT.findall(Path(inc).read_text(encoding="utf-8")):
            options.setdefault(name, str((folder / default).resolve()))
    return "\n".join(lines) + "\n", options


class SmileLLD:
    """One openSMILE instance that turns float signals in [-1, 1) into (frames, values) float32
    descriptors of one of opensmile.FeatureSet's sets, by name ("ComParE_2016", "eGeMAPSv02")."""

    def __init__(self, feature_set: str, sample_rate: int) -> None:
        try:
            import opensmile
        except ImportError as e:
            raise EncoderLoadError(
                "The openSMILE encoders need the 'opensmile' package: pip install 'emomon[opensmile]'."
            ) from e
        try:
            from opensmile.core.lib import ExternalSinkCallback, OpenSMILE, smileapi
        except ImportError as e:
            raise EncoderLoadError(
                f"opensmile {opensmile.__version__} lacks the SMILEapi module emomon drives: "
                "pip install 'opensmile>=2.5,<3'."
            ) from e
        root = Path(opensmile.__file__).resolve().parent / "core" / opensmile.config.CONFIG_ROOT
        text, options = lld_config(root / f"{opensmile.FeatureSet[feature_set].value}{opensmile.config.CONFIG_EXT}")
        options.update(
            source=str(root / opensmile.config.EXTERNAL_INPUT_CONFIG),
            sink=str(root / opensmile.config.EXTERNAL_OUTPUT_SINGLE_CONFIG),
            sinkLevel="lld",
            sampleRate=str(sample_rate),
            nBits="16",
        )
        self._frames: list[np.ndarray] = []
        self._api = OpenSMILE()
        with tempfile.TemporaryDirectory(prefix="emomon-smile-") as tmp:  # read once, by initialize
            path = os.path.join(tmp, "lld.conf")
            Path(path).write_text(text, encoding="utf-8")
            try:
                self._api.initialize(path, options, loglevel=0)
            except Exception as e:
                raise EncoderLoadError(f"openSMILE could not load the '{feature_set}' descriptors: {e}") from e
        self.dim = self._api.external_sink_get_num_elements(SINK)

        def collect(data, size, _param) -> int:
            self._frames.append(np.ctypeslib.as_array(data, shape=(size,)).copy())
            return 1

        # One callback object for the instance's life: OpenSMILE.external_sink_set_callback would
        # keep a new one per registration, and a reset asks for the callback to be registered again.
        self._callback = ExternalSinkCallback(collect)
        self._set_callback = smileapi.smile_extsink_set_data_callback

    def __call__(self, signal: np.ndarray) -> np.ndarray:
        pcm = to_pcm16(signal)
        self._frames.clear()
        api = self._api
        api._check_smile_result(self._set_callback(api._smileobj, SINK_B, self._callback, None))
        try:
            api.external_audio_source_write_data(SOURCE, pcm.tobytes())
            api.external_audio_source_set_eoi(SOURCE)
            api.run()
        finally:
            api.reset()  # ready for the next signal
        if not self._frames:  # shorter than one analysis window: one row of NaN, as process_signal
            return np.full((1, self.dim), np.nan, dtype=np.float32)
        return np.stack(self._frames)

    def close(self) -> None:
        self._api.free()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
