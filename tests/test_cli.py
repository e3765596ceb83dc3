"""The emomon command line: fast help, clean errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.data import REPO


@pytest.mark.system
def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys\nfrom emomon.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'opensmile') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "train" in out.stdout and "evaluate" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_train_offers_every_architecture(capsys) -> None:
    """--arch takes 3, the shipped default's statistics pooling, not only the paper's two."""
    from emomon.cli import main

    for arch in ("1", "2", "3"):
        with pytest.raises(SystemExit) as stop:  # --help after a valid --arch: exit 0, not 2
            main(["train", "--arch", arch, "--help"])
        assert stop.value.code == 0, capsys.readouterr().err
    assert "statistics pooling" in capsys.readouterr().out


@pytest.mark.system
def test_bad_config_is_one_sentence(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochs = 'many'\n")
    out = subprocess.run(
        [sys.executable, "-m", "emomon.cli", "--config", str(cfg), "train", "--dataset", "emodb",
         "--data", "x"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip() == f"emomon: Config file '{cfg}': Setting 'train.epochs' must be an integer, not 'many'."


@pytest.mark.system
def test_config_goes_before_or_after_the_command(tmp_path: Path) -> None:
    from emomon.cli import build_parser

    parser = build_parser()
    for argv in (["--config", "a.toml", "live"], ["live", "--config", "a.toml"]):
        args = parser.parse_args(argv)
        assert args.config == Path("a.toml") and args.verbose is False
    args = parser.parse_args(["-v", "replay", "x.wav"])
    assert args.config is None and args.verbose is True
    cfg = tmp_path / "c.toml"
    cfg.write_text("[vad]\nframe_ms = 25\n")
    out = subprocess.run(
        [sys.executable, "-m", "emomon.cli", "replay", "x.wav", "--config", str(cfg)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and "frame_ms must be 10, 20 or 30" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.system
def test_replay_without_audio_says_what_is_missing(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "emomon.cli", "replay"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "emomon: Say what to replay: audio files, folders, - (standard input) or a URL, or --sample."
    )


@pytest.mark.system
def test_doctor_says_what_runs_and_why(tmp_path: Path) -> None:
    """A cold ONNX cache: auto runs torch for now and says so; --torch is as configured; an
    impossible device is one finding, not a traceback."""
    import os

    env = {**os.environ, "EMOMON_ONNX_CACHE": str(tmp_path)}

    def doctor(*args: str) -> dict[str, str]:
        out = subprocess.run([sys.executable, "-m", "emomon.cli", "doctor", *args], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        return {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in out.stdout.splitlines()}

    found = doctor()
    assert found["CPU"].endswith(f"{os.cpu_count()} cores") and "capability" in found["torch"]
    assert "CPUExecutionProvider" in found["onnxruntime"] and found["device"] == "cpu (setting auto)"
    assert found["engine"].startswith("torch (auto: not measured here yet")
    assert found["dtype"].split()[0] in ("int8", "bfloat16")
    assert doctor("--torch")["engine"] == "torch (as configured)"
    if found["CUDA"].startswith("no CUDA GPU"):  # asking for one is the finding
        assert "no CUDA GPU is available" in doctor("--device", "cuda")["problem"]
