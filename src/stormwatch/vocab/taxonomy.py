"""The LLM-TTP taxonomy (``LLMT-01`` .. ``LLMT-14``): labels, definitions, kill-chain phases, ATT&CK/ATLAS.

Loaded once from ``vocab/data/taxonomy.json``, the one place the taxonomy is written down.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "LLMT_IDS",
    "LLMT_LABELS",
    "TACTICS",
    "Ttp",
    "atlas_name",
    "atlas_url",
    "attack_url",
    "is_llmt",
    "load_data",
    "ttp",
    "ttps",
]


@dataclass(frozen=True, slots=True)
class Ttp:
    id: str
    label: str
    definition: str
    #: ATT&CK technique ids (``T1588.007``)
    attack: tuple[str, ...]
    #: ATLAS techniques as (id, name)
    atlas: tuple[tuple[str, str], ...]
    #: the ATT&CK tactic of the TTP's end goal (the STIX kill-chain phase)
    tactic: str
    #: which report the TTP comes from
    origin: str


def load_data(name: str) -> Any:
    """One of the vocabulary's data files (``taxonomy.json``, ``actors.json``), parsed."""
    return json.loads(resources.files("stormwatch.vocab").joinpath("data", name).read_text(encoding="utf-8"))


@cache
def _raw() -> dict[str, Any]:
    data: dict[str, Any] = load_data("taxonomy.json")
    return data


@cache
def ttps() -> dict[str, Ttp]:
    """Every TTP by id, in id order."""
    raw = _raw()
    names: dict[str, str] = raw["atlas_techniques"]
    return {
        t["id"]: Ttp(
            id=t["id"],
            label=t["label"],
            definition=t["definition"],
            attack=tuple(t["attack"]),
            atlas=tuple((a, names[a]) for a in t["atlas"]),
            tactic=t["kill_chain_phase"],
            origin=t.get("origin", ""),
        )
        for t in raw["ttps"]
    }


def ttp(tid: str) -> Ttp | None:
    return ttps().get(tid)


def is_llmt(tid: object) -> bool:
    return isinstance(tid, str) and tid in ttps()


def atlas_name(tid: str) -> str | None:
    """The ATLAS technique's name (only techniques the taxonomy maps to are known)."""
    name = _raw()["atlas_techniques"].get(tid)
    return None if name is None else str(name)


def attack_url(tid: str) -> str:
    return "https://attack.mitre.org/techniques/" + tid.replace(".", "/") + "/"


def atlas_url(tid: str) -> str:
    return "https://atlas.mitre.org/techniques/" + tid


#: the LLMT ids in order (the column order of every per-category array: model heads, TTP profiles)
LLMT_IDS: tuple[str, ...] = tuple(ttps())
#: id -> short label
LLMT_LABELS: dict[str, str] = {t.id: t.label for t in ttps().values()}
#: ATT&CK Enterprise tactics (kill-chain phase names), in matrix order
TACTICS: tuple[str, ...] = tuple(_raw()["tactics"])
