"""Compressed audio written in the test, by PyAV's own encoders (FFmpeg inside its wheel):
the formats people bring (a phone's M4A, a browser's WebM, MP3, a video call's MP4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# name -> (codec, the encoder's rate or None for the audio's, bit rate or None for the codec's own,
# a video track too): the bit rates of a phone's voice memo (AAC 64 kb/s), a browser's
# MediaRecorder speech (Opus 32 kb/s) and a common MP3 (64 kb/s; FFmpeg's own is 24 at 16 kHz)
FORMATS = {
    "wav": ("pcm_s16le", None, None, False),
    "flac": ("flac", None, None, False),
    "m4a": ("aac", None, 64000, False),
    "webm": ("libopus", 48000, 32000, False),
    "mp3": ("libmp3lame", None, 64000, False),
    "mp4": ("aac", None, 64000, True),
}


def encode(
    audio: np.ndarray, rate: int, path: Path, name: str, video: bool | None = None, faststart: bool = False
) -> Path:
    """`audio` (float32 mono at `rate`) written to `path` in FORMATS[name] (a WAV or FLAC
    through FFmpeg too, so that every file here is made one way); `video` overrides
    whether a (black, 10 fps) video track comes with it; `faststart`: an MP4's index
    before its data, as streaming writers put it (else after, as PyAV and most apps do)."""
    import av

    codec, out_rate, bit_rate, with_video = FORMATS[name]
    with_video = with_video if video is None else video
    out_rate = out_rate or rate
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else None) as box:
        picture = None
        if with_video:
            picture = box.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        sound = box.add_stream(codec, rate=out_rate, layout="mono")
        ctx = sound.codec_context
        if bit_rate:
            ctx.bit_rate = bit_rate
        convert = av.AudioResampler(format=ctx.format.name, layout="mono", rate=out_rate,
                                    frame_size=ctx.frame_size or 1024)  # fmt: skip
        frame = av.AudioFrame.from_ndarray(np.asarray(audio, np.float32)[None, :], format="flt", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        shown = 0
        for part in [*convert.resample(frame), *convert.resample(None)]:
            if picture is not None and part.pts is not None and part.pts / out_rate >= shown / 10:
                image = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
                image.pts, shown = shown, shown + 1
                box.mux(picture.encode(image))
            box.mux(sound.encode(part))
        box.mux(sound.encode(None))
        if picture is not None:
            box.mux(picture.encode(None))
    return path
