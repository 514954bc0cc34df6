"""Screening policy: what the LiteLLM guardrail route answers for text the detectors flag.

A small YAML document of its own kind (the account-level policies of ``docs/disrupt.md`` act on
judgements of accounts, after the fact; this one acts on one request, in its path)::

    kind: screening
    id: block-cyber-misuse
    mode: block            # warn (default) | block | intervene
    min_score: 0.8         # optional: flag at this score (default: the detectors' threshold)
    input_types: [request] # optional: request, response (default: both)
    message: "Blocked by the provider's usage policy."

* ``warn``: always ``NONE`` (the request goes on); the verdict is recorded on the usage event.
  The default, and what the server uses without a policy file.
* ``block``: ``BLOCKED`` with ``message`` as the reason when any text is flagged.
* ``intervene``: ``GUARDRAIL_INTERVENED``, each flagged text replaced by ``message``.

``stormwatch serve --screening-policy FILE`` (or ``STORMWATCH_SCREENING_POLICY``) names the file.
Problems name the file, line and field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stormwatch.errors import ConfigError

__all__ = ["MODES", "ScreeningPolicy", "load_screening_policy", "screening_policy_for"]

MODES = ("warn", "block", "intervene")
INPUT_TYPES = ("request", "response")
DEFAULT_MESSAGE = "This request was blocked by the provider's usage policy."
KEYS = ("kind", "id", "mode", "min_score", "input_types", "message", "description")
ENV = "STORMWATCH_SCREENING_POLICY"


@dataclass(frozen=True, slots=True)
class ScreeningPolicy:
    id: str = "default-warn"
    mode: str = "warn"
    min_score: float | None = None
    input_types: tuple[str, ...] = INPUT_TYPES
    message: str = DEFAULT_MESSAGE

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "mode": self.mode, "min_score": self.min_score, "input_types": list(self.input_types)}


def _line(node: Any, key: str) -> int | None:
    if isinstance(node, yaml.MappingNode):
        for k, _v in node.value:
            if k.value == key:
                return int(k.start_mark.line) + 1
    return None


def load_screening_policy(path: str | Path) -> ScreeningPolicy:
    """Read and check a ``kind: screening`` file; :class:`ConfigError` naming file:line:field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the screening policy: {exc.strerror or exc}") from None
    try:
        node = yaml.compose(text)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None

    def bad(key: str, msg: str) -> ConfigError:
        line = _line(node, key)
        return ConfigError(f"{p}:{line if line is not None else 1}: {key}: {msg}")

    if not isinstance(doc, dict):
        raise ConfigError(f"{p}:1: expected a mapping (kind: screening, mode: ...)")
    for key in doc:
        if key not in KEYS:
            raise bad(str(key), f"unknown field; expected one of: {', '.join(KEYS)}")
    if doc.get("kind", "screening") != "screening":
        raise bad("kind", f"expected 'screening', got {doc.get('kind')!r}")
    mode = doc.get("mode", "warn")
    if mode not in MODES:
        raise bad("mode", f"expected one of {', '.join(MODES)}, got {mode!r}")
    min_score = doc.get("min_score")
    if min_score is not None and (
        isinstance(min_score, bool) or not isinstance(min_score, int | float) or not 0 <= min_score <= 1
    ):
        raise bad("min_score", f"expected a number from 0 to 1, got {min_score!r}")
    types = doc.get("input_types", list(INPUT_TYPES))
    if not isinstance(types, list) or not types or any(t not in INPUT_TYPES for t in types):
        raise bad("input_types", f"expected a list of {', '.join(INPUT_TYPES)}, got {types!r}")
    message = doc.get("message", DEFAULT_MESSAGE)
    if not isinstance(message, str) or not message.strip():
        raise bad("message", "expected a non-empty string")
    policy_id = doc.get("id", p.stem)
    if not isinstance(policy_id, str) or not policy_id:
        raise bad("id", "expected a non-empty string")
    return ScreeningPolicy(
        policy_id, mode, None if min_score is None else float(min_score), tuple(dict.fromkeys(types)), message
    )


def screening_policy_for(app_state: Any) -> ScreeningPolicy:
    """The app's policy: ``app.state.screening_policy``, else the file named by the environment, else warn."""
    policy = getattr(app_state, "screening_policy", None)
    if isinstance(policy, ScreeningPolicy):
        return policy
    path = os.environ.get(ENV)
    policy = load_screening_policy(path) if path else ScreeningPolicy()
    app_state.screening_policy = policy
    return policy
