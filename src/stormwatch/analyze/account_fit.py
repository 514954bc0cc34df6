"""Fit the account model's trees (``stormwatch analyze train``; the recipe is in :mod:`account_train`).

Two sets of LightGBM trees (the ``train`` extra): one on the accounts the rules put at review or
enforce, one on the candidates they leave at none; each calibrated by Platt scaling on out-of-fold
logits (folds over the training platforms), then converted to the plain-JSON form that
:mod:`account_model` evaluates with numpy (no LightGBM, no pickle at serving time).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import orjson

from stormwatch.analyze import params as P
from stormwatch.analyze.account_model import DATA_END_FEATURES, FORMAT, NAMES, AccountModel
from stormwatch.errors import InputError

__all__ = ["DROP", "DROP_WHY", "LGB_PARAMS", "MIN_CANDIDATE_ACTORS", "ROUNDS", "SERIES", "fit_model", "reliability"]

Arr = np.ndarray[Any, Any]


class Rows(Protocol):
    """What a training platform gives the fit (``account_train.Platform``)."""

    X: Arr  # [R, F] feature rows
    y: Arr  # [R] 1 = actor account
    levels: list[str]  # the rules' level of each row


SERIES = "1.0"
LGB_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 15,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
    "seed": 7,
    "verbose": -1,
}
ROUNDS = 250
#: features the shipped recipe leaves out, and why (the model card repeats it)
DROP_WHY = {
    "distinct_user_agents": "simulator artifact: every simulated actor account uses exactly one user agent",
}
DROP: tuple[str, ...] = tuple(DROP_WHY)


def reliability(prob: Arr, y: Arr, bins: int = 5) -> list[dict[str, float]]:
    """Predicted vs observed rate in equal-count bins of the probability."""
    order = np.argsort(prob, kind="stable")
    out = []
    for chunk in np.array_split(order, bins):
        if len(chunk):
            out.append({"n": len(chunk), "predicted": round(float(prob[chunk].mean()), 4),
                        "observed": round(float(y[chunk].mean()), 4)})  # fmt: skip
    return out


# --- fitting ------------------------------------------------------------------------------------


def _flatten(root: dict[str, Any]) -> dict[str, list[Any]]:
    """One LightGBM tree (nested JSON) as flat arrays, depth-first; a node's value is the
    count-weighted mean of its children's, so the path attributions sum to the leaf value."""
    t: dict[str, list[Any]] = {"feature": [], "threshold": [], "left": [], "right": [], "value": []}

    def walk(node: dict[str, Any]) -> tuple[int, float, float]:
        k = len(t["feature"])
        for key, empty in (("feature", -1), ("threshold", 0.0), ("left", -1), ("right", -1), ("value", 0.0)):
            t[key].append(empty)
        if "leaf_value" in node:
            t["value"][k] = float(node["leaf_value"])
            return k, t["value"][k], float(node.get("leaf_count", 1) or 1)
        if node.get("decision_type") != "<=":
            raise InputError(f"account model: unsupported split {node.get('decision_type')!r}")
        lk, lv, lc = walk(node["left_child"])
        rk, rv, rc = walk(node["right_child"])
        t["feature"][k], t["threshold"][k] = int(node["split_feature"]), float(node["threshold"])
        t["left"][k], t["right"][k] = lk, rk
        count = lc + rc
        t["value"][k] = (lv * lc + rv * rc) / count if count else 0.5 * (lv + rv)
        return k, t["value"][k], count

    walk(root)
    return t


def _booster_to_model(
    booster: Any, version: str, calibration: tuple[float, float], features: Sequence[str]
) -> AccountModel:
    """LightGBM's JSON dump -> flat arrays; a node's value is the count-weighted mean of its leaves."""
    dump = booster.dump_model()
    trees = [_flatten(info["tree_structure"]) for info in dump["tree_info"]]
    doc = {"format": FORMAT, "version": version, "features": list(features),
           "calibration": {"method": "platt", "a": calibration[0], "b": calibration[1]}, "trees": trees}  # fmt: skip
    return AccountModel.from_dict(doc)


def _lgb() -> Any:
    try:
        import lightgbm
    except ImportError as exc:
        raise InputError("training the account model needs LightGBM", hint="pip install 'stormwatch[train]'") from exc
    return lightgbm


def _fit_booster(X: Arr, y: Arr, rounds: int, features: Sequence[str]) -> Any:
    lgb = _lgb()
    ds = lgb.Dataset(X, label=y, feature_name=[n.replace(".", "_") for n in features], free_raw_data=True)
    return lgb.train(LGB_PARAMS, ds, num_boost_round=rounds)


def _platt(logit: Arr, y: Arr) -> tuple[float, float]:
    """Fit p = sigmoid(a * logit + b) by Newton's method on the log loss (with a tiny ridge)."""
    a, b = 1.0, 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(a * logit + b)))
        g = np.array([np.sum((p - y) * logit) + 1e-3 * (a - 1.0), np.sum(p - y)])
        w = p * (1 - p)
        h = np.array([[np.sum(w * logit * logit) + 1e-3, np.sum(w * logit)], [np.sum(w * logit), np.sum(w) + 1e-9]])
        step = np.linalg.solve(h, g)
        a, b = a - float(step[0]), b - float(step[1])
        if np.abs(step).max() < 1e-9:
            break
    return a, b


