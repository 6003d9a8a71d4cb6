"""InsightFace's 106-point landmarks (``2d106det.onnx`` of the ``buffalo_l`` pack): the points LatentSync 1.6 aligns
faces with (LatentSync face_detector.py). Used only when the user has the file (its licence allows non-commercial
research only, so it is never downloaded); otherwise LatentSync's three points come from the 68 iBUG points
(LatentSync 1.5's landmark rule).

As insightface's ``Landmark.get`` runs it: a 192x192 crop centred on the face box, scale ``192 / (1.5 * max(w,
h))``, no rotation (black outside); input ``(pixel - mean) / std`` in RGB, where (mean, std) is (0, 1) when the
graph normalises by itself (a ``Sub`` and a ``Mul`` among its first 8 nodes, or a ``bn_data`` among its first 3:
the converted MXNet models) and (127.5, 128) otherwise; output 212 numbers = 106 (x, y) in [-1, 1] of the crop:
``(p + 1) * 96``, mapped back through the inverse crop transform. LatentSync's points: left brow = mean of points
43, 48, 49, 51, 50; right brow = mean of 101..105; nose = mean of 74, 77, 83, 86; each rounded to integers.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import numpy as np

from . import registry

INPUT = 192
NUM_POINTS = 106
LEFT_BROW, RIGHT_BROW, NOSE = (43, 48, 49, 51, 50), (101, 102, 103, 104, 105), (74, 77, 83, 86)

KEY = "insightface.2d106det"
registry.register(registry.WeightFile(
    KEY, "latentsync", "auxiliary/models/buffalo_l/2d106det.onnx",
    url="insightface's buffalo_l model pack (non-commercial research licence: put it there yourself)",
    description="InsightFace 106-point landmarks (LatentSync 1.6's face alignment points)", groups=("landmarks",)))
USER_COPY = os.path.join(os.path.expanduser("~"), ".insightface", "models", "buffalo_l", "2d106det.onnx")


def find_weights() -> Optional[str]:
    """The file in the model folder (LatentSync's ``checkpoints/auxiliary`` layout) or insightface's own cache."""
    return registry.find(KEY) or (USER_COPY if os.path.isfile(USER_COPY) else None)


def normalisation(path: str) -> Tuple[float, float]:
    """(mean, std) of the input, by insightface's rule on the graph's first nodes (needs the ``onnx`` package)."""
    import onnx

    nodes = onnx.load(path, load_external_data=False).graph.node[:8]
    sub = any(n.name.startswith(("Sub", "_minus")) for n in nodes)
    mul = any(n.name.startswith(("Mul", "_mul")) for n in nodes)
    if any(i < 3 and n.name == "bn_data" for i, n in enumerate(nodes)):
        sub = mul = True
    return (0.0, 1.0) if sub and mul else (127.5, 128.0)


def crop_matrix(box) -> np.ndarray:
    """Frame -> 192x192 crop: scale ``192 / (1.5 max(w, h))`` about the box centre, which lands on (96, 96)."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    s = INPUT / (max(x2 - x1, y2 - y1) * 1.5)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([[s, 0.0, INPUT / 2 - s * cx], [0.0, s, INPUT / 2 - s * cy]], np.float64)


class Landmarks106:
    def __init__(self, path: str, device: str = "cpu"):
        from .checkpoint import onnx_session

        self.session = onnx_session(path, device)
        self.input_name = self.session.get_inputs()[0].name
        out = self.session.get_outputs()
        if len(out) != 1 or out[0].shape[-1] != 2 * NUM_POINTS:
            raise ValueError(f"{os.path.basename(path)}: expected one output of {2 * NUM_POINTS} values (106 "
                             f"points), got {[o.shape for o in out]}; is this insightface's 2d106det.onnx?")
        self.mean, self.std = normalisation(path)
        self.path = path

    def predict(self, frames: Sequence[np.ndarray], image_index, boxes) -> np.ndarray:
        """106 points (float32 [k, 106, 2], frame pixels) for each box on ``frames[image_index[j]]`` (RGB uint8)."""
        import cv2

        out = np.zeros((len(boxes), NUM_POINTS, 2), np.float32)
        for j, box in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
            m = crop_matrix(box)
            crop = cv2.warpAffine(np.ascontiguousarray(frames[int(image_index[j])]), m, (INPUT, INPUT),
                                  borderValue=0.0)
            blob = ((crop.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1)[None]
            pred = self.session.run(None, {self.input_name: np.ascontiguousarray(blob)})[0].reshape(-1, 2)
            pts = (pred[-NUM_POINTS:].astype(np.float64) + 1.0) * (INPUT // 2)
            inv = cv2.invertAffineTransform(m)
            out[j] = pts @ inv[:, :2].T + inv[:, 2]
        return out


def latentsync_points(points106: np.ndarray) -> np.ndarray:
    """LatentSync 1.6's three alignment points (left brow, right brow, nose), rounded to integers as the original."""
    p = np.round(np.asarray(points106, np.float64))   # LatentSync rounds the 106 points to int first
    return np.stack([np.round(p[list(ix)].mean(0)) for ix in (LEFT_BROW, RIGHT_BROW, NOSE)]).astype(np.float32)
