"""``GET /openapi.json``: the routes, their fields and the live protocol, built from the same request fields the server
checks (pipeline/jobs, server/options.py) so the description cannot drift from what is accepted."""
from __future__ import annotations

from typing import Dict

from .config import ServerConfig

ERROR = {"$ref": "#/components/schemas/Error"}


def _option_schema(kind: str) -> Dict:
    from ..pipeline.jobs import REQUESTS
    from ..pipeline.jobs.schema import options_schema
    from .options import MASK_OPTION, MASK_OPTION_SCHEMA

    schema = options_schema(REQUESTS[kind])
    if kind == "dub":                      # the server's own option (server/options.py)
        schema["properties"][MASK_OPTION] = MASK_OPTION_SCHEMA
    return schema


def _errors(*codes: int) -> Dict:
    text = {400: "bad field (the error names it and the fix)", 401: "missing or wrong bearer token",
            404: "no such job or avatar", 409: "the job has no result (yet)", 413: "upload too large",
            415: "wrong content type", 429: "queue full / too many live sessions"}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": ERROR}}} for c in codes}


def _job_routes() -> Dict:
    submit_form = {"type": "object", "properties": {
        "video": {"type": "string", "format": "binary", "description": "the video to dub (or its media-folder path)"},
        "audio": {"type": "string", "format": "binary", "description": "the voice (default: the video's own audio)"},
        "avatar": {"type": "string", "description": "a prepared avatar's name instead of a video"},
        "options": {"type": "string", "description": "JSON object of options (DubOptions / AvatarOptions)"}}}
    submit_json = {"type": "object", "properties": {
        "video": {"type": "string", "description": "path inside the server's --media-dir"},
        "audio": {"type": "string", "description": "path inside the server's --media-dir"},
        "avatar": {"type": "string"},
        "options": {"oneOf": [{"$ref": "#/components/schemas/DubOptions"},
                              {"$ref": "#/components/schemas/AvatarOptions"}]}}}
    job = {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}
    return {
        "/v1/jobs": {
            "post": {"summary": "submit a dubbing job", "requestBody": {"content": {
                "multipart/form-data": {"schema": submit_form}, "application/json": {"schema": submit_json}}},
                     "responses": {"202": {"description": "queued: {id, state, url}"},
                                   **_errors(400, 401, 404, 413, 415, 429)}},
            "get": {"summary": "list jobs (newest first)", "parameters": [
                {"name": "state", "in": "query", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100}}],
                    "responses": {"200": {"description": "{jobs: [Job], queued}"}, **_errors(400, 401)}}},
        "/v1/jobs/{id}": {
            "get": {"summary": "a job's state, progress and report", "responses": {
                "200": {"description": "the job", "content": job}, **_errors(401, 404)}},
            "delete": {"summary": "cancel a queued or running job (running: stops at the next batch); delete a "
                                  "finished job and its files", "responses": {
                "200": {"description": "cancelled or deleted"},
                "202": {"description": "cancelling: {id, state, progress at the request}; the job stops before its "
                                       "next batch is recorded"},
                **_errors(401, 404)}}},
        "/v1/jobs/{id}/result": {"get": {"summary": "the dubbed mp4 (?download=1: as an attachment); Range supported",
                                         "responses": {"200": {"description": "video/mp4"}, **_errors(401, 404, 409)}}},
        "/v1/jobs/{id}/mask": {"get": {"summary": "a dub's mask of the changed pixels, a grey mp4 (submitted with "
                                                  "options {\"mask\": true})",
                                       "responses": {"200": {"description": "video/mp4"}, **_errors(401, 404, 409)}}},
    }


def _other_routes() -> Dict:
    return {
        "/v1/avatars": {"get": {"summary": "the prepared avatars", "responses": {"200": {"description": "{avatars}"}}}},
        "/v1/avatars/{name}/live": {"get": {
            "summary": "WebSocket: live speech through an avatar",
            "description": "Query: format=f32|s16 (16 kHz mono little-endian PCM), batch_size, on_silence, "
                           "silence_fade, min_silence. Server sends text "
                           "{type: ready, fps, width, height}; client sends binary PCM chunks and text {type: end}; "
                           "server sends one binary message per frame (12-byte header: uint32 frame index, float64 "
                           "seconds, little-endian; then the JPEG), text {type: dropped, count} when a slow client "
                           "lost frames, text {type: end, frames, dropped, kept_silent} at the end, "
                           "{type: error, message, fix} "
                           "on failure.",
            "responses": {"101": {"description": "switching protocols"}, **_errors(400, 401, 404, 429)}}},
        "/v1/health": {"get": {"summary": "workers and queue", "responses": {"200": {"description": "ok"}}}},
    }


def describe(config: ServerConfig) -> Dict:
    job_props = {k: {"type": t} for k, t in (("id", "string"), ("kind", "string"), ("state", "string"),
                                            ("created", "number"), ("error", "string"), ("result", "string"))}
    job_props["progress"] = {"type": "object", "properties": {"stage": {"type": "string"},
                                                              "done": {"type": "integer"},
                                                              "total": {"type": "integer"}}}
    job_props["report"] = {"type": "object"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "MuseTalk Enhanced dubbing server", "version": "1",
                 "description": f"Limits: uploads {config.max_upload_mb:.0f} MB, media {config.max_seconds:.0f} s, "
                                f"{config.max_queue} queued jobs, {config.max_live} live sessions."},
        "paths": {**_job_routes(), **_other_routes()},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "status": {"type": "integer"}, "field": {"type": "string", "nullable": True},
                    "message": {"type": "string"}, "fix": {"type": "string"}}}}},
                "Job": {"type": "object", "properties": job_props},
                "DubOptions": _option_schema("dub"),
                "AvatarOptions": _option_schema("avatar")}},
        "security": [{"bearer": []}] if config.token else [],
    }
