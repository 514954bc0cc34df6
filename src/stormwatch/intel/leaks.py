"""The last check of an export: no secret the policy did not let out may appear in the bundle.

Redaction is by construction (:mod:`stormwatch.intel.stix_objects` copies only whitelisted,
structured values); :func:`check_leaks` then walks every data-carrying string of the bundle for
the account ids, end-user ids, e-mail addresses, prompt/response text and analyst notes the policy
did not allow, and refuses the export if one is found (defence in depth).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from stormwatch.errors import StormwatchError
from stormwatch.intel.findings import Findings
from stormwatch.intel.sharing_policy import Recipient, SharingPolicy
from stormwatch.intel.stix_objects import pattern_literal


class RedactionError(StormwatchError):
    """The export would have carried something the sharing policy does not allow."""


_STRUCTURAL_KEYS = frozenset(
    {
        "type", "spec_version", "id", "created", "modified", "published", "valid_from", "valid_until",
        "first_seen", "last_seen", "first_observed", "last_observed", "kill_chain_phases", "external_references",
        "extension_type", "object_marking_refs", "created_by_ref", "sighting_of_ref", "where_sighted_refs",
        "observed_data_refs", "object_refs", "source_ref", "target_ref", "relationship_type", "indicator_types",
        "pattern_type", "pattern_version", "report_types", "identity_class", "sectors", "context",
        "threat_actor_types", "resource_level", "primary_motivation", "llm_ttps", "trust_group", "count",
        "number_observed", "confidence", "platform_accounts", "events",
    }
)  # fmt: skip
_STATIC_TYPES = frozenset({"marking-definition", "extension-definition", "attack-pattern", "identity"})


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in _STRUCTURAL_KEYS:
                yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def content_strings(bundle: dict[str, Any]) -> list[str]:
    """The strings of a bundle that can carry data (not ids, timestamps, vocabularies, taxonomy text)."""
    out: list[str] = []
    for o in bundle.get("objects", []):
        if o.get("type") not in _STATIC_TYPES:
            out.extend(_strings(o))
    return out


def _occurrences(secret: str, exact: Counter[str], haystack: str) -> int:
    """How often ``secret`` appears where it would be a leak: anywhere when 12 characters or more,
    else as a whole value or quoted inside a pattern."""
    if len(secret) >= 12:
        return haystack.count(secret)
    return exact[secret] + haystack.count(f"'{pattern_literal(secret)}'")


def check_leaks(
    bundle: dict[str, Any],
    findings: Findings,
    policy: SharingPolicy,
    recipient: Recipient | None,
    allowed_values: set[str],
    vocabulary: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Refuse a bundle that carries a secret the policy did not let out (defence in depth).

    Every data-carrying string is searched: a secret of 12 characters or more anywhere in one, a
    shorter one as a whole value or quoted inside a pattern. A secret that is also part of what
    the bundle says anyway (an analyst note reading "Charcoal Typ" on a cluster attributed to
    Charcoal Typhoon) is told apart by ``vocabulary``: the same export of the findings with every
    secret replaced (:meth:`Findings.without_secrets`), built only when something was found. The
    export is refused when a secret occurs more often in the real bundle than there.
    """
    secrets = findings.secrets()
    forbidden: dict[str, str] = {}
    for field_name, values in secrets.items():
        for v in values:
            if v and v not in allowed_values:
                forbidden[v] = field_name
    if not forbidden:
        return
    strings = content_strings(bundle)
    exact = Counter(strings)
    haystack = "\x00".join(strings)
    hits = {s: n for s in forbidden if (n := _occurrences(s, exact, haystack))}
    if hits and vocabulary is not None:
        base = content_strings(vocabulary())
        base_exact, base_haystack = Counter(base), "\x00".join(base)
        hits = {s: n for s, n in hits.items() if n > _occurrences(s, base_exact, base_haystack)}
    if hits:  # the message names the field, never the value (sorted: the same field run to run)
        field_name = min(forbidden[secret] for secret in hits)
        raise RedactionError(
            f"export refused: a {field_name.replace('_', ' ')} value would have left "
            f"({'recipient ' + recipient.name if recipient else 'no named recipient'})",
            hint="this is a bug in the exporter or a finding that repeats a secret in a shared "
            "field; nothing was written",
        )
