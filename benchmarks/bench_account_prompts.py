"""Benchmark: account judgement when operators write like operators (prompts no detector trained on).

The simulator's operations normally ask with prompts from the vendored public sets (which both
detectors were trained on) or with its own templates. Here every operational request is drawn from
the challenge sets written for this project and never trained on (``benchmarks/challenge/``: the
terse operator asks and the malicious zh / ru / ko / fa prompts, with their LLMT category), and the
security workers' questions (security professionals, penetration testers, red-teamers, CTF students,
researchers) from the defenders' questions and the benign zh / ru / ko / fa prompts on the same
topics (``Pools.with_prompts``). Everything else (population, infrastructure, intel, rhythm,
refusals, rephrasing) is the simulator's, on held-out seeds. Each platform is scored once with the
first tier and once with the cascade (``analyze.scale`` puts both on one scale) and judged by the
rules and the shipped account model, as in ``bench_account_model.py``.

The challenge prompts repeat (454 malicious, 459 benign over thousands of requests), so this
measures how account judgement degrades or holds when the per-request detector meets such writing,
not the detector itself (``bench_cascade.py challenge`` does that).

    python benchmarks/bench_account_prompts.py [--accounts 3000] [--seeds 2] [--first-seed 60000]
        [--detectors first_tier,cascade] [--workdir /tmp/bench_account_prompts]
        [--out benchmarks/results/account_prompts.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from stormwatch.analyze.account_model import resolve_model
from stormwatch.analyze.account_train import build_platform, platform_metrics, platform_probability
from stormwatch.simulate.pools import Pools, load_pools

CHALLENGE = Path(__file__).resolve().parent / "challenge"
MALICIOUS = ("terse_operator", "lang_zh", "lang_ru", "lang_ko", "lang_fa")
SECURITY = ("defender_questions", "lang_zh", "lang_ru", "lang_ko", "lang_fa")


def challenge_pools(folder: Path = CHALLENGE) -> tuple[Pools, dict[str, int]]:
    mal: list[tuple[str, str, str]] = []
    sec: list[tuple[str, str]] = []
    for name in sorted(set(MALICIOUS) | set(SECURITY)):
        for line in (folder / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if row["label"] == "malicious" and name in MALICIOUS:
                mal.append((f"challenge:{row['id']}", row["text"], row["category"]))
            elif row["label"] == "benign" and name in SECURITY:
                sec.append((f"challenge:{row['id']}", row["text"]))
    return load_pools().with_prompts(mal, sec), {"malicious": len(mal), "security": len(sec)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="account model version or folder (default: the newest shipped)")
    ap.add_argument("--accounts", type=int, default=3000)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--first-seed", type=int, default=60_000)
    ap.add_argument("--detectors", default="first_tier,cascade")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_account_prompts"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    model = resolve_model(args.model)
    if model is None:
        raise SystemExit("no account model: train one (`stormwatch analyze train`) or pass --model")
    pools, sizes = challenge_pools()
    results: dict[str, Any] = {}
    for k in range(args.seeds):
        seed = args.first_seed + k
        for det in args.detectors.split(","):
            t = time.perf_counter()
            label = f"seed {seed}, {det}"
            p = build_platform(
                args.workdir, f"seed_{seed}_{det}", seed, args.accounts, 30, "random", detectors=det, pools=pools
            )
            prob = platform_probability(model, p)
            results[label] = {
                "seed": seed,
                "detectors": det,
                "accounts": args.accounts,
                "model": platform_metrics(p, prob),
                "risk": platform_metrics(p, None),
                "seconds": round(time.perf_counter() - t, 1),
            }
            m = results[label]["model"]
            print(
                f"{label:28} AP {m['ap']}  budget recall {m['budget_recall']}"
                f" (with requests {m['budget_recall_with_requests']})  enforce P {m['enforce_precision']}"
                f" R {m['enforce_recall']}  review {m['review']}  fp in budget {m['fp_in_budget_by_persona']}",
                flush=True,
            )
    doc = {
        "model": model.version,
        "command": f"python benchmarks/bench_account_prompts.py --accounts {args.accounts} --seeds {args.seeds}"
        f" --first-seed {args.first_seed} --detectors {args.detectors}",
        "challenge_prompts": sizes,
        "settings": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
