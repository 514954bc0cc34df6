"""STIX import and indicator matching (both backends where the store is involved)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from stormwatch.analyze.intel_matching import load_indicators, load_observations, match_indicators
from stormwatch.analyze.stix_patterns import UnsupportedPattern, compile_pattern
from stormwatch.cli import main
from stormwatch.errors import InputError
from stormwatch.events import Account
from stormwatch.intel.importer import import_files
from stormwatch.store import Store

T0 = "2024-01-01T00:00:00.000Z"
IS_ID = f"intrusion-set--{uuid.uuid5(uuid.NAMESPACE_URL, 'fb')}"


def sid(kind: str, key: str) -> str:
    return f"{kind}--{uuid.uuid5(uuid.NAMESPACE_URL, key)}"


def indicator(key: str, pattern: str, **extra: Any) -> list[dict[str, Any]]:
    ind = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": sid("indicator", key),
        "created": T0,
        "modified": T0,
        "name": key,
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": T0,
        "confidence": 80,
        **extra,
    }
    rel = {
        "type": "relationship",
        "spec_version": "2.1",
        "id": sid("relationship", key),
        "created": T0,
        "modified": T0,
        "relationship_type": "indicates",
        "source_ref": ind["id"],
        "target_ref": IS_ID,
    }
    return [ind, rel]


def bundle(path: Path, objects: list[dict[str, Any]]) -> Path:
    base = [
        {
            "type": "intrusion-set",
            "spec_version": "2.1",
            "id": IS_ID,
            "created": T0,
            "modified": T0,
            "name": "Forest Blizzard",
            "aliases": ["APT28"],
        }
    ]
    path.write_bytes(orjson.dumps({"type": "bundle", "id": sid("bundle", str(path)), "objects": base + objects}))
    return path


def test_patterns_compile_and_report_unsupported() -> None:
    c = compile_pattern("[ipv4-addr:value ISSUBSET '198.51.100.0/28' OR ipv6-addr:value = '2001:db8::1']")
    assert [a.op for clause in c.clauses for a in clause] == ["cidr", "eq"]
    c = compile_pattern("[email-addr:value IN ('A@x.org', 'b@y.org')] AND [url:value LIKE 'https://evil.%']")
    assert c.clauses[0][0].values == ("a@x.org", "b@y.org") and c.clauses[0][1].op == "regex"
    for bad, why in [
        ("[file:hashes.'SHA-256' = 'aa']", "object path"),
        ("[ipv4-addr:value = '1.2.3.4'] WITHIN 5 SECONDS", "WITHIN"),
        ("[ipv4-addr:value NOT = '1.2.3.4']", "negated"),
        ("[ipv4-addr:value = '1.2.3.4'] FOLLOWEDBY [ipv4-addr:value = '1.2.3.5']", "FOLLOWEDBY"),
        ("[ipv4-addr:value = ", "not a valid"),
    ]:
        with pytest.raises(UnsupportedPattern, match=why):
            compile_pattern(bad)


def test_import_idempotent_versions_revocation_unsupported(store: Store, tmp_path: Path) -> None:
    objs = indicator("vps", "[ipv4-addr:value ISSUBSET '198.51.100.0/28']") + indicator(
        "hash", "[file:hashes.MD5 = 'd41d8cd98f00b204e9800998ecf8427e']"
    )
    f1 = bundle(tmp_path / "b1.json", objs)
    s = import_files(store, [f1])
    assert s.new == 5 and s.indicators_supported == 1
    assert [u["id"] for u in s.indicators_unsupported] == [sid("indicator", "hash")]
    again = import_files(store, [f1])
    assert again.new == 0 and again.unchanged == 5 and again.updated == 0
    # a newer version replaces; an older one is ignored
    newer = indicator("vps", "[ipv4-addr:value = '198.51.100.99']")
    newer[0]["modified"] = "2024-02-01T00:00:00.000Z"
    s = import_files(store, [bundle(tmp_path / "b2.json", newer)])
    assert s.updated == 1
    older = indicator("vps", "[ipv4-addr:value = '198.51.100.1']")
    older[0]["modified"] = "2023-12-01T00:00:00.000Z"
    s = import_files(store, [bundle(tmp_path / "b3.json", older)])
    assert s.older == 1
    inds = load_indicators(store)
    assert [i.pattern.clauses[0][0].values for i in inds] == [("198.51.100.99",)]
    assert inds[0].intrusion_sets == (IS_ID,)
    # revoked: stops matching
    revoked = indicator("vps", "[ipv4-addr:value = '198.51.100.99']", revoked=True)
    revoked[0]["modified"] = "2024-03-01T00:00:00.000Z"
    s = import_files(store, [bundle(tmp_path / "b4.json", revoked)])
    assert s.indicators_revoked == 1 and load_indicators(store) == []


def test_malformed_bundle_names_file_and_object(store: Store, tmp_path: Path) -> None:
    bad = indicator("x", "[ipv4-addr:value = '1.2.3.4']")
    del bad[0]["pattern"]
    path = bundle(tmp_path / "bad.json", bad)
    with pytest.raises(InputError) as err:
        import_files(store, [path])
    assert "bad.json" in str(err.value) and sid("indicator", "x") in str(err.value)
    assert store.query("SELECT COUNT(*) FROM intel_objects")[0][0] == 0
    (tmp_path / "notjson.json").write_text("{nope")
    with pytest.raises(InputError, match=r"notjson\.json"):
        import_files(store, [tmp_path / "notjson.json"])


def _observe(store: Store) -> None:
    store.upsert_accounts(
        [
            Account("a_cidr", signup_ip="10.0.0.1", email_domain="gmail.com"),
            Account("a_v6", email_domain="x.org"),
            Account("a_dom", email_domain="lure.example"),
            Account("a_mail", email_hash=__import__("hashlib").sha256(b"spy@lure.example").hexdigest()),
            Account("a_url"),
            Account("a_ua"),
            Account("a_late"),
        ]
    )
    rows = [
        ("a_cidr", "ip", "198.51.100.5", 3, "2024-01-10T00:00:00.000000Z", "2024-01-12T00:00:00.000000Z"),
        ("a_v6", "ip", "2001:db8::42", 1, "2024-01-10T00:00:00.000000Z", "2024-01-10T00:00:00.000000Z"),
        ("a_url", "url", "https://c2.example/gate.php?id=1", 1, "2024-01-10T00:00:00.000000Z", None),
        ("a_ua", "user_agent", "EvilBot/1.0", 2, "2024-01-10T00:00:00.000000Z", "2024-01-11T00:00:00.000000Z"),
        ("a_late", "ip", "192.0.2.9", 1, "2023-01-01T00:00:00.000000Z", "2023-01-02T00:00:00.000000Z"),
    ]
    store.executemany(
        "INSERT INTO account_attributes (account_id, kind, value, n, first_ts, last_ts) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    store.commit()


def test_matching_all_observable_kinds(store: Store, tmp_path: Path) -> None:
    _observe(store)
    ua = "network-traffic:extensions.'http-request-ext'.request_header.'User-Agent'"
    objs = (
        indicator("cidr", "[ipv4-addr:value ISSUBSET '198.51.100.0/24']")
        + indicator("v6", "[ipv6-addr:value ISSUBSET '2001:db8::/32']")
        + indicator("dom", "[domain-name:value = 'LURE.example']")
        + indicator("mail", "[email-addr:value = 'spy@lure.example']")
        + indicator("url", "[url:value MATCHES '^https://c2\\\\.example/']")
        + indicator("ua", f"[{ua} LIKE 'EvilBot/%']")
        + indicator("late", "[ipv4-addr:value = '192.0.2.9']")  # seen before valid_from: no match
        + indicator("gmail", "[domain-name:value = 'gmail.com']", revoked=True)
    )
    import_files(store, [bundle(tmp_path / "all.json", objs)])
    hits = match_indicators(load_indicators(store), load_observations(store))
    got = {(h.account_id, h.kind) for h in hits}
    assert got == {
        ("a_cidr", "ip"),
        ("a_v6", "ip"),
        ("a_dom", "domain"),
        ("a_mail", "email"),
        ("a_url", "url"),
        ("a_ua", "user_agent"),
    }
    cidr = next(h for h in hits if h.account_id == "a_cidr")
    assert cidr.n == 3 and cidr.degree == 1 and cidr.value == "198.51.100.5"


def test_cli_import_json(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = bundle(
        tmp_path / "b.json",
        indicator("x", "[ipv4-addr:value = '1.2.3.4']") + indicator("y", "[process:name = 'evil.exe']"),
    )
    assert main(["--db", db_url, "intel", "import", str(path), "--json"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["objects"]["new"] == 5 and out["indicators"]["supported"] == 1
    assert out["indicators"]["unsupported_list"][0]["id"] == sid("indicator", "y")
    assert main(["--db", db_url, "intel", "import", str(path)]) == 0
    assert "unchanged 5" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text('{"type": "bundle", "objects": [{"type": "indicator"}]}')
    assert main(["--db", db_url, "intel", "import", str(tmp_path / "bad.json")]) == 4
    assert "bad.json" in capsys.readouterr().err
