"""Checked by mypy in tests/test_interface.py (never run): every engine is an Engine."""

from __future__ import annotations

from emomon.model.interface import Engine
from emomon.model.onnx_engine import OnnxPredictor
from emomon.model.predictor import Predictor
from emomon.streamer.serve.model_process import ModelProcess

from .models import StubEngine


def engines(torch: Predictor, onnx: OnnxPredictor, process: ModelProcess, stub: StubEngine) -> list[Engine]:
    return [torch, onnx, process, stub]
