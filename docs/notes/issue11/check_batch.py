"""Check and clean one authored batch before it joins the training data (issue 11).

    python docs/notes/issue11/check_batch.py batch5          # report only
    python docs/notes/issue11/check_batch.py batch5 --write  # rewrite the batch's files in place
    python docs/notes/issue11/check_batch.py batch10 --next --public  # a batch waiting in next/, also
                                                             # against the public sources

The checks of batches 3 and 4 (src/stormwatch/data/authored/README.md), in one place:
- every row has exactly the keys and allowed values; ids unique;
- a row equal (after normalisation) or near (character 5-gram Jaccard >= 0.6) to a challenge row
  of ``benchmarks/challenge/`` is dropped (the challenge sets are never trained on);
- a text that occurs under both labels is dropped altogether;
- a text repeated across the batch's files, or equal to an earlier authored row, is kept once;
- with ``--public`` (session 2026-12-06 (d)), a row near a public training row (the same 5-gram
  Jaccard) is dropped too: authored rows train every fold of ``bench_cascade.py loso
  --public-folds``, so one that paraphrased a public source would leak into that source's score.
"""

from __future__ import annotations

import argparse
import json
import re
import unicodedata
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
AUTHORED = ROOT / "src" / "stormwatch" / "data" / "authored"
CHALLENGE = ROOT / "benchmarks" / "challenge"
KEYS = {"id", "text", "label", "category", "lang", "style", "source"}
STYLES = {"operator", "formal", "defender", "knowledge", "everyday"}
CATEGORIES = {f"LLMT-{i:02d}" for i in range(1, 15)} | {"everyday"}


def norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text)).strip()


def grams(text: str, n: int = 5) -> set[str]:
    t = norm(text)
    return {t[i : i + n] for i in range(max(1, len(t) - n + 1))}


def near_public(batch: list[dict[str, str]]) -> set[int]:
    """``id()`` of the batch rows near (5-gram Jaccard >= 0.6) or equal to a public training row: the
    batch's grams are indexed, the public rows streamed past them."""
    from stormwatch.detect.data import default_data_paths, more_data_paths, read_rows

    b_grams = [grams(r["text"]) for r in batch]
    b_norm = {norm(r["text"]): id(r) for r in batch}
    index: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(b_grams):
        for x in g:
            index[x].append(i)
    out: set[int] = set()
    for row in read_rows([*default_data_paths(), *more_data_paths()]):
        if norm(row.text) in b_norm:
            out.add(b_norm[norm(row.text)])
            continue
        g = grams(row.text)
        counts: dict[int, int] = defaultdict(int)
        for x in g:
            for i in index.get(x, ()):
                counts[i] += 1
        out.update(id(batch[i]) for i, c in counts.items() if c / (len(g) + len(b_grams[i]) - c) >= 0.6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("batch", help="file prefix, e.g. batch5")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--next", action="store_true", help="the batch waits in next/")
    ap.add_argument("--public", action="store_true", help="also drop rows near a public training row")
    args = ap.parse_args()
    files = sorted((AUTHORED / "next" if args.next else AUTHORED).glob(f"{args.batch}-*.jsonl"))
    earlier = {
        norm(json.loads(line)["text"])
        for f in [*AUTHORED.glob("*.jsonl"), *AUTHORED.glob("next/*.jsonl")]
        if not f.name.startswith(f"{args.batch}-")
        for line in f.open(encoding="utf-8")
        if line.strip()
    }
    challenge = [json.loads(line)["text"] for f in CHALLENGE.glob("*.jsonl") for line in f.open(encoding="utf-8")]
    ch_norm = {norm(t) for t in challenge}
    ch_grams = [grams(t) for t in challenge]
    index: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(ch_grams):
        for x in g:
            index[x].append(i)
    rows: dict[Path, list[dict[str, str]]] = {}
    labels: dict[str, set[str]] = defaultdict(set)
    problems: list[str] = []
    for f in files:
        rows[f] = []
        for n, line in enumerate(f.open(encoding="utf-8"), 1):
            if not line.strip():
                continue
            r = json.loads(line)
            bad = (
                set(r) != KEYS
                or r["label"] not in ("malicious", "benign")
                or r["category"] not in CATEGORIES
                or r["style"] not in STYLES
                or r["source"] != "authored"
                or not r["text"].strip()
            )
            if bad:
                problems.append(f"{f.name}:{n}: bad row {r}")
                continue
            rows[f].append(r)
            labels[norm(r["text"])].add(r["label"])
    public_near = near_public([r for rs in rows.values() for r in rs]) if args.public else set()
    ids = [r["id"] for rs in rows.values() for r in rs]
    if len(ids) != len(set(ids)):
        problems.append("duplicate ids")
    seen: set[str] = set()
    dropped: dict[str, int] = defaultdict(int)
    kept: dict[Path, list[dict[str, str]]] = {}
    for f, rs in rows.items():
        kept[f] = []
        for r in rs:
            t = norm(r["text"])
            if t in ch_norm:
                dropped["equal to a challenge row"] += 1
                continue
            g = grams(r["text"])
            counts: dict[int, int] = defaultdict(int)
            for x in g:
                for i in index.get(x, ()):
                    counts[i] += 1
            if any(c / (len(g) + len(ch_grams[i]) - c) >= 0.6 for i, c in counts.items()):
                dropped["near a challenge row"] += 1
                continue
            if id(r) in public_near:
                dropped["near a public row"] += 1
                continue
            if len(labels[t]) > 1:
                dropped["under both labels"] += 1
                continue
            if t in earlier:
                dropped["equal to an earlier authored row"] += 1
                continue
            if t in seen:
                dropped["repeated in the batch"] += 1
                continue
            seen.add(t)
            kept[f].append(r)
    for f in files:
        print(f"{f.name}: {len(rows[f])} rows, kept {len(kept[f])}")
    print("dropped:", dict(dropped))
    for p in problems:
        print("PROBLEM", p)
    if args.write and not problems:
        for f, rs in kept.items():
            f.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rs), encoding="utf-8")


if __name__ == "__main__":
    main()
