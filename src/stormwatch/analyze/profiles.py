"""Actor behaviour profiles (``vocab/data/actors.json``) and how well an account or cluster fits one.

The behaviour score ``b`` in [-1, 1] compares observed behaviour with a profile:

* TTP mix: cosine similarity of the TTP mass with the profile's TTP weights, mapped to [-1, 1]
  (``2 * cos - 1``); no TTP mass means no information (0). Both are first smoothed within ATT&CK
  tactics: half of each category's mass (``params.TTP_EXACT_SHARE``) stays on it and the rest is
  spread evenly over the categories of its tactic (scripting and operational commands are both
  *execution*; the reconnaissance categories share theirs). Request classifiers confuse such
  neighbours far more than they confuse tactics (on simulated actor requests the first tier's top
  category matched the generator's label for 14 % of them, its tactic far more often), and a
  comparison that demanded the exact category failed a whole operation on that alone: on a held-out
  simulated platform a Forest Blizzard cluster whose scripting asks were read as operational
  commands fitted at 0.45, below the coordinated-cluster line of 0.5, and was not enforced.
* Working hours: share of activity inside the profile's local 08:00-19:00, against the share a
  uniform clock would give (11/24); needs at least 10 events. Office hours in a foreign time zone
  only *support* an attribution; they never make an account suspicious by themselves.
* Language: share of requests in the profile's languages (script of the text, else the browser's
  Accept-Language) adds; a share in other non-English languages subtracts half as much.

``b = 0.4 * ttp + 0.35 * hours + 0.25 * language``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from stormwatch.analyze.params import LLMT, OFFICE_HOURS, TTP_EXACT_SHARE
from stormwatch.vocab import actors, ttps

__all__ = ["ActorProfile", "BehaviourFit", "fit_behaviour", "load_profiles", "profile_for", "tactic_smoothing"]

Arr = np.ndarray[Any, Any]
CHANCE_OFFICE = (OFFICE_HOURS[1] - OFFICE_HOURS[0]) / 24.0


@dataclass(frozen=True, slots=True)
class ActorProfile:
    name: str
    aliases: tuple[str, ...]
    attack_id: str | None
    country: str
    utc_offsets: tuple[float, ...]
    languages: tuple[str, ...]
    ttps: Arr  # [14], sums to 1

    def names(self) -> set[str]:
        return {n.lower() for n in (self.name, *self.aliases)}


@dataclass(frozen=True, slots=True)
class BehaviourFit:
    score: float
    ttp: float
    hours: float
    language: float
    ttp_cosine: float
    office_share: float
    language_share: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(getattr(self, k)), 3) for k in self.__slots__}


@cache
def load_profiles() -> tuple[ActorProfile, ...]:
    out = []
    for a in actors().values():
        if not a.profile.ttps:
            continue  # an actor known by name only: nothing to compare behaviour with
        weights = a.profile.ttp_weights()
        vec = np.array([float(weights.get(c, 0.0)) for c in LLMT])
        out.append(
            ActorProfile(
                name=a.name,
                aliases=a.aliases,
                attack_id=a.attack_id,
                country=a.country or "",
                utc_offsets=a.profile.utc_offsets,
                languages=a.profile.languages,
                ttps=vec / max(vec.sum(), 1e-9),
            )
        )
    return tuple(out)


def profile_for(name: str | None, aliases: list[str], attack_ids: list[str]) -> ActorProfile | None:
    """The profile of an intrusion-set, by ATT&CK id first, then by name or alias."""
    names = {n.lower() for n in [name or "", *aliases] if n}
    for p in load_profiles():
        if p.attack_id and p.attack_id in attack_ids:
            return p
    for p in load_profiles():
        if p.names() & names:
            return p
    return None


@cache
def tactic_smoothing() -> Arr:
    """``S[i, j]``: the share of category ``i``'s mass counted on ``j`` (symmetric; rows sum to 1)."""
    tactic = [ttps()[c].tactic for c in LLMT]
    smooth = np.eye(len(LLMT)) * TTP_EXACT_SHARE
    for i, t in enumerate(tactic):
        same = [j for j, u in enumerate(tactic) if u == t]
        for j in same:
            smooth[i, j] += (1.0 - TTP_EXACT_SHARE) / len(same)
    smooth.flags.writeable = False
    return smooth


