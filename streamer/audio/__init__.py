"""Audio in: files read block by block (sources.py), the microphone (capture.py), and the
WebRTC VAD segmenter that cuts either into speech segments (segmenter.py)."""
