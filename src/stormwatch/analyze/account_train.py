"""Train, calibrate and evaluate the account model (``stormwatch analyze train``).

1. Simulate ``runs`` platforms with randomised generator settings (``SimSettings.randomized``,
   seeds ``seed .. seed+runs-1``), ingest each into its own SQLite database, import its intel,
   score with the shipped first tier and analyze it with the rule-based risk (no account model).
2. The accounts at ``review`` or ``enforce`` give one row of
   :data:`~stormwatch.analyze.account_model.FEATURES` each; the label is ``is_actor`` in
   ``truth.json``.
3. LightGBM (the ``train`` extra) fits boosted trees; out-of-fold logits (folds = runs) fit the
   Platt calibration; the final model is fitted on every run (:mod:`account_fit`: one set of trees
   for review / enforce, one for the candidates at none).
4. Held out: other seeds with randomised settings, and each simulator preset (``SimSettings.preset``:
   families the randomised runs never draw). Reported per platform: enforce precision / recall,
   review-budget recall with the queue ordered by the model and by risk, ranking AP (level, then
   probability; risk for the baseline), false positives in the budget per persona, and reliability.

The artifact goes to ``OUT/account-<version>/`` (``model.json``, ``manifest.json``) with
``report.json`` next to it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stormwatch.analyze.account_fit import DROP, DROP_WHY, LGB_PARAMS, ROUNDS, SERIES, fit_model, reliability
from stormwatch.analyze.account_model import (
    NAMES,
    AccountModel,
    feature_matrix,
    model_root,
    reaches_review,
    save_model,
    scored_rows,
    set_default,
)
from stormwatch.errors import InputError

__all__ = [
    "DROP",
    "DROP_WHY",
    "LGB_PARAMS",
    "ROUNDS",
    "SERIES",
    "Platform",
    "average_precision",
    "build_platform",
    "fit_model",
    "platform_metrics",
    "platform_probability",
    "reliability",
    "train",
]

Arr = np.ndarray[Any, Any]
BENIGN_HARD = ("security_pro", "pentest_firm", "red_teamer", "ctf_student")


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


def platform_probability(model: AccountModel, p: Platform) -> Arr:
    """The model's probability for each of the platform's rows as ``analyze`` computes it: the first
    trees for the accounts at review or enforce, the candidate trees for those at none (0 when the
    model has none, which raises nothing)."""
    return model.probability_rows(p.X, np.array(p.levels) == "none") if len(p.X) else np.zeros(0)


def platform_metrics(p: Platform, prob: Arr | None, budget_share: float = 0.005) -> dict[str, Any]:
    """Enforce precision / recall, review-budget recall, AP and persona false positives in the budget,
    with the review queue ordered by ``prob`` (None: by risk). With ``prob``, a candidate at none whose
    probability reaches ``params.MODEL_REVIEW_PROBABILITY`` is at review, as ``analyze`` puts it."""
    score = prob if prob is not None else p.risk
    budget = math.ceil(budget_share * p.active - 1e-9)
    levels = [
        "review" if lv == "none" and prob is not None and reaches_review(prob[k]) else lv
        for k, lv in enumerate(p.levels)
    ]
    enf = [k for k, lv in enumerate(levels) if lv == "enforce"]
    rev = sorted((k for k, lv in enumerate(levels) if lv == "review"), key=lambda k: (-score[k], p.ids[k]))
    within = set(rev[:budget])
    tp = sum(int(p.y[k]) for k in enf)
    # beyond the budget but at or above the probability that raises a candidate: what the analyze summary
    # warns about (the budget holds fewer than the queue's likely actors); with prob None, nothing
    beyond = [k for k in rev[budget:] if reaches_review(prob[k])] if prob is not None else []
    actors_at_review = sum(int(p.y[k]) for k in rev)
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
        "actors_at_review": actors_at_review,
        # the most any ordering of this queue could reach: the enforced actors and as many of the
        # actors at review as the budget holds (budget_recall below it: the ranking's fault; at it:
        # the levels', i.e. the corroboration the rules need to enforce)
        "budget_recall_ceiling": round((tp + min(budget, actors_at_review)) / p.actors, 4) if p.actors else None,
        "likely_beyond_budget": len(beyond),
        "actors_likely_beyond_budget": sum(int(p.y[k]) for k in beyond),
        "review_ap": None if review_ap is None else round(review_ap, 4),
        "ap": None if ap is None else round(ap, 4),
        "fp_in_budget_by_persona": dict(sorted(fp_budget.items())),
        "exempt_enforced": 0,
    }


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
            prob = platform_probability(model, p)
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
