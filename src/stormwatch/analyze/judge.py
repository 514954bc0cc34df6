"""The global part of ``analyze``: link every account, attribute clusters, judge accounts, write.

Linking, attribution and risk rerun over all accounts each time (they take seconds); only the
per-account features are incremental.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from stormwatch.analyze import params as P
from stormwatch.analyze.attribution import AccountBehaviour, Attribution, IntrusionSet, attribute, confidence_label
from stormwatch.analyze.linking import LinkInput, LinkResult, link_accounts
from stormwatch.analyze.profiles import load_profiles, profile_for
from stormwatch.analyze.risk import RiskInputs, judge
from stormwatch.store import Store
from stormwatch.store.sql import now_iso

__all__ = ["Graph", "JudgeSummary", "judge_all", "load_graph"]

Arr = np.ndarray[Any, Any]
_ACCOUNT_KINDS = (
    ("device_id", "device"),
    ("payment_fingerprint", "payment"),
    ("phone_hash", "phone"),
    ("signup_ip", "ip"),
    ("email_domain", "email_domain"),
    ("org_id", "org"),
)
FAMILIES = {fam: i for i, fam in enumerate(sorted({f for _, f in P.LINK_KINDS.values()}))}


@dataclass(slots=True)
class Graph:
    accounts: list[str]
    index: dict[str, int]
    values: list[tuple[str, str]]  # (kind, value)
    link_input: LinkInput


@dataclass(slots=True)
class JudgeSummary:
    accounts: int = 0
    clusters: int = 0
    enforce: int = 0
    review: int = 0
    attributed: int = 0
    intel_hit_accounts: int = 0


def _epoch(values: list[str | None]) -> Arr:
    arr = np.array([v[:-1] if v and v.endswith("Z") else (v or "NaT") for v in values], dtype="datetime64[us]")
    out = arr.astype(np.int64).astype(np.float64) / 1e6
    out[np.isnat(arr)] = np.nan
    return out


def load_graph(store: Store) -> Graph:
    accounts = sorted(
        {r[0] for r in store.query("SELECT account_id FROM accounts")}
        | {r[0] for r in store.query("SELECT account_id FROM account_features")}
    )
    index = {a: i for i, a in enumerate(accounts)}
    vid: dict[tuple[str, str], int] = {}
    acc: list[int] = []
    val: list[int] = []
    first: list[str | None] = []
    last: list[str | None] = []

    def add(a: str, kind: str, value: str, f: str | None, la: str | None) -> None:
        v = vid.setdefault((kind, value), len(vid))
        acc.append(index[a])
        val.append(v)
        first.append(f)
        last.append(la)

    for a, kind, value, f, la in store.query(
        "SELECT account_id, kind, value, first_ts, last_ts FROM account_attributes WHERE kind IN ('ip', 'api_key')"
    ):
        add(a, kind, value, f, la)
    for row in store.query(
        "SELECT account_id, created_at, device_id, payment_fingerprint, phone_hash, signup_ip, email_domain, org_id"
        " FROM accounts"
    ):
        a, created = row[0], row[1]
        for (_, kind), value in zip(_ACCOUNT_KINDS, row[2:], strict=True):
            if value:
                at = created if kind == "ip" else None
                add(a, kind, str(value).lower() if kind == "email_domain" else str(value), at, at)
    values = list(vid)
    base = np.array([0.0 if (k == "email_domain" and v in P.WEBMAIL) else P.LINK_KINDS[k][0] for k, v in values])
    family = np.array([FAMILIES[P.LINK_KINDS[k][1]] for k, _ in values], dtype=np.int64)
    timed = np.array([k == "ip" for k, _ in values], dtype=bool)
    a_arr, v_arr = np.asarray(acc, dtype=np.int64), np.asarray(val, dtype=np.int64)
    f_arr, l_arr = _epoch(first), _epoch(last)
    # one edge per (account, value): earliest first use, latest last use
    key = a_arr * max(len(values), 1) + v_arr
    uniq, inv = np.unique(key, return_inverse=True)
    f_u = np.full(len(uniq), np.inf)
    l_u = np.full(len(uniq), -np.inf)
    np.fmin.at(f_u, inv, f_arr)
    np.fmax.at(l_u, inv, l_arr)
    f_u[np.isinf(f_u)] = np.nan
    l_u[np.isinf(l_u)] = np.nan
    inp = LinkInput(
        n_accounts=len(accounts),
        acc=uniq // max(len(values), 1),
        val=uniq % max(len(values), 1),
        value_base=base,
        value_family=family,
        timed=timed,
        first=f_u,
        last=l_u,
    )
    return Graph(accounts, index, values, inp)


def _intrusion_sets(store: Store) -> dict[str, IntrusionSet]:
    sets: dict[str, IntrusionSet] = {}
    named: set[str] = set()
    for (raw,) in store.query("SELECT raw FROM intel_objects WHERE type = 'intrusion-set' AND revoked = 0"):
        o = orjson.loads(raw)
        ids = [r.get("external_id", "") for r in o.get("external_references", []) if isinstance(r, dict)]
        prof = profile_for(o.get("name"), list(o.get("aliases", [])), ids)
        sets[o["id"]] = IntrusionSet(o["id"], str(o.get("name") or o["id"]), prof)
        if prof:
            named.add(prof.name)
    for prof in load_profiles():
        if prof.name not in named:
            sets[f"profile:{prof.name}"] = IntrusionSet(f"profile:{prof.name}", prof.name, prof)
    return sets


def _behaviour(store: Store, g: Graph) -> tuple[AccountBehaviour, list[dict[str, Any]], Arr, Arr, Arr]:
    n = len(g.accounts)
    ttp, hours = np.zeros((n, len(P.LLMT))), np.zeros((n, 48))
    langs: list[dict[str, float]] = [{} for _ in range(n)]
    n_ev, content, breadth = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
    rephr, escal = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    feats: list[dict[str, Any]] = [{} for _ in range(n)]
    col = {c: i for i, c in enumerate(P.LLMT)}
    for a, ne, cs, br, rp, raw in store.query(
        "SELECT account_id, n_events, content_score, ttp_breadth, rephrases, features FROM account_features"
    ):
        i = g.index[a]
        f = orjson.loads(raw)
        feats[i] = f
        n_ev[i], content[i], breadth[i], rephr[i] = float(ne), float(cs), int(br), int(rp)
        escal[i] = int(f.get("escalations", 0))
        for c, m in f.get("ttp_mass", {}).items():
            ttp[i, col[c]] = m
        hours[i] = f.get("hours_utc", [0] * 48)
        langs[i] = f.get("languages", {})
    return AccountBehaviour(ttp, hours, langs, n_ev, content), feats, breadth, rephr, escal


def _ttp_shares(mass: dict[str, float]) -> dict[str, float]:
    """TTP -> share of the account's TTP mass (events scoring >= 0.3, weighted by score)."""
    total = sum(mass.values())
    if total < 0.5:
        return {}
    return {k: round(v / total, 3) for k, v in sorted(mass.items(), key=lambda kv: -kv[1]) if v / total >= 0.05}


