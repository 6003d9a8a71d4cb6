"""What a request may touch: the bearer token (made at the first start unless given), the Host and Origin a request
comes with, paths confined to the media folder, upload size, and limits on what an upload decodes to.

Every refusal is an :class:`.errors.ApiError` naming the request field and the fix; nothing the user made is
overwritten (uploads land in the job's own new folder).
"""
from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
from typing import Optional
from urllib.parse import urlsplit

from .errors import ApiError, bad_request

log = logging.getLogger("musetalk_enhanced.server")
MAX_PATH_CHARS = 1024               # a media-folder path in a request
MAX_NAME_BYTES = 255                # one file or folder name (the file systems' limit)
SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
AUDIO_EXTS = (".wav", ".mp3", ".flac", ".m4a", ".ogg", ".opus", ".aac", ".mp4", ".webm", ".mov", ".mkv")


def server_token(config) -> Optional[str]:
    """The token every request must carry: ``--token``, else the one kept in the data folder (made at the first
    start, readable by its owner only, so a restart keeps it); None with ``--no-token``."""
    if config.no_token:
        return None
    if config.token:
        return config.token
    path = config.token_path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        with open(path) as f:
            token = f.read().strip()
        if len(token) >= 8:
            return token
        os.remove(path)
        return server_token(config)
    with os.fdopen(fd, "w") as f:
        token = secrets.token_urlsafe(24)
        f.write(token + "\n")
    return token


def token_ok(expected: Optional[str], header: str, query_token: Optional[str]) -> bool:
    """``Authorization: Bearer T`` (or ``?access_token=T``, which the routes accept only where a browser cannot set
    headers: a <video> source, a WebSocket), compared in constant time. No token (``--no-token``): allowed."""
    if not expected:
        return True
    given = header[7:].strip() if header.lower().startswith("bearer ") else (query_token or "")
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def host_name(host_header: str) -> str:
    """``Host: name:port`` -> ``name`` (lower case; ``[::1]:8288`` -> ``::1``)."""
    host = (host_header or "").strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def check_host(host_header: str, allowed) -> None:
    """A request for another name is refused: a page on ``evil.example`` that resolves to this machine (DNS
    rebinding) cannot read the server."""
    if host_name(host_header) not in allowed:
        raise ApiError(403, "Host", f"this server does not answer to {host_name(host_header) or 'no Host'!r}",
                       "open it by the address it was started on (e.g. http://127.0.0.1:8288/), or restart it "
                       "with --allowed-host NAME")


def check_origin(origin: Optional[str], host_header: str) -> None:
    """A state-changing request from a web page must come from the server's own page: its ``Origin`` must be this
    server (scripts and curl send none)."""
    if origin is None:
        return
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or parts.netloc.lower() != (host_header or "").strip().lower():
        raise ApiError(403, "Origin", f"a request from the page {origin!r} may not change this server",
                       "use the server's own page, or call the API from a script (no Origin)")


def unauthorized() -> ApiError:
    return ApiError(401, "Authorization", "this server needs a bearer token",
                    "send 'Authorization: Bearer <token>' (the --token the server was started with), or "
                    "?access_token=<token> for a video source or WebSocket", {"WWW-Authenticate": "Bearer"})


def confined_path(field: str, rel: str, media_dir: Optional[str]) -> str:
    """``rel`` inside the media folder, as a real path; absolute paths, ``..`` and symlinks leading out are refused."""
    if not media_dir:
        raise bad_request(field, "this server takes no file paths (it was started without --media-dir)",
                          "upload the file in a multipart form instead, or restart the server with --media-dir")
    if not isinstance(rel, str):
        raise bad_request(field, f"a path is text; got {type(rel).__name__}",
                          'give a path relative to the media folder, e.g. "clips/talk.mp4"')
    if not rel.strip():
        raise bad_request(field, "empty path", "give a path relative to the media folder, e.g. clips/talk.mp4")
    if "\x00" in rel:
        raise bad_request(field, "the path contains a NUL byte", "give a plain path, e.g. clips/talk.mp4")
    if len(rel) > MAX_PATH_CHARS or any(len(part.encode()) > MAX_NAME_BYTES for part in rel.split("/")):
        raise bad_request(field, f"the path is too long (at most {MAX_PATH_CHARS} characters, {MAX_NAME_BYTES} bytes "
                                 "a name)", "rename the file or folder")
    parts = rel.replace("\\", "/").split("/")
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel) or ".." in parts:
        raise bad_request(field, f"{rel!r} is not a path inside the media folder",
                          "give a relative path without '..', e.g. clips/talk.mp4")
    root = os.path.realpath(media_dir)
    full = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([root, full]) != root:
        raise bad_request(field, f"{rel!r} leads out of the media folder (a link pointing outside it)",
                          "copy the file into the media folder itself")
    if not os.path.isfile(full):
        raise bad_request(field, f"{rel!r}: no such file in the media folder", "check the name and that the file "
                          "is inside the server's media folder")
    return full


def upload_name(field: str, filename: Optional[str], allowed: tuple) -> str:
    """A safe file name for an upload, keeping an allowed extension."""
    base = os.path.basename((filename or "").replace("\\", "/"))
    stem, ext = os.path.splitext(base)
    if ext.lower() not in allowed:
        raise bad_request(field, f"{base or 'the upload'}: unsupported file type {ext or '(none)'}",
                          f"upload one of {', '.join(allowed)}")
    return f"{field}_{SAFE_FILENAME.sub('_', stem)[:60] or field}{ext.lower()}"


async def save_upload(part, field: str, dest: str, max_bytes: int) -> int:
    """Stream a multipart file part to ``dest`` (a new file), refusing it past ``max_bytes``."""
    size = 0
    try:
        with open(dest, "xb") as f:
            while True:
                chunk = await part.read_chunk(1 << 20)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise ApiError(413, field, f"the upload is larger than {max_bytes // (1 << 20)} MB",
                                   "send a shorter or more compressed file, or start the server with a larger "
                                   "--max-upload-mb")
                f.write(chunk)
    except BaseException:
        if os.path.exists(dest):
            os.remove(dest)
        raise
    if size == 0:
        os.remove(dest)
        raise bad_request(field, "the uploaded file is empty", "upload the file again")
    return size


def check_upload(field: str, path: str, config) -> None:
    """The file decodes and is within the server's limits, counted from its packets (pipeline/jobs/limits.py): a
    file whose header claims 0 s is measured all the same. The decoder's own words go to the log, not the client."""
    from ..pipeline.jobs import RequestError
    from ..pipeline.jobs.limits import MediaLimits

    limits = MediaLimits(config.max_seconds, config.max_frames, config.max_pixels)
    try:
        limits.check_file(field, path, video=field == "video")
    except RequestError as exc:
        if exc.detail:
            log.info("%s %s refused: %s", field, os.path.basename(path), exc.detail)
        raise bad_request(field, exc.message, exc.fix.replace("raise --", "start the server with a larger --")) \
            from None
