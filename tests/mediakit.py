"""Real test media made at test time: scikit-image photos animated into videos with PyAV, espeak-ng speech.

Nothing here is committed as a binary; everything is generated into a temp dir.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import wave
from fractions import Fraction
from typing import List, Optional, Sequence, Tuple

import numpy as np


def photo(name: str, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """A scikit-image photo as uint8 RGB (astronaut = a face; rocket, coffee, chelsea (a cat) = cutaways)."""
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = np.ascontiguousarray(img[..., :3])
    if size is not None:
        import cv2

        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return img


def animate(img: np.ndarray, n: int, dx: float = 1.0, zoom: float = 0.0) -> np.ndarray:
    """``n`` frames of a slow pan/zoom over ``img`` (same size as img), uint8 [n,H,W,3]."""
    import cv2

    h, w = img.shape[:2]
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        s = 1.0 + zoom * i
        m = np.array([[s, 0, (1 - s) * w / 2 + dx * i], [0, s, (1 - s) * h / 2]], np.float64)
        out[i] = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return out


def edited_clip(size=(320, 320), plan: Sequence[Tuple[str, int]] = (("astronaut", 10), ("rocket", 6),
                                                                      ("astronaut", 8), ("chelsea", 6))) -> np.ndarray:
    """Concatenate animated shots of photos (hard cuts) into one uint8 clip."""
    parts = [animate(photo(name, size), n, dx=0.5) for name, n in plan]
    return np.concatenate(parts)


def write_video(path: str, frames: np.ndarray, fps: float = 25.0, codec: str = "libx264", pix_fmt: str = "yuv420p",
                crf: int = 12, audio: Optional[np.ndarray] = None, audio_rate: int = 16000,
                rotation: int = 0, pts: Optional[Sequence[int]] = None, time_base: Optional[Fraction] = None) -> str:
    """Encode uint8 frames (optionally with float audio [C,T]) with PyAV. ``pts`` + ``time_base`` make VFR files."""
    import av

    c = av.open(path, "w")
    rate = Fraction(fps).limit_denominator(100000)
    s = c.add_stream(codec, rate=rate)
    s.height, s.width = frames.shape[1], frames.shape[2]
    s.pix_fmt = pix_fmt
    if codec in ("libx264", "libx265"):
        s.options = {"crf": str(crf)}
    if time_base is not None:
        s.codec_context.time_base = time_base
        s.time_base = time_base
    if rotation:
        s.set_display_rotation(rotation)
    a = None
    if audio is not None:
        a = c.add_stream("aac", rate=audio_rate, layout="stereo" if audio.shape[0] == 2 else "mono")
    for i, img in enumerate(frames):
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        f.pts = int(pts[i]) if pts is not None else i
        if time_base is not None:
            f.time_base = time_base
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    if a is not None:
        pos = 0
        while pos < audio.shape[1]:
            chunk = np.ascontiguousarray(audio[:, pos:pos + 4096], dtype=np.float32)
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo" if audio.shape[0] == 2 else "mono")
            af.sample_rate = audio_rate
            af.pts = pos
            for p in a.encode(af):
                c.mux(p)
            pos += chunk.shape[1]
        for p in a.encode():
            c.mux(p)
    c.close()
    return path


def write_wav(path: str, samples: np.ndarray, rate: int, sampwidth: int = 2) -> str:
    """PCM wav from float [C,T] or [T] in -1..1 (16- or 32-bit)."""
    x = np.atleast_2d(samples)
    scale = 2 ** (8 * sampwidth - 1) - 1
    pcm = np.clip(np.round(x.T * scale), -scale - 1, scale).astype("<i2" if sampwidth == 2 else "<i4")
    with wave.open(path, "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def tone(freq: float, seconds: float, rate: int, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels)


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def speech(path: str, text: str = "Hello there. This is a short test of lip sync with cutaways.",
           speed: int = 160) -> str:
    """Speech from espeak-ng as a wav (22.05 kHz mono); caller skips when espeak-ng is absent."""
    subprocess.run(["espeak-ng", "-s", str(speed), "-w", path, text], check=True, capture_output=True)
    return path


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    x = np.asarray(x, np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def color_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frames whose index is readable from their colour (for timing tests): value = 4*i mod 256 in the red channel."""
    out = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        out[i, ..., 0] = (i * 8) % 256
        out[i, ..., 1] = 128
        out[i, ..., 2] = ((i * 8) // 256) * 60
    return out


def frame_ids(frames: np.ndarray) -> List[int]:
    """Inverse of :func:`color_frames` (robust to codec noise)."""
    ids = []
    for f in frames:
        r = float(f[..., 0].mean())
        hi = int(round(float(f[..., 2].mean()) / 60))
        ids.append(int(round(r / 8)) + hi * 32)
    return ids
