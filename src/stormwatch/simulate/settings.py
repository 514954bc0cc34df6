"""Generator settings of the platform simulator: the knobs domain randomisation draws.

``SimSettings()`` reproduces the generator of version 1.0.0 byte for byte (same seed, same
``events.jsonl``, ``accounts.jsonl``, ``intel.stix.json``, ``platform.json``,
``truth_events.jsonl.gz``); the hard populations (penetration-testing firms, red-teamers, CTF
students, actors who imitate researchers, one-account-per-task actors) appear only when a setting
enables them.

* :meth:`SimSettings.randomized` draws every knob from its *training* range (``KNOBS[...].train``).
* :meth:`SimSettings.preset` returns a named *held-out* family. Every preset sets at least one knob
  outside its training range (:meth:`SimSettings.outside_training` lists them; tested), so a model
  trained on ``randomized()`` runs never sees a preset's setting.
* :meth:`SimSettings.to_dict` / :meth:`SimSettings.from_dict` round-trip through JSON; ``from_dict``
  rejects unknown keys, wrong types and out-of-range values, naming the key.

See ``docs/simulator.md`` (section "Settings, randomisation and hard populations").
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from typing import Any, NamedTuple


class Knob(NamedTuple):
    """A knob's allowed range, the range ``randomized()`` draws from, and what it does."""

    lo: float
    hi: float
    train: tuple[float, float]
    doc: str


# name -> Knob. The dataclass below holds the defaults (today's generator); both must list the same
# names in the same order (checked at import).
KNOBS: dict[str, Knob] = {
    # ---- actor operations -------------------------------------------------------------------
    "actor_ops_scale": Knob(0.05, 10.0, (0.5, 2.0), "multiplies the accounts per operation"),
    "op_size_min": Knob(1, 60, (2, 6), "fewest accounts of an operation at 2000 accounts (before scaling)"),
    "op_size_max": Knob(1, 100, (6, 14), "most accounts of an operation at 2000 accounts (before scaling)"),
    "second_op_p": Knob(0.0, 1.0, (0.1, 0.7), "chance an actor runs a second operation (below 8000 accounts)"),
    "actor_rate_median": Knob(0.02, 50.0, (1.2, 4.0), "median sessions per day of an actor account"),
    "actor_rate_sigma": Knob(0.0, 3.0, (0.2, 0.9), "log-normal spread of actor session rates"),
    "actor_mundane_min": Knob(0.0, 1.0, (0.3, 0.6), "lowest share of an actor account's sessions that are mundane"),
    "actor_mundane_max": Knob(0.0, 1.0, (0.6, 0.85), "highest share of an actor account's sessions that are mundane"),
    "actor_translate_p": Knob(0.0, 0.65, (0.15, 0.5), "share of actor mundane requests that are translations"),
    "actor_english_p": Knob(0.0, 1.0, (0.45, 0.95), "share of actor accounts whose browser asks for English"),
    "actor_hidden_p": Knob(0.0, 1.0, (0.15, 0.6), "share of actor accounts on the hidden (never named) pool"),
    "actor_vpn_p": Knob(0.0, 1.0, (0.3, 0.9), "share of operations that also use a commercial VPN"),
    "actor_isolated_p": Knob(
        0.0, 1.0, (0.0, 0.3), "share of actor accounts on their own infrastructure (nothing shared, never named)"
    ),
    "imitates_researcher_share": Knob(0.0, 1.0, (0.0, 0.5), "share of operations that phrase asks like researchers"),
    "imitation_p": Knob(0.0, 1.0, (0.4, 0.9), "share of an imitating operation's asks in defender framing"),
    "account_per_task_share": Knob(0.0, 1.0, (0.0, 0.4), "share of operations that use one account per task"),
    "task_accounts": Knob(2, 400, (6, 20), "accounts of a one-account-per-task operation at 2000 accounts"),
    "task_requests_max": Knob(2, 60, (4, 14), "most operational requests of one task account"),
    # ---- partner intel ----------------------------------------------------------------------
    "intel_op_coverage": Knob(0.0, 1.0, (0.6, 1.0), "share of operations the partner's intel names at all"),
    "intel_named_min": Knob(0.0, 1.0, (0.15, 0.4), "lowest share of a named operation's exposed IPs in intel"),
    "intel_named_max": Knob(0.0, 1.0, (0.4, 0.75), "highest share of a named operation's exposed IPs in intel"),
    "intel_domain_p": Knob(0.0, 1.0, (0.3, 0.8), "chance intel names an operation's lure domain"),
    # ---- benign crowd -----------------------------------------------------------------------
    "benign_rate_scale": Knob(0.02, 50.0, (0.6, 1.6), "multiplies every benign persona's session rate"),
    "security_pro_share": Knob(0.0, 0.6, (0.03, 0.12), "share of ordinary benign accounts that are security pros"),
    "secpro_malicious_scale": Knob(0.0, 4.0, (0.5, 2.0), "scales how often security pros ask malicious-looking"),
    "vpn_user_p": Knob(0.0, 1.0, (0.08, 0.3), "share of benign accounts that sometimes use a commercial VPN"),
    "vpn_exit_scale": Knob(0.02, 20.0, (0.5, 2.0), "scales VPN exits per provider (fewer exits = bigger crowds)"),
    "vpn_exits_min": Knob(1, 50, (2, 3), "fewest exits per VPN provider"),
    "corp_org_size": Knob(3, 2000, (25, 90), "benign accounts per corporate organisation (NAT crowd size)"),
    # ---- hard benign populations ------------------------------------------------------------
    "pentest_firms": Knob(0, 200, (0, 3), "penetration-testing firms (per 2000 accounts)"),
    "pentest_size_min": Knob(2, 60, (2, 4), "fewest accounts of a pentest firm"),
    "pentest_size_max": Knob(2, 100, (4, 8), "most accounts of a pentest firm"),
    "pentest_shared_key_p": Knob(0.0, 1.0, (0.1, 0.5), "chance a pentest account also uses the firm's API key"),
    "pentest_malicious_p": Knob(0.0, 1.0, (0.3, 0.6), "share of pentest asks that read malicious"),
    "red_teamer_share": Knob(0.0, 0.3, (0.0, 0.01), "share of accounts that are independent red-teamers"),
    "rephrase_p": Knob(
        0.0, 1.0, (0.6, 0.95), "chance a red-teamer, pentester or CTF student rephrases after a refusal"
    ),
    "ctf_student_share": Knob(0.0, 0.3, (0.0, 0.015), "share of accounts that are CTF students"),
    "ctf_burst_scale": Knob(1.0, 100.0, (4.0, 12.0), "session-rate multiplier of CTF students on CTF weekends"),
}
INT_KNOBS = frozenset(
    {
        "op_size_min",
        "op_size_max",
        "task_accounts",
        "task_requests_max",
        "vpn_exits_min",
        "corp_org_size",
        "pentest_firms",
        "pentest_size_min",
        "pentest_size_max",
    }
)
# (lower, upper) knob pairs: lower <= upper
PAIRS = (
    ("op_size_min", "op_size_max"),
    ("actor_mundane_min", "actor_mundane_max"),
    ("intel_named_min", "intel_named_max"),
    ("pentest_size_min", "pentest_size_max"),
)


