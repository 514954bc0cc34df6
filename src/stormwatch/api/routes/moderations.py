"""OpenAI-compatible ``POST /v1/moderations``, scored by the detectors of the settings.

A drop-in for the official ``openai`` SDK (``OpenAI(base_url="http://host:port/v1", api_key=TOKEN)
.moderations.create(input=...)``) and for clients that speak the same wire format. Input is a
string (one result), a list of strings (one result each) or a list of parts
(``{"type": "text", "text": ...}``; image parts are skipped, not scored) that gives one result for
the whole list. ``model`` in the request is accepted and ignored; ``model`` in the reply names the
detectors' version: ``first_tier-<series>+<hash>`` by default,
``cascade-<series>+first_tier-...+encoder-...+combiner-...`` with the cascade.

The detectors are those of the server's settings (:func:`stormwatch.detect.scorer.scorer_for`:
``[detect] detectors`` in ``stormwatch.toml``, ``STORMWATCH_DETECTORS``; default the first tier,
which keeps the endpoint latency-bound; the cascade without the ``encoder`` extra is an error). Detectors
asked for explicitly that cannot be loaded answer 503 ``detector_unavailable`` (the reason, with its
path, is in the server log); the next request tries again.

OpenAI's 13 categories are all present in every result. Our LLMT categories are cyber misuse, so
they roll up into ``illicit`` (score: the detector's overall score; flagged at the preset
threshold or when any LLMT category passes its threshold); the other 12 OpenAI categories are not
scored by stormwatch and are always ``false`` / ``0.0``. The LLMT scores come alongside in the
extension field ``x_stormwatch`` of each result (the SDK keeps unknown keys in ``model_extra``), with
``cascade``: which tier decided and why (``{tier, reason, first_tier, encoder?, score}``; ``null``
when the detectors are not the cascade).

Needs the ``screen`` permission (analyst, admin; a token can be narrowed to it with
``--scope screen``). The guard authenticates before the body is read and caps it like every route.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Body, FastAPI, Request
from starlette.concurrency import run_in_threadpool

from stormwatch.api.auth import requires
from stormwatch.api.errors import ApiError, BadRequest
from stormwatch.api.roles import SCREEN
from stormwatch.errors import InputError
from stormwatch.vocab import LLMT_IDS

__all__ = [
    "INLINE_CHARS",
    "MAX_INPUTS",
    "OPENAI_CATEGORIES",
    "DetectorUnavailable",
    "install",
    "moderation_results",
    "score",
]

router = APIRouter(tags=["moderations"])
log = logging.getLogger(__name__)

#: the 13 categories of OpenAI's moderation results (openai 3.57.0 ``types/moderation.py``)
OPENAI_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
#: the OpenAI category our LLMT scores roll up into
LLMT_CATEGORY = "illicit"
#: most inputs in one request (a list of strings gives one result each)
MAX_INPUTS = 2048
#: texts of at most this many characters in all are scored on the event loop by the first tier
INLINE_CHARS = 4096


class DetectorUnavailable(ApiError):
    """The server's detectors cannot be loaded (a configuration problem, not the request's)."""

    status = 503
    type = "detector_unavailable"


@dataclass(frozen=True, slots=True)
class _Scorer:
    model: Any  # the scorer of stormwatch.detect.scorer (imported lazily: numpy stays out of app creation)
    version: str
    threshold: float
    category_thresholds: dict[str, float]
    #: the first tier alone: a short text costs ~10 us, less than a worker-thread hop (~80 us CPU)
    inline: bool = False

    def score(self, texts: list[str]) -> tuple[list[float], list[list[float]], list[dict[str, Any] | None]]:
        """(scores, LLMT category scores, the cascade's decision or None) per text."""
        from stormwatch.detect.cascade import CascadeModel

        if isinstance(self.model, CascadeModel):
            scores, cats, decisions = self.model.score_full(texts)
            return scores.tolist(), cats.tolist(), [d.to_dict() for d in decisions]
        scores, cats = self.model.score_with_categories(texts)
        return scores.tolist(), cats.tolist(), [None] * len(texts)


_load_lock = threading.Lock()


def _scorer(request: Request) -> _Scorer:
    """The app's detectors (from the settings), loaded once (on first use) and kept in ``app.state``."""
    state = request.app.state
    found: _Scorer | None = getattr(state, "moderation_scorer", None)
    if found is not None:
        return found
    with _load_lock:
        found = getattr(state, "moderation_scorer", None)
        if found is None:
            from stormwatch.detect.scorer import scorer_for
            from stormwatch.detect.settings import load_settings

            settings = load_settings()
            try:
                model = scorer_for(settings)
            except (InputError, FileNotFoundError) as exc:
                log.error("POST /v1/moderations: the detectors cannot be loaded: %s", exc)
                raise DetectorUnavailable(
                    "the detectors configured for this server cannot be loaded (see the server log)"
                ) from exc
            thr = settings.resolved_threshold(model.thresholds)
            cats = {c: settings.category_thresholds.get(c, thr) for c in LLMT_IDS}
            from stormwatch.detect.model import FirstTierModel

            found = _Scorer(model, str(model.version), thr, cats, inline=isinstance(model, FirstTierModel))
            state.moderation_scorer = found
    return found


def _bad(message: str, *loc: str | int) -> BadRequest:
    return BadRequest(message, loc=("body", *loc))


def _texts(body: Any) -> tuple[list[str], bool]:
    """The texts to score, and whether the input was a list of parts (one result for all)."""
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object with an 'input' field")
    if "input" not in body:
        raise _bad("missing 'input': a string, a list of strings, or a list of parts", "input")
    value = body["input"]
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("'model' must be a string", "model")
    if isinstance(value, str):
        return [value], False
    if not isinstance(value, list):
        raise _bad("'input' must be a string, a list of strings, or a list of parts", "input")
    if not value:
        raise _bad("'input' is an empty list", "input")
    if len(value) > MAX_INPUTS:
        raise _bad(f"'input' has {len(value)} items; at most {MAX_INPUTS}", "input")
    if all(isinstance(v, str) for v in value):
        return list(value), False
    texts: list[str] = []
    for i, part in enumerate(value):
        if not isinstance(part, dict):
            raise _bad("a list 'input' must hold only strings or only parts ({type, ...} objects)", "input", i)
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise _bad("a text part needs a string 'text'", "input", i, "text")
            texts.append(text)
        elif kind != "image_url":
            raise _bad(f"unknown part type {kind!r}: 'text' or 'image_url'", "input", i, "type")
    return ["\n".join(texts)], True


def moderation_results(
    scores: list[float],
    categories: list[list[float]],
    scorer: _Scorer,
    *,
    has_text: list[bool],
    decisions: list[dict[str, Any] | None] | None = None,
) -> list[dict[str, Any]]:
    """OpenAI-shaped results from the detectors' scores (one row of LLMT category scores per input)."""
    results = []
    decisions = decisions if decisions is not None else [None] * len(scores)
    for score, row, text, decision in zip(scores, categories, has_text, decisions, strict=True):
        llmt = {cid: round(float(v), 6) for cid, v in zip(LLMT_IDS, row, strict=True)}
        llmt_flagged = [cid for cid in LLMT_IDS if llmt[cid] >= scorer.category_thresholds[cid]]
        flagged = bool(text) and (score >= scorer.threshold or bool(llmt_flagged))
        cats = dict.fromkeys(OPENAI_CATEGORIES, False)
        cat_scores = dict.fromkeys(OPENAI_CATEGORIES, 0.0)
        cats[LLMT_CATEGORY] = flagged
        cat_scores[LLMT_CATEGORY] = round(float(score), 6)
        applied: list[str] = ["text"] if text else []
        results.append(
            {
                "flagged": flagged,
                "categories": cats,
                "category_scores": cat_scores,
                "category_applied_input_types": {c: list(applied) for c in OPENAI_CATEGORIES},
                "x_stormwatch": {
                    "score": round(float(score), 6),
                    "threshold": scorer.threshold,
                    "llmt_categories": llmt,
                    "llmt_flagged": llmt_flagged,
                    "cascade": decision,
                },
            }
        )
    return results


@router.post(
    "/v1/moderations",
    summary="Screen text, OpenAI moderations wire format (analyst, admin; scope 'screen')",
    dependencies=[requires(SCREEN)],
)
async def create_moderation(request: Request, body: Any = Body(...)) -> dict[str, Any]:
    # On the event loop but for one worker-thread hop (loading and scoring); the write is awaited
    # without holding a thread, and the answer is serialised on the loop.
    texts, parts = _texts(body)
    scorer, results = await score(request, texts, parts=parts)
    modr_id = f"modr-{secrets.token_hex(12)}"
    # the call is a usage event too, committed before the answer (stormwatch.api.online)
    from stormwatch.api.online import MODERATIONS_RUN_ID, moderation_event, writer_for

    event = moderation_event(request, body, texts, results, modr_id, scorer.version)
    await writer_for(request.app.state).write([event], [], run_id=MODERATIONS_RUN_ID)
    return {"id": modr_id, "model": scorer.version, "results": results}


def _score(request: Request, texts: list[str], parts: bool) -> tuple[_Scorer, list[dict[str, Any]]]:
    scorer = _scorer(request)
    scores, cats, decisions = scorer.score(texts)
    has_text = [bool(t.strip()) for t in texts] if parts else [True] * len(texts)
    return scorer, moderation_results(scores, cats, scorer, has_text=has_text, decisions=decisions)


async def score(request: Request, texts: list[str], *, parts: bool) -> tuple[_Scorer, list[dict[str, Any]]]:
    """The detectors' results for ``texts`` (``parts``: an empty text is not flagged).

    Scored on the event loop when that is cheaper than a worker thread: the detectors are loaded
    and are the first tier alone, and the texts are short (at most :data:`INLINE_CHARS` in all).
    Otherwise on a worker thread: loading the detectors, the encoder, long or many texts.
    """
    loaded: _Scorer | None = getattr(request.app.state, "moderation_scorer", None)
    if loaded is not None and loaded.inline and sum(map(len, texts)) <= INLINE_CHARS:
        return _score(request, texts, parts)
    return await run_in_threadpool(_score, request, texts, parts)


def install(app: FastAPI) -> None:
    app.include_router(router)
