"""What the disrupt route modules share: the service layer's errors mapped to HTTP statuses."""

from __future__ import annotations

from stormwatch.api.errors import map_error
from stormwatch.disrupt.service import ConflictError, NotFoundError


def map_disrupt_errors() -> None:
    map_error(NotFoundError, 404)
    map_error(ConflictError, 409)
