"""The event stream: plans sessions day by day and emits events in global timestamp order.

Memory stays flat: only one day's session *plan* (start time, account, seed) and the events of
conversations still open at the current time are held; everything else is already on disk.
Sessions are materialised in start order and their events go through a heap, so a line is
written as soon as no later-starting session can produce an earlier event.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from stormwatch.simulate import templates as T
from stormwatch.simulate.pools import Pools
from stormwatch.simulate.population import DAY, Account, Population
from stormwatch.simulate.sessions import HARD_PERSONAS, SessionMaker, Turn

MAX_CONTEXT = 8  # earlier messages kept in a request (clients truncate long threads)


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class TsFormatter:
    """Fast RFC 3339 (millisecond, ``Z``) formatting of epoch seconds."""

    def __init__(self) -> None:
        self._days: dict[int, str] = {}

    def __call__(self, t: float) -> str:
        ms = int(t * 1000)
        sec, milli = divmod(ms, 1000)
        day, sod = divmod(sec, 86400)
        prefix = self._days.get(day)
        if prefix is None:
            prefix = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%dT")
            self._days[day] = prefix
        h, rem = divmod(sod, 3600)
        m, s = divmod(rem, 60)
        return f"{prefix}{h:02d}:{m:02d}:{s:02d}.{milli:03d}Z"


@dataclass(slots=True)
class Stats:
    events: int = 0
    malicious: int = 0
    refused: int = 0
    actor_events: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_ttp: dict[str, int] = field(default_factory=dict)


Item = tuple[float, int, bytes, bytes]


class EventStream:
    """Generates ``(events.jsonl line, truth line)`` pairs in timestamp order."""

    def __init__(self, pop: Population, pools: Pools, seed: int, start: float, days: int, named_ips: set[str]) -> None:
        self.pop = pop
        self.maker = SessionMaker(pools, pop.settings)
        self.seed = seed
        self.start = start
        self.days = days
        self.named_ips = named_ips
        self.named_accounts: set[int] = set()
        self.stats = Stats()
        self.fmt = TsFormatter()
        self._seq = 0
        mrng = random.Random(f"{seed}:mundane")
        lo, hi = pop.settings.actor_mundane_min, pop.settings.actor_mundane_max
        self.mundane = {a.idx: mrng.uniform(lo, hi) for a in pop.accounts if a.actor}
        self.batch = [e for e in pools.get("assistant") + pools.get("general") if len(e[1]) < 400]

    # ---- planning ------------------------------------------------------------------------
    def plan_day(self, day: int) -> list[tuple[float, int, int]]:
        rng = random.Random(f"{self.seed}:plan:{day}")
        d0 = self.start + day * DAY
        d1 = d0 + DAY
        out: list[tuple[float, int, int]] = []
        for acc in self.pop.accounts:
            if acc.active_until <= d0 or acc.active_from >= d1 or acc.sessions_per_day <= 0:
                continue
            local_wd = datetime.fromtimestamp(d0 + 43200 + acc.tz * 3600, UTC).weekday()
            lam = acc.sessions_per_day * (acc.weekend_factor if local_wd >= 5 else 1.0)
            if acc.bursts:  # CTF weekends
                for b0, b1, x in acc.bursts:
                    if b0 < d1 and d0 < b1:
                        lam *= x
            n = poisson(rng, lam)
            if not n:
                continue
            cum = acc.profile_cum_utc
            total = cum[-1]
            for _ in range(n):
                hour = bisect_right(cum, rng.random() * total)
                t = d0 + min(hour, 23) * 3600 + rng.random() * 3600
                if acc.active_from <= t < acc.active_until:
                    out.append((t, acc.idx, rng.getrandbits(32)))
        out.sort()
        return out

    # ---- materialisation -----------------------------------------------------------------
    def _session_items(self, rng: random.Random, acc: Account, t: float) -> Iterator[Item]:
        if acc.actor:
            turns = self.maker.actor_session(rng, acc, self.mundane[acc.idx])
        elif acc.persona in HARD_PERSONAS:
            turns = self.maker.hard_session(rng, acc, t)
        elif acc.persona == "heavy_api" and rng.random() < 0.85:
            yield from self._batch_items(rng, acc, t)
            return
        else:
            turns = self.maker.benign_session(rng, acc)
        api = rng.random() < acc.api_share
        ua = (
            acc.uas[-1]
            if (api and not acc.actor)
            else (acc.uas[0] if acc.actor and api else rng.choice(acc.uas[:-1] or acc.uas))
        )
        ip = acc.ips[bisect_right(acc.ip_cum, rng.random() * acc.ip_cum[-1])]
        if ip in self.named_ips:
            self.named_accounts.add(acc.idx)
        model = acc.models[bisect_right(acc.model_cum, rng.random() * acc.model_cum[-1])]
        key = rng.choice(acc.api_keys)
        ctx: list[dict[str, str]] = []
        if api and rng.random() < 0.6:
            ctx.append({"role": "system", "content": rng.choice(T.SYSTEM_PROMPTS)})
        conv = f"conv_{rng.getrandbits(64):016x}"
        attrs: dict[str, object] = {"client": "api" if api else "web"}
        if not api:
            attrs["accept_language"] = acc.accept_language
        end_user = rng.choice(acc.end_users) if acc.end_users else None
        for turn in turns:
            user = {"role": "user", "content": turn.text}
            if len(ctx) > MAX_CONTEXT:
                ctx = ([ctx[0]] if ctx[0]["role"] == "system" else []) + ctx[-MAX_CONTEXT:]
            messages = [*ctx, user]
            yield self._item(rng, acc, t, ip, ua, model, key, messages, turn, conv, attrs, end_user)
            ctx = [*messages, {"role": "assistant", "content": turn.response}]
            t += rng.uniform(8, 90) + len(turn.response) * 0.02 + rng.expovariate(1 / 60.0)

    def _batch_items(self, rng: random.Random, acc: Account, t: float) -> Iterator[Item]:
        system, tmpl = rng.choice(T.BATCH_TASKS)
        n = max(1, int(rng.lognormvariate(math.log(acc.events_per_session * 1.15) - 0.32, 0.8)))
        ip = acc.ips[-1]
        key = acc.api_keys[-1]
        model = "gpt-4o-mini" if rng.random() < 0.7 else "gpt-3.5-turbo"
        attrs: dict[str, object] = {"client": "api", "batch": True}
        for _ in range(n):
            sid, text = rng.choice(self.batch)
            turn = Turn(
                tmpl.format(text=text),
                "label: " + rng.choice(["positive", "negative", "neutral", "other"]),
                False,
                False,
                "benign",
                None,
                sid,
                "batch",
            )
            messages = [{"role": "system", "content": system}, {"role": "user", "content": turn.text}]
            end_user = rng.choice(acc.end_users) if acc.end_users else None
            yield self._item(rng, acc, t, ip, acc.uas[-1], model, key, messages, turn, None, attrs, end_user)
            t += rng.uniform(0.05, 2.5)

    def _item(
        self,
        rng: random.Random,
        acc: Account,
        t: float,
        ip: str,
        ua: str,
        model: str,
        key: str,
        messages: list[dict[str, str]],
        turn: Turn,
        conv: str | None,
        attrs: dict[str, object],
        end_user: str | None,
    ) -> Item:
        eid = f"evt_{rng.getrandbits(96):024x}"
        ev: dict[str, object] = {"event_id": eid, "ts": self.fmt(t), "account_id": acc.account_id}
        if acc.org_id:
            ev["org_id"] = acc.org_id
        if end_user:
            ev["end_user_id"] = end_user
        ev.update(api_key_id=key, ip=ip, user_agent=ua, model=model, messages=messages, response=turn.response)
        if conv:
            ev["conversation_id"] = conv
        ev["refused"] = turn.refused
        ev["attributes"] = attrs
        truth = {
            "event_id": eid,
            "account_id": acc.account_id,
            "malicious": turn.malicious,
            "content": turn.content,
            "ttp": turn.ttp,
            "source": turn.source,
            "kind": turn.kind,
            "operation": acc.operation,
        }
        st = self.stats
        st.events += 1
        st.malicious += turn.malicious
        st.refused += turn.refused
        if acc.actor:
            st.actor_events += 1
        st.by_kind[turn.kind] = st.by_kind.get(turn.kind, 0) + 1
        if turn.ttp and turn.malicious:
            st.by_ttp[turn.ttp] = st.by_ttp.get(turn.ttp, 0) + 1
        self._seq += 1
        return (t, self._seq, orjson.dumps(ev), orjson.dumps(truth))

    # ---- the stream ----------------------------------------------------------------------
    def run(self, on_day: Callable[[int], None] | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Yield (event line, truth line) in timestamp order. Lazy: nothing runs until iterated."""
        heap: list[Item] = []
        accounts = self.pop.accounts
        for day in range(self.days):
            mrng = random.Random(f"{self.seed}:materialise:{day}")
            for t, idx, _sseed in self.plan_day(day):
                while heap and heap[0][0] < t:
                    _, _, line, truth = heapq.heappop(heap)
                    yield line, truth
                for item in self._session_items(mrng, accounts[idx], t):
                    heapq.heappush(heap, item)
            if on_day:
                on_day(day)
        while heap:
            _, _, line, truth = heapq.heappop(heap)
            yield line, truth
