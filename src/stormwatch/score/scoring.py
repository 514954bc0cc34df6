"""The scoring stage: every stored event gets a calibrated score per registered model, once.

Incremental: a cursor per model version (``stage_cursors``, stage ``score``) remembers the last
event sequence number scored, and advances in the same transaction as the scores it covers, so a
killed run resumes where it stopped and a re-run scores only new events. A new model version
starts at zero and so scores everything it has not scored yet; candidates run beside the active
model on the same events (shadow mode).

What is scored: the request's own text (the last user turn, or ``prompt``). When the request
carries earlier turns of its conversation, the joined user turns are scored too, and where either
reaches the conversation rule's gate (:func:`~stormwatch.detect.conversation.context_gate`), the
full conversation rule of :func:`stormwatch.detect.conversation.score_conversation` (pretext
wrappers, rephrasing after a refusal, TTP breadth) decides the event's score when it is higher.
Below the gate the rule adds nothing, so skipping it there changes no score (an earlier turn that
alone crossed the gate was scored, and judged, as its own request). Conversation evidence is kept
for flagged events; n-gram evidence is recomputed on demand by :func:`explain_event`.

Each registered model scores with the detectors of its kind (:mod:`stormwatch.score.models`): the
first tier alone, or the cascade (first tier -> gate -> encoder -> combiner), whose version names
every part. Worker processes load their own copy of the model (the cascade's ONNX session is
created in each worker, one intra-op thread each), so throughput scales with ``--workers``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import orjson
from tqdm import tqdm

from stormwatch.detect.conversation import context_gate, score_conversation
from stormwatch.detect.settings import DetectSettings, load_settings
from stormwatch.procs import pool_options
from stormwatch.score.models import ModelEntry, scoring_models
from stormwatch.store.base import Store
from stormwatch.store.records import now_iso
from stormwatch.store.repos.events import ScoringColumns, ScoringInput
from stormwatch.vocab import LLMT_IDS

STAGE = "score"
BATCH = 10000
#: commit after this many scored events or seconds, whichever comes first. Detections are keyed by
#: event id, which is random, so each batch dirties index pages all over the table: one commit per
#: batch rewrote most of the index every 10,000 events (at 1M events, 7.7 of 32 s were commits).
COMMIT_ROWS = 100_000
COMMIT_SECONDS = 5.0
#: fewer new events than this are scored in this process when the model is the first tier alone:
#: starting the workers (each loads the model) costs more than it saves (10,000 events: 0.5 s inline
#: against 1.0 s with two workers); the cascade's encoder is worth the workers at any size
INLINE_FIRST_TIER_EVENTS = 50_000
_CAT_MIN = 0.005
_CAT_SCORE_MIN = 0.05


@dataclass(slots=True)
class ModelRun:
    version: str
    status: str
    scored: int = 0
    flagged: int = 0
    conversations: int = 0


@dataclass(slots=True)
class ScoreSummary:
    models: list[ModelRun] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def scored(self) -> int:
        return sum(m.scored for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        return {"models": [asdict(m) for m in self.models], "scored": self.scored, "seconds": self.seconds}


@dataclass(slots=True)
class _Item:
    event_id: str
    account_id: str
    conversation_id: str | None
    ts: str
    text: str
    turns: list[dict[str, Any]] | None  # only when the request carries earlier user turns


def _text_and_turns(
    messages: list[dict[str, Any]] | None, prompt: str | None, refused: bool | None
) -> tuple[str, list[dict[str, Any]] | None]:
    """What is scored of one request: its last user turn (or ``prompt``), and the turns when there
    are earlier user turns (the last one marked ``refused`` when the response was a refusal)."""
    if messages is None:
        return prompt or "", None
    users = [m["content"] for m in messages if m.get("role") == "user"]
    text = users[-1] if users else ""
    if len(users) <= 1:
        return text, None
    if refused:
        return text, [*messages[:-1], {**messages[-1], "refused": True}]
    return text, messages


def _item(row: ScoringInput) -> _Item:
    text, turns = _text_and_turns(row.messages, row.prompt, row.refused)
    return _Item(row.event_id, row.account_id, row.conversation_id, row.ts, text, turns)


def _score_rows(
    rows: list[tuple[str | None, str | None, int | None]],
    threshold: float,
    cat_thresholds: dict[str, float],
) -> tuple[list[tuple[float, int, str | None, str, str | None]], int]:
    """:func:`_score_batch` of stored rows ``(messages JSON, prompt, refused)``, decoded here (in the
    worker process, so the driver only reads and writes). Also returns how many were conversations."""
    texts: list[str] = []
    turns: list[list[dict[str, Any]] | None] = []
    for messages, prompt, refused in rows:
        text, t = _text_and_turns(
            None if messages is None else orjson.loads(messages), prompt, None if refused is None else bool(refused)
        )
        texts.append(text)
        turns.append(t)
    return _score_batch(texts, turns, threshold, cat_thresholds), sum(t is not None for t in turns)


# -- worker side (runs in the pool processes, or inline) ------------------------------------------
_MODEL: Any = None  # the scorer (first tier's interface: FirstTierModel or CascadeModel)


class _Unexplained:
    """The model, minus n-gram explanations: the conversation rule runs on every gated event,
    but its n-gram evidence is needed only when an analyst opens one (see :func:`explain_event`)."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def explain_text(self, text: str, top: int = 8) -> list[dict[str, Any]]:
        return []


