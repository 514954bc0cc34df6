"""Benchmark: the account model on held-out simulated platforms (docs/model-card-account.md).

For each held-out setting (randomised settings on seeds the training never used, and every simulator
preset: families ``SimSettings.randomized`` never draws) a platform is simulated, ingested, scored
with the shipped first tier and analyzed; the review queue is then ordered by the account model and,
for comparison, by risk. Reported per setting: ranking AP (level, then probability / risk), enforce
precision and recall (the model never changes a level), review-budget recall (actor accounts
enforced or within the 0.5 % budget; also over the actor accounts that sent at least one request,
``budget_recall_with_requests``: the simulator opens actor accounts that never do; and its ceiling,
``budget_recall_ceiling``: the enforced actors plus as many actors at review as the budget holds, the
most any ordering of the queue could reach), actor accounts
missed, false positives in the budget per persona, and exempt accounts enforced (0: the simulator
grants no exemptions, the rules hold them).

    python benchmarks/bench_account_model.py [--model VERSION|DIR] [--accounts 3000] [--seeds 3]
        [--presets all|none|NAME,...] [--large 60000] [--workdir /tmp/bench_account_model]
        [--out benchmarks/results/account_model.json] [--reuse] [--also VERSION|DIR ...]

``--also``: other models (e.g. the previous one) measured on the same platforms in the same run,
under ``settings[<setting>]["also"][<version>]``, so a new model is compared with a baseline of the
same run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from stormwatch.analyze.account_model import resolve_model
from stormwatch.analyze.account_train import (
    build_platform,
    platform_metrics,
    platform_probability,
    presets,
    reliability,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="version or folder (default: the newest shipped)")
    ap.add_argument("--accounts", type=int, default=3000)
    ap.add_argument("--seeds", type=int, default=3, help="held-out randomised platforms")
    ap.add_argument("--first-seed", type=int, default=50_000)
    ap.add_argument("--presets", default="all")
    ap.add_argument("--large", type=int, default=0, help="also one default-settings platform this big (e.g. 60000)")
    ap.add_argument("--large-events", type=int, default=0, help="target events of the large platform")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_account_model"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true", help="analyze platforms already built in --workdir again")
    ap.add_argument(
        "--detectors", default="first_tier", choices=("first_tier", "cascade"), help="what scores the requests"
    )
    ap.add_argument("--also", nargs="*", default=[], help="other models measured on the same platforms")
    args = ap.parse_args()
    model = resolve_model(args.model)
    if model is None:
        raise SystemExit("no account model: train one (`stormwatch analyze train`) or pass --model")
    also = [m for m in (resolve_model(v) for v in args.also) if m is not None]
    names = presets() if args.presets == "all" else [] if args.presets == "none" else args.presets.split(",")
    plan: list[tuple[str, int, int, str, int]] = [
        (f"random seed {args.first_seed + k}", args.first_seed + k, args.accounts, "random", 0)
        for k in range(args.seeds)
    ]
    plan += [(f"preset {p}", args.first_seed + 100 + k, args.accounts, p, 0) for k, p in enumerate(names)]
    if args.large:
        big = f"default settings, {args.large:,} accounts" + (
            f", {args.large_events:,} events" if args.large_events else ""
        )
        plan.append((big, args.first_seed + 999, args.large, "default", args.large_events))
    results: dict[str, Any] = {}
    probs, ys = [], []
    for label, seed, n, setting, events in plan:
        t = time.perf_counter()
        name = label.replace(" ", "_").replace(",", "")
        p = build_platform(
            args.workdir, name, seed, n, 30, setting, reuse=args.reuse, events=events or None, detectors=args.detectors
        )
        prob = platform_probability(model, p)
        probs.append(prob)
        ys.append(p.y)
        results[label] = {
            "seed": seed,
            "accounts": n,
            "model": platform_metrics(p, prob),
            "risk": platform_metrics(p, None),
            "seconds": round(time.perf_counter() - t, 1),
        }
        if also:
            results[label]["also"] = {o.version: platform_metrics(p, platform_probability(o, p)) for o in also}
        m, r = results[label]["model"], results[label]["risk"]
        print(
            f"{label:40} AP {m['ap']} (risk {r['ap']})  budget recall {m['budget_recall']} (risk {r['budget_recall']};"
            f" of actor accounts with requests {m['budget_recall_with_requests']};"
            f" ceiling {m['budget_recall_ceiling']})"
            f"  enforce P {m['enforce_precision']} R {m['enforce_recall']}  raised {m['raised_by_model']}"
            f" (actors {m['actors_raised_by_model']})  fp {m['fp_in_budget_by_persona']}",
            flush=True,
        )
        for v, o in results[label].get("also", {}).items():
            print(f"{'':40} {v}: AP {o['ap']}  budget recall {o['budget_recall']}  raised {o['raised_by_model']}"
                  f" (actors {o['actors_raised_by_model']})", flush=True)  # fmt: skip
    doc = {
        "model": model.version,
        "also": [o.version for o in also],
        "command": "python benchmarks/bench_account_model.py "
        + " ".join(
            f"--{k.replace('_', '-')}"
            + ("" if v is True else " " + (" ".join(map(str, v)) if isinstance(v, list) else str(v)))
            for k, v in vars(args).items()
            if v not in (None, 0, False, [])
        ),
        "settings": results,
        "reliability": reliability(np.concatenate(probs), np.concatenate(ys)) if probs else [],
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc["reliability"]))


if __name__ == "__main__":
    main()
