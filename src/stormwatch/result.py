"""The one analysis result: what ``stormwatch analyze`` concluded, and the account graph it read.

Everything downstream reads these records: the store's analysis repository writes and reads them
(``store.analysis``), ``disrupt`` evaluates policies over them, ``intel`` exports findings built from
them, the API and the ``accounts`` / ``clusters`` commands show them. A new field is added here (and
in the repository's columns) and nowhere else.

* :class:`Judgement` - one account: risk (0..1), level (``none`` / ``review`` / ``enforce``;
  ``flagged`` is ``level == "enforce"``), the actor named (``actor``, its STIX ``actor_ref``), the
  attribution ``confidence`` (always 0..1) and its band, the cluster, TTP shares, the
  :class:`Evidence` items and the risk explanation; for ``review`` its place in the review queue
  (``review_rank``, 1 = first) and whether that is ``within_budget``; the ``exemption`` that
  holds it (an exempt account is never ``enforce``).
* :class:`Cluster` - linked accounts: members, the actor named, confidence, its band, a
  :class:`ClusterEvidence` summary and (on detail reads) its :class:`LinkEdge` edges.
* :class:`AnalysisResult` - one run: judgements, clusters, link edges, model version, time, counts.
  ``to_dict()`` / ``from_dict()`` give a versioned JSON document (``schema``).

The input side, :class:`AccountGraph`, holds what the algorithms need (account records, their
network / key observations, per-account features, intel hits, intrusion sets), so a file or another
engine can feed ``stormwatch.analyze`` instead of the store.

This module imports only the standard library and :mod:`stormwatch.errors` (layer 1).

Why this module is long: it is the whole contract between analyze and its readers, input and output,
with the validation of every field (a bad value raises :class:`~stormwatch.errors.InputError` naming
it) and the JSON mapping; splitting it would split that contract.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stormwatch.errors import InputError

__all__ = [
    "LEVELS",
    "SCHEMA",
    "AccountFacts",
    "AccountGraph",
    "AccountState",
    "AnalysisResult",
    "Cluster",
    "ClusterEvidence",
    "Evidence",
    "IntelHit",
    "Judgement",
    "LinkEdge",
    "Observation",
]

SCHEMA = "stormwatch.analysis-result/1"
GRAPH_SCHEMA = "stormwatch.account-graph/1"
#: account levels, mildest first; ``flagged`` means ``enforce``
LEVELS = ("none", "review", "enforce")
#: a TTP counts for policies (``Judgement.ttp_ids``) from this share of the account's TTP mass
TTP_MIN_SHARE = 0.05


def _unit(name: str, value: Any, *, optional: bool = False) -> float | None:
    """``value`` as a float in 0..1 (InputError otherwise)."""
    if value is None:
        if optional:
            return None
        raise InputError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{name} must be a number in 0..1, got {value!r}")
    x = float(value)
    if math.isnan(x) or not 0.0 <= x <= 1.0:
        raise InputError(f"{name} must be in 0..1, got {value!r}")
    return x


def _str(name: str, value: Any, *, optional: bool = True) -> str | None:
    if value is None:
        if optional:
            return None
        raise InputError(f"{name} is required")
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {type(value).__name__}")
    if not optional and not value:
        raise InputError(f"{name} must not be empty")
    return value


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{name} must be an object, got {type(value).__name__}")
    return value


def _list(name: str, value: Any) -> Sequence[Any]:
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InputError(f"{name} must be a list, got {type(value).__name__}")
    return value


# -- the result -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evidence:
    """One item an analyst can open; ``data`` holds the kind's own fields (see analyze/evidence.py):

    ``indicator_hit`` (indicator_id, indicator_name, intrusion_sets, account_id, observable, n,
    first_ts, last_ts, degree, strength), ``link`` (account_a, account_b, link_kind, value, weight),
    ``behaviour`` (signal, ...), ``content`` (event_ids, scores, high_events, ttps).
    """

    kind: str
    text: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _str("evidence kind", self.kind, optional=False)
        _str("evidence text", self.text)
        if "kind" in self.data or "text" in self.data:
            raise InputError("evidence data must not repeat kind or text")

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.data, "text": self.text}

    @classmethod
    def from_dict(cls, d: Any) -> Evidence:
        d = _mapping("evidence item", d)
        data = {k: v for k, v in d.items() if k not in ("kind", "text")}
        return cls(kind=d.get("kind"), text=d.get("text") or "", data=data)


def evidence_items(value: Any) -> tuple[Evidence, ...]:
    return tuple(Evidence.from_dict(x) for x in _list("evidence", value))


@dataclass(frozen=True, slots=True)
class Judgement:
    """What analysis concluded about one account."""

    account_id: str
    risk: float
    level: str = "none"
    cluster_id: str | None = None
    actor: str | None = None
    actor_ref: str | None = None  # the STIX intrusion-set id; None for a behaviour profile
    confidence: float | None = None  # attribution confidence, 0..1
    confidence_label: str | None = None  # low | medium | high
    ttps: Mapping[str, float] = field(default_factory=dict)  # TTP id -> share of the account's TTP mass
    evidence: tuple[Evidence, ...] = ()
    explanation: Mapping[str, Any] = field(default_factory=dict)
    model_version: str | None = None
    analyzed_at: str | None = None
    review_rank: int | None = None  # place in the review queue (1 = first); only at ``review``
    within_budget: bool | None = None  # the rank is within the review budget (set with review_rank)
    #: the exemption that holds the account (match, value, reason, granted_by, expires, source, and
    #: held_back: true when analysis would otherwise have enforced it)
    exemption: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        _str("account_id", self.account_id, optional=False)
        _unit("risk", self.risk)
        _unit("confidence", self.confidence, optional=True)
        if self.level not in LEVELS:
            raise InputError(f"level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        if self.review_rank is not None:
            if isinstance(self.review_rank, bool) or not isinstance(self.review_rank, int) or self.review_rank < 1:
                raise InputError(f"review_rank must be a whole number >= 1, got {self.review_rank!r}")
            if self.level != "review":
                raise InputError(f"account {self.account_id!r}: review_rank is only given at level review")
            if not isinstance(self.within_budget, bool):
                raise InputError(f"account {self.account_id!r}: a ranked account says whether it is within_budget")
        elif self.within_budget is not None:
            raise InputError(f"account {self.account_id!r}: within_budget without a review_rank")
        if self.exemption is not None:
            if not isinstance(self.exemption, Mapping) or not self.exemption.get("reason"):
                raise InputError(f"account {self.account_id!r}: an exemption is an object with a reason")
            if self.level == "enforce":
                raise InputError(f"account {self.account_id!r}: an exempt account is never enforced")
        for k, v in self.ttps.items():
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int | float):
                raise InputError(f"ttps must map TTP ids to shares, got {k!r}: {v!r}")

    @property
    def flagged(self) -> bool:
        return self.level == "enforce"

    @property
    def exempt(self) -> bool:
        return self.exemption is not None

    def ttp_ids(self, min_share: float = TTP_MIN_SHARE) -> tuple[str, ...]:
        """TTP ids holding at least ``min_share`` of the account's TTP mass, sorted."""
        return tuple(sorted(k for k, v in self.ttps.items() if v >= min_share))

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "risk": self.risk,
            "flagged": self.flagged,
            "level": self.level,
            "cluster_id": self.cluster_id,
            "actor": self.actor,
            "actor_ref": self.actor_ref,
            "confidence": self.confidence,
            "confidence_label": self.confidence_label,
            "ttps": dict(self.ttps),
            "evidence": [e.to_dict() for e in self.evidence],
            "explanation": dict(self.explanation),
            "analyzed_at": self.analyzed_at,
            "model_version": self.model_version,
            "review_rank": self.review_rank,
            "within_budget": self.within_budget,
            "exempt": self.exempt,
            "exemption": None if self.exemption is None else dict(self.exemption),
        }

    @classmethod
    def from_dict(cls, d: Any) -> Judgement:
        d = _mapping("judgement", d)
        level = d.get("level")
        if level is None:
            level = "enforce" if d.get("flagged") else "none"
        elif "flagged" in d and bool(d["flagged"]) != (level == "enforce"):
            raise InputError(f"judgement {d.get('account_id')!r}: flagged contradicts level {level!r}")
        conf = d.get("confidence")
        return cls(
            account_id=d.get("account_id"),
            risk=d.get("risk"),
            level=level,
            cluster_id=_str("cluster_id", d.get("cluster_id")),
            actor=_str("actor", d.get("actor")),
            actor_ref=_str("actor_ref", d.get("actor_ref")),
            confidence=conf,
            confidence_label=_str("confidence_label", d.get("confidence_label")),
            ttps=dict(_mapping("ttps", d.get("ttps"))),
            evidence=evidence_items(d.get("evidence")),
            explanation=dict(_mapping("explanation", d.get("explanation"))),
            model_version=_str("model_version", d.get("model_version")),
            analyzed_at=_str("analyzed_at", d.get("analyzed_at")),
            review_rank=d.get("review_rank"),
            within_budget=d.get("within_budget"),
            exemption=None if d.get("exemption") is None else dict(_mapping("exemption", d.get("exemption"))),
        )


