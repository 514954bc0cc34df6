"""Take partners' intelligence in over TAXII 2.1: paged, checkpointed, resumable.

``pull(store, url, collection)`` pages a partner collection's objects (``limit`` per request,
following ``next``; ``added_after`` from the last run's ``X-TAXII-Date-Added-Last``) and commits
each page together with the checkpoint, so an interrupted pull resumes at the page it stopped at
and a finished one asks only for what was added since. Pulled objects land in
``share_pulled_objects`` and are then handed to the intel importer (``stormwatch.intel``), which
indexes indicators for the account analysis.

Raw HTTP (requests) rather than taxii2-client: the client library does not expose the
``X-TAXII-Date-Added-*`` headers an incremental poller needs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from stormwatch.errors import InputError, StormwatchError
from stormwatch.share import TAXII_MEDIA_TYPE
from stormwatch.store import Store


class PullError(StormwatchError):
    pass


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
) -> PullSummary:
    """Pull new objects of one partner collection; see the module docstring."""
    import requests

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
    while max_pages is None or summary.pages < max_pages:
        params: dict[str, Any] = {"limit": page_size}
        if added_after:
            params["added_after"] = added_after
        if nxt:
            params["next"] = nxt
        try:
            r = s.get(url, params=params, timeout=timeout, verify=verify)
        except requests.RequestException as exc:
            raise PullError(f"cannot reach {url}: {exc}") from exc
        if r.status_code == 400 and nxt:
            # a peer whose next tokens expire (medallion forgets them after 30 s): restart the
            # same added_after window without the token; objects already stored are skipped
            nxt = None
            continue
        if r.status_code in (401, 403):
            raise PullError(f"{url}: HTTP {r.status_code} (check the credentials and the collection's permissions)")
        if r.status_code == 404:
            raise PullError(f"{url}: HTTP 404 (unknown API root or collection)")
        if r.status_code >= 400:
            raise PullError(f"{url}: HTTP {r.status_code}: {r.text[:300]}")
        try:
            env = orjson.loads(r.content) if r.content else {}
        except orjson.JSONDecodeError as exc:
            raise PullError(f"{url}: the response is not JSON") from exc
        objs = [o for o in env.get("objects", []) if isinstance(o, dict)]
        last_added = r.headers.get("X-TAXII-Date-Added-Last")
        new = _store_page(store, source, objs)
        more = bool(env.get("more"))
        if more and env.get("next"):
            nxt = str(env["next"])
        elif more:
            nxt, added_after = None, last_added or added_after
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
        if not more or (more and not env.get("next") and not last_added):
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
