"""Writes resemblyzer_reference.json: Resemblyzer's own embeddings of a few Emo-DB clips,
which tests/test_speakers.py compares with model/speaker.py.

Run once, outside emomon's environment (it needs librosa, which emomon does not), e.g.:
    python -m venv /tmp/rz && /tmp/rz/bin/pip install torch librosa scipy webrtcvad-wheels soundfile
    /tmp/rz/bin/pip install --no-deps resemblyzer==0.1.4
    /tmp/rz/bin/python tests/data/make_resemblyzer_reference.py ../shared/data/emodb/wav
"""

import json
import sys
from pathlib import Path

import librosa
import numpy as np
import resemblyzer
import soundfile as sf
import torch
from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram

CLIPS = ["03a01Wa.wav", "03a05Tc.wav", "08a01Na.wav", "09a01Fa.wav", "16b10Lb.wav"]
QUIET = 0.02  # the first clip once more at this gain, below -30 dBFS: raised before embedding

folder = Path(sys.argv[1])
encoder = resemblyzer.VoiceEncoder("cpu", verbose=False)
out = {"resemblyzer": "0.1.4", "librosa": librosa.__version__, "torch": torch.__version__, "clips": {}}
for name in [*CLIPS, "quiet"]:
    wav, sr = sf.read(folder / (CLIPS[0] if name == "quiet" else name), dtype="float32")
    assert sr == 16000, sr
    if name == "quiet":
        wav = wav * np.float32(QUIET)
    wav = normalize_volume(wav, -30, increase_only=True).astype(np.float32)
    embed, partials, _ = encoder.embed_utterance(wav, return_partials=True)
    mel = wav_to_mel_spectrogram(wav)
    out["clips"][name] = {
        "embedding": np.round(embed, 6).tolist(),
        "partials": len(partials),
        "mel_frames": int(mel.shape[0]),
        "mel_sum_first_100": float(mel[:100].sum()),
    }
Path(__file__).with_name("resemblyzer_reference.json").write_text(json.dumps(out) + "\n")
