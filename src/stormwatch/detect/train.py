"""Training of the first-tier model (needs the ``train`` extra: scikit-learn).

Recipe (all deterministic: sorted inputs, fixed fold assignment, single-threaded BLAS, weights
rounded to 6 significant digits, gzip mtime 0):

1. Rows with ``split_hint`` ``train`` fit the model; ``val`` rows calibrate it and pick thresholds;
   ``test`` rows are never touched (``stormwatch eval`` reports them).
2. **Boilerplate stripping** (training only): word 8-grams that occur in at least 2 % (and 5) of one
   source's rows are that source's template text ("Researcher, for our upcoming paper, ...",
   "Only return the code, don't include any other information ..."); their tokens are removed before
   counting features, so the model cannot learn a source's framing as a label.
3. **Vocabulary**: words and word bigrams that occur in >= ``min_df`` rows of >= ``min_sources``
   different sources. A term only one source uses is that source's style, not intent.
4. **Balancing**: every (source, label) group gets the same total weight; hard negatives (benign
   security questions) get ``hard_negative_weight`` times that.
5. Logistic regression (L2) for the misuse head; Platt scaling on margins of val rows; per-LLMT heads
   are logistic regressions on malicious rows only (weak labels, see ``taxonomy.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from stormwatch.detect.data import Row
from stormwatch.detect.features import Vocabulary
from stormwatch.detect.model import FirstTierModel
from stormwatch.detect.taxonomy import HARD_NEGATIVE_SOURCES, LLMT_IDS
from stormwatch.detect.text import TOKEN_RE, normalize

__all__ = ["FORMAT", "TrainParams", "fit_core", "serialize", "train_artifact"]

FORMAT = "stormwatch.first_tier/1"
MODEL_SERIES = "1.0"
SENTINEL = "\x00"  # replaces stripped tokens: never in the vocabulary, breaks bigrams
FloatArray = npt.NDArray[np.float64]
Progress = Callable[[str], None]

# Everyday sources: benign traffic; each is its own source for balancing and vocabulary.
EVERYDAY_SOURCES = frozenset(
    {
        "arena_hard_v01",
        "banking77",
        "clinc150",
        "dolly15k_partial",
        "gpteacher",
        "gsm8k",
        "humaneval",
        "hwu64",
        "mgsm",
        "mmlu",
        "mt_bench",
        "nq_open",
        "oasst1_prompts",
        "snips",
        "vicuna_bench",
        "xsid",
    }
)
PRESET_TARGET_FPR: dict[str, float] = {"strict": 0.05, "balanced": 0.015, "permissive": 0.005}


@dataclass(frozen=True)
class TrainParams:
    window: int = 512
    stride: int = 256
    boiler_n: int = 8
    boiler_frac: float = 0.02
    boiler_min: int = 5
    min_df: int = 2
    min_sources: int = 2
    max_unigrams: int = 40000
    max_bigrams: int = 60000
    C: float = 1.0
    cat_C: float = 1.0
    hard_negative_weight: float = 3.0
    everyday_weight: float = 3.0
    benign_share: float = 0.75
    min_cat_positives: int = 5
    preset_target_fpr: dict[str, float] = field(default_factory=lambda: dict(PRESET_TARGET_FPR))


def _noop(_: str) -> None:
    return None


# -- text preparation ---------------------------------------------------------------------------
def _tokens(rows: Sequence[Row]) -> list[list[str]]:
    findall = TOKEN_RE.findall
    return [findall(normalize(r.text)) for r in rows]


def find_boilerplate(
    rows: Sequence[Row], toks: Sequence[list[str]], p: TrainParams
) -> dict[str, set[tuple[str, ...]]]:
    """Per source, the word n-grams frequent enough in it to be template text."""
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_source[r.source].append(i)
    n = p.boiler_n
    out: dict[str, set[tuple[str, ...]]] = {}
    for source, idx in sorted(by_source.items()):
        df: Counter[tuple[str, ...]] = Counter()
        for i in idx:
            t = toks[i]
            df.update({tuple(t[k : k + n]) for k in range(len(t) - n + 1)})
        cut = max(p.boiler_min, int(p.boiler_frac * len(idx)))
        grams = {g for g, c in df.items() if c >= cut}
        if grams:
            out[source] = grams
    return out


def strip_boilerplate(toks: list[str], grams: set[tuple[str, ...]], n: int) -> list[str]:
    if not grams or len(toks) < n:
        return toks
    drop = [False] * len(toks)
    for k in range(len(toks) - n + 1):
        if tuple(toks[k : k + n]) in grams:
            for j in range(k, k + n):
                drop[j] = True
    if not any(drop):
        return toks
    return [SENTINEL if d else t for t, d in zip(toks, drop, strict=True)]


def prepare_tokens(rows: Sequence[Row], p: TrainParams) -> tuple[list[list[str]], dict[str, int]]:
    toks = _tokens(rows)
    grams = find_boilerplate(rows, toks, p)
    stripped = [
        strip_boilerplate(t, grams.get(r.source, set()), p.boiler_n) for r, t in zip(rows, toks, strict=True)
    ]
    return stripped, {s: len(g) for s, g in sorted(grams.items())}


# -- vocabulary ---------------------------------------------------------------------------------
# Function words carry a source's register ("can you", "how do i", "is my"), not intent; a term
# made only of them, a single character or digits is left out of the vocabulary.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me might more
    most must my myself no nor not now of off on once only or other our ours ourselves out over own same
    shall she should so some such than that the their theirs them themselves then there these they this
    those through to too under until up very was we were what when where which while who whom why will
    with would you your yours yourself yourselves s t d ll m re ve don doesn didn isn aren wasn weren
    can't won wouldn shouldn couldn please tell give let make write show use using also may one two
    like get need want know""".split()
)


