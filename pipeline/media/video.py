"""Video files with PyAV: frames streamed from a file in bounded memory, and an encoder that writes frames as they come.

* :func:`probe_video` reads every frame's timestamp by demuxing packets only (no decoding), so frame counts are exact,
  variable frame rate is visible and ``force_rate`` can pick frames by time.
* :class:`VideoFileFrames` is a :class:`~.frames.Frames` that decodes sequentially, a block at a time, with a small
  block cache (ping-pong loops read backwards without re-decoding the whole file).
* :class:`VideoWriter` encodes H.264 (yuv420p, crf) + AAC into an mp4 as frames arrive; the file appears under its final
  name only when complete (a cancelled run leaves nothing behind) and never replaces an existing file.
"""
from __future__ import annotations

import io
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO, List, Optional, Union

import numpy as np

from .audio import Audio, resample
from .frames import Frames, FramesError

Source = Union[str, BinaryIO]


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


# ---------------------------------------------------------------------------------------------------------------------
def _even(n: int) -> int:
    return n + (n & 1)


def unique_output_path(directory: str, prefix: str, ext: str = ".mp4") -> str:
    """``<directory>/<prefix>_00001.mp4`` with the first counter not in use (an existing file is never replaced)."""
    sub, base = os.path.split(prefix)
    folder = os.path.join(directory, sub)
    os.makedirs(folder, exist_ok=True)
    base = base or "MuseTalk"
    existing = set(os.listdir(folder))
    n = 1
    for f in existing:
        if f.startswith(base + "_") and f.endswith(ext):
            mid = f[len(base) + 1:-len(ext)]
            if mid.isdigit():
                n = max(n, int(mid) + 1)
    while True:
        path = os.path.join(folder, f"{base}_{n:05d}{ext}")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # reserve the name atomically
            os.close(fd)
            return path
        except FileExistsError:
            n += 1


AUDIO_FIT = ("pad_or_trim_audio", "hold_last_frame", "keep_both")


