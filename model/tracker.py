"""Who is speaking: speakers tracked as they come, and turn changes inside a segment.

Each scored segment's speaker embedding (model/speaker.py, through the speaker back-end of
[speakers] backend: model/speaker_backend.py) is compared with the profiles of
the speakers heard so far: its mean cosine similarity to each speaker's segments (their
duration-weighted mean embedding). At or above `same` it belongs to the nearest; below, it
is a new speaker while there are fewer than `max_speakers`, else the nearest. A profile
takes in every segment of its speaker, so it widens as the speaker moves through emotions:
the same voice angry and calm stays one speaker.
Segments shorter than `min_new_s` carry too little voice to start a new speaker.

A segment can hold two people when one answers within the VAD's hang-over. Inside segments
of at least 2 x 1.6 s, partial embeddings every `TURN_STEP_S` compare the 1.6 s before each
candidate point with the 1.6 s after it; where the two are least alike, and below `turn`,
the turn changed nearby. The LSTM's last state weighs a partial's end most, so that point
lies early; the cut goes where the partials' middles start to resemble the side after more
than the side before. Each part is scored and tracked on its own, and looked at again while
it is long enough. How often a turn change is found, and how near: docs/benchmarks.md,
"Speakers".
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .audio import SAMPLE_RATE
from .speaker import HOP, PARTIAL_FRAMES, unit

TURN_STEP_S = 0.2  # the resolution of a turn change
MAX_SOURCES = 4096  # trackers kept at once (a server's streams); the oldest is forgotten past it
TURN_STEP_FRAMES = int(TURN_STEP_S * SAMPLE_RATE / HOP)


@dataclass(frozen=True)
class SpeakerSettings:
    """The [speakers] table of config.toml."""

    enabled: bool = False
    max_speakers: int = 4
    same: float = 0.2  # mean cosine to a speaker's segments at or above which a segment is theirs
    turn: float = 0.7  # cosine between the 1.6 s either side of a point below which the turn changed there
    min_new_s: float = 1.0  # shorter segments join the nearest known speaker
    speakers: tuple[str, ...] = ()  # enrolled voices, "name=file.wav"
    backend: str = "default"  # model/speaker_backend.py: "default", "none" or a back-end folder

    def __post_init__(self) -> None:
        if self.max_speakers < 1:
            raise ValueError(f"max_speakers must be 1 or more, not {self.max_speakers}")
        for name in ("same", "turn"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a cosine similarity between -1 and 1, not {getattr(self, name)}")
        if not self.backend.strip():
            raise ValueError('backend must be "default", "none" or a speaker back-end folder')


@dataclass
class Speaker:
    name: str
    total: np.ndarray  # duration-weighted sum of embeddings
    seconds: float = 0.0
    enrolled: bool = False

    @property
    def profile(self) -> np.ndarray:
        """The duration-weighted mean of the speaker's embeddings, not renormalised: its dot
        product with an embedding is the mean cosine to the speaker's segments, which does not
        creep up as a speaker talks longer (a renormalised centroid's does, for any voice)."""
        return self.total / max(self.seconds, 1e-12)


@dataclass
class SpeakerTracker:
    """The speakers of one stream (a call, a session), in the order they were first heard."""

    settings: SpeakerSettings = field(default_factory=SpeakerSettings)
    speakers: list[Speaker] = field(default_factory=list)

    def enrol(self, name: str, embedding: np.ndarray, seconds: float) -> None:
        """A known voice under its own name; numbered speakers count on after the enrolled ones."""
        self.speakers.append(Speaker(name, np.asarray(embedding, np.float64) * seconds, seconds, enrolled=True))

    def _new_name(self) -> str:
        return f"speaker {len(self.speakers) + 1}"

    def assign(self, embedding: np.ndarray, seconds: float) -> str:
        """The speaker of a segment with this embedding and length; their profile takes it in."""
        e = np.asarray(embedding, np.float64)
        sims = [float(s.profile @ e) for s in self.speakers]
        best = int(np.argmax(sims)) if sims else -1
        room = len(self.speakers) < self.settings.max_speakers
        if best < 0 or (sims[best] < self.settings.same and room and seconds >= self.settings.min_new_s):
            self.speakers.append(Speaker(self._new_name(), e * seconds, seconds))
            return self.speakers[-1].name
        s = self.speakers[best]
        s.total = s.total + e * seconds
        s.seconds += seconds
        return s.name

    def reset(self) -> None:
        """A new stream: the numbered speakers are forgotten, the enrolled ones kept as enrolled."""
        self.speakers = [s for s in self.speakers if s.enrolled]


@dataclass(frozen=True)
class Part:
    """A stretch of a segment with one speaker: sample offsets into the segment, its embedding."""

    start: int
    end: int
    embedding: np.ndarray


def speaker_parts(encoder, segments: Sequence[np.ndarray], turn: float) -> list[list[Part]]:
    """Each segment cut where its speaker changes (`turn`: see SpeakerSettings), each part with
    its embedding; all segments' partials in one LSTM pass. A segment shorter than two
    partials is one part, embedded as Resemblyzer embeds an utterance; a longer one gets
    partials every TURN_STEP_S, which give both its turn changes and its parts' embeddings."""
    if not segments:
        return []
    dense = [len(seg) >= 2 * PARTIAL_FRAMES * HOP for seg in segments]
    partials, where = encoder.partial_embeddings(segments, [TURN_STEP_FRAMES if d else None for d in dense])
    out = []
    for i, seg in enumerate(segments):
        mine, starts = partials[where.owner == i], where.windows[i]
        if not dense[i]:
            out.append([Part(0, len(seg), unit(mine.sum(axis=0)))])
            continue
        frames = len(seg) // HOP
        inside = [k for k, s in enumerate(starts) if s + PARTIAL_FRAMES <= frames]  # no padding past the end
        mine, starts = mine[inside], [starts[k] for k in inside]
        cuts = _cuts(mine, starts, 0, frames, turn)
        bounds = [0, *cuts, frames]
        parts = []
        for lo, hi in zip(bounds, bounds[1:]):
            ks = [k for k, s in enumerate(starts) if s >= lo and s + PARTIAL_FRAMES <= hi] or list(range(len(starts)))
            parts.append(Part(lo * HOP, len(seg) if hi == frames else hi * HOP, unit(mine[ks].sum(axis=0))))
        out.append(parts)
    return out


def _cuts(partials: np.ndarray, starts: Sequence[int], lo: int, hi: int, turn: float) -> list[int]:
    """Frames in [lo, hi) where the speaker changes: at point p the partial ending at p is
    compared with the one starting at p; the least alike below `turn` is a cut, then each
    side is looked at again."""
    index = {s: k for k, s in enumerate(starts)}
    best, cut = turn, None
    for k, s in enumerate(starts):
        p = s + PARTIAL_FRAMES
        j = index.get(p)
        if s < lo or j is None or p + PARTIAL_FRAMES > hi:
            continue
        sim = float(partials[k] @ partials[j])
        if sim < best:
            best, cut = sim, p
    if cut is None:
        return []
    cut = _refine(partials, starts, lo, cut, hi)
    return [*_cuts(partials, starts, lo, cut, turn), cut, *_cuts(partials, starts, cut, hi, turn)]


def _refine(partials: np.ndarray, starts: Sequence[int], lo: int, cut: int, hi: int) -> int:
    """Where the least alike pair lies is only roughly where the voice changes (measured: up to
    0.7 s early). Each partial is labelled by which side's mean it is nearer to, and placed at
    its middle: the change is the first middle, near `cut`, that belongs to the side after."""
    before = [k for k, s in enumerate(starts) if s >= lo and s + PARTIAL_FRAMES <= cut]
    after = [k for k, s in enumerate(starts) if s >= cut and s + PARTIAL_FRAMES <= hi]
    if not before or not after:
        return cut
    a, b = partials[before].mean(axis=0), partials[after].mean(axis=0)
    half = PARTIAL_FRAMES // 2
    for k, s in enumerate(starts):
        middle = s + half
        if s >= lo and s + PARTIAL_FRAMES <= hi and cut - half <= middle <= cut + PARTIAL_FRAMES:
            if partials[k] @ b > partials[k] @ a:  # each side keeps a whole partial of its own
                last = max(s for s in starts if s + PARTIAL_FRAMES <= hi)
                return max(lo + PARTIAL_FRAMES, min(middle, last))
    return cut


def parse_enrolment(entry: str) -> tuple[str, str]:
    """ "agent=agent.wav" -> ("agent", "agent.wav"); one sentence for anything else."""
    from .errors import ConfigError

    name, sep, path = entry.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ConfigError(f"Speaker '{entry}' must be NAME=FILE (for example agent=agent.wav).")
    return name.strip(), path.strip()


class Speakers:
    """The inference worker's speaker stage: each segment's parts and their speakers, with one
    tracker per source (a file, the microphone, a server stream), every tracker starting from
    the enrolled voices."""

    def __init__(self, settings: SpeakerSettings, encoder=None) -> None:
        from .audio import read_audio
        from .speaker import SpeakerEncoder
        from .speaker_backend import resolve_backend

        self.settings = settings
        self.encoder = encoder or SpeakerEncoder(backend=resolve_backend(settings.backend))
        self.enrolled: list[tuple[str, np.ndarray, float]] = []
        for entry in settings.speakers:
            name, path = parse_enrolment(entry)
            wav = read_audio(path)  # one sentence when missing or unreadable
            self.enrolled.append((name, self.encoder.embed([wav])[0], len(wav) / SAMPLE_RATE))
        self.trackers: dict[str, SpeakerTracker] = {}
        self._lock = threading.Lock()  # serve --workers: several worker threads label at once

    def tracker(self, source: str) -> SpeakerTracker:
        if source not in self.trackers:
            while len(self.trackers) >= MAX_SOURCES:  # bounded: the longest-known source goes first
                self.trackers.pop(next(iter(self.trackers)))
            t = SpeakerTracker(self.settings)
            for name, embedding, seconds in self.enrolled:
                t.enrol(name, embedding, seconds)
            self.trackers[source] = t
        return self.trackers[source]

    def label(self, sources: Sequence[str], audios: Sequence[np.ndarray]) -> list[list[tuple[Part, str]]]:
        """Per segment (in the order they were spoken, per source): its parts and their speakers."""
        with self._lock:
            parts = speaker_parts(self.encoder, audios, self.settings.turn)
            return [
                [(p, self.tracker(src).assign(p.embedding, (p.end - p.start) / SAMPLE_RATE)) for p in ps]
                for src, ps in zip(sources, parts)
            ]

    def forget(self, source: str) -> None:
        """A source that ended (a closed server stream): its speakers go."""
        with self._lock:
            self.trackers.pop(source, None)
