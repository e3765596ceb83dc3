"""The speaker tests' settings and their two-speaker conversation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emomon.model.audio import SAMPLE_RATE
from emomon.model.tracker import SpeakerSettings

from .data import speech_sentence

# [speakers] as the speaker tests run it: raw GE2E embeddings at stated thresholds (the mechanics;
# the default back-end's own test is tests/test_speaker_backend.py)
SAME = SpeakerSettings(enabled=True, same=0.6, turn=0.55, backend="none")


SAME_TOML = f'[speakers]\nbackend = "{SAME.backend}"\nsame = {SAME.same}\nturn = {SAME.turn}\n'  # SAME as config.toml


def build_conversation(folder: Path) -> tuple[Path, list[tuple[float, float, str]]]:
    """nEMO's SM0 (a man) and EB0 (a woman) taking turns through their emotions, 1.2 s apart
    (the VAD closes a segment between turns), the last answer coming without a pause."""
    turns = [("SM0", ("anger_4", "anger_5")), ("EB0", ("neutral_4", "neutral_5")), ("SM0", ("sadness_4", "sadness_5")),
             ("EB0", ("happiness_4", "happiness_5")), ("SM0", ("neutral_6", "neutral_7")),
             ("EB0", ("anger_6", "anger_7"))]  # fmt: skip
    gap = np.zeros(int(1.2 * SAMPLE_RATE), np.float32)
    pieces, ref, t = [gap], [], len(gap) / SAMPLE_RATE
    for k, (who, names) in enumerate(turns):
        wav = np.concatenate([speech_sentence(f"{who}_{n}.opus") for n in names])
        ref.append((t, t + len(wav) / SAMPLE_RATE, who))
        pause = gap if k < len(turns) - 2 else gap[:0]  # the last two turns: no pause between them
        pieces += [wav, pause]
        t += (len(wav) + len(pause)) / SAMPLE_RATE
    pieces.append(gap)
    import soundfile as sf

    path = folder / "call.wav"
    sf.write(path, np.concatenate(pieces), SAMPLE_RATE)
    return path, ref