@cache
def _office_window(shift: int) -> Arr:
    """The office-hours window (48 half-hour UTC bins) of a UTC offset of ``shift`` half hours."""
    lo, hi = int(OFFICE_HOURS[0] * 2), int(OFFICE_HOURS[1] * 2)
    window = np.zeros(48)
    window[lo:hi] = 1.0
    shifted: Arr = np.roll(window, -shift)
    shifted.flags.writeable = False  # shared by every call
    return shifted


def _office_share(hours48: Arr, offset: float) -> float:
    total = float(hours48.sum())
    return float(hours48 @ _office_window(round(offset * 2))) / total if total else 0.0


def _combine(
    profile: ActorProfile, cos: float | None, office: float | None, languages: dict[str, float]
) -> BehaviourFit:
    """The fit from its parts: ``cos`` the smoothed TTP cosine (None: too little TTP mass), ``office``
    the best share of requests in the profile's office hours (None: too few requests)."""
    ttp = 0.0 if cos is None else 2.0 * cos - 1.0
    hours = 0.0 if office is None else (office - CHANCE_OFFICE) / (1.0 - CHANCE_OFFICE)
    own = sum(v for k, v in languages.items() if k in profile.languages)
    other = sum(v for k, v in languages.items() if k not in profile.languages and k not in ("en", "other"))
    lang = min(1.0, 3.0 * own) - 0.5 * min(1.0, 3.0 * other)
    score = 0.4 * ttp + 0.35 * hours + 0.25 * lang
    return BehaviourFit(score, ttp, hours, lang, cos or 0.0, office or 0.0, own)


def fit_behaviour(
    profile: ActorProfile, ttp_mass: Arr, hours48: Arr, languages: dict[str, float], n_events: int
) -> BehaviourFit:
    cos = office = None
    if float(ttp_mass.sum()) >= 1.0:
        seen, expected = tactic_smoothing() @ ttp_mass, tactic_smoothing() @ profile.ttps
        cos = float(seen @ expected) / (float(np.linalg.norm(seen)) * float(np.linalg.norm(expected)))
    if n_events >= 10:
        office = max(_office_share(hours48, off) for off in profile.utc_offsets)
    return _combine(profile, cos, office, languages)


@cache
def _profile_table() -> tuple[Arr, Arr, tuple[tuple[int, ...], ...], Arr]:
    """For :func:`load_profiles`: the smoothed TTP mixes [P, 14] and their norms, and the office
    windows of every profile's UTC offsets (rows of ``W`` [K, 48]; ``rows[p]`` are profile p's)."""
    profiles = load_profiles()
    smooth = tactic_smoothing()
    expected = np.array([smooth @ p.ttps for p in profiles], dtype=np.float64).reshape(len(profiles), len(LLMT))
    rows: list[tuple[int, ...]] = []
    windows: list[Arr] = []
    for p in profiles:
        rows.append(tuple(range(len(windows), len(windows) + len(p.utc_offsets))))
        windows.extend(_office_window(round(off * 2)) for off in p.utc_offsets)
    w = np.array(windows, dtype=np.float64).reshape(len(windows), 48)
    return expected, np.linalg.norm(expected, axis=1), tuple(rows), w


def fit_all(ttp_mass: Arr, hours48: Arr, languages: dict[str, float], n_events: int) -> tuple[BehaviourFit, ...]:
    """:func:`fit_behaviour` for every profile of :func:`load_profiles`, in their order, sharing the
    work between them (the account model computes it for every account it scores)."""
    profiles = load_profiles()
    expected, norms, rows, windows = _profile_table()
    cos: Arr | None = None
    if float(ttp_mass.sum()) >= 1.0:
        seen = tactic_smoothing() @ ttp_mass
        cos = (expected @ seen) / (norms * float(np.linalg.norm(seen)))
    total = float(hours48.sum())
    shares = (windows @ hours48) / total if total else np.zeros(len(windows))
    return tuple(
        _combine(
            p,
            None if cos is None else float(cos[k]),
            max(float(shares[r]) for r in rows[k]) if n_events >= 10 else None,
            languages,
        )
        for k, p in enumerate(profiles)
    )
