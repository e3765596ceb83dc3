"""Labelled speech datasets: ComParE 2023 Emotion Share, a generic CSV manifest, and the
emotional-speech corpora laid out as in ../shared/data (Emo-DB, RAVDESS, nEMO, ASED,
BanglaSER, EYASE, IndoWave): one loader for all of those (`load_corpus`), a `Corpus`
record each for what differs (label order, labels left out, confound subsets, speakers
who shared recordings, licence).

Each loader returns a `Dataset`: the emotion names in order and one `Item` per usable
audio file with its share targets, split, speaker and corpus. Problems (missing audio,
bad label values, unknown columns) never stop a load halfway: each is recorded in
`Dataset.problems` as (file, reason), the item is left out, and the caller prints one
summary.

Several corpora train together through `merge()`: the emotions become the union of their
label sets, and each item keeps a mask of the emotions its own corpus can express (Emo-DB
has boredom but no calm or surprise; RAVDESS the reverse). The training loss only looks
at those, so a corpus never teaches that an emotion it cannot label is absent.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..model.errors import EmomonError

if TYPE_CHECKING:
    from ..config import Config

COMPARE23_EMOTIONS = (
    "Anger", "Boredom", "Calmness", "Concentration", "Determination",
    "Excitement", "Interest", "Sadness", "Tiredness",
)  # fmt: skip
EMODB_CODES = {
    "W": "anger", "L": "boredom", "E": "disgust", "A": "fear",
    "F": "happiness", "T": "sadness", "N": "neutral",
}  # fmt: skip
EMODB_EMOTIONS = tuple(EMODB_CODES.values())
RAVDESS_CODES = {
    "01": "neutral", "02": "calm", "03": "happiness", "04": "sadness",
    "05": "anger", "06": "fear", "07": "disgust", "08": "surprise",
}  # fmt: skip
RAVDESS_EMOTIONS = tuple(RAVDESS_CODES.values())
NEMO_EMOTIONS = ("anger", "fear", "happiness", "neutral", "sadness", "surprise")
CORPORA = ("emodb", "ravdess", "nemo", "ased", "banglaser", "eyase", "indowave")  # as laid out in ../shared/data
DATASET_KINDS = ("compare23", "csv", *CORPORA)  # the [dataset] kinds (training/settings.py)


class DatasetError(EmomonError):
    """A dataset folder or manifest cannot be used at all."""


@dataclass(frozen=True)
class Item:
    path: Path
    targets: tuple[float, ...] | None  # one share per emotion; None where labels are withheld
    split: str  # train | devel | test
    speaker: str = ""
    label: int | None = None  # class index, for categorical datasets (Emo-DB, RAVDESS)
    corpus: str = ""
    mask: tuple[bool, ...] | None = None  # emotions this item's corpus labels; None = all of them
    group: str = ""  # speakers who must stay on one side of every split ("23+25"); "" = the speaker alone
    subset: str = ""  # the corpus's subset of the file, for confounds ("common", "extended")

    @property
    def unit(self) -> str:
        """What a speaker-independent split keeps together: the speaker, or its linked group."""
        return self.group or self.speaker


@dataclass
class Dataset:
    name: str
    emotions: tuple[str, ...]
    items: list[Item]
    categorical: bool = False  # targets come from one class per file: UAR applies
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    label_sets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # corpus -> the emotions it labels

    def split(self, name: str) -> list[Item]:
        return [it for it in self.items if it.split == name and it.targets is not None]

    def speakers(self) -> list[str]:
        return sorted({it.speaker for it in self.items})

    def corpora(self) -> list[str]:
        return list(self.label_sets) or [self.name]

    def summary(self) -> str:
        counts = ", ".join(f"{s} {len(self.split(s))}" for s in ("train", "devel", "test") if self.split(s))
        text = f"{self.name}: {len(self.items)} files ({counts}), {len(self.emotions)} emotions"
        if self.problems:
            text += f"; {len(self.problems)} left out"
        return text


def load_dataset(kind: str, data: str | Path, **options) -> Dataset:
    """Load dataset `kind` (compare23, csv, or a corpus of CORPUS_INFO) from `data`."""
    data = Path(data)
    if not data.exists():
        raise DatasetError(f"Dataset path '{data}' does not exist.")
    loaders = {"compare23": load_compare23, "csv": load_csv_manifest, "emodb": load_emodb}
    if kind not in loaders and kind not in CORPUS_INFO:
        raise DatasetError(f"Unknown dataset kind '{kind}' (choose from {', '.join(DATASET_KINDS)}).")
    ds = loaders[kind](data, **options) if kind in loaders else load_corpus(data, kind)
    ds.label_sets = {ds.name: ds.emotions}
    ds.items = [replace(it, corpus=ds.name) for it in ds.items]
    return ds


def merge(datasets: list[Dataset]) -> Dataset:
    """Several corpora as one: the union of their emotions (in alphabetical order), each item
    with its targets spread onto the union and a mask of its own corpus's emotions.

    Speakers (and linked groups) are prefixed with their corpus ("emodb:03") so two corpora
    never share one.
    """
    if len(datasets) == 1:
        return datasets[0]
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise DatasetError(f"Dataset {names[0]} is listed twice.")
    emotions = tuple(sorted({e for d in datasets for e in d.emotions}))
    out = Dataset("+".join(names), emotions, [], categorical=all(d.categorical for d in datasets))
    for d in datasets:
        where = [emotions.index(e) for e in d.emotions]
        mask = tuple(e in d.emotions for e in emotions)
        for it in d.items:
            targets = None
            if it.targets is not None:
                spread = [0.0] * len(emotions)
                for k, v in zip(where, it.targets):
                    spread[k] = v
                targets = tuple(spread)
            label = None if it.label is None else where[it.label]
            group = f"{d.name}:{it.group}" if it.group else ""
            out.items.append(
                replace(it, targets=targets, label=label, mask=mask, speaker=f"{d.name}:{it.speaker}", group=group)
            )
        out.problems += d.problems
        out.label_sets[d.name] = d.emotions
    return out


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"Label file '{path}' cannot be read: {e}.") from e


def _shares(row: dict[str, str], columns: Iterable[str]) -> tuple[float, ...]:
    """The share columns of one row as floats in [0, 1], or ValueError naming the column."""
    out = []
    for c in columns:
        try:
            v = float(row[c])
        except (TypeError, ValueError):
            raise ValueError(f"{c} = {row[c]!r} is not a number") from None
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ValueError(f"{c} = {v} is not a share in [0, 1]")
        out.append(v)
    return tuple(out)


def load_compare23(root: Path) -> Dataset:
    """ComParE 2023 Emotion Share: wav/ and lab/{train,devel,test}.csv (test labels optional)."""
    ds = Dataset("compare23", COMPARE23_EMOTIONS, [])
    for split in ("train", "devel", "test"):
        lab = root / "lab" / f"{split}.csv"
        if not lab.is_file():
            if split != "test":
                raise DatasetError(f"ComParE label file '{lab}' is missing.")
            continue
        columns, rows = _read_csv(lab)
        if "filename" not in columns:
            raise DatasetError(f"Label file '{lab}' has no 'filename' column.")
        labelled = all(e in columns for e in COMPARE23_EMOTIONS)
        if not labelled and split != "test":
            missing = next(e for e in COMPARE23_EMOTIONS if e not in columns)
            raise DatasetError(f"Label file '{lab}' has no '{missing}' column.")
        for row in rows:
            path = root / "wav" / row["filename"]
            if not path.is_file():
                ds.problems.append((str(path), "audio file is missing"))
                continue
            try:
                targets = _shares(row, COMPARE23_EMOTIONS) if labelled else None
            except ValueError as e:
                ds.problems.append((str(path), f"bad label in {lab.name}: {e}"))
                continue
            ds.items.append(Item(path, targets, split))
    return ds


def load_csv_manifest(manifest: Path, devel_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A CSV with an audio path column (path, file or filename; relative to the CSV's folder),
    one numeric column per emotion, and optional `split` and `speaker` columns.

    Without a `split` column, a `devel_fraction` of the speakers (or of the files, when no
    speaker is given) is held out for early stopping, the same way for the same seed.
    """
    if manifest.is_dir():
        manifest = manifest / "manifest.csv"
    columns, rows = _read_csv(manifest)
    path_col = next((c for c in ("path", "file", "filename") if c in columns), None)
    if path_col is None:
        raise DatasetError(f"Manifest '{manifest}' has no audio path column (path, file or filename).")
    emotions = tuple(c for c in columns if c not in (path_col, "split", "speaker"))
    if not emotions:
        raise DatasetError(f"Manifest '{manifest}' has no emotion columns.")
    ds = Dataset("csv", emotions, [])
    for row in rows:
        path = manifest.parent / row[path_col]
        split = row.get("split") or ""
        if split and split not in ("train", "devel", "test"):
            ds.problems.append((str(path), f"split '{split}' is not train, devel or test"))
            continue
        if not path.is_file():
            ds.problems.append((str(path), "audio file is missing"))
            continue
        try:
            targets = _shares(row, emotions)
        except ValueError as e:
            ds.problems.append((str(path), f"bad label: {e}"))
            continue
        ds.items.append(Item(path, targets, split, row.get("speaker") or ""))
    if any(not it.split for it in ds.items):
        ds.items = _assign_devel(ds.items, devel_fraction, seed)
    return ds


