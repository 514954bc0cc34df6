"""Train, calibrate and evaluate the account model (``stormwatch analyze train``).

1. Simulate ``runs`` platforms with randomised generator settings (``SimSettings.randomized``,
   seeds ``seed .. seed+runs-1``), ingest each into its own SQLite database, import its intel,
   score with the shipped first tier and analyze it with the rule-based risk (no account model).
2. The accounts at ``review`` or ``enforce`` give one row of
   :data:`~stormwatch.analyze.account_model.FEATURES` each; the label is ``is_actor`` in
   ``truth.json``.
3. LightGBM (the ``train`` extra) fits boosted trees; out-of-fold logits (folds = runs) fit the
   Platt calibration; the final model is fitted on every run.
4. Held out: other seeds with randomised settings, and each simulator preset (``SimSettings.preset``:
   families the randomised runs never draw). Reported per platform: enforce precision / recall,
   review-budget recall with the queue ordered by the model and by risk, ranking AP (level, then
   probability; risk for the baseline), false positives in the budget per persona, and reliability.

The artifact goes to ``OUT/account-<version>/`` (``model.json``, ``manifest.json``) with
``report.json`` next to it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stormwatch.analyze import params as P
from stormwatch.analyze.account_model import (
    DATA_END_FEATURES,
    FORMAT,
    NAMES,
    AccountModel,
    feature_matrix,
    model_root,
    save_model,
    scored_rows,
    set_default,
)
from stormwatch.errors import InputError

__all__ = ["Platform", "average_precision", "build_platform", "fit_model", "platform_metrics", "train"]

Arr = np.ndarray[Any, Any]
SERIES = "1.0"
BENIGN_HARD = ("security_pro", "pentest_firm", "red_teamer", "ctf_student")
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


@dataclass(slots=True)
class Platform:
    """One simulated, analyzed platform: the scored rows and every account's outcome."""

    name: str
    X: Arr  # [R, F] accounts the model scores: at review or enforce, and the candidates at none
    y: Arr  # [R] 1 = actor account
    ids: list[str]
    levels: list[str]  # of the rows
    risk: Arr  # of the rows
    others: list[tuple[str, str, float, int]]  # every account not in rows: (id, level, risk, actor)
    personas: dict[str, str]
    active: int
    actors: int
    silent_actors: frozenset[str] = frozenset()  # actor accounts that never sent a request


def _sim_settings(kind: str, seed: int) -> Any:
    try:
        from stormwatch.simulate.settings import SimSettings
    except ImportError:  # an older simulator: its one generator
        return None
    if kind == "random":
        return SimSettings.randomized(seed)
    if kind == "default":
        return SimSettings()
    return SimSettings.preset(kind)


def presets() -> list[str]:
    try:
        from stormwatch.simulate.settings import PRESETS
    except ImportError:
        return []
    return list(PRESETS)


