"""First-tier training, fitting: the design matrix, cross-source feature selection, balancing weights,
bounded logistic fits and cross-fitted margins (recipe steps 4-6 in :mod:`stormwatch.detect.train`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import numpy.typing as npt

from stormwatch.detect.data import Row
from stormwatch.detect.features import FeatureSpec, featurize, tokens_of
from stormwatch.detect.model import FORMAT, encode_f32
from stormwatch.detect.taxonomy import HARD_NEGATIVE_SOURCES
from stormwatch.detect.train_params import (
    EVERYDAY_SOURCES,
    QUANT_DIGITS,
    FloatArray,
    Progress,
    TrainParams,
    _noop,
)
from stormwatch.detect.train_text import (
    augment,
    prepare_tokens_and_cores,
)
from stormwatch.vocab import LLMT_IDS

#: BLAS threads of each L-BFGS-B fit (``None``: the BLAS library's own default, the baseline of
#: ``benchmarks/bench_train.py``). The first tier does not depend on it beyond the rebuild tolerance.
FIT_BLAS_THREADS: int | None = 1


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
    from threadpoolctl import threadpool_limits

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
    # One BLAS thread: L-BFGS-B's vector updates are small BLAS calls, and OpenBLAS threading them
    # costs more than it gives (benchmarks/bench_train.py: `stormwatch train` 2.3x faster on 2 cores,
    # 4.2x less CPU; docs/model-card.md, Reproducibility). Fits run to convergence reach the same
    # minimiser either way; a looser stop (the topic gate's gtol 1e-6) lands on other bytes, as on
    # another BLAS kernel.
    with threadpool_limits(limits=FIT_BLAS_THREADS, user_api="blas"):
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
