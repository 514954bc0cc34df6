"""First-tier scoring speed vs a plain scikit-learn HashingVectorizer + SGDClassifier baseline.

Both score the same prompts in the same run; speed is prompts per CPU-second of this process
(``time.process_time``), which is robust to other tenants on the machine. The baseline is trained
on the same vendored training rows. ``fast_path`` says whether the C extension scored (it must be
built: ``pip install --no-deps --no-build-isolation -e .``). Prompts: the vendored data's rows (mean ~ 300-400 chars),
repeated to ``--n``. Results go to ``benchmarks/results/classify.json``.

    PYTHONPATH=src python benchmarks/bench_classify.py [--n 200000] [--batch 2048]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from stormwatch.detect.data import default_data_paths, read_rows
from stormwatch.detect.model import fast_available, load_model


def _cpu_rate(fn, texts: list[str], batch: int, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = 0.0
    for _ in range(repeats):
        t0 = time.process_time()
        for i in range(0, len(texts), batch):
            fn(texts[i : i + batch])
        dt = time.process_time() - t0
        best = max(best, len(texts) / dt)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--typical", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "classify.json"))
    args = ap.parse_args()

    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import SGDClassifier
    from threadpoolctl import threadpool_limits

    rows = read_rows(default_data_paths())
    train = [r for r in rows if r.split == "train" and r.use]
    pool = [r.text for r in rows]
    rng = np.random.default_rng(0)
    if args.typical:  # prompts of 200-800 characters (mean ~400), the typical API request
        pool = [t for t in pool if 200 <= len(t) <= 800]
    texts = [pool[i] for i in rng.integers(0, len(pool), args.n)]
    mean_chars = float(np.mean([len(t) for t in texts]))

    model = load_model()
    model.score_texts(texts[:100])  # warm-up (lazy load)

    # the plain baseline (default unigrams) and the feature-matched one (word 1-2-grams, like ours)
    baselines = {}
    for name, ngrams in (("hashing_sgd_unigram", (1, 1)), ("hashing_sgd_1_2gram", (1, 2))):
        vec = HashingVectorizer(n_features=2**20, alternate_sign=False, ngram_range=ngrams)
        clf = SGDClassifier(loss="log_loss", random_state=0)
        clf.fit(vec.transform([r.text for r in train]), [r.label for r in train])
        baselines[name] = (vec, clf)

    with threadpool_limits(limits=1):
        ours = _cpu_rate(model.score_texts, texts, args.batch)
        ours_cats = _cpu_rate(lambda b: model.score_with_categories(b), texts, args.batch, repeats=1)
        base = {
            name: _cpu_rate(lambda b, v=v, c=c: c.predict_proba(v.transform(b)), texts, args.batch, repeats=1)
            for name, (v, c) in baselines.items()
        }
    # a 1 MB prompt (window rule)
    big = ("Please summarise this log line for me. " * 30000)[:1_000_000]
    t0 = time.process_time()
    model.score_texts([big])
    big_s = time.process_time() - t0

    result = {
        "prompts": args.n,
        "mean_chars": round(mean_chars, 1),
        "batch": args.batch,
        "model_version": model.version,
        "first_tier_prompts_per_cpu_s": round(ours),
        "first_tier_with_categories_prompts_per_cpu_s": round(ours_cats),
        **{f"{k}_prompts_per_cpu_s": round(v) for k, v in base.items()},
        "fast_path": fast_available(),
        "ratio_vs_unigram": round(ours / base["hashing_sgd_unigram"], 2),
        "ratio_vs_1_2gram": round(ours / base["hashing_sgd_1_2gram"], 2),
        "one_mb_prompt_cpu_s": round(big_s, 3),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
