"""Run-time reference data: the LLM-TTP taxonomy (ATT&CK / ATLAS ids) and known actor names."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

#: ATT&CK tactic (kill-chain phase) of each TTP's end goal
_TACTIC: dict[str, str] = {
    "LLMT-01": "reconnaissance",
    "LLMT-02": "execution",
    "LLMT-03": "resource-development",
    "LLMT-04": "initial-access",
    "LLMT-05": "resource-development",
    "LLMT-06": "resource-development",
    "LLMT-07": "defense-evasion",
    "LLMT-08": "defense-evasion",
    "LLMT-09": "resource-development",
    "LLMT-10": "execution",
    "LLMT-11": "resource-development",
    "LLMT-12": "credential-access",
    "LLMT-13": "reconnaissance",
    "LLMT-14": "reconnaissance",
}


@dataclass(frozen=True, slots=True)
class Ttp:
    id: str
    label: str
    definition: str
    attack: tuple[str, ...]
    atlas: tuple[tuple[str, str], ...]  # (id, name)
    tactic: str


@dataclass(frozen=True, slots=True)
class ActorInfo:
    name: str
    aliases: tuple[str, ...]
    attack_id: str | None
    country: str | None
    sponsor: str | None
    misp_galaxy: str | None


def _load(name: str) -> Any:
    return json.loads(resources.files("stormwatch.intel").joinpath("data", name).read_text(encoding="utf-8"))


@cache
def ttps() -> dict[str, Ttp]:
    out: dict[str, Ttp] = {}
    for t in _load("llm_ttps.json")["ttps"]:
        out[t["id"]] = Ttp(
            id=t["id"],
            label=t["label"],
            definition=t["definition"],
            attack=tuple(t["attack"]),
            atlas=tuple((a["id"], a["name"]) for a in t["atlas"]),
            tactic=_TACTIC.get(t["id"], "resource-development"),
        )
    return out


@cache
def actors() -> dict[str, ActorInfo]:
    out: dict[str, ActorInfo] = {}
    for a in _load("actors.json")["actors"]:
        info = ActorInfo(
            a["name"],
            tuple(a["aliases"]),
            a.get("attack_id"),
            a.get("country"),
            a.get("sponsor"),
            a.get("misp_galaxy"),
        )
        out[a["name"].lower()] = info
    return out


def actor_info(name: str) -> ActorInfo | None:
    """Known actor by name or alias (case-insensitive)."""
    key = name.strip().lower()
    hit = actors().get(key)
    if hit is not None:
        return hit
    for info in actors().values():
        if key in (a.lower() for a in info.aliases):
            return info
    return None


def attack_url(tid: str) -> str:
    return "https://attack.mitre.org/techniques/" + tid.replace(".", "/") + "/"


def atlas_url(tid: str) -> str:
    return "https://atlas.mitre.org/techniques/" + tid
