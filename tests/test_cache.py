"""Embedding cache: content-addressed, unpadded, resumable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch
from support.data import EMODB, load_clip

from emomon.model.audio import SAMPLE_RATE, read_audio
from emomon.model.encoder import load_encoder
from emomon.model.specs import EncoderSpec
from emomon.training.cache import EmbeddingCache


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(EncoderSpec(kind="egemaps", name="eGeMAPSv02"))


@pytest.fixture()
def files(tmp_path: Path) -> list[Path]:
    out = []
    for i, src in enumerate(sorted((EMODB / "wav").glob("*.wav"))[:6]):
        dst = tmp_path / f"clip{i}.wav"
        shutil.copy(src, dst)
        out.append(dst)
    return out


@pytest.mark.corpora
def test_resumes_where_an_interrupted_run_stopped(encoder, files: list[Path], tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c", encoder, shard_items=2)
    assert cache.extract(files[:3], batch_seconds=2.0) == []  # "interrupted" after three files: two shards
    folder = cache.folder
    assert len(list(folder.glob("shard-*.safetensors"))) == 2
    again = EmbeddingCache(tmp_path / "c", encoder, shard_items=2)  # a new process
    assert len(again.entries) == 3
    again.extract(files, batch_seconds=2.0)
    index = json.loads((folder / "index.json").read_text())
    assert len(index["entries"]) == 6 and len(list(folder.glob("shard-*.safetensors"))) == 4
    feats = again.load(files)
    direct = encoder.encode([read_audio(f) for f in files])
    for i, f in enumerate(feats):
        assert f.shape == direct.segment(i).shape  # stored unpadded, at its true length
        assert torch.allclose(f, direct.segment(i), rtol=1e-3, atol=1e-2)  # float16 storage


@pytest.mark.corpora
def test_keys_follow_content_not_names(encoder, files: list[Path], tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c", encoder)
    cache.extract(files[:1])
    renamed = tmp_path / "renamed.wav"
    shutil.copy(files[0], renamed)
    fresh = EmbeddingCache(tmp_path / "c", encoder)
    assert fresh.load([renamed])[0] is not None  # same audio, new name: found
    sf.write(files[1], load_clip("03a01Wa.wav")[: SAMPLE_RATE // 2], SAMPLE_RATE)  # changed audio
    assert fresh.load([files[1]])[0] is None


@pytest.mark.corpora
def test_unreadable_and_too_short_files_are_reported(encoder, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    short = tmp_path / "short.wav"
    sf.write(short, load_clip("03a01Wa.wav")[:1000], SAMPLE_RATE)
    problems = dict(EmbeddingCache(tmp_path / "c", encoder).extract([bad, short]))
    assert "cannot be read as audio" in problems[str(bad)]
    assert "shorter than 0.3 s" in problems[str(short)]


@pytest.mark.corpora
def test_large_descriptors_survive_the_cache_and_variants_are_separate(files: list[Path], tmp_path: Path) -> None:
    """ComParE descriptors pass float16's range (spectral variance > 65504): the cache must
    hand back exactly what the encoder gave, and a variant is its own entry."""
    enc = load_encoder(EncoderSpec(kind="compare", name="ComParE_2016"))
    cache = EmbeddingCache(tmp_path / "c", enc)
    assert cache.extract(files[:2]) == []
    assert cache.extract(files[:2], variant="half", transform=lambda i, a: a[: len(a) // 2]) == []
    clean, half = cache.load(files[:2]), cache.load(files[:2], "half")
    direct = enc.encode([read_audio(files[0])]).segment(0)
    assert direct.abs().max() > 65504  # the case float16 cannot hold
    assert torch.equal(clean[0], direct)
    assert half[0].shape[0] < clean[0].shape[0] and torch.isfinite(half[0]).all()
