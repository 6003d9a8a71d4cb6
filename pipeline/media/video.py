"""Reading video files with PyAV: frames streamed from a file in bounded memory.

* :func:`probe_video` reads every frame's timestamp by demuxing packets only (no decoding), so frame counts are exact,
  variable frame rate is visible and ``force_rate`` can pick frames by time.
* :class:`VideoFileFrames` is a :class:`~.frames.Frames` that decodes sequentially, a block at a time, with a small
  block cache (ping-pong loops read backwards without re-decoding the whole file).

Writing is in :mod:`.writer`.
"""
from __future__ import annotations

import io
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import BinaryIO, List, Optional, Union

import numpy as np

from .frames import Frames, FramesError

Source = Union[str, BinaryIO]
MAX_FORCE_RATE = 240.0      # frames per second a video may be resampled to (force_rate)


class VideoError(FramesError):
    """Bad video input or output; the message names the input and the fix."""


def _name(source: Source) -> str:
    return os.path.basename(source) if isinstance(source, str) else "<video stream>"


def _open(source: Source, name: str = "video"):
    import av

    if isinstance(source, str):
        if not os.path.isfile(source):
            raise VideoError(f"{name}: file not found: {source!r}. Put the video in ComfyUI's input folder (or give a "
                             "full path).")
        if os.path.getsize(source) == 0:
            raise VideoError(f"{name}: {_name(source)} is empty (0 bytes). Re-export or re-upload the video.")
    else:
        source.seek(0)
    try:
        return av.open(source, "r")
    except Exception as exc:
        raise VideoError(f"{name}: cannot open {_name(source)} as a video ({type(exc).__name__}: {exc}). Use a video "
                         "file such as mp4, mov, mkv, webm or avi.") from exc


@dataclass
class VideoInfo:
    width: int                 # displayed width (after rotation)
    height: int                # displayed height (after rotation)
    coded_width: int
    coded_height: int
    rotation: int              # counter-clockwise degrees to apply for display (0, 90, 180, 270)
    times: np.ndarray          # float64 seconds of every frame, presentation order, starting at 0
    avg_fps: float
    is_vfr: bool
    has_audio: bool
    pix_fmt: str
    codec: str
    duration: float = field(default=0.0)
    pts: np.ndarray = field(default=None, repr=False)  # int64 stream pts of every frame, presentation order

    @property
    def frame_count(self) -> int:
        return int(self.times.shape[0])


def probe_video(source: Source, name: str = "video") -> VideoInfo:
    with _open(source, name) as c:
        if not c.streams.video:
            raise VideoError(f"{name}: {_name(source)} has no video stream. Use a file with a picture track.")
        s = c.streams.video[0]
        tb = float(s.time_base) if s.time_base else 1.0 / 90000
        pts: List[int] = []
        for packet in c.demux(s):
            if packet.size == 0 or packet.pts is None and packet.dts is None:
                continue
            pts.append(packet.pts if packet.pts is not None else packet.dts)
        if not pts:
            raise VideoError(f"{name}: {_name(source)} contains no video frames.")
        arr = np.unique(np.asarray(pts, dtype=np.int64))
    with _open(source, name) as c:
        s = c.streams.video[0]
        first = None
        try:
            for f in c.decode(s):
                first = f
                break
        except Exception as exc:
            raise VideoError(f"{name}: {_name(source)} could not be decoded ({type(exc).__name__}: {exc}). The file "
                             "may be corrupt or truncated; re-export it.") from exc
        if first is None:
            raise VideoError(f"{name}: {_name(source)} has a video stream but no decodable frame (corrupt file?).")
        rot = int(round((getattr(first, "rotation", 0) or 0) / 90.0)) % 4 * 90
        cw, ch = first.width, first.height
        pix_fmt = first.format.name
        codec = s.codec_context.name
        has_audio = bool(c.streams.audio)
        duration = float(c.duration / 1e6) if c.duration else 0.0
        declared = s.average_rate or s.guessed_rate  # read while the container is open (PyAV frees it on close)
        declared = float(declared) if declared else 0.0
    times = (arr - arr[0]).astype(np.float64) * tb
    if times.shape[0] >= 2:
        d = np.diff(times)
        med = float(np.median(d)) if d.size else 0.0
        avg_fps = (times.shape[0] - 1) / float(times[-1]) if times[-1] > 0 else 0.0
        is_vfr = bool(d.size and med > 0 and (np.abs(d - med) > 0.25 * med).mean() > 0.01)
        if not is_vfr and med > 0:
            avg_fps = 1.0 / med
            # snap to the stream's declared rate when it agrees (29.97 stays 30000/1001 exactly)
            if declared and abs(declared - avg_fps) / avg_fps < 0.01:
                avg_fps = declared
    else:
        avg_fps = declared or 25.0
        is_vfr = False
    w, h = (ch, cw) if rot in (90, 270) else (cw, ch)
    return VideoInfo(w, h, cw, ch, rot, times, avg_fps, is_vfr, has_audio, pix_fmt, codec, duration, arr)


