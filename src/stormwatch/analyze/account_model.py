"""The learned account model: a calibrated probability that an account at ``review`` or ``enforce``
(or a candidate the rules left at ``none``) is an actor's, with per-feature contributions an analyst
can read.

* Features (:data:`FEATURES`): the distribution of the account's request scores (top scores, counts
  at or above several levels, share of traffic), refusals then rephrasing, escalating
  conversations, TTP breadth and the reconnaissance / tooling / evasion mix, the best fit to any
  actor profile (TTP mix, working hours, language), the client (IPs, user agents, API keys),
  intel and link evidence, the cluster around it, account age and churn, and the rule-based risk.
* Model: gradient-boosted trees trained with LightGBM (``stormwatch analyze train``), stored as
  plain JSON (no pickle) and evaluated here with numpy, so serving needs no extra package. The
  raw score is a logit; its per-feature contributions (path attribution: each split's change of
  the node value is credited to the split's feature) plus the bias sum to it exactly.
* Calibration: Platt scaling (``p = sigmoid(a * logit + b)``) fitted on out-of-fold logits of the
  training runs, stored with the model; strictly monotone, so the ranking is the model's.
* Artifact: ``data/model/account-<version>/`` holds ``model.json`` and ``manifest.json`` (features,
  training data, held-out results, the sha256 of ``model.json``, checked on every load).

``enforce`` still needs corroboration (``analyze.risk``): the model never enforces. The probability
orders the review queue (``judge._queue``) and is shown in ``explanation["account_model"]``. It also
looks beyond the rules: an account at ``none`` whose top request scores ``params.MODEL_CANDIDATE_SCORE``
or more is scored too (:func:`scored_rows`), and reaches ``review`` when its probability is
``params.MODEL_REVIEW_PROBABILITY`` or more (actors who ask little per account: one account per task,
quiet operators).
Choose the model with ``analyze --account-model VERSION`` / ``[analyze] account_model`` /
``STORMWATCH_ACCOUNT_MODEL`` (``off``: rank by risk); default the newest shipped artifact. Models
named in ``[analyze] account_model_shadow`` score in shadow (``explanation["account_model"]["shadow"]``)
and ``analyze eval`` reports each one's ranking AP next to the active one's.

Why this module is long: it is the whole serving side of the account model in one place (the feature
vector, the numpy tree evaluator that reproduces LightGBM exactly, calibration, per-feature
contributions, the artifact's load with its sha256 check); splitting it would separate the features
from the evaluator that must read them in the same order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stormwatch.analyze import params as P
from stormwatch.analyze.profiles import fit_all
from stormwatch.errors import InputError

__all__ = [
    "DATA_END_FEATURES",
    "ENV",
    "FEATURES",
    "FORMAT",
    "AccountModel",
    "AccountModelInputs",
    "feature_matrix",
    "load_model",
    "reaches_review",
    "resolve_model",
    "score_accounts",
    "scored_rows",
    "shipped_versions",
]

Arr = np.ndarray[Any, Any]
ENV = "STORMWATCH_ACCOUNT_MODEL"
FORMAT = "stormwatch-account-model/1"
MISSING = -1.0  # every feature that is unknown for an account (no events, no record) takes this value
MAX_MODEL_BYTES = 64 * 1024 * 1024
WALK_ROWS = 4096  # rows the tree evaluator walks at once (its work arrays are trees x rows)
OFF = frozenset({"off", "none", "risk"})
LEVELS_SCORED = ("review", "enforce")

RECON = ("LLMT-01", "LLMT-05", "LLMT-13")
TOOLING = ("LLMT-02", "LLMT-03", "LLMT-06", "LLMT-09")
EVASION = ("LLMT-07", "LLMT-08", "LLMT-10", "LLMT-12")
SOCIAL = ("LLMT-04",)

#: feature name -> what it measures (the model card lists them; the order is the model's columns)
FEATURES: dict[str, str] = {
    "content_score": "noisy-OR of the top-3 request scores (the risk's content component)",
    "top1": "highest request score",
    "top2": "second-highest request score",
    "top3": "third-highest request score",
    "top5_mean": "mean of the five highest request scores",
    "n_ge_0.3": "log1p(requests scoring >= 0.3)",
    "n_ge_0.5": "log1p(requests scoring >= 0.5)",
    "n_ge_0.7": "log1p(requests scoring >= 0.7)",
    "n_ge_0.9": "log1p(requests scoring >= 0.9)",
    "high_share": "share of the account's requests scoring >= 0.5",
    "events": "log1p(requests)",
    "active_days": "days with a request",
    "per_active_day": "log1p(requests per active day)",
    "burst_share": "share of requests within 5 s of the previous one",
    "weekend_share": "share of requests on weekends",
    "office_share": "share of requests inside the best-fitting local working day",
    "distinct_ips": "log1p(distinct request IPs)",
    "distinct_user_agents": "distinct user agents (client)",
    "distinct_api_keys": "distinct API keys (client)",
    "refusals": "log1p(refused requests)",
    "refusal_share": "share of requests refused",
    "rephrases": "log1p(rephrasings within 30 min after a refusal)",
    "rephrase_per_refusal": "rephrasings per refusal",
    "escalations": "log1p(conversations whose score climbs >= 0.35 to >= 0.5)",
    "ttp_breadth": "TTPs with at least one request's worth of mass",
    "ttp_mass": "log1p(score-weighted TTP mass)",
    "share_recon": "share of TTP mass in reconnaissance (LLMT-01, 05, 13)",
    "share_tooling": "share of TTP mass in tooling (LLMT-02, 03, 06, 09)",
    "share_evasion": "share of TTP mass in evasion and post-compromise (LLMT-07, 08, 10, 12)",
    "share_social": "share of TTP mass in social engineering (LLMT-04)",
    "chain_span": "stages of recon -> tooling -> evasion each holding >= 10% of the TTP mass",
    "lang_non_english": "share of requests in a language other than English",
    "best_fit": "best behaviour fit to any actor profile (TTP mix, hours, language; -1..1)",
    "best_fit_ttp": "TTP part of the best fit",
    "best_fit_hours": "working-hours part of the best fit",
    "best_fit_language": "language part of the best fit",
    "fit_margin": "lead of the best profile fit over the second",
    "attributed_fit": "own fit to the attributed actor's profile (-1 when none)",
    "attribution_confidence": "attribution confidence (0 when no actor is named)",
    "behaviour_only": "named from behaviour alone (no intel)",
    "direct_intel": "strongest own indicator hit",
    "link_intel": "intel reaching the account over strong links",
    "own_intel": "own non-IP indicator hit or hits from two indicators",
    "identity_link": "shares a device, card, phone or API key with linked accounts",
    "coordinated": "member of a coordinated cluster (risk rules)",
    "corroboration": "how many corroboration kinds the risk rules found (0-4)",
    "cohort": "member of a cohort of new short-lived accounts (analyze.cohorts; 0.5: one an organisation holds)",
    "cohort_size": "log1p(accounts of its cohort; 0 when none)",
    "cluster_size": "log1p(size of its cluster; 1 alone)",
    "cluster_malicious_share": "share of its cluster's members with content >= 0.8",
    "account_age_days": "days from sign-up to the end of the data (-1 unknown)",
    "signup_to_first_days": "days from sign-up to first seen (-1 unknown)",
    "active_span_days": "days between first and last seen",
    "idle_at_end_days": "days from last seen to the end of the data (churn)",
    "risk": "the rule-based risk",
    "behaviour": "the risk's behaviour component",
    "enforce": "the rules put it at enforce",
}
NAMES: tuple[str, ...] = tuple(FEATURES)
#: features that follow the end of the data (a global input): the candidate trees leave them out, so a
#: candidate's probability follows its own link component alone and incremental analysis need not
#: judge unchanged candidates again (analyze.incremental)
DATA_END_FEATURES = ("account_age_days", "idle_at_end_days")
#: set by analyze.account_train to collect the judged rows and inputs of one analysis
CAPTURE: ContextVar[list[Any] | None] = ContextVar("stormwatch_account_model_capture", default=None)


# --- features -----------------------------------------------------------------------------------


@dataclass(slots=True)
class AccountModelInputs:
    """What ``analyze_graph`` knows about every account, for :func:`feature_matrix`."""

    index: Mapping[str, int]
    feats: Sequence[Mapping[str, Any]]
    labels: Arr  # cluster label per account
    cluster_size: Arr  # per label
    att: Any  # analyze.attribution.Attribution
    coordinated: set[int]  # cluster labels
    identity: set[int]  # accounts with an identity link
    own_intel: set[int]
    facts: Mapping[str, Any]  # account_id -> AccountFacts
    link_input: Any  # analyze.linking.LinkInput (first/last use of each value)
    cohorts: Any = None  # analyze.cohorts.Cohorts (None: no cohorts)
    top: Arr | None = None  # each account's top request score (analyze.cohorts.top_scores; None: no candidates)
    _activity: tuple[Arr, Arr] | None = field(default=None, repr=False)
    _malicious: Arr | None = field(default=None, repr=False)

    def activity(self) -> tuple[Arr, Arr]:
        """(first seen, last seen) per account in epoch seconds (NaN unknown), from its observations."""
        if self._activity is None:
            n = len(self.feats)
            first, last = np.full(n, np.inf), np.full(n, -np.inf)
            li = self.link_input
            if len(li.acc):
                f = np.where(np.isnan(li.first), np.inf, li.first)
                la = np.where(np.isnan(li.last), -np.inf, li.last)
                np.minimum.at(first, li.acc, f)
                np.maximum.at(last, li.acc, la)
            first[np.isinf(first)] = np.nan
            last[np.isinf(last)] = np.nan
            self._activity = (first, last)
        return self._activity

    def malicious_share(self) -> Arr:
        if self._malicious is None:
            content = np.array([float(f.get("content", {}).get("score", 0.0)) if f else 0.0 for f in self.feats])
            bad = np.bincount(self.labels, weights=content >= 0.8, minlength=len(self.cluster_size))
            self._malicious = bad / np.maximum(self.cluster_size, 1)
        return self._malicious


def _epoch(value: str | None) -> float:
    if not value:
        return math.nan
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return math.nan


def _log1p(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return math.log1p(max(v, 0.0))


def _best_fit(f: Mapping[str, Any]) -> tuple[float, float, float, float, float]:
    """(score, ttp, hours, language, margin) of the best-fitting actor profile."""
    mass = f.get("ttp_mass", {}) or {}
    ttp = np.array([float(mass.get(c, 0.0)) for c in P.LLMT])
    hours = np.asarray(f.get("hours_utc") or [0] * 48, dtype=np.float64)
    n = int(f.get("volume", {}).get("events", 0))
    fits = sorted(fit_all(ttp, hours, dict(f.get("languages", {}) or {}), n), key=lambda b: -b.score)
    if not fits:
        return (math.nan,) * 5
    second = fits[1].score if len(fits) > 1 else -1.0
    b = fits[0]
    return b.score, b.ttp, b.hours, b.language, b.score - second


def _row(i: int, j: Mapping[str, Any], x: AccountModelInputs, data_end: float) -> list[float]:
    f = x.feats[i] or {}
    content = f.get("content", {}) or {}
    vol = f.get("volume", {}) or {}
    top = sorted((float(e.get("score", 0.0)) for e in content.get("top_events", [])), reverse=True) + [0.0] * 5
    at = content.get("at_or_above", {}) or {}
    n = float(vol.get("events", 0) or 0)
    refusals = float(f.get("refusals", 0) or 0)
    rephrases = float(f.get("rephrases", 0) or 0)
    mass = {k: float(v) for k, v in (f.get("ttp_mass", {}) or {}).items()}
    total = sum(mass.values())

    def share(group: tuple[str, ...]) -> float:
        return sum(mass.get(c, 0.0) for c in group) / total if total > 0 else 0.0

    stages = [share(RECON), share(TOOLING), share(EVASION)]
    langs = f.get("languages", {}) or {}
    fit = _best_fit(f) if f else (math.nan,) * 5
    ex = j.get("explanation", {}) or {}
    comp = ex.get("components", {}) or {}
    detail = ex.get("behaviour_detail", {}) or {}
    own = x.att.fit[i]
    label = int(x.labels[i])
    cohort = x.cohorts.member(i) if x.cohorts is not None else None
    first, last = x.activity()
    created = _epoch(getattr(x.facts.get(j["account_id"]), "created_at", None))
    day = 86400.0
    values = {
        "content_score": float(content.get("score", comp.get("content", 0.0))),
        "top1": top[0],
        "top2": top[1],
        "top3": top[2],
        "top5_mean": sum(top[:5]) / 5.0,
        "n_ge_0.3": _log1p(at.get("0.3", math.nan)),
        "n_ge_0.5": _log1p(at.get("0.5", content.get("high_events", math.nan))),
        "n_ge_0.7": _log1p(at.get("0.7", math.nan)),
        "n_ge_0.9": _log1p(at.get("0.9", math.nan)),
        "high_share": float(content.get("high_share", math.nan)),
        "events": _log1p(n),
        "active_days": float(vol.get("active_days", math.nan)),
        "per_active_day": _log1p(vol.get("per_active_day", math.nan)),
        "burst_share": float(vol.get("burst_share", math.nan)),
        "weekend_share": float(vol.get("weekend_share", math.nan)),
        "office_share": float(f.get("office_share", math.nan)),
        "distinct_ips": _log1p(vol.get("distinct_ips", math.nan)),
        "distinct_user_agents": float(vol.get("distinct_user_agents", math.nan)),
        "distinct_api_keys": float(vol.get("distinct_api_keys", math.nan)),
        "refusals": _log1p(refusals),
        "refusal_share": refusals / n if n else math.nan,
        "rephrases": _log1p(detail.get("rephrases_after_refusal", rephrases)),
        "rephrase_per_refusal": rephrases / refusals if refusals else 0.0,
        "escalations": _log1p(detail.get("escalations", f.get("escalations", 0))),
        "ttp_breadth": float(detail.get("ttp_breadth", 0)),
        "ttp_mass": _log1p(total),
        "share_recon": stages[0],
        "share_tooling": stages[1],
        "share_evasion": stages[2],
        "share_social": share(SOCIAL),
        "chain_span": float(sum(s >= 0.1 for s in stages)),
        "lang_non_english": sum(float(v) for k, v in langs.items() if k != "en") if langs else math.nan,
        "best_fit": fit[0],
        "best_fit_ttp": fit[1],
        "best_fit_hours": fit[2],
        "best_fit_language": fit[3],
        "fit_margin": fit[4],
        "attributed_fit": float(own.score) if own is not None else MISSING,
        "attribution_confidence": float(comp.get("attribution_confidence", 0.0)),
        "behaviour_only": float(bool(x.att.actor_ref[i]) and x.att.source[i] < 0),
        "direct_intel": float(x.att.direct[i]),
        "link_intel": float(comp.get("links", 0.0)),
        "own_intel": float(i in x.own_intel),
        "identity_link": float(i in x.identity),
        "coordinated": float(label in x.coordinated),
        "cohort": 0.0 if cohort is None else 0.5 if cohort.held else 1.0,
        "cohort_size": math.log1p(len(cohort.members)) if cohort is not None else 0.0,
        "corroboration": float(len(ex.get("corroboration", []) or [])),
        "cluster_size": _log1p(x.cluster_size[label]),
        "cluster_malicious_share": float(x.malicious_share()[label]),
        "account_age_days": (data_end - created) / day,
        "signup_to_first_days": (first[i] - created) / day,
        "active_span_days": (last[i] - first[i]) / day,
        "idle_at_end_days": (data_end - last[i]) / day,
        "risk": float(j.get("risk", 0.0)),
        "behaviour": float(comp.get("behaviour", 0.0)),
        "enforce": float(j.get("level") == "enforce"),
    }
    return [values[k] for k in NAMES]


def feature_matrix(judged: Sequence[Mapping[str, Any]], x: AccountModelInputs) -> Arr:
    """One row of :data:`FEATURES` per judged account (dicts with ``account_id``, ``risk``,
    ``level``, ``explanation``); unknown values are ``MISSING``."""
    _first, last = x.activity()
    data_end = float(np.nanmax(last)) if np.isfinite(last).any() else math.nan
    rows = [_row(x.index[j["account_id"]], j, x, data_end) for j in judged]
    out = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(NAMES))
    out[~np.isfinite(out)] = MISSING
    return out


# --- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountModel:
    """Boosted trees (flat arrays, one row per tree) + Platt calibration; see the module doc."""

    version: str
    features: tuple[str, ...]
    feature: Arr  # [T, M] split feature, -1 at a leaf
    threshold: Arr  # [T, M] go left when x <= threshold
    left: Arr  # [T, M]
    right: Arr  # [T, M]
    value: Arr  # [T, M] node value (leaf output; mean of its leaves' outputs inside)
    calibration: tuple[float, float]  # p = sigmoid(a * logit + b)
    folder: Path | None = None
    manifest: Mapping[str, Any] = field(default_factory=dict)
    #: trees of their own for the candidates the rules left at none (None: those are not scored)
    candidates: AccountModel | None = None

    @property
    def columns(self) -> list[int]:
        """The model's features as columns of :func:`feature_matrix` (a model may use a subset)."""
        return [NAMES.index(f) for f in self.features]

    @property
    def bias(self) -> float:
        return float(self.value[:, 0].sum())

    def _walk(self, X: Arr, contributions: bool) -> tuple[Arr, Arr | None]:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(NAMES):
            raise InputError(f"account model {self.version}: expected {len(NAMES)} feature columns, got {X.shape}")
        X = X[:, self.columns]
        t_n, n = self.feature.shape[0], X.shape[0]
        node = np.zeros((t_n, n), dtype=np.int64)
        trees = np.repeat(np.arange(t_n)[:, None], n, axis=1)
        rows = np.repeat(np.arange(n)[None, :], t_n, axis=0)
        contrib = np.zeros(n * len(self.features)) if contributions else None
        for _ in range(self.feature.shape[1]):
            f = self.feature[trees, node]
            inner = f >= 0
            if not inner.any():
                break
            x = X[rows[inner], f[inner]]
            go_left = x <= self.threshold[trees[inner], node[inner]]
            child = np.where(go_left, self.left[trees[inner], node[inner]], self.right[trees[inner], node[inner]])
            if contrib is not None:
                delta = self.value[trees[inner], child] - self.value[trees[inner], node[inner]]
                contrib += np.bincount(
                    rows[inner] * len(self.features) + f[inner], weights=delta, minlength=len(contrib)
                )
            node[inner] = child
        raw = self.value[trees, node].sum(axis=0)
        return raw, None if contrib is None else contrib.reshape(n, len(self.features))

    def _chunks(self, X: Arr, contributions: bool) -> tuple[Arr, Arr | None]:
        """:meth:`_walk` over at most ``WALK_ROWS`` rows at a time (its work arrays are trees x rows)."""
        if len(X) <= WALK_ROWS:
            return self._walk(X, contributions)
        parts = [self._walk(X[k : k + WALK_ROWS], contributions) for k in range(0, len(X), WALK_ROWS)]
        raw = np.concatenate([r for r, _c in parts])
        return raw, np.vstack([c for _r, c in parts if c is not None]) if contributions else None

    def logit(self, X: Arr) -> Arr:
        """The raw score (a logit) per row of a :func:`feature_matrix`."""
        return self._chunks(X, False)[0]

    def contributions(self, X: Arr) -> tuple[Arr, Arr]:
        """(logit, contributions [N, len(self.features)]); ``bias + contributions.sum(1) == logit``."""
        raw, contrib = self._chunks(X, True)
        assert contrib is not None
        return raw, contrib

    def calibrate(self, logit: Arr) -> Arr:
        a, b = self.calibration
        return 1.0 / (1.0 + np.exp(-(a * np.asarray(logit, dtype=np.float64) + b)))

    def probability(self, X: Arr) -> Arr:
        return self.calibrate(self.logit(X))

    def probability_rows(self, X: Arr, at_none: Arr) -> Arr:
        """Per row: these trees' probability for an account at review or enforce, the candidate
        trees' for one at none (0 when the model has none)."""
        at_none = np.asarray(at_none, dtype=bool)
        out = np.zeros(len(X))
        if (~at_none).any():
            out[~at_none] = self.probability(X[~at_none])
        if at_none.any() and self.candidates is not None:
            out[at_none] = self.candidates.probability(X[at_none])
        return out

    def to_dict(self) -> dict[str, Any]:
        trees = []
        for t in range(self.feature.shape[0]):
            m = int(np.count_nonzero(self.left[t] >= 0) + np.count_nonzero(self.feature[t] < 0))
            m = max(m, 1)
            trees.append(
                {
                    "feature": self.feature[t, :m].tolist(),
                    "threshold": self.threshold[t, :m].tolist(),
                    "left": self.left[t, :m].tolist(),
                    "right": self.right[t, :m].tolist(),
                    "value": self.value[t, :m].tolist(),
                }
            )
        return {
            "format": FORMAT,
            "version": self.version,
            "features": list(self.features),
            "calibration": {"method": "platt", "a": self.calibration[0], "b": self.calibration[1]},
            "trees": trees,
        } | ({"candidates": self.candidates.to_dict()} if self.candidates is not None else {})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "account model") -> AccountModel:
        if d.get("format") != FORMAT:
            raise InputError(f"{where}: format {d.get('format')!r}, expected {FORMAT!r}")
        try:
            features = tuple(str(f) for f in d["features"])
            trees = list(d["trees"])
            cal = d["calibration"]
            a, b = float(cal["a"]), float(cal["b"])
            size = max((len(t["feature"]) for t in trees), default=1)
            t_n = max(len(trees), 1)
            feat = np.full((t_n, size), -1, dtype=np.int64)
            thr = np.zeros((t_n, size))
            left = np.full((t_n, size), -1, dtype=np.int64)
            right = np.full((t_n, size), -1, dtype=np.int64)
            val = np.zeros((t_n, size))
            for k, t in enumerate(trees):
                m = len(t["feature"])
                if not all(len(t[key]) == m for key in ("threshold", "left", "right", "value")):
                    raise InputError(f"{where}: tree {k}: arrays of different lengths")
                feat[k, :m], thr[k, :m] = t["feature"], t["threshold"]
                left[k, :m], right[k, :m], val[k, :m] = t["left"], t["right"], t["value"]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: malformed model: {exc}") from exc
        unknown = sorted(set(features) - set(NAMES))
        if unknown:
            raise InputError(
                f"{where}: features this stormwatch does not compute: {', '.join(unknown[:5])}",
                hint="train a model with this version (`stormwatch analyze train`)",
            )
        inner = feat >= 0
        if (feat >= len(features)).any() or ((left < 0) & inner).any() or ((left >= size) | (right >= size)).any():
            raise InputError(f"{where}: a split names a feature or child that does not exist")
        if not (np.isfinite(thr).all() and np.isfinite(val).all() and math.isfinite(a) and math.isfinite(b)):
            raise InputError(f"{where}: non-finite threshold, value or calibration")
        cand = d.get("candidates")
        if cand is not None and (not isinstance(cand, Mapping) or "candidates" in cand):
            raise InputError(f"{where}: malformed candidate trees")
        part = None if cand is None else cls.from_dict(cand, where=f"{where} (candidate trees)")
        if part is not None and set(part.features) & set(DATA_END_FEATURES):
            raise InputError(f"{where}: candidate trees use {', '.join(DATA_END_FEATURES)} (they must not)")
        return cls(str(d["version"]), features, feat, thr, left, right, val, (a, b), candidates=part)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_model(model: AccountModel, folder: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``model.json`` and ``manifest.json`` (with its sha256) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = orjson.dumps(model.to_dict(), option=orjson.OPT_SORT_KEYS)
    (folder / "model.json").write_bytes(data + b"\n")
    doc = {**manifest, "version": model.version, "features": FEATURES_DOC(model.features),
           "model_sha256": _sha256(data + b"\n"), "format": FORMAT}  # fmt: skip
    (folder / "manifest.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n")
    return folder


def FEATURES_DOC(names: Iterable[str]) -> list[dict[str, str]]:
    return [{"name": n, "meaning": FEATURES.get(n, "")} for n in names]


def _read(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise InputError(f"{path}: larger than {limit:,} bytes")
    return data


def load_folder(folder: Path) -> AccountModel:
    """An account model folder: the manifest's sha256 must match ``model.json`` (tamper check)."""
    try:
        manifest = orjson.loads(_read(folder / "manifest.json", 1024 * 1024))
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{folder / 'manifest.json'}: not JSON: {exc}") from exc
    data = _read(folder / "model.json", MAX_MODEL_BYTES)
    want = manifest.get("model_sha256") if isinstance(manifest, dict) else None
    if want != _sha256(data):
        raise InputError(
            f"{folder / 'model.json'}: sha256 {_sha256(data)[:12]}... does not match the manifest's"
            f" {str(want)[:12]}...: the model file was changed after training",
            hint="train it again (`stormwatch analyze train`) or reinstall the package",
        )
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{folder / 'model.json'}: not JSON: {exc}") from exc
    model = AccountModel.from_dict(doc, where=str(folder / "model.json"))
    if model.version != manifest.get("version"):
        raise InputError(f"{folder}: model version {model.version} but manifest says {manifest.get('version')}")
    return dataclasses.replace(model, folder=folder, manifest=manifest)


def model_root() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "model"


def shipped_versions() -> list[str]:
    """Versions of the account models shipped in the package, oldest first."""
    root = model_root()
    if not root.is_dir():
        return []
    found = [p.name for p in root.iterdir() if p.name.startswith("account-") and (p / "manifest.json").is_file()]
    return sorted(found, key=lambda v: (_version_key(v), v))


DEFAULT_FILE = "account-model.json"  # {"default": VERSION} in the model folder: the shipped default


def default_version() -> str | None:
    """The shipped default: ``account-model.json``'s ``default`` when it names a shipped version,
    else the newest shipped version (by series, then name); None when none is shipped."""
    versions = shipped_versions()
    try:
        named = orjson.loads(_read(model_root() / DEFAULT_FILE, 4096)).get("default")
    except (InputError, orjson.JSONDecodeError, AttributeError):
        named = None
    if named in versions:
        return str(named)
    return versions[-1] if versions else None


def set_default(folder: Path) -> None:
    """Make the model in ``folder`` (inside the package's model folder) the shipped default."""
    (folder.parent / DEFAULT_FILE).write_bytes(orjson.dumps({"default": folder.name}) + b"\n")


def _version_key(v: str) -> tuple[int, ...]:
    head = v.removeprefix("account-").split("+", 1)[0]
    return tuple(int(x) for x in head.split(".") if x.isdigit())


@cache
def _load_cached(folder: str, mtime: float) -> AccountModel:
    return load_folder(Path(folder))


def load_model(name: str) -> AccountModel:
    """A model by shipped version (``account-1.0+abc``) or by folder path."""
    path = Path(name)
    folder = path if (path / "manifest.json").is_file() else model_root() / name
    if not (folder / "manifest.json").is_file():
        known = ", ".join(shipped_versions()) or "none shipped"
        raise InputError(f"no account model {name!r}", hint=f"a shipped version ({known}) or a model folder")
    return _load_cached(str(folder.resolve()), (folder / "model.json").stat().st_mtime)


def resolve_model(setting: str | None) -> AccountModel | None:
    """The model to rank with: ``setting`` (a version or folder; ``off`` = none), else
    ``$STORMWATCH_ACCOUNT_MODEL``, else the shipped default (:func:`default_version`); None when
    there is none."""
    choice = setting if setting is not None else os.environ.get(ENV) or None
    if choice is not None and choice.strip().lower() in OFF:
        return None
    if choice is None:
        choice = default_version()
        if choice is None:
            return None
    return load_model(choice)


# --- serving -------------------------------------------------------------------------------------


def _top(names: Sequence[str], values: Arr, contrib: Arr, k: int = 6) -> list[dict[str, Any]]:
    order = np.argsort(-np.abs(contrib), kind="stable")[:k]
    return [
        {"feature": names[c], "value": round(float(values[c]), 4), "contribution": round(float(contrib[c]), 4)}
        for c in order
        if abs(contrib[c]) >= 1e-4
    ]


def reaches_review(prob: Any) -> Any:
    """Whether a candidate's probability raises it to review: rounded as the analyst sees it (6
    places), at or above ``params.MODEL_REVIEW_PROBABILITY``; a float or an array of them."""
    return np.round(prob, 6) >= P.MODEL_REVIEW_PROBABILITY


def scored_rows(judged: Sequence[dict[str, Any]], inputs: AccountModelInputs) -> list[dict[str, Any]]:
    """The judged accounts the model scores: every one at review or enforce, and the candidates at
    none (top request score >= ``params.MODEL_CANDIDATE_SCORE``)."""
    top = inputs.top
    return [
        j
        for j in judged
        if j["level"] in LEVELS_SCORED
        or (j["level"] == "none" and top is not None and top[inputs.index[j["account_id"]]] >= P.MODEL_CANDIDATE_SCORE)
    ]


def score_accounts(
    judged: Sequence[dict[str, Any]],
    inputs: AccountModelInputs,
    model: AccountModel | None,
    shadow: Sequence[AccountModel] = (),
) -> dict[str, float]:
    """Score the accounts at review or enforce and the candidates at none (:func:`scored_rows`); write
    ``explanation["account_model"]`` on each and return account_id -> calibrated probability (empty
    when there is no model)."""
    sink = CAPTURE.get()
    if sink is not None:  # training (analyze.account_train) reads what the model would see
        sink.append((list(judged), inputs))
    if model is None and not shadow:
        return {}
    models = [m for m in (model, *shadow) if m is not None]
    at_none_too = any(m.candidates is not None for m in models)  # a model without candidate trees skips them
    scored = [j for j in scored_rows(judged, inputs) if at_none_too or j["level"] != "none"]
    if not scored:
        return {}
    X = feature_matrix(scored, inputs)
    at_none = np.array([j["level"] == "none" for j in scored], dtype=bool)
    out: dict[str, float] = {}
    shadows = [(m.version, m.probability_rows(X, at_none), m.candidates is not None) for m in shadow]
    parts: dict[int, tuple[AccountModel, float, Arr, float]] = {}  # row -> (trees, logit, contributions, p)
    for none, part in ((False, model), (True, model.candidates if model is not None else None)):
        rows = np.flatnonzero(at_none == none)
        if part is None or not len(rows):
            continue
        if none:  # contributions only for the candidates the probability raises (most stay at none)
            raw = part.logit(X[rows])
            prob = part.calibrate(raw)
            contrib = np.full((len(rows), len(part.features)), np.nan)
            up = np.flatnonzero(reaches_review(prob))
            if len(up):
                contrib[up] = part.contributions(X[rows[up]])[1]
        else:
            raw, contrib = part.contributions(X[rows])
            prob = part.calibrate(raw)
        parts.update({int(r): (part, float(raw[k]), contrib[k], float(prob[k])) for k, r in enumerate(rows)})
    for r, j in enumerate(scored):
        d: dict[str, Any] = {}
        if r in parts and model is not None:
            part, raw_r, contrib_r, prob_r = parts[r]
            p = round(prob_r, 6)  # the queue ranks by what the analyst sees
            out[j["account_id"]] = p
            d = {
                "version": model.version,
                "trees": "candidates at none" if at_none[r] else "review and enforce",
                "probability": p,
                "logit": round(raw_r, 4),
                "bias": round(part.bias, 4),
            }
            if not np.isnan(contrib_r).any():
                d["top_contributions"] = _top(part.features, X[r, part.columns], contrib_r)
        sh = {v: round(float(p_s[r]), 6) for v, p_s, has in shadows if has or not at_none[r]}
        if sh:
            d["shadow"] = sh
        if d:
            j["explanation"]["account_model"] = d
    return out
