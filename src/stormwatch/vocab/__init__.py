"""The one vocabulary: the LLM-TTP taxonomy, the ATT&CK/ATLAS mapping and the known actors.

Bottom layer (imports nothing from stormwatch): detect, analyze and intel all read their ids,
labels, mappings, actor names and profiles from here, and this package reads them from one data
file each under ``vocab/data/`` (``taxonomy.json``, ``actors.json``; credits and the ATLAS license
beside them).
"""

from __future__ import annotations

from stormwatch.vocab.actors import Actor, ActorInfo, ActorProfileData, actor, actor_info, actors
from stormwatch.vocab.taxonomy import (
    LLMT_IDS,
    LLMT_LABELS,
    TACTICS,
    Ttp,
    atlas_name,
    atlas_url,
    attack_url,
    is_llmt,
    ttp,
    ttps,
)

__all__ = [
    "LLMT_IDS",
    "LLMT_LABELS",
    "TACTICS",
    "Actor",
    "ActorInfo",
    "ActorProfileData",
    "Ttp",
    "actor",
    "actor_info",
    "actors",
    "atlas_name",
    "atlas_url",
    "attack_url",
    "is_llmt",
    "ttp",
    "ttps",
]
