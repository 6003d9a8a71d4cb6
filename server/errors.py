"""The one error shape every route answers with: ``{"error": {"status", "field", "message", "fix"}}``."""
from __future__ import annotations

from typing import Optional


class ApiError(Exception):
    """A request the server refuses: the HTTP status, the request field at fault, what is wrong and the fix."""

    def __init__(self, status: int, field: Optional[str], message: str, fix: str = "",
                 headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.field, self.message, self.fix = status, field, message, fix
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"status": self.status, "field": self.field, "message": self.message, "fix": self.fix}}


def bad_request(field: str, message: str, fix: str) -> ApiError:
    return ApiError(400, field, message, fix)


def not_found(field: str, message: str, fix: str) -> ApiError:
    return ApiError(404, field, message, fix)
