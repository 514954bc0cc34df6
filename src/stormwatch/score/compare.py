"""Shadow comparison of two model versions on the same stored events.

``stormwatch models compare`` answers, before a candidate is promoted: on how many events do the
two disagree, in which direction, which TTPs move, how many accounts change, and which events
differ most (ids to open, text previews for the analyst's own eyes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from stormwatch.store.base import Store


@dataclass(slots=True)
class Comparison:
    active: str
    candidate: str
    both_scored: int = 0
    both_flagged: int = 0
    only_active: int = 0
    only_candidate: int = 0
    neither: int = 0
    mean_abs_diff: float = 0.0
    accounts_flagged_active: int = 0
    accounts_flagged_candidate: int = 0
    accounts_changed: int = 0
    top_ttp_changes: dict[str, int] = field(default_factory=dict)
    biggest_differences: list[dict[str, Any]] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return (self.both_flagged + self.neither) / self.both_scored if self.both_scored else 1.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["agreement"] = round(self.agreement, 6)
        return d


def compare_models(store: Store, active: str, candidate: str, *, top: int = 10) -> Comparison:
    c = Comparison(active, candidate)
    base = (
        "FROM detections a JOIN detections b ON a.event_id = b.event_id "
        "WHERE a.model_version = ? AND b.model_version = ?"
    )
    params = (active, candidate)
    row = store.query(
        "SELECT COUNT(*), "
        "SUM(CASE WHEN a.flagged = 1 AND b.flagged = 1 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN a.flagged = 1 AND b.flagged = 0 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN a.flagged = 0 AND b.flagged = 1 THEN 1 ELSE 0 END), "
        f"AVG(ABS(a.score - b.score)) {base}",
        params,
    )[0]
    c.both_scored = int(row[0] or 0)
    c.both_flagged, c.only_active, c.only_candidate = (int(row[i] or 0) for i in (1, 2, 3))
    c.neither = c.both_scored - c.both_flagged - c.only_active - c.only_candidate
    c.mean_abs_diff = round(float(row[4] or 0.0), 6)
    for r in store.query(
        f"SELECT COALESCE(a.top_ttp, '-') || ' -> ' || COALESCE(b.top_ttp, '-'), COUNT(*) {base} "
        "AND COALESCE(a.top_ttp, '-') <> COALESCE(b.top_ttp, '-') GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20",
        params,
    ):
        c.top_ttp_changes[str(r[0])] = int(r[1])
    acc = store.query(
        f"SELECT a.account_id, MAX(a.flagged), MAX(b.flagged) {base} GROUP BY a.account_id",
        params,
    )
    c.accounts_flagged_active = sum(1 for r in acc if r[1])
    c.accounts_flagged_candidate = sum(1 for r in acc if r[2])
    c.accounts_changed = sum(1 for r in acc if bool(r[1]) != bool(r[2]))
    for r in store.query(
        "SELECT a.event_id, a.account_id, a.score, b.score, a.flagged, b.flagged, a.top_ttp, b.top_ttp "
        f"{base} ORDER BY ABS(a.score - b.score) DESC, a.event_id LIMIT ?",
        (*params, top),
    ):
        event = store.get_event(r[0])
        text = event.text() if event else ""
        c.biggest_differences.append(
            {
                "event_id": r[0],
                "account_id": r[1],
                "active_score": r[2],
                "candidate_score": r[3],
                "active_flagged": bool(r[4]),
                "candidate_flagged": bool(r[5]),
                "active_ttp": r[6],
                "candidate_ttp": r[7],
                "preview": text[:120],
            }
        )
    return c


def format_comparison(c: Comparison) -> str:
    lines = [
        f"active    {c.active}",
        f"candidate {c.candidate}",
        f"events scored by both: {c.both_scored:,}   agreement {c.agreement:.2%}   "
        f"mean |score diff| {c.mean_abs_diff:.4f}",
        "",
        "                     candidate flags   candidate passes",
        f"  active flags       {c.both_flagged:>15,}   {c.only_active:>16,}",
        f"  active passes      {c.only_candidate:>15,}   {c.neither:>16,}",
        "",
        f"accounts with a flagged event: active {c.accounts_flagged_active:,}, candidate "
        f"{c.accounts_flagged_candidate:,}, changed {c.accounts_changed:,}",
    ]
    if c.top_ttp_changes:
        lines.append("top TTP moves (active -> candidate):")
        lines += [f"  {k:24} {v:,}" for k, v in c.top_ttp_changes.items()]
    if c.biggest_differences:
        lines.append("largest score differences:")
        for d in c.biggest_differences:
            lines.append(
                f"  {d['event_id']} {d['account_id']}  {d['active_score']:.3f} -> {d['candidate_score']:.3f}"
                f"  {d['preview'][:70]!r}"
            )
    return "\n".join(lines)
