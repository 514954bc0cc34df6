"""Hashed word and character n-gram features: the numpy reference path (the C extension mirrors it).

**Tokens.** A text is normalised by :func:`stormwatch.detect.text.normalize` (ASCII text: lower case
only; other text: NFKC, invisible characters removed, lower case) and split into tokens, the runs of
letters/digits in any script (``[^\\W_]+``). The C fast path (``_fast.c``) reads ASCII text directly
(lower-cases ``A-Z``, splits on every byte that is not ``[a-z0-9]``); non-ASCII text is first mapped
by :func:`prepare_text` onto its tokens joined by single spaces, which the same byte rule splits back
into the same tokens (a UTF-8 byte >= 0x80 counts as a letter). Both paths hash the UTF-8 bytes of the
same tokens, so their features are identical (``tests/test_detect_model.py`` checks it on a corpus
with unicode, bidi controls, full-width letters and binary junk).

**Hashes** (all arithmetic modulo 2**32): ``P(bytes) = sum b_j * M**(len-1-j)`` (Horner with the FNV
prime ``M``), finalised by MurmurHash3's ``fmix32``; the bucket is the low ``bits`` bits.

* word unigram ``t``: ``fmix32(P(t) ^ SEED_UNI)``
* word bigram ``a b``: ``fmix32((P(a) * GOLD + P(b)) ^ SEED_BI)``
* character ``n``-gram ``g`` of the padded word ``" " + t + " "`` (``char_lo <= n <= char_hi``):
  ``fmix32(P(g) ^ (SEED_CHAR + n))``

**Values.** Every occurrence counts ``1 / sqrt(max(tokens in the unit, 1))``; character n-grams are
further multiplied by ``char_weight``. A unit's margin is computed in a fixed order so that numpy and
C agree to the last bit: ``((s_uni + s_bi) + ((s_c[lo] + ...) + s_c[hi]) * char_weight) * scale + bias``.

**Windows.** A text longer than ``window`` tokens is cut into windows of ``window`` tokens every
``stride`` tokens (the last window ends at the last token); each window is a unit. Nothing is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import numpy.typing as npt

from stormwatch.detect.text import TOKEN_RE, normalize

__all__ = ["FeatureSpec", "Featurized", "featurize", "prepare_text", "split_windows", "tokens_of"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
U32 = npt.NDArray[np.uint32]

_NON_WORD_NON_ASCII = re.compile(r"[^\x00-\x7f\w]")
M = 0x01000193  # FNV-1a prime (odd, so invertible modulo 2**32)
M_INV = pow(M, -1, 2**32)
GOLD = 0x9E3779B1
SEED_UNI = 0x2545F491
SEED_BI = 0x68E31DA4
SEED_CHAR = 0x1B873593


@dataclass(frozen=True)
class FeatureSpec:
    bits: int = 18
    char_lo: int = 3
    char_hi: int = 5
    char_weight: float = 0.5
    window: int = 512
    stride: int = 256
    cat_bits: int = 16  # category heads: word uni/bigrams only, hashed into 2**cat_bits buckets

    @property
    def n_buckets(self) -> int:
        return 1 << self.bits


@dataclass(frozen=True)
class Featurized:
    """Sparse features of a batch, one row per unit (a text or a window of a long text).

    ``kinds`` holds, in summation order, ``(unit, bucket)`` arrays of: unigrams, bigrams, then the
    character n-grams for each ``n``.
    """

    n_units: int
    kinds: tuple[tuple[IntArray, IntArray], ...]
    scale: FloatArray  # 1/sqrt(max(n_tokens, 1)) per unit
    owner: IntArray  # text index of each unit (non-decreasing)
    start: IntArray  # first token offset of each unit in its text
    n_tokens: IntArray
    char_weight: float

    def margins(self, weights: FloatArray, bias: float) -> FloatArray:
        """Per unit ``sum(weights[f] * x_f) + bias`` in the fixed summation order (see module doc)."""
        n = self.n_units
        sums = [np.bincount(u, weights=weights[b], minlength=n) for u, b in self.kinds]
        word = sums[0] + sums[1]
        if len(sums) > 2:
            char = sums[2]
            for s in sums[3:]:
                char = char + s
            word = word + char * self.char_weight
        out: FloatArray = word * self.scale + bias
        return out

    def cat_margins(self, weights: FloatArray, bias: float, cat_bits: int) -> FloatArray:
        """Like :meth:`margins` for a category head: word features only, buckets ``& (2**cat_bits - 1)``."""
        n = self.n_units
        m = (1 << cat_bits) - 1
        s_uni = np.bincount(self.kinds[0][0], weights=weights[self.kinds[0][1] & m], minlength=n)
        s_bi = np.bincount(self.kinds[1][0], weights=weights[self.kinds[1][1] & m], minlength=n)
        out: FloatArray = (s_uni + s_bi) * self.scale + bias
        return out

    def csr(self, n_buckets: int) -> tuple[IntArray, IntArray, FloatArray]:
        """(rows, buckets, values) of every occurrence, for building a training matrix."""
        rows = np.concatenate([u for u, _ in self.kinds])
        cols = np.concatenate([b for _, b in self.kinds])
        vals = np.concatenate(
            [self.scale[u] * (1.0 if k < 2 else self.char_weight) for k, (u, _) in enumerate(self.kinds)]
        )
        return rows, cols, vals


def split_windows(n: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows covering ``n`` tokens (a single ``[0]`` when ``n <= window``)."""
    if window <= 0 or n <= window:
        return [0]
    starts = list(range(0, n - window, stride))
    starts.append(n - window)
    return starts