@dataclass(frozen=True, slots=True)
class LinkEdge:
    """One link inside a cluster: two accounts share ``kind`` ``value`` with link ``weight``."""

    cluster_id: str
    account_a: str
    account_b: str
    kind: str
    value: str
    weight: float

    def __post_init__(self) -> None:
        for name in ("cluster_id", "account_a", "account_b", "kind"):
            _str(name, getattr(self, name), optional=False)
        if not isinstance(self.value, str):
            raise InputError(f"link edge value must be a string, got {type(self.value).__name__}")
        _unit("weight", self.weight)

    def to_dict(self, *, with_cluster: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"account_a": self.account_a, "account_b": self.account_b, "kind": self.kind}
        out |= {"value": self.value, "weight": self.weight}
        return {"cluster_id": self.cluster_id, **out} if with_cluster else out

    @classmethod
    def from_dict(cls, d: Any) -> LinkEdge:
        d = _mapping("link edge", d)
        return cls(d.get("cluster_id"), d.get("account_a"), d.get("account_b"), d.get("kind"), d.get("value"),
                   d.get("weight"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class ClusterEvidence:
    """Why a cluster holds together and what points at its actor."""

    link_kinds: Mapping[str, int] = field(default_factory=dict)  # link kind -> strong edges of that kind
    indicator_hits: tuple[Evidence, ...] = ()  # members' indicator hits (first 100)
    behaviour: Mapping[str, Any] | None = None  # the cluster's fit to the actor's profile
    members_with_hits: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "link_kinds": dict(self.link_kinds),
            "indicator_hits": [h.to_dict() for h in self.indicator_hits],
            "behaviour": None if self.behaviour is None else dict(self.behaviour),
            "members_with_hits": self.members_with_hits,
        }

    @classmethod
    def from_dict(cls, d: Any) -> ClusterEvidence:
        d = _mapping("cluster evidence", d)
        beh = d.get("behaviour")
        return cls(
            link_kinds={str(k): int(v) for k, v in _mapping("link_kinds", d.get("link_kinds")).items()},
            indicator_hits=evidence_items(d.get("indicator_hits")),
            behaviour=None if beh is None else dict(_mapping("behaviour", beh)),
            members_with_hits=int(d.get("members_with_hits") or 0),
        )


@dataclass(frozen=True, slots=True)
class Cluster:
    """Accounts linked through rare shared infrastructure, and the actor it is attributed to."""

    cluster_id: str
    members: tuple[str, ...]
    actor: str | None = None
    actor_ref: str | None = None
    confidence: float | None = None  # 0..1
    confidence_label: str | None = None
    flagged_accounts: int = 0
    evidence: ClusterEvidence = field(default_factory=ClusterEvidence)
    updated_at: str | None = None
    size: int = -1  # defaults to len(members)
    edges: tuple[LinkEdge, ...] = ()  # filled by detail reads; a result keeps them in AnalysisResult.links

    def __post_init__(self) -> None:
        _str("cluster_id", self.cluster_id, optional=False)
        _unit("confidence", self.confidence, optional=True)
        if self.size < 0:
            object.__setattr__(self, "size", len(self.members))
        if self.flagged_accounts < 0:
            raise InputError("flagged_accounts must be >= 0")

    @property
    def label(self) -> str | None:
        return self.confidence_label

    def to_dict(self, *, members: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cluster_id": self.cluster_id,
            "size": self.size,
            "actor": self.actor,
            "actor_ref": self.actor_ref,
            "confidence": self.confidence,
            "confidence_label": self.confidence_label,
            "flagged_accounts": self.flagged_accounts,
            "evidence": self.evidence.to_dict(),
            "updated_at": self.updated_at,
        }
        if members:
            out["members"] = list(self.members)
        return out

    @classmethod
    def from_dict(cls, d: Any) -> Cluster:
        d = _mapping("cluster", d)
        members = tuple(str(m) for m in _list("members", d.get("members")))
        return cls(
            cluster_id=d.get("cluster_id"),
            members=members,
            actor=_str("actor", d.get("actor")),
            actor_ref=_str("actor_ref", d.get("actor_ref")),
            confidence=d.get("confidence"),
            confidence_label=_str("confidence_label", d.get("confidence_label")),
            flagged_accounts=int(d.get("flagged_accounts") or 0),
            evidence=ClusterEvidence.from_dict(d.get("evidence")),
            updated_at=_str("updated_at", d.get("updated_at")),
            size=int(d["size"]) if d.get("size") is not None else len(members),
        )


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    """One analysis run: every account's judgement, the clusters and the link edges behind them."""

    judgements: tuple[Judgement, ...]
    clusters: tuple[Cluster, ...] = ()
    links: tuple[LinkEdge, ...] = ()
    model_version: str | None = None
    analyzed_at: str | None = None
    #: counts of the run: accounts, clusters, enforce, review, attributed, intel_hit_accounts,
    #: active_accounts, review_budget, review_within_budget, exempt, exempt_held_back, raised_by_model,
    #: review_likely_beyond_budget
    stats: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for j in self.judgements:
            if j.account_id in seen:
                raise InputError(f"account {j.account_id!r} is judged twice")
            seen.add(j.account_id)
        cids = [c.cluster_id for c in self.clusters]
        if len(set(cids)) != len(cids):
            raise InputError("a cluster id appears twice")
        known = set(cids)
        for e in self.links:
            if e.cluster_id not in known:
                raise InputError(f"link edge names unknown cluster {e.cluster_id!r}")

    def counts(self) -> dict[str, int]:
        """``stats`` completed from the records (accounts, clusters, enforce, review, attributed)."""
        out = {
            "accounts": len(self.judgements),
            "clusters": len(self.clusters),
            "enforce": sum(j.level == "enforce" for j in self.judgements),
            "review": sum(j.level == "review" for j in self.judgements),
            "attributed": sum(j.actor is not None for j in self.judgements),
        }
        return {**out, **self.stats}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model_version": self.model_version,
            "analyzed_at": self.analyzed_at,
            "stats": dict(self.stats),
            "judgements": [j.to_dict() for j in self.judgements],
            "clusters": [c.to_dict() for c in self.clusters],
            "links": [e.to_dict() for e in self.links],
        }

    @classmethod
    def from_dict(cls, d: Any) -> AnalysisResult:
        d = _mapping("analysis result", d)
        schema = d.get("schema", SCHEMA)
        if schema != SCHEMA:
            raise InputError(f"unsupported analysis result schema {schema!r}", hint=f"expected {SCHEMA}")
        return cls(
            judgements=tuple(Judgement.from_dict(j) for j in _list("judgements", d.get("judgements"))),
            clusters=tuple(Cluster.from_dict(c) for c in _list("clusters", d.get("clusters"))),
            links=tuple(LinkEdge.from_dict(e) for e in _list("links", d.get("links"))),
            model_version=_str("model_version", d.get("model_version")),
            analyzed_at=_str("analyzed_at", d.get("analyzed_at")),
            stats={str(k): int(v) for k, v in _mapping("stats", d.get("stats")).items()},
        )


