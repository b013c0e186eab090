"""Shared pieces of the local workspace: API errors, ids, times and page tokens."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from retail_lakehouse.core.errors import LakehouseError

LOCAL_USER = "local-user"
WORKSPACE_ID = "1000000000000000"
ACCOUNT_ID = "00000000-0000-0000-0000-000000000000"


class ApiError(LakehouseError):
    """An error answered as Databricks does: HTTP status and `{"error_code", "message"}`."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message

    def body(self) -> dict[str, Any]:
        return {"error_code": self.error_code, "message": self.message}


@dataclass(frozen=True)
class RawBody:
    """A response body already encoded: its parts (bytes-like: bytes, Arrow buffers) are sent in order.

    Large results are answered this way: JSON spliced around rows serialized from Arrow columns, or
    Arrow IPC streams, without building one Python object per value or copying the parts together.
    """

    parts: tuple[Any, ...]
    content_type: str = "application/json"

    @property
    def size(self) -> int:
        return sum(memoryview(p).nbytes for p in self.parts)


def not_found(message: str) -> ApiError:
    return ApiError(404, "RESOURCE_DOES_NOT_EXIST", message)


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


def ms(value: datetime | None) -> int | None:
    """Epoch milliseconds of an aware datetime."""
    return None if value is None else int(value.timestamp() * 1000)


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def page_offset(token: str | None, offset: Any = None) -> int:
    """Offset of a page from a `page_token` (ours) or a legacy `offset`."""
    if token:
        try:
            text = base64.urlsafe_b64decode(token.encode()).decode()
            if text.startswith("offset:"):
                return max(0, int(text[len("offset:") :]))
        except (ValueError, UnicodeDecodeError):
            pass
        raise invalid(f"page_token {token!r} is not valid; pass the next_page_token of a previous response")
    return max(0, as_int(offset, "offset", 0))


def as_int(value: Any, name: str, default: int | None = None) -> int:
    if value is None or value == "":
        if default is None:
            raise invalid(f"{name} is required")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"{name} must be an integer, got {value!r}") from None


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("true", "1", "yes")


def paginate(items: list[Any], *, limit: int, offset: int) -> tuple[list[Any], str | None]:
    """A page of `items` and the token of the next page (None at the end)."""
    page = items[offset : offset + limit]
    return page, (page_token(offset + limit) if offset + limit < len(items) else None)
