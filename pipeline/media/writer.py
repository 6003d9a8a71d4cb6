"""Writing video files with PyAV: the one lossy encode of a workflow.

:class:`VideoWriter` encodes H.264 (yuv420p, crf) + AAC into an mp4 as frames arrive; the file appears under its final
name only when complete (a cancelled run leaves nothing behind) and never replaces an existing file.
:func:`write_video` encodes a whole :class:`~.frames.Frames` sequence; :func:`unique_output_path` picks a new name.

Encoder (``encoder=``, :data:`ENCODERS`): ``libx264`` (the default) is the software encoder; ``nvenc`` uses the
NVIDIA hardware encoder ``h264_nvenc`` (crf becomes its constant-quality ``cq``) when it really opens on this
machine; ``auto`` tries it only when CUDA is available. Whenever h264_nvenc does not open the writer falls back to
libx264, and :attr:`VideoWriter.encoder` / :attr:`VideoWriter.encoder_note` record what was used and why
(:func:`pick_encoder`).
"""
from __future__ import annotations

import functools
import math
import os
from fractions import Fraction
from typing import Optional, Tuple

import numpy as np

from .audio import Audio, resample
from .frames import Frames, image_to_uint8
from .video import VideoError


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
DEFAULT_CRF = 19                 # H.264 quality: visually transparent for faces, ~1/3 the size of crf 14
CRF_RANGE = (0, 51)              # libx264: 0 = lossless
ENCODERS = ("libx264", "nvenc", "auto")   # software; NVIDIA h264_nvenc if it opens; nvenc only where CUDA is available
DEFAULT_ENCODER = "libx264"
NVENC_OPTIONS = {"rc": "vbr", "preset": "p4"}   # h264_nvenc: constant quality (cq = crf) in variable-bitrate mode


def _rate(fps) -> Fraction:
    return Fraction(float(fps)).limit_denominator(1001 * 1000)


@functools.lru_cache(maxsize=None)
def _nvenc_error(width: int, height: int, rate: Fraction) -> str:
    """Open a throwaway h264_nvenc encoder of this size and rate: "" when it opens, else why not (cached per process:
    a missing GPU/driver does not appear later, and each try loads the CUDA driver)."""
    import av
    import av.logging

    if "h264_nvenc" not in av.codecs_available:
        return "this FFmpeg build has no h264_nvenc"
    level = av.logging.get_level()   # PyAV keeps FFmpeg's log off by default; its message says why, so catch it here
    logs = []
    try:
        av.logging.set_level(av.logging.ERROR)
        with av.logging.Capture() as logs:
            ctx = av.CodecContext.create("h264_nvenc", "w")
            ctx.width, ctx.height = _even(width), _even(height)
            ctx.pix_fmt = "yuv420p"
            ctx.time_base = 1 / rate
            ctx.framerate = rate
            ctx.options = dict(NVENC_OPTIONS, cq=str(DEFAULT_CRF))
            ctx.open()
        return ""
    except Exception as e:  # no GPU, no driver (libcuda), unsupported size or preset, sessions exhausted, ...
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        said = "; ".join(m.strip() for _, _, m in logs if m.strip())
        return " ".join(f"{why}: {said}".split()) if said else " ".join(why.split())
    finally:
        av.logging.set_level(level)


def pick_encoder(choice: str, width: int, height: int, fps, crf: int = DEFAULT_CRF) -> Tuple[str, str]:
    """``(ffmpeg codec used, note)`` for an ``encoder`` choice (one of :data:`ENCODERS`): the codec is ``"libx264"``
    or ``"h264_nvenc"``; the note is one line saying why the choice was not met (``""`` when it was). crf 0 asks for
    a lossless file, which only libx264 makes here (NVENC reads cq 0 as "pick a quality")."""
    if choice not in ENCODERS:
        raise VideoError(f"encoder: unknown value {choice!r}; use one of {', '.join(ENCODERS)}.")
    if choice == "libx264":
        return "libx264", ""
    if int(crf) == 0:
        return "libx264", f"encoder {choice}: crf 0 (lossless) is made by libx264; used libx264."
    if choice == "auto":
        import torch

        if not torch.cuda.is_available():
            return "libx264", "encoder auto: CUDA is not available, used libx264."
    err = _nvenc_error(int(width), int(height), _rate(fps))
    if err:
        return "libx264", f"encoder {choice}: h264_nvenc did not open ({err}); fell back to libx264."
    return "h264_nvenc", ""


class VideoWriter:
    """Encode frames to H.264 + AAC mp4 as they arrive.

    ``write(batch)`` takes uint8 ``[n, H, W, 3]`` (or float 0..1). Odd sizes are padded by one replicated row/column
    (yuv420p needs even sizes). Audio is interleaved as the video advances. The output lives under a temporary name
    until :meth:`close` succeeds; :meth:`abort` (or an exception inside ``with``) deletes it. ``path`` must not exist
    unless it is an empty placeholder reserved by :func:`unique_output_path`.
    """

    def __init__(self, path: str, fps: float, width: int, height: int, audio: Optional[Audio] = None,
                 crf: int = DEFAULT_CRF, preset: str = "medium", audio_fit: str = "pad_or_trim_audio",
                 audio_bitrate: int = 192000, pix_fmt: str = "yuv420p", encoder: str = DEFAULT_ENCODER):
        import av

        if not fps or fps <= 0:
            raise VideoError(f"fps: must be > 0 to write a video (got {fps}).")
        if audio_fit not in AUDIO_FIT:
            raise VideoError(f"audio_fit: unknown value {audio_fit!r}; use one of {', '.join(AUDIO_FIT)}.")
        if not CRF_RANGE[0] <= int(crf) <= CRF_RANGE[1]:
            raise VideoError(f"crf: must be within 0..51 (got {crf}); lower is better quality, 17-23 is typical.")
        if os.path.exists(path) and os.path.getsize(path) > 0:
            raise VideoError(f"output: {path} already exists; refusing to overwrite it. Choose another name.")
        self.encoder, self.encoder_note = pick_encoder(encoder, width, height, fps, crf)
        self.path = path
        self.tmp = os.path.join(os.path.dirname(path) or ".", "." + os.path.basename(path) + ".partial.mp4")
        self.fps = float(fps)
        self.width, self.height = int(width), int(height)
        self.audio_fit = audio_fit
        self.frames_written = 0
        self._closed = False
        self._container = av.open(self.tmp, "w", format="mp4")
        rate = _rate(self.fps)
        self._v = self._container.add_stream(self.encoder, rate=rate)
        self._v.width, self._v.height = _even(self.width), _even(self.height)
        self._v.pix_fmt = pix_fmt
        if self.encoder == "h264_nvenc":   # crf -> constant quality; the libx264 preset names do not apply
            self._v.options = dict(NVENC_OPTIONS, cq=str(int(crf)))
        else:
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
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:   # float IMAGE frames: the one rounding rule
            import torch

            arr = image_to_uint8(arr if isinstance(arr, torch.Tensor) else torch.as_tensor(np.asarray(arr)))
        if arr.ndim == 3:
            arr = arr[None]
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


def write_video(path: str, frames: Frames, audio: Optional[Audio] = None, crf: int = DEFAULT_CRF,
                audio_fit: str = "pad_or_trim_audio", batch: int = 16, progress=None,
                encoder: str = DEFAULT_ENCODER) -> str:
    """Encode a whole :class:`Frames` sequence (streaming) with optional audio; returns the path."""
    with VideoWriter(path, frames.fps, frames.width, frames.height, audio, crf=crf, audio_fit=audio_fit,
                     encoder=encoder) as w:
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
