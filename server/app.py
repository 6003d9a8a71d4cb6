"""The routes: jobs (submit, follow, fetch, cancel, list), avatars (list, live), the page and the API description.

Every refusal is the one JSON error shape (``errors.ApiError``); an unexpected failure answers 500 in the same
shape and the server goes on.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import threading
from typing import Dict, Optional

from aiohttp import web

from .config import CONFIG, LIVE, STORE, WAKE, WORKERS, ServerConfig
from .errors import ApiError, avatar_refusal, bad_request, not_found
from .jobs import FINISHED, JobStore
from .live import live_route
from .options import MASK_OPTION, build_request
from .safety import (AUDIO_EXTS, VIDEO_EXTS, check_host, check_origin, check_upload, confined_path, save_upload,
                     server_token, token_ok, unauthorized, upload_name)
from .worker import Worker

log = logging.getLogger("musetalk_enhanced.server")
PAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page")
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")


# -- middlewares ---------------------------------------------------------------------------------------------------
@web.middleware
async def json_errors(request, handler):
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        err = ApiError(exc.status, None, exc.reason, "see GET /openapi.json for the routes and their fields")
        return web.json_response(err.body(), status=exc.status)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        log.exception("unexpected failure on %s %s", request.method, request.path)
        err = ApiError(500, None, f"internal error ({type(exc).__name__})", "the server log has the details")
        return web.json_response(err.body(), status=500)


@web.middleware
async def same_site(request, handler):
    """Every request names this server in ``Host``; a state-changing one (and a WebSocket) from a web page comes
    from the server's own page."""
    check_host(request.headers.get("Host", ""), request.app[CONFIG].host_names())
    if request.method in STATE_CHANGING or request.headers.get("Upgrade", "").lower() == "websocket":
        check_origin(request.headers.get("Origin"), request.headers.get("Host", ""))
    return await handler(request)


@web.middleware
async def bearer_auth(request, handler):
    protected = request.path.startswith("/v1/") or request.path == "/openapi.json"
    query_token = request.query.get("access_token") if takes_query_token(request) else None
    if protected and not token_ok(request.app[CONFIG].token, request.headers.get("Authorization", ""),
                                  query_token):
        raise unauthorized()
    return await handler(request)


def takes_query_token(request: web.Request) -> bool:
    """``?access_token=`` only where a browser cannot send a header: the live WebSocket and a result's <video>."""
    path = request.path
    return request.method == "GET" and ((path.startswith("/v1/avatars/") and path.endswith("/live")) or
                                        (path.startswith("/v1/jobs/") and path.endswith(("/result", "/mask"))))


# -- jobs ----------------------------------------------------------------------------------------------------------
async def submit_job(request: web.Request) -> web.Response:
    config, store = request.app[CONFIG], request.app[STORE]
    if store.count("queued") >= config.max_queue:
        raise ApiError(429, None, f"the queue is full ({config.max_queue} jobs waiting)",
                       "retry after a job finishes (GET /v1/jobs shows the queue)", {"Retry-After": "10"})
    job_id = store.new_folder()
    try:
        fields = await read_job_fields(request, store.folder(job_id, "inputs"), config)
        # decoding the inputs once (to refuse corrupt files now) runs beside the event loop, not on it
        kind, inputs = await asyncio.get_running_loop().run_in_executor(None, job_inputs, fields, config)
        options = fields.get("options") or {}
        build_request(kind, options, inputs, out="result.mp4")
        if store.count("queued") >= config.max_queue:
            raise ApiError(429, None, "the queue is full", "retry after a job finishes", {"Retry-After": "10"})
        job = store.create(job_id, kind, inputs, options)
    except BaseException:
        shutil.rmtree(store.folder(job_id), ignore_errors=True)
        raise
    request.app[WAKE].set()
    return web.json_response({"id": job.id, "state": job.state, "url": f"/v1/jobs/{job.id}"}, status=202)


