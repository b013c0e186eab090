"""`/api/2.0/notification-destinations` of the local workspace.

One destination, `local-alerts-webhook`, the loopback webhook receiver of `lakehouse alerts listen`
(the default of the bundle's local target), so a local deploy resolves the bundle's destination
names as a Databricks workspace does.
"""

from __future__ import annotations

import uuid
from typing import Any

from retail_lakehouse.local._common import ApiError

_NAMESPACE = uuid.UUID("6f1b8c9e-3d1a-4c55-9d0e-2a7c1f4e8b21")
NAMES = ("local-alerts-webhook",)


def _destination(name: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid5(_NAMESPACE, name)), "display_name": name, "destination_type": "WEBHOOK"}


def list_destinations(query: dict[str, Any]) -> dict[str, Any]:
    """The answer of `GET /api/2.0/notification-destinations` (one page)."""
    return {"results": [_destination(n) for n in NAMES]}


def get_destination(destination_id: str) -> dict[str, Any]:
    """The answer of `GET /api/2.0/notification-destinations/{id}`."""
    for name in NAMES:
        if _destination(name)["id"] == destination_id:
            return {**_destination(name), "config": {"generic_webhook": {"url_set": True}}}
    raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"notification destination {destination_id!r} does not exist")
