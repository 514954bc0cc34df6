"""Simulator settings: defaults reproduce generator 1.0.0, randomisation, held-out presets, hard populations.

Every property of the hard populations is measured from the written files (events, accounts, truth).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from stormwatch.simulate import simulate
from stormwatch.simulate.cli import simulate_command
from stormwatch.simulate.settings import KNOBS, PRESETS, SettingsError, SimSettings

FILES = ("events.jsonl", "accounts.jsonl", "intel.stix.json", "platform.json", "truth_events.jsonl.gz", "truth.json")
# sha256 of the files generator 1.0.0 (before settings existed) wrote for seed 5, 300 accounts, 4 days;
# truth_events is hashed decompressed (gzip bytes depend on the zlib build). If a generator change is
# intentional, bump GENERATOR_VERSION and update these.
GOLDEN_1_0_0 = {
    "events.jsonl": "172c69f1e0539e7e79ac5f2ceb3c000c0a77e93535bcc5257d906bbbc252955a",
    "accounts.jsonl": "867a2b6b80e33a3fc29433d6fa3ceddc4414bac1a16433aeb49e71a998017762",
    "intel.stix.json": "fce84cc44f1af95ca97d44427ff16ff19b841639b77af478300f5f83f229d207",
    "platform.json": "ecdfbcdafb8e5c38ba96f0592a4e53c8a89ab40a34909225367a1afda67811ae",
    "truth_events.jsonl.gz": "5fe120e9fcd0d4978d97d9711f41fc01d6b3c720ad4730920721bed9cbdef8f3",
}
HARD = SimSettings(
    pentest_firms=12,
    pentest_size_min=3,
    pentest_size_max=5,
    red_teamer_share=0.02,
    ctf_student_share=0.03,
    imitates_researcher_share=0.5,
    account_per_task_share=0.5,
    actor_isolated_p=0.3,
)


def _digest(d: Path) -> dict[str, str]:
    out = {}
    for name in FILES:
        data = (d / name).read_bytes()
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        out[name] = hashlib.sha256(data).hexdigest()
    return out


def _lines(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        return [orjson.loads(line) for line in fh.read().splitlines() if line]


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---- defaults ------------------------------------------------------------------------------------
def test_defaults_reproduce_generator_1_0_0(tmp_path: Path) -> None:
    simulate(tmp_path / "none", seed=5, accounts=300, days=4, progress=False)
    simulate(tmp_path / "default", seed=5, accounts=300, days=4, progress=False, settings=SimSettings())
    a, b = _digest(tmp_path / "none"), _digest(tmp_path / "default")
    assert a == b
    for name, digest in GOLDEN_1_0_0.items():
        assert a[name] == digest, f"{name} differs from generator 1.0.0 with default settings"
    truth = orjson.loads((tmp_path / "none" / "truth.json").read_bytes())
    assert truth["settings"] == SimSettings().to_dict()
    assert truth["settings_family"] == "default" and truth["pentest_firms"] == []
    assert {v["style"] for v in truth["accounts"].values() if v["is_actor"]} == {"standard"}
    assert set(truth["counts"]["personas"]) <= {
        "everyday",
        "developer",
        "student",
        "security_pro",
        "marketer",
        "heavy_api",
    }


# ---- settings objects ------------------------------------------------------------------------------
def test_randomized_is_deterministic_and_varies() -> None:
    assert SimSettings.randomized(1) == SimSettings.randomized(1)
    draws = [SimSettings.randomized(s) for s in range(60)]
    assert len(set(draws)) == 60
    for name in KNOBS:
        assert len({getattr(d, name) for d in draws}) > 1, f"{name} never varies"
    for d in draws:
        assert d.outside_training() == [], "randomized() draws only from the training ranges"
        assert SimSettings.from_dict(json.loads(json.dumps(d.to_dict()))) == d
    assert sum(d.hard_populations for d in draws) >= 55
    assert sum(d.pentest_firms > 0 for d in draws) >= 30


def test_presets_are_held_out() -> None:
    assert set(PRESETS) >= {"pentest-heavy", "vpn-heavy", "quiet-actors", "imitators", "multilingual"}
    for name in PRESETS:
        p = SimSettings.preset(name)
        assert p.outside_training(), f"preset {name} lies inside the training ranges"
        assert p.family() == f"preset:{name}"
        assert SimSettings.from_dict(p.to_dict()) == p
    with pytest.raises(SettingsError, match="no-such"):
        SimSettings.preset("no-such")


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"pentest_firmz": 2}, "pentest_firmz"),
        ({"actor_hidden_p": 1.5}, "actor_hidden_p"),
        ({"vpn_user_p": "0.2"}, "vpn_user_p"),
        ({"pentest_firms": True}, "pentest_firms"),
        ({"pentest_firms": 2.5}, "pentest_firms"),
        ({"benign_rate_scale": float("nan")}, "benign_rate_scale"),
        ({"op_size_min": 12, "op_size_max": 5}, "op_size_min"),
    ],
)
def test_from_dict_rejects_bad_input_naming_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(SettingsError, match=key):
        SimSettings.from_dict(data, where="s.json")
    with pytest.raises(SettingsError, match="object"):
        SimSettings.from_dict([1, 2])


def test_from_dict_partial_and_ints() -> None:
    s = SimSettings.from_dict({"pentest_firms": 2.0, "vpn_user_p": 0})
    assert s.pentest_firms == 2 and isinstance(s.pentest_firms, int)
    assert s.vpn_user_p == 0.0 and s.actor_rate_median == SimSettings().actor_rate_median
    assert s.family() == "custom"


# ---- hard populations, measured from the files ------------------------------------------------------
@pytest.fixture(scope="module")
def hard_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim_hard")
    simulate(out, seed=21, accounts=400, days=10, progress=False, settings=HARD)  # Mon 8 .. Thu 18 Jan
    return out


@pytest.fixture(scope="module")
def hard(hard_run: Path) -> dict[str, Any]:
    truth = orjson.loads((hard_run / "truth.json").read_bytes())
    events = _lines(hard_run / "events.jsonl")
    tevents = _lines(hard_run / "truth_events.jsonl.gz")
    accounts = {a["account_id"]: a for a in _lines(hard_run / "accounts.jsonl")}
    by_acc: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for ev, te in zip(events, tevents, strict=True):
        assert ev["event_id"] == te["event_id"]
        by_acc[ev["account_id"]].append((ev, te))
    return {"truth": truth, "by_acc": by_acc, "accounts": accounts}


def _persona(hard: dict[str, Any], persona: str) -> list[str]:
    return [a for a, v in hard["truth"]["accounts"].items() if v["persona"] == persona and not v["is_actor"]]


def test_hard_run_is_deterministic_and_records_settings(hard_run: Path, tmp_path: Path) -> None:
    simulate(tmp_path / "again", seed=21, accounts=400, days=10, progress=False, settings=HARD)
    assert _digest(tmp_path / "again") == _digest(hard_run)
    truth = orjson.loads((hard_run / "truth.json").read_bytes())
    assert SimSettings.from_dict(truth["settings"]) == HARD
    assert len(truth["accounts"]) == 400


def test_pentest_firms_share_nat_and_domain_and_are_benign(hard: dict[str, Any]) -> None:
    firms = hard["truth"]["pentest_firms"]
    assert len(firms) == 2  # 12 per 2000 accounts at 400 accounts
    assert sorted(_persona(hard, "pentest_firm")) == sorted(a for f in firms for a in f["accounts"])
    for firm in firms:
        members = firm["accounts"]
        assert len(members) >= 3
        recs = [hard["accounts"][a] for a in members]
        assert {r["email_domain"] for r in recs} == {firm["domain"]}
        assert {r["org_id"] for r in recs} == {firm["org_id"]}
        assert len({r["signup_ip"] for r in recs}) == 1, "one corporate NAT egress"
        ip_users: dict[str, set[str]] = defaultdict(set)
        for a in members:
            for ev, _ in hard["by_acc"][a]:
                ip_users[ev["ip"]].add(a)
        nat = firm["infrastructure"]["nat_ips"]
        assert recs[0]["signup_ip"] in nat
        assert len(set().union(*(ip_users[ip] for ip in nat))) >= 2, "firm accounts meet on the NAT"
        assert max(ip_users, key=lambda ip: len(ip_users[ip])) in nat, "the NAT is the firm's most shared IP"
    evs = [te for a in _persona(hard, "pentest_firm") for _, te in hard["by_acc"][a]]
    assert not any(te["malicious"] for te in evs), "pentesters are benign: never enforce them"
    assert sum(te["content"] != "benign" for te in evs) > 0.4 * len(evs)
    assert any(te["kind"] == "rephrase" for te in evs)


def _rephrases_after_refusal(rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> int:
    refused_convs = set()
    n = 0
    for ev, te in rows:  # events are in time order
        conv = ev.get("conversation_id")
        if te["kind"] == "rephrase" and conv in refused_convs:
            n += 1
        if ev["refused"]:
            refused_convs.add(conv)
    return n


def test_red_teamers_rephrase_after_refusals(hard: dict[str, Any]) -> None:
    reds = _persona(hard, "red_teamer")
    assert len(reds) == 8
    counts = [_rephrases_after_refusal(hard["by_acc"][a]) for a in reds]
    assert sum(counts) >= 2 * len(reds) and sum(c > 0 for c in counts) >= len(reds) // 2
    evs = [te for a in reds for _, te in hard["by_acc"][a]]
    assert not any(te["malicious"] for te in evs)
    assert any(te["kind"] == "escalation" for te in evs)


def test_ctf_students_burst_on_the_ctf_weekend(hard: dict[str, Any]) -> None:
    (weekend,) = hard["truth"]["ctf_weekends"]
    w0, w1 = _ts(weekend["start"]), _ts(weekend["end"])
    assert datetime.fromtimestamp(w0, UTC).weekday() == 4 and w1 - w0 == 56 * 3600
    students = _persona(hard, "ctf_student")
    assert len(students) == 12
    inside = outside = 0
    for a in students:
        for ev, te in hard["by_acc"][a]:
            if te["kind"] == "ctf":
                if w0 <= _ts(ev["ts"]) < w1:
                    inside += 1
                else:
                    outside += 1
    # the weekend is 56 h of 240 h; a burst puts most exploit questions inside it
    assert inside > 2 * outside > 0


def test_one_account_per_task_actors(hard: dict[str, Any]) -> None:
    truth = hard["truth"]
    ops = [op for op in truth["operations"] if op["style"] == "account_per_task"]
    assert ops
    n_events = []
    for op in ops:
        members = op["accounts"]
        assert len(members) >= 4
        recs = [hard["accounts"][a] for a in members]
        assert len({r["signup_ip"] for r in recs}) == len(recs), "no shared IPs"
        assert len({r["device_id"] for r in recs}) == len(recs), "no shared devices"
        assert not any("payment_fingerprint" in r for r in recs)
        for a in members:
            info = truth["accounts"][a]
            assert info["style"] == "account_per_task" and info["is_actor"]
            assert _ts(info["active_until"]) - _ts(info["active_from"]) <= 3 * 86400 + 1
            rows = hard["by_acc"][a]
            n_events.append(len(rows))
            assert len({ev["ip"] for ev, _ in rows}) <= 1
            assert len({te["ttp"] for _, te in rows if te["ttp"]}) <= 1, "one TTP per task account"
    assert statistics.median(n_events) <= HARD.task_requests_max
    assert max(n_events) <= 4 * HARD.task_requests_max


def test_imitating_actors_use_defender_framing(hard: dict[str, Any]) -> None:
    truth = hard["truth"]
    imitators = [a for a, v in truth["accounts"].items() if v["style"] == "imitates_researcher"]
    assert imitators
    rows = [te for a in imitators for _, te in hard["by_acc"][a]]
    framed = [te for te in rows if te["source"].endswith(":imitation")]
    assert framed and all(te["malicious"] and te["content"] == "dual_use" for te in framed)
    assert any(te["kind"] == "op_request" and not te["source"].endswith(":imitation") for te in rows)
    assert Counter(v["style"] for v in truth["accounts"].values() if v["is_actor"]) == truth["counts"]["actor_styles"]


def test_isolated_actor_accounts_share_nothing(hard: dict[str, Any]) -> None:
    truth, accounts = hard["truth"], hard["accounts"]
    isolated = [a for a, v in truth["accounts"].items() if v["infra_isolated"]]
    assert isolated and all(truth["accounts"][a]["is_actor"] for a in isolated)
    for a in isolated:
        rec = accounts[a]
        others = [accounts[b] for b in accounts if b != a]
        assert "payment_fingerprint" not in rec and "phone_hash" not in rec
        assert all(o["device_id"] != rec["device_id"] and o["signup_ip"] != rec["signup_ip"] for o in others)
        users = {b for b, rows in hard["by_acc"].items() for ev, _ in rows if ev["ip"] == rec["signup_ip"]}
        assert users <= {a}, "its own IP is used by no other account"
        assert not truth["accounts"][a]["named_in_intel"] or any(
            ev["ip"] != rec["signup_ip"] for ev, _ in hard["by_acc"][a]
        ), "named only through a shared VPN exit"


# ---- CLI -------------------------------------------------------------------------------------------
def test_cli_settings_options(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--seed", "3", "--accounts", "120", "--days", "2", "-q"]
    r = runner.invoke(simulate_command, ["--out", str(tmp_path / "a"), *base, "--randomize", "--preset", "imitators"])
    assert r.exit_code == 2 and "at most one" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"actor_hidden_p": 0.4, "vpn_crowd": 3}')
    r = runner.invoke(simulate_command, ["--out", str(tmp_path / "b"), *base, "--settings", str(bad)])
    assert r.exit_code == 2 and "vpn_crowd" in r.output and "bad.json" in r.output
    bad.write_text("{not json")
    r = runner.invoke(simulate_command, ["--out", str(tmp_path / "b"), *base, "--settings", str(bad)])
    assert r.exit_code == 2 and "not JSON" in r.output
    r = runner.invoke(simulate_command, ["--out", str(tmp_path / "r"), *base, "--randomize"])
    assert r.exit_code == 0, r.output
    truth = orjson.loads((tmp_path / "r" / "truth.json").read_bytes())
    assert truth["settings"] == SimSettings.randomized(3).to_dict()
    # a truth.json is accepted as a settings file: same settings, same seed -> same files
    r = runner.invoke(
        simulate_command, ["--out", str(tmp_path / "s"), *base, "--settings", str(tmp_path / "r" / "truth.json")]
    )
    assert r.exit_code == 0, r.output
    assert _digest(tmp_path / "s") == _digest(tmp_path / "r")
    r = runner.invoke(simulate_command, ["--out", str(tmp_path / "p"), *base[:-1], "--preset", "vpn-heavy", "--json"])
    assert r.exit_code == 0, r.output
    summary = orjson.loads(r.output)
    assert summary["settings_family"] == "preset:vpn-heavy" and summary["settings"]["vpn_user_p"] == 0.45


def test_docs_list_every_knob_and_preset() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "simulator.md").read_text()
    defaults = SimSettings()
    for name, knob in KNOBS.items():
        row = (
            f"| `{name}` | {getattr(defaults, name):g} | {knob.lo:g} .. {knob.hi:g} | "
            f"{knob.train[0]:g} .. {knob.train[1]:g} | {knob.doc} |"
        )
        assert row in doc, f"docs/simulator.md knob table is out of date for {name}"
    for name in PRESETS:
        assert f"| `{name}` |" in doc


# ---- other prompts ---------------------------------------------------------------------------------
def test_with_prompts_draws_every_operational_request_from_them(tmp_path: Path) -> None:
    """``Pools.with_prompts`` (bench_account_prompts.py): operations ask only the given malicious
    prompts (no templates), security workers the given questions; the vendored pools are untouched."""
    from stormwatch.simulate.pools import load_pools
    from stormwatch.vocab import LLMT_IDS

    base = load_pools()
    mal = [(f"m{i}", f"operator ask number {i} for {ttp}", ttp) for i, ttp in enumerate(LLMT_IDS * 2)]
    sec = [(f"s{i}", f"defender question number {i}") for i in range(30)]
    pools = base.with_prompts(mal, sec)
    assert base.dataset_share == 0.35 and pools.dataset_share == 1.0 and base.get("sec_frr") != pools.get("sec_frr")
    assert {t for _, t in pools.get("sec_frr") + pools.get("sec_malware") + pools.get("sec_ti")} == {t for _, t in sec}
    simulate(tmp_path / "p", seed=5, accounts=300, days=6, progress=False, pools=pools)
    with gzip.open(tmp_path / "p" / "truth_events.jsonl.gz") as fh:
        tev = {t["event_id"]: t for t in map(orjson.loads, fh)}
    texts = {}
    for e in _lines(tmp_path / "p" / "events.jsonl"):
        msgs = e.get("messages") or []
        texts[e["event_id"]] = msgs[-1]["content"] if msgs else e.get("prompt")
    asks = [texts[k] for k, t in tev.items() if t["kind"] == "op_request"]
    assert asks and all(a in {t for _, t, _ in mal} for a in asks)
    assert all(t["source"].startswith("m") for t in tev.values() if t["kind"] == "op_request")
    with pytest.raises(ValueError, match="both"):
        base.with_prompts([], sec)