def _coordinated(link: LinkResult, att: Attribution, feats: list[dict[str, Any]]) -> set[int]:
    """Cluster labels whose malicious members are coordinated and fit an actor profile."""
    out: set[int] = set()
    for label, (_ref, _conf, fit) in att.cluster_fit.items():
        if fit is None or fit.score < P.COORDINATED_FIT or link.cluster_size[label] < P.COORDINATED_MIN_SIZE:
            continue
        members = np.flatnonzero(link.labels == label)
        bad = sum(
            float(feats[m].get("content", {}).get("score", 0.0)) >= P.COORDINATED_MEMBER_CONTENT
            for m in members
            if feats[m]
        )
        if bad >= P.COORDINATED_MIN_SIZE and bad >= 0.5 * len(members):
            out.add(label)
    return out


def cluster_id(first_member: str) -> str:
    return "cl_" + hashlib.sha256(first_member.encode()).hexdigest()[:12]


def judge_all(store: Store, version: str) -> JudgeSummary:
    from stormwatch.analyze.evidence import EvidenceBuilder

    g = load_graph(store)
    link = link_accounts(g.link_input)
    sets = _intrusion_sets(store)
    beh, feats, breadth, rephr, escal = _behaviour(store, g)
    hits_rows = store.query(
        "SELECT account_id, indicator_id, kind, value, n, first_ts, last_ts, degree, strength, intrusion_sets"
        " FROM intel_hits"
    )
    per_set: dict[str, dict[int, float]] = {}
    for r in hits_rows:
        for ref in orjson.loads(r[9]):
            if ref in sets and r[0] in g.index:
                d = per_set.setdefault(ref, {})
                i = g.index[r[0]]
                d[i] = max(d.get(i, 0.0), float(r[8]))
    hits = {ref: list(d.items()) for ref, d in per_set.items()}
    # direct hits that are not mere IP overlap: an actor's own domain / address / URL, or several
    # different indicators on one account
    kinds: dict[str, set[str]] = {}
    inds: dict[str, set[str]] = {}
    for r in hits_rows:
        if float(r[8]) > 0:
            kinds.setdefault(r[0], set()).add(str(r[2]))
            inds.setdefault(r[0], set()).add(str(r[1]))
    own_intel = {g.index[a] for a in kinds if a in g.index and (kinds[a] & P.IDENTITY_HIT_KINDS or len(inds[a]) >= 2)}
    att = attribute(link, len(g.values), sets, hits, beh)
    ev = EvidenceBuilder(store, g, link, att, sets, hits_rows)
    return _write(store, g, link, att, sets, ev, feats, breadth, rephr, escal, version, own_intel)