def _assign_devel(items: list[Item], fraction: float, seed: int) -> list[Item]:
    """Give items without a split one: a fraction of speakers (or files) becomes devel."""
    groups = sorted({it.speaker or str(it.path) for it in items if not it.split})
    rng = random.Random(seed)
    rng.shuffle(groups)
    devel = set(groups[: max(1, round(fraction * len(groups)))])
    return [
        it if it.split else replace(it, split="devel" if (it.speaker or str(it.path)) in devel else "train")
        for it in items
    ]


@dataclass(frozen=True)
class Corpus:
    """One emotional-speech corpus laid out as in ../shared/data: a labels.csv with `file`,
    `speaker` and `emotion` (one portrayed emotion per file), whatever else it carries.

    One loader reads them all (`load_corpus`); this record says what differs.
    """

    name: str
    title: str
    licence: str  # what a model trained on it inherits
    emotions: tuple[str, ...] = ()  # label order; () = the labels found, sorted
    drop: tuple[str, ...] = ()  # labels left out on purpose (not one of the model's emotions)
    subset: str = ""  # column whose value names a file's subset (for confounds: "ased.common")
    # speakers who shared recordings (the README could not tell whose): one side of every split
    linked: tuple[tuple[str, ...], ...] = ()


CORPUS_INFO = {
    c.name: c
    for c in (
        Corpus("emodb", "Emo-DB", "Emo-DB: free for research use", EMODB_EMOTIONS),
        Corpus("ravdess", "RAVDESS", "RAVDESS: CC BY-NC-SA 4.0 (non-commercial, share-alike)", RAVDESS_EMOTIONS),
        Corpus("nemo", "nEMO", "nEMO: CC BY-NC-SA 4.0 (non-commercial, share-alike)", NEMO_EMOTIONS),
        Corpus(
            "ased",
            "ASED",
            "ASED: no licence stated (its authors call it freely available; research use)",
            subset="text_kind",
            linked=(("23", "25"), ("39", "45", "52")),
        ),
        Corpus(
            "banglaser",
            "BanglaSER",
            "BanglaSER: CC BY 4.0 (main part); BanglaSER Extended: no licence stated (research use)",
            subset="part",
            linked=(("13", "16", "19"),),
        ),
        Corpus("eyase", "EYASE", "EYASE: no licence stated (research use)"),
        Corpus("indowave", "IndoWaveSentiment", "IndoWaveSentiment: CC BY 4.0", drop=("disappointment",)),
    )
}
LICENCES = {name: c.licence for name, c in CORPUS_INFO.items()}


