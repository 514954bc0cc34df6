"""Evidence an analyst can open: every item names the ids it rests on.

Item kinds (all carry ``kind`` and ``text``):

* ``indicator_hit``: ``indicator_id``, ``indicator_name``, ``intrusion_sets``, ``account_id``,
  ``observable`` {kind, value}, ``n``, ``first_ts``, ``last_ts``, ``degree`` (accounts sharing the
  observable), ``strength``;
* ``link``: ``account_a``, ``account_b``, ``link_kind``, ``value``, ``weight`` (one hop of the path
  that carried intel evidence to this account, or one edge of a cluster);
* ``behaviour``: ``signal`` (``actor_profile`` with the fit, ``rephrase_after_refusal`` or
  ``escalation`` with ``event_ids``);
* ``content``: ``event_ids`` with ``scores``, the high-scoring count and the top TTPs.

Infrastructure values (IPs, device ids, payment fingerprints) are stored raw because analysts need
them to act; the tables holding them must get the same access control as the events.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stormwatch.analyze.attribution import Attribution, IntrusionSet
from stormwatch.analyze.linking import LinkResult
from stormwatch.result import IntelHit

__all__ = ["EvidenceBuilder"]

MAX_EDGES_PER_CLUSTER = 500


class EvidenceBuilder:
    def __init__(
        self,
        g: Any,
        link: LinkResult,
        att: Attribution,
        sets: dict[str, IntrusionSet],
        hits: Sequence[IntelHit],
        names: Mapping[str, str | None],
    ) -> None:
        self.g, self.link, self.att, self.sets = g, link, att, sets
        self.n = len(g.accounts)
        self.hits: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for h in hits:
            acc, ind, kind, value, n = h.account_id, h.indicator_id, h.kind, h.value, h.n
            first, last, degree, strength, refs = h.first_ts, h.last_ts, h.degree, h.strength, h.intrusion_sets
            self.hits[acc].append(
                {
                    "kind": "indicator_hit",
                    "indicator_id": ind,
                    "indicator_name": names.get(ind),
                    "intrusion_sets": [self.sets[r].name for r in refs if r in self.sets],
                    "account_id": acc,
                    "observable": {"kind": kind, "value": value},
                    "n": int(n),
                    "first_ts": first,
                    "last_ts": last,
                    "degree": int(degree),
                    "strength": float(strength),
                    "text": f"{kind} {value} matches indicator {names.get(ind) or ind}"
                    f" ({int(degree)} account(s) share it; strength {float(strength):.2f})",
                }
            )
        self.pairs: dict[tuple[int, int], list[tuple[int, float]]] = defaultdict(list)
        for p, v, _fam, w in link.pair_parts:
            self.pairs[(int(link.pair_a[p]), int(link.pair_b[p]))].append((v, w))
        self._star_kinds: dict[int, list[str]] | None = None  # account -> kinds of its strong values

    def _kinds_of(self, a: int) -> list[str]:
        if self._star_kinds is None:
            self._star_kinds = defaultdict(list)
            for acc, v in zip(self.link.star_acc.tolist(), self.link.star_val.tolist(), strict=True):
                self._star_kinds[acc].append(self.g.values[v][0])
        return self._star_kinds.get(a, [])

    def _value(self, v: int) -> tuple[str, str]:
        kind, value = self.g.values[v]
        return str(kind), str(value)

    def _link_item(self, a: int, b: int, kind: str, value: str, w: float) -> dict[str, Any]:
        return {
            "kind": "link",
            "account_a": self.g.accounts[a],
            "account_b": self.g.accounts[b],
            "link_kind": kind,
            "value": value,
            "weight": round(w, 4),
            "text": f"{self.g.accounts[a]} and {self.g.accounts[b]} share {kind} {value} (weight {w:.2f})",
        }

    def _path_items(self, path: list[int]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        accs = [(pos, node) for pos, node in enumerate(path) if node < self.n]
        for (p0, a), (p1, b) in itertools.pairwise(accs):
            if p1 - p0 == 2:
                kind, value = self._value(path[p0 + 1] - self.n)
                star = self.link.value_weight[path[p0 + 1] - self.n]
                out.append(self._link_item(a, b, kind, value, float(star)))
            else:
                for v, w in self.pairs.get((min(a, b), max(a, b)), []):
                    kind, value = self._value(v)
                    out.append(self._link_item(a, b, kind, value, w))
        return out

    def account(self, i: int, feats: dict[str, Any]) -> list[dict[str, Any]]:
        acc = self.g.accounts[i]
        items: list[dict[str, Any]] = list(self.hits.get(acc, []))
        ref = self.att.actor_ref[i]
        path = self.att.path[i]
        if ref and len(path) > 1:
            src = self.g.accounts[path[0]]
            items.extend(h for h in self.hits.get(src, []) if src != acc)
            items.extend(self._path_items(path))
        fit = self.att.fit[i]
        if ref and fit is not None:
            items.append(
                {
                    "kind": "behaviour",
                    "signal": "actor_profile",
                    "actor": self.sets[ref].name,
                    "fit": fit.to_dict(),
                    "text": f"behaviour vs {self.sets[ref].name}: TTP cosine {fit.ttp_cosine:.2f},"
                    f" {fit.office_share:.0%} in its office hours,"
                    f" {fit.language_share:.0%} in its languages (score {fit.score:+.2f})",
                }
            )
        if feats:
            if feats.get("rephrases"):
                items.append(
                    {
                        "kind": "behaviour",
                        "signal": "rephrase_after_refusal",
                        "count": feats["rephrases"],
                        "event_ids": feats.get("rephrase_events", []),
                        "text": f"asked again after {feats['rephrases']} refusal(s)",
                    }
                )
            if feats.get("escalations"):
                items.append(
                    {
                        "kind": "behaviour",
                        "signal": "escalation",
                        "count": feats["escalations"],
                        "event_ids": feats.get("escalation_events", []),
                        "text": f"{feats['escalations']} conversation(s) escalated",
                    }
                )
            content = feats.get("content", {})
            top = [t for t in content.get("top_events", []) if t["score"] >= 0.3]
            if top:
                ttps = sorted(feats.get("ttp_mass", {}).items(), key=lambda kv: -kv[1])[:3]
                items.append(
                    {
                        "kind": "content",
                        "event_ids": [t["event_id"] for t in top],
                        "scores": [t["score"] for t in top],
                        "high_events": content.get("high_events", 0),
                        "ttps": [k for k, _ in ttps],
                        "text": f"{content.get('high_events', 0)} request(s) scored >= 0.5;"
                        f" top {top[0]['score']:.2f}; TTPs {', '.join(k for k, _ in ttps) or '-'}",
                    }
                )
        return items

    def cluster(self, label: int, members: list[int]) -> dict[str, Any]:
        kinds: dict[str, int] = defaultdict(int)
        for a in sorted(set(members)):  # star edges in stored order within each member: same counts
            for kind in self._kinds_of(a):
                kinds[kind] += 1
        hits = [h for m in members for h in self.hits.get(self.g.accounts[m], [])]
        fit = self.att.cluster_fit.get(label)
        out: dict[str, Any] = {
            "link_kinds": dict(kinds),
            "indicator_hits": hits[:100],
            "behaviour": fit[2].to_dict() if fit and fit[2] else None,
            "members_with_hits": len({h["account_id"] for h in hits}),
        }
        unnamed = self.att.unnamed_fit.get(label)  # never beside a named fit
        if unnamed is not None:
            ranked, best = unnamed
            out["behaviour"] = {
                **best.to_dict(),
                "profiles_fitted": [
                    {"actor": self.sets[r].name if r in self.sets else r, "score": b} for r, b in ranked
                ],
                "not_named": "no actor named: on behaviour alone the best fit is below the naming score or too close "
                "to the next profile's",
            }
        return out

    def edges(self, cid: dict[int, str]) -> list[tuple[str, str, str, str, str, float]]:
        rows: list[tuple[str, str, str, str, str, float]] = []
        labels = self.link.labels
        order = np.lexsort((self.link.star_acc, self.link.star_val))
        sv, sa, sw = self.link.star_val[order], self.link.star_acc[order], self.link.star_w[order]
        starts = np.flatnonzero(np.r_[True, sv[1:] != sv[:-1]])
        ends = np.r_[starts[1:], len(sv)]
        per_cluster: dict[str, int] = defaultdict(int)
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            if e - s < 2:
                continue
            c = cid.get(int(labels[sa[s]]))
            if c is None:
                continue
            kind, value = self._value(int(sv[s]))
            for j in range(s + 1, e):
                if per_cluster[c] >= MAX_EDGES_PER_CLUSTER:
                    break
                per_cluster[c] += 1
                rows.append(
                    (c, self.g.accounts[sa[s]], self.g.accounts[sa[j]], kind, value, round(float(min(sw[s], sw[j])), 4))
                )
        for (a, b), parts in self.pairs.items():
            c = cid.get(int(labels[a]))
            if c is None:
                continue
            for v, w in parts:
                kind, value = self._value(v)
                rows.append((c, self.g.accounts[a], self.g.accounts[b], kind, value, round(w, 4)))
        return rows