def _write(
    store: Store,
    g: Graph,
    link: LinkResult,
    att: Attribution,
    sets: dict[str, IntrusionSet],
    ev: Any,
    feats: list[dict[str, Any]],
    breadth: Arr,
    rephr: Arr,
    escal: Arr,
    version: str,
    own_intel: set[int],
) -> JudgeSummary:
    now = now_iso()
    summary = JudgeSummary(accounts=len(g.accounts))
    multi = link.cluster_size[link.labels] >= 2
    first_member: dict[int, str] = {}
    for k in np.flatnonzero(multi):
        first_member.setdefault(int(link.labels[k]), g.accounts[k])
    cid = {lab: cluster_id(a) for lab, a in first_member.items()}
    coordinated = _coordinated(link, att, feats)
    identity = {
        int(a)
        for a, v in zip(link.star_acc.tolist(), link.star_val.tolist(), strict=True)
        if g.values[v][0] in P.IDENTITY_KINDS
    }
    identity |= {int(link.pair_a[p]) for p, v, _f, _w in link.pair_parts if g.values[v][0] in P.IDENTITY_KINDS}
    identity |= {int(link.pair_b[p]) for p, v, _f, _w in link.pair_parts if g.values[v][0] in P.IDENTITY_KINDS}
    rows, levels = [], []
    for i, account in enumerate(g.accounts):
        ref = att.actor_ref[i]
        conf = float(att.confidence[i]) if ref else 0.0
        content_i = float(feats[i].get("content", {}).get("score", 0.0)) if feats[i] else 0.0
        fit_i = att.fit[i]
        res = judge(
            RiskInputs(
                content=content_i,
                rephrases=int(rephr[i]),
                escalations=int(escal[i]),
                breadth=int(breadth[i]),
                direct_intel=float(att.direct[i]),
                link_intel=float(max(0.0, att.intel[i] - att.direct[i])),
                confidence=conf,
                behaviour_only=bool(ref) and att.source[i] < 0,
                coordinated=int(link.labels[i]) in coordinated,
                corroborated=(
                    content_i >= P.CORROBORATE_CONTENT
                    or (fit_i is not None and fit_i.score >= P.CORROBORATE_FIT)
                    or i in identity
                    or i in own_intel
                ),
            )
        )
        levels.append(res.level)
        summary.enforce += int(res.level == "enforce")
        summary.review += int(res.level == "review")
        summary.attributed += int(ref is not None)
        summary.intel_hit_accounts += int(att.direct[i] > 0)
        c = cid.get(int(link.labels[i])) if multi[i] else None
        ttps = _ttp_shares(feats[i].get("ttp_mass", {}) if feats[i] else {})
        rows.append(
            (
                account,
                res.risk,
                int(res.level == "enforce"),
                res.level,
                c,
                sets[ref].name if ref else None,
                ref if ref and not ref.startswith("profile:") else None,
                round(conf, 4) if ref else None,
                confidence_label(conf) if ref else None,
                orjson.dumps(ttps).decode(),
                orjson.dumps(ev.account(i, feats[i])).decode(),
                orjson.dumps(res.explanation).decode(),
                now,
                version,
            )
        )
    for table in ("account_judgements", "clusters", "cluster_members", "link_edges"):
        store.execute(f"DELETE FROM {table}")
    store.executemany(
        "INSERT INTO account_judgements (account_id, risk, flagged, level, cluster_id, actor, actor_ref, confidence,"
        " confidence_label, ttps, evidence, explanation, analyzed_at, model_version)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    members: dict[int, list[int]] = {}
    for m in np.flatnonzero(multi).tolist():
        members.setdefault(int(link.labels[m]), []).append(int(m))
    crow: list[tuple[Any, ...]] = []
    mrow: list[tuple[str, str]] = []
    for lab, idx in members.items():
        fit = att.cluster_fit.get(lab)
        ref = fit[0] if fit else None
        cconf = float(fit[1]) if fit else None
        flagged = sum(levels[i] == "enforce" for i in idx)
        crow.append(
            (
                cid[lab],
                len(idx),
                sets[ref].name if ref else None,
                ref if ref and not ref.startswith("profile:") else None,
                round(cconf, 4) if cconf is not None else None,
                confidence_label(cconf),
                flagged,
                orjson.dumps(ev.cluster(lab, idx)).decode(),
                now,
            )
        )
        mrow.extend((cid[lab], g.accounts[i]) for i in idx)
    summary.clusters = len(crow)
    store.executemany(
        "INSERT INTO clusters (cluster_id, size, actor, actor_ref, confidence, confidence_label, flagged_accounts,"
        " evidence, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        crow,
    )
    store.executemany("INSERT INTO cluster_members (cluster_id, account_id) VALUES (?, ?)", mrow)
    store.executemany(
        "INSERT INTO link_edges (cluster_id, account_a, account_b, kind, value, weight) VALUES (?, ?, ?, ?, ?, ?)",
        ev.edges(cid),
    )
    return summary