class SettingsError(ValueError):
    """A bad settings value; the message names the key."""


@dataclass(frozen=True, slots=True)
class SimSettings:
    """Every knob the simulator randomises. Defaults = the generator of version 1.0.0."""

    actor_ops_scale: float = 1.0
    op_size_min: int = 4
    op_size_max: int = 9
    second_op_p: float = 0.3
    actor_rate_median: float = 2.2
    actor_rate_sigma: float = 0.4
    actor_mundane_min: float = 0.5
    actor_mundane_max: float = 0.7
    actor_translate_p: float = 0.35
    actor_english_p: float = 0.7
    actor_hidden_p: float = 0.35
    actor_vpn_p: float = 0.7
    actor_isolated_p: float = 0.0
    imitates_researcher_share: float = 0.0
    imitation_p: float = 0.7
    account_per_task_share: float = 0.0
    task_accounts: int = 12
    task_requests_max: int = 8
    intel_op_coverage: float = 1.0
    intel_named_min: float = 0.3
    intel_named_max: float = 0.6
    intel_domain_p: float = 0.6
    benign_rate_scale: float = 1.0
    security_pro_share: float = 0.06
    secpro_malicious_scale: float = 1.0
    vpn_user_p: float = 0.18
    vpn_exit_scale: float = 1.0
    vpn_exits_min: int = 2
    corp_org_size: int = 45
    pentest_firms: int = 0
    pentest_size_min: int = 3
    pentest_size_max: int = 7
    pentest_shared_key_p: float = 0.3
    pentest_malicious_p: float = 0.5
    red_teamer_share: float = 0.0
    rephrase_p: float = 0.85
    ctf_student_share: float = 0.0
    ctf_burst_scale: float = 8.0

    def __post_init__(self) -> None:
        for name, knob in KNOBS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SettingsError(f"settings: {name}: expected a number, got {type(value).__name__}")
            if name in INT_KNOBS and not isinstance(value, int):
                if not (isinstance(value, float) and value.is_integer()):
                    raise SettingsError(f"settings: {name}: expected an integer, got {value!r}")
                object.__setattr__(self, name, int(value))
            elif name not in INT_KNOBS and isinstance(value, int):
                object.__setattr__(self, name, float(value))
            if not math.isfinite(value) or not knob.lo <= value <= knob.hi:
                raise SettingsError(f"settings: {name}: {value!r} is outside [{knob.lo:g}, {knob.hi:g}]")
        for low, high in PAIRS:
            if getattr(self, low) > getattr(self, high):
                raise SettingsError(f"settings: {low}: {getattr(self, low)!r} is above {high} {getattr(self, high)!r}")

    # ---- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every knob, in a fixed order (JSON-ready)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "settings") -> SimSettings:
        """Strict: unknown keys, non-numbers and out-of-range values raise :class:`SettingsError`.

        Missing keys keep their defaults, so a file may set only what it changes.
        """
        if not isinstance(data, dict):
            raise SettingsError(f"{where}: expected a JSON object of settings, got {type(data).__name__}")
        for key in data:
            if key not in KNOBS:
                raise SettingsError(f"{where}: {key}: unknown setting (known: {', '.join(KNOBS)})")
        try:
            return cls(**data)
        except SettingsError as exc:
            raise SettingsError(str(exc).replace("settings:", f"{where}:", 1)) from None

    # ---- families ----------------------------------------------------------------------------
    @classmethod
    def randomized(cls, seed: int) -> SimSettings:
        """Every knob drawn from its training range; deterministic per ``seed``.

        Hard populations are included: pentest firms, red-teamers, CTF students, imitating and
        one-account-per-task operations each appear in most draws.
        """
        rng = random.Random(f"stormwatch.simulate.settings:{seed}")
        values: dict[str, float] = {}
        for name, knob in KNOBS.items():
            lo, hi = knob.train
            if name in INT_KNOBS:
                values[name] = rng.randint(int(lo), int(hi))
            else:
                values[name] = round(rng.uniform(lo, hi), 4)
        for low, high in PAIRS:
            if values[low] > values[high]:
                values[low], values[high] = values[high], values[low]
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def preset(cls, name: str) -> SimSettings:
        """A named held-out family (``PRESETS``); never drawn by :meth:`randomized`."""
        if name not in PRESETS:
            raise SettingsError(f"preset: {name!r}: unknown (known: {', '.join(PRESETS)})")
        return cls(**PRESETS[name][1])  # type: ignore[arg-type]

    def outside_training(self) -> list[str]:
        """Knobs whose value lies outside the range :meth:`randomized` draws from."""
        out = []
        for name, knob in KNOBS.items():
            lo, hi = knob.train
            if not lo <= getattr(self, name) <= hi:
                out.append(name)
        return out

    def family(self) -> str:
        """``default``, ``preset:<name>`` when equal to one, else ``custom``."""
        if self == SimSettings():
            return "default"
        for name in PRESETS:
            if self == SimSettings.preset(name):
                return f"preset:{name}"
        return "custom"

    @property
    def hard_populations(self) -> bool:
        """True when any hard population is enabled."""
        return bool(
            self.pentest_firms
            or self.red_teamer_share
            or self.ctf_student_share
            or self.imitates_researcher_share
            or self.account_per_task_share
            or self.actor_isolated_p
        )


