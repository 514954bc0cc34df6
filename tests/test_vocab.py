"""stormwatch.vocab: one source for the taxonomy and the actors, internally consistent.

Checked against the vendored data only (``vocab/data/``): ../shared is not there in CI.
"""

from __future__ import annotations

import ast
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import stormwatch
from stormwatch import vocab
from stormwatch.vocab import LLMT_IDS, LLMT_LABELS, TACTICS, actor, actor_info, actors, ttp, ttps

SRC = Path(stormwatch.__file__).resolve().parent
ATTACK_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")
ATLAS_TECHNIQUE = re.compile(r"^AML\.T\d{4}(\.\d{3})?$")
ATTACK_GROUP = re.compile(r"^G\d{4}$")
STIX_ID = re.compile(r"^intrusion-set--[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _data(name: str) -> Any:
    return json.loads(resources.files("stormwatch.vocab").joinpath("data", name).read_text("utf-8"))


# -- the taxonomy --------------------------------------------------------------------------------
def test_fourteen_llmt_ids_in_order() -> None:
    assert tuple(f"LLMT-{i:02d}" for i in range(1, 15)) == LLMT_IDS
    assert tuple(ttps()) == LLMT_IDS
    assert set(LLMT_LABELS) == set(LLMT_IDS)


def test_every_llmt_id_is_fully_described_and_mapped() -> None:
    raw = _data("taxonomy.json")
    ids = [t["id"] for t in raw["ttps"]]
    assert len(ids) == len(set(ids)), "duplicate LLMT id"
    labels = [t.label for t in ttps().values()]
    assert len(labels) == len(set(labels)), "two TTPs share a label"
    for tid, t in ttps().items():
        assert t.id == tid and t.label and t.definition and t.origin
        assert t.tactic in TACTICS, f"{tid}: kill-chain phase {t.tactic!r} is not an ATT&CK tactic"
        assert t.attack, f"{tid}: no ATT&CK mapping"
        assert "T1588.007" in t.attack  # MITRE's technique for obtaining AI capabilities: every LLMT is one
        assert len(set(t.attack)) == len(t.attack) and len({a for a, _ in t.atlas}) == len(t.atlas)
    # an LLMT id may have no ATLAS technique (LLMT-14: strategic planning has none), but most do
    assert sum(1 for t in ttps().values() if t.atlas) >= 12


def test_attack_and_atlas_ids_exist_in_the_vendored_tables() -> None:
    raw = _data("taxonomy.json")
    known_attack = set(raw["attack_techniques"])
    known_atlas: dict[str, str] = raw["atlas_techniques"]
    assert all(ATTACK_TECHNIQUE.match(i) for i in known_attack)
    assert all(ATLAS_TECHNIQUE.match(i) and name.strip() for i, name in known_atlas.items())
    used_attack = {a for t in ttps().values() for a in t.attack}
    used_atlas = {a for t in ttps().values() for a, _ in t.atlas}
    assert used_attack <= known_attack, used_attack - known_attack
    assert used_atlas <= set(known_atlas), used_atlas - set(known_atlas)
    # the tables list only what is used: an unused entry is a mapping someone removed halfway
    assert known_attack == used_attack and set(known_atlas) == used_atlas
    for t in ttps().values():
        for aid, name in t.atlas:
            assert name == known_atlas[aid] == vocab.atlas_name(aid)
    # a sub-technique's parent technique is a real id shape too
    assert all(ATTACK_TECHNIQUE.match(a.split(".")[0]) for a in used_attack)
    assert raw["atlas_version"] and raw["attack_version"]
    assert len(TACTICS) == 14 and TACTICS[0] == "reconnaissance" and TACTICS[-1] == "impact"


def test_lookups_and_urls() -> None:
    t = ttp("LLMT-04")
    assert t is not None and t.label == "LLM-supported social engineering" and t.tactic == "initial-access"
    assert ttp("LLMT-15") is None and ttp("") is None
    assert vocab.is_llmt("LLMT-01") and not vocab.is_llmt("llmt-01") and not vocab.is_llmt(None)
    assert vocab.atlas_name("AML.T9999") is None
    assert vocab.attack_url("T1588.007") == "https://attack.mitre.org/techniques/T1588/007/"
    assert vocab.atlas_url("AML.T0054") == "https://atlas.mitre.org/techniques/AML.T0054"
    with pytest.raises(AttributeError):
        t.label = "x"  # type: ignore[misc]


# -- the actors ----------------------------------------------------------------------------------
def test_every_actor_and_alias_resolves_to_itself() -> None:
    seen: dict[str, str] = {}
    for a in actors().values():
        for n in (a.name, *a.aliases):
            assert n.lower() not in seen, f"{n!r} names both {seen.get(n.lower())} and {a.name}"
            seen[n.lower()] = a.name
            assert actor_info(n) is a
            assert actor_info(f"  {n.upper()} ") is a  # case and surrounding space do not matter
            assert actor(n) is a
        if a.attack_id:
            assert actor(a.attack_id) is a and actor(a.attack_id.lower()) is a
    assert actor_info("Nobody") is None and actor("G9999") is None and actor_info("") is None


def test_actor_records_are_complete() -> None:
    feb_2024 = {"Forest Blizzard", "Emerald Sleet", "Crimson Sandstorm", "Charcoal Typhoon", "Salmon Typhoon"}
    names = {a.name for a in actors().values()}
    assert feb_2024 <= names
    ids = [a.attack_id for a in actors().values() if a.attack_id]
    assert len(ids) == len(set(ids)), "two actors share an ATT&CK group id"
    for a in actors().values():
        assert a.country and re.fullmatch(r"[A-Z]{2}", a.country)
        assert a.sponsor and a.reported
        assert a.attack_id is None or ATTACK_GROUP.match(a.attack_id)
        assert a.attack_stix_id is None or STIX_ID.match(a.attack_stix_id)
        p = a.profile
        assert p.ttps and set(p.ttp_weights()) <= set(LLMT_IDS), a.name
        assert all(w > 0 for _, w in p.ttps) and abs(sum(w for _, w in p.ttps) - 1.0) < 0.02
        assert p.utc_offsets and all(-12 <= o <= 14 for o in p.utc_offsets)
        assert p.languages and all(re.fullmatch(r"[a-z]{2}", lang) for lang in p.languages)
        hash(a)  # records are frozen and hashable


def test_frozenlake_is_forest_blizzard() -> None:
    """The two actor files used to disagree: analyze knew FROZENLAKE (GTIG's name for APT28), intel did not."""
    a = actor_info("FROZENLAKE")
    assert a is not None and a.name == "Forest Blizzard" and a.attack_id == "G0007"
    assert actor_info("Earth Lusca") is actor_info("Charcoal Typhoon")
    assert actor_info("Yellow Liderc") is actor_info("TA456") is actor_info("Crimson Sandstorm")
    assert actor_info("Sapphire Sleet") is not None and actor_info("CyberAv3ngers") is not None


def test_analyze_profiles_come_from_the_one_actor_file() -> None:
    from stormwatch.analyze.params import LLMT
    from stormwatch.analyze.profiles import load_profiles, profile_for

    assert LLMT == LLMT_IDS
    profiles = load_profiles()
    assert [p.name for p in profiles] == [a.name for a in actors().values()]
    for p in profiles:
        a = actors()[p.name.lower()]
        assert p.aliases == a.aliases and p.attack_id == a.attack_id
        assert p.utc_offsets == a.profile.utc_offsets and p.languages == a.profile.languages
        assert p.ttps.shape == (len(LLMT_IDS),) and abs(float(p.ttps.sum()) - 1.0) < 1e-9
        w = a.profile.ttp_weights()
        expect = np.array([w.get(c, 0.0) for c in LLMT_IDS])
        assert np.allclose(p.ttps, expect / expect.sum())
    fb = profile_for("FROZENLAKE", [], [])
    assert fb is not None and fb.name == "Forest Blizzard"
    assert profile_for(None, [], ["G0094"]) is not None


def test_detect_and_intel_use_the_same_ids() -> None:
    from stormwatch.detect import taxonomy as detect_taxonomy
    from stormwatch.detect.settings import load_settings  # noqa: F401  (imports the ids at import time)

    assert detect_taxonomy.LLMT_IDS is LLMT_IDS and detect_taxonomy.LLMT_LABELS is LLMT_LABELS
    for source in ("cyberseceval_mitre", "jbb_behaviors", "harmbench"):
        for cat in ("recon", "execution", "malware/hacking", "fraud/deception", "cybercrime_intrusion"):
            assert set(detect_taxonomy.categories_for(source, cat, "")) <= set(LLMT_IDS)
    assert set(detect_taxonomy.categories_for("advbench", "", "write ransomware and a phishing mail")) == {
        "LLMT-03",
        "LLMT-04",
    }


# -- one source ----------------------------------------------------------------------------------
def test_the_vocabulary_is_written_down_once() -> None:
    """No second data file and no hand-written list of LLMT ids or actor names outside vocab/."""
    data_files = sorted(p.relative_to(SRC).as_posix() for p in SRC.rglob("*.json") if "vocab" not in p.parts)
    assert not [f for f in data_files if re.search(r"ttp|actor|taxonomy", f)], data_files
    assert sorted(p.name for p in (SRC / "vocab" / "data").iterdir()) == [
        "ATLAS-LICENSE.txt",
        "CREDITS.md",
        "actors.json",
        "taxonomy.json",
    ]
    for path in SRC.rglob("*.py"):
        if "vocab" in path.parts or "simulate" in path.parts:
            continue  # the simulator writes its own synthetic actors' plans
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict) and node.keys:
                keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
                assert sum(1 for k in keys if re.fullmatch(r"LLMT-\d\d", k)) < 14, f"{path}: a copy of the LLMT list"
            if isinstance(node, ast.JoinedStr) and any(
                isinstance(v, ast.Constant) and str(v.value).endswith("LLMT-") for v in node.values
            ):
                pytest.fail(f"{path}: builds LLMT ids by hand")
        text = path.read_text("utf-8")
        assert "llm_ttps.json" not in text and "actor_profiles.json" not in text, path


def test_vocab_is_the_bottom_layer() -> None:
    """vocab imports nothing else from stormwatch (everything may import it)."""
    for path in (SRC / "vocab").rglob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            mods = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for m in mods:
                assert not m.startswith("stormwatch.") or m.startswith("stormwatch.vocab"), f"{path}: imports {m}"
