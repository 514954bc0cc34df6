"""Bad input at the edges of intel: sharing-policy TOML errors, TLP spellings and markings, malformed
STIX (TAXII posts and imported bundles), and the export/pull command lines refusing what they cannot use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from stormwatch.cli import main
from stormwatch.errors import ConfigError, InputError
from stormwatch.intel.importer import import_files, read_bundle
from stormwatch.intel.pull import PullLimits
from stormwatch.intel.sharing_policy import (
    PUBLIC_GROUP,
    Recipient,
    Rule,
    SharingPolicy,
    load_policy,
    policy_from_dict,
)
from stormwatch.intel.taxii.validate import check_object
from stormwatch.intel.tlp import KNOWN_MARKINGS, TLP2_IDS, Tlp, object_tlp
from stormwatch.store import Store

UUID = "00000000-0000-4000-8000-000000000001"
IDENT = f"identity--{UUID}"


# -- sharing policy ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"colour": "red"}, "unknown keys ['colour']"),
        ({"default_tlp": "purple"}, "default_tlp: unknown TLP level 'purple'"),
        ({"indicator_validity_days": 0}, "indicator_validity_days must be a positive integer"),
        ({"indicator_validity_days": "90"}, "indicator_validity_days must be a positive integer"),
        ({"levels": {"ultraviolet": {}}}, "levels.ultraviolet: unknown TLP level"),
        ({"levels": {"green": {"types": "indicator"}}}, "levels.green.types must be a list of STIX type names"),
        ({"levels": {"green": {"types": ["indicator", "malware"]}}}, "levels.green.types: unknown ['malware']"),
        ({"levels": {"green": {"fields": ["ip"]}}}, "levels.green.fields must be a table"),
        ({"levels": {"green": {"fields": {"ssn": "drop"}}}}, "levels.green.fields: unknown field 'ssn'"),
        ({"levels": {"green": {"fields": {"ip": "maybe"}}}}, "levels.green.fields.ip: 'maybe' is not allow, hash"),
        ({"trust_groups": {"isac": {}}}, "trust group 'isac' needs key_env (or key)"),
        ({"trust_groups": {"isac": {"key_env": "C1_NO_SUCH_KEY"}}}, "C1_NO_SUCH_KEY is not set"),
        ({"recipients": {"p": {"trust_group": "ghost"}}}, "recipients.p: trust group 'ghost' is not defined"),
        ({"recipients": {"p": {"principals": "p"}}}, "recipients.p.principals must be a list"),
        ({"recipients": {"p": {"max_tlp": "black"}}}, "recipients.p.max_tlp: unknown TLP level 'black'"),
    ],
)
def test_policy_errors_name_the_key(data: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("C1_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError) as exc:
        policy_from_dict(data)
    assert message in str(exc.value)


def test_policy_file_loads_keys_from_env_and_reports_bad_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C1_ISAC_KEY", "shared-secret")
    path = tmp_path / "share.toml"
    path.write_text(
        'default_tlp = "TLP:GREEN"\nindicator_validity_days = 30\n[producer]\nname = "Us"\ncontact = "cti@us.example"\n'
        '[levels.green]\ntypes = ["indicator", "identity"]\nfields = { ip = "hash" }\n'
        '[trust_groups.isac]\nkey_env = "C1_ISAC_KEY"\n'
        '[recipients.partner]\ntrust_group = "isac"\nmax_tlp = "amber+strict"\ntypes = ["indicator"]\n'
        'fields = { email = "allow", account_id = "allow" }\n'
    )
    pol = load_policy(path)
    assert (pol.default_tlp, pol.indicator_validity_days) == (Tlp.GREEN, 30)
    assert (pol.producer_name, pol.producer_contact) == ("Us", "cti@us.example")
    assert pol.trust_group_keys == {"isac": b"shared-secret"}
    partner = pol.recipient("partner")
    assert partner is not None and partner.principals == ("partner",) and partner.max_tlp == Tlp.AMBER_STRICT
    assert pol.principal_recipients("partner") == [partner] and pol.principal_recipients("nobody") == []
    green = pol.effective(Tlp.GREEN, partner)
    assert green.types == frozenset({"indicator"})  # the level's types narrowed by the recipient's
    assert green.rule("ip") == Rule.DROP  # "hash" an IP is meaningless: dropped instead
    assert green.rule("email") == Rule.HASH  # raw e-mail needs AMBER
    assert green.rule("account_id") == Rule.HASH  # raw account ids need AMBER+STRICT and a named recipient
    assert green.trust_group == "isac"
    assert pol.effective(Tlp.AMBER, partner).rule("email") == Rule.ALLOW
    assert pol.effective(Tlp.AMBER_STRICT, partner).rule("account_id") == Rule.HASH  # not named for RED
    with pytest.raises(ConfigError, match="recipient 'stranger' is not in the sharing policy"):
        pol.recipient("stranger")
    assert pol.recipient(None) is None
    bad = tmp_path / "bad.toml"
    bad.write_text("default_tlp = \n")
    with pytest.raises(ConfigError, match=r"sharing policy .*bad\.toml: "):
        load_policy(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_policy(tmp_path / "missing.toml")


def test_policy_default_comes_from_the_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORMWATCH_SHARE_POLICY", raising=False)
    closed = load_policy(None)  # no file: the closed defaults
    assert (closed.default_tlp, closed.recipients, closed.levels) == (Tlp.AMBER, {}, {})
    path = tmp_path / "p.toml"
    path.write_text('default_tlp = "red"\n')
    monkeypatch.setenv("STORMWATCH_SHARE_POLICY", str(path))
    assert load_policy(None).default_tlp == Tlp.RED


def test_red_only_to_named_recipients_and_hash_keys_per_group(monkeypatch: pytest.MonkeyPatch) -> None:
    pol = SharingPolicy(fallback_secret=b"x" * 32)
    named = Recipient("n", red=True, max_tlp=Tlp.RED)
    plain = Recipient("p", max_tlp=Tlp.GREEN)
    assert pol.may_receive(Tlp.RED, named) and not pol.may_receive(Tlp.RED, plain)
    assert not pol.may_receive(Tlp.RED, None) and pol.may_receive(Tlp.AMBER, None)
    assert pol.may_receive(Tlp.GREEN, plain) and not pol.may_receive(Tlp.AMBER, plain)
    eff = pol.effective(Tlp.AMBER, None)
    assert eff.trust_group == PUBLIC_GROUP
    h1 = eff.hmac("email", " Someone@Example.org ")
    assert h1 == eff.hmac("email", "someone@example.org")  # e-mails are normalised before hashing
    assert h1.startswith("hmac-sha256:public:")
    monkeypatch.setenv("STORMWATCH_SHARE_KEY", "deployment-key")
    assert pol.effective(Tlp.AMBER, None).hmac("email", "someone@example.org") != h1
    assert eff.fingerprint() == pol.effective(Tlp.AMBER, None).fingerprint()
    assert eff.fingerprint() != pol.effective(Tlp.GREEN, None).fingerprint()


# -- TLP -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("TLP:WHITE", Tlp.CLEAR),
        ("amber_strict", Tlp.AMBER_STRICT),
        ("Amber-Strict", Tlp.AMBER_STRICT),
        (" red ", Tlp.RED),
        (Tlp.GREEN, Tlp.GREEN),
    ],
)
def test_tlp_spellings(raw: str | Tlp, level: Tlp) -> None:
    assert Tlp.parse(raw) is level


@pytest.mark.parametrize("raw", ["", "purple", "tlp:amber+", "amber strict"])
def test_invalid_tlp_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="unknown TLP level"):
        Tlp.parse(raw)


def test_object_tlp_takes_the_most_restrictive_and_reads_unknown_as_red() -> None:
    green, amber = TLP2_IDS[Tlp.GREEN], TLP2_IDS[Tlp.AMBER]
    assert object_tlp({"type": "marking-definition", "object_marking_refs": [TLP2_IDS[Tlp.RED]]}) == Tlp.CLEAR
    assert object_tlp({"type": "indicator"}, default=Tlp.GREEN) == Tlp.GREEN
    assert object_tlp({"type": "indicator", "object_marking_refs": [green, amber]}) == Tlp.AMBER
    gm = {"type": "indicator", "granular_markings": [{"marking_ref": amber, "selectors": ["name"]}, "junk",
                                                      {"marking_ref": 7}], "object_marking_refs": [green]}  # fmt: skip
    assert object_tlp(gm) == Tlp.AMBER
    tlp1_white = next(k for k, v in KNOWN_MARKINGS.items() if v == Tlp.CLEAR and k != TLP2_IDS[Tlp.CLEAR])
    assert object_tlp({"type": "x", "object_marking_refs": [tlp1_white]}) == Tlp.CLEAR
    assert object_tlp({"type": "x", "object_marking_refs": [f"marking-definition--{UUID}"]}) == Tlp.RED
    assert object_tlp({"type": "x", "object_marking_refs": [{"not": "a string"}]}) == Tlp.RED


# -- STIX validation (TAXII posts) ---------------------------------------------------------------------
def _sdo(**kw: Any) -> dict[str, Any]:
    base = {"type": "identity", "spec_version": "2.1", "id": IDENT, "created": "2025-01-01T00:00:00Z",
            "modified": "2025-01-02T00:00:00Z", "name": "x"}  # fmt: skip
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


IND = {"type": "indicator", "id": f"indicator--{UUID}", "pattern": "[ipv4-addr:value = '10.0.0.1']",
       "pattern_type": "stix", "valid_from": "2025-01-01T00:00:00Z"}  # fmt: skip


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], "object #3 is not a JSON object"),
        (_sdo(id="identity--nope"), "object #3: missing or malformed id"),
        (_sdo(type="indicator"), f"{IDENT}: type 'indicator' does not match the id"),
        (_sdo(spec_version="2.0"), "spec_version must be '2.1' (got '2.0')"),
        (_sdo(created=20250101), "created must be a timestamp"),
        (_sdo(modified="yesterday"), "modified 'yesterday' is not a timestamp"),
        (_sdo(created=None), "created is required"),
        (_sdo(modified=None), "modified is required"),
        (_sdo(modified="2024-01-01T00:00:00Z"), "modified is earlier than created"),
        (_sdo(object_marking_refs="marking-definition--x"), "object_marking_refs must be a list of ids"),
        (_sdo(created_by_ref=f"indicator--{UUID}"), "created_by_ref must be an identity id"),
        (_sdo(**{**IND, "pattern": "  "}), "an indicator needs a pattern"),
        (_sdo(**{**IND, "pattern_type": ""}), "an indicator needs a pattern_type"),
        (_sdo(**{**IND, "valid_from": None}), "an indicator needs valid_from"),
        (_sdo(**{**IND, "valid_from": "soon"}), "valid_from 'soon' is not a timestamp"),
        (_sdo(**{**IND, "pattern": "[ipv4-addr:value = "}), "is not a valid STIX 2.1 pattern"),
    ],
)
def test_posted_objects_are_checked(obj: Any, message: str) -> None:
    err, ok = check_object(obj, 3)
    assert ok is None and err is not None and message in err


def test_valid_posted_objects_pass() -> None:
    for obj in (
        _sdo(created_by_ref=IDENT, object_marking_refs=[TLP2_IDS[Tlp.GREEN]]),
        _sdo(**IND),
        _sdo(**{**IND, "pattern_type": "sigma", "pattern": "title: x"}),  # only stix patterns are parsed
        {"type": "ipv4-addr", "spec_version": "2.1", "id": f"ipv4-addr--{UUID}", "value": "10.0.0.1"},
        {
            "type": "marking-definition",
            "spec_version": "2.1",
            "id": f"marking-definition--{UUID}",
            "created": "2025-01-01T00:00:00Z",
        },
    ):
        assert check_object(obj, 0) == (None, obj)


# -- importing bundles ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not JSON"),
        (b'"a string"', "not a STIX bundle"),
        (b'{"type": "bundle", "objects": {}}', "not a STIX bundle (want type 'bundle'"),
        (b"[7]", "object #0 is not a JSON object"),
        (b'[{"id": "x", "type": "x"}]', "object 'x': missing or malformed id"),
        (orjson.dumps([{"id": IDENT}]), f"object '{IDENT}': type None does not match the id"),
        (orjson.dumps([{"id": IDENT, "type": "identity", "spec_version": "2.0"}]), "spec_version '2.0'"),
        (orjson.dumps([{"id": IDENT, "type": "identity", "modified": 1}]), "modified must be a timestamp string"),
        (orjson.dumps([{**IND, "spec_version": "2.1", "pattern": ""}]), "indicator without a pattern"),
        (orjson.dumps([{k: v for k, v in IND.items() if k != "valid_from"}]), "indicator without valid_from"),
        (
            orjson.dumps(
                [
                    {
                        "id": f"relationship--{UUID}",
                        "type": "relationship",
                        "relationship_type": "uses",
                        "source_ref": IDENT,
                    }
                ]
            ),
            "relationship without target_ref",
        ),
    ],
)
def test_malformed_bundles_name_file_and_object(store: Store, tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "b.json"
    path.write_bytes(content)
    with pytest.raises(InputError) as exc:
        import_files(store, [path])
    assert str(exc.value).startswith(str(path)) and message in str(exc.value)
    assert store.intel.object_versions() == {}  # nothing of the file stored


def test_a_missing_bundle_and_a_plain_list(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        read_bundle(tmp_path / "missing.json")
    path = tmp_path / "list.json"
    path.write_bytes(orjson.dumps([{**IND, "spec_version": "2.1"}]))
    assert [o["id"] for o in read_bundle(path)] == [IND["id"]]


# -- command lines -------------------------------------------------------------------------------------
def test_export_destination_conventions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'x.db'}"]
    out = str(tmp_path / "out")
    cases = [
        (["intel", "export", "--out", out], "give -o/--output FILE, not --out DIR"),
        (["intel", "export"], "give -o/--output FILE (the STIX bundle to write)"),
        (["intel", "export", "--format", "misp-feed", "-o", out], "give --out DIR, not -o/--output FILE"),
        (["intel", "export", "--format", "misp-feed"], "give --out DIR (the MISP feed folder to write)"),
        (["intel", "export", out, "-o", out + ".json"], "not both"),
        (["intel", "export", "--format", "yaml", "-o", out], "'yaml' is not an exporter"),
    ]
    for args, message in cases:
        assert main([*db, *args]) == 2, args
        assert message in capsys.readouterr().err, args


def test_export_refuses_a_bad_policy_and_an_unknown_recipient(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'x.db'}"]
    bad = tmp_path / "p.toml"
    bad.write_text('default_tlp = "mauve"\n')
    out = str(tmp_path / "b.json")
    assert main([*db, "intel", "export", "-o", out, "--policy", str(bad)]) == 3
    assert "default_tlp: unknown TLP level 'mauve'" in capsys.readouterr().err
    assert main([*db, "intel", "export", "-o", out, "--recipient", "nobody"]) == 3
    assert "recipient 'nobody' is not in the sharing policy" in capsys.readouterr().err
    assert not Path(out).exists()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_response_bytes": 0}, "max_response_bytes must be positive"),
        ({"max_pages": 0}, "max_pages must be positive"),
        ({"max_seconds": 0.0}, "max_seconds must be positive"),
        ({"allow_redirect_hosts": ("host/path",)}, "'host/path' is not HOST or HOST:PORT"),
        ({"allow_redirect_hosts": ("host:port",)}, "is not HOST or HOST:PORT"),
        ({"allow_redirect_hosts": ("user@host",)}, "is not HOST or HOST:PORT"),
    ],
)
def test_pull_limits_refuse_nonsense(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PullLimits(**kw)


def test_pull_cli_refuses_a_bad_redirect_host_and_an_unreachable_peer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'x.db'}"]
    base = [*db, "intel", "pull", "--taxii", "http://127.0.0.1:9/api1/", "--collection", UUID]
    assert main([*base, "--allow-redirect-host", "a/b"]) == 2
    assert "--allow-redirect-host" in capsys.readouterr().err
    code = main([*base, "--max-seconds", "5"])
    err = capsys.readouterr().err
    assert code not in (0, 2) and "127.0.0.1:9" in err