# name -> (what it tests, overrides of the defaults). Each sets knobs outside the training ranges.
PRESETS: dict[str, tuple[str, dict[str, float]]] = {
    "pentest-heavy": (
        "many penetration-testing firms (8 per 2000 accounts, up to 12 accounts) asking mostly "
        "malicious-looking questions, plus red-teamers",
        {
            "pentest_firms": 8,
            "pentest_size_min": 4,
            "pentest_size_max": 12,
            "pentest_malicious_p": 0.75,
            "pentest_shared_key_p": 0.6,
            "red_teamer_share": 0.02,
            "rephrase_p": 0.95,
        },
    ),
    "vpn-heavy": (
        "big VPN crowds: 45% of benign accounts on few exits; every operation uses the VPN",
        {
            "vpn_user_p": 0.45,
            "vpn_exit_scale": 0.25,
            "vpn_exits_min": 1,
            "actor_vpn_p": 1.0,
            "corp_org_size": 150,
        },
    ),
    "quiet-actors": (
        "actors that are slow, mostly mundane, mostly on hidden infrastructure and rarely named in intel",
        {
            "actor_rate_median": 0.7,
            "actor_mundane_min": 0.75,
            "actor_mundane_max": 0.9,
            "actor_hidden_p": 0.8,
            "actor_isolated_p": 0.5,
            "intel_op_coverage": 0.4,
            "intel_named_min": 0.05,
            "intel_named_max": 0.12,
            "intel_domain_p": 0.1,
        },
    ),
    "imitators": (
        "most operations phrase their asks like security researchers; more security professionals",
        {
            "imitates_researcher_share": 0.9,
            "imitation_p": 0.95,
            "security_pro_share": 0.16,
            "secpro_malicious_scale": 2.5,
        },
    ),
    "multilingual": (
        "actors browse in their own language and translate a lot",
        {"actor_english_p": 0.2, "actor_translate_p": 0.6},
    ),
    "account-per-task": (
        "most operations use one short-lived account per task, with many accounts",
        {"account_per_task_share": 0.9, "task_accounts": 30, "task_requests_max": 5},
    ),
}


def _check_tables() -> None:
    names = [f.name for f in fields(SimSettings)]
    if names != list(KNOBS):  # pragma: no cover - a programming error
        raise RuntimeError("simulate.settings: KNOBS and SimSettings fields differ")


_check_tables()
