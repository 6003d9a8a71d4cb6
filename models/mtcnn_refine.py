"""MTCNN's 5 points, refined: O-Net run again on shifted, scaled and mirrored windows around each final box.

The cascade (models/mtcnn.py) reads the 5 points from ONE 48x48 window, the square R-Net box before O-Net's own box
offsets. Those points carry a few % of the inter-ocular distance of noise and a small left/right bias, which is
harmless for detection but is the largest error of the 5-point crop estimate (pipeline/faces/cropbox.py): measured
on real photos against dlib's 68 points, the estimate's crop IoU rises by about 0.01 (and the worst face's by 0.1)
when the points are averaged over the windows below (scripts/fit_five_point.py).

Windows: the square around the final box, the same shifted by 6 % of its side left, right, up and down, and scaled
to 90 % and 110 %: 7 windows, each also read mirrored (the 48x48 crop flipped left-right, its points flipped back and
the two eyes and the two mouth corners swapped). The points and the refined boxes (each window's own O-Net offsets)
are averaged over the 14 readings. O-Net runs on 48x48 crops, so this costs 14 tiny forward passes per face.

Only the 5-point estimate uses this: the default path's crop comes from a 68-point model run in the box, and the
detector's own output stays the original cascade's.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from .mtcnn import MTCNN, apply_offsets, roi_resample, to_square

# (shift x, shift y, scale) of each window, in units of the square's side
WINDOWS = ((0.0, 0.0, 1.0), (0.06, 0.0, 1.0), (-0.06, 0.0, 1.0), (0.0, 0.06, 1.0), (0.0, -0.06, 1.0),
           (0.0, 0.0, 0.9), (0.0, 0.0, 1.1))
MIRRORED_ORDER = [1, 0, 2, 4, 3]   # image-left eye <-> image-right eye, left mouth corner <-> right


def windows(boxes: np.ndarray) -> np.ndarray:
    """``[k, len(WINDOWS), 4]``: the shifted and scaled squares around each box ``[k, 4]``."""
    sq = to_square(np.asarray(boxes, np.float64).reshape(-1, 4))
    side = (sq[:, 2] - sq[:, 0])[:, None]
    cx, cy = ((sq[:, 0] + sq[:, 2]) / 2)[:, None], ((sq[:, 1] + sq[:, 3]) / 2)[:, None]
    dx, dy, scale = (np.array(v)[None] for v in zip(*WINDOWS))
    x0, y0 = cx + dx * side, cy + dy * side
    half = scale * side / 2
    return np.stack([x0 - half, y0 - half, x0 + half, y0 + half], axis=2)


def _onet(model: MTCNN, crops: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """O-Net's box offsets [k, 4] and points [k, 5, 2] (window fractions) for 48x48 crops."""
    _, reg, lm = model.onet(model._normalise(crops).contiguous(memory_format=torch.channels_last))
    reg, lm = reg.cpu().numpy().astype(np.float64), lm.cpu().numpy().astype(np.float64)
    return reg, np.stack([lm[:, :5], lm[:, 5:]], axis=2)


@torch.inference_mode()
def refine(model: MTCNN, images: torch.Tensor, image_index: np.ndarray, boxes: np.ndarray
           ) -> Tuple[np.ndarray, np.ndarray]:
    """Refined ``(boxes [k, 4], points [k, 5, 2])`` for the cascade's final ``boxes`` [k, 4] on ``images``
    (float [n, 3, H, W], RGB 0..255, on the model's device; ``image_index`` [k] says which image each box is on)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return boxes, np.zeros((0, 5, 2))
    win = windows(boxes)                                                  # [k, w, 4]
    k, w = win.shape[:2]
    flat = win.reshape(-1, 4)
    crops = roi_resample(images.to(model.device, model.dtype), np.repeat(np.asarray(image_index), w), flat, 48)
    reg, pts = _onet(model, crops)
    reg_m, pts_m = _onet(model, crops.flip(-1))
    # the mirrored reading, back in the window's own orientation
    reg_m = np.stack([-reg_m[:, 2], reg_m[:, 1], -reg_m[:, 0], reg_m[:, 3]], axis=1)
    pts_m = np.stack([1.0 - pts_m[:, :, 0], pts_m[:, :, 1]], axis=2)[:, MIRRORED_ORDER]
    size = (flat[:, 2:] - flat[:, :2])[:, None, :]                        # [k*w, 1, 2]
    points = [flat[:, None, :2] + size * p for p in (pts, pts_m)]
    refined = [apply_offsets(flat, r) for r in (reg, reg_m)]
    points = np.concatenate([p.reshape(k, w, 5, 2) for p in points], axis=1).mean(1)
    refined = np.concatenate([b.reshape(k, w, 4) for b in refined], axis=1).mean(1)
    return refined, points
