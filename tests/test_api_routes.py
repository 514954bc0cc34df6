"""What each route returns, in-process on real stores: accounts, clusters, cases, decisions,
actions, appeals and audit. The case/appeal/audit flow runs on both backends."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from stormwatch.api import Role, create_app
from stormwatch.disrupt.models import Action
from stormwatch.disrupt.service import MemorySink
from stormwatch.events import Account
from stormwatch.store import Store, open_store
from test_api_harness import Api, build_api

NOW = "2026-11-01T00:00:00.000000Z"
#: evidence items in the shape the analysis stage writes them (stormwatch.result.Evidence)
EVIDENCE = [{"kind": "content", "event_ids": ["ev_1"], "scores": [0.95], "text": "3 request(s) scored >= 0.5"}]
CLUSTER_EVIDENCE = {"link_kinds": {"payment": 1}, "indicator_hits": [], "behaviour": None, "members_with_hits": 0}


def seed_analysis(store: Store) -> None:
    """Five judged accounts in two clusters, as the analysis stage writes them."""
    judgements = [
        ("acct_a", 0.97, 1, "enforce", "c1", "Forest Blizzard", "intrusion-set--fb", 0.9, "high"),
        ("acct_b", 0.91, 1, "enforce", "c1", "Forest Blizzard", "intrusion-set--fb", 0.8, "high"),
        ("acct_c", 0.91, 1, "enforce", "c2", "Emerald Sleet", "intrusion-set--es", 0.6, "medium"),
        ("acct_d", 0.40, 0, "review", "c2", None, None, None, None),
        ("acct_e", 0.05, 0, "none", None, None, None, None, None),
    ]
    store.executemany(
        "INSERT INTO account_judgements (account_id, risk, flagged, level, cluster_id, actor, actor_ref, "
        "confidence, confidence_label, ttps, evidence, explanation, analyzed_at, model_version) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (*j, orjson.dumps({"recon": 0.6}).decode(), orjson.dumps(EVIDENCE).decode(), '{"why": "test"}', NOW, "m1")
            for j in judgements
        ],
    )
    store.executemany(
        "INSERT INTO clusters (cluster_id, size, actor, actor_ref, confidence, confidence_label, "
        "flagged_accounts, evidence, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                "c1",
                2,
                "Forest Blizzard",
                "intrusion-set--fb",
                0.9,
                "high",
                2,
                orjson.dumps(CLUSTER_EVIDENCE).decode(),
                NOW,
            ),
            ("c2", 2, "Emerald Sleet", "intrusion-set--es", 0.6, "medium", 1, "{}", NOW),
        ],
    )
    store.executemany(
        "INSERT INTO cluster_members (cluster_id, account_id) VALUES (?, ?)",
        [("c1", "acct_a"), ("c1", "acct_b"), ("c2", "acct_c"), ("c2", "acct_d")],
    )
    store.executemany(
        "INSERT INTO link_edges (cluster_id, account_a, account_b, kind, value, weight) VALUES (?, ?, ?, ?, ?, ?)",
        [("c1", "acct_a", "acct_b", "payment", "pf_1", 0.8)],
    )
    store.commit()
    store.upsert_accounts([Account("acct_a", country="RU", status="active"), Account("acct_z")])


@pytest.fixture(scope="module", name="api")
def api_fixture(tmp_path_factory: pytest.TempPathFactory) -> Any:
    url = f"sqlite:///{tmp_path_factory.mktemp('routes') / 'api.db'}"
    api = build_api(url)
    store = open_store(url)
    seed_analysis(store)
    store.close()
    with api.client:
        yield api


def get(api: Api, path: str, role: Role = Role.READ_ONLY, **params: Any) -> Any:
    r = api.client.get(path, params=params, headers=api.headers(role))
    assert r.status_code == 200, r.text
    return r.json()


def walk(api: Api, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list route, following next_cursor."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        page = get(api, path, limit=limit, **params, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def test_accounts_riskiest_first_with_filters_and_cursor(api: Api) -> None:
    everyone = get(api, "/api/v1/accounts")["items"]
    assert [a["account_id"] for a in everyone] == ["acct_a", "acct_b", "acct_c", "acct_d", "acct_e"]
    assert everyone[0]["flagged"] is True and everyone[0]["ttps"] == {"recon": 0.6}
    assert "evidence" not in everyone[0]
    assert walk(api, "/api/v1/accounts", 2) == everyone  # ties on risk keep their order across pages
    assert walk(api, "/api/v1/accounts", 1) == everyone

    def ids(**p: Any) -> list[str]:
        return [a["account_id"] for a in get(api, "/api/v1/accounts", **p)["items"]]

    assert ids(flagged="true") == ["acct_a", "acct_b", "acct_c"]
    assert ids(flagged="false") == ["acct_d", "acct_e"]
    assert ids(actor="Emerald Sleet") == ["acct_c"] == ids(actor="intrusion-set--es")
    assert ids(cluster="c2") == ["acct_c", "acct_d"]
    assert ids(min_risk=0.9) == ["acct_a", "acct_b", "acct_c"]
    assert ids(min_risk=0.9, cluster="c1", limit=1) == ["acct_a"]


def test_account_detail(api: Api) -> None:
    a = get(api, "/api/v1/accounts/acct_a")
    assert a["record"]["country"] == "RU"
    assert a["judgement"]["evidence"] == EVIDENCE and a["judgement"]["explanation"] == {"why": "test"}
    z = get(api, "/api/v1/accounts/acct_z")  # a record, not judged yet
    assert z["judgement"] is None and z["record"]["account_id"] == "acct_z"
    assert api.client.get("/api/v1/accounts/acct_nope", headers=api.headers(Role.ADMIN)).status_code == 404


def test_clusters(api: Api) -> None:
    clusters = get(api, "/api/v1/clusters")["items"]
    assert [c["cluster_id"] for c in clusters] == ["c1", "c2"]
    assert walk(api, "/api/v1/clusters", 1) == clusters
    assert [c["cluster_id"] for c in get(api, "/api/v1/clusters", actor="Emerald Sleet")["items"]] == ["c2"]
    c1 = get(api, "/api/v1/clusters/c1")
    assert c1["actor"] == "Forest Blizzard" and c1["evidence"] == CLUSTER_EVIDENCE
    assert [m["account_id"] for m in c1["members"]] == ["acct_a", "acct_b"]
    assert c1["edges"] == [
        {"account_a": "acct_a", "account_b": "acct_b", "kind": "payment", "value": "pf_1", "weight": 0.8}
    ]
    assert c1["edges_truncated"] is False
    assert api.client.get("/api/v1/clusters/zz", headers=api.headers(Role.ADMIN)).status_code == 404


def test_case_appeal_and_audit_flow(db_url: str) -> None:
    api = build_api(db_url)
    analyst, admin = api.headers(Role.ANALYST), api.headers(Role.ADMIN)
    c = api.client
    with c:
        r = c.post("/api/v1/cases", json={"account_id": "acct_a", "reason": "flagged by policy"}, headers=analyst)
        assert r.status_code == 201, r.text
        case_id = r.json()["case_id"]
        assert r.json()["opened_by"].startswith("token:")
        r = c.post("/api/v1/cases", json={"account_id": "acct_b", "reason": "second"}, headers=analyst)
        assert r.status_code == 201
        assert (
            c.post(f"/api/v1/cases/{case_id}/assign", json={"assignee": "alice"}, headers=analyst).json()["assignee"]
            == "alice"
        )
        assert (
            c.post(f"/api/v1/cases/{case_id}/notes", json={"text": "asked for logs"}, headers=analyst).status_code
            == 201
        )
        r = c.post(f"/api/v1/cases/{case_id}/evidence", json={"evidence": {"url": "https://x/1"}}, headers=analyst)
        assert r.status_code == 201 and r.json()["kind"] == "evidence"
        r = c.post(f"/api/v1/cases/{case_id}/label", json={"label": "maybe"}, headers=analyst)
        assert r.status_code == 422
        r = c.post(
            f"/api/v1/cases/{case_id}/label",
            json={"label": "true_positive", "actor": "Forest Blizzard"},
            headers=analyst,
        )
        assert r.json()["label"] == "true_positive"
        assert (
            c.post(f"/api/v1/cases/{case_id}/close", json={"resolution": "done"}, headers=analyst).json()["status"]
            == "closed"
        )
        r = c.post(f"/api/v1/cases/{case_id}/notes", json={"text": "late"}, headers=analyst)
        assert r.status_code == 409 and r.json()["status"] == 409
        assert c.post("/api/v1/cases/case_nope/assign", json={"assignee": "x"}, headers=analyst).status_code == 404
        detail = get(api, f"/api/v1/cases/{case_id}")
        assert detail["case"]["status"] == "closed"
        assert [n["kind"] for n in detail["notes"]] == ["note", "evidence"]
        assert [x["case_id"] for x in walk(api, "/api/v1/cases", 1)] == [
            x["case_id"] for x in get(api, "/api/v1/cases")["items"]
        ]
        assert [x["account_id"] for x in get(api, "/api/v1/cases", status="open")["items"]] == ["acct_b"]

        # appeals: analysts file, only admins decide
        r = c.post("/api/v1/appeals", json={"account_id": "acct_c", "reason": "we are a university"}, headers=analyst)
        assert r.status_code == 201, r.text
        appeal_id = r.json()["appeal_id"]
        assert (
            c.post("/api/v1/appeals", json={"account_id": "acct_c", "reason": "again"}, headers=analyst).status_code
            == 409
        )
        decide = {"reinstate": True, "note": "confirmed"}
        assert c.post(f"/api/v1/appeals/{appeal_id}/decide", json=decide, headers=analyst).status_code == 403
        r = c.post(f"/api/v1/appeals/{appeal_id}/decide", json=decide, headers=admin)
        assert r.status_code == 200 and r.json()["appeal"]["status"] == "reinstated"
        assert c.post(f"/api/v1/appeals/{appeal_id}/decide", json=decide, headers=admin).status_code == 409
        assert get(api, f"/api/v1/appeals/{appeal_id}")["decided_by"].startswith("token:")
        assert [a["appeal_id"] for a in get(api, "/api/v1/appeals", status="reinstated")["items"]] == [appeal_id]

        # the audit log names the token that acted, and verifies
        entries = walk(api, "/api/v1/audit", 3)
        actions = [e["action"] for e in entries]
        assert actions.count("token.create") == 3 and "case.closed" in actions and "appeal.filed" in actions
        assert all(e["actor"].startswith(("token:", "cli:", "system")) for e in entries)
        assert get(api, "/api/v1/audit", target="account:acct_c")["items"][0]["action"] == "appeal.filed"
        head = get(api, "/api/v1/audit/head")
        assert head["seq"] == len(entries)
        verified = get(api, "/api/v1/audit/verify", anchor_seq=head["seq"], anchor_hash=head["entry_hash"])
        assert verified["ok"] is True and verified["entries"] == len(entries)
        r = c.get("/api/v1/audit/verify", params={"anchor_seq": 1}, headers=admin)
        assert r.status_code == 400
        store = open_store(db_url)
        try:
            store.execute("UPDATE disrupt_audit SET actor = 'someone-else' WHERE seq = 2")
            store.commit()
        finally:
            store.close()
        broken = get(api, "/api/v1/audit/verify")
        assert broken["ok"] is False and broken["first_bad_seq"] == 2


def _dead_action(store: Store, n: int) -> Action:
    a = Action(
        action_id=f"act_dead_{n}",
        decision_id=None,
        kind="suspend",
        account_id="acct_a",
        end_user_id=None,
        params={},
        status="dead",
        attempts=5,
        last_error="HTTP 500",
        next_attempt_at=None,
        created_at=f"2026-11-0{n}T00:00:00.000000Z",
        delivered_at=None,
        sink="webhook",
    )
    store.disrupt.insert_action(a)
    store.commit()
    return a


def test_actions_decisions_and_retry(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'actions.db'}"
    api = build_api(url)
    store = open_store(url)
    for n in (1, 2):
        _dead_action(store, n)
    store.close()
    admin = api.headers(Role.ADMIN)
    with api.client as c:
        assert [a["action_id"] for a in get(api, "/api/v1/actions", status="dead")["items"]] == [
            "act_dead_1",
            "act_dead_2",
        ]
        assert get(api, "/api/v1/actions/act_dead_1")["last_error"] == "HTTP 500"
        assert c.get("/api/v1/actions/nope", headers=admin).status_code == 404
        assert get(api, "/api/v1/decisions") == {"items": [], "next_cursor": None}
        assert c.get("/api/v1/decisions/nope", headers=admin).status_code == 404
        r = c.post("/api/v1/actions/retry", json={}, headers=admin)
        assert r.status_code == 503 and "sink" in r.json()["error"]

    sink = MemorySink()
    app = create_app(url, action_sink=sink)
    with TestClient(app) as c:
        assert c.post("/api/v1/actions/retry", json={}, headers=api.headers(Role.ANALYST)).status_code == 403
        r = c.post("/api/v1/actions/retry", json={"action_ids": ["act_dead_2"]}, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["delivered"] == 1 and set(sink.delivered) == {"act_dead_2"}
        statuses = {a["action_id"]: a["status"] for a in c.get("/api/v1/actions", headers=admin).json()["items"]}
        assert statuses == {"act_dead_1": "dead", "act_dead_2": "delivered"}
