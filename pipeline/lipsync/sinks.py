"""Where output frames go, and the one place a lip-synced face is written into an output frame.

Every backend returns its face as a :class:`~..types.Patch`; :func:`compose` writes it into a copy of the source
frame, touching only the pixels the backend changed, in the frame's own form (a float IMAGE row from ComfyUI or
uint8 from a file), so untouched pixels stay bit-identical. Sinks take the composed frames in output order:

* :class:`ImageSink` — a ComfyUI IMAGE tensor in memory;
* :class:`WriterSink` — a :class:`~..media.writer.VideoWriter` (the CLI: one encode, bounded memory);
* :class:`~.patched_frames.PatchSink` — only the changed rectangles, composed again when a later node reads them
  (the lossless hand-off between ComfyUI nodes).
"""
from __future__ import annotations

import numpy as np
import torch

from ..media.frames import image_to_uint8, uint8_to_image
from ..types import Patch


def compose(native_frame, source_u8: np.ndarray, patch: Patch):
    """``native_frame`` (a copy of the source frame: float ``[H, W, 3]`` tensor or uint8 array) with the patch's
    changed pixels written in. ``source_u8`` is the same frame in uint8, to find which pixels changed."""
    if patch.empty:
        return native_frame
    region = source_u8[patch.y0:patch.y1, patch.x0:patch.x1]
    changed = (patch.pixels != region).any(axis=-1)
    sub = native_frame[patch.y0:patch.y1, patch.x0:patch.x1]
    if isinstance(native_frame, torch.Tensor):
        sub[torch.from_numpy(changed)] = uint8_to_image(patch.pixels[changed])
    else:
        sub[changed] = patch.pixels[changed]
    return native_frame


class ImageSink:
    """Collects output frames in a ComfyUI IMAGE tensor (float32 ``[n, H, W, 3]``)."""

    def __init__(self, num_frames: int, height: int, width: int):
        self.image = torch.empty((num_frames, height, width, 3), dtype=torch.float32)
        self.count = 0

    def write(self, native) -> None:
        t = native if isinstance(native, torch.Tensor) else uint8_to_image(native)
        n = t.shape[0]
        self.image[self.count:self.count + n] = t
        self.count += n

    def close(self):
        return self.image[:self.count]

    def abort(self) -> None:
        self.image = None


class WriterSink:
    """Streams output frames into a :class:`~..media.writer.VideoWriter` (bounded memory)."""

    def __init__(self, writer):
        self.writer = writer

    def write(self, native) -> None:
        self.writer.write(image_to_uint8(native) if isinstance(native, torch.Tensor) else native)

    def close(self):
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()