async def read_job_fields(request: web.Request, inputs_dir: str, config: ServerConfig) -> Dict:
    """A multipart form (files or media-folder paths) or a JSON body (paths) -> {field: value or saved path}."""
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError as exc:
            raise bad_request("body", f"not valid JSON ({exc})", "send a JSON object or a multipart form")
        if not isinstance(body, dict):
            raise bad_request("body", "the JSON body must be an object", '{"video": "...", "audio": "..."}')
        return {k: ("path", v) if k in ("video", "audio") else v for k, v in body.items()}
    if not request.content_type.startswith("multipart/"):
        raise ApiError(415, "Content-Type", f"{request.content_type or 'no content type'} is not accepted",
                       "send multipart/form-data (uploads) or application/json (media-folder paths)")
    fields: Dict = {}
    reader = await request.multipart()
    max_bytes = int(config.max_upload_mb * (1 << 20))
    async for part in reader:
        name = part.name or ""
        if name in ("video", "audio") and part.filename:
            dest = os.path.join(inputs_dir, upload_name(name, part.filename,
                                                        VIDEO_EXTS if name == "video" else AUDIO_EXTS))
            await save_upload(part, name, dest, max_bytes)
            fields[name] = ("upload", dest)
        elif name in ("video", "audio"):
            fields[name] = ("path", (await part.text()).strip())
        elif name == "options":
            fields[name] = parse_options_text(await part.text())
        elif name == "avatar":
            fields[name] = (await part.text()).strip()
        else:
            raise bad_request(name or "form", f"unknown form field {name!r}", "use video, audio, avatar, options")
    return fields


def parse_options_text(text: str):
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise bad_request("options", f"not valid JSON ({exc})", 'e.g. {"batch_size": 4}')


def job_inputs(fields: Dict, config: ServerConfig):
    """Which kind of job, and its input files checked (readable, within the limits, inside the media folder)."""
    unknown = set(fields) - {"video", "audio", "avatar", "options"}
    if unknown:
        field = sorted(unknown)[0]
        raise bad_request(field, f"unknown field {field!r}", "use video, audio, avatar, options")
    avatar = fields.get("avatar")
    if avatar and "video" in fields:
        raise bad_request("avatar", "a job takes either a video or an avatar, not both",
                          "leave out video to speak through the avatar, or avatar to dub the video")
    if avatar:
        return "avatar", {"avatar": checked_avatar(avatar), "audio": input_file(fields, "audio", config, True)}
    if "video" not in fields:
        raise bad_request("video", "missing", "upload the video to dub (or name an avatar)")
    inputs = {"video": input_file(fields, "video", config, True)}
    if "audio" in fields:
        inputs["audio"] = input_file(fields, "audio", config, True)
    return "dub", inputs


def input_file(fields: Dict, name: str, config: ServerConfig, required: bool) -> Optional[str]:
    if name not in fields:
        if required:
            raise bad_request(name, "missing", f"upload the {name} file or give its media-folder path")
        return None
    how, value = fields[name]
    path = value if how == "upload" else confined_path(name, value, config.media_dir)
    check_upload(name, path, config)
    return path


def checked_avatar(name) -> str:
    from ..pipeline.avatars import AvatarError, read_manifest

    if not isinstance(name, str):
        raise bad_request("avatar", "the avatar must be a name", "GET /v1/avatars lists them")
    try:
        read_manifest(name)
    except AvatarError as exc:
        raise avatar_refusal("avatar", name, exc)
    return name


def job_or_404(request: web.Request):
    job = request.app[STORE].get(request.match_info["id"])
    if job is None:
        raise not_found("id", f"no job {request.match_info['id']!r}", "GET /v1/jobs lists the jobs")
    return job


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(job_or_404(request).public())


async def list_jobs(request: web.Request) -> web.Response:
    state = request.query.get("state")
    from .jobs import STATES

    if state and state not in STATES:
        raise bad_request("state", f"unknown state {state!r}", f"use one of {', '.join(STATES)}")
    try:
        limit = max(1, min(1000, int(request.query.get("limit", "100"))))
    except ValueError:
        raise bad_request("limit", "not a whole number", "e.g. ?limit=50")
    jobs = request.app[STORE].list(state, limit)
    return web.json_response({"jobs": [j.public() for j in jobs],
                              "queued": request.app[STORE].count("queued")})


async def job_result(request: web.Request) -> web.StreamResponse:
    job = job_or_404(request)
    return finished_file(request, job, request.app[STORE].result_path(job.id), "dubbed")


async def job_mask(request: web.Request) -> web.StreamResponse:
    """The grey mp4 of the pixels a dub changed, when it was submitted with ``{"mask": true}``."""
    job = job_or_404(request)
    if not (job.options or {}).get(MASK_OPTION):
        raise ApiError(409, "id", f"job {job.id} was submitted without a mask",
                       'submit the job again with options {"mask": true}')
    return finished_file(request, job, request.app[STORE].mask_path(job.id), "mask")


