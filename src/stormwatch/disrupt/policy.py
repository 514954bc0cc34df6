"""Policy files: YAML documents loaded with their node marks, so every problem names file:line:field.

A policy (``kind: policy``, the default) maps conditions on an account's judgement to actions; an
exemptions file (``kind: exemptions``) lists accounts, orgs or email domains that no policy acts on
until the exemption expires. The language is documented in ``docs/disrupt.md``. Validation never
raises: :func:`check_paths` returns :class:`~stormwatch.disrupt.models.Issue` lists; only
:func:`load_policy_set` raises, when an error-level issue exists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

from stormwatch.disrupt.models import ACTION_KINDS, MODES, Issue
from stormwatch.errors import InputError

#: Label -> lowest numeric confidence (the analyze stage's thresholds).
CONFIDENCE_LABELS = {"low": 0.25, "medium": 0.5, "high": 0.75}
CONDITION_KEYS = (
    "actor_in",
    "actor_any",
    "confidence_at_least",
    "confidence_below",
    "risk_at_least",
    "ttps_any",
    "in_cluster_with_actor",
    "account_age_days_at_most",
    "flagged",
    "end_users_at_least",
)
UNLESS_KEYS = ("accounts", "orgs", "email_domains")
POLICY_KEYS = ("kind", "id", "version", "description", "mode", "priority", "apply_to", "when", "unless", "then")
#: Parameters each action accepts: name -> (type, required).
ACTION_PARAMS: dict[str, dict[str, tuple[type, bool]]] = {
    "open_case": {"reason": (str, False)},
    "warn": {"message": (str, False)},
    "require_verification": {"method": (str, False)},
    "rate_limit": {"rpm": (int, True)},
    "block_end_user": {"min_flagged": (int, False)},
    "suspend": {"days": (int, False)},
    "terminate": {},
}
EXEMPTION_KEYS = ("account_id", "org_id", "email_domain", "reason", "granted_by", "expires", "actions")


@dataclass(frozen=True)
class ActionSpec:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Exemption:
    reason: str
    granted_by: str
    expires: date
    account_id: str | None = None
    org_id: str | None = None
    email_domain: str | None = None
    actions: tuple[str, ...] = ()  # empty: every action
    file: str = ""
    line: int | None = None

    def active(self, now: datetime) -> bool:
        return now.astimezone(UTC).date() <= self.expires

    def describe(self) -> str:
        who = self.account_id or self.org_id or self.email_domain
        return f"exemption for {who} granted by {self.granted_by} until {self.expires.isoformat()}: {self.reason}"


@dataclass(frozen=True)
class Policy:
    id: str
    version: str
    rule_version: str  # sha256 of the file's bytes: changes with any edit
    file: str
    description: str = ""
    mode: str = "dry-run"
    priority: int = 0
    apply_to: str = "account"
    when: dict[str, Any] = field(default_factory=dict)
    unless: dict[str, tuple[str, ...]] = field(default_factory=dict)
    then: tuple[ActionSpec, ...] = ()

    @property
    def ref(self) -> str:
        return f"policy:{self.id}@{self.version}"


@dataclass(frozen=True)
class PolicySet:
    policies: tuple[Policy, ...]
    exemptions: tuple[Exemption, ...]
    issues: tuple[Issue, ...] = ()

    def active(self) -> tuple[Policy, ...]:
        return tuple(p for p in self.policies if p.mode != "shadow")

    def shadow(self) -> tuple[Policy, ...]:
        return tuple(p for p in self.policies if p.mode == "shadow")


def policy_files(paths: Iterable[str | Path]) -> list[Path]:
    """The ``.yaml``/``.yml`` files named, or found (sorted, recursively) in the folders named."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml") and q.is_file()))
        else:
            out.append(p)
    return out


