"""Tiny encoders saved as the hub stores them, tiny bundles, and a stand-in engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import EMOTIONS9


def save_tiny_ssl(folder: Path, kind: str = "hubert", norm: str = "layer", seed: int = 0) -> Path:
    """A tiny HuBERT / wav2vec 2.0 with random weights, saved the way the hub stores one."""
    import torch
    from transformers import (
        HubertConfig,
        HubertModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    Config, Model = {"hubert": (HubertConfig, HubertModel), "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model)}[kind]
    cfg = Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        feat_extract_norm=norm,
        do_stable_layer_norm=norm == "layer",
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    torch.manual_seed(seed)
    Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=norm == "layer", return_attention_mask=norm == "layer").save_pretrained(
        folder
    )
    return folder


TINY_REGRESSOR = dict(conv_channels=(24, 16, 12), lstm_hidden=16, ff_dims=(12, 8, 6))


def make_bundle(encoder, emotions=EMOTIONS9, seed: int = 0, **regressor):
    """A randomly initialised bundle for `encoder` with tiny regressors."""
    import torch

    from emomon.model.bundle import Bundle, new_bank
    from emomon.model.specs import RegressorSpec

    spec = RegressorSpec.paper(**{**TINY_REGRESSOR, **regressor})
    mixed = encoder.num_layers if encoder.spec.layer == "weighted" else 0
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    return Bundle(
        emotions=tuple(emotions),
        encoder=encoder.spec,
        regressor=spec,
        input_dim=encoder.dim,
        mixed_layers=mixed,
        norm_mean=gen.normal(0, 0.1, encoder.dim).tolist(),
        norm_std=gen.uniform(0.5, 2.0, encoder.dim).tolist(),
        bank=new_bank(spec, tuple(emotions), encoder.dim, mixed).eval(),
        metrics={"note": "random weights for tests"},
        provenance={"made_by": "tests"},
    )


def save_tiny_whisper(folder: Path, n_mels: int = 80, seed: int = 0) -> Path:
    """A tiny Whisper (encoder and decoder) with random weights, saved as the hub stores one."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    cfg = WhisperConfig(
        num_mel_bins=n_mels, d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=100,
        max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )  # fmt: skip
    torch.manual_seed(seed)
    WhisperModel(cfg).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=n_mels).save_pretrained(folder)
    return folder


class StubEngine:
    """An Engine (model/interface.py) that scores without a model: each segment's shares
    follow its loudness, so results are known in advance. `gate` (an Event) holds every call
    until it is set; `entered` is set when a call starts; `fail` makes calls raise it. Every
    call is recorded as (session, or each segment's session, segment count, update_session)."""

    name = "stub"
    emotions = ("loud", "quiet")

    def __init__(self, adapts: bool = False, gate=None, fail: Exception | None = None) -> None:
        import threading

        self.adapts, self.gate, self.fail = adapts, gate, fail
        self.entered = threading.Event()
        self.calls: list[tuple[str, int, bool]] = []
        self.session, self.ended, self.closed = "", [], False
        self.states: dict[str, np.ndarray] = {}

    @staticmethod
    def shares_of(audio: np.ndarray) -> dict[str, float]:
        loud = float(np.clip(np.sqrt(np.mean(np.square(audio))) * 4, 0, 1))
        return {"loud": loud, "quiet": 1.0 - loud}

    def describe(self) -> dict[str, str]:
        return {"model": self.name, "encoder": "none", "adapter": "", "emotions": "2 emotions", "device": "cpu",
                "dtype": "float32"}  # fmt: skip

    def predict(self, segments, update_session: bool = True, sessions=None):
        from emomon.model.predictor import Prediction

        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
        self.calls.append((self.session if sessions is None else tuple(sessions), len(segments), update_session))
        if self.fail is not None:
            raise self.fail
        return [Prediction(self.shares_of(s), None, 0.02, len(s) / 16000, 0.0, 0.0, len(segments)) for s in segments]

    def use_session(self, key: str) -> None:
        self.session = key

    def end_session(self, key: str) -> None:
        self.ended.append(key)

    def session_state(self, key: str) -> np.ndarray:
        return self.states.get(key, np.zeros((3, 1)))

    def set_session_state(self, key: str, state: np.ndarray) -> None:
        self.states[key] = np.asarray(state, np.float64)

    def health(self) -> dict:
        from emomon.model.interface import IN_PROCESS_HEALTH

        return dict(IN_PROCESS_HEALTH)

    def close(self) -> None:
        self.closed = True