def finished_file(request: web.Request, job, path: str, name: str) -> web.StreamResponse:
    if job.state != "done" or not os.path.isfile(path):
        if job.state in FINISHED:
            raise ApiError(409, "id", f"job {job.id} {job.state}: it has no result and never will",
                           "see its error in GET /v1/jobs/{id}, and submit it again")
        raise ApiError(409, "id", f"job {job.id} is {job.shown_state}, it has no result yet",
                       "poll GET /v1/jobs/{id} until its state is done")
    disposition = "attachment" if request.query.get("download") else "inline"
    return web.FileResponse(path, headers={"Content-Type": "video/mp4", "Content-Disposition":
                                           f'{disposition}; filename="{name}_{job.id[:8]}.mp4"'})


async def cancel_job(request: web.Request) -> web.Response:
    """Queued: cancelled at once. Running: written down as ``cancelling`` (a restart ends it cancelled) and stopped
    at the next network call or frame. Finished: the job and its files are deleted."""
    store, job = request.app[STORE], job_or_404(request)
    if job.state in FINISHED:
        store.delete(job.id)
        return web.json_response({"id": job.id, "deleted": True})
    if store.cancel_queued(job.id):
        return web.json_response({"id": job.id, "state": "cancelled"})
    store.request_cancel(job.id)
    progress = None
    for w in request.app[WORKERS]:
        if w.current == job.id:
            w.cancel_requests.add(job.id)
            progress = dict(w.progress)      # where it stands now: it stops before the next step is recorded
    return web.json_response({"id": job.id, "state": "cancelling", "progress": progress}, status=202)


# -- avatars -------------------------------------------------------------------------------------------------------
async def list_avatars(request: web.Request) -> web.Response:
    from ..pipeline.avatars import AvatarError, list_avatars as names, read_manifest

    out = []
    for name in names():
        try:
            m = read_manifest(name)
            out.append({"name": name, "fps": m["fps"], "frames": m["num_frames"], "width": m["width"],
                        "height": m["height"], "live": f"/v1/avatars/{name}/live"})
        except AvatarError as exc:
            out.append({"name": name, "error": str(exc)})
    return web.json_response({"avatars": out})


async def live_avatar(request: web.Request) -> web.StreamResponse:
    return await live_route(request)


# -- page, description, health -------------------------------------------------------------------------------------
async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(os.path.join(PAGE_DIR, "index.html"))


async def openapi(request: web.Request) -> web.Response:
    from .openapi import describe

    return web.json_response(describe(request.app[CONFIG]))


async def health(request: web.Request) -> web.Response:
    workers = [{"device": w.device, "job": w.current or None, "alive": w.is_alive()} for w in request.app[WORKERS]]
    from ..pipeline.model_cache import load_counts

    return web.json_response({"ok": all(w["alive"] for w in workers), "workers": workers,
                              "queued": request.app[STORE].count("queued"), "model_loads": load_counts()})


# -- the application -----------------------------------------------------------------------------------------------
def make_app(config: ServerConfig) -> web.Application:
    config.check()
    config.token = server_token(config)
    app = web.Application(middlewares=[json_errors, same_site, bearer_auth], client_max_size=1 << 20)
    app[CONFIG], app[WAKE], app[LIVE] = config, threading.Event(), {}
    app.router.add_get("/", page)
    app.router.add_static("/page/", PAGE_DIR)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/v1/health", health)
    app.router.add_post("/v1/jobs", submit_job)
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_get("/v1/jobs/{id}", get_job)
    app.router.add_get("/v1/jobs/{id}/result", job_result)
    app.router.add_get("/v1/jobs/{id}/mask", job_mask)
    app.router.add_delete("/v1/jobs/{id}", cancel_job)
    app.router.add_get("/v1/avatars", list_avatars)
    app.router.add_get("/v1/avatars/{name}/live", live_avatar)
    app.on_startup.append(start_workers)
    app.on_cleanup.append(stop_workers)
    return app


async def start_workers(app: web.Application) -> None:
    config = app[CONFIG]
    os.makedirs(config.data_dir, exist_ok=True)
    app[STORE] = JobStore(config.db_path, config.jobs_dir, keep_inputs=config.keep_inputs)
    for note in app[STORE].recover() + app[STORE].prune(config.keep_days):
        log.info(note)
    app[WORKERS] = [Worker(app[STORE], d, app[WAKE], config.auto_download) for d in config.devices]
    for w in app[WORKERS]:
        w.start()


async def stop_workers(app: web.Application) -> None:
    for w in app[WORKERS]:
        w.stop()
    for w in app[WORKERS]:
        await asyncio.get_running_loop().run_in_executor(None, w.join, 30)
    app[STORE].close()
