"""Take partners' intelligence in over TAXII 2.1: paged, checkpointed, resumable.

``pull(store, url, collection)`` pages a partner collection's objects (``limit`` per request,
following ``next``; ``added_after`` from the last run's ``X-TAXII-Date-Added-Last``) and commits
each page together with the checkpoint, so an interrupted pull resumes at the page it stopped at
and a finished one asks only for what was added since. Pulled objects land in
``share_pulled_objects`` and are then handed to the intel importer (``stormwatch.intel``), which
indexes indicators for the account analysis.

The TAXII requests are made by taxii2-client (:class:`taxii2client.v21.Collection`: URL and
filter encoding, ``Accept``, the response's media type, JSON) over a bounded transport
(:class:`BoundedSession`) that this module hands it as its session: the client library itself
follows any redirect, reads any body whole and does not expose the ``X-TAXII-Date-Added-*``
headers an incremental poller needs, so the transport keeps the last response's headers and
enforces the limits below.

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
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson

from stormwatch.errors import InputError, StormwatchError
from stormwatch.intel import TAXII_MEDIA_TYPE
from stormwatch.store import Store
from stormwatch.store.repos.intel import PULLED_IMPORTED, PULLED_REJECTED, PulledObject


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
    s: Any, url: str, params: dict[str, Any], *, headers: dict[str, str] | None = None, limits: PullLimits,
    deadline: float, timeout: float, verify: bool | str, origin: str | None = None,
) -> _Fetched:  # fmt: skip
    """GET with redirects checked hop by hop (against ``origin``, default ``url``) and the body capped."""
    import requests

    current: str = url
    start = origin or url
    query: dict[str, Any] | None = params
    for _ in range(MAX_REDIRECTS + 1):
        try:
            r = s.get(
                current, params=query, headers=headers, timeout=timeout, verify=verify, allow_redirects=False,
                stream=True,
            )  # fmt: skip
        except requests.RequestException as exc:
            raise PullError(f"cannot reach {current}: {exc}") from exc
        try:
            if r.is_redirect:
                target = urljoin(r.url or current, r.headers["Location"])
                if not _redirect_allowed(start, target, limits.allow_redirect_hosts):
                    raise PullError(
                        f"{current}: HTTP {r.status_code} redirect to {target} refused: it leaves {start}'s "
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


class BoundedSession:
    """The session taxii2-client sends its GETs through: redirects checked hop by hop, bodies capped.

    ``get`` answers a :class:`requests.Response` whose body was read under
    ``limits.max_response_bytes`` (64 KiB for an error) before the deadline; :attr:`last` keeps the
    last exchange (final URL, status, headers, body) for the caller.
    """

    def __init__(
        self, inner: Any, origin: str, *, limits: PullLimits, deadline: float, timeout: float, verify: bool | str
    ) -> None:
        self.inner = inner
        self.origin = origin
        self.limits = limits
        self.deadline = deadline
        self.timeout = timeout
        self.verify = verify
        self.last: _Fetched | None = None

    def get(self, url: str, headers: Any = None, params: Any = None, **_: Any) -> Any:
        import requests
        from requests.structures import CaseInsensitiveDict

        f = _fetch(
            self.inner, url, dict(params or {}), headers=dict(headers or {}), limits=self.limits,
            deadline=self.deadline, timeout=self.timeout, verify=self.verify, origin=self.origin,
        )  # fmt: skip
        self.last = f
        if 300 <= f.status < 400:
            raise PullError(f"{f.url}: HTTP {f.status} without a usable Location")
        if f.status < 300 and "Content-Type" not in f.headers:
            raise PullError(f"{f.url}: the response has no Content-Type (want {TAXII_MEDIA_TYPE})")
        resp = requests.Response()
        resp.status_code = f.status
        resp.headers = CaseInsensitiveDict(f.headers)
        resp.url = f.url
        resp.encoding = "utf-8"
        resp.request = requests.Request("GET", f.url).prepare()
        resp._content = f.body if f.body or f.status >= 300 else b"{}"  # an empty page is an empty envelope
        return resp

    def close(self) -> None:
        self.inner.close()


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


def checkpoint(store: Store, url: str, collection: str) -> tuple[str | None, str | None]:
    """``(added_after, next)`` where the next pull of ``collection`` at ``url`` starts."""
    cp = store.intel.checkpoint(url, collection)
    return (cp.added_after, cp.next_token) if cp is not None else (None, None)


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
    from taxii2client.common import _HTTPConnection
    from taxii2client.exceptions import InvalidJSONError, TAXIIServiceException
    from taxii2client.v21 import Collection

    limits = limits or PullLimits()
    page_cap = max_pages if max_pages is not None else limits.max_pages
    if page_cap <= 0:
        raise PullError(f"max_pages must be positive, got {page_cap}")
    if page_size <= 0:
        raise PullError(f"page_size must be positive, got {page_size}")
    deadline = time.monotonic() + limits.max_seconds
    s = session or requests.Session()
    if token:
        s.headers["Authorization"] = f"Bearer {token}"
    elif user is not None:
        s.auth = (user, password or "")
    url = objects_url(api_root, collection)
    source = f"taxii:{url}"
    # a page already being read when the time runs out gets up to `timeout` more seconds
    transport = BoundedSession(s, url, limits=limits, deadline=deadline + timeout, timeout=timeout, verify=verify)
    conn = _HTTPConnection(version="2.1")
    conn.session = transport
    # the collection's metadata is given, not fetched: one request per page, nothing else
    col = Collection(
        url[: -len("objects/")], conn=conn,
        collection_info={"id": collection, "title": collection, "can_read": True, "can_write": False},
    )  # fmt: skip
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
        try:
            env = col.get_objects(limit=page_size, added_after=added_after, next=nxt)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status == 400 and nxt:
                # a peer whose next tokens expire (medallion forgets them after 30 s): restart the
                # same added_after window without the token; objects already stored are skipped
                restarts += 1
                if restarts > _MAX_NEXT_RESTARTS:
                    raise PullError(
                        f"{url}: the peer rejected its own next token {restarts} times (HTTP 400)"
                    ) from None
                nxt = None
                continue
            raise _http_error(transport.last, url, status) from None
        except InvalidJSONError:
            raise PullError(f"{_last_url(transport, url)}: the response is not JSON") from None
        except TAXIIServiceException as exc:  # the peer answered with another media type
            raise PullError(f"{_last_url(transport, url)}: {str(exc).splitlines()[0]}") from None
        got_url = _last_url(transport, url)
        if not isinstance(env, dict) or not isinstance(env.get("objects", []), list):
            raise PullError(f"{got_url}: the response is not a TAXII envelope")
        objs = [o for o in env.get("objects", []) if isinstance(o, dict)]
        last_added = transport.last.headers.get("X-TAXII-Date-Added-Last") if transport.last else None
        more = bool(env.get("more"))
        new_next = str(env["next"]) if more and env.get("next") else None
        if new_next is not None:
            if new_next in seen_next or new_next == nxt:
                raise PullError(
                    f"{got_url}: the peer answered more=true with a next token it already gave ({new_next[:80]!r}): "
                    "it would loop forever; stopped at the last good page"
                )
            seen_next.add(new_next)
        elif more and last_added and last_added == added_after:
            raise PullError(
                f"{got_url}: the peer answered more=true without a next token and without advancing "
                f"X-TAXII-Date-Added-Last ({last_added}); stopped at the last good page"
            )
        new = store.intel.add_pulled(source, objs)
        if new_next is not None:
            nxt = new_next
        else:
            nxt, added_after = None, last_added or added_after
        store.intel.save_checkpoint(
            api_root, collection, added_after=added_after, next_token=nxt, new_objects=len(objs),
            status="paging" if more else "complete",
        )  # fmt: skip
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


def _last_url(transport: BoundedSession, default: str) -> str:
    return transport.last.url if transport.last is not None else default


def _http_error(last: _Fetched | None, url: str, status: int) -> PullError:
    where = last.url if last is not None else url
    if status in (401, 403):
        return PullError(f"{where}: HTTP {status} (check the credentials and the collection's permissions)")
    if status == 404:
        return PullError(f"{where}: HTTP 404 (unknown API root or collection)")
    body = last.body[:300].decode("utf-8", "replace") if last is not None else ""
    return PullError(f"{where}: HTTP {status}: {body}")


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
    from stormwatch.intel.importer import import_files

    pending = store.intel.pending_pulled()
    if not pending:
        return 0
    good: list[dict[str, Any]] = []
    kept: list[PulledObject] = []
    refused: list[PulledObject] = []
    for p in pending:
        o = orjson.loads(p.body)
        why = _importable(o)
        if why is None:
            good.append(o)
            kept.append(p)
        else:
            refused.append(p)
            if summary is not None:
                summary.rejected.append({"id": p.stix_id, "reason": why})
    store.intel.mark_pulled(refused, PULLED_REJECTED)
    store.commit()
    if not good:
        return 0
    with tempfile.TemporaryDirectory(prefix="stormwatch-pull-") as tmp:
        path = Path(tmp) / "pulled-bundle.json"
        path.write_bytes(orjson.dumps({"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": good}))
        try:
            result = import_files(store, [path])
        except InputError as exc:
            if summary is not None:
                summary.import_error = str(exc)
            return 0
    store.intel.mark_pulled(kept, PULLED_IMPORTED)
    store.commit()
    if summary is not None:
        summary.imported = len(good)
        summary.import_summary = result.to_dict()
    return len(good)
