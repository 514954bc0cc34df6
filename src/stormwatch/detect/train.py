"""Training of the first-tier model (needs the ``train`` extra: scikit-learn).

Code: the recipe below runs in :func:`train_artifact` (here, with the artifact's identity, version
id and canonical bytes); its steps live in :mod:`~stormwatch.detect.train_params` (constants,
:class:`TrainParams`), :mod:`~stormwatch.detect.train_text` (steps 2-3),
:mod:`~stormwatch.detect.train_fit` (steps 4-6) and :mod:`~stormwatch.detect.calibrate` (step 7),
all re-exported here. ``finalize_artifact`` (held-out test metrics) is in
:mod:`stormwatch.detect.evaluate`, which uses training for LOSO: the dependency points one way.

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
from collections.abc import Sequence
from typing import Any

import orjson

from stormwatch.detect.calibrate import calibrate_and_threshold, fit_platt, threshold_for_fpr
from stormwatch.detect.data import Row
from stormwatch.detect.model import FORMAT
from stormwatch.detect.train_fit import (
    cross_fitted_margins,
    design_matrix,
    fit_core,
    fit_logistic,
    quantize,
    sample_weights,
)
from stormwatch.detect.train_params import (
    EVERYDAY_SOURCES,
    MODEL_SERIES,
    PRESET_TARGET_FPR,
    QUANT_DIGITS,
    REBUILD_SCORE_TOLERANCE,
    RECIPE_REVISION,
    Progress,
    TrainParams,
    _noop,
)
from stormwatch.detect.train_text import (
    augment,
    core_ask,
    find_boilerplate,
    prepare_tokens,
    prepare_tokens_and_cores,
)

__all__ = [
    "EVERYDAY_SOURCES",
    "FORMAT",
    "MODEL_SERIES",
    "PRESET_TARGET_FPR",
    "QUANT_DIGITS",
    "REBUILD_SCORE_TOLERANCE",
    "RECIPE_REVISION",
    "TrainParams",
    "augment",
    "calibrate_and_threshold",
    "core_ask",
    "cross_fitted_margins",
    "design_matrix",
    "find_boilerplate",
    "fit_core",
    "fit_logistic",
    "fit_platt",
    "identity",
    "prepare_tokens",
    "prepare_tokens_and_cores",
    "quantize",
    "rows_digest",
    "sample_weights",
    "serialize",
    "threshold_for_fpr",
    "train_artifact",
    "version_id",
]


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
