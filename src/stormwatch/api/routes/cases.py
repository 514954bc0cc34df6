"""Cases: list, read, open, assign, annotate, attach evidence, label, close.

Thin over :mod:`stormwatch.disrupt.service`; the caller's token names the actor in the audit log.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field

from stormwatch.api.auth import Principal, requires
from stormwatch.api.deps import get_store
from stormwatch.api.extensions import API_PREFIX
from stormwatch.api.pagination import DEFAULT_LIMIT, Cursor, Limit, offset_page
from stormwatch.api.roles import CASES_WRITE, READ
from stormwatch.api.routes._service import map_disrupt_errors
from stormwatch.disrupt import service
from stormwatch.store import Store

router = APIRouter(prefix="/cases", tags=["cases"])
Text = Annotated[str, Field(min_length=1, max_length=20_000)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaseOpen(_Body):
    account_id: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Text
    decision_id: str | None = None


class Assign(_Body):
    assignee: Annotated[str, Field(min_length=1, max_length=200)]


class Note(_Body):
    text: Text


class Evidence(_Body):
    evidence: dict[str, Any] | Text = Field(description="A JSON object, or a URL / reference string.")


class Label(_Body):
    label: Literal["true_positive", "false_positive"]
    actor: str | None = Field(default=None, max_length=200, description="Actor the account belongs to.")
    category: str | None = Field(default=None, max_length=200, description="TTP or misuse category.")


class Close(_Body):
    resolution: str = Field(default="", max_length=20_000)


@router.get("", summary="Cases, oldest first")
def list_cases(
    store: Store = Depends(get_store),
    _: Principal = requires(READ),
    status: Annotated[Literal["open", "closed"] | None, Query()] = None,
    assignee: Annotated[str | None, Query(max_length=200)] = None,
    account_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    return offset_page(
        lambda n, offset: service.list_cases(
            store, status=status, assignee=assignee, account_id=account_id, limit=n, offset=offset
        ),
        limit,
        cursor,
    )


@router.post("", status_code=201, summary="Open a case on an account (one open case per account)")
def open_case(body: CaseOpen, store: Store = Depends(get_store), who: Principal = requires(CASES_WRITE)) -> Any:
    return service.open_case(
        store, body.account_id, by=who.actor, reason=body.reason, decision_id=body.decision_id
    ).to_dict()


@router.get("/{case_id}", summary="A case with its notes, evidence and the account's decisions")
def get_case(case_id: str, store: Store = Depends(get_store), _: Principal = requires(READ)) -> Any:
    return service.get_case(store, case_id).to_dict()


@router.post("/{case_id}/assign", summary="Assign a case")
def assign_case(
    case_id: str, body: Assign, store: Store = Depends(get_store), who: Principal = requires(CASES_WRITE)
) -> Any:
    return service.assign_case(store, case_id, body.assignee, by=who.actor).to_dict()


@router.post("/{case_id}/notes", status_code=201, summary="Add a note to a case")
def annotate_case(
    case_id: str, body: Note, store: Store = Depends(get_store), who: Principal = requires(CASES_WRITE)
) -> Any:
    return service.annotate_case(store, case_id, body.text, by=who.actor).to_dict()


@router.post("/{case_id}/evidence", status_code=201, summary="Attach evidence to a case")
def attach_evidence(
    case_id: str, body: Evidence, store: Store = Depends(get_store), who: Principal = requires(CASES_WRITE)
) -> Any:
    return service.attach_evidence(store, case_id, body.evidence, by=who.actor).to_dict()


@router.post("/{case_id}/label", summary="Label a case true or false positive (training data)")
def label_case(
    case_id: str, body: Label, store: Store = Depends(get_store), who: Principal = requires(CASES_WRITE)
) -> Any:
    return service.label_case(
        store, case_id, body.label, by=who.actor, actor=body.actor, category=body.category
    ).to_dict()


@router.post("/{case_id}/close", summary="Close a case")
def close_case(
    case_id: str, body: Close, store: Store = Depends(get_store), who: Principal = requires(CASES_WRITE)
) -> Any:
    return service.close_case(store, case_id, by=who.actor, resolution=body.resolution).to_dict()


def install(app: FastAPI) -> None:
    map_disrupt_errors()
    app.include_router(router, prefix=API_PREFIX)