def _informative(word: str) -> bool:
    return len(word) > 1 and not word.isdigit() and word not in STOPWORDS


def build_vocabulary(rows: Sequence[Row], toks: Sequence[list[str]], p: TrainParams) -> Vocabulary:
    uni_df: Counter[str] = Counter()
    uni_src: dict[str, set[str]] = defaultdict(set)
    for r, t in zip(rows, toks, strict=True):
        for w in set(t):
            uni_df[w] += 1
            uni_src[w].add(r.source)
    uni_df.pop(SENTINEL, None)
    keep = [w for w, c in uni_df.items() if c >= p.min_df and len(uni_src[w]) >= p.min_sources]
    keep.sort(key=lambda w: (-uni_df[w], w))
    unigrams = sorted(keep[: p.max_unigrams])
    # stopwords stay in the id table (bigrams like "how to" need them) but get no unigram weight
    informative = {w for w in unigrams if _informative(w)}
    ids = {w: i for i, w in enumerate(unigrams)}
    bi_df: Counter[tuple[int, int]] = Counter()
    bi_src: dict[tuple[int, int], set[str]] = defaultdict(set)
    for r, t in zip(rows, toks, strict=True):
        pairs = {(ids[a], ids[b]) for a, b in itertools.pairwise(t) if a in ids and b in ids}
        for pair in pairs:
            bi_df[pair] += 1
            bi_src[pair].add(r.source)
    keep_bi = [
        b
        for b, c in bi_df.items()
        if c >= p.min_df
        and len(bi_src[b]) >= p.min_sources
        and (unigrams[b[0]] in informative or unigrams[b[1]] in informative)
    ]
    keep_bi.sort(key=lambda b: (-bi_df[b], b))
    bigrams = sorted(keep_bi[: p.max_bigrams])
    return Vocabulary(unigrams, bigrams)


def design_matrix(vocab: Vocabulary, toks: Sequence[list[str]]) -> Any:
    from scipy.sparse import csr_matrix

    fz = vocab.featurize(tokens=toks)
    vals = fz.scale[fz.unit]
    x = csr_matrix((vals, (fz.unit, fz.feat)), shape=(len(toks), vocab.n_features))
    x.sum_duplicates()
    x.sort_indices()
    return x


