"""Read events (with their detection scores) into compact columns, chunk by chunk.

Only what account analysis needs is read: ids, time, network and client fields, the refusal flag,
the score and category mass, and the *tail* of the request text (the newest user turn is at the
end of ``messages``) for script-based language detection and URL / e-mail extraction. Strings are
interned to integer codes so aggregation runs in numpy.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import orjson

from stormwatch.analyze.params import LLMT, TTP_MIN_SCORE
from stormwatch.analyze.scale import ScoreScale
from stormwatch.store import Store

__all__ = ["Columns", "Interner", "scan_events"]

T = TypeVar("T")

LANGS = ("und", "en", "ru", "uk", "zh", "ja", "ko", "fa", "ar", "he", "other")
_LANG_CODE = {name: i for i, name in enumerate(LANGS)}
_URL = re.compile(r"https?://[^\s\"'<>\\)\]]{3,200}", re.I)
_EMAIL = re.compile(r"[\w.+-]{1,64}@([a-z0-9-]{1,63}\.)+[a-z]{2,24}", re.I)
_SCRIPTS = (
    ("ko", re.compile(r"[\uac00-\ud7a3]")),
    ("ja", re.compile(r"[\u3040-\u30ff]")),
    ("zh", re.compile(r"[\u4e00-\u9fff]")),
    ("fa", re.compile(r"[\u067e\u0686\u0698\u06af\u06a9\u06cc]")),
    ("ar", re.compile(r"[\u0600-\u06ff]")),
    ("uk", re.compile(r"[\u0456\u0457\u0454\u0491]")),
    ("ru", re.compile(r"[\u0400-\u04ff]")),
    ("he", re.compile(r"[\u0590-\u05ff]")),
)


class Interner:
    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.values: list[str] = []

    def __call__(self, value: str | None) -> int:
        if value is None:
            return -1
        code = self.codes.get(value)
        if code is None:
            code = len(self.values)
            self.codes[value] = code
            self.values.append(value)
        return code


@dataclass(slots=True)
class Columns:
    accounts: Interner = field(default_factory=Interner)
    ips: Interner = field(default_factory=Interner)
    uas: Interner = field(default_factory=Interner)
    keys: Interner = field(default_factory=Interner)
    convs: Interner = field(default_factory=Interner)
    event_ids: list[str] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    acc: list[int] = field(default_factory=list)
    ts: list[str] = field(default_factory=list)
    ip: list[int] = field(default_factory=list)
    ua: list[int] = field(default_factory=list)
    key: list[int] = field(default_factory=list)
    conv: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    lang: list[int] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    cat_rows: list[int] = field(default_factory=list)
    cat_vals: list[list[float]] = field(default_factory=list)
    #: (row, kind, value) observables found in the request text: url, domain, email
    text_obs: list[tuple[int, str, str]] = field(default_factory=list)
    #: accounts (codes) with an event that has no score under the model version (not scored yet)
    unscored: set[int] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.acc)

    @property
    def max_seq(self) -> int:
        """The highest ``seq`` read (0: none)."""
        return max(self.seq, default=0)

    def arrays(self) -> dict[str, np.ndarray[Any, Any]]:
        t = np.array([s[:-1] if s.endswith("Z") else s for s in self.ts], dtype="datetime64[us]")
        cats = np.zeros((len(self.cat_rows), len(LLMT)), dtype=np.float32)
        if self.cat_vals:
            cats[:] = np.asarray(self.cat_vals, dtype=np.float32)
        return {
            "acc": np.asarray(self.acc, dtype=np.int64),
            "seq": np.asarray(self.seq, dtype=np.int64),
            "t": t.astype(np.int64).astype(np.float64) / 1e6,
            "ip": np.asarray(self.ip, dtype=np.int64),
            "ua": np.asarray(self.ua, dtype=np.int64),
            "key": np.asarray(self.key, dtype=np.int64),
            "conv": np.asarray(self.conv, dtype=np.int64),
            "refused": np.asarray(self.refused, dtype=np.int8),
            "lang": np.asarray(self.lang, dtype=np.int8),
            "score": np.asarray(self.score, dtype=np.float64),
            "cat_rows": np.asarray(self.cat_rows, dtype=np.int64),
            "cats": cats,
        }


def _lang(tail: str, attrs: str | None) -> int:
    if tail and not tail.isascii():
        for name, rx in _SCRIPTS:
            if rx.search(tail):
                return _LANG_CODE[name]
    if attrs and "accept_language" in attrs:
        try:
            value = orjson.loads(attrs).get("accept_language")
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, str) and value:
            primary = value.split(",", 1)[0].split(";", 1)[0].split("-", 1)[0].strip().lower()
            return _LANG_CODE.get(primary, _LANG_CODE["other"])
    return _LANG_CODE["en"] if tail else 0


def _cached_lang(cache: dict[tuple[str, bool], int], tail: str, attrs: str) -> int:
    """``_lang`` of an ASCII (or empty) text: it depends only on the attributes (the browser's
    Accept-Language) and on whether there is text, and many events share their attributes."""
    key = (attrs, bool(tail))
    code = cache.get(key)
    if code is None:
        code = cache[key] = _lang(tail, attrs)
    return code


def _text_observables(row: int, tail: str, out: list[tuple[int, str, str]]) -> None:
    if "://" in tail:
        for m in _URL.finditer(tail):
            url = m.group(0).rstrip(".,;:!?")
            out.append((row, "url", url))
            host = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("@")[-1]
            host = host.split(":", 1)[0].lower()
            if host:
                out.append((row, "domain", host))
    if "@" in tail:
        for m in _EMAIL.finditer(tail):
            email = m.group(0).lower()
            out.append((row, "email", email))
            out.append((row, "domain", email.rsplit("@", 1)[1]))


def _prefetch(chunks: Iterator[T]) -> Iterator[T]:
    """``chunks``, read one ahead in a thread: the database fetches the next chunk (the SQLite and
    PostgreSQL drivers release the GIL while they wait) while this thread turns the last one into
    columns. The connection is used by that thread only until the iteration ends."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            for c in chunks:
                if stop.is_set():
                    return
                while not stop.is_set():
                    try:
                        q.put(("chunk", c), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as exc:  # handed to the consumer
            q.put(("error", exc))

    thread = threading.Thread(target=produce, name="analyze-scan", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # a producer blocked on a full queue sees ``stop`` within 0.1 s
            with contextlib.suppress(queue.Empty):
                q.get_nowait()
            thread.join(0.05)


def scan_events(
    store: Store,
    model_version: str,
    account_ids: Sequence[str] | None = None,
    *,
    chunk: int = 40_000,  # up to three chunks are in memory at once (one read ahead)
    on_rows: Any = None,
    scale: ScoreScale | None = None,
    after: int = 0,
    upto: int | None = None,
    conversations: Mapping[str, Collection[str]] | None = None,
) -> Columns:
    """Read all events (or those of ``account_ids``, or those of each account of ``conversations``
    in its listed conversations, or those with ``after < seq <= upto``) with their scores into
    :class:`Columns`.

    ``scale``: the map of this model's scores onto the reference scale (``analyze.scale``; None: as
    they are); category probabilities are scaled with their request's score."""
    cols = Columns()
    n_cats = len(LLMT)
    lang_en, lang_und = _LANG_CODE["en"], _LANG_CODE["und"]
    lookups: list[dict[str | None, int]] = [{None: -1} for _ in range(5)]
    lang_cache: dict[tuple[str, bool], int] = {}  # (attributes, has text) -> language, for ASCII text
    extra: dict[str, Any] = {}  # only what is asked for (a store-like reader may take no more)
    if after or upto is not None:
        extra.update(after=after, upto=upto)
    if conversations is not None:
        extra["conversations"] = conversations
    for part in _prefetch(store.analysis.scan(model_version, account_ids, chunk=chunk, **extra)):
        if not len(part):
            continue
        base = len(cols.acc)
        seq, eid, account, ts, ip, ua = part.seq, part.event_id, part.account_id, part.ts, part.ip, part.user_agent
        key, conv, refused, attrs, tails = (
            part.api_key_id,
            part.conversation_id,
            part.refused,
            part.attributes,
            part.tail,
        )
        score, cats = part.score, part.categories
        cols.seq.extend(int(x) for x in seq)
        cols.event_ids.extend(eid)
        cols.ts.extend(ts)
        for interner, values, out, lookup in (
            (cols.accounts, account, cols.acc, lookups[0]),
            (cols.ips, ip, cols.ip, lookups[1]),
            (cols.uas, ua, cols.ua, lookups[2]),
            (cols.keys, key, cols.key, lookups[3]),
            (cols.convs, conv, cols.conv, lookups[4]),
        ):
            codes, vals = interner.codes, interner.values
            for v in dict.fromkeys(values):  # first-seen order: the same codes whatever PYTHONHASHSEED
                if v is not None and v not in codes:
                    codes[v] = lookup[v] = len(vals)
                    vals.append(v)
            out.extend(map(lookup.__getitem__, values))  # ``lookup``: the codes, and None -> -1
        cols.refused.extend([1 if r else 0 for r in refused])
        if len(lang_cache) > 200_000:
            lang_cache.clear()
        cols.lang.extend(
            [
                _lang(t, a)
                if (t and not t.isascii())
                else (
                    _cached_lang(lang_cache, t, a) if (a and "accept_language" in a) else (lang_en if t else lang_und)
                )
                for t, a in zip(tails, attrs, strict=True)
            ]
        )
        if None in score:
            cols.unscored.update(cols.acc[base + j] for j, x in enumerate(score) if x is None)
        sc = [0.0 if x is None else float(x) for x in score]
        factor: list[float] | None = None
        if scale is not None:
            raw = sc
            sc = scale.apply(np.asarray(raw, dtype=np.float64)).tolist()
            factor = [m / r if r > 0 else 0.0 for m, r in zip(sc, raw, strict=True)]
        cols.score.extend(sc)
        for j, (sv, cj) in enumerate(zip(sc, cats, strict=True)):
            if sv >= TTP_MIN_SCORE and cj:
                parsed = orjson.loads(cj)
                cols.cat_rows.append(base + j)
                f = 1.0 if factor is None else factor[j]
                cols.cat_vals.append([min(1.0, f * float(parsed.get(c, 0.0))) for c in LLMT][:n_cats])
        for j, t in enumerate(tails):
            if t and ("://" in t or "@" in t):
                _text_observables(base + j, t, cols.text_obs)
        if on_rows is not None:
            on_rows(len(part))
    return cols
