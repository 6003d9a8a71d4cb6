"""MuseTalk's crop and paste-back as torch ops on the runtime's device (``frame_ops=torch``), equal to the cv2/PIL
path pixel for pixel.

The cv2/PIL path (pipeline/backends/musetalk_engine.py ``crop_face``, pipeline/backends/blending.py ``blend_face``)
runs on the CPU, one frame at a time, and stays the default there. This module does the same three steps on the
device the networks run on, so on a GPU the frames go up once and only the changed rectangle comes back:

1. **Crop** (MuseTalk scripts/inference.py: ``cv2.resize(frame[y1:y2, x1:x2], (256, 256), INTER_LANCZOS4)``):
   OpenCV resizes 8-bit images with Lanczos-4 in fixed point: 8 taps per output pixel, each weight rounded to
   1/2048, taps outside the image clamped to its edge, the horizontal pass summed in integers, the vertical pass
   rounded by ``(v + 2**21) >> 22``. :func:`lanczos4_taps` builds those weights as a matrix over the frame's own
   columns (a box past the frame's edge reads the edge pixel, as the cv2 path's replicated border does), and the
   two passes are two float64 matrix products: every product and sum is an integer below 2**53, so the result is
   exact whatever order the device sums in.
2. **Resize the generated face to the box** (``cv2.resize(face, (w, h))``, INTER_LINEAR): OpenCV's 8-bit bilinear
   resize is fixed point too (weights of 1/2048; the vertical pass ``((a >> 4) * b >> 16)`` per tap, then
   ``(s + 2) >> 2``); :func:`linear_taps` and :func:`resize_face` do it in int32.
3. **Blend** (``PIL.Image.paste`` with an ``L`` mask, MuseTalk musetalk/utils/blending.py ``get_image_blending``):
   ``(old * (255 - a) + new * a)`` divided by 255 the way Pillow rounds it, in int32.

Measured here (tests/test_frame_ops.py): all three equal OpenCV's and Pillow's output exactly, on random frames and
on every box size tried, boxes past the frame's edge included. (OpenCV picks SIMD kernels per CPU; the formulas
above are the ones its x86 kernels compute.) The blend masks are still made on the CPU, once per source frame
(BiSeNet's labels in one batch per work unit, pipeline/backends/blending.py ``prepare_blend_masks``), and cached.

On CUDA the unit's source frames are copied into a pinned staging buffer and sent to the device without blocking
(:class:`DeviceFrames`).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from ..types import Patch
from .shaped_masks import int_box

COEF_SCALE = 2048           # OpenCV's INTER_RESIZE_COEF_SCALE: weights are rounded to 1/2048
FACE_SIZE = 256


# ---- OpenCV's fixed-point weights --------------------------------------------------------------------------------
def _source_positions(src: int, dst: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per output pixel: the first source pixel and the fraction past it, as OpenCV computes them
    (``fx = (float)((dx + 0.5) * scale - 0.5)``, ``sx = floor(fx)``, ``fx -= sx`` in float32)."""
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    return s, (f - s.astype(np.float32)).astype(np.float32)


def _lanczos4_coefficients(fx: np.ndarray) -> np.ndarray:
    """OpenCV's ``interpolateLanczos4`` for each fraction: ``[n, 8]`` float32 weights summing to one."""
    s45 = 0.70710678118654752440084436210485
    cs = np.array([(1, 0), (-s45, -s45), (0, 1), (s45, -s45), (-1, 0), (s45, s45), (0, -1), (-s45, s45)])
    x3 = (fx + np.float32(3)).astype(np.float32)                      # float: x + 3
    y0 = -x3.astype(np.float64) * np.pi * 0.25
    s0, c0 = np.sin(y0), np.cos(y0)
    coeffs = np.empty((len(fx), 8), np.float32)
    total = np.zeros(len(fx), np.float32)
    for i in range(8):
        yi = (x3 - np.float32(i)).astype(np.float32)
        y = -yi.astype(np.float64) * np.pi * 0.25
        with np.errstate(divide="ignore", invalid="ignore"):
            c = ((cs[i, 0] * s0 + cs[i, 1] * c0) / (y * y)).astype(np.float32)
        coeffs[:, i] = np.where(np.abs(yi) >= 1e-6, c, np.float32(1e38))
        total = (total + coeffs[:, i]).astype(np.float32)
    return (coeffs * (np.float32(1.0) / total)[:, None]).astype(np.float32)