def sample_weights(rows: Sequence[Row], p: TrainParams) -> FloatArray:
    """Equal total weight per (source, label); hard negatives boosted; mean weight 1."""
    counts = Counter((r.source, r.label) for r in rows)
    w = np.empty(len(rows), dtype=np.float64)
    for i, r in enumerate(rows):
        base = 1.0 / counts[(r.source, r.label)]
        if r.label == 0 and r.source in HARD_NEGATIVE_SOURCES:
            base *= p.hard_negative_weight
        elif r.label == 0 and r.source in EVERYDAY_SOURCES:
            base *= p.everyday_weight
        w[i] = base
    # balance the classes' totals
    y = np.array([r.label for r in rows])
    for cls, share in ((0, p.benign_share), (1, 1.0 - p.benign_share)):
        m = y == cls
        if m.any():
            w[m] *= share / w[m].sum()
    out: FloatArray = w * len(rows)
    return out


def _fit_lr(x: Any, y: npt.NDArray[np.int64], w: FloatArray, c: float) -> tuple[FloatArray, float]:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        clf = LogisticRegression(C=c, solver="lbfgs", max_iter=2000, tol=1e-6)
        clf.fit(x, y, sample_weight=w)
    return np.asarray(clf.coef_[0], dtype=np.float64), float(clf.intercept_[0])


def _round(values: FloatArray | Sequence[float], digits: int = 6) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in np.asarray(values, dtype=np.float64).tolist()]


# -- core fit -------------------------------------------------------------------------------------
def fit_core(rows: Sequence[Row], p: TrainParams, progress: Progress = _noop) -> dict[str, Any]:
    """Fit vocabulary, misuse head and LLMT heads on ``rows`` (already filtered to fit rows).

    Returns a partial artifact (no calibration/thresholds yet).
    """
    progress(f"tokenising {len(rows)} rows")
    toks, boiler = prepare_tokens(rows, p)
    vocab = build_vocabulary(rows, toks, p)
    progress(f"vocabulary: {vocab.n_unigrams} words, {len(vocab.bigrams)} bigrams")
    x = design_matrix(vocab, toks)
    from scipy.sparse import diags

    keep = np.array([_informative(w) for w in vocab.unigrams] + [True] * len(vocab.bigrams), dtype=np.float64)
    x = (x @ diags(keep)).tocsr()  # stopword unigrams: all-zero columns, so weight exactly 0
    y = np.array([r.label for r in rows], dtype=np.int64)
    w = sample_weights(rows, p)
    progress("fitting misuse head")
    coef, intercept = _fit_lr(x, y, w, p.C)
    cats: dict[str, dict[str, Any]] = {}
    mal = np.flatnonzero(y == 1)
    if len(mal):
        xm = x[mal]
        wm = w[mal] / w[mal].mean()
        progress("fitting LLMT heads")
        for cid in LLMT_IDS:
            yc = np.array([1 if cid in rows[i].cats else 0 for i in mal.tolist()], dtype=np.int64)
            npos = int(yc.sum())
            if npos < p.min_cat_positives or npos == len(yc):
                continue
            ccoef, cint = _fit_lr(xm, yc, wm, p.cat_C)
            nz = np.flatnonzero(np.abs(ccoef) >= 1e-4)
            cats[cid] = {"bias": _round([cint])[0], "idx": nz.tolist(), "w": _round(ccoef[nz]), "n_pos": npos}
    return {
        "format": FORMAT,
        "name": "first_tier",
        "params": asdict(p),
        "unigrams": vocab.unigrams,
        "bigrams": [list(b) for b in vocab.bigrams],
        "weights": _round(coef),
        "bias": _round([intercept])[0],
        "calibration": {"a": 1.0, "b": 0.0},
        "thresholds": {"strict": 0.5, "balanced": 0.5, "permissive": 0.5},
        "categories": cats,
        "boilerplate_ngrams": boiler,
        "version": "unversioned",
    }