class VideoWriter:
    """Encode frames to H.264 + AAC mp4 as they arrive.

    ``write(batch)`` takes uint8 ``[n, H, W, 3]`` (or float 0..1). Odd sizes are padded by one replicated row/column
    (yuv420p needs even sizes). Audio is interleaved as the video advances. The output lives under a temporary name
    until :meth:`close` succeeds; :meth:`abort` (or an exception inside ``with``) deletes it. ``path`` must not exist
    unless it is an empty placeholder reserved by :func:`unique_output_path`.
    """

    def __init__(self, path: str, fps: float, width: int, height: int, audio: Optional[Audio] = None,
                 crf: int = 19, preset: str = "medium", audio_fit: str = "pad_or_trim_audio",
                 audio_bitrate: int = 192000, pix_fmt: str = "yuv420p"):
        import av

        if not fps or fps <= 0:
            raise VideoError(f"fps: must be > 0 to write a video (got {fps}).")
        if audio_fit not in AUDIO_FIT:
            raise VideoError(f"audio_fit: unknown value {audio_fit!r}; use one of {', '.join(AUDIO_FIT)}.")
        if not 0 <= int(crf) <= 51:
            raise VideoError(f"crf: must be within 0..51 (got {crf}); lower is better quality, 17-23 is typical.")
        if os.path.exists(path) and os.path.getsize(path) > 0:
            raise VideoError(f"output: {path} already exists; refusing to overwrite it. Choose another name.")
        self.path = path
        self.tmp = os.path.join(os.path.dirname(path) or ".", "." + os.path.basename(path) + ".partial.mp4")
        self.fps = float(fps)
        self.width, self.height = int(width), int(height)
        self.audio_fit = audio_fit
        self.frames_written = 0
        self._closed = False
        self._container = av.open(self.tmp, "w", format="mp4")
        rate = Fraction(self.fps).limit_denominator(1001 * 1000)
        self._v = self._container.add_stream("libx264", rate=rate)
        self._v.width, self._v.height = _even(self.width), _even(self.height)
        self._v.pix_fmt = pix_fmt
        self._v.options = {"crf": str(int(crf)), "preset": preset}
        self._a = None
        self._audio = None
        self._audio_pos = 0
        if audio is not None and audio.num_samples > 0:
            self._audio = audio
            rate_a = int(audio.sample_rate)
            if rate_a not in (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000):
                self._audio = Audio(resample(audio.samples, rate_a, 48000), 48000)
                rate_a = 48000
            if self._audio.channels > 2:  # AAC in mp4 is played everywhere as mono/stereo
                self._audio = Audio(self._audio.samples[:2], rate_a)
            layout = "stereo" if self._audio.channels == 2 else "mono"
            self._a = self._container.add_stream("aac", rate=rate_a, layout=layout)
            self._a.bit_rate = int(audio_bitrate)
            self._a_layout = layout
            self._a_rate = rate_a
            self._a_fifo_pts = 0

    # -- context manager ---------------------------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    # -- video --------------------------------------------------------------------------------------------------------
    def write(self, frames) -> None:
        import av

        arr = frames
        if hasattr(arr, "detach"):
            arr = arr.detach().cpu().numpy()
        arr = np.asarray(arr)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if arr.shape[1:] != (self.height, self.width, 3):
            raise VideoError(f"frames: got size {arr.shape[2]}x{arr.shape[1]}, the video being written is "
                             f"{self.width}x{self.height}; all frames must share one size.")
        pad_h, pad_w = _even(self.height) - self.height, _even(self.width) - self.width
        for img in arr:
            if pad_h or pad_w:
                img = np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts = self.frames_written
            for packet in self._v.encode(vf):
                self._container.mux(packet)
            self.frames_written += 1
        self._push_audio(self.frames_written / self.fps)

    # -- audio --------------------------------------------------------------------------------------------------------
    def _audio_end_sample(self) -> int:
        video_dur = self.frames_written / self.fps
        n = self._audio.num_samples
        if self.audio_fit == "pad_or_trim_audio":
            return int(round(video_dur * self._a_rate))
        return n

    def _push_audio(self, until_seconds: float, final: bool = False) -> None:
        if self._a is None:
            return
        import av

        limit = self._audio_end_sample() if final else min(int(round(until_seconds * self._a_rate)),
                                                           self._audio_end_sample())
        step = 1024 * 16
        while self._audio_pos < limit:
            b = min(limit, self._audio_pos + step)
            chunk = self._audio.samples[:, self._audio_pos:min(b, self._audio.num_samples)]
            if chunk.shape[1] < b - self._audio_pos:  # audio shorter than video: pad with silence
                chunk = np.pad(chunk, ((0, 0), (0, b - self._audio_pos - chunk.shape[1])))
            fmt = "fltp"
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk, dtype=np.float32), format=fmt,
                                            layout=self._a_layout)
            af.sample_rate = self._a_rate
            af.pts = self._audio_pos
            af.time_base = Fraction(1, self._a_rate)
            for packet in self._a.encode(af):
                self._container.mux(packet)
            self._audio_pos = b

    # -- finish -------------------------------------------------------------------------------------------------------
    def close(self) -> str:
        if self._closed:
            return self.path
        try:
            if self.frames_written == 0:
                raise VideoError("output: no frames were written; nothing to save.")
            self._push_audio(self.frames_written / self.fps, final=True)
            for packet in self._v.encode():
                self._container.mux(packet)
            if self._a is not None:
                for packet in self._a.encode():
                    self._container.mux(packet)
            self._container.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def extra_frames_for_audio(self) -> int:
        """How many more frames would make the video as long as the audio (for ``hold_last_frame``)."""
        if self._audio is None:
            return 0
        need = int(math.ceil(self._audio.duration * self.fps - 1e-6))
        return max(0, need - self.frames_written)

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except Exception:
            pass
        for p in (self.tmp,):
            try:
                os.remove(p)
            except OSError:
                pass
        try:  # drop an empty reserved placeholder
            if os.path.exists(self.path) and os.path.getsize(self.path) == 0:
                os.remove(self.path)
        except OSError:
            pass


def write_video(path: str, frames: Frames, audio: Optional[Audio] = None, crf: int = 19,
                audio_fit: str = "pad_or_trim_audio", batch: int = 16, progress=None) -> str:
    """Encode a whole :class:`Frames` sequence (streaming) with optional audio; returns the path."""
    with VideoWriter(path, frames.fps, frames.width, frames.height, audio, crf=crf, audio_fit=audio_fit) as w:
        total = len(frames)
        for b in frames.iter_batches(batch):
            w.write(b.rgb)
            if progress:
                progress("encode", b.stop, total)
        if audio_fit == "hold_last_frame":
            extra = w.extra_frames_for_audio()
            if extra:
                last = frames.read([total - 1])
                for _ in range(extra):
                    w.write(last)
    return path
