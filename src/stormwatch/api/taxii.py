"""Mount the TAXII 2.1 server in the stormwatch API at ``/taxii2`` with the API's tokens.

``install(app)`` is an API extension (``stormwatch.api`` entry point / ``register``): it registers
the permissions ``taxii:read`` (read-only and analyst roles) and ``taxii:write`` (analyst), and
mounts the TAXII app on the API's store pool. A caller is the token's name; it reads or writes a
collection when both the collection's permission table (``stormwatch intel taxii grant``) and the
token's role / scopes (``taxii:read:<collection-id>`` narrows a token to one collection) allow it.
HTTP Basic with the token as the password works too, since TAXII clients must support Basic.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from stormwatch.intel.taxii.app import create_taxii_app
from stormwatch.intel.taxii.server import Caller, TaxiiError
from stormwatch.store import Store
from stormwatch.store.pool import StoreSource

TAXII_READ = "taxii:read"
TAXII_WRITE = "taxii:write"


def _register_permissions() -> None:
    from stormwatch.api import Role, register_permission

    register_permission(TAXII_READ, {Role.READ_ONLY, Role.ANALYST})
    register_permission(TAXII_WRITE, {Role.ANALYST})


def api_authenticate(request: Request, store: Store) -> Caller:
    from stormwatch.api import AuthenticationError, principal_from_authorization

    try:
        p = principal_from_authorization(store, request.headers.get("authorization"), allow_basic=True)
    except AuthenticationError as exc:
        raise TaxiiError(401, "Unauthorized", str(exc)) from None
    store.commit()  # token bookkeeping (last use), if any

    def gate(permission: str, collection_id: str) -> bool:
        return p.allows_on(permission, collection_id)

    from stormwatch.api import Role

    # an admin token may publish versions of our own objects (as `intel taxii publish` does)
    return Caller(p.name, gate, trusted=p.role == Role.ADMIN, actor=p.actor)


def install(app: Any) -> None:
    """API extension: mount the TAXII server at ``/taxii2``, on the API's own store pool (no second pool)."""
    _register_permissions()
    pool: StoreSource = app.state.store_pool
    app.mount("/taxii2", create_taxii_app(pool, api_authenticate))