class _Doc:
    """Walks one YAML node tree, collecting issues with the node's line."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[Issue] = []

    def err(self, node: yaml.Node | None, fld: str, msg: str, severity: str = "error") -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.issues.append(Issue(severity, self.file, line, fld, msg))

    def mapping(self, node: yaml.Node, fld: str, allowed: Sequence[str]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            self.err(node, fld, "expected a mapping (key: value lines)")
            return {}
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for knode, vnode in node.value:
            key = str(knode.value)
            path = f"{fld}.{key}" if fld else key
            if key not in allowed:
                self.err(knode, path, f"unknown field; expected one of: {', '.join(allowed)}")
            elif key in out:
                self.err(knode, path, "given twice")
            else:
                out[key] = (knode, vnode)
        return out

    def scalar(self, node: yaml.Node, fld: str, kinds: tuple[type, ...]) -> Any:
        names = " or ".join(k.__name__ for k in kinds)
        if not isinstance(node, yaml.ScalarNode):
            self.err(node, fld, f"expected a {names}")
            return None
        value = yaml.safe_load(yaml.serialize(node))
        if isinstance(value, bool) and bool not in kinds:
            self.err(node, fld, f"expected a {names}, got {value!r}")
            return None
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if str in kinds and isinstance(value, int | float) and not isinstance(value, kinds):
            value = str(node.value)  # `version: 1` is the string "1"; a number where a number is allowed stays one
        if not isinstance(value, kinds):
            self.err(node, fld, f"expected a {names}, got {value!r}")
            return None
        return value

    def str_list(self, node: yaml.Node, fld: str) -> tuple[str, ...] | None:
        if not isinstance(node, yaml.SequenceNode):
            self.err(node, fld, "expected a list, e.g. [a, b]")
            return None
        items = [self.scalar(n, f"{fld}[{i}]", (str,)) for i, n in enumerate(node.value)]
        if not items:
            self.err(node, fld, "the list is empty")
        return tuple(i for i in items if i is not None)


def _rule_version(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def _confidence(doc: _Doc, node: yaml.Node, fld: str) -> float | str | None:
    value = doc.scalar(node, fld, (float, str))
    if isinstance(value, str) and value not in CONFIDENCE_LABELS:
        doc.err(node, fld, f"expected a number in [0, 1] or one of {', '.join(CONFIDENCE_LABELS)}")
        return None
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        doc.err(node, fld, "must be in [0, 1]")
        return None
    return value if isinstance(value, float | str) else None


def _conditions(doc: _Doc, node: yaml.Node) -> dict[str, Any]:
    when: dict[str, Any] = {}
    fields = doc.mapping(node, "when", CONDITION_KEYS)
    for key, (_, v) in fields.items():
        fld = f"when.{key}"
        value: Any
        if key in ("actor_in", "ttps_any"):
            value = doc.str_list(v, fld)
        elif key in ("actor_any", "flagged"):
            value = doc.scalar(v, fld, (bool,))
        elif key in ("confidence_at_least", "confidence_below"):
            value = _confidence(doc, v, fld)
        elif key == "risk_at_least":
            value = doc.scalar(v, fld, (float,))
            if value is not None and not 0.0 <= value <= 1.0:
                doc.err(v, fld, "must be in [0, 1]")
                value = None
        elif key == "in_cluster_with_actor":
            value = doc.str_list(v, fld) if isinstance(v, yaml.SequenceNode) else doc.scalar(v, fld, (bool,))
        else:  # account_age_days_at_most, end_users_at_least
            value = doc.scalar(v, fld, (int,))
            if value is not None and value < 0:
                doc.err(v, fld, "must be 0 or more")
                value = None
        if value is not None:
            when[key] = value
    if not fields and isinstance(node, yaml.MappingNode):
        doc.err(node, "when", "no conditions: the policy would match every account; add at least one")
    return when


def _actions(doc: _Doc, node: yaml.Node) -> tuple[ActionSpec, ...]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        doc.err(node, "then", "expected a non-empty list of actions, e.g. [{action: suspend, days: 30}]")
        return ()
    out: list[ActionSpec] = []
    for i, item in enumerate(node.value):
        fld = f"then[{i}]"
        if isinstance(item, yaml.ScalarNode):  # `- terminate` shorthand
            item = yaml.MappingNode(
                "tag:yaml.org,2002:map",
                [(yaml.ScalarNode("tag:yaml.org,2002:str", "action", item.start_mark, item.end_mark), item)],
                item.start_mark,
                item.end_mark,
            )
        if not isinstance(item, yaml.MappingNode):
            doc.err(item, fld, "expected an action mapping, e.g. {action: rate_limit, rpm: 10}")
            continue
        keys = {str(k.value): (k, v) for k, v in item.value}
        if "action" not in keys:
            doc.err(item, f"{fld}.action", f"missing; one of: {', '.join(ACTION_KINDS)}")
            continue
        kind = doc.scalar(keys["action"][1], f"{fld}.action", (str,))
        if kind not in ACTION_PARAMS:
            doc.err(keys["action"][1], f"{fld}.action", f"unknown action {kind!r}; one of: {', '.join(ACTION_KINDS)}")
            continue
        allowed = ACTION_PARAMS[kind]
        fields = doc.mapping(item, fld, ("action", *allowed))
        params: dict[str, Any] = {}
        for pname, (ptype, required) in allowed.items():
            if pname not in fields:
                if required:
                    doc.err(item, f"{fld}.{pname}", f"required by {kind}")
                continue
            pnode = fields[pname][1]
            value = doc.scalar(pnode, f"{fld}.{pname}", (ptype,))
            if isinstance(value, int) and value <= 0:
                doc.err(pnode, f"{fld}.{pname}", "must be a positive number")
            elif value is not None:
                params[pname] = value
        out.append(ActionSpec(kind, params))
    return tuple(out)


def _policy(doc: _Doc, root: yaml.Node, rule_version: str) -> Policy | None:
    fields = doc.mapping(root, "", POLICY_KEYS)
    for req in ("id", "version", "when", "then"):
        if req not in fields:
            doc.err(root, req, "required field is missing")
    values: dict[str, Any] = {}
    for key, kinds in (("id", (str,)), ("version", (str,)), ("description", (str,)), ("mode", (str,)),
                       ("priority", (int,)), ("apply_to", (str,))):  # fmt: skip
        if key in fields:
            values[key] = doc.scalar(fields[key][1], key, kinds)
    if values.get("mode") is not None and values["mode"] not in MODES:
        doc.err(fields["mode"][1], "mode", f"unknown mode {values['mode']!r}; one of: {', '.join(MODES)}")
    if values.get("apply_to") is not None and values["apply_to"] not in ("account", "cluster"):
        doc.err(fields["apply_to"][1], "apply_to", "expected account or cluster")
    when = _conditions(doc, fields["when"][1]) if "when" in fields else {}
    then = _actions(doc, fields["then"][1]) if "then" in fields else ()
    unless: dict[str, tuple[str, ...]] = {}
    if "unless" in fields:
        for key, (_, v) in doc.mapping(fields["unless"][1], "unless", UNLESS_KEYS).items():
            items = doc.str_list(v, f"unless.{key}")
            if items:
                unless[key] = items
    if any(i.severity == "error" for i in doc.issues):
        return None
    return Policy(
        id=values["id"],
        version=values["version"],
        rule_version=rule_version,
        file=doc.file,
        description=values.get("description") or "",
        mode=values.get("mode") or "dry-run",
        priority=values.get("priority") or 0,
        apply_to=values.get("apply_to") or "account",
        when=when,
        unless=unless,
        then=then,
    )


def _exemptions(doc: _Doc, root: yaml.Node, now: datetime) -> list[Exemption]:
    fields = doc.mapping(root, "", ("kind", "description", "exemptions"))
    if "exemptions" not in fields or not isinstance(fields["exemptions"][1], yaml.SequenceNode):
        doc.err(root, "exemptions", "expected a list of exemptions")
        return []
    out: list[Exemption] = []
    for i, item in enumerate(fields["exemptions"][1].value):
        fld = f"exemptions[{i}]"
        f = doc.mapping(item, fld, EXEMPTION_KEYS)
        before = len(doc.issues)
        vals: dict[str, Any] = {}
        for key in ("account_id", "org_id", "email_domain", "reason", "granted_by"):
            if key in f:
                vals[key] = doc.scalar(f[key][1], f"{fld}.{key}", (str,))
        if sum(1 for k in ("account_id", "org_id", "email_domain") if k in f) != 1:
            doc.err(item, fld, "name exactly one of account_id, org_id, email_domain")
        for req in ("reason", "granted_by", "expires"):
            if req not in f:
                doc.err(item, f"{fld}.{req}", "required: every exemption says why, who granted it and until when")
        expires: date | None = None
        if "expires" in f:
            raw = doc.scalar(f["expires"][1], f"{fld}.expires", (date, str))
            try:
                expires = raw if isinstance(raw, date) else date.fromisoformat(str(raw))
            except ValueError:
                doc.err(f["expires"][1], f"{fld}.expires", "expected a date, YYYY-MM-DD")
        actions: tuple[str, ...] = ()
        if "actions" in f:
            actions = doc.str_list(f["actions"][1], f"{fld}.actions") or ()
            for a in actions:
                if a not in ACTION_KINDS:
                    doc.err(f["actions"][1], f"{fld}.actions", f"unknown action {a!r}")
        if len(doc.issues) > before or expires is None:
            continue
        if expires < now.astimezone(UTC).date():
            doc.err(item, f"{fld}.expires", f"expired on {expires.isoformat()}: no longer applied", "warning")
        out.append(Exemption(expires=expires, actions=actions, file=doc.file, line=item.start_mark.line + 1, **vals))
    return out


def load_file(path: Path, now: datetime | None = None) -> tuple[list[Policy], list[Exemption], list[Issue]]:
    """Parse one file; never raises (problems come back as issues)."""
    now = now or datetime.now(UTC)
    doc = _Doc(str(path))
    try:
        data = path.read_bytes()
        root = yaml.compose(data.decode("utf-8"), Loader=yaml.SafeLoader)
    except OSError as exc:
        doc.err(None, "", f"cannot read: {exc.strerror}")
        return [], [], doc.issues
    except UnicodeDecodeError:
        doc.err(None, "", "not UTF-8 text")
        return [], [], doc.issues
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        doc.issues.append(Issue("error", str(path), line, "", f"YAML syntax: {exc.problem}"))
        return [], [], doc.issues
    if root is None:
        doc.err(None, "", "the file is empty")
        return [], [], doc.issues
    kind = "policy"
    if isinstance(root, yaml.MappingNode):
        for k, v in root.value:
            if k.value == "kind":
                kind = str(v.value)
                if kind not in ("policy", "exemptions"):
                    doc.err(v, "kind", "expected policy or exemptions")
                    return [], [], doc.issues
    if kind == "exemptions":
        return [], _exemptions(doc, root, now), doc.issues
    policy = _policy(doc, root, _rule_version(data))
    return ([policy] if policy else []), [], doc.issues


def check_paths(paths: Iterable[str | Path], now: datetime | None = None) -> tuple[PolicySet, list[Issue]]:
    """Load every file under ``paths``; return what loaded and every issue (also across files)."""
    policies: list[Policy] = []
    exemptions: list[Exemption] = []
    issues: list[Issue] = []
    files = policy_files(paths)
    if not files:
        issues.append(Issue("error", ", ".join(map(str, paths)) or ".", None, "", "no policy files found"))
    for f in files:
        loaded, exempt, found = load_file(f, now)
        policies += loaded
        exemptions += exempt
        issues += found
    seen: dict[str, Policy] = {}
    for pol in policies:
        if pol.id in seen:
            issues.append(Issue("error", pol.file, None, "id", f"id {pol.id!r} is also used by {seen[pol.id].file}"))
        seen.setdefault(pol.id, pol)
    policies.sort(key=lambda p: (-p.priority, p.id))
    return PolicySet(tuple(policies), tuple(exemptions), tuple(issues)), issues


def load_policy_set(paths: Iterable[str | Path], now: datetime | None = None) -> PolicySet:
    """Like :func:`check_paths` but raise :class:`InputError` naming the first errors."""
    paths = list(paths)
    pset, issues = check_paths(paths, now)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        shown = "\n".join(str(e) for e in errors[:10])
        raise InputError(
            f"{len(errors)} error(s) in policy files:\n{shown}",
            hint="run `stormwatch policy check` for the full list",
        )
    return pset