def _init_worker(entry: ModelEntry, fresh: bool = False) -> None:
    """Load ``entry``'s scorer in this process. ``fresh`` (a pool worker, started clean by
    ``stormwatch.procs``): one encoder thread, and no cached ONNX session reused (a session is not
    safe to share across processes, should a platform still fork)."""
    global _MODEL
    if fresh and entry.kind != "first_tier":
        from stormwatch.detect import cascade, encoder

        os.environ[encoder.THREADS_ENV] = "1"
        cascade._load.cache_clear()
        encoder._load.cache_clear()
    _MODEL = entry.load()


def _score_batch(
    texts: list[str],
    turns: list[list[dict[str, Any]] | None],
    threshold: float,
    cat_thresholds: dict[str, float],
) -> list[tuple[float, int, str | None, str, str | None]]:
    model = _MODEL
    assert model is not None
    scores, cats = model.score_with_categories(texts)
    explanations: list[list[dict[str, Any]] | None] = [None] * len(texts)
    conv_idx = [i for i, t in enumerate(turns) if t is not None]
    gate = context_gate(model)  # below it the conversation rule adds nothing (see its docs)
    if conv_idx:
        joined = ["\n\n".join(m["content"] for m in turns[i] if m.get("role") == "user") for i in conv_idx]  # type: ignore[union-attr]
        jscores = model.score_texts(joined)
        for i, js in zip(conv_idx, jscores.tolist(), strict=True):
            if max(js, float(scores[i])) < gate:
                continue
            conv = score_conversation(turns[i], _Unexplained(model))  # type: ignore[arg-type]
            if conv["score"] > scores[i]:
                scores[i] = conv["score"]
                cats[i] = np.fromiter((conv["categories"][c] for c in LLMT_IDS), dtype=np.float64, count=len(LLMT_IDS))
                explanations[i] = conv["explanation"]
    cat_thr = np.array([cat_thresholds.get(c, 2.0) for c in LLMT_IDS])
    # the per-row decisions as whole-batch array operations, then plain Python floats (the same values
    # and the same rounding as one row at a time, at a fraction of the cost)
    s_arr = np.asarray(scores, dtype=np.float64).reshape(len(texts))
    c_arr = np.asarray(cats, dtype=np.float64).reshape(len(texts), len(LLMT_IDS))
    flagged_all = ((s_arr >= threshold) | (c_arr >= cat_thr).any(axis=1)).tolist()
    tops = c_arr.argmax(axis=1).tolist() if len(texts) else []
    out: list[tuple[float, int, str | None, str, str | None]] = []
    for s, row, top, flagged, expl_i in zip(
        s_arr.tolist(), c_arr.tolist(), tops, flagged_all, explanations, strict=True
    ):
        top_ttp = LLMT_IDS[top] if row[top] >= 0.05 else None
        if s >= _CAT_SCORE_MIN:
            cat_json = orjson.dumps({LLMT_IDS[j]: round(v, 3) for j, v in enumerate(row) if v >= _CAT_MIN}).decode()
        else:
            cat_json = "{}"  # a category can never exceed the score: nothing worth keeping
        # n-gram explanations are cheap to recompute on demand (explain_event); conversation ones are kept
        expl = orjson.dumps(expl_i).decode() if flagged and expl_i is not None else None
        out.append((round(s, 6), int(flagged), top_ttp, cat_json, expl))
    return out


# -- driver ---------------------------------------------------------------------------------------
def _cursor(store: Store, version: str) -> int:
    return store.stages.get(STAGE, version)


