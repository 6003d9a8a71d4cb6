"""The shaped paste-back masks, ``box`` and ``mouth``, drawn in frame coordinates over a face's crop box (no weights
needed). MuseTalk places them in its expanded square (pipeline/backends/blending.py ``shaped_blend_mask``);
LatentSync uses them instead of its own paste-back mask when one is chosen (pipeline/backends/latentsync_align.py).

* ``box``: the lower half of the crop box (from its centre row, the MuseTalk mask line, down).
* ``mouth``: the lower face drawn from the 68 landmarks: the jaw line from cheek to cheek (points 2..14, 0-based)
  closed under the nose (points 35..31), so it follows the chin and is narrower on the far side of a turned head.
  With only the 5-point estimate (pipeline/faces/cropbox.py ``estimate_68``) the shape is approximate; a face without
  landmarks gets the box.

Both are grown by ``dilate_px`` (negative: shrunk) and faded in over ``feather_px`` (smoothstep), both in pixels of
the 256x256 face the network sees (scaled to the face's size in the frame), and both fade out at the crop box's edges,
where the generated face ends. The options come as any object with ``mode``, ``feather_px`` and ``dilate_px``
(pipeline/backends/blending.py ``BlendOptions``).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

DEFAULT_FEATHER_PX = 16             # fade-in width, pixels of the 256x256 face
DEFAULT_DILATE_PX = 0               # growth (negative: shrink), pixels of the 256x256 face
FEATHER_RANGE = (0, 128)
DILATE_RANGE = (-64, 64)
FACE_PIXELS = 256                   # the face size feather_px and dilate_px are measured in
MOUTH_OUTLINE = tuple(range(2, 15)) + (35, 34, 33, 32, 31)   # 68-point indices: jaw cheek to cheek, under the nose
IntBox = Tuple[int, int, int, int]


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _signed_distance(region: np.ndarray) -> np.ndarray:
    """Distance to the region's edge, positive inside (in pixels), from a 0/1 uint8 map."""
    import cv2

    inside = cv2.distanceTransform(region, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - region, cv2.DIST_L2, 5)
    return np.where(region > 0, inside, -outside)


def _inside_box(h: int, w: int) -> np.ndarray:
    """How far each pixel lies inside the crop box: 0 on its outermost pixels, ``d + 1`` at ``d`` pixels from them
    (the signed distance to a box whose border pixels are outside, plus one)."""
    rows = np.minimum(np.arange(h), np.arange(h)[::-1])
    cols = np.minimum(np.arange(w), np.arange(w)[::-1])
    d = np.minimum.outer(rows, cols).astype(np.float32)
    return np.where(d > 0, d + 1.0, 0.0)


def int_box(box: Sequence[float]) -> IntBox:
    """A face box as ints ``(x1, y1, x2, y2)``; an empty one is an error."""
    x1, y1, x2, y2 = (int(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty face box {tuple(box)}")
    return x1, y1, x2, y2


def face_scale(box: Sequence[float]) -> float:
    """Frame pixels per pixel of the 256x256 face, for a crop box (its mean side over 256)."""
    x1, y1, x2, y2 = int_box(box)
    return ((x2 - x1) + (y2 - y1)) / 2.0 / FACE_PIXELS


def mouth_outline(landmarks) -> Optional[np.ndarray]:
    """The lower-face polygon (float ``[18, 2]``) from 68 points, or from the 5-point estimate; None without
    landmarks."""
    if landmarks is None:
        return None
    lm = np.asarray(landmarks, np.float64)
    if lm.shape == (5, 2):
        from ..faces.cropbox import estimate_68

        lm = estimate_68(lm)
    if lm.shape != (68, 2):
        return None
    return lm[list(MOUTH_OUTLINE)]


def shaped_mask(box: Sequence[float], options, landmarks=None) -> Tuple[IntBox, np.ndarray]:
    """The ``box`` / ``mouth`` mask of a face, in frame coordinates over its crop box: ``((x1, y1, x2, y2),
    uint8 [y2-y1, x2-x1])`` (see the module docstring). The crop box may leave the frame (edge faces)."""
    import cv2

    x1, y1, x2, y2 = int_box(box)
    h, w = y2 - y1, x2 - x1
    scale = face_scale(box)
    region = np.zeros((h, w), np.uint8)
    outline = mouth_outline(landmarks) if options.mode == "mouth" else None
    if outline is not None:
        pts = np.round((outline - [x1, y1]) * 16).astype(np.int32)
        cv2.fillPoly(region, [pts], 1, cv2.LINE_8, 4)
    else:
        region[(y1 + y2) // 2 - y1:, :] = 1       # the lower half of the crop box
    feather = max(1.0, options.feather_px * scale)
    grown = _signed_distance(region) + options.dilate_px * scale
    alpha = np.minimum(_smoothstep(grown / feather), _smoothstep(_inside_box(h, w) / feather))
    return (x1, y1, x2, y2), np.round(alpha * 255).astype(np.uint8)