def build_platform(
    work: Path,
    name: str,
    seed: int,
    accounts: int,
    days: int = 30,
    setting: str = "random",
    *,
    reuse: bool = False,
    events: int | None = None,
    detectors: str = "first_tier",
    pools: Any = None,
) -> Platform:
    """Simulate (``setting``: ``random``, ``default`` or a preset name), ingest, score, analyze.

    ``reuse``: a platform already built in ``work/name`` (``platform.db`` and ``truth.json``) is only
    analyzed again (the features change, the simulated platform does not). ``events``: the target
    event count (``simulate --events``; default the generator's volume). ``detectors``: what scores
    the requests (``first_tier``, the default, or ``cascade``; ``analyze.scale`` maps other scores
    onto the first tier's scale). ``pools``: the simulator's prompt pools (default the vendored ones)."""
    from stormwatch.analyze.account_model import AccountModelInputs
    from stormwatch.analyze.judge import analyze_graph
    from stormwatch.analyze.stages import match_intel, model_version, update_features
    from stormwatch.detect.settings import DetectSettings
    from stormwatch.ingest.runner import ingest
    from stormwatch.score.scoring import score_new_events
    from stormwatch.simulate import simulate
    from stormwatch.store import open_store

    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    db = out / "platform.db"
    done = out / "built.json"
    key: list[Any] = [seed, accounts, days, setting] + ([] if detectors == "first_tier" else [detectors])
    if reuse and done.is_file() and orjson.loads(done.read_bytes()) == key:
        store = open_store(f"sqlite:///{db}")
        try:
            version = model_version(store, active=False)
            graph = store.analysis.load_graph()
        finally:
            store.close()
    else:
        done.unlink(missing_ok=True)
        settings = _sim_settings(setting, seed)
        kwargs: dict[str, Any] = {"settings": settings} if settings is not None else {}
        if events:
            kwargs["target_events"] = events
        if pools is not None:
            kwargs["pools"] = pools
        simulate(out, seed=seed, accounts=accounts, days=days, progress=False, **kwargs)
        if db.exists():
            db.unlink()
        store = open_store(f"sqlite:///{db}")
        try:
            ingest(store, [out / "events.jsonl"], accounts_paths=[out / "accounts.jsonl"], progress=False)
            store.commit()
            _import_intel(db, out / "intel.stix.json")
            score_new_events(store, progress=False, settings=DetectSettings(detectors=detectors))
            version = model_version(store, active=True)
            update_features(store, version, full=True, progress=False)
            match_intel(store)
            store.commit()
            graph = store.analysis.load_graph()
        finally:
            store.close()
        done.write_bytes(orjson.dumps(key))
    captured: list[tuple[list[dict[str, Any]], AccountModelInputs]] = []
    with capture(captured):
        result = analyze_graph(graph, version, account_model="off")
    truth = orjson.loads((out / "truth.json").read_bytes())["accounts"]
    judged, inputs = captured[0]
    rows = scored_rows(judged, inputs)  # what the model scores when it serves: review, enforce, candidates
    X = feature_matrix(rows, inputs) if rows else np.zeros((0, len(NAMES)))
    row_ids = {j["account_id"] for j in rows}
    actor = {a: int(bool(t.get("is_actor"))) for a, t in truth.items()}
    return Platform(
        name=name,
        X=X,
        y=np.array([actor.get(j["account_id"], 0) for j in rows], dtype=np.int64),
        ids=[j["account_id"] for j in rows],
        levels=[j["level"] for j in rows],
        risk=np.array([float(j["risk"]) for j in rows]),
        others=[
            (j.account_id, j.level, float(j.risk), actor.get(j.account_id, 0))
            for j in result.judgements
            if j.account_id not in row_ids
        ],
        personas={a: str(t.get("persona")) for a, t in truth.items()},
        active=int(result.stats.get("active_accounts", 0)),
        actors=sum(actor.values()),
        silent_actors=frozenset(a for a, y in actor.items() if y) - {s.account_id for s in graph.states if s.n_events},
    )


