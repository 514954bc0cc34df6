"""The embedding detector's window rule: word-piece windows of a text and their MiniLM embeddings
(see :mod:`stormwatch.detect.embedding`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # the extra's modules are imported lazily
    from stormwatch.detect._minilm import MiniLM

WINDOW = 254
STRIDE = 192
MAX_WINDOWS = 16
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def _sigmoid(x: F64) -> F64:
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * x))
    return out


# -- windows --------------------------------------------------------------------------------------
def window_starts(n: int, window: int = WINDOW, stride: int = STRIDE, max_windows: int = MAX_WINDOWS) -> list[int]:
    """Start offsets (in word-pieces) of the windows scored for a text of ``n`` pieces.

    ``[0]`` when ``n <= window``; else every ``stride`` pieces with the last window ending at ``n``.
    When that is more than ``max_windows``, ``max_windows`` starts spread evenly from the first to
    the last window (both kept) are used instead.
    """
    if window < 1 or stride < 1 or max_windows < 1:
        raise ValueError("window, stride and max_windows must be >= 1")
    if stride > window:
        raise ValueError("stride must not exceed window (pieces would be skipped)")
    if n <= window:
        return [0]
    starts = list(range(0, n - window, stride))
    starts.append(n - window)
    if len(starts) <= max_windows:
        return starts
    if max_windows == 1:
        return [0]
    last = n - window
    return sorted({round(i * last / (max_windows - 1)) for i in range(max_windows)})


@dataclass(frozen=True)
class Windows:
    """Embeddings of the windows of a batch of texts."""

    emb: F32  # [n_units, dim]
    owner: I64  # text index of each unit (non-decreasing)
    start: I64  # first piece of each unit
    length: I64  # pieces in each unit
    n_pieces: I64  # pieces per text
    covered: I64  # pieces per text that fall in some scored window
    pieces: list[list[int]]  # word-piece ids per text

    @property
    def n_units(self) -> int:
        return int(self.emb.shape[0])


def encode_windows(
    model: MiniLM,
    texts: Sequence[str],
    window: int = WINDOW,
    stride: int = STRIDE,
    max_windows: int = MAX_WINDOWS,
) -> Windows:
    """Tokenise ``texts`` and embed each of their windows (see :func:`window_starts`)."""
    if window + 2 > model.max_len:
        raise ValueError(f"window {window} too long for the encoder ({model.max_len} positions)")
    embs: list[F32] = []
    owner: list[int] = []
    start: list[int] = []
    length: list[int] = []
    n_pieces: list[int] = []
    covered: list[int] = []
    all_pieces: list[list[int]] = []
    for i, text in enumerate(texts):
        pieces = model.tokenizer.encode(text)
        all_pieces.append(pieces)
        n = len(pieces)
        starts = window_starts(n, window, stride, max_windows)
        mask = np.zeros(max(n, 1), dtype=bool)
        for s in starts:
            seg = pieces[s : s + window]
            embs.append(model.embed_ids(model.wrap(seg)))
            owner.append(i)
            start.append(s)
            length.append(len(seg))
            mask[s : s + len(seg)] = True
        n_pieces.append(n)
        covered.append(int(mask[:n].sum()))
    dim = model.config.hidden_size
    return Windows(
        emb=np.stack(embs) if embs else np.zeros((0, dim), dtype=np.float32),
        owner=np.asarray(owner, dtype=np.int64),
        start=np.asarray(start, dtype=np.int64),
        length=np.asarray(length, dtype=np.int64),
        n_pieces=np.asarray(n_pieces, dtype=np.int64),
        covered=np.asarray(covered, dtype=np.int64),
        pieces=all_pieces,
    )
