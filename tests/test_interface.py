"""Every engine offers what model/interface.py's Engine declares: checked at run time on a
tiny Predictor and the tests' stand-in, and by mypy on all four (the ONNX engine and the
model process too), so no caller needs to probe with getattr."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.data import REPO
from support.models import StubEngine, make_bundle

from emomon.model.interface import DESCRIBED, Engine


@pytest.fixture(scope="module")
def tiny_predictor(tiny_hubert):
    from emomon.model.encoder import load_encoder
    from emomon.model.predictor import Predictor
    from emomon.model.specs import EncoderSpec

    encoder = load_encoder(EncoderSpec.paper(name=str(tiny_hubert)), "cpu")
    bundle = make_bundle(encoder, ("anger", "sadness", "neutral"), arch=3, head="shared", output="softmax")
    return Predictor(bundle, encoder, "cpu")


def check_engine(engine: Engine) -> None:
    """What every caller relies on, used as they use it."""
    assert isinstance(engine, Engine)
    assert set(engine.describe()) == set(DESCRIBED) and all(isinstance(v, str) for v in engine.describe().values())
    assert isinstance(engine.adapts, bool) and isinstance(engine.name, str) and engine.emotions
    engine.use_session("a")
    [p] = engine.predict([np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1])
    assert list(p.shares) == list(engine.emotions)
    state = engine.session_state("a")
    engine.set_session_state("b", state)
    assert np.array_equal(engine.session_state("b"), state)
    engine.end_session("a")
    assert engine.health()["up"] is True and engine.health()["restarts"] == 0
    engine.close()


def test_the_torch_engine_is_an_engine(tiny_predictor) -> None:
    check_engine(tiny_predictor)


def test_the_stand_in_is_an_engine() -> None:
    check_engine(StubEngine())


def test_something_that_lacks_a_member_is_not_an_engine() -> None:
    assert isinstance(StubEngine(), Engine)
    assert not isinstance(object(), Engine)
    assert not isinstance(type("Half", (), {"predict": lambda self, s: []})(), Engine)


def test_callers_do_not_probe_engines() -> None:
    """No getattr/hasattr on a predictor anywhere in the package: the protocol says what is there."""
    found = []
    for path in sorted(p for d in ("model", "streamer", "training") for p in (REPO / d).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
            ):
                target = ast.unparse(node.args[0]) if node.args else ""
                if "predictor" in target or "engine" in target:
                    found.append(f"{path.relative_to(REPO)}: {ast.unparse(node)}")
    # the model process's child dispatches the calls it received by name (CALLS, checked first)
    assert found == ["streamer/serve/model_process.py: getattr(predictor, method)"], found


@pytest.mark.system
def test_every_engine_satisfies_the_protocol_for_mypy(tmp_path: Path) -> None:
    """mypy checks the four engines against Engine (tests/support/engines_typed.py); the
    package is reached as `emomon` through a link, as the wheel installs it."""
    (tmp_path / "emomon").symlink_to(REPO, target_is_directory=True)
    env = {**os.environ, "MYPYPATH": f"{tmp_path}{os.pathsep}{REPO / 'tests'}"}
    # Without site-packages: torch, numpy and the rest are Any, so mypy reads the engines and the
    # protocol alone (a second, not the 40 s torch's own types take); a wrong signature still fails.
    args = ["--follow-imports=silent", "--ignore-missing-imports", "--no-site-packages", "--cache-dir",
            str(tmp_path / "cache")]  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "mypy", *args, "support/engines_typed.py"], cwd=REPO / "tests",
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success: no issues found" in run.stdout
