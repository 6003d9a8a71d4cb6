"""What a request may touch: bearer tokens, paths confined to the media folder, upload size and duration limits.

Every refusal is an :class:`.errors.ApiError` naming the request field and the fix; nothing the user made is
overwritten (uploads land in the job's own new folder).
"""
from __future__ import annotations

import hmac
import os
import re
from typing import Optional

from .errors import ApiError, bad_request

SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
AUDIO_EXTS = (".wav", ".mp3", ".flac", ".m4a", ".ogg", ".opus", ".aac", ".mp4", ".webm", ".mov", ".mkv")


def token_ok(expected: Optional[str], header: str, query_token: Optional[str]) -> bool:
    """``Authorization: Bearer T`` (or ``?access_token=T`` where a browser cannot set headers: a <video> source, a
    WebSocket), compared in constant time. No token configured: everything is allowed (loopback only)."""
    if not expected:
        return True
    given = header[7:].strip() if header.lower().startswith("bearer ") else (query_token or "")
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def unauthorized() -> ApiError:
    return ApiError(401, "Authorization", "this server needs a bearer token",
                    "send 'Authorization: Bearer <token>' (the --token the server was started with), or "
                    "?access_token=<token> for a video source or WebSocket", {"WWW-Authenticate": "Bearer"})


def confined_path(field: str, rel: str, media_dir: Optional[str]) -> str:
    """``rel`` inside the media folder, as a real path; absolute paths, ``..`` and symlinks leading out are refused."""
    if not media_dir:
        raise bad_request(field, "this server takes no file paths (it was started without --media-dir)",
                          "upload the file in a multipart form instead, or restart the server with --media-dir")
    if not isinstance(rel, str) or not rel.strip():
        raise bad_request(field, "empty path", "give a path relative to the media folder, e.g. clips/talk.mp4")
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


def media_seconds(field: str, path: str, need_video: bool) -> float:
    """The file's duration, proving it decodes: a corrupt or wrong file is refused now, not half-way through a job."""
    import av

    try:
        with av.open(path) as c:
            streams = c.streams.video if need_video else c.streams.audio
            if not streams:
                kind = "picture (video)" if need_video else "sound (audio)"
                raise bad_request(field, f"{os.path.basename(path)} has no {kind} track",
                                  f"send a file with a {kind} track")
            s = streams[0]
            if c.duration is not None:
                seconds = c.duration / 1e6
            elif s.duration is not None and s.time_base:
                seconds = float(s.duration * s.time_base)
            else:
                seconds = 0.0
            for _ in c.decode(s):       # one decoded frame proves the stream is readable
                break
            else:
                raise bad_request(field, f"{os.path.basename(path)}: no decodable {'frame' if need_video else 'audio'}",
                                  "check that the file plays, then send it again")
    except ApiError:
        raise
    except Exception as exc:
        raise bad_request(field, f"{os.path.basename(path)} is not a readable media file ({exc})",
                          "check that the file plays, then send it again")
    return seconds


def check_duration(field: str, seconds: float, max_seconds: float) -> None:
    if seconds > max_seconds:
        raise bad_request(field, f"{seconds:.0f} s is longer than this server's limit of {max_seconds:.0f} s",
                          "cut the file into parts, or start the server with a larger --max-seconds")
