"""Conversation-level scoring: a judgement over all user turns, not the maximum of single turns.

Rule (all in logit space; ``p`` are calibrated first-tier scores):

1. ``p_turn``  = max over user turns of the turn's score.
2. ``p_joint`` = score of all user turns joined in order. The model's features add up across turns
   while the length normaliser grows only with the square root, so a goal split into weak steps
   scores higher joined than any step alone. Long conversations fall under the window rule, so
   benign length does not accumulate.
3. ``p_steps`` = evidence summed over distinct turns in logit space: ``sigmoid(logit(F) + sum_i
   max(0, logit(p_i) - logit(F)))`` with floor ``F = STEP_FLOOR * T``, ``T`` the model's balanced
   threshold (``model.thresholds["balanced"]``). Several suspicious steps add up (a noisy-OR of their
   excess); ordinary turns (below the floor) and repeated turns add nothing.
4. ``base = max(p_turn, p_joint, p_steps)``. When ``base >= max(CONTEXT_GATE, CONTEXT_GATE_FRAC * T)``,
   context raises it:
   * +``PRETEXT_BOOST`` (0.8) when a user turn wraps the ask in a pretext or jailbreak ("for a CTF",
     "for our paper", "as a security researcher", "hypothetically", "ignore previous
     instructions", role-play personas ...);
   * +``REPHRASE_BOOST`` (1.0) when, after a refusal (an assistant turn that refuses, or a turn with
     ``refused: true``), the next user turn asks again (shares >= 30 % of its words with the refused
     ask, or scores >= the floor itself);
   * +``BREADTH_BOOST`` (0.4) per extra LLMT category (beyond the first) that any turn reaches with
     probability >= 0.15: a conversation that touches recon, payloads and evasion is broader than
     one question.
   Context alone never flags: below the gate, nothing is added.

The floor and the gate are fractions of the balanced threshold, so they follow the model's score
scale (first_tier-2.1's calibrated scores are compressed: ordinary traffic 0.05-0.35, balanced ~0.47).
``STEP_FLOOR`` = 0.55: about 3 % of everyday ``val`` prompts score above it, so two benign turns both
near the everyday 99th percentile are needed before benign steps reach balanced. ``CONTEXT_GATE_FRAC``
= 0.4 (about the everyday 90th percentile). ``CONTEXT_GATE`` (0.10) is an absolute lower bound on the
gate for any model; the pipeline uses it as a cheap pre-filter (a conversation whose message and
joined text both score below it is not scored turn by turn).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from stormwatch.detect.model import load_model
from stormwatch.detect.scorer_protocol import Scorer
from stormwatch.detect.text import Turn, tokenize
from stormwatch.vocab import LLMT_IDS

__all__ = [
    "CONTEXT_GATE",
    "CONTEXT_GATE_FRAC",
    "PRETEXT_RE",
    "REFUSAL_RE",
    "STEP_FLOOR",
    "context_gate",
    "score_conversation",
    "step_floor",
]

STEP_FLOOR = 0.55  # fraction of the balanced threshold
CONTEXT_GATE = 0.10  # absolute lower bound of the gate (the pipeline's pre-filter)
CONTEXT_GATE_FRAC = 0.4  # fraction of the balanced threshold
PRETEXT_BOOST = 0.8
REPHRASE_BOOST = 1.0
BREADTH_BOOST = 0.4
BREADTH_MIN = 0.15

PRETEXT_RE = re.compile(
    r"\b(for an? (ctf|capture the flag|class|course|homework|assignment|novel|story|movie|game|"
    r"research project|pen ?test|red[- ]team\w*)|for (my|our) (paper|thesis|research|class|book|students)"
    r"|as an? (security )?(researcher|pen ?tester|red[- ]teamer|professor|teacher)"
    r"|hypothetical(ly)?|purely (academic|theoretical|fictional)|educational purposes?"
    r"|in a (fictional|hypothetical) (world|story|scenario)|pretend (you are|to be)|role-?play"
    r"|ignore (all |any )?(previous|prior|above) (instructions|rules)|developer mode|\bdan\b"
    r"|no (ethical|moral) (guidelines|restrictions)|without (any )?(restrictions|filters))",
    re.I,
)
REFUSAL_RE = re.compile(
    r"\b(i can(no|')t (help|assist|provide|do that|comply)|i(')?m (sorry|unable)|i am (sorry|unable)"
    r"|i won(')?t (help|provide)|cannot (help|assist) with|not able to (help|assist)|against (my|our) "
    r"(policy|policies|guidelines))",
    re.I,
)


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))


def _overlap(a: str, b: str) -> float:
    ta, tb = set(tokenize(a)), set(tokenize(b))
    if not ta or not tb:
        return 0.0
    return len(ta & tb) / min(len(ta), len(tb))


def _balanced(model: Scorer) -> float:
    t = model.thresholds
    return float(t.get("balanced", 0.5))


def step_floor(model: Scorer) -> float:
    """The step floor ``F`` of ``model`` (``STEP_FLOOR`` times its balanced threshold)."""
    return STEP_FLOOR * _balanced(model)


def context_gate(model: Scorer) -> float:
    """The score a conversation needs before context boosts apply."""
    return max(CONTEXT_GATE, CONTEXT_GATE_FRAC * _balanced(model))


def score_conversation(turns: Sequence[Turn], model: Scorer | None = None) -> dict[str, Any]:
    """Score a conversation (``[{"role", "content", "refused"?}]``) with the rule in the module doc.

    Returns ``{"score", "categories", "explanation", "turn_scores", "model_version"}``.
    """
    model = model or load_model()
    user_idx = [i for i, t in enumerate(turns) if t.get("role", "user") == "user"]
    texts = [str(turns[i].get("content") or "") for i in user_idx]
    if not texts:
        zero = dict.fromkeys(LLMT_IDS, 0.0)
        return {
            "score": 0.0,
            "categories": zero,
            "explanation": [],
            "turn_scores": [],
            "model_version": model.version,
        }
    joined = "\n\n".join(texts)
    scores, cats = model.score_with_categories([*texts, joined])
    turn_scores = scores[:-1]
    p_turn = float(turn_scores.max())
    p_joint = float(scores[-1])
    seen: set[str] = set()
    floor_p = step_floor(model)
    floor = _logit(floor_p)
    evidence = 0.0
    for t, p in zip(texts, turn_scores.tolist(), strict=True):
        key = " ".join(tokenize(t))
        if key in seen:
            continue
        seen.add(key)
        evidence += max(0.0, _logit(p) - floor)
    p_steps = _sigmoid(floor + evidence) if evidence > 0 else 0.0
    base = max(p_turn, p_joint, p_steps)
    explanation: list[dict[str, Any]] = [
        {"kind": "conversation", "user_turns": len(texts), "max_turn": round(p_turn, 4),
         "joined": round(p_joint, 4),
         "steps_evidence": round(p_steps, 4)},
    ]  # fmt: skip
    boost = 0.0
    if base >= context_gate(model):
        pretexts = sorted({m.group(0).lower() for t in texts for m in PRETEXT_RE.finditer(t)})
        if pretexts:
            boost += PRETEXT_BOOST
            explanation.append({"kind": "pretext", "matches": pretexts[:5], "boost": PRETEXT_BOOST})
        rephrase_turns = _rephrase_after_refusal(turns, user_idx, turn_scores, floor_p)
        if rephrase_turns:
            boost += REPHRASE_BOOST
            explanation.append({"kind": "rephrase_after_refusal", "turns": rephrase_turns, "boost": REPHRASE_BOOST})
        cat_max = cats[:-1].max(axis=0)
        reached = [LLMT_IDS[j] for j in np.flatnonzero(cat_max >= BREADTH_MIN)]
        if len(reached) > 1:
            b = BREADTH_BOOST * (len(reached) - 1)
            boost += b
            explanation.append({"kind": "ttp_breadth", "categories": reached, "boost": round(b, 3)})
    score = _sigmoid(_logit(base) + boost) if boost else base
    # categories: the max over turns and the joined text, rescaled to the conversation's score
    cat_all = cats.max(axis=0)
    scale = score / base if base > 0 else 0.0
    categories = {c: float(min(score, v * scale)) for c, v in zip(LLMT_IDS, cat_all.tolist(), strict=True)}
    top_turn = int(np.argmax(turn_scores))
    for ev in model.explain_text(texts[top_turn], top=5):
        ev["turn"] = user_idx[top_turn]
        explanation.append(ev)
    return {
        "score": float(score),
        "categories": categories,
        "explanation": explanation,
        "turn_scores": [float(s) for s in turn_scores],
        "model_version": model.version,
    }


def _rephrase_after_refusal(
    turns: Sequence[Turn], user_idx: list[int], turn_scores: np.ndarray[Any, Any], floor: float
) -> list[int]:
    """Indices of user turns that re-ask after a refused turn."""
    found: list[int] = []
    pos = {ti: k for k, ti in enumerate(user_idx)}
    for k, ti in enumerate(user_idx[:-1]):
        nxt = user_idx[k + 1]
        refused = bool(turns[ti].get("refused")) or any(
            turns[j].get("role") == "assistant" and REFUSAL_RE.search(str(turns[j].get("content") or ""))
            for j in range(ti + 1, nxt)
        )
        if not refused:
            continue
        again = _overlap(str(turns[ti].get("content") or ""), str(turns[nxt].get("content") or "")) >= 0.3
        if again or turn_scores[pos[nxt]] >= floor:
            found.append(nxt)
    return found