def _import_intel(db: Path, bundle: Path) -> None:
    """``stormwatch intel import`` in a child process (intel sits above analyze in the layers)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "stormwatch", "--db", f"sqlite:///{db}", "intel", "import", str(bundle)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if res.returncode != 0:
        raise InputError(f"{bundle}: intel import failed ({res.returncode}): {res.stderr.strip()[-500:]}")


class capture:  # a context manager
    """While active, :func:`account_model.score_accounts` hands its judged rows and inputs to ``sink``."""

    def __init__(self, sink: list[Any]) -> None:
        self.sink = sink

    def __enter__(self) -> None:
        from stormwatch.analyze import account_model

        self.token = account_model.CAPTURE.set(self.sink)

    def __exit__(self, *exc: object) -> None:
        from stormwatch.analyze import account_model

        account_model.CAPTURE.reset(self.token)


# --- metrics ------------------------------------------------------------------------------------


def average_precision(keys: Sequence[Any], labels: Sequence[int]) -> float | None:
    """AP of ``labels`` ordered by ``keys`` descending (ties: the order given); None without positives."""
    order = sorted(range(len(keys)), key=lambda i: keys[i], reverse=True)
    hits, total, ap = 0, sum(labels), 0.0
    if not total:
        return None
    for rank, i in enumerate(order, start=1):
        if labels[i]:
            hits += 1
            ap += hits / rank
    return ap / total


_LEVEL_RANK = {"enforce": 2, "review": 1, "none": 0}


def platform_metrics(p: Platform, prob: Arr | None, budget_share: float = 0.005) -> dict[str, Any]:
    """Enforce precision / recall, review-budget recall, AP and persona false positives in the budget,
    with the review queue ordered by ``prob`` (None: by risk). With ``prob``, a candidate at none whose
    probability reaches ``params.MODEL_REVIEW_PROBABILITY`` is at review, as ``analyze`` puts it."""
    score = prob if prob is not None else p.risk
    budget = math.ceil(budget_share * p.active - 1e-9)
    levels = [
        "review" if lv == "none" and prob is not None and prob[k] >= P.MODEL_REVIEW_PROBABILITY else lv
        for k, lv in enumerate(p.levels)
    ]
    enf = [k for k, lv in enumerate(levels) if lv == "enforce"]
    rev = sorted((k for k, lv in enumerate(levels) if lv == "review"), key=lambda k: (-score[k], p.ids[k]))
    within = set(rev[:budget])
    tp = sum(int(p.y[k]) for k in enf)
    caught = tp + sum(int(p.y[k]) for k in within)
    silent_caught = sum(int(p.y[k]) for k in [*enf, *within] if p.ids[k] in p.silent_actors)
    speaking = p.actors - len(p.silent_actors)
    # within a level the scored rows by their score (a candidate left at none above the accounts the
    # model does not score), the others by risk
    keys = [(_LEVEL_RANK[levels[k]], 1, float(score[k])) for k in range(len(p.ids))]
    keys += [(_LEVEL_RANK[lv], 0, r) for _a, lv, r, _y in p.others]
    labels = [int(v) for v in p.y] + [y for *_x, y in p.others]
    fp_budget: dict[str, int] = {}
    for k in [*enf, *within]:
        if not p.y[k]:
            persona = p.personas.get(p.ids[k], "?")
            fp_budget[persona] = fp_budget.get(persona, 0) + 1
    ap = average_precision(keys, labels)
    review_ap = average_precision([float(score[k]) for k in rev], [int(p.y[k]) for k in rev])
    return {
        "actors": p.actors,
        "active": p.active,
        "review": len(rev),
        "budget": budget,
        "enforce": len(enf),
        "enforce_precision": round(tp / len(enf), 4) if enf else None,
        "enforce_recall": round(tp / p.actors, 4) if p.actors else None,
        "budget_recall": round(caught / p.actors, 4) if p.actors else None,
        # actor accounts with at least one request: what request-based judgement can see at all
        "actors_with_requests": speaking,
        "budget_recall_with_requests": round((caught - silent_caught) / speaking, 4) if speaking else None,
        "actors_missed": p.actors - caught,
        "actors_at_none": sum(y for _a, lv, _r, y in p.others if lv == "none")
        + sum(int(p.y[k]) for k, lv in enumerate(levels) if lv == "none"),
        "raised_by_model": sum(a != b for a, b in zip(levels, p.levels, strict=True)),
        "actors_raised_by_model": sum(
            int(p.y[k]) for k, (a, b) in enumerate(zip(levels, p.levels, strict=True)) if a != b
        ),
        "actors_at_review": sum(int(p.y[k]) for k in rev),
        "review_ap": None if review_ap is None else round(review_ap, 4),
        "ap": None if ap is None else round(ap, 4),
        "fp_in_budget_by_persona": dict(sorted(fp_budget.items())),
        "exempt_enforced": 0,
    }


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
    for fold in np.unique(group):
        test = group == fold
        if len(np.unique(group)) == 1:
            oof[:] = _fit_booster(X, y, rounds, features).predict(X, raw_score=True)
            break
        oof[test] = _fit_booster(X[~test], y[~test], rounds, features).predict(X[test], raw_score=True)
    a, b = _platt(oof, y.astype(np.float64))
    return _fit_booster(X, y, rounds, features), a, b, oof


def fit_model(
    train: Sequence[Platform], rounds: int = ROUNDS, folds: int = 5, drop: Sequence[str] = DROP
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
    import hashlib

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


def train(
    out: Path,
    *,
    runs: int = 12,
    accounts: int = 3000,
    seed: int = 1000,
    held_out_runs: int = 3,
    held_out_presets: Sequence[str] | None = None,
    rounds: int = ROUNDS,
    work: Path | None = None,
    reuse: bool = False,
    drop: Sequence[str] = DROP,
    say: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """The whole recipe (module doc); returns the report (also written to ``OUT/VERSION.report.json``).
    ``reuse``: platforms already built in ``work`` are analyzed again, not simulated again."""
    import random
    import tempfile

    t0 = time.perf_counter()
    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="stormwatch-account-train-")
        work = Path(tmp.name)
    rng = random.Random(seed)
    try:
        plats: list[Platform] = []
        for k in range(runs):
            n, days = rng.randint(max(200, accounts // 2), accounts * 3 // 2), rng.randint(14, 40)
            say(f"train run {k + 1}/{runs}: seed {seed + k}, {n:,} accounts, {days} days")
            plats.append(build_platform(work, f"train-{k}", seed + k, n, days, "random", reuse=reuse))
        say("fitting (LightGBM, out-of-fold Platt calibration)")
        model, info = fit_model(plats, rounds, drop=drop)
        held: list[tuple[str, Platform]] = []
        for k in range(held_out_runs):
            s = seed + 10_000 + k
            say(f"held-out run {k + 1}/{held_out_runs}: seed {s} (randomised settings)")
            p = build_platform(work, f"heldout-{k}", s, accounts, 30, "random", reuse=reuse)
            held.append((f"random seed {s}", p))
        for name in presets() if held_out_presets is None else held_out_presets:
            s = seed + 20_000 + len(held)
            say(f"held-out preset {name}: seed {s}")
            held.append((f"preset {name}", build_platform(work, f"preset-{name}", s, accounts, 30, name, reuse=reuse)))
        results: dict[str, Any] = {}
        all_p, all_y = [], []
        for label, p in held:
            prob = model.probability_rows(p.X, np.array(p.levels) == "none") if len(p.X) else np.zeros(0)
            all_p.append(prob)
            all_y.append(p.y)
            results[label] = {"model": platform_metrics(p, prob), "risk": platform_metrics(p, None)}
        probs, ys = np.concatenate(all_p) if all_p else np.zeros(0), np.concatenate(all_y) if all_y else np.zeros(0)
        report = {
            "version": model.version,
            "seconds": round(time.perf_counter() - t0, 1),
            "data": {
                "simulator": "stormwatch simulate, SimSettings.randomized(seed) per run",
                "runs": runs,
                "seeds": [seed, seed + runs - 1],
                "accounts_per_run": [max(200, accounts // 2), accounts * 3 // 2],
                "days": [14, 40],
                "rows": "accounts the rule-based analysis puts at review or enforce (one set of trees) and the"
                " candidates it leaves at none (top request score >= params.MODEL_CANDIDATE_SCORE; their own"
                " trees); label truth.json is_actor",
                "scoring": "shipped first tier",
            },
            "training": info,
            "held_out": results,
            "held_out_reliability": reliability(probs, ys) if len(probs) else [],
            "command": f"stormwatch analyze train --runs {runs} --accounts {accounts} --seed {seed}"
            + ("" if tuple(drop) == DROP else "".join(f" --drop {d}" for d in drop) or " --drop none"),
        }
        folder = save_model(model, out / model.version, {"training": report["data"], "held_out": results,
                                                          "fit": info, "command": report["command"]})  # fmt: skip
        (out / f"{model.version}.report.json").write_bytes(
            orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        )
        report["folder"] = str(folder)
        if out.resolve() == model_root().resolve():  # trained into the package: the new default
            set_default(folder)
        return report
    finally:
        if tmp is not None:
            tmp.cleanup()