def select_frames(times: np.ndarray, force_rate: float = 0.0, skip_first_frames: int = 0,
                  select_every_nth: int = 1, frame_load_cap: int = 0) -> np.ndarray:
    """Source frame index for every output frame.

    ``force_rate`` > 0 resamples by time: output frame k shows the source frame on screen at ``k / force_rate``
    (the last frame whose timestamp is <= that time, so VFR timing is respected). Then ``skip_first_frames``,
    ``select_every_nth`` and ``frame_load_cap`` apply to the resulting sequence (VideoHelperSuite's order).
    """
    n = int(times.shape[0])
    if force_rate and force_rate > 0:
        end = float(times[-1]) + (float(np.median(np.diff(times))) if n > 1 else 1.0 / force_rate)
        count = max(1, int(math.floor(end * force_rate + 1e-6)))
        t = np.arange(count, dtype=np.float64) / force_rate
        idx = np.searchsorted(times, t + 1e-9, side="right") - 1
        idx = np.clip(idx, 0, n - 1)
    else:
        idx = np.arange(n)
    idx = idx[max(0, int(skip_first_frames)):]
    idx = idx[::max(1, int(select_every_nth))]
    if frame_load_cap and frame_load_cap > 0:
        idx = idx[:int(frame_load_cap)]
    return idx.astype(np.int64)


