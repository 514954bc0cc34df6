"""The registry of detection models: which version is active, which run in shadow.

Every score in ``detections`` names the model version that produced it. A model is registered
with a status: ``active`` (one at a time: its scores drive flags and account judgements),
``candidate`` (scored in shadow on the same events, compared with ``stormwatch models compare``
before ``stormwatch models promote``) or ``retired``.

A model has a *kind*, the detectors of :mod:`stormwatch.detect.scorer` that score with it:

* ``first_tier``: a first-tier artifact (metadata ``path``);
* ``cascade``: first tier -> gate -> encoder -> combiner (metadata ``path``: the first-tier
  artifact, ``encoder``: the encoder folder holding ``combiner.json``, ``parts``: each part's
  version); its version names every part (``cascade-<series>+first_tier-...+encoder-...+combiner-...``);
* ``encoder``: the second tier alone (metadata ``encoder``; for evaluation).

``shipped: true`` in the metadata means the parts are found in the installed package by version.

The registry decides what ``stormwatch score`` / ``analyze`` score with. Only a store with no
active model takes its first one from the settings (``[detect] detectors`` in ``stormwatch.toml``,
``STORMWATCH_DETECTORS``; default the first tier, to which account judgement is fitted): the
shipped first tier, or the shipped cascade when the settings ask for it, becomes active. A store
whose active model is the shipped first tier keeps it; ``stormwatch models add-cascade`` registers
the shipped cascade as a candidate (shadow), and ``models promote`` switches.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stormwatch.errors import InputError
from stormwatch.store.base import Store
from stormwatch.store.repos.detections import MODEL_STATUSES, ModelRecord

STATUSES = MODEL_STATUSES
KINDS = ("first_tier", "cascade", "encoder")
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
    def parts(self) -> dict[str, str]:
        """Each part's version (a first-tier model is its own only part)."""
        parts = self.metadata.get("parts")
        if isinstance(parts, dict):
            return {str(k): str(v) for k, v in parts.items()}
        return {self.kind: self.version}

    @property
    def path(self) -> str | None:
        """The first-tier artifact (None for the encoder alone). Shipped ones are found in the
        installed package by version."""
        if self.kind == "encoder":
            return None
        if self.metadata.get("shipped"):
            from stormwatch.detect.data import model_dir

            shipped = model_dir() / f"{self.parts.get('first_tier', self.version)}.json.gz"
            if shipped.is_file():
                return str(shipped)
        value = self.metadata.get("path")
        return str(value) if value else None

    @property
    def encoder_path(self) -> str | None:
        """The encoder folder (``cascade`` and ``encoder`` kinds; None for the first tier)."""
        if self.kind == "first_tier":
            return None
        if self.metadata.get("shipped") and "encoder" in self.parts:
            from stormwatch.detect.data import model_dir

            shipped = model_dir() / self.parts["encoder"]
            if shipped.is_dir():
                return str(shipped)
        value = self.metadata.get("encoder")
        return str(value) if value else None

    def missing(self) -> str | None:
        """The first part that is not where the registry says (a path, or a description), else None."""
        if self.kind not in KINDS:
            return f"model kind {self.kind!r} (this stormwatch knows {', '.join(KINDS)})"
        if self.kind != "encoder":
            path = self.path
            if path is None or not Path(path).is_file():
                return str(path)
        if self.kind != "first_tier":
            folder = self.encoder_path
            if folder is None or not Path(folder).is_dir():
                return str(folder)
            if self.kind == "cascade" and "combiner" in self.parts:
                combiner = Path(folder) / "combiner.json"
                try:
                    found = json.loads(combiner.read_text(encoding="utf-8")).get("version")
                except (OSError, ValueError, AttributeError):
                    found = None
                if found != self.parts["combiner"]:
                    return f"{combiner} ({self.parts['combiner']})"
        return None

    def load(self) -> Any:
        """The scorer (first tier's interface) for this entry; its version must be the registered one."""
        from stormwatch.detect.scorer import load_scorer

        if self.kind not in KINDS:
            raise InputError(f"model {self.version}: unknown kind {self.kind!r}", hint=f"one of {', '.join(KINDS)}")
        try:
            scorer = load_scorer(self.kind, model_path=self.path, encoder_path=self.encoder_path, asked=True)
        except FileNotFoundError as exc:
            raise InputError(f"model {self.version}: {exc}", hint="see `stormwatch models list`") from exc
        if scorer.version != self.version:
            raise InputError(
                f"model {self.version}: the artifact found is version {scorer.version}",
                hint="the files changed after registration: register them again (`stormwatch models add ...`)",
            )
        return scorer

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


