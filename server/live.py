"""``WS /v1/avatars/{name}/live``: the client streams its voice, the server streams the avatar's frames.

Protocol (also in ``GET /openapi.json`` and README "Dubbing server"):
- query ``format=f32`` (float32 little-endian, default) or ``s16`` (int16 little-endian); mono, 16 kHz; optional
  ``on_silence=keep_original``, ``silence_fade``, ``min_silence`` (the request fields of the same names).
- server -> client, first: text ``{"type": "ready", "avatar", "fps", "width", "height"}``.
- client -> server: binary messages of PCM samples, any length; text ``{"type": "end"}`` when the voice ends.
- server -> client: one binary message per frame: a 12-byte header (``uint32`` frame index, ``float64`` time in
  seconds, little-endian) then the JPEG; text ``{"type": "dropped", "count"}`` when frames were dropped because the
  client read too slowly; after ``end``, text ``{"type": "end", "frames", "dropped", "kept_silent"}`` (frames that
  kept the avatar's real mouth); on a failure text
  ``{"type": "error", "message", "fix"}`` and the socket closes.

Frames are made by :class:`pipeline.avatars.live.LiveSpeech` in a thread of their own. Voice that arrives while a
batch is being made is pushed at once with the next one (the speech catches up instead of queueing). Between the
maker and the socket sits a queue of :data:`.config.LIVE_QUEUE_FRAMES` frames: a client that reads too slowly
loses the oldest frames, the server's memory stays bounded.
"""
from __future__ import annotations

import asyncio
import json
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

import numpy as np

from .config import CONFIG, LIVE, LIVE_QUEUE_FRAMES, WORKERS
from .errors import avatar_refusal

HEADER = struct.Struct("<Id")
FORMATS = {"f32": np.float32, "s16": np.int16}


def decode_pcm(data: bytes, fmt: str) -> Tuple[np.ndarray, bytes]:
    """Samples in ``data`` as float32, and the bytes of a sample split across messages (kept for the next one)."""
    dtype = FORMATS[fmt]
    usable = len(data) - len(data) % np.dtype(dtype).itemsize
    pcm = np.frombuffer(data[:usable], dtype=np.dtype(dtype).newbyteorder("<"))
    return (pcm.astype(np.float32) / 32768.0 if fmt == "s16" else pcm.astype(np.float32)), data[usable:]


def encode_frame(index: int, fps: float, rgb: np.ndarray, quality: int = 85) -> bytes:
    import cv2

    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("JPEG encoding failed")
    return HEADER.pack(index, index / fps) + jpeg.tobytes()


class FrameQueue:
    """Frames for one client, oldest dropped when it is full."""

    def __init__(self, size: int = LIVE_QUEUE_FRAMES):
        self.items: asyncio.Queue = asyncio.Queue()
        self.size, self.dropped, self._unreported = size, 0, 0

    def put(self, item) -> None:
        while self.items.qsize() >= self.size:
            self.items.get_nowait()
            self.dropped += 1
            self._unreported += 1
        self.items.put_nowait(item)

    def take_drop_count(self) -> int:
        n, self._unreported = self._unreported, 0
        return n


class LiveSession:
    """One client's live speech: a voice buffer, a maker thread, a bounded frame queue."""

    def __init__(self, speech, fps: float, fmt: str):
        self.speech, self.fps, self.fmt = speech, fps, fmt
        self.pending: List[np.ndarray] = []
        self.split_sample = b""
        self.frames = FrameQueue()
        self.made, self.ended, self.abandoned = 0, False, False
        self.wake = asyncio.Event()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-speech")

    def add_voice(self, data: bytes) -> None:
        pcm, self.split_sample = decode_pcm(self.split_sample + data, self.fmt)
        self.pending.append(pcm)
        self.wake.set()

    def end(self) -> None:
        self.ended = True
        self.wake.set()

    async def make_frames(self) -> None:
        """Push what has arrived, queue the frames made, until the voice ended and the last frame is out."""
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.abandoned:               # the client left: make nothing more
                self.frames.put(None)
                return
            voice, self.pending = self._take_voice()
            if voice is not None:
                out = await loop.run_in_executor(self.pool, self.speech.push, voice)
                await self._queue(loop, out)
            if self.ended and not self.pending:
                out = await loop.run_in_executor(self.pool, self.speech.close)
                await self._queue(loop, out)
                self.frames.put(None)            # the end marker
                return

    def _take_voice(self) -> Tuple[Optional[np.ndarray], List]:
        if not self.pending:
            return None, []
        return np.concatenate(self.pending), []

    async def _queue(self, loop, made) -> None:
        for k, rgb in made:
            self.frames.put(await loop.run_in_executor(self.pool, encode_frame, k, self.fps, rgb))
            self.made += 1

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


