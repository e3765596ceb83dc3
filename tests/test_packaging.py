"""The built wheel: one `emomon` import package with its data files, installable into a
fresh virtual environment outside the checkout, where `emomon replay` runs the bundled
sample with the bundled default model. Takes about two minutes (torch is installed again)."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.data import REPO

pytestmark = [pytest.mark.system, pytest.mark.weights]

SKIP = {".git", ".venv", "build", "dist", "out", "models", ".pytest_cache", ".hypothesis", "__pycache__"}


def _copy_source(dest: Path) -> Path:
    """The checkout without its virtual environment, outputs and caches."""
    return Path(shutil.copytree(REPO, dest, ignore=lambda d, names: [n for n in names if n in SKIP]))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _copy_source(tmp / "src")
    out = subprocess.run(
        # with build isolation, as `pip install .` and `python -m build` do: the build
        # requirements in pyproject.toml must be enough on their own
        [sys.executable, "-m", "pip", "wheel", "--no-deps", str(src), "-w", str(tmp / "dist")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    warnings = [line for line in (out.stdout + out.stderr).splitlines() if "warning" in line.lower()]
    assert warnings == [], "building the wheel warned:\n" + "\n".join(warnings)
    (whl,) = (tmp / "dist").glob("emomon-*.whl")
    return whl


def test_wheel_holds_one_import_package_with_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"emomon"}
    for data in (
        "emomon/model/default/bundle.json",
        "emomon/model/default/regressors.safetensors",
        "emomon/model/default/adapter.safetensors",  # v5: its fine-tuned layers 1-3
        "emomon/streamer/samples/emodb_speaker11.wav",
        "emomon/training/experiments/default_whisper_base.toml",
        "emomon/model/speaker_backend/speaker.json",  # --speakers' back-end
        "emomon/model/speaker_backend/backend.safetensors",
        "emomon/streamer/serve/web/index.html",
    ):
        assert data in names
    assert not any(n.startswith(("emomon/tests/", "emomon/benchmarks/", "emomon/docs/")) for n in names)
    (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    metadata = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: MIT" in metadata.splitlines() and "License-File: LICENSE" in metadata
    assert meta.replace("METADATA", "licenses/LICENSE") in names  # the MIT text travels with the wheel


def test_wheel_in_a_fresh_venv_replays_the_bundled_sample_without_extras(wheel: Path, tmp_path: Path) -> None:
    """`pip install emomon` alone: the Predictor, replay and its CSV / JSON Lines; a command
    that needs an extra says which `pip install` to run, in one sentence."""
    import torch

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # The torch build this environment runs (the CPU wheel here), then the wheel and its own
    # dependencies, no extra.
    subprocess.run([*pip, f"torch=={torch.__version__.split('+')[0]}"], check=True, timeout=900)
    subprocess.run([*pip, str(wheel)], check=True, timeout=900)

    work = tmp_path / "elsewhere"  # no config.toml, no checkout on the path
    work.mkdir()
    emomon = str(venv / "bin" / "emomon")
    out = subprocess.run(
        [emomon, "replay", "--sample", "--speed", "0", "--no-dashboard", "--csv", "demo.csv"],
        cwd=work, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((work / "demo.csv").open()))
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    assert "6 segment(s) from 1 file(s)" in out.stdout
    missing = subprocess.run([str(venv / "bin" / "python"), "-c", "import scipy, pyarrow, starlette"],
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode != 0  # the extras are not there
    for args, extra in ((["serve"], "serve"), (["batch", "x.wav", "--out", "o"], "batch"), (["live"], "live"),
                        (["train", "--dataset", "emodb", "--data", "x"], "train"),
                        (["replay", "-"], "media")):  # fmt: skip
        out = subprocess.run([emomon, *args], cwd=work, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert out.stderr.strip().endswith(f"pip install 'emomon[{extra}]'."), out.stderr

    # Only `emomon` is importable from the install: no generic top-level `model` or `streamer`.
    probe = (
        "import importlib.util as u, emomon\n"
        "print([m for m in ('model', 'streamer', 'training') if u.find_spec(m)])\nprint(emomon.__file__)"
    )
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=work, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    found, where = out.stdout.splitlines()
    assert found == "[]" and where.startswith(str(venv))
