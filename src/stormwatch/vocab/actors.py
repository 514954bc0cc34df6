"""Known threat actors: names, aliases, ATT&CK group ids, sponsors and behaviour profiles.

Loaded once from ``vocab/data/actors.json``, the one place actors are written down. intel uses the
names, aliases and ids (STIX intrusion-sets, MISP galaxies); analyze uses the profiles (TTP mix,
working hours, languages) through :mod:`stormwatch.analyze.profiles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from stormwatch.vocab.taxonomy import load_data

__all__ = ["Actor", "ActorInfo", "ActorProfileData", "actor", "actor_info", "actors"]


@dataclass(frozen=True, slots=True)
class ActorProfileData:
    """How an actor behaves on an LLM service (as reported; see ``actors.json``)."""

    #: (LLMT id, weight) as written (analyze normalises); hashable, see :meth:`ttp_weights`
    ttps: tuple[tuple[str, float], ...]
    utc_offsets: tuple[float, ...]
    languages: tuple[str, ...]
    targets: tuple[str, ...]

    def ttp_weights(self) -> dict[str, float]:
        return dict(self.ttps)


@dataclass(frozen=True, slots=True)
class Actor:
    name: str
    aliases: tuple[str, ...]
    attack_id: str | None
    #: the mitre/cti intrusion-set id, where it was read
    attack_stix_id: str | None
    country: str | None
    sponsor: str | None
    misp_galaxy: str | None
    #: the report that first named its use of LLM services
    reported: str
    profile: ActorProfileData

    def names(self) -> set[str]:
        """Name and aliases, lower case."""
        return {n.lower() for n in (self.name, *self.aliases)}


#: the name intel code has used for the record (same fields it read before)
ActorInfo = Actor


def _actor(a: dict[str, Any]) -> Actor:
    p = a.get("profile") or {}
    return Actor(
        name=a["name"],
        aliases=tuple(a.get("aliases", [])),
        attack_id=a.get("attack_id"),
        attack_stix_id=a.get("attack_stix_id"),
        country=a.get("country"),
        sponsor=a.get("sponsor"),
        misp_galaxy=a.get("misp_galaxy"),
        reported=a.get("reported", ""),
        profile=ActorProfileData(
            ttps=tuple((str(k), float(v)) for k, v in (p.get("ttps") or {}).items()),
            utc_offsets=tuple(float(x) for x in p.get("utc_offsets", [])),
            languages=tuple(p.get("languages", [])),
            targets=tuple(p.get("targets", [])),
        ),
    )


@cache
def actors() -> dict[str, Actor]:
    """Every known actor by lower-case name, in file order."""
    return {a["name"].lower(): _actor(a) for a in load_data("actors.json")["actors"]}


@cache
def _index() -> dict[str, Actor]:
    by: dict[str, Actor] = {}
    for info in actors().values():
        for alias in info.aliases:
            by.setdefault(alias.lower(), info)
    by.update(actors())  # a name wins over another actor's alias
    return by


def actor(name: str) -> Actor | None:
    """A known actor by name, alias (case-insensitive) or ATT&CK group id (``G0007``)."""
    key = name.strip().lower()
    hit = _index().get(key)
    if hit is not None:
        return hit
    up = key.upper()
    for info in actors().values():
        if info.attack_id is not None and info.attack_id == up:
            return info
    return None


def actor_info(name: str) -> Actor | None:
    """Known actor by name or alias (case-insensitive)."""
    return _index().get(name.strip().lower())
