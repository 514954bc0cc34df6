"""Attribution: indicator evidence propagated over strong links, adjusted by behaviour.

1. Direct evidence: each indicator hit has strength ``confidence/100 * rarity(degree of the
   observable) * type factor`` (anonymisation / benign / compromised infrastructure counts 0.3);
   an account's hits for one intrusion-set combine by noisy-OR.
2. Propagation: the strongest product path from any hit account, over strong links only (value
   stars and strong pairs), each hop multiplied by its link weight and ``HOP_DECAY`` (a max-product
   path = Dijkstra on ``-log w`` from a virtual source, scipy).
3. Per cluster (a singleton is its own cluster) the intrusion-set with the highest
   ``sigmoid(logit(intel) + BEHAVIOUR_GAIN * b)`` is chosen, ``b`` the cluster's behaviour fit.
   Each member's confidence uses its own propagated intel and the mean of the cluster's and its
   own behaviour fit, so a stranger glued into a cluster by one link does not inherit it whole.
4. Without intel, a cluster whose content is malicious may be named from behaviour alone when the
   best profile fits (``b >= BEHAVIOUR_ONLY_MIN``, lead ``>= BEHAVIOUR_ONLY_MARGIN``), capped at
   ``BEHAVIOUR_ONLY_CAP`` (always "low").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from stormwatch.analyze import params as P
from stormwatch.analyze.linking import LinkResult
from stormwatch.analyze.profiles import ActorProfile, BehaviourFit, fit_behaviour

__all__ = ["AccountBehaviour", "Attribution", "IntrusionSet", "attribute", "confidence_label"]

Arr = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class IntrusionSet:
    ref: str
    name: str
    profile: ActorProfile | None


@dataclass(slots=True)
class AccountBehaviour:
    ttp: Arr  # [N, 14]
    hours: Arr  # [N, 48]
    languages: list[dict[str, float]]
    n_events: Arr  # [N]
    content: Arr  # [N]


@dataclass(slots=True)
class Attribution:
    actor_ref: list[str | None]
    confidence: Arr
    intel: Arr  # propagated intel strength for the chosen set
    direct: Arr  # strongest direct hit strength (any set)
    fit: list[BehaviourFit | None]
    source: list[int]  # account the evidence came from (-1: behaviour only / none)
    path: list[list[int]] = field(default_factory=list)  # graph nodes from source to account
    cluster_fit: dict[int, tuple[str, float, BehaviourFit | None]] = field(default_factory=dict)
    # clusters without intel whose behaviour fits profiles but names none (below the naming score, or
    # two profiles too close to tell apart, e.g. two operations of one country): label -> the
    # profiles' (ref, fit score) best first, and the best one's fit. Coordination (judge._coordinated)
    # asks whether a cluster fits *an* actor's profile, not which one.
    unnamed_fit: dict[int, tuple[list[tuple[str, float]], BehaviourFit]] = field(default_factory=dict)


def confidence_label(conf: float | None) -> str | None:
    if conf is None:
        return None
    for threshold, label in P.CONFIDENCE_LABELS:
        if conf >= threshold:
            return label
    return None


BELOW_LOW = "best candidate, below the low confidence band: not an attribution"


def public_attribution(row: dict[str, Any]) -> dict[str, Any]:
    """A stored cluster row as shown to people: below the low band no actor is named.

    The best candidate moves to a labelled ``candidate`` (used by ``clusters list|show`` and the API).
    """
    out = dict(row)
    if row.get("actor") and not (row.get("confidence_label") or confidence_label(row.get("confidence"))):
        out["candidate"] = {"actor": row["actor"], "actor_ref": row.get("actor_ref"),
                            "confidence": row.get("confidence"), "note": BELOW_LOW}  # fmt: skip
        out["actor"] = None
        out["confidence_label"] = None
        if "actor_ref" in out:
            out["actor_ref"] = None
    else:
        out["candidate"] = None
    return out


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _graph(link: LinkResult, n: int, n_val: int) -> tuple[Any, int]:
    src = n + n_val
    half = 0.5 * -np.log(np.clip(link.star_w * P.HOP_DECAY, 1e-9, 1.0))
    full = -np.log(np.clip(link.pair_w * P.HOP_DECAY, 1e-9, 1.0))
    a = np.concatenate([link.star_acc, n + link.star_val, link.pair_a, link.pair_b])
    b = np.concatenate([n + link.star_val, link.star_acc, link.pair_b, link.pair_a])
    w = np.concatenate([half, half, full, full]) + 1e-12
    return (a, b, w), src


def _group_behaviour(beh: AccountBehaviour, members: Arr, prof: ActorProfile) -> BehaviourFit:
    langs: dict[str, float] = {}
    total = float(beh.n_events[members].sum()) or 1.0
    for m in members:
        for k, v in beh.languages[m].items():
            langs[k] = langs.get(k, 0.0) + v * float(beh.n_events[m]) / total
    return fit_behaviour(
        prof, beh.ttp[members].sum(axis=0), beh.hours[members].sum(axis=0), langs, int(beh.n_events[members].sum())
    )


def attribute(
    link: LinkResult,
    n_val: int,
    sets: dict[str, IntrusionSet],
    hits: dict[str, list[tuple[int, float]]],
    beh: AccountBehaviour,
    *,
    keep: Arr | None = None,
) -> Attribution:
    """Attribute every link component (only those holding ``keep`` accounts when given: the others
    are left unattributed; propagation and direct evidence are computed over the whole graph)."""
    n = len(link.labels)
    (ga, gb, gw), src = _graph(link, n, n_val)
    prop: dict[str, Arr] = {}
    preds: dict[str, Arr] = {}
    direct = np.zeros(n)
    for ref, items in hits.items():
        strength = np.zeros(n)
        for acc, s in items:
            strength[acc] = 1.0 - (1.0 - strength[acc]) * (1.0 - s)
        direct = np.maximum(direct, strength)
        srcs = np.flatnonzero(strength > 0)
        if len(srcs) == 0:
            continue
        rows = np.concatenate([ga, np.full(len(srcs), src)])
        cols = np.concatenate([gb, srcs])
        w = np.concatenate([gw, -np.log(strength[srcs]) + 1e-12])
        graph = coo_matrix((w, (rows, cols)), shape=(src + 1, src + 1)).tocsr()
        dist, pred = dijkstra(graph, directed=True, indices=src, return_predecessors=True, min_only=False)
        prop[ref] = np.exp(-dist[:n])
        preds[ref] = pred
    out = Attribution(
        actor_ref=[None] * n,
        confidence=np.zeros(n),
        intel=np.zeros(n),
        direct=direct,
        fit=[None] * n,
        source=[-1] * n,
        path=[[] for _ in range(n)],
    )
    order = np.argsort(link.labels, kind="stable")
    bounds = np.flatnonzero(np.r_[True, link.labels[order][1:] != link.labels[order][:-1], True])
    candidates = [r for r in sets if sets[r].profile is not None or r in prop]
    for gi in range(len(bounds) - 1):
        members = order[bounds[gi] : bounds[gi + 1]]
        if members.size == 0:  # no accounts at all
            continue
        label = int(link.labels[members[0]])
        if keep is not None and not keep[members[0]]:
            continue
        with_intel = [r for r in prop if prop[r][members].max() > 0]
        malicious = float(beh.content[members].max()) >= 0.8
        if not with_intel and not malicious:
            continue
        scored: list[tuple[float, str, BehaviourFit | None, float]] = []
        for ref in with_intel if with_intel else candidates:
            prof = sets[ref].profile if ref in sets else None
            fit = _group_behaviour(beh, members, prof) if prof is not None else None
            b = fit.score if fit else 0.0
            intel = float(prop[ref][members].max()) if ref in prop else 0.0
            conf = _sigmoid(_logit(intel) + P.BEHAVIOUR_GAIN * b) if intel > 0 else b
            scored.append((conf, ref, fit, b))
        if not scored:
            continue
        scored.sort(key=lambda x: -x[0])
        conf, ref, fit, b = scored[0]
        if not with_intel:
            second = scored[1][3] if len(scored) > 1 else -1.0
            if fit is None or b < P.BEHAVIOUR_ONLY_MIN or b - second < P.BEHAVIOUR_ONLY_MARGIN:
                if fit is not None:  # without intel ``scored`` is already best fit first
                    ranked = [(r, round(bb, 4)) for _c, r, f, bb in scored if f is not None]
                    out.unnamed_fit[label] = (ranked[:3], fit)
                continue
            conf = min(P.BEHAVIOUR_ONLY_CAP, _sigmoid(-1.5 + 3.0 * b))
        out.cluster_fit[label] = (ref, conf, fit)
        prof = sets[ref].profile if ref in sets else None
        for m in members:
            own = (
                fit_behaviour(prof, beh.ttp[m], beh.hours[m], beh.languages[m], int(beh.n_events[m])) if prof else None
            )
            b_m = 0.5 * b + 0.5 * (own.score if own else 0.0)
            if with_intel:
                intel_m = float(prop[ref][m])
                c = _sigmoid(_logit(intel_m) + P.BEHAVIOUR_GAIN * b_m) if intel_m > 0 else 0.0
                out.intel[m] = intel_m
                pred = preds[ref]
                node, path = int(m), [int(m)]
                while pred[node] >= 0 and pred[node] != src and len(path) < 50:
                    node = int(pred[node])
                    path.append(node)
                out.path[m] = path[::-1]
                out.source[m] = path[-1] if path else -1
            else:
                c = conf if float(beh.content[m]) >= 0.5 else conf * 0.5
            if c >= P.MIN_ATTRIBUTION:
                out.actor_ref[m] = ref
                out.confidence[m] = c
                out.fit[m] = own
    return out
