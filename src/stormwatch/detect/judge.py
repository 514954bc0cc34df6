"""The external-judge detector: asks an OpenAI-compatible chat endpoint for a second opinion.

Meant for a guard model served locally (Llama Guard 3 under vLLM or Ollama, or any instruct model
with the ``generic-json`` prompt), on a *sample* of traffic or on items another detector flagged.
It uses the official ``openai`` SDK (``pip install openai``; part of the ``judge`` extra) against
``base_url``; nothing is sent anywhere else.

Protocol (how it fits the Detector contract):

* ``sample_rate`` in ``[0, 1]`` picks the items sent to the judge. The choice is a hash of the item's
  text (and ``seed``), so it is deterministic and independent of the batch: the same text is always
  sampled or never. Items not sampled get the score ``prior`` (default 0.0, "no evidence"), all-zero
  categories, and ``explain`` says ``not sampled``. :meth:`JudgeDetector.verdicts` returns the full
  :class:`Verdict` (``sampled``, ``label``, raw codes, error) for callers that must tell the cases apart.
* Scores: Llama Guard's ``unsafe`` -> 1.0 and ``safe`` -> 0.0; with ``logprobs=True`` (vLLM supports
  it) the score is the probability of ``unsafe`` as the first token, which can be thresholded.
  ``generic-json`` replies carry their own ``score``.
* Categories: Llama Guard S-codes map onto LLMT ids where the meaning overlaps (``S14`` Code
  Interpreter Abuse -> LLMT-08 + LLMT-10, ``S7`` Privacy -> LLMT-01, ``S13`` Elections -> LLMT-04);
  other codes (e.g. ``S2`` Non-Violent Crimes, where Llama Guard files hacking) are reported in
  ``explain`` but given no LLMT id.
* Errors: at most ``concurrency`` requests are in flight; a request that fails with a connection
  error, a timeout, 408/409/429 or a 5xx is retried ``max_retries`` times with exponential backoff
  (``backoff`` * 2**attempt seconds, capped at 8 s). When a sampled item still fails,
  ``on_error="raise"`` (default) raises :class:`JudgeUnavailableError` (endpoint unreachable /
  failing) or :class:`JudgeResponseError` (4xx or an unparseable reply), both
  :class:`~stormwatch.errors.StormwatchError` with a hint; ``on_error="prior"`` scores the item
  with ``prior`` and ``explain`` names the error instead.
* The API key is read from the environment variable named by ``api_key_env`` at call time; it is
  never stored on the detector, logged, or put in an error message. Local servers usually need
  none (a placeholder is sent).
* Texts longer than ``max_chars`` are cut to their first ``max_chars`` characters before sending;
  ``explain`` reports it (``truncated``). Guard models have a finite context; the cut is explicit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from stormwatch.detect.base import BaseDetector, DetectorTags
from stormwatch.detect.judge_protocol import (
    _RETRY_STATUS,
    BASE_URL_ENV,
    GENERIC_JSON_SYSTEM,
    LLAMA_GUARD_CATEGORIES,
    LLAMA_GUARD_TO_LLMT,
    PLACEHOLDER_KEY,
    PROMPT_FORMATS,
    JudgeError,
    JudgeResponseError,
    JudgeUnavailableError,
    Verdict,
    _first_token_unsafe_prob,
    _status_hint,
    parse_generic_json,
    parse_llama_guard,
)
from stormwatch.detect.text import item_text, item_turns
from stormwatch.errors import ConfigError
from stormwatch.vocab import LLMT_IDS

__all__ = [
    "BASE_URL_ENV",
    "GENERIC_JSON_SYSTEM",
    "LLAMA_GUARD_CATEGORIES",
    "LLAMA_GUARD_TO_LLMT",
    "PLACEHOLDER_KEY",
    "PROMPT_FORMATS",
    "JudgeDetector",
    "JudgeError",
    "JudgeResponseError",
    "JudgeUnavailableError",
    "Verdict",
    "parse_generic_json",
    "parse_llama_guard",
]

log = logging.getLogger(__name__)


# -- detector -------------------------------------------------------------------------------------
class JudgeDetector(BaseDetector):
    """Second opinions from an OpenAI-compatible guard endpoint (see the module doc)."""

    name: ClassVar[str] = "judge"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str = "llama-guard3",
        api_key_env: str = "STORMWATCH_JUDGE_API_KEY",
        timeout: float = 30.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        concurrency: int = 4,
        sample_rate: float = 1.0,
        seed: int = 0,
        prior: float = 0.0,
        prompt_format: str = "llama-guard-3",
        logprobs: bool = False,
        on_error: str = "raise",
        max_chars: int = 32000,
        cache_size: int = 4096,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.sample_rate = sample_rate
        self.seed = seed
        self.prior = prior
        self.prompt_format = prompt_format
        self.logprobs = logprobs
        self.on_error = on_error
        self.max_chars = max_chars
        self.cache_size = cache_size

    # -- configuration ----------------------------------------------------------------------------
    def _validate(self) -> None:
        if self.prompt_format not in PROMPT_FORMATS:
            raise ConfigError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, not {self.prompt_format!r}")
        if not 0.0 <= float(self.sample_rate) <= 1.0:
            raise ConfigError(f"sample_rate must be in [0, 1], not {self.sample_rate!r}")
        if not 0.0 <= float(self.prior) <= 1.0:
            raise ConfigError(f"prior must be in [0, 1], not {self.prior!r}")
        if self.on_error not in ("raise", "prior"):
            raise ConfigError(f"on_error must be 'raise' or 'prior', not {self.on_error!r}")
        if int(self.concurrency) < 1 or int(self.max_retries) < 0 or float(self.timeout) <= 0:
            raise ConfigError("concurrency must be >= 1, max_retries >= 0 and timeout > 0")
        if int(self.max_chars) < 1:
            raise ConfigError("max_chars must be >= 1")

    def _base_url(self) -> str:
        url = self.base_url or os.environ.get(BASE_URL_ENV)
        if not url:
            raise ConfigError(
                "the judge detector needs an endpoint",
                hint=f"pass base_url=... or set {BASE_URL_ENV}, e.g. http://127.0.0.1:8000/v1 (vLLM) "
                "or http://127.0.0.1:11434/v1 (Ollama)",
            )
        return url

    def _client(self) -> Any:
        key = (self._base_url(), float(self.timeout), str(self.api_key_env))
        with _CLIENT_LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                try:
                    import openai
                except ImportError as exc:  # pragma: no cover - openai is in the dev/judge extras
                    raise ConfigError("the judge detector needs the openai SDK", hint="pip install openai") from exc
                # The key is fetched per request (a callable), so it never sits on the detector.
                env = self.api_key_env

                def api_key() -> str:
                    return os.environ.get(env) or PLACEHOLDER_KEY

                client = openai.OpenAI(base_url=key[0], api_key=api_key, timeout=key[1], max_retries=0)
                _CLIENTS[key] = client
            return client

    # -- sampling ---------------------------------------------------------------------------------
    def is_sampled(self, item: Any) -> bool:
        """Whether ``item`` is sent to the judge (a deterministic function of its text and ``seed``)."""
        rate = float(self.sample_rate)
        if rate >= 1.0:
            return True
        if rate <= 0.0:
            return False
        digest = hashlib.sha256(f"{self.seed}\x00{item_text(item)}".encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64 < rate

    # -- request building -------------------------------------------------------------------------
    def _messages(self, item: Any) -> tuple[list[dict[str, str]], bool]:
        limit = int(self.max_chars)
        truncated = False
        if self.prompt_format == "generic-json":
            text = item_text(item)
            if len(text) > limit:
                text, truncated = text[:limit], True
            msgs = [
                {"role": "system", "content": GENERIC_JSON_SYSTEM},
                {"role": "user", "content": f"<request>\n{text}\n</request>"},
            ]
            return msgs, truncated
        # Llama Guard's chat template wants user/assistant turns alternating, starting with a user
        # turn; the server's template builds the guard prompt (categories, instructions) from them.
        turns: list[dict[str, str]] = []
        for t in item_turns(item):
            role = "assistant" if t["role"] == "assistant" else "user" if t["role"] == "user" else ""
            if not role:
                continue
            content = str(t["content"])
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"] += "\n\n" + content
            else:
                turns.append({"role": role, "content": content})
        if not turns or turns[0]["role"] != "user":
            turns.insert(0, {"role": "user", "content": ""})
        total = sum(len(t["content"]) for t in turns)
        if total > limit:
            truncated = True
            keep = limit
            for t in turns:  # keep the first ``limit`` characters of the conversation
                t["content"] = t["content"][: max(keep, 0)]
                keep -= len(t["content"])
        return turns, truncated

    def _request(self, messages: list[dict[str, str]]) -> Any:
        import openai

        client = self._client()
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0.0, "max_tokens": 64}
        if self.prompt_format == "generic-json":
            kwargs["max_tokens"] = 256
        if self.logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = 5
        last: Exception | None = None
        for attempt in range(int(self.max_retries) + 1):
            if attempt:
                time.sleep(min(float(self.backoff) * 2 ** (attempt - 1), 8.0))
            try:
                return client.chat.completions.create(**kwargs), attempt + 1
            except (openai.APIConnectionError, openai.APITimeoutError) as exc:  # timeout subclasses connection
                last = exc
                log.warning("judge %s: %s (attempt %d)", self._base_url(), type(exc).__name__, attempt + 1)
            except openai.APIStatusError as exc:
                if exc.status_code >= 500 or exc.status_code in _RETRY_STATUS:
                    last = exc
                    log.warning("judge %s: HTTP %d (attempt %d)", self._base_url(), exc.status_code, attempt + 1)
                    continue
                raise JudgeResponseError(
                    f"judge endpoint {self._base_url()} refused the request: HTTP {exc.status_code}",
                    hint=_status_hint(exc.status_code, self.model, self.api_key_env),
                ) from None
        assert last is not None
        what = f"HTTP {last.status_code}" if isinstance(last, openai.APIStatusError) else type(last).__name__
        raise JudgeUnavailableError(
            f"judge endpoint {self._base_url()} unavailable after {int(self.max_retries) + 1} attempts ({what})",
            hint="is the guard server running and is base_url right (it ends in /v1)? e.g. "
            "`vllm serve meta-llama/Llama-Guard-3-8B` (http://127.0.0.1:8000/v1) or `ollama pull llama-guard3` "
            "(http://127.0.0.1:11434/v1); raise timeout or max_retries for a slow server",
        ) from None

    def _judge(self, item: Any) -> Verdict:
        messages, truncated = self._messages(item)
        key = hashlib.sha256(
            json.dumps([self._base_url(), self.model, self.prompt_format, self.logprobs, messages]).encode()
        ).hexdigest()
        cache = self._verdict_cache()
        with _CLIENT_LOCK:
            hit = cache.get(key)
            if hit is not None:
                cache.move_to_end(key)
                return hit
        try:
            response, attempts = self._request(messages)
            verdict = self._parse(response, truncated, attempts)
        except JudgeError as exc:
            if self.on_error == "raise":
                raise
            return Verdict(sampled=True, score=float(self.prior), label="error", truncated=truncated, error=str(exc))
        with _CLIENT_LOCK:
            cache[key] = verdict
            while len(cache) > max(int(self.cache_size), 0):
                cache.popitem(last=False)
        return verdict

    def _verdict_cache(self) -> OrderedDict[str, Verdict]:
        cache: OrderedDict[str, Verdict] | None = self.__dict__.get("_cache")
        if cache is None:
            cache = OrderedDict()
            self.__dict__["_cache"] = cache
        return cache

    def _parse(self, response: Any, truncated: bool, attempts: int) -> Verdict:
        try:
            choice = response.choices[0]
            content = choice.message.content or ""
        except (AttributeError, IndexError, TypeError) as exc:
            raise JudgeResponseError(
                "judge reply has no choices[0].message", hint="is base_url an OpenAI-compatible chat endpoint?"
            ) from exc
        try:
            if self.prompt_format == "llama-guard-3":
                label, codes = parse_llama_guard(content)
                score = 1.0 if label == "unsafe" else 0.0
                if self.logprobs:
                    p = _first_token_unsafe_prob(choice)
                    if p is not None:
                        score = p
                llmt = sorted({c for code in codes for c in LLAMA_GUARD_TO_LLMT.get(code, ())})
                reason = ", ".join(f"{c} {LLAMA_GUARD_CATEGORIES.get(c, '?')}" for c in codes)
            else:
                label, score, llmt_t, reason = parse_generic_json(content)
                codes, llmt = (), list(llmt_t)
        except ValueError as exc:
            raise JudgeResponseError(
                f"cannot parse the judge's reply ({exc})",
                hint=f"prompt_format={self.prompt_format!r} expects "
                + ("'safe' or 'unsafe\\nS<n>,...' (a Llama Guard model)" if self.prompt_format == "llama-guard-3"
                   else "a JSON object with 'verdict' and 'score'"),
            ) from None  # fmt: skip
        cats = dict.fromkeys(LLMT_IDS, 0.0)
        for c in llmt:
            cats[c] = score
        return Verdict(
            sampled=True, score=score, label=label, codes=tuple(codes), categories=cats, reason=reason,
            truncated=truncated, attempts=attempts,
        )  # fmt: skip

    # -- protocol ---------------------------------------------------------------------------------
    def fit(self, items: Sequence[Any], labels: Sequence[int] | None = None) -> JudgeDetector:
        """Nothing to learn; validates the parameters (no request is made)."""
        if labels is not None and len(labels) != len(items):
            raise ValueError("items and labels differ in length")
        self._validate()
        return self

    def verdicts(self, items: Sequence[Any]) -> list[Verdict]:
        """One :class:`Verdict` per item; sampled items are judged with bounded concurrency."""
        self._validate()
        out: list[Verdict | None] = [None] * len(items)
        todo = []
        for i, it in enumerate(items):
            if self.is_sampled(it):
                todo.append(i)
            else:
                out[i] = Verdict(sampled=False, score=float(self.prior), label="not_sampled")
        if todo:
            workers = min(int(self.concurrency), len(todo))
            if workers == 1:
                for i in todo:
                    out[i] = self._judge(items[i])
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stormwatch-judge") as ex:
                    for i, v in zip(todo, ex.map(lambda j: self._judge(items[j]), todo), strict=True):
                        out[i] = v
        return [v for v in out if v is not None]

    def score(self, items: Sequence[Any]) -> list[float]:
        return [float(v.score) for v in self.verdicts(items)]

    def score_categories(self, items: Sequence[Any]) -> list[dict[str, float]]:
        return [dict(v.categories) if v.categories else dict.fromkeys(LLMT_IDS, 0.0) for v in self.verdicts(items)]

    def explain(self, item: Any) -> list[dict[str, Any]]:
        v = self.verdicts([item])[0]
        if not v.sampled:
            return [
                {
                    "kind": "judge",
                    "detail": f"not sampled (sample_rate {self.sample_rate}); score is the prior {self.prior}",
                    "sampled": False,
                }
            ]
        ev: dict[str, Any] = {
            "kind": "judge",
            "detail": f"{self.model} via {self._base_url()} ({self.prompt_format})",
            "sampled": True,
            "verdict": v.label,
            "score": round(v.score, 6),
        }
        if v.codes:
            ev["codes"] = list(v.codes)
        if v.reason:
            ev["reason"] = v.reason
        if v.truncated:
            ev["truncated"] = f"judged the first {self.max_chars} characters"
        if v.error:
            ev["error"] = v.error
        out = [ev]
        for cid, p in sorted(v.categories.items()):
            if p > 0:
                out.append({"kind": "category", "feature": cid, "probability": round(p, 4)})
        return out

    def tags(self) -> DetectorTags:
        return DetectorTags(
            requires_fit=False,
            input_kinds=("text", "event", "conversation"),
            stateless=True,
            version=f"judge-1:{self.prompt_format}:{self.model}",
        )


_CLIENTS: dict[tuple[str, float, str], Any] = {}
_CLIENT_LOCK = threading.RLock()