MIN_CANDIDATE_ACTORS = 5  # fewer actor accounts among the candidates at none: no candidate trees


def _fit_part(X: Arr, y: Arr, group: Arr, rounds: int, features: Sequence[str]) -> tuple[Any, float, float, Arr]:
    """Out-of-fold logits (folds over platforms) -> Platt calibration; the final trees on all rows."""
    oof = np.zeros(len(y))
    folds = np.unique(group)
    if len(folds) == 1:  # one training platform: no rows to hold out, the in-sample logits
        oof[:] = _fit_booster(X, y, rounds, features).predict(X, raw_score=True)
    else:
        for fold in folds:
            test = group == fold
            oof[test] = _fit_booster(X[~test], y[~test], rounds, features).predict(X[test], raw_score=True)
    a, b = _platt(oof, y.astype(np.float64))
    return _fit_booster(X, y, rounds, features), a, b, oof


def fit_model(
    train: Sequence[Rows], rounds: int = ROUNDS, folds: int = 5, drop: Sequence[str] = DROP
) -> tuple[AccountModel, dict[str, Any]]:
    """Two sets of trees, each fitted as :func:`_fit_part` does: one on the accounts the rules put at
    review or enforce, one on the candidates they left at none (when those hold at least
    :data:`MIN_CANDIDATE_ACTORS` actor accounts). ``drop``: features left out (:data:`DROP` by default)."""
    unknown = sorted(set(drop) - set(NAMES))
    if unknown:
        raise InputError(f"--drop {unknown[0]}: no such feature", hint=f"one of {', '.join(NAMES)}")
    features = [n for n in NAMES if n not in set(drop)]
    cols = [NAMES.index(n) for n in features]
    full = np.vstack([p.X for p in train])
    X = full[:, cols]
    y = np.concatenate([p.y for p in train])
    at_none = np.concatenate([np.array([lv == "none" for lv in p.levels], dtype=bool) for p in train])
    main = ~at_none
    if len(set(y[main].tolist())) < 2:
        raise InputError("the training platforms gave no actor accounts (or only actor accounts) at review")
    group = np.concatenate([np.full(len(p.y), k % max(1, min(folds, len(train)))) for k, p in enumerate(train)])
    booster, a, b, oof = _fit_part(X[main], y[main], group[main], rounds, features)
    cand = None
    cand_features = [f for f in features if f not in DATA_END_FEATURES]
    cand_cols = [features.index(f) for f in cand_features]
    if int(y[at_none].sum()) >= MIN_CANDIDATE_ACTORS and int(y[at_none].sum()) < int(at_none.sum()):
        cand = _fit_part(X[at_none][:, cand_cols], y[at_none], group[at_none], rounds, cand_features)

    def build(version: str) -> AccountModel:
        model = _booster_to_model(booster, version, (a, b), features)
        if cand is None:
            return model
        part = _booster_to_model(cand[0], version, (cand[1], cand[2]), cand_features)
        return dataclasses.replace(model, candidates=part)

    digest = orjson.dumps({**build("draft").to_dict(), "version": ""}, option=orjson.OPT_SORT_KEYS)
    model = build(f"account-{SERIES}+{hashlib.sha256(digest).hexdigest()[:12]}")
    check = float(np.abs(model.logit(full[main]) - booster.predict(X[main], raw_score=True)).max())
    if cand is not None and model.candidates is not None:
        diff = model.candidates.logit(full[at_none]) - cand[0].predict(X[at_none][:, cand_cols], raw_score=True)
        check = max(check, float(np.abs(diff).max()))

    def part_info(yy: Arr, aa: float, bb: float, oo: Arr) -> dict[str, Any]:
        return {
            "rows": len(yy),
            "actor_rows": int(yy.sum()),
            "calibration": {"method": "platt on out-of-fold logits", "a": round(aa, 6), "b": round(bb, 6)},
            "out_of_fold_reliability": reliability(1.0 / (1.0 + np.exp(-(aa * oo + bb))), yy),
        }

    info = {
        **part_info(y[main], a, b, oof),
        "rounds": rounds,
        "features_dropped": {n: DROP_WHY.get(n, "asked") for n in drop},
        "params": LGB_PARAMS,
        "candidates": (
            {
                **part_info(y[at_none], cand[1], cand[2], cand[3]),
                "min_top_score": P.MODEL_CANDIDATE_SCORE,
                "features_left_out": list(DATA_END_FEATURES),
            }
            if cand is not None
            else {
                "rows": int(at_none.sum()),
                "actor_rows": int(y[at_none].sum()),
                "trees": None,
                "why": f"fewer than {MIN_CANDIDATE_ACTORS} actor accounts among the candidates at none",
            }
        ),
        "numpy_vs_lightgbm_max_abs_diff": check,
    }
    return model, info