def fit_platt(margins: FloatArray, y: npt.NDArray[np.int64], w: FloatArray) -> tuple[float, float]:
    """Weighted 1-D logistic fit ``p = sigmoid(a * margin + b)``."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1e4, solver="lbfgs", max_iter=1000, tol=1e-8)
    clf.fit(margins.reshape(-1, 1), y, sample_weight=w)
    return float(clf.coef_[0, 0]), float(clf.intercept_[0])


def threshold_for_fpr(neg_scores: FloatArray, target: float) -> float:
    """Smallest threshold t with fraction(neg >= t) <= target."""
    if len(neg_scores) == 0:
        return 0.5
    s = np.sort(neg_scores)[::-1]
    k = int(np.floor(target * len(s)))  # number of negatives allowed at or above t
    t = float(s[k]) if k < len(s) else 0.0
    return float(np.nextafter(t, 1.0)) if t < 1.0 else 1.0


def calibrate_and_threshold(art: dict[str, Any], val: Sequence[Row], p: TrainParams) -> dict[str, Any]:
    """Platt-calibrate on ``val`` rows and pick preset thresholds on their hard negatives."""
    model = FirstTierModel(art)
    texts = [r.text for r in val]
    margins = model.margins_texts(texts)
    y = np.array([r.label for r in val], dtype=np.int64)
    w = sample_weights(val, TrainParams(hard_negative_weight=1.0, everyday_weight=1.0, benign_share=0.5))
    a, b = fit_platt(margins, y, w)
    art["calibration"] = {"a": _round([a])[0], "b": _round([b])[0]}
    model = FirstTierModel(art)
    scores = model.calibrate(margins)
    hard = np.array([r.source in HARD_NEGATIVE_SOURCES and r.label == 0 for r in val])
    art["thresholds"] = {
        name: _round([max(threshold_for_fpr(scores[hard], target), 0.05)])[0]
        for name, target in sorted(p.preset_target_fpr.items())
    }
    return art


def serialize(art: dict[str, Any]) -> bytes:
    """Canonical gzip bytes; fills ``version`` with a hash of the content."""
    body = dict(art)
    body["version"] = ""
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
    art["version"] = f"first_tier-{MODEL_SERIES}+{digest}"
    raw = orjson.dumps(art, option=orjson.OPT_SORT_KEYS)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    return buf.getvalue()


def train_artifact(
    rows: Sequence[Row], p: TrainParams | None = None, progress: Progress = _noop
) -> dict[str, Any]:
    """Fit on ``train`` rows, calibrate on ``val`` rows; returns the artifact dict (unversioned)."""
    p = p or TrainParams()
    fit_rows = [r for r in rows if r.split == "train" and r.use]
    val_rows = [r for r in rows if r.split == "val" and r.use]
    if not fit_rows or len({r.label for r in fit_rows}) < 2:
        raise ValueError("training needs train rows of both labels")
    art = fit_core(fit_rows, p, progress)
    if val_rows and len({r.label for r in val_rows}) == 2:
        progress(f"calibrating on {len(val_rows)} val rows")
        art = calibrate_and_threshold(art, val_rows, p)
    art["training"] = {
        "rows_fit": len(fit_rows),
        "rows_val": len(val_rows),
        "sources": {
            s: {"benign": c0, "malicious": c1}
            for s, c0, c1 in sorted(
                (
                    s,
                    sum(1 for r in fit_rows if r.source == s and r.label == 0),
                    sum(1 for r in fit_rows if r.source == s and r.label == 1),
                )
                for s in {r.source for r in fit_rows}
            )
        },
    }
    return art


def finalize_artifact(art: dict[str, Any], rows: Sequence[Row]) -> dict[str, Any]:
    """Add the held-out test metrics (incl. each preset's FPR) and provenance to the artifact."""
    from stormwatch.detect.evaluate import evaluate

    model = FirstTierModel(art)
    h = hashlib.sha256()
    for r in rows:
        h.update(orjson.dumps([r.id, r.source, r.text, r.label, r.split]))
    art["training"]["rows_sha256"] = h.hexdigest()
    art["taxonomy"] = {"ids": list(LLMT_IDS)}
    if any(r.split == "test" for r in rows):
        report = evaluate(model, rows, split="test", loso=False)
        o = report["overall"]
        art["metrics"] = {
            "split": "test",
            "auprc": round(o["auprc"], 4),
            "roc_auc": round(o["roc_auc"], 4),
            "recall_at_1pct_fpr": round(o["recall_at_1pct_fpr"], 4),
            "preset_fpr_benign_security": {k: round(v, 4) for k, v in o["hard_negative_fpr"].items()},
            "preset_fpr_everyday": {k: round(v, 4) for k, v in o["everyday_fpr"].items()},
        }
    return art
