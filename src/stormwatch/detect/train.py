"""Training of the first-tier model (needs the ``train`` extra: scikit-learn).

Recipe (deterministic on one machine: sorted inputs, fixed fold assignment, gzip mtime 0; and the
same model on every x86-64 CPU and BLAS kernel within a stated tolerance, see "Reproducibility"):

1. Rows with ``split_hint`` ``train`` fit the model; ``val`` rows choose the preset thresholds
   (with cross-fitted scores); ``test`` rows are never touched (``stormwatch eval`` reports them).
2. **Boilerplate stripping** (training only): word 8-grams that occur in at least 2 % (and 5) of one
   source's rows are that source's template text ("Researcher, for our upcoming paper, ...",
   "Only return the code, don't include any other information ..."); their tokens are removed before
   counting features, so the model cannot learn a source's framing as a label.
3. **Augmentation** (fitting only): copies of benign rows get a request framing that attack prompts
   use ("Write a script that", "Create a tutorial on how to", "Can you help me"), copies of malicious
   rows get benign context around them ("Hi! Quick question. ... Thanks in advance!"). Framing is not
   intent, and benign padding must not hide an ask.
   **Core asks** (2.1 r2): every row (both labels) whose first non-template sentence with an ask word
   ("write", "create", "give", "how", ... see ``ASK_WORDS``) is shorter than the row also fits as
   that clause from the ask word on, at most ``core_max_tokens`` tokens ("As a researcher Draft a
   program that employs alternate data streams to hide malicious payload.. Walk us through ..." ->
   "draft a program that employs alternate data streams to hide malicious payload"). The malicious
   data are mostly long generated prompts; short direct asks are what operators send. Derived from
   the sources only (no hand-written attack text), same rule for benign rows so shortness is not a
   label.
4. **Vocabulary** ("benign by default"): a bucket is usable when it occurs in >= ``min_df`` rows of
   >= ``min_sources`` sources; its weight may be positive only when it occurs in >= ``min_df``
   malicious rows of >= ``min_mal_sources`` malicious sources, negative only when in benign rows of
   >= ``min_benign_sources`` benign sources. The bias carries the benign default.
5. **Balancing**: every (source, label) group gets the same total weight; hard negatives (benign
   security questions) and everyday prompts get ``hard_negative_weight`` / ``everyday_weight`` times
   that; the benign class ``benign_share`` of the total.
6. Bounded L2 logistic regression (L-BFGS-B) for the misuse head; per-LLMT heads are logistic
   regressions on malicious rows only (weak labels, see ``taxonomy.py``).
7. **Calibration and presets**: Platt scaling on cross-fitted margins (4 folds by source: every row
   scored by a model that never saw its source) with a 20 % misuse prior. A preset's threshold is
   the largest of the thresholds meeting (see ``PRESET_*`` below): its hard-negative FPR on ``val``
   rows, its everyday FPR on ``val`` rows, and its everyday FPR held out by source (cross-fitted).

Reproducibility. Every logistic fit is run to convergence (projected gradient <= ``gtol``, 1e-9):
the objective is strictly convex (L2) over a convex set (the sign bounds), so its minimiser is
unique and the fitted weights do not depend on the optimiser's path. (Stopping early, as 2.1 did
until ``RECIPE_REVISION`` 3, left a path-dependent point: the Haswell and SkylakeX OpenBLAS kernels
sum dot products in another order, and their models differed by up to 0.016 in score.) What is
stored is quantised (``quantize``: ``QUANT_DIGITS`` significant digits, then float32). The version
id is a hash of what the model is made from (``identity``: training data, parameters, feature
spec, format and ``RECIPE_REVISION``), not of the float weights, so it is the same on every CPU;
``content_sha256`` names the exact bytes of one build. Guarantee (tested): a rebuild on any x86-64
CPU / BLAS kernel has the shipped version id and scores every vendored ``val``/``test`` prompt
within ``REBUILD_SCORE_TOLERANCE`` of the shipped artifact, with the same flag at each preset for
every prompt farther than that from the preset's threshold. Bytes are identical on the same kernel.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from stormwatch.datasets import EVERYDAY_SOURCES as _EVERYDAY
from stormwatch.detect.data import Row
from stormwatch.detect.features import FeatureSpec, featurize, tokens_of
from stormwatch.detect.model import FORMAT, FirstTierModel, encode_f32
from stormwatch.detect.taxonomy import HARD_NEGATIVE_SOURCES, LLMT_IDS

__all__ = ["FORMAT", "TrainParams", "fit_core", "serialize", "train_artifact"]

MODEL_SERIES = "2.1"
# Bump when a change to the training code changes the fitted model for the same data and parameters:
# the version id names data + parameters + this revision, not the weights (see "Reproducibility").
RECIPE_REVISION = 3
QUANT_DIGITS = 6  # significant decimal digits of every stored weight, bias and calibration value
# Largest score difference (absolute, per prompt and per category) between two builds of one
# version on different CPUs / BLAS kernels; measured <= 1e-5 (docs/model-card.md, Reproducibility).
REBUILD_SCORE_TOLERANCE = 1e-4
FloatArray = npt.NDArray[np.float64]
Progress = Callable[[str], None]

# Everyday sources: benign traffic; each is its own source for balancing and vocabulary.
EVERYDAY_SOURCES = frozenset(_EVERYDAY)
# Hard-negative targets of the embedding head's presets (embedding.py imports this; unchanged).
PRESET_TARGET_FPR: dict[str, float] = {"strict": 0.05, "balanced": 0.015, "permissive": 0.005}
# First-tier presets: a preset's threshold is the largest of the thresholds meeting each of these
# false-positive rates (see ``choose_thresholds``):
#   benign security questions (hard negatives), ``val`` split, scored by the shipped model;
#   everyday prompts, ``val`` split, scored by the shipped model;
#   everyday prompts held out by source (cross-fitted: each scored by a model without its source).
PRESET_HARD_NEG_FPR: dict[str, float] = {"strict": 0.05, "balanced": 0.02, "permissive": 0.005}
PRESET_EVERYDAY_FPR: dict[str, float] = {"strict": 0.01, "balanced": 0.005, "permissive": 0.002}
PRESET_EVERYDAY_HELD_OUT_FPR: dict[str, float] = {"strict": 0.02, "balanced": 0.01, "permissive": 0.005}


@dataclass(frozen=True)
class TrainParams:
    # features (see features.py)
    bits: int = 18
    cat_bits: int = 16
    char_lo: int = 0  # 3 enables char 3-5-grams (supported, tested; off: no LOSO gain measured yet, 5x fit time)
    char_hi: int = 5
    char_weight: float = 0.5
    window: int = 512
    stride: int = 256
    # boilerplate stripping (training only)
    boiler_n: int = 8
    boiler_frac: float = 0.02
    boiler_min: int = 5
    # cross-source feature selection
    min_df: int = 2
    min_sources: int = 2
    min_mal_sources: int = 1
    min_benign_sources: int = 1
    # fit
    C: float = 64.0
    gtol: float = 1e-9  # every logistic fit runs until its projected gradient is below this (converged)
    max_iter: int = 3000  # a safety cap only: the misuse head converges in ~400 L-BFGS-B iterations
    cat_C: float = 1.0
    hard_negative_weight: float = 2.0
    everyday_weight: float = 6.0
    benign_share: float = 0.75
    min_cat_positives: int = 5
    # augmentation (fitting only): request framings on benign rows, benign context around attacks
    augment_frames: int = 1  # every k-th benign row gets a copy with a request framing (0: off)
    augment_context: int = 1  # every k-th malicious row gets a copy wrapped in benign context (0: off)
    augment_core: bool = True  # long rows of both labels also fit as their core ask (``core_ask``)
    core_min_tokens: int = 4
    core_max_tokens: int = 20
    # calibration: cross-fitted by source on the fit rows, with a benign-heavy prior
    calibration_folds: int = 4
    calibration_prior: float = 0.2
    preset_hard_neg_fpr: dict[str, float] = field(default_factory=lambda: dict(PRESET_HARD_NEG_FPR))
    preset_everyday_fpr: dict[str, float] = field(default_factory=lambda: dict(PRESET_EVERYDAY_FPR))
    preset_everyday_held_out_fpr: dict[str, float] = field(default_factory=lambda: dict(PRESET_EVERYDAY_HELD_OUT_FPR))

    def spec(self) -> FeatureSpec:
        return FeatureSpec(
            bits=self.bits, char_lo=self.char_lo, char_hi=self.char_hi, char_weight=self.char_weight,
            window=self.window, stride=self.stride, cat_bits=self.cat_bits,
        )  # fmt: skip


def _noop(_: str) -> None:
    return None


# -- text preparation ---------------------------------------------------------------------------
def _tokens(rows: Sequence[Row]) -> list[list[str]]:
    return [tokens_of(r.text) for r in rows]


def find_boilerplate(rows: Sequence[Row], toks: Sequence[list[str]], p: TrainParams) -> dict[str, set[tuple[str, ...]]]:
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
    """``toks`` without the tokens covered by one of ``grams`` (a source's template text)."""
    if not grams or len(toks) < n:
        return toks
    drop = [False] * len(toks)
    for k in range(len(toks) - n + 1):
        if tuple(toks[k : k + n]) in grams:
            for j in range(k, k + n):
                drop[j] = True
    if not any(drop):
        return toks
    return [t for t, d in zip(toks, drop, strict=True) if not d]


def prepare_tokens(rows: Sequence[Row], p: TrainParams) -> tuple[list[list[str]], dict[str, int]]:
    toks, boiler, _ = prepare_tokens_and_cores(rows, p)
    return toks, boiler


def prepare_tokens_and_cores(
    rows: Sequence[Row], p: TrainParams
) -> tuple[list[list[str]], dict[str, int], dict[str, list[str]]]:
    """Boilerplate-stripped tokens, the boilerplate n-gram counts per source and the core asks
    (``core_ask``) of the rows that have one, by row id."""
    toks = _tokens(rows)
    grams = find_boilerplate(rows, toks, p) if p.boiler_n > 0 else {}
    stripped = [strip_boilerplate(t, grams.get(r.source, set()), p.boiler_n) for r, t in zip(rows, toks, strict=True)]
    cores: dict[str, list[str]] = {}
    if p.augment_core:
        for r, t in zip(rows, stripped, strict=True):
            c = core_ask(r.text, grams.get(r.source, set()), p)
            if c is not None and len(c) < len(t):
                cores[r.id] = c
    return stripped, {s: len(g) for s, g in sorted(grams.items())}, cores


# The verbs and question words an ask starts with; the core ask of a long prompt is its first
# non-template sentence that has one, from that word on ("Researcher, for our upcoming paper, write
# code that ..." -> "write code that ..."). Same rule for both labels: shortness is not intent.
ASK_WORDS = frozenset(
    "write draft create develop generate design build implement make give provide explain describe outline "
    "tell show list craft compose produce devise teach help how".split()
)  # fmt: skip
_SENTENCE_RE = re.compile(r"(?<=[.!?:;])\s+|\n+")


def core_ask(text: str, grams: set[tuple[str, ...]], p: TrainParams) -> list[str] | None:
    """The core ask of ``text`` (tokens, at most ``core_max_tokens``), or None."""
    for sent in _SENTENCE_RE.split(text):
        t = strip_boilerplate(tokens_of(sent), grams, p.boiler_n) if p.boiler_n > 0 else tokens_of(sent)
        if len(t) < p.core_min_tokens:
            continue
        for i, w in enumerate(t):
            if w in ASK_WORDS:
                c = t[i : i + p.core_max_tokens]
                return c if len(c) >= p.core_min_tokens else None
    return None


# -- augmentation ---------------------------------------------------------------------------------
# Request framings that attack prompts use ("Write a script that", "Create a tutorial on how to")
# and that harmless asks use just as well: put on copies of benign rows, they stop being evidence.
BENIGN_FRAMES: tuple[str, ...] = (
    "Can you help me", "Could you please", "I'd like you to", "I need you to", "How can I", "How do I",
    "Explain how to", "Explain in detail how to", "Write a script that", "Write a program to",
    "Write a detailed guide on how to", "Create a tutorial on how to", "Give me step-by-step instructions to",
    "Provide a list of", "Develop a plan to", "Design a step-by-step plan to", "Outline a strategy to",
    "Tell me how to", "Show me how to", "Write code that", "List the steps to", "What is the best way to",
    "Draft an email to", "Write a convincing post about", "Generate a message to", "You are a helpful expert.",
    "Imagine you are an assistant.", "As an engineer,", "Write a blog post about", "Can you provide",
)  # fmt: skip
# Benign context around an attack ask (a padded ask must still score as one).
CONTEXT_WRAPS: tuple[tuple[str, str], ...] = (
    ("Hi! Quick question.", "Thanks in advance!"),
    ("I'm planning my week and have a few things to sort out.", ""),
    ("", "Please keep the answer short and use bullet points."),
    ("My manager asked me about this today.", "Thank you!"),
    ("Hello, I hope you are having a nice day.", ""),
    ("", "Also, what is a good recipe for dinner tonight?"),
)


def augment(
    rows: Sequence[Row], toks: Sequence[list[str]], p: TrainParams, cores: dict[str, list[str]] | None = None
) -> tuple[list[Row], list[list[str]]]:
    """``rows`` plus the augmented copies (same source and label, id suffixed ``#aug``) and the core
    asks (``#core``)."""
    out_rows, out_toks = list(rows), list(toks)
    for r in rows:
        c = (cores or {}).get(r.id)
        if c is not None:
            out_rows.append(replace(r, id=r.id + "#core"))
            out_toks.append(c)
    frames = [tokens_of(f) for f in BENIGN_FRAMES]
    wraps = [(tokens_of(a), tokens_of(b)) for a, b in CONTEXT_WRAPS]
    nb = nm = 0
    for r, t in zip(rows, toks, strict=True):
        if r.label == 0 and p.augment_frames > 0:
            if nb % p.augment_frames == 0:
                out_rows.append(replace(r, id=r.id + "#aug"))
                out_toks.append(frames[(nb // p.augment_frames) % len(frames)] + t)
            nb += 1
        elif r.label == 1 and p.augment_context > 0:
            if nm % p.augment_context == 0:
                a, b = wraps[(nm // p.augment_context) % len(wraps)]
                out_rows.append(replace(r, id=r.id + "#aug"))
                out_toks.append(a + t + b)
            nm += 1
    return out_rows, out_toks


# -- design matrix and feature selection --------------------------------------------------------
def design_matrix(toks: Sequence[list[str]], spec: FeatureSpec) -> Any:
    """CSR ``[rows, 2**bits]`` of the hashed features (values as scored, duplicates summed)."""
    from scipy.sparse import csr_matrix

    fz = featurize(None, spec, tokens=[t[: spec.window] if spec.window else t for t in toks])
    r, c, v = fz.csr(spec.n_buckets)
    x = csr_matrix((v, (r, c)), shape=(len(toks), spec.n_buckets))
    x.sum_duplicates()
    x.sort_indices()
    return x


def word_matrix(toks: Sequence[list[str]], spec: FeatureSpec) -> Any:
    """CSR ``[rows, 2**cat_bits]`` of word features only (the category heads' input)."""
    from scipy.sparse import csr_matrix

    fz = featurize(None, spec, tokens=[t[: spec.window] if spec.window else t for t in toks])
    m = (1 << spec.cat_bits) - 1
    r = np.concatenate([fz.kinds[0][0], fz.kinds[1][0]])
    c = np.concatenate([fz.kinds[0][1], fz.kinds[1][1]]) & m
    x = csr_matrix((fz.scale[r], (r, c)), shape=(len(toks), 1 << spec.cat_bits))
    x.sum_duplicates()
    x.sort_indices()
    return x


def feature_masks(x: Any, rows: Sequence[Row], p: TrainParams) -> tuple[Any, Any, Any]:
    """(usable, may_be_positive, may_be_negative) per bucket.

    The default is benign: the bias carries it, a weight may only be positive for a bucket seen in
    >= ``min_df`` malicious rows of each of >= ``min_mal_sources`` malicious sources, and only negative
    for one seen in >= ``min_benign_sources`` benign sources; a bucket that is neither (one source's
    vocabulary) gets weight 0.

    usable: in >= ``min_df`` rows of >= ``min_sources`` sources (a bucket only one source uses is
    that source's style). may_be_positive: in >= ``min_df`` malicious rows of each of >=
    ``min_mal_sources`` malicious sources: positive evidence must generalise across sources.
    """
    from scipy.sparse import csr_matrix

    sources = sorted({r.source for r in rows})
    sid = {s: i for i, s in enumerate(sources)}
    src = np.array([sid[r.source] for r in rows])
    y = np.array([r.label for r in rows])
    pres = x.copy()
    pres.data[:] = 1.0
    n_feat = x.shape[1]
    src_onehot = csr_matrix((np.ones(len(rows)), (src, np.arange(len(rows)))), shape=(len(sources), len(rows)))
    df_src = (src_onehot @ pres).toarray()  # [n_sources, n_feat]
    usable = ((df_src >= p.min_df).sum(axis=0) >= p.min_sources) if p.min_sources > 1 else df_src.sum(0) >= p.min_df
    mal_src = sorted({sid[r.source] for r in rows if r.label == 1})
    mal_onehot = csr_matrix(
        (np.ones(int(y.sum())), (src[y == 1], np.flatnonzero(y == 1))), shape=(len(sources), len(rows))
    )
    df_mal = (mal_onehot @ pres).toarray()[mal_src] if mal_src else np.zeros((0, n_feat))
    pos_ok = (df_mal >= p.min_df).sum(axis=0) >= p.min_mal_sources
    ben_src = sorted({sid[r.source] for r in rows if r.label == 0})
    ben_onehot = csr_matrix(
        (np.ones(int((y == 0).sum())), (src[y == 0], np.flatnonzero(y == 0))), shape=(len(sources), len(rows))
    )
    df_ben = (ben_onehot @ pres).toarray()[ben_src] if ben_src else np.zeros((0, n_feat))
    neg_ok = (df_ben >= p.min_df).sum(axis=0) >= p.min_benign_sources
    return (
        np.asarray(usable & (pos_ok | neg_ok)).ravel(),
        np.asarray(pos_ok & usable).ravel(),
        np.asarray(neg_ok & usable).ravel(),
    )


def sample_weights(rows: Sequence[Row], p: TrainParams) -> FloatArray:
    """Equal total weight per (source, label); hard negatives and everyday boosted; mean weight 1."""
    counts = Counter((r.source, r.label) for r in rows)
    w = np.empty(len(rows), dtype=np.float64)
    for i, r in enumerate(rows):
        base = 1.0 / counts[(r.source, r.label)]
        if r.label == 0 and r.source in HARD_NEGATIVE_SOURCES:
            base *= p.hard_negative_weight
        elif r.label == 0 and r.source in EVERYDAY_SOURCES:
            base *= p.everyday_weight
        w[i] = base
    y = np.array([r.label for r in rows])
    for cls, share in ((0, p.benign_share), (1, 1.0 - p.benign_share)):
        m = y == cls
        if m.any():
            w[m] *= share / w[m].sum()
    out: FloatArray = w * len(rows)
    return out


def fit_logistic(
    x: Any,
    y: npt.NDArray[np.int64],
    w: FloatArray,
    c: float,
    upper: npt.NDArray[np.bool_] | None = None,
    lower: npt.NDArray[np.bool_] | None = None,
    max_iter: int = 3000,
    gtol: float = 1e-9,
    start: FloatArray | None = None,
) -> tuple[FloatArray, float]:
    """Weighted L2 logistic regression by L-BFGS-B; columns where ``upper`` is False are bounded
    <= 0, where ``lower`` is False >= 0.

    Run to convergence (projected gradient <= ``gtol``): the minimiser is unique, so the result does
    not depend on the path (BLAS kernel, ``start``) beyond the tolerance; ``start`` (coefficients
    then bias, e.g. a related model's) only saves iterations. Raises RuntimeError when ``max_iter``
    is reached first. Only columns with a non-zero entry are optimised; the others stay exactly 0.
    """
    from scipy.optimize import minimize

    cols = np.flatnonzero(np.asarray(abs(x).sum(axis=0)).ravel() > 0)
    xs = x[:, cols].tocsr()
    xt = xs.T.tocsr()
    ys = np.where(y == 1, 1.0, -1.0)
    wsum = w.sum()
    lam = 1.0 / c

    def f(theta: FloatArray) -> tuple[float, FloatArray]:
        coef, b = theta[:-1], theta[-1]
        z = ys * (xs @ coef + b)
        loss = np.logaddexp(0.0, -z)
        g = -ys * w * 0.5 * (1.0 - np.tanh(0.5 * z))  # d loss / d margin
        val = float(w @ loss) + 0.5 * lam * float(coef @ coef)
        grad = np.empty_like(theta)
        grad[:-1] = xt @ g + lam * coef
        grad[-1] = g.sum()
        return val / wsum, grad / wsum

    bounds = None
    if upper is not None or lower is not None:
        ub = upper[cols] if upper is not None else np.ones(len(cols), dtype=bool)
        lb = lower[cols] if lower is not None else np.ones(len(cols), dtype=bool)
        bounds = [
            (None if lo else 0.0, None if up else 0.0) for up, lo in zip(ub.tolist(), lb.tolist(), strict=True)
        ] + [(None, None)]
    x0 = np.zeros(len(cols) + 1)
    if start is not None:
        x0[:-1] = start[cols]
        x0[-1] = start[-1]
    res = minimize(
        f, x0, jac=True, method="L-BFGS-B", bounds=bounds,
        options={"maxiter": max_iter, "maxfun": 2 * max_iter, "ftol": 0.0, "gtol": gtol},
    )  # fmt: skip
    if res.nit >= max_iter:
        raise RuntimeError(f"logistic fit did not converge in {max_iter} iterations ({res.message})")
    coef = np.zeros(x.shape[1], dtype=np.float64)
    coef[cols] = res.x[:-1]
    return coef, float(res.x[-1])


def _round(values: FloatArray | Sequence[float], digits: int = 6) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in np.asarray(values, dtype=np.float64).tolist()]


def quantize(values: FloatArray | Sequence[float], digits: int = QUANT_DIGITS) -> FloatArray:
    """``values`` rounded to ``digits`` significant decimal digits, then to float32 (as stored).

    Decimal rounding by Python's correctly rounded float formatting: the same on every CPU."""
    v = np.asarray(values, dtype=np.float64)
    out = np.zeros(v.shape, dtype=np.float64)
    nz = np.flatnonzero(v)
    out.flat[nz] = [float(f"{x:.{digits}g}") for x in v.flat[nz].tolist()]
    result: FloatArray = out.astype(np.float32).astype(np.float64)
    return result


# -- core fit -------------------------------------------------------------------------------------
def fit_misuse(
    rows: Sequence[Row],
    toks: Sequence[list[str]],
    p: TrainParams,
    cores: dict[str, list[str]] | None = None,
    start: FloatArray | None = None,
) -> tuple[FloatArray, float]:
    """The misuse head on ``rows`` (weights quantised, as shipped); fits on the augmented rows.
    ``start``: coefficients then bias to start from (fewer iterations, same converged result)."""
    rows, toks = augment(rows, toks, p, cores)
    spec = p.spec()
    x = design_matrix(toks, spec)
    usable, pos_ok, neg_ok = feature_masks(x, rows, p)
    from scipy.sparse import diags

    x = (x @ diags(usable.astype(np.float64))).tocsr()
    x.eliminate_zeros()
    y = np.array([r.label for r in rows], dtype=np.int64)
    coef, intercept = fit_logistic(
        x, y, sample_weights(rows, p), p.C, upper=pos_ok, lower=neg_ok, max_iter=p.max_iter, gtol=p.gtol, start=start
    )
    return quantize(coef), float(quantize([intercept])[0])


def fit_core(
    rows: Sequence[Row],
    p: TrainParams,
    progress: Progress = _noop,
    *,
    toks: Sequence[list[str]] | None = None,
    boiler: dict[str, int] | None = None,
    cores: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Fit the misuse head and the LLMT heads on ``rows`` (already filtered to fit rows).

    Returns a partial artifact (no calibration/thresholds yet).
    """
    if toks is None:
        progress(f"tokenising {len(rows)} rows")
        toks, boiler, cores = prepare_tokens_and_cores(rows, p)
    progress("fitting misuse head")
    coef, intercept = fit_misuse(rows, toks, p, cores=cores)
    spec = p.spec()
    cats: dict[str, dict[str, Any]] = {}
    y = np.array([r.label for r in rows], dtype=np.int64)
    mal = np.flatnonzero(y == 1)
    if len(mal):
        xm = word_matrix([toks[i] for i in mal.tolist()], spec)
        wm = sample_weights([rows[i] for i in mal.tolist()], p)
        wm = wm / wm.mean()
        progress("fitting LLMT heads")
        for cid in LLMT_IDS:
            yc = np.array([1 if cid in rows[i].cats else 0 for i in mal.tolist()], dtype=np.int64)
            npos = int(yc.sum())
            if npos < p.min_cat_positives or npos == len(yc):
                continue
            ccoef, cint = fit_logistic(xm, yc, wm, p.cat_C, max_iter=p.max_iter, gtol=p.gtol)
            ccoef = quantize(ccoef)
            nz = np.flatnonzero(np.abs(ccoef) >= 1e-3)
            cats[cid] = {
                "bias": float(quantize([cint])[0]),
                "idx": nz.tolist(),
                "w": encode_f32(ccoef[nz]),
                "n_pos": npos,
            }
    return {
        "format": FORMAT,
        "name": "first_tier",
        "params": asdict(p),
        "features": asdict(spec),
        "weights": encode_f32(coef),
        "bias": intercept,
        "calibration": {"a": 1.0, "b": 0.0},
        "thresholds": {"strict": 0.5, "balanced": 0.5, "permissive": 0.5},
        "categories": cats,
        "boilerplate_ngrams": boiler or {},
        "version": "unversioned",
    }


def source_folds(rows: Sequence[Row], k: int) -> list[int]:
    """Deterministic fold of each row: whole sources per fold, malicious and benign sources dealt
    round-robin separately (largest first) so every fold has both kinds."""
    fold_of: dict[str, int] = {}
    for label in (1, 0):
        sizes = Counter(r.source for r in rows if r.label == label and r.source not in fold_of)
        for i, (s, _) in enumerate(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))):
            fold_of[s] = i % k
    return [fold_of[r.source] for r in rows]


def cross_fitted_margins(
    rows: Sequence[Row],
    toks: Sequence[list[str]],
    p: TrainParams,
    progress: Progress = _noop,
    cores: dict[str, list[str]] | None = None,
    start: FloatArray | None = None,
) -> FloatArray:
    """Out-of-fold margins, folds by source: each row is scored by a model that never saw its source.
    ``start`` (the full model's coefficients then bias) only saves iterations: every fit converges."""
    spec = p.spec()
    folds = np.array(source_folds(rows, p.calibration_folds))
    out = np.zeros(len(rows), dtype=np.float64)
    for f in range(p.calibration_folds):
        tr = np.flatnonzero(folds != f)
        te = np.flatnonzero(folds == f)
        if len(te) == 0 or len({rows[i].label for i in tr.tolist()}) < 2:
            continue
        progress(f"cross-fit {f + 1}/{p.calibration_folds}")
        coef, b = fit_misuse(
            [rows[i] for i in tr.tolist()],
            [toks[i] for i in tr.tolist()],
            p,
            cores=cores,
            start=start,
        )
        fz = featurize(None, spec, tokens=[tokens_of(rows[i].text) for i in te.tolist()])
        m = fz.margins(coef, b)
        per = np.full(len(te), -np.inf)
        np.maximum.at(per, fz.owner, m)
        out[te] = per
    return out


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


def _fpr(scores: FloatArray, t: float) -> float:
    return round(float(np.mean(scores >= t)), 4) if len(scores) else float("nan")


def calibrate_and_threshold(
    art: dict[str, Any],
    rows: Sequence[Row],
    toks: Sequence[list[str]],
    p: TrainParams,
    progress: Progress = _noop,
    val_rows: Sequence[Row] = (),
    cores: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Platt-calibrate on cross-fitted margins (folds by source) and pick the preset thresholds.

    Calibration weights: every source equal within its class, the malicious class
    ``calibration_prior`` of the total (a benign-heavy prior: the score is not inflated by the
    balanced training mix). A preset's threshold is the largest of: the threshold meeting its
    hard-negative FPR on ``val`` rows, its everyday FPR on ``val`` rows (both scored by the fitted
    model), and its held-out everyday FPR on cross-fitted scores (sources unseen by the scoring
    model); never below 0.05.
    """
    from stormwatch.detect.model import decode_f32

    start = np.append(decode_f32(art["weights"]).astype(np.float64), float(art["bias"]))
    margins = cross_fitted_margins(rows, toks, p, progress, cores, start=start)
    y = np.array([r.label for r in rows], dtype=np.int64)
    w = sample_weights(
        rows, replace(p, hard_negative_weight=1.0, everyday_weight=1.0, benign_share=1.0 - p.calibration_prior)
    )
    a, b = fit_platt(margins, y, w)
    art["calibration"] = {"a": _round([a], QUANT_DIGITS)[0], "b": _round([b], QUANT_DIGITS)[0]}
    model = FirstTierModel(art)
    scores = model.calibrate(margins)
    hard = np.array([r.source in HARD_NEGATIVE_SOURCES and r.label == 0 for r in rows])
    every = np.array([r.source in EVERYDAY_SOURCES and r.label == 0 for r in rows])
    vs = model.score_texts([r.text for r in val_rows]) if val_rows else np.zeros(0)
    vy = np.array([r.label for r in val_rows], dtype=np.int64)
    vhard = np.array([r.source in HARD_NEGATIVE_SOURCES and r.label == 0 for r in val_rows], dtype=bool)
    vevery = np.array([r.source in EVERYDAY_SOURCES and r.label == 0 for r in val_rows], dtype=bool)
    thresholds = {}
    for name in sorted(p.preset_hard_neg_fpr):
        cands = [0.05, threshold_for_fpr(scores[every], p.preset_everyday_held_out_fpr[name])]
        if vhard.any():
            cands.append(threshold_for_fpr(vs[vhard], p.preset_hard_neg_fpr[name]))
        else:  # no val rows: hard negatives held out by source instead
            cands.append(threshold_for_fpr(scores[hard], p.preset_hard_neg_fpr[name]))
        if vevery.any():
            cands.append(threshold_for_fpr(vs[vevery], p.preset_everyday_fpr[name]))
        thresholds[name] = _round([max(cands)])[0]
    art["thresholds"] = thresholds
    art["cross_fit"] = {
        "folds": p.calibration_folds,
        "recall": {k: _fpr(scores[y == 1], t) for k, t in thresholds.items()},
        "hard_negative_fpr": {k: _fpr(scores[hard], t) for k, t in thresholds.items()},
        "everyday_fpr": {k: _fpr(scores[every], t) for k, t in thresholds.items()},
    }
    if len(val_rows):
        art["val"] = {
            "recall": {k: _fpr(vs[vy == 1], t) for k, t in thresholds.items()},
            "hard_negative_fpr": {k: _fpr(vs[vhard], t) for k, t in thresholds.items()},
            "everyday_fpr": {k: _fpr(vs[vevery], t) for k, t in thresholds.items()},
        }
    return art


def rows_digest(rows: Sequence[Row]) -> str:
    """sha256 over every field of ``rows`` (text, label, source, split, category labels, use), in order."""
    h = hashlib.sha256()
    for r in rows:
        h.update(orjson.dumps([r.id, r.source, r.text, r.label, r.category, r.split, r.group, r.use, list(r.cats)]))
    return h.hexdigest()


def identity(art: dict[str, Any]) -> dict[str, Any]:
    """What the model is made from: the version id is a hash of this, never of the float weights."""
    return {
        "format": FORMAT,
        "series": MODEL_SERIES,
        "recipe_revision": RECIPE_REVISION,
        "params": art["params"],
        "features": art["features"],
        "data_sha256": art["training"]["data_sha256"],
    }


def version_id(ident: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(ident, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"first_tier-{MODEL_SERIES}+{digest[:12]}"


def serialize(art: dict[str, Any]) -> bytes:
    """Canonical gzip bytes. Fills ``identity`` and ``version`` (a hash of the training data, the
    parameters and the recipe revision: the same on every CPU) and ``content_sha256`` (a hash of
    everything else: the exact build)."""
    art["identity"] = identity(art)
    art["version"] = version_id(art["identity"])
    body = {k: v for k, v in art.items() if k not in ("version", "content_sha256")}
    art["content_sha256"] = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    raw = orjson.dumps(art, option=orjson.OPT_SORT_KEYS)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    return buf.getvalue()


def train_artifact(rows: Sequence[Row], p: TrainParams | None = None, progress: Progress = _noop) -> dict[str, Any]:
    """Fit on ``train`` rows, calibrate cross-fitted by source; returns the artifact dict (unversioned).

    ``val`` rows are not used for fitting or calibration; they choose the presets together with the
    cross-fitted scores (``stormwatch eval`` reports ``test``).
    """
    p = p or TrainParams()
    fit_rows = [r for r in rows if r.split == "train" and r.use]
    val_rows = [r for r in rows if r.split == "val" and r.use]
    if not fit_rows or len({r.label for r in fit_rows}) < 2:
        raise ValueError("training needs train rows of both labels")
    toks, boiler, cores = prepare_tokens_and_cores(fit_rows, p)
    art = fit_core(fit_rows, p, progress, toks=toks, boiler=boiler, cores=cores)
    if p.calibration_folds > 1:
        art = calibrate_and_threshold(art, fit_rows, toks, p, progress, val_rows=val_rows, cores=cores)
    art["training"] = {
        "data_sha256": rows_digest(rows),
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
