"""The sharing policy: what may leave, per TLP level and per recipient.

Everything that leaves stormwatch (a STIX file, a TAXII collection, a MISP feed) goes through a
:class:`SharingPolicy`. The defaults are closed: no prompt or response text, no account or
end-user identifiers, e-mail addresses only as keyed hashes, no analyst free text, and TLP:RED
only to recipients named for it. A TOML file loosens or tightens that per level and per recipient::

    default_tlp = "amber"
    indicator_validity_days = 90

    [producer]
    name = "Example AI Platform - Threat Intelligence"
    contact = "cti@example.net"

    [levels.green]                      # rules for objects marked TLP:GREEN
    fields = { ip = "allow", domain = "allow", email = "hash", account_id = "drop" }

    [trust_groups.ai-isac]              # HMAC key for hashed identifiers shared in this group
    key_env = "STORMWATCH_KEY_AI_ISAC"  # or key = "hex..." (tests only)

    [recipients.partner-a]
    principals = ["partner-a"]          # TAXII principals that read for this recipient
    trust_group = "ai-isac"
    max_tlp = "red"
    red = true                          # named for TLP:RED
    fields = { account_id = "hash" }

Hard floors that no file can lift: TLP:CLEAR and TLP:GREEN never carry raw e-mail addresses, raw
account or end-user ids, prompt or response text; raw account ids, end-user ids and prompt or
response text only go to a named recipient at TLP:AMBER+STRICT or RED.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from stormwatch.errors import ConfigError
from stormwatch.intel.tlp import Tlp


class Rule(StrEnum):
    ALLOW = "allow"
    HASH = "hash"
    DROP = "drop"


#: the fields a policy rules on
FIELDS: tuple[str, ...] = (
    "ip",  # actor infrastructure IPv4/IPv6 addresses (indicators)
    "domain",  # actor-registered domains (indicators)
    "url",  # actor URLs (indicators)
    "email",  # e-mail addresses seen on actor accounts
    "account_id",  # our platform's account ids (user-account SCOs)
    "end_user_id",  # our customers' end-user ids
    "prompt_text",  # prompt text (never by default)
    "response_text",  # model output text (never by default)
    "analyst_notes",  # free-text analyst rationale (note objects)
)

#: the object types a policy can allow
OBJECT_TYPES: frozenset[str] = frozenset(
    {
        "identity",
        "marking-definition",
        "extension-definition",
        "attack-pattern",
        "intrusion-set",
        "threat-actor",
        "grouping",
        "indicator",
        "sighting",
        "observed-data",
        "relationship",
        "report",
        "note",
        "course-of-action",
        "user-account",
        "ipv4-addr",
        "ipv6-addr",
        "domain-name",
        "email-addr",
        "url",
    }
)

DEFAULT_FIELDS: dict[str, Rule] = {
    "ip": Rule.ALLOW,
    "domain": Rule.ALLOW,
    "url": Rule.ALLOW,
    "email": Rule.HASH,
    "account_id": Rule.DROP,
    "end_user_id": Rule.DROP,
    "prompt_text": Rule.DROP,
    "response_text": Rule.DROP,
    "analyst_notes": Rule.DROP,
}

#: what raw (ALLOW) needs: (lowest level, must the recipient be named)
_RAW_FLOOR: dict[str, tuple[Tlp, bool]] = {
    "email": (Tlp.AMBER, False),
    "account_id": (Tlp.AMBER_STRICT, True),
    "end_user_id": (Tlp.AMBER_STRICT, True),
    "prompt_text": (Tlp.AMBER_STRICT, True),
    "response_text": (Tlp.AMBER_STRICT, True),
    "analyst_notes": (Tlp.GREEN, False),
}
# text has nothing to hash usefully; hashing prompts is allowed (template matching across providers)
_NO_HASH = frozenset({"ip", "domain", "url", "analyst_notes"})


@dataclass(frozen=True, slots=True)
class LevelRule:
    """What objects marked with one TLP level may contain."""

    types: frozenset[str] = OBJECT_TYPES
    fields: Mapping[str, Rule] = field(default_factory=lambda: dict(DEFAULT_FIELDS))


@dataclass(frozen=True, slots=True)
class Recipient:
    """A partner, CERT or community we share with."""

    name: str
    principals: tuple[str, ...] = ()
    trust_group: str | None = None
    max_tlp: Tlp = Tlp.AMBER
    red: bool = False
    types: frozenset[str] | None = None
    fields: Mapping[str, Rule] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Effective:
    """The rules for one (level, recipient) pair, floors applied."""

    level: Tlp
    types: frozenset[str]
    fields: Mapping[str, Rule]
    trust_group: str
    key: bytes

    def rule(self, name: str) -> Rule:
        return self.fields.get(name, Rule.DROP)

    def hmac(self, kind: str, value: str) -> str:
        """Keyed hash of an identifier for this trust group: ``hmac-sha256:<group>:<hex>``."""
        norm = value.strip().lower() if kind == "email" else value
        digest = hmac.new(self.key, f"{kind}:{norm}".encode(), hashlib.sha256).hexdigest()
        return f"hmac-sha256:{self.trust_group}:{digest}"

    def fingerprint(self) -> str:
        """Short stable digest of the rules (ids of recipient-specific objects depend on it)."""
        body = "|".join(
            [self.level.label, self.trust_group, ",".join(sorted(self.types))]
            + [f"{k}={v.value}" for k, v in sorted(self.fields.items())]
        )
        return hashlib.sha256(body.encode()).hexdigest()[:16]


PUBLIC_GROUP = "public"


@dataclass(frozen=True, slots=True)
class SharingPolicy:
    default_tlp: Tlp = Tlp.AMBER
    indicator_validity_days: int = 90
    producer_name: str = "stormwatch"
    producer_contact: str | None = None
    levels: Mapping[Tlp, LevelRule] = field(default_factory=dict)
    recipients: Mapping[str, Recipient] = field(default_factory=dict)
    trust_group_keys: Mapping[str, bytes] = field(default_factory=dict)
    #: keys groups without a configured key from this secret; the exporters set it from the
    #: database (one random secret per deployment), so hashes are stable but not guessable.
    fallback_secret: bytes = field(default_factory=lambda: os.urandom(32), repr=False)

    # -- questions the exporters ask --------------------------------------------------------------
    def recipient(self, name: str | None) -> Recipient | None:
        if name is None:
            return None
        r = self.recipients.get(name)
        if r is None:
            raise ConfigError(
                f"recipient {name!r} is not in the sharing policy",
                hint="add a [recipients.NAME] table to the policy file",
            )
        return r

    def may_receive(self, level: Tlp, recipient: Recipient | None) -> bool:
        """May objects at ``level`` go to ``recipient`` (None: an unnamed audience, e.g. a file)?"""
        if level == Tlp.RED:
            return recipient is not None and recipient.red
        if recipient is None:
            return True
        return level <= recipient.max_tlp

    def effective(self, level: Tlp, recipient: Recipient | None) -> Effective:
        base = self.levels.get(level, LevelRule())
        types = set(base.types)
        fields = dict(DEFAULT_FIELDS)
        fields.update(base.fields)
        if recipient is not None:
            if recipient.types is not None:
                types &= recipient.types
            fields.update(recipient.fields)
        named = recipient is not None and recipient.red
        for name, rule in list(fields.items()):
            if rule == Rule.HASH and name in _NO_HASH:
                fields[name] = Rule.DROP
            if rule == Rule.ALLOW and name in _RAW_FLOOR:
                floor, needs_name = _RAW_FLOOR[name]
                if level < floor or (needs_name and not named):
                    fields[name] = Rule.HASH if name not in _NO_HASH else Rule.DROP
        group = (recipient.trust_group if recipient else None) or PUBLIC_GROUP
        return Effective(level, frozenset(types), fields, group, self._key(group))

    def _key(self, group: str) -> bytes:
        key = self.trust_group_keys.get(group)
        if key is not None:
            return key
        env = os.environ.get("STORMWATCH_SHARE_KEY")
        secret = env.encode() if env else self.fallback_secret
        return hmac.new(secret, f"trust-group:{group}".encode(), hashlib.sha256).digest()

    def principal_recipients(self, principal: str) -> list[Recipient]:
        return [r for r in self.recipients.values() if principal in r.principals]


def _rule_map(raw: object, where: str) -> dict[str, Rule]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}.fields must be a table")
    out: dict[str, Rule] = {}
    for k, v in raw.items():
        if k not in FIELDS:
            raise ConfigError(f"{where}.fields: unknown field {k!r} (known: {', '.join(FIELDS)})")
        try:
            out[k] = Rule(str(v))
        except ValueError:
            raise ConfigError(f"{where}.fields.{k}: {v!r} is not allow, hash or drop") from None
    return out


def _types(raw: object, where: str) -> frozenset[str]:
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise ConfigError(f"{where}.types must be a list of STIX type names")
    unknown = set(raw) - OBJECT_TYPES
    if unknown:
        raise ConfigError(f"{where}.types: unknown {sorted(unknown)}")
    return frozenset(raw)


def _tlp(raw: object, where: str) -> Tlp:
    try:
        return Tlp.parse(str(raw))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def policy_from_dict(data: Mapping[str, Any]) -> SharingPolicy:
    """Build a policy from the parsed TOML (see the module docstring for the layout)."""
    known = {"default_tlp", "indicator_validity_days", "producer", "levels", "recipients", "trust_groups"}
    extra = set(data) - known
    if extra:
        raise ConfigError(f"sharing policy: unknown keys {sorted(extra)}")
    pol = SharingPolicy()
    if "default_tlp" in data:
        pol = replace(pol, default_tlp=_tlp(data["default_tlp"], "default_tlp"))
    if "indicator_validity_days" in data:
        days = data["indicator_validity_days"]
        if not isinstance(days, int) or days <= 0:
            raise ConfigError("indicator_validity_days must be a positive integer")
        pol = replace(pol, indicator_validity_days=days)
    prod = data.get("producer", {})
    if prod:
        pol = replace(
            pol,
            producer_name=str(prod.get("name", pol.producer_name)),
            producer_contact=(str(prod["contact"]) if "contact" in prod else None),
        )
    levels: dict[Tlp, LevelRule] = {}
    for name, body in dict(data.get("levels", {})).items():
        level = _tlp(name, f"levels.{name}")
        rule = LevelRule()
        if "types" in body:
            rule = replace(rule, types=_types(body["types"], f"levels.{name}"))
        if "fields" in body:
            merged = dict(DEFAULT_FIELDS)
            merged.update(_rule_map(body["fields"], f"levels.{name}"))
            rule = replace(rule, fields=merged)
        levels[level] = rule
    keys: dict[str, bytes] = {}
    for name, body in dict(data.get("trust_groups", {})).items():
        if "key" in body:
            keys[name] = str(body["key"]).encode()
        elif "key_env" in body:
            val = os.environ.get(str(body["key_env"]))
            if not val:
                raise ConfigError(
                    f"trust group {name!r}: environment variable {body['key_env']} is not set",
                    hint="export it with the group's shared HMAC key",
                )
            keys[name] = val.encode()
        else:
            raise ConfigError(f"trust group {name!r} needs key_env (or key)")
    recipients: dict[str, Recipient] = {}
    for name, body in dict(data.get("recipients", {})).items():
        group = body.get("trust_group")
        if group is not None and group not in keys:
            raise ConfigError(f"recipients.{name}: trust group {group!r} is not defined")
        principals = body.get("principals", [name])
        if not isinstance(principals, list):
            raise ConfigError(f"recipients.{name}.principals must be a list")
        recipients[name] = Recipient(
            name=name,
            principals=tuple(str(p) for p in principals),
            trust_group=group,
            max_tlp=_tlp(body.get("max_tlp", "amber"), f"recipients.{name}.max_tlp"),
            red=bool(body.get("red", False)),
            types=_types(body["types"], f"recipients.{name}") if "types" in body else None,
            fields=_rule_map(body.get("fields", {}), f"recipients.{name}"),
        )
    return replace(pol, levels=levels, recipients=recipients, trust_group_keys=keys)


def load_policy(path: Path | str | None) -> SharingPolicy:
    """Read a TOML policy file; ``None`` gives the closed defaults."""
    if path is None:
        env = os.environ.get("STORMWATCH_SHARE_POLICY")
        if not env:
            return SharingPolicy()
        path = env
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sharing policy {p} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sharing policy {p}: {exc}") from None
    return policy_from_dict(data)
