"""STIX 2.1 indicator patterns -> a small matchable form.

Patterns are parsed with the OASIS grammar (``stix2-patterns`` through ``stix2``'s pattern visitor),
never with regular expressions. The parse tree is turned into disjunctive normal form: a list of
clauses, each a list of :class:`Atom` that must all hold. An atom is one comparison on an
observable *kind* that the platform sees:

=====================  ======================================================================
kind                   STIX object paths
=====================  ======================================================================
``ip``                 ``ipv4-addr:value``, ``ipv6-addr:value``, ``network-traffic:src_ref.value``
``domain``             ``domain-name:value``
``email``              ``email-addr:value``
``url``                ``url:value``
``user_agent``         ``network-traffic:extensions.'http-request-ext'.request_header.'User-Agent'``
=====================  ======================================================================

Operators: ``=``, ``IN``, ``ISSUBSET`` (IP in CIDR; ``=`` with a CIDR value means the same),
``LIKE`` and ``MATCHES``. Comparisons are evaluated per account: ``[a] AND [b]`` holds when the
account was seen with both. Anything else (negation, ``!=``, ``<``, ``FOLLOWEDBY``, qualifiers such
as ``WITHIN``/``REPEATS``/``START``, other object types) makes the indicator *unsupported*, with the
reason, so that nothing is dropped silently.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Atom", "CompiledPattern", "UnsupportedPattern", "compile_pattern", "like_to_regex"]

MAX_CLAUSES = 256

_PATHS: dict[tuple[str, tuple[str, ...]], str] = {
    ("ipv4-addr", ("value",)): "ip",
    ("ipv6-addr", ("value",)): "ip",
    ("network-traffic", ("src_ref", "value")): "ip",
    ("domain-name", ("value",)): "domain",
    ("email-addr", ("value",)): "email",
    ("url", ("value",)): "url",
    ("network-traffic", ("extensions", "http-request-ext", "request_header", "User-Agent")): "user_agent",
}
_OPS = {"=", "IN", "ISSUBSET", "LIKE", "MATCHES"}


class UnsupportedPattern(ValueError):
    """The pattern is valid STIX (or not) but cannot be matched here; ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class Atom:
    kind: str  # ip | domain | email | url | user_agent
    op: str  # eq | cidr | like | regex
    values: tuple[str, ...]

    def to_json(self) -> list[Any]:
        return [self.kind, self.op, list(self.values)]

    @staticmethod
    def from_json(obj: list[Any]) -> Atom:
        return Atom(str(obj[0]), str(obj[1]), tuple(str(v) for v in obj[2]))


@dataclass(frozen=True, slots=True)
class CompiledPattern:
    clauses: tuple[tuple[Atom, ...], ...]

    def to_json(self) -> list[list[list[Any]]]:
        return [[a.to_json() for a in clause] for clause in self.clauses]

    @staticmethod
    def from_json(obj: list[list[list[Any]]]) -> CompiledPattern:
        return CompiledPattern(tuple(tuple(Atom.from_json(a) for a in clause) for clause in obj))

    def kinds(self) -> set[str]:
        return {a.kind for clause in self.clauses for a in clause}


def like_to_regex(pattern: str) -> str:
    """SQL LIKE (``%`` any run, ``_`` one character) as an anchored regular expression."""
    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return "^" + "".join(out) + "$"


def _unescape(value: str) -> str:
    """STIX string literals escape ``'`` and ``\\`` with a backslash; the parser keeps them."""
    return re.sub(r"\\(['\\])", r"\1", value)


def _normalise(kind: str, value: str) -> str:
    if kind in ("domain", "email"):
        return value.strip().lower().rstrip(".")
    return value


def _ip_value(value: str) -> tuple[str, str]:
    """(op, normalised value) for an IP comparison value: a host is ``eq``, a network ``cidr``."""
    try:
        if "/" in value:
            net = ipaddress.ip_network(value, strict=False)
            if net.num_addresses == 1:
                return "eq", str(net.network_address)
            return "cidr", str(net)
        return "eq", str(ipaddress.ip_address(value))
    except ValueError as exc:
        raise UnsupportedPattern(f"not an IP address or network: {value!r}") from exc


