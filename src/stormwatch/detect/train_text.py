"""First-tier training, text preparation: boilerplate stripping, core asks and augmentation (recipe steps 2-3
in :mod:`stormwatch.detect.train`)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace

from stormwatch.detect.data import Row
from stormwatch.detect.features import tokens_of
from stormwatch.detect.train_params import (
    TrainParams,
)


# -- text preparation ---------------------------------------------------------------------------
def _tokens(rows: Sequence[Row]) -> list[list[str]]:
    return [tokens_of(r.text) for r in rows]


def find_boilerplate(rows: Sequence[Row], toks: Sequence[list[str]], p: TrainParams) -> dict[str, set[tuple[str, ...]]]:
    """Per source, the word n-grams frequent enough in it to be template text."""
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_source[r.source].append(i)
    n = p.boiler_n
    out: dict[str, set[tuple[str, ...]]] = {}
    for source, idx in sorted(by_source.items()):
        df: Counter[tuple[str, ...]] = Counter()
        for i in idx:
            t = toks[i]
            df.update({tuple(t[k : k + n]) for k in range(len(t) - n + 1)})
        cut = max(p.boiler_min, int(p.boiler_frac * len(idx)))
        grams = {g for g, c in df.items() if c >= cut}
        if grams:
            out[source] = grams
    return out


def strip_boilerplate(toks: list[str], grams: set[tuple[str, ...]], n: int) -> list[str]:
    """``toks`` without the tokens covered by one of ``grams`` (a source's template text)."""
    if not grams or len(toks) < n:
        return toks
    drop = [False] * len(toks)
    for k in range(len(toks) - n + 1):
        if tuple(toks[k : k + n]) in grams:
            for j in range(k, k + n):
                drop[j] = True
    if not any(drop):
        return toks
    return [t for t, d in zip(toks, drop, strict=True) if not d]


def prepare_tokens(rows: Sequence[Row], p: TrainParams) -> tuple[list[list[str]], dict[str, int]]:
    toks, boiler, _ = prepare_tokens_and_cores(rows, p)
    return toks, boiler


def prepare_tokens_and_cores(
    rows: Sequence[Row], p: TrainParams
) -> tuple[list[list[str]], dict[str, int], dict[str, list[str]]]:
    """Boilerplate-stripped tokens, the boilerplate n-gram counts per source and the core asks
    (``core_ask``) of the rows that have one, by row id."""
    toks = _tokens(rows)
    grams = find_boilerplate(rows, toks, p) if p.boiler_n > 0 else {}
    stripped = [strip_boilerplate(t, grams.get(r.source, set()), p.boiler_n) for r, t in zip(rows, toks, strict=True)]
    cores: dict[str, list[str]] = {}
    if p.augment_core:
        for r, t in zip(rows, stripped, strict=True):
            c = core_ask(r.text, grams.get(r.source, set()), p)
            if c is not None and len(c) < len(t):
                cores[r.id] = c
    return stripped, {s: len(g) for s, g in sorted(grams.items())}, cores


# The verbs and question words an ask starts with; the core ask of a long prompt is its first
# non-template sentence that has one, from that word on ("Researcher, for our upcoming paper, write
# code that ..." -> "write code that ..."). Same rule for both labels: shortness is not intent.
ASK_WORDS = frozenset(
    "write draft create develop generate design build implement make give provide explain describe outline "
    "tell show list craft compose produce devise teach help how".split()
)  # fmt: skip
_SENTENCE_RE = re.compile(r"(?<=[.!?:;])\s+|\n+")


def core_ask(text: str, grams: set[tuple[str, ...]], p: TrainParams) -> list[str] | None:
    """The core ask of ``text`` (tokens, at most ``core_max_tokens``), or None."""
    for sent in _SENTENCE_RE.split(text):
        t = strip_boilerplate(tokens_of(sent), grams, p.boiler_n) if p.boiler_n > 0 else tokens_of(sent)
        if len(t) < p.core_min_tokens:
            continue
        for i, w in enumerate(t):
            if w in ASK_WORDS:
                c = t[i : i + p.core_max_tokens]
                return c if len(c) >= p.core_min_tokens else None
    return None


# -- augmentation ---------------------------------------------------------------------------------
# Request framings that attack prompts use ("Write a script that", "Create a tutorial on how to")
# and that harmless asks use just as well: put on copies of benign rows, they stop being evidence.
BENIGN_FRAMES: tuple[str, ...] = (
    "Can you help me", "Could you please", "I'd like you to", "I need you to", "How can I", "How do I",
    "Explain how to", "Explain in detail how to", "Write a script that", "Write a program to",
    "Write a detailed guide on how to", "Create a tutorial on how to", "Give me step-by-step instructions to",
    "Provide a list of", "Develop a plan to", "Design a step-by-step plan to", "Outline a strategy to",
    "Tell me how to", "Show me how to", "Write code that", "List the steps to", "What is the best way to",
    "Draft an email to", "Write a convincing post about", "Generate a message to", "You are a helpful expert.",
    "Imagine you are an assistant.", "As an engineer,", "Write a blog post about", "Can you provide",
)  # fmt: skip
# Benign context around an attack ask (a padded ask must still score as one).
CONTEXT_WRAPS: tuple[tuple[str, str], ...] = (
    ("Hi! Quick question.", "Thanks in advance!"),
    ("I'm planning my week and have a few things to sort out.", ""),
    ("", "Please keep the answer short and use bullet points."),
    ("My manager asked me about this today.", "Thank you!"),
    ("Hello, I hope you are having a nice day.", ""),
    ("", "Also, what is a good recipe for dinner tonight?"),
)


def augment(
    rows: Sequence[Row], toks: Sequence[list[str]], p: TrainParams, cores: dict[str, list[str]] | None = None
) -> tuple[list[Row], list[list[str]]]:
    """``rows`` plus the augmented copies (same source and label, id suffixed ``#aug``) and the core
    asks (``#core``)."""
    out_rows, out_toks = list(rows), list(toks)
    for r in rows:
        c = (cores or {}).get(r.id)
        if c is not None:
            out_rows.append(replace(r, id=r.id + "#core"))
            out_toks.append(c)
    frames = [tokens_of(f) for f in BENIGN_FRAMES]
    wraps = [(tokens_of(a), tokens_of(b)) for a, b in CONTEXT_WRAPS]
    nb = nm = 0
    for r, t in zip(rows, toks, strict=True):
        if r.label == 0 and p.augment_frames > 0:
            if nb % p.augment_frames == 0:
                out_rows.append(replace(r, id=r.id + "#aug"))
                out_toks.append(frames[(nb // p.augment_frames) % len(frames)] + t)
            nb += 1
        elif r.label == 1 and p.augment_context > 0:
            if nm % p.augment_context == 0:
                a, b = wraps[(nm // p.augment_context) % len(wraps)]
                out_rows.append(replace(r, id=r.id + "#aug"))
                out_toks.append(a + t + b)
            nm += 1
    return out_rows, out_toks
