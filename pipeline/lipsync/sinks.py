"""Where output frames go, and the one place a lip-synced face is written into an output frame.

Every backend returns its face as a :class:`~..types.Patch`; :func:`compose` writes it into a copy of the source
frame, touching only the pixels the backend changed, in the frame's own form (a float IMAGE row from ComfyUI or
uint8 from a file), so untouched pixels stay bit-identical. Sinks take the composed frames in output order:

* :class:`ImageSink` — a ComfyUI IMAGE tensor in memory;
* :class:`WriterSink` — a :class:`~..media.writer.VideoWriter` (the CLI: one encode, bounded memory);
* :class:`~.patched_frames.PatchSink` — only the changed rectangles, composed again when a later node reads them
  (the lossless hand-off between ComfyUI nodes).

Mask sinks take each output frame's soft mask of the changed pixels (a patch's ``alpha``, or None: 0 everywhere):

* :class:`MaskImageSink` — a ComfyUI MASK tensor (float32 ``[n, H, W]``, 0..1), or only its first frame when the
  whole would not fit in memory (the IMAGE output's rule);
* :class:`MaskWriterSink` — a grey mp4 (``--mask-out``), streamed like the frames.
"""
from __future__ import annotations

from typing import List, Optional

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


# ---- masks -------------------------------------------------------------------------------------------------------
def frame_mask(patch: Optional[Patch], height: int, width: int) -> np.ndarray:
    """One output frame's mask, uint8 ``[H, W]``: the patch's ``alpha`` in its rectangle (255 where a patch without
    one changed a pixel), 0 elsewhere."""
    out = np.zeros((height, width), np.uint8)
    if patch is not None and not patch.empty:
        out[patch.y0:patch.y1, patch.x0:patch.x1] = patch.alpha if patch.alpha is not None else 255
    return out


class MaskImageSink:
    """Collects the masks as a ComfyUI MASK (float32 ``[n, H, W]``); ``first_only`` keeps the first frame's alone
    (an output too long to hold in memory)."""

    def __init__(self, num_frames: int, height: int, width: int, first_only: bool = False):
        self.height, self.width, self.first_only = height, width, first_only
        self.mask = torch.zeros((1 if first_only else num_frames, height, width), dtype=torch.float32)
        self.count = 0

    def write(self, patches: List[Optional[Patch]]) -> None:
        for patch in patches:
            if self.count < self.mask.shape[0]:
                self.mask[self.count] = torch.from_numpy(frame_mask(patch, self.height, self.width)).float() / 255.0
            self.count += 1

    def close(self) -> torch.Tensor:
        return self.mask[:min(self.count, self.mask.shape[0])]

    def abort(self) -> None:
        self.mask = None


class MaskWriterSink:
    """Streams the masks into a :class:`~..media.writer.VideoWriter` as grey frames (bounded memory)."""

    def __init__(self, writer):
        self.writer = writer

    def write(self, patches: List[Optional[Patch]]) -> None:
        masks = np.stack([frame_mask(p, self.writer.height, self.writer.width) for p in patches])
        self.writer.write(np.repeat(masks[..., None], 3, axis=-1))

    def close(self):
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()