class VideoFileFrames(Frames):
    """Frames decoded from a video file (or an in-memory stream) on demand, ``block`` frames at a time.

    Memory is bounded by ``block * cache_blocks`` decoded frames. Ascending access decodes each frame once; going
    backwards seeks to the nearest keyframe of the needed block.
    """

    def __init__(self, source: Source, force_rate: float = 0.0, skip_first_frames: int = 0,
                 select_every_nth: int = 1, frame_load_cap: int = 0, block: int = 0, cache_blocks: int = 3,
                 name: str = "video", info: Optional[VideoInfo] = None, cache_bytes: int = 384 << 20):
        if isinstance(source, (bytes, bytearray)):
            source = io.BytesIO(source)
        for label, value in (("force_rate", force_rate), ("skip_first_frames", skip_first_frames),
                             ("frame_load_cap", frame_load_cap)):
            if value is None or value < 0:
                raise VideoError(f"{label}: must be >= 0 (got {value}); 0 means 'keep all'.")
        if select_every_nth is None or select_every_nth < 1:
            raise VideoError(f"select_every_nth: must be >= 1 (got {select_every_nth}).")
        self.source = source
        self.name = name
        self.info = info or probe_video(source, name)
        self.src_index = select_frames(self.info.times, force_rate, skip_first_frames, select_every_nth,
                                       frame_load_cap)
        if self.src_index.shape[0] == 0:
            raise VideoError(f"{name}: no frames left after skip_first_frames={skip_first_frames} (the video has "
                             f"{self.info.frame_count} frames). Lower skip_first_frames.")
        base = float(force_rate) if force_rate and force_rate > 0 else self.info.avg_fps
        self.fps = base / max(1, int(select_every_nth))
        self.width, self.height = self.info.width, self.info.height
        # decoded-frame cache bounded in bytes: 32-frame blocks for small videos, fewer frames per block for 1080p/4K
        frame_bytes = self.width * self.height * 3
        self.block = max(1, int(block)) if block else max(4, min(32, int(cache_bytes // (cache_blocks * frame_bytes))))
        self.cache_blocks = max(1, int(cache_blocks))
        self._cache: "OrderedDict[int, np.ndarray]" = OrderedDict()  # source block number -> uint8 frames
        self._lock = threading.Lock()
        self._container = None
        self._iter = None
        self._next_src = 0  # source index of the next frame the open decoder will yield
        self._pending = None

    # -- sequence -----------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.src_index.shape[0])

    @property
    def source_path(self) -> Optional[str]:
        return self.source if isinstance(self.source, str) else None

    def __getstate__(self):  # picklable (ComfyUI caches outputs); the decoder is reopened lazily
        d = dict(self.__dict__)
        d["_container"], d["_iter"], d["_lock"], d["_pending"] = None, None, None, None
        d["_cache"] = OrderedDict()
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._lock = threading.Lock()
        self._next_src = 0

    def __copy__(self):
        other = VideoFileFrames.__new__(VideoFileFrames)
        other.__setstate__(self.__getstate__())
        return other

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
        self._container, self._iter, self._next_src = None, None, 0
        self._cache.clear()

    # -- decoding -----------------------------------------------------------------------------------------------------
    def _to_rgb(self, frame) -> np.ndarray:
        arr = frame.to_ndarray(format="rgb24")
        k = self.info.rotation // 90
        if k:
            arr = np.ascontiguousarray(np.rot90(arr, k))
        return arr

    def _position(self, a: int) -> None:
        """Make the decoder yield source frame ``a`` (or earlier frames first) next."""
        if self._container is None:
            self._container = _open(self.source, self.name)
            self._container.streams.video[0].thread_type = "AUTO"
            self._iter = self._container.decode(self._container.streams.video[0])
            self._next_src = 0
        if self._next_src <= a <= self._next_src + 2 * self.block:
            return  # decoding forward is cheaper than seeking
        stream = self._container.streams.video[0]
        self._container.seek(int(self.info.pts[a]), stream=stream, backward=True, any_frame=False)
        self._iter = self._container.decode(stream)
        self._next_src = -1  # unknown until the first frame after the seek arrives
        self._pending = None

    def _decode_block(self, blk: int) -> np.ndarray:
        n_src = self.info.frame_count
        a, b = blk * self.block, min(n_src, (blk + 1) * self.block)
        out = np.empty((b - a, self.height, self.width, 3), np.uint8)
        filled = np.zeros(b - a, bool)
        pending, self._pending = self._pending, None
        if pending is not None and a <= pending[0] < b:
            out[pending[0] - a] = pending[1]
            filled[pending[0] - a] = True
        if not filled[-1]:
            self._position(a)
            pts = self.info.pts
            for frame in self._iter:
                if frame.pts is not None:
                    idx = int(np.searchsorted(pts, frame.pts, side="left"))
                else:
                    idx = max(0, self._next_src)
                self._next_src = idx + 1
                if idx < a:
                    continue
                if idx >= b:  # a frame of a later block (gap in this one): keep it for the next call
                    self._pending = (idx, self._to_rgb(frame))
                    break
                out[idx - a] = self._to_rgb(frame)
                filled[idx - a] = True
                if idx == b - 1:
                    break
        if not filled.all():
            if not filled.any():
                raise VideoError(f"{self.name}: failed to decode frames {a}-{b - 1} of {_name(self.source)} "
                                 "(corrupt or truncated file?).")
            for j in range(b - a):  # a frame the decoder skipped: show the previous one (never crash, never shift)
                if not filled[j]:
                    out[j] = out[j - 1] if j > 0 and filled[j - 1] else out[np.argmax(filled)]
                    filled[j] = True
        return out

    def _block(self, blk: int) -> np.ndarray:
        if blk in self._cache:
            self._cache.move_to_end(blk)
            return self._cache[blk]
        data = self._decode_block(blk)
        self._cache[blk] = data
        while len(self._cache) > self.cache_blocks:
            self._cache.popitem(last=False)
        return data

    def _read_src(self, src_indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(src_indices), self.height, self.width, 3), np.uint8)
        with self._lock:
            for j, s in enumerate(src_indices):
                blk = int(s) // self.block
                out[j] = self._block(blk)[int(s) - blk * self.block]
        return out

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        return self._read_src(self.src_index[start:stop])

    def iter_batches(self, batch_size: int, start: int = 0, stop=None):
        try:
            yield from super().iter_batches(batch_size, start, stop)
        finally:
            if stop is None or stop >= len(self):
                self.close()  # a finished pass releases the decoder (reopened lazily when needed again)
