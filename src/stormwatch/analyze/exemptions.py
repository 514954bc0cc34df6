"""Exemptions analyze honours: named security firms and researchers are never ``enforce``.

The files are the ones ``disrupt`` reads (``kind: exemptions``, docs/disrupt.md), so one list serves
both: each entry names exactly one of ``account_id``, ``org_id``, ``email_domain``, says why
(``reason``), who granted it (``granted_by``) and until when (``expires``, a date; it holds through
that day). A folder given is searched (recursively) for ``*.yaml`` / ``*.yml`` files of kind
``exemptions``; the policy files beside them are skipped. A named file must be an exemptions file.

Every active entry, whatever its ``actions`` (those narrow what ``disrupt`` skips), keeps the account
out of ``enforce``: it stays visible, at ``review`` at most, outside the ranked review queue, with the
exemption shown. Entries match in file order, as in ``disrupt``; expired entries are ignored. A
malformed file is an :class:`~stormwatch.errors.InputError` naming the file, line and field
(``stormwatch policy check --policies FILE`` validates the same file).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from stormwatch.errors import InputError
from stormwatch.result import AccountFacts

__all__ = ["Exemption", "load_exemptions", "match_exemption"]

_WHO = ("account_id", "org_id", "email_domain")
_KEYS = (*_WHO, "reason", "granted_by", "expires", "actions")


@dataclass(frozen=True, slots=True)
class Exemption:
    match: str  # account_id | org_id | email_domain
    value: str
    reason: str
    granted_by: str
    expires: date
    source: str = ""  # FILE:LINE

    def active(self, today: date) -> bool:
        return today <= self.expires

    def applies_to(self, account_id: str, facts: AccountFacts | None) -> bool:
        if self.match == "account_id":
            return self.value == account_id
        if facts is None:
            return False
        if self.match == "org_id":
            return facts.org_id is not None and facts.org_id == self.value
        return (facts.email_domain or "").lower() == self.value.lower()

    def to_dict(self) -> dict[str, Any]:
        """As a judgement carries it (``Judgement.exemption``)."""
        return {
            "match": self.match,
            "value": self.value,
            "reason": self.reason,
            "granted_by": self.granted_by,
            "expires": self.expires.isoformat(),
            "source": self.source,
        }


def _files(paths: Iterable[str | Path]) -> list[tuple[Path, bool]]:
    """(file, named): files named directly, and the YAML files found in folders."""
    out: list[tuple[Path, bool]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out += [(q, False) for q in sorted(p.rglob("*")) if q.suffix in (".yaml", ".yml") and q.is_file()]
        elif p.is_file():
            out.append((p, True))
        else:
            raise InputError(f"{p}: no such exemptions file or folder")
    return out


def _line(node: yaml.Node | None) -> str:
    return f":{node.start_mark.line + 1}" if node is not None else ""


def _entry(path: Path, i: int, item: Any, node: yaml.Node | None) -> Exemption:
    where = f"{path}{_line(node)}: exemptions[{i}]"
    if not isinstance(item, Mapping):
        raise InputError(f"{where}: expected a mapping (account_id / org_id / email_domain, reason, ...)")
    unknown = sorted(str(k) for k in item if k not in _KEYS)
    if unknown:
        raise InputError(f"{where}.{unknown[0]}: unknown field; expected one of: {', '.join(_KEYS)}")
    who = [k for k in _WHO if k in item]
    if len(who) != 1:
        raise InputError(f"{where}: name exactly one of account_id, org_id, email_domain")
    for req in ("reason", "granted_by", "expires"):
        if item.get(req) in (None, ""):
            raise InputError(f"{where}.{req}: required: every exemption says why, who granted it and until when")
    for key in (who[0], "reason", "granted_by"):
        if not isinstance(item[key], str) or not item[key].strip():
            raise InputError(f"{where}.{key}: expected a non-empty string")
    raw = item["expires"]
    try:
        expires = raw if isinstance(raw, date) else date.fromisoformat(str(raw))
    except ValueError:
        raise InputError(f"{where}.expires: expected a date, YYYY-MM-DD") from None
    return Exemption(who[0], item[who[0]], item["reason"], item["granted_by"], expires, f"{path}{_line(node)}")


def _load_file(path: Path, named: bool) -> list[Exemption]:
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: YAML syntax: {exc}") from exc
    kind = data.get("kind", "policy") if isinstance(data, Mapping) else None
    if kind != "exemptions":
        if named:
            raise InputError(f"{path}: not an exemptions file (expected `kind: exemptions`)")
        return []
    assert isinstance(data, Mapping)
    unknown = sorted(str(k) for k in data if k not in ("kind", "description", "exemptions"))
    if unknown:
        raise InputError(f"{path}: {unknown[0]}: unknown field; expected kind, description, exemptions")
    items = data.get("exemptions")
    if not isinstance(items, list):
        raise InputError(f"{path}: exemptions: expected a list of exemptions")
    nodes: list[yaml.Node | None] = [None] * len(items)
    if isinstance(root, yaml.MappingNode):
        for k, v in root.value:
            if k.value == "exemptions" and isinstance(v, yaml.SequenceNode) and len(v.value) == len(items):
                nodes = list(v.value)
    return [_entry(path, i, item, nodes[i]) for i, item in enumerate(items)]


def load_exemptions(paths: Iterable[str | Path]) -> tuple[Exemption, ...]:
    """Every entry of the exemptions files under ``paths``, in order (expired ones too: see ``active``)."""
    out: list[Exemption] = []
    for path, named in _files(paths):
        out += _load_file(path, named)
    return tuple(out)


def match_exemption(
    exemptions: Sequence[Exemption], account_id: str, facts: AccountFacts | None, today: date
) -> Exemption | None:
    """The first active entry that applies to the account, or None."""
    return next((e for e in exemptions if e.active(today) and e.applies_to(account_id, facts)), None)
