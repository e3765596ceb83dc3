"""Audio in: file sources, the microphone, the VAD segmenter and the streaming core every
runner feeds (docs/architecture.md)."""