def load_corpus(root: Path, name: str, share_of_intended=None) -> Dataset:
    """Corpus `name` (a key of CORPUS_INFO): a labels.csv of file, speaker and emotion.

    Each file's target gives its portrayed emotion the share `share_of_intended(row)` (1 by
    default; Emo-DB's listener recognition rate) and spreads the rest evenly over the
    corpus's other emotions, so each target sums to 1 like a listener distribution.
    `share_of_intended` raises ValueError for a row whose label is unusable. Labels in
    `corpus.drop` are left out without a complaint; any other unknown label is a problem.
    """
    info = CORPUS_INFO[name]
    lab = root / "labels.csv"
    if not lab.is_file():
        raise DatasetError(f"{info.title} folder '{root}' has no labels.csv.")
    columns, rows = _read_csv(lab)
    for need in ("file", "speaker", "emotion", *([info.subset] if info.subset else [])):
        if need not in columns:
            raise DatasetError(f"Label file '{lab}' has no '{need}' column.")
    emotions = info.emotions or tuple(sorted({r["emotion"] for r in rows} - set(info.drop) - {""}))
    group = {s: "+".join(link) for link in info.linked for s in link}
    ds = Dataset(info.name, emotions, [], categorical=True)
    E = len(emotions)
    for row in rows:
        path = root / row["file"]
        if row["emotion"] in info.drop:
            continue
        if row["emotion"] not in emotions:
            ds.problems.append((str(path), f"unknown emotion '{row['emotion']}'"))
            continue
        if not path.is_file():
            ds.problems.append((str(path), "audio file is missing"))
            continue
        try:
            r = 1.0 if share_of_intended is None else share_of_intended(row)
        except ValueError as e:
            ds.problems.append((str(path), str(e)))
            continue
        k = emotions.index(row["emotion"])
        rest = (1.0 - r) / (E - 1)
        targets = tuple(r if i == k else rest for i in range(E))
        spk = row["speaker"]
        subset = row[info.subset] if info.subset else ""
        ds.items.append(Item(path, targets, "train", spk, k, group=group.get(spk, ""), subset=subset))
    return ds


