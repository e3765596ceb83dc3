"""Evaluation protocols: which files train, pick the epoch, and test, fold by fold.

One concept for every corpus, chosen in `[evaluation] protocols`:

- "CORPUS:split"   the corpus's own train / devel / test split (ComParE, CSV manifests);
- "CORPUS:loso"    leave-one-speaker-out over CORPUS: each of its speakers is the test set
                   once, the next of its speakers the devel set, everything else trains
                   (other corpora included);
- "CORPUS:kfoldK"  the same with K groups of CORPUS's speakers instead of single speakers;
- "A>B"            trained on corpus A only (one group of A's speakers held out as devel),
                   tested on all of corpus B, over the emotions both corpora label;
- "A+B>C"          leave-one-corpus-out: trained on corpora A and B (a tenth of their
                   speakers as devel), tested on all of C, over the emotions C and at
                   least one of A and B label;
- "*>C"            the same, trained on every other corpus of the run;
- "A+B+C:kfoldK"   every listed corpus at once: each one's speakers in K groups, fold k
                   tests group k of every corpus (group k+1 picks the epoch, the rest
                   trains), and each corpus is scored on its own, as "A_kfoldK", ... The
                   same test sets as "A:kfoldK", "B:kfoldK", ... in K fits instead of K
                   per corpus (the other corpora train on (K-2)/K of their speakers).

The test corpus may name one of its subsets, "CORPUS.SUBSET" (the value of the corpus's
subset column, training/datasets.py): "ased.common:loso" tests each ASED speaker on the two
sentences spoken in every emotion only, "...>banglaser.main" tests on BanglaSER's main
part, "emodb+ased.common:kfold5" each on its own. Only the test part is restricted; the
rest of the corpus still trains.

Every protocol is speaker-independent: no speaker (nor any speaker linked to it by shared
recordings, Item.unit) is ever in two of a fold's parts. A fold's test files are scored
over `classes`, the emotions the test corpus (or subset; for "A>B" also the training
corpus) labels; arg-max and UAR are taken over those alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .datasets import Dataset, DatasetError

CROSS_DEVEL_FRACTION = 0.1  # "A>B": share of A's speakers held out for early stopping


@dataclass(frozen=True)
class Fold:
    train: np.ndarray  # item indices
    devel: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class Protocol:
    kind: str  # split | loso | kfold | cross | joint (kfold over several corpora at once)
    corpus: str  # the test corpus (cross: the training corpora; joint: the tested ones; joined by "+")
    target: str = ""  # cross: the test corpus
    k: int = 0  # kfold: groups
    subset: str = ""  # test only the test corpus's files of this subset

    @classmethod
    def parse(cls, text: str) -> Protocol:
        if m := re.fullmatch(r"(\*|[a-z0-9_]+(?:\+[a-z0-9_]+)*)>([a-z0-9_]+)(?:\.([a-z0-9_]+))?", text):
            if m[2] in m[1].split("+"):
                raise DatasetError(f"Evaluation protocol '{text}' tests on a corpus it trains on.")
            return cls("cross", m[1], m[2], subset=m[3] or "")
        part = r"[a-z0-9_]+(?:\.[a-z0-9_]+)?"
        if m := re.fullmatch(rf"({part}(?:\+{part})+):kfold(\d+)", text):
            parts = tuple(cls.parse(f"{c}:kfold{m[2]}") for c in m[1].split("+"))
            if len({q.corpus for q in parts}) < len(parts):
                raise DatasetError(f"Evaluation protocol '{text}' names a corpus twice.")
            return cls("joint", m[1], k=parts[0].k)
        m = re.fullmatch(r"([a-z0-9_]+)(?:\.([a-z0-9_]+))?:(split|loso|kfold(\d+))", text)
        if not m:
            raise DatasetError(
                f"Evaluation protocol '{text}' is not CORPUS:split, CORPUS:loso, CORPUS:kfoldK, A+B:kfoldK, A>B "
                "or A+B>C (a test corpus may be CORPUS.SUBSET)."
            )
        if m[4]:
            if int(m[4]) < 2:
                raise DatasetError(f"Evaluation protocol '{text}' needs at least 2 folds.")
            return cls("kfold", m[1], k=int(m[4]), subset=m[2] or "")
        return cls(m[3], m[1], subset=m[2] or "")

    @property
    def name(self) -> str:
        """The key in the bundle's metrics: emodb_loso, ravdess_kfold6, emodb_to_ravdess,
        ased_common_loso, ..."""
        sub = f"_{self.subset}" if self.subset else ""
        if self.kind == "joint":  # not a key: its parts are
            return f"{self.corpus.replace('.', '_').replace('+', '_')}_kfold{self.k}"
        if self.kind == "cross":
            return f"{'rest' if self.corpus == '*' else '_'.join(self.corpus.split('+'))}_to_{self.target}{sub}"
        return f"{self.corpus}{sub}_{self.kind}{self.k or ''}"

    @property
    def parts(self) -> tuple[Protocol, ...]:
        """What is scored: the protocol itself, or a joint one's "CORPUS:kfoldK" for each corpus."""
        if self.kind != "joint":
            return (self,)
        return tuple(Protocol.parse(f"{c}:kfold{self.k}") for c in self.corpus.split("+"))

    def tests(self, items: list) -> np.ndarray:
        """Per item, whether it is of this protocol's (or part's) test corpus and subset."""
        return np.array([self._tested(it) for it in items], bool)

    @property
    def test_corpus(self) -> str:
        return self.target or self.corpus

    def sources(self, ds: Dataset) -> list[str]:
        """The corpora a fold trains on ("cross"), or the one it is about."""
        if self.corpus == "*":
            return [c for c in ds.corpora() if c != self.target]
        return self.corpus.split("+")

    def classes(self, ds: Dataset) -> list[int]:
        """Indices into ds.emotions that this protocol scores."""
        labelled = set(ds.label_sets.get(self.test_corpus, ds.emotions))
        if self.subset:  # the emotions the subset's files portray
            labelled &= {ds.emotions[it.label] for it in ds.items if self._tested(it) and it.label is not None}
        if self.kind == "cross":
            labelled &= set().union(*(ds.label_sets[c] for c in self.sources(ds)))
        return [i for i, e in enumerate(ds.emotions) if e in labelled]

    def _tested(self, it) -> bool:
        return (it.corpus or "") == self.test_corpus and (not self.subset or it.subset == self.subset)

    def folds(self, ds: Dataset) -> list[Fold]:
        if self.kind == "joint":
            return self._joint_folds(ds)
        for c in {*self.sources(ds), self.test_corpus}:
            if c not in ds.corpora():
                raise DatasetError(
                    f"Evaluation protocol '{self.name}' names corpus '{c}', which is not among the "
                    f"training data ({', '.join(ds.corpora())})."
                )
        corpus = np.array([it.corpus or ds.name for it in ds.items])
        speaker = np.array([it.unit for it in ds.items])  # linked speakers count as one
        labelled = np.array([it.targets is not None for it in ds.items])
        tested = np.array([not self.subset or it.subset == self.subset for it in ds.items])
        if self.subset and not (tested & (corpus == self.test_corpus)).any():
            raise DatasetError(
                f"Evaluation protocol '{self.name}': corpus {self.test_corpus} has no '{self.subset}' files."
            )
        idx = np.arange(len(ds.items))
        if self.kind == "split":
            split = np.array([it.split for it in ds.items])
            own = (corpus == self.corpus) & labelled
            test = own & (split == "test")
            if not test.any():
                test = own & (split == "devel")
            train, devel = labelled & (split == "train"), own & (split == "devel")
            if not train.any() or not devel.any():
                raise DatasetError(f"Corpus {self.corpus} has no labelled train and devel split for '{self.name}'.")
            return [Fold(idx[train], idx[devel], idx[test])]
        if self.kind == "cross":
            own = np.isin(corpus, self.sources(ds)) & labelled
            devel = np.zeros(len(ds.items), bool)
            for c in self.sources(ds):  # a tenth of each training corpus's speakers picks the epoch
                groups = sorted(set(speaker[own & (corpus == c)]))
                if len(groups) < 2:
                    raise DatasetError(f"Corpus {c} needs at least 2 speakers for '{self.name}'.")
                n_devel = max(1, round(CROSS_DEVEL_FRACTION * len(groups)))
                devel |= own & np.isin(speaker, groups[-n_devel:])
            keep = set(self.classes(ds))
            test = (corpus == self.target) & labelled & tested & np.array([it.label in keep for it in ds.items])
            return [Fold(idx[own & ~devel], idx[devel], idx[test])]
        own = (corpus == self.corpus) & labelled
        groups = self._groups(speaker, own)
        folds = []
        for g, group in enumerate(groups):
            held = own & np.isin(speaker, group)  # the test speakers' files: none of them trains
            devel = own & np.isin(speaker, groups[(g + 1) % len(groups)])
            folds.append(Fold(idx[labelled & ~held & ~devel], idx[devel], idx[held & tested]))
        return [f for f in folds if len(f.test)]  # a speaker with no file of the subset tests nothing

    def _groups(self, speaker: np.ndarray, own: np.ndarray) -> list[list[str]]:
        """The test groups of this corpus's speakers (linked speakers as one)."""
        speakers = sorted(set(speaker[own]))
        groups = [[s] for s in speakers] if self.kind == "loso" else [speakers[g :: self.k] for g in range(self.k)]
        if len(groups) < 3 or not all(groups):
            raise DatasetError(
                f"'{self.name}' needs at least 3 speaker groups; corpus {self.corpus} has {len(speakers)} speakers."
            )
        return groups

    def _joint_folds(self, ds: Dataset) -> list[Fold]:
        """Fold g holds out group g (test) and group g+1 (devel) of every part's corpus."""
        for p in self.parts:
            p.folds(ds)  # the same checks as each part alone
        corpus = np.array([it.corpus or ds.name for it in ds.items])
        speaker = np.array([it.unit for it in ds.items])
        labelled = np.array([it.targets is not None for it in ds.items])
        held = np.zeros((self.k, len(ds.items)), bool)
        tested = np.zeros((self.k, len(ds.items)), bool)
        for p in self.parts:
            own = (corpus == p.corpus) & labelled
            for g, group in enumerate(p._groups(speaker, own)):
                held[g] |= own & np.isin(speaker, group)
                tested[g] |= own & np.isin(speaker, group) & p.tests(ds.items)
        idx = np.arange(len(ds.items))
        folds = []
        for g in range(self.k):
            devel = held[(g + 1) % self.k]
            folds.append(Fold(idx[labelled & ~held[g] & ~devel], idx[devel], idx[tested[g]]))
        return folds


def default_protocols(ds: Dataset) -> list[Protocol]:
    """Each corpus by its own split when it has one (train and devel), else leave-one-speaker-out."""
    out = []
    for c in ds.corpora():
        splits = {it.split for it in ds.items if (it.corpus or ds.name) == c and it.targets is not None}
        out.append(Protocol("split" if {"train", "devel"} <= splits else "loso", c))
    return out