def kind_of(scorer: Any) -> str:
    """The registry kind of a scorer returned by :func:`stormwatch.detect.scorer.load_scorer`."""
    from stormwatch.detect.cascade import CascadeModel
    from stormwatch.detect.scorer import EncoderOnly

    if isinstance(scorer, CascadeModel):
        return "cascade"
    if isinstance(scorer, EncoderOnly):
        return "encoder"
    return "first_tier"


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().parent == folder.resolve()


def register_detectors(
    store: Store,
    name: str,
    status: str = "candidate",
    *,
    asked: bool = True,
    model_path: Path | None = None,
    encoder_path: Path | None = None,
) -> ModelEntry:
    """Register the detectors ``name`` (``cascade``, ``first_tier``, ``encoder``) built from the
    given parts, by default the shipped ones. ``asked=False``: the cascade falls back to the first
    tier (with a warning) where the encoder is not installed. The active model's own version, added
    as a candidate, leaves it active."""
    from stormwatch.detect.data import model_dir
    from stormwatch.detect.model import default_model_path
    from stormwatch.detect.scorer import load_scorer

    try:
        scorer = load_scorer(name, model_path=model_path, encoder_path=encoder_path, asked=asked)
    except FileNotFoundError as exc:
        raise InputError(str(exc), hint="install the package data again, or give the artifact's path") from exc
    kind = kind_of(scorer)
    here = model_dir()
    metadata: dict[str, Any] = {}
    shipped = True
    if kind != "encoder":
        first = Path(model_path) if model_path is not None else default_model_path()
        metadata["path"] = str(first.resolve())
        shipped = shipped and _inside(first, here)
    if kind != "first_tier":
        folder = Path(scorer.encoder.folder)
        metadata["encoder"] = str(folder.resolve())
        metadata["parts"] = dict(scorer.parts) if kind == "cascade" else {"encoder": scorer.version}
        shipped = shipped and _inside(folder, here)
    metadata["shipped"] = shipped
    metadata["presets"] = {k: float(v) for k, v in scorer.thresholds.items()}  # analyze.scale reads them
    known = get_model(store, scorer.version)
    if known is not None and known.status == "active" and status != "active":
        return known  # registering it as a candidate would demote the active model
    return register(store, name=kind, version=scorer.version, kind=kind, status=status, metadata=metadata)


def ensure_active(store: Store, settings: Any = None) -> ModelEntry:
    """The active model; a store without one gets the shipped detectors the settings choose
    (``detectors``: default ``cascade``, else the first tier; see the module doc).

    When the active model was shipped with an earlier stormwatch and this install ships another,
    this install's model of the same kind becomes active (the old one is retired and stays
    listed): scores keep naming the version that produced them, and the next scoring run rescores
    with the new one. A model you registered yourself is never replaced behind your back.
    """
    from stormwatch.detect.scorer import resolve_detectors

    active = list_models(store, "active")
    if active:
        entry = active[-1]
        where = entry.missing()
        if where is None:
            return entry
        if not entry.metadata.get("shipped"):
            raise InputError(
                f"the active model {entry.version} is missing: {where}",
                hint="put the artifact back, or `stormwatch models promote VERSION` another one",
            )
        log.warning("shipped model %s is not installed any more; switching to this install's model", entry.version)
        if entry.kind in KINDS:
            return register_detectors(store, entry.kind, "active", asked=False)
    if settings is None:
        from stormwatch.detect.settings import load_settings

        settings = load_settings()
    name, asked = resolve_detectors(getattr(settings, "detectors", None))
    return register_detectors(store, name, "active", asked=asked)


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
        metadata={"path": str(path.resolve()), "presets": {k: float(v) for k, v in model.thresholds.items()}},
    )


def scoring_models(store: Store, settings: Any = None) -> list[ModelEntry]:
    """The active model first, then every candidate (scored in shadow)."""
    return [ensure_active(store, settings), *list_models(store, "candidate")]
