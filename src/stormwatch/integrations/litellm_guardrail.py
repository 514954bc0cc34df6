"""A LiteLLM ``CustomGuardrail`` that screens through a stormwatch server.

Reference it from a LiteLLM proxy ``config.yaml`` (stormwatch installed in the proxy's Python)::

    guardrails:
      - guardrail_name: stormwatch
        litellm_params:
          guardrail: stormwatch.integrations.litellm_guardrail.StormwatchGuardrail
          mode: [pre_call, post_call]
          default_on: true
          api_base: http://127.0.0.1:8000        # or STORMWATCH_URL
          api_key: os.environ/STORMWATCH_TOKEN    # a token with the 'screen' scope

It is LiteLLM's own ``GenericGuardrailAPI`` (so the proxy treats it exactly like the built-in
``generic_guardrail_api`` guardrail, whose wire format the server speaks) with stormwatch's
defaults: the server from ``STORMWATCH_URL``, the token from ``STORMWATCH_TOKEN``, the client's
``x-forwarded-for`` forwarded (LiteLLM masks every other header as ``"[present]"``) so the usage
event records the end user's address, and ``unreachable_fallback: fail_open`` (a stormwatch outage
must not take the gateway down; set ``fail_closed`` to block instead).

LiteLLM is imported when :data:`StormwatchGuardrail` is first looked up, not when this module is
imported, so nothing in stormwatch needs LiteLLM installed.
"""

from __future__ import annotations

import os
from typing import Any, Literal

__all__ = ["DEFAULT_URL", "guardrail_class"]  # and StormwatchGuardrail, built on first lookup

DEFAULT_URL = "http://127.0.0.1:8000"
_cached: type | None = None


def guardrail_class() -> type:
    """Build (once) the ``GenericGuardrailAPI`` subclass; imports LiteLLM."""
    global _cached
    if _cached is not None:
        return _cached
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of the cost map at import
    from litellm.proxy.guardrails.guardrail_hooks.generic_guardrail_api.generic_guardrail_api import (
        GenericGuardrailAPI,
    )

    class StormwatchGuardrail(GenericGuardrailAPI):
        """LiteLLM's Generic Guardrail API client, pointed at stormwatch (see the module docstring)."""

        # The proxy runs a guardrail's apply_guardrail (its unified pre/post-call hooks) only when the name
        # is in the class's own __dict__ (LiteLLM 1.110.2 checks type(callback).__dict__, not the MRO); an
        # inherited one leaves the no-op CustomGuardrail hooks, and the proxy never calls stormwatch.
        apply_guardrail = GenericGuardrailAPI.apply_guardrail

        def __init__(
            self,
            api_base: str | None = None,
            api_key: str | None = None,
            extra_headers: list[str] | None = None,
            unreachable_fallback: Literal["fail_closed", "fail_open"] = "fail_open",
            **kwargs: Any,
        ) -> None:
            token = api_key or os.environ.get("STORMWATCH_TOKEN")
            if not token:
                raise ValueError("StormwatchGuardrail needs api_key (or STORMWATCH_TOKEN): a token with scope 'screen'")
            headers = list(extra_headers or [])
            if "x-forwarded-for" not in {h.lower() for h in headers}:
                headers.append("x-forwarded-for")
            super().__init__(
                api_base=api_base or os.environ.get("STORMWATCH_URL") or DEFAULT_URL,
                api_key=token,
                extra_headers=headers,
                unreachable_fallback=unreachable_fallback,
                **kwargs,
            )

    StormwatchGuardrail.__module__ = __name__
    _cached = StormwatchGuardrail
    return StormwatchGuardrail


def __getattr__(name: str) -> Any:
    if name == "StormwatchGuardrail":
        return guardrail_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