def _comparison(node: Any) -> Atom:
    if getattr(node, "negated", False):
        raise UnsupportedPattern("negated comparison (NOT) is not supported")
    op = str(node.operator)
    if op not in _OPS:
        raise UnsupportedPattern(f"operator {op} is not supported")
    lhs = node.lhs
    path = tuple(str(getattr(c, "property_name", "")) for c in lhs.property_path)
    kind = _PATHS.get((str(lhs.object_type_name), path))
    if kind is None:
        raise UnsupportedPattern(f"object path {lhs.object_type_name}:{'.'.join(path)} is not matched")
    rhs = node.rhs
    raw = [_unescape(str(v.value)) for v in rhs.value] if op == "IN" else [_unescape(str(rhs.value))]
    if op == "LIKE":
        return Atom(kind, "regex", (like_to_regex(_normalise(kind, raw[0])),))
    if op == "MATCHES":
        try:
            re.compile(raw[0])
        except re.error as exc:
            raise UnsupportedPattern(f"bad regular expression {raw[0]!r}: {exc}") from exc
        return Atom(kind, "regex", (raw[0],))
    if kind == "ip":
        if op == "ISSUBSET":
            net = ipaddress.ip_network(raw[0], strict=False) if "/" in raw[0] else None
            if net is None:
                _, host = _ip_value(raw[0])
                return Atom(kind, "eq", (host,))
            return Atom(kind, "cidr", (str(net),))
        pairs = [_ip_value(v) for v in raw]
        ops = {p[0] for p in pairs}
        if len(ops) == 1:
            return Atom(kind, ops.pop(), tuple(p[1] for p in pairs))
        # a mixed IN list: hosts become /32 or /128 networks
        return Atom(kind, "cidr", tuple(str(ipaddress.ip_network(p[1], strict=False)) for p in pairs))
    if op == "ISSUBSET":
        raise UnsupportedPattern(f"ISSUBSET only applies to IP addresses, not {kind}")
    return Atom(kind, "eq", tuple(_normalise(kind, v) for v in raw))


def _product(left: list[tuple[Atom, ...]], right: list[tuple[Atom, ...]]) -> list[tuple[Atom, ...]]:
    out = [a + b for a in left for b in right]
    if len(out) > MAX_CLAUSES:
        raise UnsupportedPattern(f"pattern expands to more than {MAX_CLAUSES} alternatives")
    return out


def _dnf(node: Any) -> list[tuple[Atom, ...]]:
    name = type(node).__name__
    if name == "ObservationExpression":
        return _dnf(node.operand)
    if name == "ParentheticalExpression":
        return _dnf(node.expression)
    if name in ("OrBooleanExpression", "OrObservationExpression"):
        out: list[tuple[Atom, ...]] = []
        for op in node.operands:
            out.extend(_dnf(op))
        if len(out) > MAX_CLAUSES:
            raise UnsupportedPattern(f"pattern expands to more than {MAX_CLAUSES} alternatives")
        return out
    if name in ("AndBooleanExpression", "AndObservationExpression"):
        acc: list[tuple[Atom, ...]] = [()]
        for op in node.operands:
            acc = _product(acc, _dnf(op))
        return acc
    if name == "FollowedByObservationExpression":
        raise UnsupportedPattern("FOLLOWEDBY (temporal order) is not supported")
    if name == "QualifiedObservationExpression":
        q = type(node.qualifier).__name__.replace("Qualifier", "").upper()
        raise UnsupportedPattern(f"observation qualifier {q} is not supported")
    if name.endswith("ComparisonExpression"):
        return [(_comparison(node),)]
    raise UnsupportedPattern(f"pattern element {name} is not supported")


def compile_pattern(pattern: str, pattern_type: str = "stix") -> CompiledPattern:
    """Parse a STIX 2.1 pattern; raise :class:`UnsupportedPattern` with the reason otherwise."""
    if pattern_type != "stix":
        raise UnsupportedPattern(f"pattern_type {pattern_type!r} is not supported (only 'stix')")
    from stix2.pattern_visitor import create_pattern_object
    from stix2patterns.exceptions import ParseException

    try:
        tree = create_pattern_object(pattern, version="2.1")
    except ParseException as exc:
        raise UnsupportedPattern(f"not a valid STIX 2.1 pattern: {exc}") from exc
    except Exception as exc:  # the visitor raises plain errors for some invalid constants
        raise UnsupportedPattern(f"not a valid STIX 2.1 pattern: {exc}") from exc
    return CompiledPattern(tuple(_dnf(tree)))
