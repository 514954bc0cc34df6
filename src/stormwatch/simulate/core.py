"""``simulate()``: build a platform, run it for ``days`` and write the files of ``docs/simulator.md``."""

from __future__ import annotations

import gzip
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from stormwatch.simulate.engine import EventStream
from stormwatch.simulate.intel import build_intel
from stormwatch.simulate.pools import Pools, load_pools
from stormwatch.simulate.population import ACTORS, DAY, Population, build_population, sha
from stormwatch.simulate.settings import SimSettings

GENERATOR_VERSION = "1.0.0"
DEFAULT_START = datetime(2024, 1, 8, tzinfo=UTC)  # a Monday; fixed so runs are reproducible
WRITE_BATCH = 4096


@dataclass(slots=True)
class SimSummary:
    """What a run produced."""

    out_dir: str
    seed: int
    accounts: int
    days: int
    start: str
    end: str
    events: int
    malicious_events: int
    refused_events: int
    actor_events: int
    benign_accounts: int
    actor_accounts: int
    operations: int
    intel_indicators: int
    actor_accounts_named_in_intel: int
    personas: dict[str, int] = field(default_factory=dict)
    actors: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    settings_family: str = "default"
    styles: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scale_volume(pop: Population, start: float, days: int, target: int) -> float:
    end = start + days * DAY
    expected = 0.0
    for a in pop.accounts:
        active = max(0.0, min(end, a.active_until) - max(start, a.active_from)) / DAY
        week = (5 + 2 * a.weekend_factor) / 7
        expected += a.sessions_per_day * week * active * a.events_per_session
    factor = target / expected if expected > 0 else 1.0
    for a in pop.accounts:
        a.sessions_per_day *= factor
    return factor


def _account_record(a: Any, salt: str) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "account_id": a.account_id,
        "created_at": _iso(a.created_at),
        "email_domain": a.email_domain,
        "email_hash": sha(salt + a.email.lower()),
    }
    if a.payment:
        rec["payment_fingerprint"] = a.payment
    if a.phone:
        rec["phone_hash"] = sha(salt + a.phone)
    rec.update(device_id=a.device_id, signup_ip=a.signup_ip, country=a.country)
    if a.org_id:
        rec["org_id"] = a.org_id
    rec["status"] = a.status
    return rec


