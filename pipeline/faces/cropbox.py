"""Crop geometry of a face: the MuseTalk v1.5 crop box and the LatentSync alignment points.

MuseTalk v1.5 (MuseTalk ``get_landmark_and_bbox``) crops ``frame[y1:y2, x1:x2]`` with a box derived from
68 iBUG landmarks:

* landmarks are truncated to int (``astype(int32)``, i.e. toward zero);
* ``yc = lm[29].y + bbox_shift`` (the shift is written into point 29 itself, so it takes part in ``max(y)`` below);
* ``half = max(lm.y) - yc``; ``y1 = int(max(0, yc - half))``; ``x1 = min(lm.x)``; ``x2 = max(lm.x)``; ``y2 = max(lm.y)``;
* when ``y2 - y1 <= 0`` or ``x2 - x1 <= 0`` or ``x1 < 0`` the detector box (clipped to >= 0, int) is used instead;
* no detector box at all -> the placeholder ``(0.0, 0.0, 0.0, 0.0)`` (the original's "no face");
* v1.5 then adds ``extra_margin`` (10 px) to the bottom: ``y2 = min(y2 + extra_margin, H)``.

:func:`musetalk_crop_box` reproduces this bit for bit (fixture ``bbox.*``).

**Five points (MTCNN), the last resort** when no 68-point model is installed (pipeline/faces/landmarks.py). The
detector then re-reads the 5 points over shifted and mirrored windows (models/mtcnn_refine.py). The face is carried
into its eye frame by the similarity transform (scale, rotation, translation; least squares) that best fits its 5
points onto an average face's (:data:`_FIT5`: eye midpoint at the origin, eyes one unit apart, y down). There a
linear shape regression (``five_point_face.json``) predicts the 68 iBUG points from the nose, the mouth corners and
the detector box's centre and size (the box tells where the chin and the cheeks are better than 5 points do); the
prediction is carried back into the image and the very same rule is applied to it (:func:`estimate_68`,
:func:`crop_box_from_5`). The regression was fitted by ``scripts/fit_five_point.py`` on dlib's 68 points of 41 people's
real photos, mirrored, rotated and scaled; its crop IoU against the rule on the real points is 0.909 per person held
out (leave one person out; 0.897 over all 674 faces), against 0.97 for real landmarks, which is why any 68-point model is
preferred (README "Face geometry"). Pitch, yaw, jaw opening and face width are only what the 5 points and the box
show; the 10 px ``extra_margin`` gives the jaw room, as it does for 68 points.

**LatentSync alignment points** (LatentSync AlignRestore): left brow centre, right brow centre, nose centre.
From 68 points they are the means of ``lm68[17:22]``, ``lm68[22:27]``, ``lm68[27:36]`` (float, unrounded); from 5 points
the same means of the estimated 68 points.

**Faces at the frame's edge** (``edge_faces``, :data:`EDGE_FACES`): ``original`` is the rule above, as released: a
landmark 1 px left of the frame (``x1 < 0``) switches to the detector box, whose shape the network never saw in
training, and a box past the top is cut at row 0, past the right or bottom edge by the slice (then stretched to
256x256). ``pad`` (the default) keeps the box the landmarks give wherever it lies (no ``max(0, ...)``, no fallback
for ``x1 < 0``, no clipping of the margin): the crop is cut from the frame padded with its border pixels
(pipeline/backends/musetalk_engine.py ``crop_face``; LatentSync's warp replicates the border the same way) and only
the pixels inside the frame are pasted back.

**Box smoothing** (:func:`smooth_boxes`): a centred moving average of the four coordinates over the frames of one
track run (never across a cut), rounded to int. Off reproduces the per-frame boxes of the original exactly.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence, Tuple

import numpy as np

COORD_PLACEHOLDER = (0.0, 0.0, 0.0, 0.0)   # the original's "no face" coordinate (floats), MuseTalk preprocessing.py
IntBox = Tuple[int, int, int, int]
EDGE_FACES = ("pad", "original")          # faces at the frame's edge: see the module docstring

# -- the 5-point estimate (see module docstring; refit with scripts/fit_five_point.py) -------------------------------
# the eye frame: MTCNN's points (image-left eye, image-right eye, nose tip, image-left and image-right mouth corner)
# of an average face; a similarity transform fitted onto these carries a detected face into the frame
_FIT5 = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, 0.652], [-0.457, 1.067], [0.457, 1.067]], np.float64)
FIVE_POINT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "five_point_face.json")
FIVE_POINT_FEATURES = ("nose x", "nose y", "left mouth x", "left mouth y", "right mouth x", "right mouth y",
                       "box centre x", "box centre y", "box width", "box height")

def _int_box_from_detector(box, edge_faces: str = "original") -> IntBox:
    """Detector box clipped to >= 0 and cast to int (what S3FD hands over in MuseTalk's preprocessing.py); with
    ``pad`` not clipped."""
    if edge_faces == "pad":
        return tuple(int(np.floor(float(v))) for v in box[:4])
    x1, y1, x2, y2 = (max(0.0, float(v)) for v in box[:4])
    return int(x1), int(y1), int(x2), int(y2)


def _landmark_rule(points: np.ndarray, center_row: int, bbox_shift: int, edge_faces: str = "original") -> IntBox:
    """The MuseTalk rule on truncated int points; ``points[center_row]`` is point 29. ``pad`` does not cut the top
    at row 0 and floors instead of truncating (the same for points inside the frame)."""
    p = np.asarray(points, np.float64)
    lm = (np.floor(p) if edge_faces == "pad" else p).astype(np.int32)  # astype: toward zero, like the original
    if bbox_shift:
        lm[center_row, 1] += int(bbox_shift)  # the original modifies point 29 in place (it is a view)
    yc = int(lm[center_row, 1])
    y_max = int(lm[:, 1].max())
    half = y_max - yc
    y1 = int(yc - half) if edge_faces == "pad" else int(max(0, yc - half))
    return int(lm[:, 0].min()), y1, int(lm[:, 0].max()), y_max


def _valid_or_fallback(box: IntBox, detector_box, edge_faces: str = "original") -> IntBox:
    x1, y1, x2, y2 = box
    if y2 - y1 <= 0 or x2 - x1 <= 0 or (x1 < 0 and edge_faces != "pad"):
        return _int_box_from_detector(detector_box, edge_faces)
    return box


def musetalk_crop_box(landmarks68: Optional[np.ndarray], detector_box, bbox_shift: int = 0,
                      edge_faces: str = "original"):
    """MuseTalk v1.5 crop box from 68 iBUG landmarks, exactly as MuseTalk's ``get_landmark_and_bbox`` (``original``),
    or following the landmarks past the frame's edges (``pad``, see the module docstring).

    ``landmarks68``: float ``[68, 2]`` (x, y). ``detector_box``: the detector's box ``(x1, y1, x2, y2)`` or None
    (no face). Returns ``(x1, y1, x2, y2)`` ints, or :data:`COORD_PLACEHOLDER` when ``detector_box`` is None.
    ``extra_margin`` is NOT applied here (see :func:`apply_extra_margin`)."""
    if detector_box is None:
        return COORD_PLACEHOLDER
    lm = np.asarray(landmarks68, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"musetalk_crop_box: expected 68 landmarks [68, 2], got {tuple(lm.shape)}")
    return _valid_or_fallback(_landmark_rule(lm, 29, bbox_shift, edge_faces), detector_box, edge_faces)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (uniform scale, rotation, translation; no reflection) mapping ``src``
    points onto ``dst`` points. Returns a 2x3 matrix ``M`` with ``dst ≈ src @ M[:, :2].T + M[:, 2]``."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    var = (s ** 2).sum()
    if var <= 0:
        raise ValueError("fit_similarity: degenerate source points")
    cov = d.T @ s
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((sig * sign).sum() / var)
    a = scale * rot
    return np.concatenate([a, (md - a @ ms)[:, None]], axis=1)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def five_point_model(path: str = FIVE_POINT_MODEL) -> dict:
    """The fitted shape regression (numpy arrays), read once from ``five_point_face.json`` (the model cache)."""
    from .. import model_cache

    def load() -> dict:
        with open(path) as f:
            doc = json.load(f)
        return {k: np.asarray(doc[k], np.float64) for k in ("feature_mean", "shape_mean", "basis")}

    return model_cache.cached("faces.five_point", model_cache.file_stamp([path]), load)


def _eye_frame(points5) -> np.ndarray:
    """2x3 similarity taking image pixels into the eye frame (least squares over the 5 points)."""
    p = np.asarray(points5, np.float64)
    if p.shape != (5, 2):
        raise ValueError(f"expected 5 landmarks [5, 2] (eyes, nose, mouth corners), got {tuple(p.shape)}")
    return fit_similarity(p, _FIT5)


def to_eye_frame(points5, points) -> np.ndarray:
    """``points`` (image pixels) in the eye frame of the face whose 5 points are ``points5``."""
    return _apply(_eye_frame(points5), np.asarray(points, np.float64))


def five_point_features(points5, detector_box, m: Optional[np.ndarray] = None) -> np.ndarray:
    """:data:`FIVE_POINT_FEATURES`: nose and mouth corners, and the detector box's centre and size, in the eye frame
    ``m`` (default: the face's own; the box is axis-aligned in the image: its size is scaled, not rotated)."""
    m = _eye_frame(points5) if m is None else m
    p = _apply(m, np.asarray(points5, np.float64))
    x1, y1, x2, y2 = (float(v) for v in detector_box[:4])
    centre = _apply(m, np.array([[(x1 + x2) / 2, (y1 + y2) / 2]]))[0]
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    return np.concatenate([p[2:].ravel(), centre, [(x2 - x1) * scale, (y2 - y1) * scale]])


def estimate_68(points5: np.ndarray, detector_box=None, model: Optional[dict] = None) -> np.ndarray:
    """68 iBUG points ``float [68, 2]`` estimated from 5 MTCNN points (eyes, nose tip, mouth corners in image order)
    and the detector's box: the shape regression of :func:`five_point_model` evaluated in the face's eye frame and
    carried back into the image. Without a box, the box features take their mean (the average face's box)."""
    model = model or five_point_model()
    m = _eye_frame(points5)
    feats = model["feature_mean"] if detector_box is None else five_point_features(points5, detector_box, m)
    shape = model["shape_mean"].ravel() + (feats - model["feature_mean"]) @ model["basis"]
    inverse = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    return _apply(inverse, shape.reshape(68, 2))


def crop_box_from_5(points5: np.ndarray, detector_box, bbox_shift: int = 0, edge_faces: str = "original"):
    """Approximate MuseTalk v1.5 crop box from 5 landmarks and the detector's box: the 68-point rule applied to
    :func:`estimate_68`, with the same fallback to the detector box and the same placeholder."""
    if detector_box is None:
        return COORD_PLACEHOLDER
    return musetalk_crop_box(estimate_68(points5, detector_box), detector_box, bbox_shift, edge_faces)


def apply_extra_margin(box, extra_margin: int, height: int, edge_faces: str = "original") -> IntBox:
    """v1.5 bottom margin: ``y2 = min(y2 + extra_margin, H)`` (MuseTalk scripts/inference.py, v15 extra_margin);
    with ``pad`` the margin may leave the frame."""
    x1, y1, x2, y2 = (int(v) for v in box)
    y2 = y2 + int(extra_margin)
    return x1, y1, x2, (y2 if edge_faces == "pad" else int(min(y2, int(height))))


def align_points_68(landmarks68: np.ndarray) -> np.ndarray:
    """LatentSync's 3 alignment points from 68 landmarks: means of [17:22], [22:27], [27:36] (LatentSync v1.0)."""
    lm = np.asarray(landmarks68, np.float64)
    return np.stack([lm[17:22].mean(0), lm[22:27].mean(0), lm[27:36].mean(0)]).astype(np.float32)


def align_points_5(points5: np.ndarray, detector_box=None) -> np.ndarray:
    """LatentSync's 3 alignment points estimated from 5 MTCNN points and the box (those of :func:`estimate_68`)."""
    return align_points_68(estimate_68(points5, detector_box))


def face_crop_geometry(detection, width: int, height: int, bbox_shift: int = 0, extra_margin: int = 10,
                       edge_faces: str = "original") -> Tuple[Optional[IntBox], Optional[np.ndarray]]:
    """Crop box (extra margin applied) and alignment points of one :class:`~.types.Detection`.

    68 landmarks: the exact MuseTalk rule; 5 landmarks: the approximation; no landmarks: the detector box and no
    alignment points. ``original``: the box's right/bottom edges are clipped to the frame (the pixels the original's
    numpy slice would take); ``pad``: the box may leave the frame (module docstring). Returns ``(None, align)`` when
    the box is empty, or lies wholly outside the frame."""
    if edge_faces not in EDGE_FACES:
        raise ValueError(f"edge_faces: unknown value {edge_faces!r}; use one of {', '.join(EDGE_FACES)}")
    lm = detection.landmarks
    n = 0 if lm is None else int(np.asarray(lm).shape[0])
    if n == 68:
        box = musetalk_crop_box(lm, detection.box, bbox_shift, edge_faces)
        align = align_points_68(lm)
    elif n == 5:
        box = crop_box_from_5(lm, detection.box, bbox_shift, edge_faces)
        align = align_points_5(lm, detection.box)
    else:
        box = _int_box_from_detector(detection.box, edge_faces)
        align = None
    if getattr(detection, "align", None) is not None:  # LatentSync face_detector.py: 1.6's own points (InsightFace 106)
        align = np.asarray(detection.align, np.float32)
    x1, y1, x2, y2 = apply_extra_margin(box, extra_margin, height, edge_faces)
    if edge_faces != "pad":
        x2 = min(x2, int(width))
    if x2 - x1 <= 0 or y2 - y1 <= 0 or min(x2, width) <= max(x1, 0) or min(y2, height) <= max(y1, 0):
        return None, align
    return (x1, y1, x2, y2), align


def smooth_boxes(boxes: Sequence[Sequence[int]], radius: int = 2) -> np.ndarray:
    """Centred moving average (window ``2*radius+1``, truncated at both ends) of int boxes ``[n, 4]`` of one track
    run, rounded to int. ``radius <= 0`` returns the boxes unchanged."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = b.shape[0]
    if radius <= 0 or n <= 1:
        return b.astype(np.int64)
    c = np.concatenate([np.zeros((1, 4)), np.cumsum(b, axis=0)], axis=0)
    lo = np.clip(np.arange(n) - radius, 0, n)
    hi = np.clip(np.arange(n) + radius + 1, 0, n)
    avg = (c[hi] - c[lo]) / (hi - lo)[:, None]
    return np.rint(avg).astype(np.int64)
