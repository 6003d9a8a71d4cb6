"""The one error shape every route answers with: ``{"error": {"status", "field", "message", "fix"}}``."""
from __future__ import annotations

import os
import re
from typing import Optional

_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/])/(?:[^\s'\"():,/]+/)+([^\s'\"():,/]*)")
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")


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


def avatar_refusal(field: str, name: str, exc: Exception) -> ApiError:
    """Why an avatar cannot be used: not a valid name (400), no such avatar (404), or its folder is unusable (409)."""
    from ..pipeline.avatars import AvatarError
    from ..pipeline.avatars.store import avatar_dir

    try:
        exists = os.path.isdir(avatar_dir(name))
    except AvatarError:
        return ApiError(400, field, str(exc), "avatar names are letters, digits, _ . -; GET /v1/avatars lists them")
    return ApiError(409 if exists else 404, field, str(exc),
                    "GET /v1/avatars lists the prepared avatars; prepare it again if it changed")


def without_paths(text: str) -> str:
    """A message for a client: folders of the server's machine cut down to the file's name, no raw errno (the server
    log keeps the whole message)."""
    return _ERRNO.sub("", _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "(a server folder)", text))
