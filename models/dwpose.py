"""DWPose (RTMPose-l, COCO-WholeBody 133 points) for the 68 face points the original MuseTalk crops from.

The original (MuseTalk preprocessing.py) calls mmpose 1.1.0 ``inference_topdown(model, frame)`` with the DWPose config
``rtmpose-l_8xb32-270e_coco-ubody-wholebody-384x288`` and keeps ``keypoints[0][23:91]``: the 68 iBUG face points.
This module reproduces that path on the released exports instead of the mmpose checkpoint:

* ``dw-ll_ucoco_384.onnx`` (Hugging Face yzd-v/DWPose) through onnxruntime (when installed), or
* ``dw-ll_ucoco_384_bs5.torchscript.pt`` (hr16/DWPose-TorchScript-BatchSize5, the file comfyui_controlnet_aux users
  have) through ``torch.jit.load``; it only takes batches of exactly 5, so batches are padded.

Both take ``float32 [N, 3, 384, 288]`` and return raw SimCC logits ``simcc_x [N, 133, 576]`` and
``simcc_y [N, 133, 768]`` (told apart by their last dimension, never by name or position).

The steps, as mmpose 1.1.0 runs them (GetBBoxCenterScale, TopdownAffine without UDP, PoseDataPreprocessor,
RTMCCHead with ``flip_test=True``, SimCCLabel decode):

1. region ``(x1, y1, x2, y2)`` -> centre = its middle, scale = its size x 1.25 (padding);
2. the scale is widened to the input's aspect ratio 288/384 (``w > 0.75 h`` -> ``h = w / 0.75``, else
   ``w = 0.75 h``);
3. affine crop to 288x384: uniform factor ``k = 288 / scale_w``, the centre lands on (144, 192); bilinear,
   black outside (cv2.warpAffine INTER_LINEAR, constant border);
4. RGB, ``(x - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]``;
5. flip test: the network also sees the width-flipped input; its x logits are reversed along the bins and both
   logit sets are re-ordered by the left/right mirror of the keypoints, then averaged with the first pass (raw
   logits, no softmax; the half-pixel offset this leaves in the flipped branch is the original's and is kept);
6. decode: argmax along each axis; score = the smaller of the two maxima; a score <= 0 gives -1; bins / 2 =
   input pixels;
7. back to the frame: ``p / (288, 384) * scale + centre - scale / 2``.

**Difference from the original's whole-frame call.** MuseTalk runs DWPose with no person box, i.e. on the whole
frame squeezed into 288x384: on a 1920x1080 frame one SimCC bin is 4.2 px, so a small face in a wide shot gets
coarse, jittery points. Here the region is the whole frame only when the face is large enough for that
(:func:`face_region`); a small face gets a region around it of the same relative size as a talking-head framing
(3.5 face widths), so it keeps the precision a close-up has. On close-ups both give the same crop.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import numpy as np

from . import registry
from .landmarks68 import IBUG_MIRROR

INPUT_W, INPUT_H = 288, 384
SIMCC_SPLIT = 2.0
PADDING = 1.25
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
NUM_KEYPOINTS = 133
FACE_START = 23                     # whole-body points 23..90 are the 68 iBUG face points
NUM_FACE = 68
FACE_FLIP = IBUG_MIRROR             # the flip test re-orders the face points by their left/right mirror
REGION_FACE_WIDTHS = 3.5            # a talking-head framing: the region spans this many face widths
TORCHSCRIPT_BATCH = 5

ONNX_KEY = "dwpose.onnx"
TORCHSCRIPT_KEY = "dwpose.torchscript"
registry.register(
    registry.WeightFile(ONNX_KEY, "musetalk", "dwpose/dw-ll_ucoco_384.onnx", repo_id="yzd-v/DWPose",
                        repo_file="dw-ll_ucoco_384.onnx",
                        description="DWPose whole-body pose (ONNX): the 68 face landmarks of the original MuseTalk",
                        groups=("landmarks",)),
    registry.WeightFile(TORCHSCRIPT_KEY, "musetalk", "dwpose/dw-ll_ucoco_384_bs5.torchscript.pt",
                        repo_id="hr16/DWPose-TorchScript-BatchSize5",
                        repo_file="dw-ll_ucoco_384_bs5.torchscript.pt",
                        description="DWPose whole-body pose (TorchScript, batch 5)", groups=("landmarks",)),
)
# where comfyui_controlnet_aux keeps the same files (its ckpts folder, laid out as <repo id>/<file>)
CONTROLNET_AUX_FILES = {ONNX_KEY: "yzd-v/DWPose/dw-ll_ucoco_384.onnx",
                        TORCHSCRIPT_KEY: "hr16/DWPose-TorchScript-BatchSize5/dw-ll_ucoco_384_bs5.torchscript.pt"}


# ---- geometry --------------------------------------------------------------------------------------------------
def center_scale(region) -> Tuple[np.ndarray, np.ndarray]:
    """Steps 1-2: centre and aspect-fixed scale of a region ``(x1, y1, x2, y2)`` (float32, like mmpose)."""
    x1, y1, x2, y2 = np.asarray(region, np.float32)[:4]
    center = np.array([(x1 + x2) * 0.5, (y1 + y2) * 0.5], np.float32)
    w, h = (x2 - x1) * np.float32(PADDING), (y2 - y1) * np.float32(PADDING)
    aspect = np.float32(INPUT_W / INPUT_H)
    scale = np.array([w, w / aspect] if w > aspect * h else [h * aspect, h], np.float32)
    return center, scale


def warp_matrix(center, scale) -> np.ndarray:
    """Step 3: the 2x3 affine taking frame pixels to the 288x384 input (rotation 0, no UDP)."""
    k = INPUT_W / float(scale[0])
    return np.array([[k, 0.0, INPUT_W / 2 - k * float(center[0])],
                     [0.0, k, INPUT_H / 2 - k * float(center[1])]], np.float64)


def crop_input(rgb: np.ndarray, center, scale) -> np.ndarray:
    """Steps 3-4: uint8 RGB frame [H, W, 3] -> normalised float32 [3, 384, 288]."""
    import cv2

    warped = cv2.warpAffine(np.ascontiguousarray(rgb), warp_matrix(center, scale), (INPUT_W, INPUT_H),
                            flags=cv2.INTER_LINEAR)
    return ((warped.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)


def face_region(box, width: int, height: int) -> Tuple[float, float, float, float]:
    """The region DWPose sees for a face box: the whole frame (the original's call) unless the face is smaller
    than a talking-head framing, then a square of ``REGION_FACE_WIDTHS`` face widths around it."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    side = REGION_FACE_WIDTHS * max(x2 - x1, y2 - y1)
    if side >= min(width, height):
        return 0.0, 0.0, float(width), float(height)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def flip_face_logits(simcc_x: np.ndarray, simcc_y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Step 5 on the flipped pass's face channels [n, 68, bins]: mirror order, x bins reversed."""
    return simcc_x[:, FACE_FLIP, ::-1], simcc_y[:, FACE_FLIP, :]


def decode(simcc_x: np.ndarray, simcc_y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Step 6: logits [n, K, bins] -> points in input pixels [n, K, 2] (float32) and scores [n, K]."""
    ix = simcc_x.argmax(-1).astype(np.float32)
    iy = simcc_y.argmax(-1).astype(np.float32)
    score = np.minimum(simcc_x.max(-1), simcc_y.max(-1))
    pts = np.stack([ix, iy], -1)
    pts[score <= 0] = -1
    return pts / np.float32(SIMCC_SPLIT), score


def to_frame(points: np.ndarray, center, scale) -> np.ndarray:
    """Step 7: input pixels -> frame pixels."""
    scale = np.asarray(scale, np.float32)
    return points / np.array([INPUT_W, INPUT_H], np.float32) * scale + np.asarray(center, np.float32) - scale / 2


# ---- the network -----------------------------------------------------------------------------------------------
class DWPoseNet:
    """A loaded export: ``net(batch float32 [n, 3, 384, 288]) -> (simcc_x [n,133,576], simcc_y [n,133,768])``."""

    def __init__(self, path: str, device: str = "cpu"):
        self.path = path
        if path.endswith(".onnx"):
            from .checkpoint import onnx_session

            self.session = onnx_session(path, device)
            inp = self.session.get_inputs()[0]
            self.input_name = inp.name
            self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
            self.kind = "onnx"
        else:
            import torch

            self.module = torch.jit.load(path, map_location=str(device)).eval()
            self.device = str(device)
            self.fixed_batch = TORCHSCRIPT_BATCH
            self.kind = "torchscript"

    def _run(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self.kind == "onnx":
            outs = self.session.run(None, {self.input_name: x})
        else:
            import torch

            p = next(iter(self.module.parameters()), None)
            dtype = p.dtype if p is not None else torch.float32
            with torch.inference_mode():
                outs = [o.float().cpu().numpy() for o in self.module(torch.from_numpy(x).to(self.device, dtype))]
        by_bins = {o.shape[-1]: o for o in outs}
        if set(by_bins) != {INPUT_W * 2, INPUT_H * 2}:
            raise ValueError(f"{os.path.basename(self.path)}: expected SimCC outputs with {INPUT_W * 2} and "
                             f"{INPUT_H * 2} bins, got shapes {[tuple(o.shape) for o in outs]}; is this DWPose's "
                             "dw-ll_ucoco_384 export?")
        return by_bins[INPUT_W * 2], by_bins[INPUT_H * 2]

    def __call__(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, np.float32)
        n = len(x)
        fb = self.fixed_batch
        if not fb:
            return self._run(x)
        xs, ys = [], []
        for i in range(0, n, fb):
            chunk = x[i:i + fb]
            if len(chunk) < fb:  # the export takes exactly fb inputs: pad with zeros, drop their outputs
                chunk = np.concatenate([chunk, np.zeros((fb - len(chunk),) + chunk.shape[1:], np.float32)])
            sx, sy = self._run(chunk)
            xs.append(sx)
            ys.append(sy)
        return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


def face_landmarks(net: DWPoseNet, frames: Sequence[np.ndarray], image_index: Sequence[int], boxes,
                   flip_test: bool = True, whole_frame: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """68 face points (float32 [k, 68, 2], frame pixels) and their scores [k] (the weakest point's) for each face box
    ``boxes[j]`` on ``frames[image_index[j]]`` (uint8 RGB [H, W, 3]). ``whole_frame`` reproduces the original's
    region exactly (see the module docstring)."""
    k = len(boxes)
    if k == 0:
        return np.zeros((0, NUM_FACE, 2), np.float32), np.zeros((0,), np.float32)
    crops, geometry = [], []
    for j in range(k):
        rgb = frames[int(image_index[j])]
        h, w = rgb.shape[:2]
        region = (0, 0, w, h) if whole_frame else face_region(boxes[j], w, h)
        c, s = center_scale(region)
        crops.append(crop_input(rgb, c, s))
        geometry.append((c, s))
    x = np.stack(crops)
    face = slice(FACE_START, FACE_START + NUM_FACE)
    sx, sy = net(x)
    sx, sy = sx[:, face], sy[:, face]
    if flip_test:
        fx, fy = net(np.ascontiguousarray(x[..., ::-1]))
        fx, fy = flip_face_logits(fx[:, face], fy[:, face])
        sx, sy = (sx + fx) * 0.5, (sy + fy) * 0.5
    pts, score = decode(sx, sy)
    out = np.stack([to_frame(pts[j], *geometry[j]) for j in range(k)]).astype(np.float32)
    return out, score.min(axis=1).astype(np.float32)


def find_weights(extra_dirs: Sequence[str] = ()) -> Optional[str]:
    """An installed DWPose export: the model folder (ONNX first when onnxruntime is importable, then TorchScript),
    then comfyui_controlnet_aux's ckpts folders given in ``extra_dirs``."""
    import importlib.util

    keys = ([ONNX_KEY] if importlib.util.find_spec("onnxruntime") else []) + [TORCHSCRIPT_KEY]
    for key in keys:
        path = registry.find(key)
        if path:
            return path
    for d in extra_dirs:
        for key in keys:
            p = os.path.join(d, CONTROLNET_AUX_FILES[key])
            if os.path.isfile(p):
                return p
    return None