def prepare_text(text: str) -> str:
    """The string the C fast path reads: ASCII text unchanged, other text as its tokens joined by spaces."""
    if text.isascii():
        return text
    norm = normalize(text)
    if _NON_WORD_NON_ASCII.search(norm) is None:
        return norm  # every non-ASCII character is a word character: the byte rule splits it the same
    return " ".join(TOKEN_RE.findall(norm))


def tokens_of(text: str) -> list[str]:
    return TOKEN_RE.findall(normalize(text))


def _fmix32(h: U32) -> U32:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    out: U32 = h ^ (h >> np.uint32(16))
    return out


def _pow_table(base: int, n: int) -> U32:
    t = np.full(n, base, dtype=np.uint32)
    t[0] = 1
    out: U32 = np.cumprod(t, dtype=np.uint32)
    return out


def featurize(
    texts: Sequence[str] | None,
    spec: FeatureSpec,
    *,
    tokens: Sequence[list[str]] | None = None,
) -> Featurized:
    """Features of ``texts`` (or pre-tokenised ``tokens``), with the window rule of ``spec``."""
    if tokens is None:
        assert texts is not None
        tokens = [tokens_of(t) for t in texts]
    n_texts = len(tokens)
    units: Sequence[list[str]] = tokens
    if spec.window > 0 and any(len(t) > spec.window for t in tokens):
        unit_list: list[list[str]] = []
        owners: list[int] = []
        starts: list[int] = []
        for i, toks in enumerate(tokens):
            for s in split_windows(len(toks), spec.window, spec.stride):
                unit_list.append(toks[s : s + spec.window])
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
    scale = 1.0 / np.sqrt(np.maximum(lens, 1).astype(np.float64))
    total = int(lens.sum())
    mask = np.uint32(spec.n_buckets - 1)
    empty = np.zeros(0, dtype=np.int64)
    if total == 0:
        n_kinds = 2 + (spec.char_hi - spec.char_lo + 1 if spec.char_lo else 0)
        return Featurized(n_units, ((empty, empty),) * n_kinds, scale, owner, start, lens, spec.char_weight)
    buf = (" " + " ".join(chain.from_iterable(units)) + " ").encode("utf-8")
    b = np.frombuffer(buf, dtype=np.uint8).astype(np.uint32)
    nb = len(b)
    is_sp = b == 32
    spaces = np.flatnonzero(is_sp)  # total + 1 separators; token k spans (spaces[k], spaces[k+1])
    tok_s = spaces[:-1] + 1
    tok_e = spaces[1:]
    # prefix hash: Q[i] = sum_{j<i} b_j * M_INV**j ; P(s, e) = M**(e-1) * (Q[e] - Q[s])
    mpow = _pow_table(M, nb + 1)
    minv = _pow_table(M_INV, nb + 1)
    q = np.zeros(nb + 1, dtype=np.uint32)
    np.cumsum(b * minv[:nb], dtype=np.uint32, out=q[1:])
    p_tok: U32 = mpow[tok_e - 1] * (q[tok_e] - q[tok_s])
    unit_of_tok = np.repeat(np.arange(n_units, dtype=np.int64), lens)
    uni = (_fmix32(p_tok ^ np.uint32(SEED_UNI)) & mask).astype(np.int64)
    same = unit_of_tok[:-1] == unit_of_tok[1:]
    bi_h = p_tok[:-1][same] * np.uint32(GOLD) + p_tok[1:][same]
    bi = (_fmix32(bi_h ^ np.uint32(SEED_BI)) & mask).astype(np.int64)
    kinds: list[tuple[IntArray, IntArray]] = [(unit_of_tok, uni), (unit_of_tok[:-1][same], bi)]
    if spec.char_lo:
        cs = np.concatenate([[0], np.cumsum(is_sp)])  # cs[i] = spaces in b[:i]
        for n in range(spec.char_lo, spec.char_hi + 1):
            if nb < n:
                kinds.append((empty, empty))
                continue
            p = np.arange(nb - n + 1)
            ok = (cs[p + n - 1] - cs[p + 1]) == 0  # no separator strictly inside the n-gram
            p = p[ok]
            h = b[p].copy()
            for k in range(1, n):
                h = h * np.uint32(M) + b[p + k]
            tok = cs[p + 1] - 1  # the token whose padded form holds the n-gram
            kinds.append((unit_of_tok[tok], (_fmix32(h ^ np.uint32(SEED_CHAR + n)) & mask).astype(np.int64)))
    return Featurized(n_units, tuple(kinds), scale, owner, start, lens, spec.char_weight)


# -- scalar helpers (explanations; a third, loop-based reference for the tests) ---------------------
_MASK32 = 0xFFFFFFFF


def _fmix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    return h ^ (h >> 16)


def _poly(data: bytes) -> int:
    h = 0
    for c in data:
        h = (h * M + c) & _MASK32
    return h


def bucket_word(token: str, bits: int) -> int:
    return _fmix(_poly(token.encode("utf-8")) ^ SEED_UNI) & ((1 << bits) - 1)


def bucket_pair(a: str, b: str, bits: int) -> int:
    h = (_poly(a.encode("utf-8")) * GOLD + _poly(b.encode("utf-8"))) & _MASK32
    return _fmix(h ^ SEED_BI) & ((1 << bits) - 1)


def bucket_char_grams(token: str, spec: FeatureSpec) -> list[int]:
    """Buckets of the padded token's character n-grams, in summation order (n, then position)."""
    if not spec.char_lo:
        return []
    pad = b" " + token.encode("utf-8") + b" "
    mask = spec.n_buckets - 1
    return [
        _fmix(_poly(pad[p : p + n]) ^ (SEED_CHAR + n)) & mask
        for n in range(spec.char_lo, spec.char_hi + 1)
        for p in range(len(pad) - n + 1)
    ]
