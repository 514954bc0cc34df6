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

from stormwatch.errors import InputError
from stormwatch.store.base import Store
from stormwatch.store.repos.detections import MODEL_STATUSES, ModelRecord

STATUSES = MODEL_STATUSES
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


def _entry(r: ModelRecord) -> ModelEntry:
    return ModelEntry(r.name, r.version, r.kind, r.status, r.metadata, r.created_at, r.updated_at)


def list_models(store: Store, status: str | None = None) -> list[ModelEntry]:
    return [_entry(r) for r in store.detections.models(status)]


def get_model(store: Store, version: str) -> ModelEntry | None:
    found = store.detections.model(version)
    return None if found is None else _entry(found)


def register(
    store: Store, *, name: str, version: str, kind: str, status: str, metadata: dict[str, Any] | None = None
) -> ModelEntry:
    """Add a model version (or change its status). Making one active retires the previous one."""
    if status not in STATUSES:
        raise InputError(f"unknown model status {status!r}", hint=f"one of {', '.join(STATUSES)}")
    return _entry(
        store.detections.register_model(name=name, version=version, kind=kind, status=status, metadata=metadata)
    )


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
    """Register a first-tier artifact built by ``stormwatch train -o FILE``."""
    from stormwatch.detect.model import load_model

    if not path.is_file():
        raise InputError(f"{path}: no such model file", hint="build one with `stormwatch train -o FILE`")
    try:
        model = load_model(path)
    except InputError:
        raise  # already names the file and the reason
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