# -- the input: an in-memory account graph -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """The account record fields that link accounts (device, card, phone, sign-up IP, domain, org), and its status."""

    account_id: str
    created_at: str | None = None
    device_id: str | None = None
    payment_fingerprint: str | None = None
    phone_hash: str | None = None
    signup_ip: str | None = None
    email_domain: str | None = None
    org_id: str | None = None
    status: str | None = None  # not used for linking; policies read it


@dataclass(frozen=True, slots=True)
class Observation:
    """An account seen with a request IP or API key (``kind`` ``ip`` / ``api_key``), first..last use."""

    account_id: str
    kind: str
    value: str
    first_ts: str | None = None
    last_ts: str | None = None


@dataclass(frozen=True, slots=True)
class AccountState:
    """Per-account features computed from its events (``features`` as analyze/features.py builds it)."""

    account_id: str
    n_events: int
    content_score: float
    ttp_breadth: int
    rephrases: int
    features: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IntelHit:
    """A partner indicator matched an account's observable."""

    account_id: str
    indicator_id: str
    kind: str
    value: str
    n: int
    first_ts: str | None
    last_ts: str | None
    degree: int
    strength: float
    intrusion_sets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AccountGraph:
    """Everything the linking, attribution and risk algorithms read, in memory.

    Order matters for reproducibility: values are numbered in the order observations are given.
    """

    accounts: tuple[AccountFacts, ...] = ()
    observations: tuple[Observation, ...] = ()
    states: tuple[AccountState, ...] = ()
    hits: tuple[IntelHit, ...] = ()
    intrusion_sets: tuple[Mapping[str, Any], ...] = ()  # STIX intrusion-set objects (not revoked)
    indicator_names: Mapping[str, str | None] = field(default_factory=dict)

    def account_ids(self) -> list[str]:
        """Every account (with a record or with features), sorted."""
        return sorted({a.account_id for a in self.accounts} | {s.account_id for s in self.states})

    def to_dict(self) -> dict[str, Any]:
        def plain(x: Any) -> dict[str, Any]:
            return {f: (list(v) if isinstance(v, tuple) else v) for f in x.__slots__ for v in [getattr(x, f)]}

        return {
            "schema": GRAPH_SCHEMA,
            "accounts": [plain(a) for a in self.accounts],
            "observations": [plain(o) for o in self.observations],
            "states": [{**plain(s), "features": dict(s.features)} for s in self.states],
            "hits": [plain(h) for h in self.hits],
            "intrusion_sets": [dict(o) for o in self.intrusion_sets],
            "indicator_names": dict(self.indicator_names),
        }

    @classmethod
    def from_dict(cls, d: Any) -> AccountGraph:
        d = _mapping("account graph", d)
        if d.get("schema", GRAPH_SCHEMA) != GRAPH_SCHEMA:
            raise InputError(f"unsupported account graph schema {d.get('schema')!r}", hint=f"expected {GRAPH_SCHEMA}")

        def build(kind: type[Any], items: Iterable[Any]) -> tuple[Any, ...]:
            out = []
            for x in items:
                x = dict(_mapping(kind.__name__, x))
                if "intrusion_sets" in x:
                    x["intrusion_sets"] = tuple(x["intrusion_sets"] or ())
                try:
                    out.append(kind(**x))
                except TypeError as exc:
                    raise InputError(f"bad {kind.__name__}: {exc}") from exc
            return tuple(out)

        return cls(
            accounts=build(AccountFacts, _list("accounts", d.get("accounts"))),
            observations=build(Observation, _list("observations", d.get("observations"))),
            states=build(AccountState, _list("states", d.get("states"))),
            hits=build(IntelHit, _list("hits", d.get("hits"))),
            intrusion_sets=tuple(
                dict(_mapping("intrusion set", o)) for o in _list("intrusion_sets", d.get("intrusion_sets"))
            ),
            indicator_names=dict(_mapping("indicator_names", d.get("indicator_names"))),
        )
