"""What the console reads that the JSON API has no route for: aggregates and an account's timeline.

All of it is metadata (times, scores, categories, refusals): no request text is read here. The
text of an event is only ever read through :func:`stormwatch.api.event_text.read_events`, which
audits each read.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from stormwatch.analyze.params import REPHRASE_WINDOW_S
from stormwatch.disrupt import service
from stormwatch.result import LEVELS
from stormwatch.store import Store

__all__ = [
    "TimelineRow",
    "account_timeline",
    "accounts_by_level",
    "flagged_per_day",
    "policies_in_use",
    "time_to_action",
]

#: the most events an account page lists
MAX_TIMELINE = 300


def _ts(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class TimelineRow:
    event_id: str
    ts: str
    conversation_id: str | None
    refused: bool
    score: float | None
    flagged: bool
    top_ttp: str | None
    categories: list[tuple[str, float]]  # the highest first, those >= 0.1
    explanation: list[dict[str, Any]]
    rephrase: bool  # sent within the rephrase window after a refusal in the same conversation


def account_timeline(store: Store, account_id: str, model_version: str | None) -> tuple[list[TimelineRow], int]:
    """The account's requests, newest first (at most :data:`MAX_TIMELINE`), and how many there are.

    Read through the store's repositories (``analysis.scan`` for the events' metadata and scores,
    ``detections.get`` for each shown one's categories and explanation); the text ``scan`` carries
    along is never used.
    """
    model = model_version or ""
    events: list[tuple[str, str, str | None, bool, float | None]] = []
    for chunk in store.analysis.scan(model, [account_id]):
        for i in range(len(chunk)):
            events.append(
                (chunk.event_id[i], str(chunk.ts[i]), chunk.conversation_id[i], bool(chunk.refused[i]), chunk.score[i])
            )
    events.sort(key=lambda e: (e[1], e[0]))
    last_refusal: dict[str, datetime] = {}
    rephrased: set[str] = set()
    for event_id, ts, conv, refused, _score in events:
        when = _ts(ts)
        if conv is None or when is None:
            continue
        if conv in last_refusal and (when - last_refusal[conv]).total_seconds() <= REPHRASE_WINDOW_S:
            rephrased.add(event_id)
        if refused:
            last_refusal[conv] = when
    out: list[TimelineRow] = []
    for event_id, ts, conv, refused, score in reversed(events[-MAX_TIMELINE:]):
        det = store.detections.get(event_id, model) if score is not None else None
        cat_map: dict[str, Any] = {}
        explanation: Any = []
        if det is not None:
            try:
                cat_map = orjson.loads(det.categories) if det.categories else {}
                explanation = orjson.loads(det.explanation) if det.explanation else []
            except orjson.JSONDecodeError:
                cat_map, explanation = {}, []
        ranked = sorted(((str(k), float(v)) for k, v in cat_map.items() if float(v) >= 0.1), key=lambda kv: -kv[1])
        out.append(
            TimelineRow(
                event_id,
                ts,
                conv,
                refused,
                None if score is None else float(score),
                det is not None and det.flagged,
                None if det is None else det.top_ttp,
                ranked[:4],
                explanation if isinstance(explanation, list) else [],
                event_id in rephrased,
            )
        )
    return out, len(events)


def flagged_per_day(
    store: Store, model_version: str | None, *, top: int = 6
) -> tuple[list[str], dict[str, list[float]]]:
    """Flagged requests per UTC day, by top TTP (the ``top`` commonest; the rest as ``other``)."""
    counts: Counter[tuple[str, str]] = Counter()
    if model_version:
        for r in store.analysis.flagged_requests(model_version):
            counts[(r.ts[:10], r.top_ttp or "no TTP")] += 1
    totals: Counter[str] = Counter()
    for (_day, ttp), n in counts.items():
        totals[ttp] += n
    keep = [t for t, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
    days = sorted({day for day, _ in counts})
    at = {d: i for i, d in enumerate(days)}
    series: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(days))
    for (day, ttp), n in counts.items():
        series[ttp if ttp in keep else "other"][at[day]] += n
    ordered = {t: series[t] for t in keep if t in series}
    if "other" in series:
        ordered["other"] = series["other"]
    return days, ordered


def accounts_by_level(store: Store) -> list[tuple[str, float]]:
    counts = Counter(j.level for j in store.analysis.judgements())
    return [(level, float(counts.get(level, 0))) for level in LEVELS]


def time_to_action(store: Store) -> dict[str, Any]:
    """Hours from a case being opened to its closing, and from an action's creation to its delivery."""
    buckets = ["< 1 h", "1-4 h", "4-24 h", "1-3 d", "> 3 d"]

    def bucket(hours: float) -> str:
        for limit, name in ((1, "< 1 h"), (4, "1-4 h"), (24, "4-24 h"), (72, "1-3 d")):
            if hours < limit:
                return name
        return "> 3 d"

    def spans(pairs: Iterable[tuple[str | None, str | None]]) -> list[float]:
        got = []
        for a, b in pairs:
            ta, tb = _ts(a), _ts(b)
            if ta is not None and tb is not None:
                got.append(max(0.0, (tb - ta).total_seconds() / 3600))
        return got

    cases = spans((c.opened_at, c.closed_at) for c in service.list_cases(store, status="closed", limit=1_000_000))
    actions = spans(
        (a.created_at, a.delivered_at) for a in service.list_actions(store, status="delivered", limit=1_000_000)
    )
    out: dict[str, Any] = {"buckets": buckets}
    for name, values in (("cases", cases), ("actions", actions)):
        c = Counter(bucket(h) for h in values)
        out[name] = [(b, float(c.get(b, 0))) for b in buckets]
        out[f"{name}_n"] = len(values)
        out[f"{name}_median_h"] = None if not values else round(sorted(values)[len(values) // 2], 2)
    return out


def policies_in_use(store: Store) -> list[str]:
    """The policies that have recorded decisions."""
    return sorted({d.policy_id for d in service.list_decisions(store, limit=1_000_000)})
