"""Word unigram + bigram features with a fixed vocabulary, computed in numpy batches.

The scoring hot path is: one compiled-regex ``findall`` per text, one ``dict.get`` per token
(driven by ``map`` so the loop runs in C), then numpy for bigram lookup (``searchsorted`` in a
sorted key array) and per-text weight sums (``bincount``). There is no per-token Python bytecode.

Feature value of term *t* in a text with *n* tokens: ``count(t) / sqrt(max(n, 1))``. Texts longer
than ``window`` tokens are cut into windows of ``window`` tokens every ``stride`` tokens (the last
window ends at the last token), and each window is a separate unit; callers aggregate the units of a
text (the first-tier model takes the maximum). Nothing is ever dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np
import numpy.typing as npt

from stormwatch.detect.text import TOKEN_RE, normalize

__all__ = ["Featurized", "Vocabulary", "split_windows"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Featurized:
    """Sparse features of a batch, one row per unit (a text or a window of a long text)."""

    n_units: int
    unit: IntArray  # unit index of each feature occurrence
    feat: IntArray  # feature index of each occurrence
    scale: FloatArray  # 1/sqrt(n_tokens) per unit
    owner: IntArray  # text index of each unit (non-decreasing)
    start: IntArray  # first token offset of each unit in its text
    n_tokens: IntArray  # tokens per unit

    def sums(self, weights: FloatArray) -> FloatArray:
        """``sum(weights[f] * x_f)`` per unit for a weight vector over features."""
        return np.bincount(self.unit, weights=weights[self.feat], minlength=self.n_units) * self.scale


def split_windows(n: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows covering ``n`` tokens (a single ``[0]`` when ``n <= window``)."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window, stride))
    starts.append(n - window)
    return starts


class Vocabulary:
    """Unigram and bigram vocabulary; feature ``i < n_unigrams`` is a word, the rest bigrams."""

    def __init__(self, unigrams: Sequence[str], bigrams: Sequence[tuple[int, int]]) -> None:
        self.unigrams = list(unigrams)
        self.n_unigrams = len(self.unigrams)
        # ids are 1-based so that 0 means "not in vocabulary"
        self.ids = {w: i + 1 for i, w in enumerate(self.unigrams)}
        self._base = self.n_unigrams + 1
        keys = np.array([(a + 1) * self._base + (b + 1) for a, b in bigrams], dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        self.bigrams = [bigrams[i] for i in order]
        self.bigram_keys = keys[order]
        self.n_features = self.n_unigrams + len(self.bigrams)

    def feature_name(self, f: int) -> str:
        if f < self.n_unigrams:
            return self.unigrams[f]
        a, b = self.bigrams[f - self.n_unigrams]
        return f"{self.unigrams[a]} {self.unigrams[b]}"

    def featurize(
        self,
        texts: Sequence[str] | None = None,
        *,
        tokens: Sequence[list[str]] | None = None,
        window: int = 0,
        stride: int = 0,
    ) -> Featurized:
        """Features of ``texts`` (or of pre-tokenised ``tokens``); ``window=0`` means no windows."""
        if tokens is None:
            assert texts is not None
            findall = TOKEN_RE.findall
            tokens = [findall(normalize(t)) for t in texts]
        n_texts = len(tokens)
        units: Sequence[list[str]] = tokens
        owner: IntArray
        start: IntArray
        if window > 0 and any(len(t) > window for t in tokens):
            unit_list: list[list[str]] = []
            owners: list[int] = []
            starts: list[int] = []
            for i, toks in enumerate(tokens):
                for s in split_windows(len(toks), window, stride):
                    unit_list.append(toks[s : s + window])
                    owners.append(i)
                    starts.append(s)
            units = unit_list
            owner = np.array(owners, dtype=np.int64)
            start = np.array(starts, dtype=np.int64)
        else:
            owner = np.arange(n_texts, dtype=np.int64)
            start = np.zeros(n_texts, dtype=np.int64)
        n_units = len(units)
        lens = np.fromiter(map(len, units), dtype=np.int64, count=n_units)
        total = int(lens.sum())
        flat = chain.from_iterable(units)
        ids = np.fromiter(map(self.ids.get, flat, repeat(0)), dtype=np.int64, count=total)
        unit_of = np.repeat(np.arange(n_units, dtype=np.int64), lens)
        known = ids > 0
        feat_uni = ids[known] - 1
        unit_uni = unit_of[known]
        if total > 1 and len(self.bigram_keys):
            a = ids[:-1]
            b = ids[1:]
            ok = known[:-1] & known[1:] & (unit_of[:-1] == unit_of[1:])
            keys = a[ok] * self._base + b[ok]
            pos = np.searchsorted(self.bigram_keys, keys)
            pos[pos >= len(self.bigram_keys)] = 0
            hit = self.bigram_keys[pos] == keys
            feat = np.concatenate([feat_uni, pos[hit] + self.n_unigrams])
            unit = np.concatenate([unit_uni, unit_of[:-1][ok][hit]])
        else:
            feat, unit = feat_uni, unit_uni
        scale = 1.0 / np.sqrt(np.maximum(lens, 1).astype(np.float64))
        return Featurized(n_units, unit, feat, scale, owner, start, lens)
