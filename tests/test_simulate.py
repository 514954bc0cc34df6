"""Tests for the platform simulator (``stormwatch simulate``)."""

from __future__ import annotations

import gzip
import hashlib
import random
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from stormwatch.simulate import simulate
from stormwatch.simulate.cli import simulate_command
from stormwatch.simulate.engine import EventStream
from stormwatch.simulate.intel import build_intel
from stormwatch.simulate.pools import load_pools
from stormwatch.simulate.population import build_population

RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
ROLES = {"system", "user", "assistant", "tool", "developer"}
OUT_FILES = (
    "events.jsonl",
    "accounts.jsonl",
    "intel.stix.json",
    "truth.json",
    "truth_events.jsonl.gz",
    "platform.json",
)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default platform size (2000 accounts, 30 days)."""
    out = tmp_path_factory.mktemp("sim_default")
    simulate(out, seed=3, progress=False)
    return out


@pytest.fixture(scope="module")
def events(default_run: Path) -> list[dict[str, Any]]:
    return _lines(default_run / "events.jsonl")


@pytest.fixture(scope="module")
def truth(default_run: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((default_run / "truth.json").read_bytes())
    return data


def _digest(directory: Path) -> dict[str, str]:
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in OUT_FILES}


def test_deterministic(tmp_path: Path) -> None:
    a = simulate(tmp_path / "a", seed=11, accounts=150, days=5, progress=False)
    b = simulate(tmp_path / "b", seed=11, accounts=150, days=5, progress=False)
    simulate(tmp_path / "c", seed=12, accounts=150, days=5, progress=False)
    assert a.events == b.events > 0
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["events.jsonl"] != _digest(tmp_path / "c")["events.jsonl"]


def test_events_follow_the_schema(events: list[dict[str, Any]]) -> None:
    assert len(events) > 10_000
    ids = set()
    prev = ""
    for ev in events:
        for key in ("event_id", "ts", "account_id"):
            assert isinstance(ev[key], str) and 0 < len(ev[key]) <= 256
        assert RFC3339_Z.match(ev["ts"]), ev["ts"]
        assert ev["ts"] >= prev, "events must be in timestamp order"
        prev = ev["ts"]
        assert ev["event_id"].startswith("evt_") and ev["account_id"].startswith("acct_")
        ids.add(ev["event_id"])
        assert "messages" in ev or "prompt" in ev
        msgs = ev["messages"]
        assert isinstance(msgs, list) and msgs and msgs[-1]["role"] == "user"
        for m in msgs:
            assert m["role"] in ROLES and isinstance(m["content"], str)
        for key in (
            "org_id",
            "end_user_id",
            "api_key_id",
            "ip",
            "user_agent",
            "model",
            "response",
            "conversation_id",
        ):
            if key in ev:
                assert isinstance(ev[key], str)
        assert isinstance(ev.get("refused", False), bool)
        assert isinstance(ev.get("attributes", {}), dict)
    assert len(ids) == len(events)
    assert any(":" in ev["ip"] for ev in events), "some IPv6 expected"
    multi = [ev for ev in events if sum(m["role"] == "assistant" for m in ev["messages"]) >= 1]
    assert len(multi) > len(events) * 0.15, "multi-turn requests carry earlier turns"


def test_accounts_follow_the_schema(default_run: Path) -> None:
    accounts = _lines(default_run / "accounts.jsonl")
    assert len(accounts) == 2000
    for a in accounts:
        assert isinstance(a["account_id"], str) and a["account_id"].startswith("acct_")
        assert RFC3339_Z.match(a["created_at"])
        assert re.match(r"^[A-Z]{2}$", a["country"])
        assert a["status"] in {"active", "suspended", "terminated"}
        for key in (
            "email_domain",
            "email_hash",
            "payment_fingerprint",
            "phone_hash",
            "device_id",
            "signup_ip",
            "org_id",
        ):
            if key in a:
                assert isinstance(a[key], str) and a[key]
    domains = Counter(a["email_domain"] for a in accounts)
    assert domains.most_common(1)[0][0] == "gmail.com"
    orgs = Counter(a["org_id"] for a in accounts if "org_id" in a)
    assert orgs.most_common(1)[0][1] >= 10, "colleagues share an organisation"


def test_intel_bundle_is_valid_stix(default_run: Path) -> None:
    stix2validator = pytest.importorskip("stix2validator")
    text = (default_run / "intel.stix.json").read_text()
    results = stix2validator.validate_string(text)
    objects = getattr(results, "object_results", None) or [results]
    errors = [str(e) for obj in objects for e in obj.errors]
    assert results.is_valid, errors
    bundle = orjson.loads(text)
    types = Counter(o["type"] for o in bundle["objects"])
    assert types["intrusion-set"] == 5 and types["indicator"] >= 5 and types["relationship"] == types["indicator"]
    assert any("ISSUBSET" in o.get("pattern", "") for o in bundle["objects"]) or types["indicator"] > 0
    refs = {o["id"] for o in bundle["objects"]}
    for o in bundle["objects"]:
        if o["type"] == "relationship":
            assert o["source_ref"] in refs and o["target_ref"] in refs
    apt28 = next(o for o in bundle["objects"] if o.get("name") == "Forest Blizzard")
    assert apt28["external_references"][0]["external_id"] == "G0007"


def test_truth_covers_every_account_and_event(
    default_run: Path, events: list[dict[str, Any]], truth: dict[str, Any]
) -> None:
    accounts = _lines(default_run / "accounts.jsonl")
    assert set(truth["accounts"]) == {a["account_id"] for a in accounts}
    with gzip.open(default_run / "truth_events.jsonl.gz") as fh:
        tev = [orjson.loads(line) for line in fh]
    assert [t["event_id"] for t in tev] == [e["event_id"] for e in events]
    assert all(t["account_id"] == e["account_id"] for t, e in zip(tev, events, strict=True))
    assert truth["seed"] == 3 and truth["params"]["accounts"] == 2000
    assert truth["counts"]["events"] == len(events)
    mal = [t for t in tev if t["malicious"]]
    assert mal and all(truth["accounts"][t["account_id"]]["is_actor"] for t in mal)
    assert all(t["ttp"] for t in mal)
    # actors' traffic is mostly mundane
    actor_ev = [t for t in tev if truth["accounts"][t["account_id"]]["is_actor"]]
    share = 1 - len(mal) / len(actor_ev)
    assert 0.45 <= share <= 0.8, share
    kinds = Counter(t["kind"] for t in mal)
    assert kinds["rephrase"] > 0 and kinds["op_step"] > 0


def test_actor_working_hours(events: list[dict[str, Any]], truth: dict[str, Any]) -> None:
    offsets = {name: a["utc_offset"] for name, a in truth["actors"].items()}
    office = total = 0
    for ev in events:
        acc = truth["accounts"][ev["account_id"]]
        if not acc["is_actor"]:
            continue
        ts = datetime.fromisoformat(ev["ts"].replace("Z", "+00:00")).astimezone(UTC)
        local = ts + timedelta(hours=offsets[acc["actor"]])
        total += 1
        office += local.weekday() < 5 and 8 <= local.hour < 19
    assert total > 300
    assert office / total > 0.85, office / total


def test_shared_infrastructure_inside_operations(
    default_run: Path, events: list[dict[str, Any]], truth: dict[str, Any]
) -> None:
    accounts = {a["account_id"]: a for a in _lines(default_run / "accounts.jsonl")}
    ips: dict[str, set[str]] = defaultdict(set)
    for ev in events:
        ips[ev["account_id"]].add(ev["ip"])
    for op in truth["operations"]:
        members = [m for m in op["accounts"] if m in ips]
        assert len(op["accounts"]) >= 2
        shared = Counter()
        for m in members:
            a = accounts[m]
            for key in ("device_id", "payment_fingerprint", "phone_hash"):
                if key in a:
                    shared[(key, a[key])] += 1
            for ip in ips[m]:
                shared[("ip", ip)] += 1
        assert max(shared.values()) >= 2, op["operation"]
    # churn: some actor accounts are created during the month
    start = truth["time_range"]["start"]
    actor_ids = [k for k, v in truth["accounts"].items() if v["is_actor"]]
    assert any(accounts[k]["created_at"] > start for k in actor_ids)


def test_some_actor_accounts_not_named_in_intel(truth: dict[str, Any]) -> None:
    actors = [v for v in truth["accounts"].values() if v["is_actor"]]
    named = [v for v in actors if v["named_in_intel"]]
    assert 0 < len(named) < len(actors)
    assert any(v["named_in_intel"] for v in truth["accounts"].values() if not v["is_actor"]), "noisy intel"


def test_vpn_crowds_and_security_pros(events: list[dict[str, Any]], truth: dict[str, Any]) -> None:
    per_ip: dict[str, set[str]] = defaultdict(set)
    for ev in events:
        per_ip[ev["ip"]].add(ev["account_id"])
    assert max(len(s) for s in per_ip.values()) >= 100
    assert truth["counts"]["personas"]["security_pro"] > 20
    with_sec = {ev["account_id"] for ev in events if truth["accounts"][ev["account_id"]]["persona"] == "security_pro"}
    assert len(with_sec) > 20


def test_target_events_scales_volume(tmp_path: Path) -> None:
    s = simulate(tmp_path / "t", seed=1, accounts=300, days=7, target_events=20_000, progress=False)
    assert 16_000 <= s.events <= 24_000, s.events


def test_stream_is_lazy() -> None:
    """The event stream is a generator: the first events come before the rest is generated."""
    start = datetime(2024, 1, 8, tzinfo=UTC).timestamp()
    pop = build_population(random.Random("x"), 5000, start, 365)
    intel = build_intel(pop, random.Random("y"), start, 0)
    stream = EventStream(pop, load_pools(), 0, start, 365, intel.ips)
    it = stream.run()
    first = [next(it) for _ in range(200)]
    assert len(first) == 200
    # only the first day(s) were materialised, nowhere near a year of traffic
    assert stream.stats.events < 20_000


def test_cli_json(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        simulate_command,
        ["--out", str(tmp_path / "o"), "--seed", "2", "--accounts", "100", "--days", "3", "--json"],
    )
    assert res.exit_code == 0, res.output
    summary = orjson.loads(res.output)
    assert summary["accounts"] == 100 and summary["events"] > 0
    assert Path(summary["files"]["events.jsonl"]).exists()
    res = CliRunner().invoke(simulate_command, ["--out", str(tmp_path / "p"), "--accounts", "100", "--days", "2"])
    assert res.exit_code == 0 and "actor accounts" in res.output