def _executor(entry: ModelEntry, model: Any, workers: int) -> Executor | None:
    global _MODEL
    if workers <= 1:
        _MODEL = model
        return None
    return ProcessPoolExecutor(max_workers=workers, **pool_options(_init_worker, (entry, True), preload=(__name__,)))


def score_model(
    store: Store,
    entry: ModelEntry,
    settings: DetectSettings,
    *,
    workers: int,
    progress: bool,
    batch: int = BATCH,
) -> ModelRun:
    run = ModelRun(entry.version, entry.status)
    model = entry.load()
    threshold = settings.resolved_threshold(model.thresholds)
    cat_thr = dict(settings.category_thresholds)
    after = _cursor(store, entry.version)
    total = store.events.count_after(after)
    if total == 0:
        return run
    if entry.kind == "first_tier" and total < INLINE_FIRST_TIER_EVENTS:
        workers = 1
    pool = _executor(entry, model, workers)
    bar = tqdm(total=total, unit="ev", desc=f"score {entry.version[:28]}", disable=not progress, mininterval=0.5)
    try:
        pending: list[tuple[int, ScoringColumns, Any]] = []
        since = {"rows": 0, "t": time.monotonic()}

        def flush(
            last_seq: int,
            items: ScoringColumns,
            scored: tuple[Sequence[tuple[float, int, str | None, str, str | None]], int],
        ) -> None:
            results, conversations = scored
            stamp = now_iso()
            version = entry.version
            store.detections.insert_rows(
                [
                    (event_id, version, account_id, conversation_id, ts, score, flagged, top_ttp, categories,
                     explanation, stamp)
                    for event_id, account_id, conversation_id, ts, (score, flagged, top_ttp, categories, explanation)
                    in zip(items.event_id, items.account_id, items.conversation_id, items.ts, results, strict=True)
                ]
            )  # fmt: skip
            store.stages.set(STAGE, last_seq, key=entry.version)  # same transaction as the scores
            since["rows"] += len(items)
            if since["rows"] >= COMMIT_ROWS or time.monotonic() - since["t"] >= COMMIT_SECONDS:
                store.commit()
                since["rows"], since["t"] = 0, time.monotonic()
            run.scored += len(items)
            run.flagged += sum(flagged for _, flagged, *_ in results)
            run.conversations += conversations
            bar.update(len(items))

        for cols in store.events.scoring_columns(after, batch):
            payload = list(zip(cols.messages, cols.prompt, cols.refused, strict=True))  # decoded in the worker
            last_seq = int(cols.seq[-1])
            if pool is None:
                flush(last_seq, cols, _score_rows(payload, threshold, cat_thr))
                continue
            pending.append((last_seq, cols, pool.submit(_score_rows, payload, threshold, cat_thr)))
            while len(pending) > workers:  # keep every worker busy, memory bounded
                last, its, fut = pending.pop(0)
                flush(last, its, fut.result())
        for last, its, fut in pending:
            flush(last, its, fut.result())
        store.commit()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return run


def score_new_events(
    store: Store, *, progress: bool = True, workers: int | None = None, settings: DetectSettings | None = None
) -> ScoreSummary:
    """Score every event not yet scored by the active model and by each candidate (shadow)."""
    started = time.perf_counter()
    settings = settings or load_settings()
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    summary = ScoreSummary()
    for entry in scoring_models(store, settings):
        summary.models.append(score_model(store, entry, settings, workers=workers, progress=progress))
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def explain_event(store: Store, event_id: str, version: str | None = None) -> list[dict[str, Any]]:
    """Why an event scored as it did: the stored conversation evidence and the model's evidence
    (first tier: n-grams; cascade: the encoder's spans where the prompt reached it, then n-grams
    that are not only function words; each entry names its ``tier``)."""
    from stormwatch.score.models import ensure_active, get_model

    entry = get_model(store, version) if version else ensure_active(store)
    if entry is None:
        return []
    stored = store.detections.explanation(event_id, entry.version)
    event = store.get_event(event_id)
    if event is None:
        return stored
    # conversation evidence (kept at scoring time) + the request's n-grams (recomputed: cheap)
    evidence: list[dict[str, Any]] = entry.load().explain_text(_item_text(event.messages, event.prompt), top=8)
    return stored + evidence


def _item_text(messages: list[dict[str, Any]] | None, prompt: str | None) -> str:
    if messages:
        users = [m["content"] for m in messages if m.get("role") == "user"]
        return users[-1] if users else ""
    return prompt or ""


def active_model_version(store: Store) -> str:
    from stormwatch.score.models import ensure_active

    return ensure_active(store).version