@lru_cache(maxsize=512)
def lanczos4_taps(start: int, length: int, limit: int, dst: int = FACE_SIZE) -> np.ndarray:
    """Weights (integers, in 1/2048) of OpenCV's Lanczos-4 resize of the span ``[start, start + length)`` of an axis
    of ``limit`` pixels to ``dst`` pixels, as a ``[dst, n]`` matrix over the pixels ``[max(0, start), ...)`` that
    lie in the axis; taps past the span, or past the axis, read its edge pixel."""
    first, last = max(0, start), min(limit, start + length)
    sx, fx = _source_positions(length, dst)
    weights = np.rint(_lanczos4_coefficients(fx) * np.float32(COEF_SCALE)).astype(np.int64)   # cvRound: half even
    taps = np.clip(sx[:, None] - 3 + np.arange(8), 0, length - 1) + start       # in the span, then on the axis
    columns = np.clip(taps, 0, limit - 1) - first
    matrix = np.zeros((dst, last - first), np.int64)
    np.add.at(matrix, (np.repeat(np.arange(dst), 8), columns.ravel()), weights.ravel())
    return matrix


@lru_cache(maxsize=512)
def linear_taps(src: int, dst: int, clamp: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's bilinear taps ``(i0, i1, w0, w1)`` (weights in 1/2048) resizing ``src`` pixels to ``dst``.
    Horizontally (``clamp``) a position before the first pixel or past the last is moved onto it; vertically OpenCV
    keeps the fraction and reads the edge row twice."""
    sx, fx = _source_positions(src, dst)
    if clamp:
        low, high = sx < 0, sx >= src - 1
        fx = np.where(low | high, np.float32(0), fx).astype(np.float32)
        sx = np.where(low, 0, np.where(high, src - 1, sx))
    w0 = np.rint((np.float32(1) - fx).astype(np.float32) * np.float32(COEF_SCALE)).astype(np.int64)
    w1 = np.rint(fx * np.float32(COEF_SCALE)).astype(np.int64)
    return np.clip(sx, 0, src - 1), np.clip(sx + 1, 0, src - 1), w0, w1


# ---- the three steps -----------------------------------------------------------------------------------------------
def crop_face(frame: torch.Tensor, box: Sequence[float], size: int = FACE_SIZE) -> torch.Tensor:
    """musetalk_engine.crop_face on the device: uint8 ``[H, W, 3]`` frame -> uint8 ``[size, size, 3]`` crop."""
    x1, y1, x2, y2 = (int(v) for v in box)
    h, w = frame.shape[:2]
    if min(y2, h) <= max(0, y1) or min(x2, w) <= max(0, x1):
        raise ValueError(f"empty face crop for box {tuple(box)} in a {w}x{h} frame")
    rows = lanczos4_taps(y1, y2 - y1, h, size)
    cols = lanczos4_taps(x1, x2 - x1, w, size)
    region = frame[max(0, y1):min(h, y2), max(0, x1):min(w, x2)].to(torch.float64)
    wy = torch.from_numpy(rows).to(frame.device, torch.float64)
    wx = torch.from_numpy(cols).to(frame.device, torch.float64)
    across = torch.einsum("hwc,dw->hdc", region, wx)          # integers: the horizontal pass
    down = torch.einsum("eh,hdc->edc", wy, across)             # integers below 2**53: exact
    return torch.floor((down + 2 ** 21) / 2 ** 22).clamp_(0, 255).to(torch.uint8)


def crop_faces(frames: Sequence[torch.Tensor], boxes: Sequence[Sequence[float]], size: int = FACE_SIZE
               ) -> torch.Tensor:
    """:func:`crop_face` for each frame and its box -> ``[n, size, size, 3]`` on the frames' device."""
    return torch.stack([crop_face(f, b, size) for f, b in zip(frames, boxes)])


def resize_face(face: torch.Tensor, box: Sequence[float]) -> torch.Tensor:
    """blending.resize_face on the device: uint8 ``[256, 256, 3]`` -> ``[y2 - y1, x2 - x1, 3]``."""
    x1, y1, x2, y2 = int_box(box)
    src_h, src_w = face.shape[:2]
    if (y2 - y1, x2 - x1) == (src_h, src_w):
        return face
    dev = face.device
    xi0, xi1, xw0, xw1 = (torch.from_numpy(a).to(dev) for a in linear_taps(src_w, x2 - x1, True))
    yi0, yi1, yw0, yw1 = (torch.from_numpy(a).to(dev) for a in linear_taps(src_h, y2 - y1, False))
    f = face.to(torch.int32)
    across = f[:, xi0] * xw0[None, :, None].int() + f[:, xi1] * xw1[None, :, None].int()
    across = across >> 4
    down = ((across[yi0] * yw0[:, None, None].int()) >> 16) + ((across[yi1] * yw1[:, None, None].int()) >> 16)
    return ((down + 2) >> 2).clamp_(0, 255).to(torch.uint8)


def blend_region(old: torch.Tensor, new: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Pillow's ``paste(new, mask=alpha)`` onto ``old`` (uint8 ``[h, w, 3]``, alpha ``[h, w]``): per channel
    ``(old * (255 - a) + new * a)`` divided by 255 as Pillow rounds it (``t = v + 128; ((t >> 8) + t) >> 8``)."""
    a = alpha.to(torch.int32)[..., None]
    v = old.to(torch.int32) * (255 - a) + new.to(torch.int32) * a + 128
    return (((v >> 8) + v) >> 8).to(torch.uint8)


def blend_face(frame: torch.Tensor, face: torch.Tensor, box: Sequence[float], crop_box: Sequence[int],
               mask: np.ndarray) -> Patch:
    """blending.blend_face on the device: the generated face (uint8 ``[256, 256, 3]`` or already the box's size)
    pasted into ``frame`` through the blend mask (uint8 ``[side, side]`` on the CPU, made once per source frame) over
    the expanded square ``crop_box``; only the mask's part inside the frame goes to the device. Returns the changed
    rectangle as a :class:`Patch` on the CPU."""
    x1, y1, x2, y2 = int_box(box)
    cx0, cy0, cx1, cy1 = (int(v) for v in crop_box)
    h, w = frame.shape[:2]
    y0, y1c, x0, x1c = max(0, cy0), min(h, cy1), max(0, cx0), min(w, cx1)
    if y1c <= y0 or x1c <= x0:
        return Patch(0, 0, 0, 0, np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.uint8))
    old = frame[y0:y1c, x0:x1c]
    new = old.clone()                                           # the frame under the square ...
    fy0, fy1, fx0, fx1 = max(y1, y0), min(y2, y1c), max(x1, x0), min(x2, x1c)
    if fy1 > fy0 and fx1 > fx0:                                 # ... with the face pasted at its box
        sized = resize_face(face, box)
        new[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] = sized[fy0 - y1:fy1 - y1, fx0 - x1:fx1 - x1]
    alpha = np.ascontiguousarray(mask[y0 - cy0:y1c - cy0, x0 - cx0:x1c - cx0])
    pixels = blend_region(old, new, torch.from_numpy(alpha).to(frame.device))
    return Patch(y0, y1c, x0, x1c, pixels.cpu().numpy(), alpha)


def postprocess_decoded(images: torch.Tensor) -> torch.Tensor:
    """VAE output ``[b, 3, 256, 256]`` -> uint8 ``[b, 256, 256, 3]`` on its device: ``round(clamp(x/2+0.5, 0, 1)*255)``,
    half to even (the one rule; musetalk_engine.postprocess_decoded brings it to the CPU)."""
    x = (images.float() / 2 + 0.5).clamp(0, 1)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


# ---- frames to the device ------------------------------------------------------------------------------------------
class DeviceFrames:
    """Sends a work unit's source frames to the device: on CUDA through a pinned staging buffer (reused, grown when a
    unit needs more) without blocking the host; elsewhere the arrays are used in place."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self._staging = None
        self._copied = None          # the event after the last unit's copies: the buffer is free once it passed

    def upload(self, frames: Dict[int, np.ndarray], which: Sequence[int]) -> Dict[int, torch.Tensor]:
        which = list(dict.fromkeys(which))
        if self.device.type != "cuda":
            return {s: torch.from_numpy(np.ascontiguousarray(frames[s])).to(self.device) for s in which}
        sizes = [frames[s].nbytes for s in which]
        if self._copied is not None:
            self._copied.synchronize()
        if self._staging is None or self._staging.numel() < sum(sizes):
            self._staging = torch.empty(max(sum(sizes), 1), dtype=torch.uint8).pin_memory()
        out, at = {}, 0
        for s, n in zip(which, sizes):
            host = self._staging[at:at + n].view(frames[s].shape)
            host.numpy()[...] = frames[s]
            out[s] = host.to(self.device, non_blocking=True)
            at += n
        self._copied = torch.cuda.Event()
        self._copied.record(torch.cuda.current_stream(self.device))
        return out