def load_emodb(root: Path, target: str = "recognition") -> Dataset:
    """Emo-DB as in ../shared/data/emodb: labels.csv with file, speaker, emotion, recognition_pct.

    Categorical labels become shares. `target = "recognition"` (default): the intended
    emotion gets the share of listeners who recognised it (recognition_pct / 100) and the
    rest is spread evenly over the other six emotions. `target = "onehot"`: 1 for the
    intended emotion, 0 elsewhere. Every file is put in split "train"; speaker-independent
    folds are made by the caller.
    """
    if target not in ("recognition", "onehot"):
        raise DatasetError(f"Emo-DB target '{target}' is not 'recognition' or 'onehot'.")

    def share(row: dict[str, str]) -> float:
        try:
            return float(row["recognition_pct"]) / 100
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"recognition_pct {row.get('recognition_pct')!r} is not a number") from None

    return load_corpus(root, "emodb", share if target == "recognition" else None)


def load_corpora(cfg: Config) -> Dataset:
    """The [dataset] corpora, merged into one Dataset when there are several, less the
    subsets [dataset] exclude names ("ased.emotion_specific")."""
    kinds, paths = cfg.dataset.kinds, cfg.dataset.paths
    if len(kinds) != len(paths):
        raise DatasetError(
            f"{len(kinds)} dataset kinds ({', '.join(kinds)}) need as many data paths, not {len(paths)}."
        )
    ds = merge([load_dataset(k, d, **dataset_options(cfg, k)) for k, d in zip(kinds, paths)])
    for name in cfg.dataset.exclude:
        keep = [it for it in ds.items if f"{it.corpus}.{it.subset}" != name]
        if len(keep) == len(ds.items):
            raise DatasetError(f"[dataset] exclude: '{name}' matches no file of the training data.")
        ds.items = keep
    return ds


def dataset_options(cfg: Config, kind: str) -> dict:
    if kind == "emodb":
        return {"target": cfg.dataset.target}
    if kind == "csv":
        return {"devel_fraction": cfg.dataset.devel_fraction, "seed": cfg.train.seed}
    return {}