async def send_frames(ws, session: LiveSession) -> None:
    """Send queued frames (and drop notices) until the end marker."""
    while True:
        item = await session.frames.items.get()
        dropped = session.frames.take_drop_count()
        if dropped:
            await ws.send_str(json.dumps({"type": "dropped", "count": dropped}))
        if item is None:
            await ws.send_str(json.dumps({"type": "end", "frames": session.made - session.frames.dropped,
                                          "dropped": session.frames.dropped,
                                          "kept_silent": len(session.speech.kept_silent)}))
            return
        await ws.send_bytes(item)


async def receive_voice(ws, session: LiveSession) -> None:
    """Voice chunks until ``end`` (or the client leaves: then the speech ends too)."""
    from aiohttp import WSMsgType

    ended = False
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            session.add_voice(msg.data)
        elif msg.type == WSMsgType.TEXT:
            try:
                kind = json.loads(msg.data).get("type")
            except (ValueError, AttributeError):
                kind = None
            if kind == "end":
                ended = True
                break
            await ws.send_str(json.dumps({"type": "error", "message": f"unknown text message {msg.data[:80]!r}",
                                          "fix": 'send PCM as binary messages and {"type": "end"} at the end'}))
        else:
            break
    session.abandoned = not ended
    session.end()


async def live_route(request):
    """Open the avatar and its speech (404/429 before the upgrade), then run voice in / frames out together."""
    from aiohttp import web

    from .errors import ApiError, bad_request

    fmt = request.query.get("format", "f32")
    if fmt not in FORMATS:
        raise bad_request("format", f"unknown PCM format {fmt!r}",
                          "use f32 (float32 LE) or s16 (int16 LE), 16 kHz mono")
    sessions = request.app[LIVE]
    if len(sessions) >= request.app[CONFIG].max_live:
        raise ApiError(429, None, f"{len(sessions)} live sessions are running, the most this server allows",
                       "try again when one ends (or start the server with a larger --max-live)")
    loop = asyncio.get_running_loop()
    speech = await loop.run_in_executor(None, open_speech, request.match_info["name"], request.app[WORKERS][0].device,
                                        request.query.get("batch_size", "4"), silence_query(request.query))
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4 << 20)
    await ws.prepare(request)
    session = LiveSession(speech, speech.avatar.fps, fmt)
    sessions[id(session)] = session
    try:
        await ws.send_str(json.dumps({"type": "ready", "avatar": speech.avatar.name, "fps": speech.avatar.fps,
                                      "width": speech.avatar.frames.width, "height": speech.avatar.frames.height}))
        await run_session(ws, session)
    finally:
        sessions.pop(id(session), None)
        session.close()
        await ws.close()
    return ws


async def run_session(ws, session: LiveSession) -> None:
    """Receive, make and send together; a client that leaves stops the making; a failure is told to the client."""
    receiving = asyncio.ensure_future(receive_voice(ws, session))
    making = asyncio.ensure_future(session.make_frames())
    sending = asyncio.ensure_future(send_frames(ws, session))
    try:
        await asyncio.wait([making, sending], return_when=asyncio.FIRST_EXCEPTION)
        for task in (making, sending):
            if task.done() and task.exception() is not None:
                raise task.exception()
        await sending
    except Exception as exc:
        if not ws.closed:
            await ws.send_str(json.dumps({"type": "error", "message": str(exc),
                                          "fix": "check the avatar (prepare it again if it changed) and the voice"}))
    finally:
        for task in (receiving, making, sending):
            task.cancel()


def silence_query(query):
    """``?on_silence=keep_original&silence_fade=3&min_silence=0.3`` -> pipeline/lipsync/silence.py SilenceOptions,
    checked by the request fields (pipeline/jobs/requests.py SilenceSettings)."""
    from ..pipeline.jobs import RequestError
    from ..pipeline.jobs.fields import build, checked, specs
    from ..pipeline.jobs.requests import SilenceSettings
    from .errors import bad_request

    names = {s.name for s in specs(SilenceSettings)}
    try:
        settings = build(SilenceSettings, {k: v for k, v in query.items() if k in names}, prefix="")
        checked(settings)
    except RequestError as exc:
        raise bad_request(exc.field, exc.message, exc.fix) from None
    return settings.silence_options()


def open_speech(name: str, device: str, batch_size: str, silence=None):
    """The avatar and its live speech on the workers' first device (models from the shared cache)."""
    from ..pipeline.avatars import Avatar, AvatarError
    from ..pipeline.avatars.live import LiveSpeech
    from ..pipeline.runtime import Runtime, pick_device
    from .errors import bad_request

    try:
        size = int(batch_size)
    except ValueError:
        raise bad_request("batch_size", f"{batch_size!r} is not a whole number", "e.g. ?batch_size=4")
    try:
        avatar = Avatar(name)
        return LiveSpeech(avatar, Runtime(device=pick_device(device), show_progress=False), batch_size=size,
                          silence=silence)
    except AvatarError as exc:

        raise avatar_refusal("name", name, exc)
