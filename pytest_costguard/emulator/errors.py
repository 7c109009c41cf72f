"""Errors answered in the API's shape: the exception the emulator raises and the body it sends for it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ERROR_TYPES", "ApiError", "error_body"]

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""The error `type` the API puts in the body of each status."""


class ApiError(Exception):
    """An error answered in the API's shape."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def error_body(status: int, message: str, request_id: str | None) -> dict[str, Any]:
    """Return the JSON body the API answers an error with."""
    return {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": request_id,
    }
