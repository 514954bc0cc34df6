"""Take partners' intelligence in over TAXII 2.1: paged, checkpointed, resumable.

``pull(store, url, collection)`` pages a partner collection's objects (``limit`` per request,
following ``next``; ``added_after`` from the last run's ``X-TAXII-Date-Added-Last``) and commits
each page together with the checkpoint, so an interrupted pull resumes at the page it stopped at
and a finished one asks only for what was added since. Pulled objects land in
``share_pulled_objects`` and are then handed to the intel importer (``stormwatch.intel``), which
indexes indicators for the account analysis.

Raw HTTP (requests) rather than taxii2-client: the client library does not expose the
``X-TAXII-Date-Added-*`` headers an incremental poller needs.

A peer is not trusted to behave (:class:`PullLimits`): redirects are followed only within the API
root's origin (scheme, host, port) or to hosts named in ``allow_redirect_hosts``, and never from
https to http; every response body is read as a stream and refused past ``max_response_bytes``; a
run stops after ``max_pages`` pages or ``max_seconds`` (resumable from the checkpoint), and a peer
that answers ``more: true`` with a ``next`` it already gave (or an ``added_after`` that does not
advance) is an error. Every error names the URL and leaves the checkpoint at the last good page.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson

from stormwatch.errors import InputError, StormwatchError
from stormwatch.intel import TAXII_MEDIA_TYPE
from stormwatch.store import Store


class PullError(StormwatchError):
    pass


DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_PAGES = 10_000
DEFAULT_MAX_SECONDS = 3600.0
MAX_REDIRECTS = 5
_MAX_NEXT_RESTARTS = 3
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class PullLimits:
    """What one pull run accepts from a peer (see the module docstring)."""

    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_pages: int = DEFAULT_MAX_PAGES
    max_seconds: float = DEFAULT_MAX_SECONDS
    #: ``host`` (any port) or ``host:port`` a redirect may lead to besides the API root's own origin
    allow_redirect_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_response_bytes <= 0:
            raise ValueError(f"max_response_bytes must be positive, got {self.max_response_bytes}")
        if self.max_pages <= 0:
            raise ValueError(f"max_pages must be positive, got {self.max_pages}")
        if self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds}")
        for h in self.allow_redirect_hosts:
            _host_port(h)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _host_port(entry: str) -> tuple[str, int | None]:
    """``host`` / ``host:port`` / ``[v6]:port`` as (lower-case host, port or None for any)."""
    try:
        parts = urlsplit("//" + entry.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or parts.path or parts.query or parts.username:
        raise ValueError(f"allow_redirect_hosts: {entry!r} is not HOST or HOST:PORT")
    return host.lower(), port


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or _default_port(parts.scheme.lower())


def _redirect_allowed(start: str, target: str, allowed: Sequence[str]) -> bool:
    s_scheme, s_host, s_port = _origin(start)
    t_scheme, t_host, t_port = _origin(target)
    if t_scheme not in ("http", "https") or (s_scheme == "https" and t_scheme != "https"):
        return False  # never leave http(s), never downgrade to plain http
    if (t_scheme, t_host, t_port) == (s_scheme, s_host, s_port):
        return True
    for entry in allowed:
        host, port = _host_port(entry)
        if host == t_host and (port is None or port == t_port):
            return True
    return False


@dataclass(slots=True)
class _Fetched:
    url: str
    status: int
    headers: Any
    body: bytes


def _read_capped(r: Any, url: str, cap: int, deadline: float, what: str = "response") -> bytes:
    declared = r.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > cap:
        raise PullError(
            f"{url}: the {what} is {int(declared)} bytes, over the limit of {cap} bytes "
            "(raise it with --max-response-mb); nothing of this page was stored"
        )
    buf = bytearray()
    for chunk in r.iter_content(_CHUNK):
        buf += chunk
        if len(buf) > cap:
            raise PullError(
                f"{url}: the {what} passed the limit of {cap} bytes (raise it with --max-response-mb); "
                "nothing of this page was stored"
            )
        if time.monotonic() > deadline:
            raise PullError(f"{url}: the run's time limit ran out while reading the {what}")
    return bytes(buf)


def _fetch(
    s: Any, url: str, params: dict[str, Any], *, limits: PullLimits, deadline: float, timeout: float,
    verify: bool | str,
) -> _Fetched:  # fmt: skip
    """GET with redirects checked hop by hop and the body read under the size cap."""
    import requests

    current: str = url
    query: dict[str, Any] | None = params
    for _ in range(MAX_REDIRECTS + 1):
        try:
            r = s.get(current, params=query, timeout=timeout, verify=verify, allow_redirects=False, stream=True)
        except requests.RequestException as exc:
            raise PullError(f"cannot reach {current}: {exc}") from exc
        try:
            if r.is_redirect:
                target = urljoin(r.url or current, r.headers["Location"])
                if not _redirect_allowed(url, target, limits.allow_redirect_hosts):
                    raise PullError(
                        f"{current}: HTTP {r.status_code} redirect to {target} refused: it leaves {url}'s "
                        "scheme/host/port (allow a host with --allow-redirect-host HOST[:PORT])"
                    )
                current, query = target, None
                continue
            cap = limits.max_response_bytes if r.status_code < 400 else 64 * 1024
            try:
                body = _read_capped(r, current, cap, deadline)
            except requests.RequestException as exc:
                raise PullError(f"{current}: the response broke off: {exc}") from exc
            return _Fetched(current, r.status_code, r.headers, body)
        finally:
            r.close()
    raise PullError(f"{url}: more than {MAX_REDIRECTS} redirects")


@dataclass(slots=True)
class PullSummary:
    url: str
    collection: str
    pages: int = 0
    objects: int = 0
    new: int = 0
    resumed: bool = False
    added_after: str | None = None
    imported: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    import_error: str | None = None
    import_summary: dict[str, Any] | None = None
    #: why the run stopped with more to fetch (page or time limit), None when it read everything
    stopped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "collection": self.collection,
            "pages": self.pages,
            "objects": self.objects,
            "new": self.new,
            "resumed": self.resumed,
            "added_after": self.added_after,
            "imported": self.imported,
            "rejected": self.rejected,
            "import_error": self.import_error,
            "import": self.import_summary,
            "stopped": self.stopped,
        }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def checkpoint(store: Store, url: str, collection: str) -> tuple[str | None, str | None]:
    rows = store.query(
        "SELECT added_after, next_token FROM share_pull_checkpoints WHERE url = ? AND collection_id = ?",
        (url, collection),
    )
    return (rows[0][0], rows[0][1]) if rows else (None, None)


def _save_checkpoint(
    store: Store, url: str, collection: str, added_after: str | None, nxt: str | None, n: int, status: str
) -> None:
    rows = store.query(
        "SELECT objects FROM share_pull_checkpoints WHERE url = ? AND collection_id = ?", (url, collection)
    )
    total = (int(rows[0][0]) if rows else 0) + n
    store.execute("DELETE FROM share_pull_checkpoints WHERE url = ? AND collection_id = ?", (url, collection))
    store.execute(
        "INSERT INTO share_pull_checkpoints (url, collection_id, added_after, next_token, objects, last_run_at, "
        "status) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (url, collection, added_after, nxt, total, _now(), status),
    )


def objects_url(api_root: str, collection: str) -> str:
    base = api_root if api_root.endswith("/") else api_root + "/"
    return f"{base}collections/{collection}/objects/"


def pull(
    store: Store,
    api_root: str,
    collection: str,
    *,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    page_size: int = 500,
    max_pages: int | None = None,
    timeout: float = 60.0,
    verify: bool | str = True,
    session: Any = None,
    import_into_intel: bool = True,
    on_page: Callable[[int, int], None] | None = None,
    limits: PullLimits | None = None,
) -> PullSummary:
    """Pull new objects of one partner collection; see the module docstring.

    ``max_pages`` (when given) overrides ``limits.max_pages``. Raises :class:`PullError` naming
    the URL when the peer misbehaves; pages stored before stay stored and checkpointed.
    """
    import requests

    limits = limits or PullLimits()
    page_cap = max_pages if max_pages is not None else limits.max_pages
    if page_cap <= 0:
        raise PullError(f"max_pages must be positive, got {page_cap}")
    deadline = time.monotonic() + limits.max_seconds
    s = session or requests.Session()
    if token:
        s.headers["Authorization"] = f"Bearer {token}"
    elif user is not None:
        s.auth = (user, password or "")
    s.headers["Accept"] = TAXII_MEDIA_TYPE
    url = objects_url(api_root, collection)
    source = f"taxii:{url}"
    added_after, nxt = checkpoint(store, api_root, collection)
    summary = PullSummary(api_root, collection, resumed=nxt is not None, added_after=added_after)
    seen_next: set[str] = set()
    restarts = 0
    more = False
    while True:
        if summary.pages >= page_cap:
            if more:
                summary.stopped = f"page limit: stopped after {summary.pages} pages; run again to continue"
            break
        if time.monotonic() > deadline:
            summary.stopped = (
                f"time limit: stopped after {limits.max_seconds:g} s and {summary.pages} pages; run again to continue"
            )
            break
        params: dict[str, Any] = {"limit": page_size}
        if added_after:
            params["added_after"] = added_after
        if nxt:
            params["next"] = nxt
        # a page already being read when the time runs out gets up to `timeout` more seconds
        r = _fetch(s, url, params, limits=limits, deadline=deadline + timeout, timeout=timeout, verify=verify)
        if r.status == 400 and nxt:
            # a peer whose next tokens expire (medallion forgets them after 30 s): restart the
            # same added_after window without the token; objects already stored are skipped
            restarts += 1
            if restarts > _MAX_NEXT_RESTARTS:
                raise PullError(f"{url}: the peer rejected its own next token {restarts} times (HTTP 400)")
            nxt = None
            continue
        if r.status in (401, 403):
            raise PullError(f"{r.url}: HTTP {r.status} (check the credentials and the collection's permissions)")
        if r.status == 404:
            raise PullError(f"{r.url}: HTTP 404 (unknown API root or collection)")
        if r.status >= 300:
            raise PullError(f"{r.url}: HTTP {r.status}: {r.body[:300].decode('utf-8', 'replace')}")
        try:
            env = orjson.loads(r.body) if r.body else {}
        except orjson.JSONDecodeError as exc:
            raise PullError(f"{r.url}: the response is not JSON") from exc
        if not isinstance(env, dict) or not isinstance(env.get("objects", []), list):
            raise PullError(f"{r.url}: the response is not a TAXII envelope")
        objs = [o for o in env.get("objects", []) if isinstance(o, dict)]
        last_added = r.headers.get("X-TAXII-Date-Added-Last")
        more = bool(env.get("more"))
        new_next = str(env["next"]) if more and env.get("next") else None
        if new_next is not None:
            if new_next in seen_next or new_next == nxt:
                raise PullError(
                    f"{r.url}: the peer answered more=true with a next token it already gave ({new_next[:80]!r}): "
                    "it would loop forever; stopped at the last good page"
                )
            seen_next.add(new_next)
        elif more and last_added and last_added == added_after:
            raise PullError(
                f"{r.url}: the peer answered more=true without a next token and without advancing "
                f"X-TAXII-Date-Added-Last ({last_added}); stopped at the last good page"
            )
        new = _store_page(store, source, objs)
        if new_next is not None:
            nxt = new_next
        else:
            nxt, added_after = None, last_added or added_after
        status = "paging" if more else "complete"
        _save_checkpoint(store, api_root, collection, added_after, nxt, len(objs), status)
        store.commit()
        summary.pages += 1
        summary.objects += len(objs)
        summary.new += new
        if on_page is not None:
            on_page(summary.pages, summary.objects)
        if not more or (more and new_next is None and not last_added):
            more = False
            break
    summary.added_after = added_after
    if import_into_intel:
        import_pulled(store, summary)
    return summary


def _store_page(store: Store, source: str, objs: list[dict[str, Any]]) -> int:
    now = _now()
    new = 0
    for o in objs:
        oid = o.get("id")
        if not isinstance(oid, str):
            continue
        version = str(o.get("modified") or o.get("created") or "")
        if store.query(
            "SELECT 1 FROM share_pulled_objects WHERE source = ? AND stix_id = ? AND version = ?",
            (source, oid, version),
        ):
            continue
        store.execute(
            "INSERT INTO share_pulled_objects (source, stix_id, version, body, date_added, pulled_at, imported) "
            "VALUES (?, ?, ?, ?, ?, ?, 0)",
            (source, oid, version, orjson.dumps(o).decode(), None, now),
        )
        new += 1
    return new


def _importable(o: dict[str, Any]) -> str | None:
    """Why the intel importer would refuse ``o`` (None: it will take it)."""
    oid = o.get("id")
    typ = o.get("type")
    if not isinstance(oid, str) or not isinstance(typ, str) or oid.split("--", 1)[0] != typ:
        return "malformed id or type"
    if o.get("spec_version", "2.1") != "2.1":
        return f"spec_version {o.get('spec_version')!r}"
    if typ == "indicator" and (not isinstance(o.get("pattern"), str) or "valid_from" not in o):
        return "indicator without pattern or valid_from"
    if typ == "relationship" and not all(
        isinstance(o.get(k), str) for k in ("relationship_type", "source_ref", "target_ref")
    ):
        return "relationship without its refs"
    return None


def import_pulled(store: Store, summary: PullSummary | None = None) -> int:
    """Hand pulled, not yet imported objects to the intel importer; return how many went in."""
    rows = store.query("SELECT source, stix_id, version, body FROM share_pulled_objects WHERE imported = 0")
    if not rows:
        return 0
    try:
        from stormwatch.intel.importer import import_files
    except ImportError:  # pragma: no cover - the intel package is part of stormwatch
        if summary is not None:
            summary.import_error = "stormwatch.intel is not installed: objects kept in share_pulled_objects"
        return 0
    good: list[dict[str, Any]] = []
    keys_good: list[tuple[str, str, str]] = []
    for source, sid, version, body in rows:
        o = orjson.loads(body)
        why = _importable(o)
        if why is None:
            good.append(o)
            keys_good.append((source, sid, version))
        else:
            store.execute(
                "UPDATE share_pulled_objects SET imported = -1 WHERE source = ? AND stix_id = ? AND version = ?",
                (source, sid, version),
            )
            if summary is not None:
                summary.rejected.append({"id": str(sid), "reason": why})
    store.commit()
    if not good:
        return 0
    with tempfile.TemporaryDirectory(prefix="stormwatch-pull-") as tmp:
        path = Path(tmp) / "pulled-bundle.json"
        path.write_bytes(orjson.dumps({"type": "bundle", "id": "bundle--" + _uuid(), "objects": good}))
        try:
            result = import_files(store, [path])
        except InputError as exc:
            if summary is not None:
                summary.import_error = str(exc)
            return 0
    store.executemany(
        "UPDATE share_pulled_objects SET imported = 1 WHERE source = ? AND stix_id = ? AND version = ?", keys_good
    )
    store.commit()
    if summary is not None:
        summary.imported = len(good)
        summary.import_summary = result.to_dict()
    return len(good)


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())
