"""The emomon command line: fast help, clean errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys\nfrom streamer.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'opensmile') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "train" in out.stdout and "evaluate" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_bad_config_is_one_sentence(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochs = 'many'\n")
    out = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "--config", str(cfg), "train", "--dataset", "emodb", "--data", "x"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip() == f"emomon: Config file '{cfg}': Setting 'train.epochs' must be an integer, not 'many'."
