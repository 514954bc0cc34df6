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
    got = store.detections.compare(active, candidate, top=top)
    c.both_scored = got.both_scored
    c.both_flagged, c.only_active, c.only_candidate = got.both_flagged, got.only_a, got.only_b
    c.neither = c.both_scored - c.both_flagged - c.only_active - c.only_candidate
    c.mean_abs_diff = round(got.mean_abs_diff, 6)
    c.top_ttp_changes = dict(got.top_ttp_changes)
    c.accounts_flagged_active = sum(1 for _, a, _b in got.accounts if a)
    c.accounts_flagged_candidate = sum(1 for _, _a, b in got.accounts if b)
    c.accounts_changed = sum(1 for _, a, b in got.accounts if a != b)
    for r in got.biggest_differences:
        event = store.get_event(r.event_id)
        text = event.text() if event else ""
        c.biggest_differences.append(
            {
                "event_id": r.event_id,
                "account_id": r.account_id,
                "active_score": r.a_score,
                "candidate_score": r.b_score,
                "active_flagged": r.a_flagged,
                "candidate_flagged": r.b_flagged,
                "active_ttp": r.a_ttp,
                "candidate_ttp": r.b_ttp,
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
