"""The registry of detection models: which version is active, which run in shadow.

Every score in ``detections`` names the model version that produced it. A model is registered
with a status: ``active`` (one at a time: its scores drive flags and account judgements),
``candidate`` (scored in shadow on the same events, compared with ``stormwatch models compare``
before ``stormwatch models promote``) or ``retired``. The shipped first-tier artifact registers
itself as active the first time the store is scored.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from stormwatch.errors import InputError
from stormwatch.store.base import Store
from stormwatch.store.sql import now_iso

STATUSES = ("active", "candidate", "retired")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    version: str
    kind: str
    status: str
    metadata: dict[str, Any]
    created_at: str
    updated_at: str

    @property
    def path(self) -> str | None:
        """Where the artifact is. Shipped artifacts are found in the installed package by version."""
        if self.metadata.get("shipped"):
            from stormwatch.detect.data import model_dir

            shipped = model_dir() / f"{self.version}.json.gz"
            if shipped.is_file():
                return str(shipped)
        value = self.metadata.get("path")
        return str(value) if value else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _row(r: tuple[Any, ...]) -> ModelEntry:
    return ModelEntry(r[0], r[1], r[2], r[3], orjson.loads(r[4]) if r[4] else {}, r[5], r[6])


def list_models(store: Store, status: str | None = None) -> list[ModelEntry]:
    cols = "name, version, kind, status, metadata, created_at, updated_at"
    if status:
        rows = store.query(f"SELECT {cols} FROM models WHERE status = ? ORDER BY created_at, version", (status,))
    else:
        rows = store.query(f"SELECT {cols} FROM models ORDER BY created_at, version")
    return [_row(r) for r in rows]


def get_model(store: Store, version: str) -> ModelEntry | None:
    found = [m for m in list_models(store) if m.version == version]
    return found[0] if found else None


def register(
    store: Store, *, name: str, version: str, kind: str, status: str, metadata: dict[str, Any] | None = None
) -> ModelEntry:
    """Add a model version (or change its status). Making one active retires the previous one."""
    if status not in STATUSES:
        raise InputError(f"unknown model status {status!r}", hint=f"one of {', '.join(STATUSES)}")
    stamp = now_iso()
    if status == "active":
        store.execute(
            "UPDATE models SET status = 'retired', updated_at = ? WHERE status = 'active' AND version <> ?",
            (stamp, version),
        )
    meta = orjson.dumps(metadata or {}).decode()
    store.execute(
        "INSERT INTO models (name, version, kind, status, metadata, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name, version) DO UPDATE SET status = excluded.status, "
        "metadata = excluded.metadata, updated_at = excluded.updated_at",
        (name, version, kind, status, meta, stamp, stamp),
    )
    store.commit()
    entry = get_model(store, version)
    assert entry is not None
    return entry


def ensure_active(store: Store) -> ModelEntry:
    """The active model, registering the shipped first-tier artifact when none is active.

    When the active model was the artifact shipped with an earlier stormwatch and this install
    ships another, the new one becomes active (the old one is retired and stays listed): scores
    keep naming the version that produced them, and the next scoring run rescores with the new one.
    """
    active = list_models(store, "active")
    if active:
        entry = active[-1]
        where = entry.path
        if where is not None and Path(where).is_file():
            return entry
        if not entry.metadata.get("shipped"):
            raise InputError(
                f"the active model {entry.version} is missing: {where}",
                hint="put the artifact back, or `stormwatch models promote VERSION` another one",
            )
        log.warning("shipped model %s is not installed any more; switching to this install's model", entry.version)
    from stormwatch.detect.data import model_dir
    from stormwatch.detect.model import default_model_path, load_model

    path = default_model_path()
    model = load_model(path)
    return register(
        store,
        name="first_tier",
        version=model.version,
        kind="first_tier",
        status="active",
        metadata={"path": str(path), "shipped": path.parent == model_dir()},
    )


def register_artifact(store: Store, path: Path, status: str = "candidate") -> ModelEntry:
    """Register a first-tier artifact built by ``stormwatch train --out PATH``."""
    from stormwatch.detect.model import load_model

    if not path.is_file():
        raise InputError(f"{path}: no such model file", hint="build one with `stormwatch train --out PATH`")
    try:
        model = load_model(path)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a first-tier model artifact: {exc}") from exc
    known = get_model(store, model.version)
    if known is not None and known.status == "active" and status != "active":
        # The same content as the active model: registering it as a candidate would demote the active one.
        return known
    return register(
        store,
        name="first_tier",
        version=model.version,
        kind="first_tier",
        status=status,
        metadata={"path": str(path.resolve())},
    )


def scoring_models(store: Store) -> list[ModelEntry]:
    """The active model first, then every candidate (scored in shadow)."""
    return [ensure_active(store), *list_models(store, "candidate")]