def simulate(
    out_dir: Path,
    seed: int,
    accounts: int = 2000,
    days: int = 30,
    start: datetime | None = None,
    target_events: int | None = None,
    progress: bool = True,
    settings: SimSettings | None = None,
    pools: Pools | None = None,
) -> SimSummary:
    """Simulate ``accounts`` accounts for ``days`` days; write the output files into ``out_dir``.

    ``settings`` (default ``SimSettings()``, today's generator) sets the generator's knobs; see
    :mod:`stormwatch.simulate.settings`. ``pools``: the prompt pools (default the vendored ones;
    :meth:`~stormwatch.simulate.pools.Pools.with_prompts` swaps in other prompts).
    """
    settings = settings or SimSettings()
    if accounts < 20:
        raise ValueError("accounts must be at least 20")
    if days < 1:
        raise ValueError("days must be at least 1")
    t_wall = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    st = (start or DEFAULT_START).astimezone(UTC)
    t0 = st.timestamp()
    t1 = t0 + days * DAY
    pools = pools or load_pools()
    pop = build_population(random.Random(f"{seed}:population"), accounts, t0, days, settings)
    factor = _scale_volume(pop, t0, days, target_events) if target_events else 1.0
    intel = build_intel(pop, random.Random(f"{seed}:intel"), t0, seed)

    files = {
        name: str(out_dir / name)
        for name in (
            "events.jsonl",
            "accounts.jsonl",
            "intel.stix.json",
            "truth.json",
            "truth_events.jsonl.gz",
            "platform.json",
        )
    }
    with open(files["accounts.jsonl"], "wb") as fh:
        fh.write(b"".join(orjson.dumps(_account_record(a, pop.salt)) + b"\n" for a in pop.accounts))
    (out_dir / "intel.stix.json").write_bytes(orjson.dumps(intel.bundle, option=orjson.OPT_INDENT_2) + b"\n")

    stream = EventStream(pop, pools, seed, t0, days, intel.ips)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=days, unit="day", desc="simulate", leave=False)
    first_ts: bytes | None = None
    last_line = b""
    with (
        open(files["events.jsonl"], "wb") as ev_fh,
        open(files["truth_events.jsonl.gz"], "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=4, mtime=0) as tz,
    ):
        ev_buf: list[bytes] = []
        tr_buf: list[bytes] = []
        for line, truth_line in stream.run(on_day=(lambda _d: bar.update(1)) if bar else None):
            ev_buf.append(line)
            tr_buf.append(truth_line)
            if len(ev_buf) >= WRITE_BATCH:
                if first_ts is None:
                    first_ts = ev_buf[0]
                ev_fh.write(b"\n".join(ev_buf) + b"\n")
                tz.write(b"\n".join(tr_buf) + b"\n")
                last_line = ev_buf[-1]
                ev_buf, tr_buf = [], []
        if ev_buf:
            if first_ts is None:
                first_ts = ev_buf[0]
            ev_fh.write(b"\n".join(ev_buf) + b"\n")
            tz.write(b"\n".join(tr_buf) + b"\n")
            last_line = ev_buf[-1]
    if bar:
        bar.close()

    # named_in_intel: any indicator matches the account's own observable infrastructure
    named: dict[int, bool] = {}
    for a in pop.accounts:
        named[a.idx] = (
            a.idx in stream.named_accounts
            or a.signup_ip in intel.ips
            or a.email in intel.emails
            or a.email_domain in intel.domains
        )
    stats = stream.stats
    persona_counts = Counter(a.persona for a in pop.accounts if a.actor is None)
    actor_counts = Counter(a.actor for a in pop.accounts if a.actor)
    actor_named = sum(1 for a in pop.accounts if a.actor and named[a.idx])
    style_counts = Counter(a.style for a in pop.accounts if a.actor)
    firms: dict[str, list[str]] = {}
    for a in pop.accounts:
        if a.firm:
            firms.setdefault(a.firm, []).append(a.account_id)
    (out_dir / "platform.json").write_bytes(
        orjson.dumps(
            {
                "note": "What the platform knows: how it hashes identifiers; ASN-like IP enrichment.",
                "email_hash": {
                    "algorithm": "sha256",
                    "input": "salt + lowercase e-mail address",
                    "salt": pop.salt,
                },
                "phone_hash": {"algorithm": "sha256", "input": "salt + E.164 number", "salt": pop.salt},
                "ip_providers": [
                    {
                        "name": p.name,
                        "kind": p.kind,
                        "country": p.country,
                        "prefixes": p.prefixes,
                        "ipv6_prefix": f"{p.v6_prefix}::/48" if p.v6_prefix else None,
                    }
                    for p in pop.providers
                ],
            },
            option=orjson.OPT_INDENT_2,
        )
        + b"\n"
    )

    def ts_of(line: bytes | None) -> str | None:
        return str(orjson.loads(line)["ts"]) if line else None

    truth: dict[str, Any] = {
        "generator": {"name": "stormwatch.simulate", "version": GENERATOR_VERSION},
        "seed": seed,
        "settings": settings.to_dict(),
        "settings_family": settings.family(),
        "settings_outside_training": settings.outside_training(),
        "params": {
            "accounts": accounts,
            "days": days,
            "start": _iso(t0),
            "target_events": target_events,
            "volume_factor": round(factor, 6),
        },
        "time_range": {
            "start": _iso(t0),
            "end": _iso(t1),
            "first_event": ts_of(first_ts),
            "last_event": ts_of(last_line or None),
        },
        "event_truth": {
            "file": "truth_events.jsonl.gz",
            "format": "gzip-compressed JSON Lines, same order as events.jsonl",
            "fields": {
                "event_id": "joins events.jsonl",
                "account_id": "",
                "malicious": "serves an actor operation",
                "content": "benign | dual_use | malicious: how the text alone reads",
                "ttp": "LLMT-xx for operational requests, else null",
                "source": "dataset row id, template:<...> or translate:<row id>",
                "kind": "general | code | security | batch | mundane | op_request | op_step | rephrase | ...",
                "operation": "operation id for actor accounts, else null",
            },
        },
        "counts": {
            "events": stats.events,
            "malicious_events": stats.malicious,
            "refused": stats.refused,
            "actor_events": stats.actor_events,
            "by_kind": dict(sorted(stats.by_kind.items())),
            "malicious_by_ttp": dict(sorted(stats.by_ttp.items())),
            "personas": dict(sorted(persona_counts.items())),
            "actors": dict(sorted(actor_counts.items())),
            "actor_styles": dict(sorted(style_counts.items())),
        },
        "actors": {
            s.name: {
                "country": s.country,
                "utc_offset": s.tz,
                "attack_id": s.attack_id,
                "aliases": list(s.aliases),
                "ttp_mix": dict(s.ttp_mix),
            }
            for s in ACTORS
        },
        "operations": [
            {
                "operation": op.op_id,
                "actor": op.actor.name,
                "style": op.style,
                "accounts": [pop.accounts[i].account_id for i in op.accounts],
                "infrastructure": {
                    "exposed_ips": op.exposed_ips,
                    "hidden_ips": op.hidden_ips,
                    "vps_cidr": op.cidrs[0][0],
                    "vpn_exits": op.vpn_exits,
                    "devices": op.devices,
                    "payments": op.payments,
                    "rare_domain": op.rare_domain,
                    "user_agents": op.uas,
                },
            }
            for op in pop.operations
        ],
        "pentest_firms": [
            {"org_id": oid, "domain": pop.orgs[oid], "accounts": ids, "infrastructure": pop.firm_infra[oid]}
            for oid, ids in sorted(firms.items())
        ],
        "ctf_weekends": [{"start": _iso(a), "end": _iso(b)} for a, b in pop.ctf_weekends],
        "intel": {"file": "intel.stix.json", "indicators": intel.indicator_count, "noise": intel.notes},
        "accounts": {
            a.account_id: {
                "persona": a.persona,
                "is_actor": a.actor is not None,
                "actor": a.actor,
                "operation": a.operation,
                "style": a.style if a.actor else None,
                "firm": a.firm,
                "cluster": a.operation or None,
                "named_in_intel": named[a.idx],
                "infra_hidden": a.hidden if a.actor else None,
                "infra_isolated": a.isolated if a.actor else None,
                "active_from": _iso(a.active_from),
                "active_until": _iso(a.active_until),
            }
            for a in pop.accounts
        },
    }
    (out_dir / "truth.json").write_bytes(orjson.dumps(truth, option=orjson.OPT_INDENT_2) + b"\n")
    return SimSummary(
        out_dir=str(out_dir),
        seed=seed,
        accounts=len(pop.accounts),
        days=days,
        start=_iso(t0),
        end=_iso(t1),
        events=stats.events,
        malicious_events=stats.malicious,
        refused_events=stats.refused,
        actor_events=stats.actor_events,
        benign_accounts=sum(persona_counts.values()),
        actor_accounts=sum(actor_counts.values()),
        operations=len(pop.operations),
        intel_indicators=intel.indicator_count,
        actor_accounts_named_in_intel=actor_named,
        personas=dict(sorted(persona_counts.items())),
        actors=dict(sorted(actor_counts.items())),
        files=files,
        wall_s=round(time.perf_counter() - t_wall, 3),
        settings=settings.to_dict(),
        settings_family=settings.family(),
        styles=dict(sorted(style_counts.items())),
    )
