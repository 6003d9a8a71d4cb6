"""A sequence of RGB frames at an fps, backed by memory or streamed from a file (docs/architecture.md).

The pipeline's currency is ``uint8 [n, H, W, 3]`` RGB numpy batches: 1080p is 6 MB a frame instead of the 25 MB of a
float32 IMAGE. :class:`Frames` is the interface every stage consumes:

* ``len(frames)``, ``frames.fps``, ``frames.width``, ``frames.height``
* ``frames.iter_batches(batch_size, start=0, stop=None)`` -> :class:`FrameBatch` (``start``, ``rgb``), in order,
  memory bounded by ``batch_size``
* ``frames.read(indices)`` -> ``uint8 [len(indices), H, W, 3]`` (random access; cheap for ascending indices)
* ``frames.native_read(indices)`` (tensor-backed frames only) -> the source's own float32 IMAGE frames, so that
  untouched frames can be passed through bit-identical.

Backends: :class:`ImageFrames` (a ComfyUI IMAGE tensor, float32 0..1), :class:`ArrayFrames` (uint8 numpy), and
``pipeline.media.video.VideoFileFrames`` (PyAV, decoded sequentially in chunks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch


class FramesError(ValueError):
    """Bad frame input; the message names the input and the fix."""


@dataclass
class FrameBatch:
    start: int           # index of the first frame of the batch in the sequence
    rgb: np.ndarray      # uint8 [n, H, W, 3]

    @property
    def stop(self) -> int:
        return self.start + int(self.rgb.shape[0])

    def __len__(self) -> int:
        return int(self.rgb.shape[0])


class Frames:
    """Abstract frame sequence. Subclasses implement ``__len__`` and ``_read_range``."""

    fps: float
    width: int
    height: int

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def shape(self):
        return (len(self), self.height, self.width, 3)

    @property
    def duration(self) -> float:
        return len(self) / float(self.fps) if self.fps else 0.0

    # -- access ------------------------------------------------------------------------------------------------------
    def _read_range(self, start: int, stop: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def iter_batches(self, batch_size: int, start: int = 0, stop: Optional[int] = None) -> Iterator[FrameBatch]:
        n = len(self)
        stop = n if stop is None else min(stop, n)
        batch_size = max(1, int(batch_size))
        for a in range(max(0, start), stop, batch_size):
            b = min(stop, a + batch_size)
            yield FrameBatch(a, self._read_range(a, b))

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as ``uint8 [k, H, W, 3]``."""
        idx = [int(i) for i in indices]
        n = len(self)
        for i in idx:
            if i < 0 or i >= n:
                raise IndexError(f"frame {i} out of range (0..{n - 1})")
        if not idx:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        lo, hi = min(idx), max(idx) + 1
        if hi - lo <= max(64, 2 * len(idx)):
            block = self._read_range(lo, hi)
            return block[[i - lo for i in idx]]
        return np.stack([self._read_range(i, i + 1)[0] for i in idx])

    def to_image(self) -> torch.Tensor:
        """Whole sequence as a ComfyUI IMAGE ``float32 [N, H, W, 3]`` (only for short clips: this is in RAM)."""
        out = torch.empty((len(self), self.height, self.width, 3), dtype=torch.float32)
        for b in self.iter_batches(32):
            out[b.start:b.stop] = uint8_to_image(b.rgb)
        return out

    def with_fps(self, fps: float) -> "Frames":
        """The same frames reinterpreted at another rate (a shallow copy; the original is untouched)."""
        import copy

        if not fps or fps <= 0:
            raise FramesError(f"fps: must be > 0 (got {fps}).")
        other = copy.copy(self)
        other.fps = float(fps)
        return other

    def describe(self) -> str:
        return f"{len(self)} frames {self.width}x{self.height} @ {self.fps:.3f} fps"


def uint8_to_image(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).to(torch.float32).div_(255.0)


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """IMAGE float 0..1 -> uint8 with rounding (x*255 rounded half-to-even, clamped)."""
    x = image.detach().to("cpu", torch.float32).clamp(0, 1).mul(255.0).round_()
    return x.to(torch.uint8).numpy()


class ArrayFrames(Frames):
    """Frames held in memory as ``uint8 [N, H, W, 3]``."""

    def __init__(self, rgb: np.ndarray, fps: float):
        rgb = np.asarray(rgb)
        if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
            raise FramesError(f"frames: expected uint8 [N, H, W, 3], got {rgb.dtype} {tuple(rgb.shape)}")
        self.rgb = rgb
        self.fps = float(fps)
        self.height, self.width = int(rgb.shape[1]), int(rgb.shape[2])

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        return self.rgb[start:stop]


class ImageFrames(Frames):
    """Frames backed by a ComfyUI IMAGE tensor ``float32 [B, H, W, C]`` 0..1 (C = 3, or 4 with alpha dropped,
    or 1 for grey). ``native_read`` returns the original float frames so pass-through frames stay bit-identical."""

    def __init__(self, image: torch.Tensor, fps: float, name: str = "images"):
        if not isinstance(image, torch.Tensor):
            raise FramesError(f"{name}: expected an IMAGE tensor, got {type(image).__name__}.")
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
            raise FramesError(f"{name}: expected IMAGE [frames, height, width, 3]; got shape {tuple(image.shape)}.")
        if image.shape[0] == 0:
            raise FramesError(f"{name}: the IMAGE batch has zero frames. Check the loader's frame_load_cap / "
                              "skip_first_frames.")
        if image.shape[-1] == 1:
            image = image.expand(-1, -1, -1, 3)
        elif image.shape[-1] == 4:
            image = image[..., :3]
        if not fps or fps <= 0:
            raise FramesError(f"fps: must be > 0 (got {fps}). Connect the loader's fps output or type the rate.")
        self.image = image
        self.fps = float(fps)
        self.height, self.width = int(image.shape[1]), int(image.shape[2])

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        return image_to_uint8(self.image[start:stop])

    def native_read(self, indices: Sequence[int]) -> torch.Tensor:
        """The original float frames at ``indices`` (a copy), for bit-identical pass-through."""
        return self.image[torch.as_tensor(list(indices), dtype=torch.long)].to("cpu", torch.float32)

    def to_image(self) -> torch.Tensor:
        return self.image.to("cpu", torch.float32).contiguous()
