"""Face detector backends: one job, find the faces in a batch of frames.

``create_detector(backend, runtime)`` returns a :class:`FaceDetector` whose ``detect(rgb)`` takes uint8 RGB frames
``[n,H,W,3]`` and returns, per frame, the :class:`~.types.Detection` list sorted by score (best first); a frame
without a face gives ``[]``.

Backends:

* ``"mtcnn"`` (default): the MTCNN cascade with 5 landmarks (``landmark_kind="mtcnn5"``: image-left eye,
  image-right eye, nose tip, image-left and image-right mouth corners). Works offline: its three small weight files
  ship in the ``facenet-pytorch`` wheel (found without importing it), or live in the model folder
  ``musetalk/mtcnn/``, or are downloaded on first use. Frames whose short side exceeds ``detect_short_side``
  (default 720) are detected on an area-downscaled copy and the boxes/landmarks mapped back, so the cost and the
  smallest face found (``min_face_size``, 20 px at that resolution, i.e. 30 px in 1080p) do not depend on the
  video resolution. Each box then gets 68 real landmarks from the best landmark source installed (``landmarks``
  option, pipeline/faces/landmarks.py: DWPose, FAN, dlib; ``landmark_kind`` names it); without one the 5 points stay
  and the crop is estimated from them.
* ``"s3fd+fan68"``: the original MuseTalk-style detector (MuseTalk preprocessing.py): S3FD boxes (score > 0.05, NMS 0.3,
  keep > 0.5, full resolution by default) and 68 iBUG landmarks from FAN (2DFAN4) on each box
  (``landmark_kind="fan-68"``; the original used DWPose's 68 face points, see models/landmarks68.py). Needs the
  ``s3fd`` and ``fan68`` weight files.

Models are loaded once per (files, device, dtype) and cached at module level. Frames are processed in batches on
``runtime.device``; an out-of-memory error halves the batch and retries.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ...models import registry
from .. import model_cache
from ..runtime import Runtime, is_oom
from ..types import Detection

_log = logging.getLogger(__name__).info

BACKENDS = ("mtcnn", "s3fd+fan68")
DEFAULT_BACKEND = "mtcnn"

def _cached(key: tuple, build: Callable[[], object]):
    """Detector and landmark models live in the pack's one model cache (pipeline/model_cache.py), kind ``faces.*``."""
    return model_cache.cached(f"faces.{key[0]}", key, build, keep=2)


def clear_cache() -> None:
    """Forget every loaded detector and landmark model (frees their memory)."""
    model_cache.clear("faces")


def _as_frames(rgb: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    """uint8 RGB [n,H,W,3] or [H,W,3] (numpy or torch) -> uint8 torch [n,H,W,3] on the CPU."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)) if isinstance(rgb, np.ndarray) else rgb
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4 or t.shape[-1] != 3:
        raise ValueError(f"face detection expects RGB frames [n,H,W,3], got shape {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        raise ValueError(f"face detection expects uint8 frames, got {t.dtype}")
    return t


class FaceDetector:
    """A face detector backend. Subclasses implement :meth:`_detect_batch` on a batch of same-size frames."""

    name: str = ""
    landmark_kind: str = ""

    def __init__(self, runtime: Runtime, batch_size: int = 8):
        self.runtime = runtime
        self.batch_size = max(1, int(batch_size))

    def detect(self, rgb: Union[np.ndarray, torch.Tensor]) -> List[List[Detection]]:
        """Faces in each frame of ``rgb`` (uint8 [n,H,W,3], all frames the same size), best score first."""
        frames = _as_frames(rgb)
        out: List[List[Detection]] = []
        i, bs = 0, self.batch_size
        while i < len(frames):
            self.runtime.check_cancelled()
            chunk = frames[i:i + bs]
            try:
                out.extend(self._detect_batch(chunk))
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                if not is_oom(exc) or bs == 1:
                    raise
                self.runtime.empty_cache()
                bs = max(1, bs // 2)
                self.batch_size = bs
                continue
            i += len(chunk)
        return out

    def _detect_batch(self, frames: torch.Tensor) -> List[List[Detection]]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.runtime.device})"


def _clip_box(box: np.ndarray, width: int, height: int) -> Optional[Tuple[float, float, float, float]]:
    """The box clipped to the frame, or None when nothing of it is inside."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = min(max(x1, 0.0), float(width)), min(max(x2, 0.0), float(width))
    y1, y2 = min(max(y1, 0.0), float(height)), min(max(y2, 0.0), float(height))
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _to_device_float(frames: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [n,H,W,3] -> float [n,3,H,W] 0..255 on ``device``."""
    return frames.to(device, non_blocking=True).permute(0, 3, 1, 2).to(dtype)


def _downscale(images: torch.Tensor, short_side: Optional[int]) -> Tuple[torch.Tensor, float, float]:
    """Area-downscale [n,3,H,W] so its short side is ``short_side`` (no-op when already smaller). Returns the images
    and the factors (sx, sy) that map their coordinates back to the input's."""
    h, w = images.shape[2:]
    if not short_side or min(h, w) <= short_side:
        return images, 1.0, 1.0
    f = short_side / float(min(h, w))
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    return F.interpolate(images, size=(nh, nw), mode="area"), w / nw, h / nh


def detector_requirements(backend: str) -> List[Tuple[str, ...]]:
    """The weight files a detector backend needs (for the pre-flight check, pipeline/backends/selection.py): MTCNN's
    three files unless they are in the model folder or the facenet-pytorch wheel; S3FD's and FAN's."""
    from ...models import mtcnn

    if backend == "mtcnn":
        keys = mtcnn.REGISTRY_KEYS.values()
        if all(registry.find(k) for k in keys) or mtcnn.wheel_weight_paths():
            return []
        return [(k,) for k in keys]
    return [("s3fd",), ("fan68",)]


# ---- MTCNN ---------------------------------------------------------------------------------------------------------
def mtcnn_weight_paths(auto_download: bool = True) -> Dict[str, str]:
    """``{"pnet"|"rnet"|"onet": path}``: the model folder (``musetalk/mtcnn/``) first, then the facenet-pytorch
    wheel, then a download through the registry (which raises MissingWeightsError naming each file when it cannot)."""
    from ...models import mtcnn

    keys = mtcnn.REGISTRY_KEYS
    found = {name: registry.find(key) for name, key in keys.items()}
    if all(found.values()):
        return found
    wheel = mtcnn.wheel_weight_paths()
    if wheel:
        return wheel
    got = registry.ensure(list(keys.values()), auto_download)
    return {name: got[key] for name, key in keys.items()}


class MTCNNDetector(FaceDetector):
    name = "mtcnn"

    def __init__(self, runtime: Runtime, auto_download: bool = True, min_face_size: float = 20.0,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 detect_short_side: Optional[int] = 720, batch_size: int = 8, dtype: Optional[torch.dtype] = None,
                 landmarks: str = "auto"):
        super().__init__(runtime, batch_size)
        from ...models import mtcnn
        from .landmarks import ALIGN_106, ESTIMATE, open_alignment_source, open_landmark_source

        # 68 real points in each MTCNN box when a landmark source is here (pipeline/faces/landmarks.py), else the 5 points;
        # LatentSync's alignment points from InsightFace's 106 when the user has that model
        self.landmarks, self.landmark_notes = _cached(
            ("landmarks", landmarks, str(runtime.device), bool(auto_download)),
            lambda: open_landmark_source(landmarks, runtime, auto_download, log=_log))
        self.align, why = _cached(("align106", str(runtime.device)), lambda: open_alignment_source(runtime))
        self.landmark_notes = list(self.landmark_notes) + ([why] if why else [])
        self.landmark_kind = (self.landmarks.name if self.landmarks is not None else ESTIMATE) + (
            f"; LatentSync alignment: {ALIGN_106}" if self.align is not None else "")
        # the 5 points are the crop's only source: re-read them over several windows (models/mtcnn_refine.py)
        self.refine_points = self.landmarks is None

        if len(tuple(thresholds)) != 3:
            raise ValueError("mtcnn: thresholds must be three numbers (P-Net, R-Net, O-Net)")
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.detect_short_side = int(detect_short_side) if detect_short_side else None
        self.dtype = dtype or torch.float32          # tiny networks: fp32 everywhere keeps the thresholds exact
        paths = mtcnn_weight_paths(auto_download)
        device = torch.device(runtime.device)
        key = ("mtcnn", tuple(sorted(paths.items())), str(device), str(self.dtype))
        nets = _cached(key, lambda: mtcnn.load_mtcnn(paths, "cpu", torch.float32))
        nets = [runtime.prepare_model(net, self.dtype) for net in (nets.pnet, nets.rnet, nets.onet)]
        self.model = mtcnn.MTCNN(*nets, config=mtcnn.MTCNNConfig(min_face_size=self.min_face_size,
                                                                 thresholds=self.thresholds, factor=float(factor)))
        self.paths = paths

    def _detect_batch(self, frames: torch.Tensor) -> List[List[Detection]]:
        n, height, width = frames.shape[:3]
        images = _to_device_float(frames, self.model.device, torch.float32)
        full = images if self.refine_points else None                # full resolution only for the refinement
        images, sx, sy = _downscale(images, self.detect_short_side)
        results = self.model.detect(images.to(self.model.dtype))
        scale = np.array([sx, sy], dtype=np.float64)
        for r in results:                                              # back to the frames' pixels
            r["boxes"] = r["boxes"].astype(np.float64) * np.tile(scale, 2)
            r["landmarks"] = r["landmarks"].astype(np.float64) * scale
        if full is not None:
            results = self._refined(full, results)
        out, raw = [], []           # raw: the boxes as regressed, past the frame's edge (for the landmark models)
        for r in results:
            dets, boxes = [], []
            for box, score, pts in zip(r["boxes"], r["scores"], r["landmarks"]):
                clipped = _clip_box(box, width, height)
                if clipped is not None:
                    dets.append(Detection(box=clipped, score=float(score), landmarks=pts.astype(np.float32),
                                          landmark_kind="mtcnn5"))
                    boxes.append(tuple(float(v) for v in box))
            out.append(dets)
            raw.append(boxes)
        if self.landmarks is None and self.align is None:
            return out
        from .landmarks import add_landmarks

        return add_landmarks(self.landmarks, frames.cpu().numpy(), out, self.align, raw)

    def _refined(self, images: torch.Tensor, results: List[dict]) -> List[dict]:
        """The 5 points are the crop's only source (no 68-point model): O-Net re-reads them over shifted and
        mirrored windows at full resolution (models/mtcnn_refine.py), and the boxes with them."""
        from ...models.mtcnn_refine import refine

        counts = [len(r["boxes"]) for r in results]
        boxes, points = refine(self.model, images, np.repeat(np.arange(len(results)), counts),
                               np.concatenate([r["boxes"] for r in results]))
        splits = np.cumsum(counts)[:-1]
        for r, b, p in zip(results, np.split(boxes, splits), np.split(points, splits)):
            r["boxes"], r["landmarks"] = b, p
        return results


# ---- S3FD + FAN 68 -------------------------------------------------------------------------------------------------
class S3FDFan68Detector(FaceDetector):
    name = "s3fd+fan68"
    landmark_kind = "fan-68"

    def __init__(self, runtime: Runtime, auto_download: bool = True, score_threshold: float = 0.05,
                 nms_threshold: float = 0.3, keep_threshold: float = 0.5, max_short_side: Optional[int] = None,
                 batch_size: int = 4, landmark_batch: int = 16, max_faces: Optional[int] = 32,
                 dtype: Optional[torch.dtype] = None):
        super().__init__(runtime, batch_size)
        from ...models import landmarks68, s3fd

        self.score_threshold, self.nms_threshold = float(score_threshold), float(nms_threshold)
        self.keep_threshold = float(keep_threshold)
        self.max_short_side = int(max_short_side) if max_short_side else None
        self.landmark_batch = max(1, int(landmark_batch))
        self.max_faces = int(max_faces) if max_faces else None   # per frame, best first: bounds the FAN work
        device = torch.device(runtime.device)
        # fp32 on the CPU; fp16 on accelerators (both nets are plain conv nets; scores/decoding stay in fp32).
        self.dtype = dtype or (torch.float32 if device.type == "cpu" else torch.float16)
        paths = registry.ensure([s3fd.REGISTRY_KEY, landmarks68.REGISTRY_KEY], auto_download)
        self.paths = paths
        sp, fp = paths[s3fd.REGISTRY_KEY], paths[landmarks68.REGISTRY_KEY]
        det = _cached(("s3fd", sp, str(device), str(self.dtype)), lambda: s3fd.load_s3fd(sp, "cpu", torch.float32))
        fan = _cached(("fan68", fp, str(device), str(self.dtype)),
                      lambda: landmarks68.load_fan(fp, "cpu", torch.float32))
        self.s3fd = runtime.prepare_model(det, self.dtype)
        self.fan = runtime.prepare_model(fan, self.dtype)

    def _detect_batch(self, frames: torch.Tensor) -> List[List[Detection]]:
        from ...models import landmarks68, s3fd

        n, height, width = frames.shape[:3]
        device = next(self.s3fd.parameters()).device
        results = s3fd.detect(self.s3fd, frames.to(device), self.score_threshold, self.nms_threshold,
                              self.keep_threshold, self.max_short_side)
        if self.max_faces:
            results = [{k: v[:self.max_faces] for k, v in r.items()} for r in results]
        img = np.concatenate([np.full(len(r["boxes"]), b, np.int64) for b, r in enumerate(results)])
        boxes = np.concatenate([r["boxes"] for r in results]).reshape(-1, 4)
        points = np.zeros((0, landmarks68.NUM_POINTS, 2), np.float32)
        if len(boxes):
            images = _to_device_float(frames, device, torch.float32)
            points = landmarks68.predict(self.fan, images, img, boxes, self.landmark_batch)
        out: List[List[Detection]] = []
        j = 0
        for r in results:
            dets = []
            for box, score in zip(r["boxes"], r["scores"]):
                clipped = _clip_box(box, width, height)
                if clipped is not None:
                    dets.append(Detection(box=clipped, score=float(score), landmarks=points[j],
                                          landmark_kind=self.landmark_kind))
                j += 1
            out.append(dets)
        return out


_BACKEND_CLASSES = {"mtcnn": MTCNNDetector, "s3fd+fan68": S3FDFan68Detector}


def detector_options(backend: str, min_face_size: float, width: int, height: int, landmarks: str = "auto") -> dict:
    """The detector options that follow from the analysis settings (used by the Face Detect node and the CLI alike).

    MTCNN searches faces down to ``min_face_size`` pixels of the image it sees (720p short side at most); faces
    smaller than the analysis keeps need not be searched, and a coarser pyramid is faster. 0.8 leaves room for the
    box regression. Never below the detector's own default (20). ``landmarks``: the 68-point source for its boxes."""
    if backend != "mtcnn":
        return {}
    if not min_face_size or min_face_size <= 0:
        return {"landmarks": landmarks}
    scale = min(1.0, 720.0 / float(max(1, min(width, height))))
    return {"min_face_size": max(20.0, 0.8 * float(min_face_size) * scale), "landmarks": landmarks}


def create_detector(backend: str = DEFAULT_BACKEND, runtime: Optional[Runtime] = None, auto_download: bool = True,
                    **options) -> FaceDetector:
    """Build (or reuse the cached models of) a detector backend on ``runtime.device``.

    ``backend``: ``"mtcnn"`` (options ``min_face_size``, ``thresholds``, ``factor``, ``detect_short_side``,
    ``batch_size``, ``dtype``, ``landmarks``) or ``"s3fd+fan68"`` (options ``score_threshold``, ``nms_threshold``,
    ``keep_threshold``, ``max_short_side``, ``batch_size``, ``landmark_batch``, ``max_faces``, ``dtype``).
    Missing weights raise :class:`~..models.registry.MissingWeightsError` naming each file and where to put it.
    """
    key = (backend or DEFAULT_BACKEND).strip().lower()
    if key not in _BACKEND_CLASSES:
        raise ValueError(f"unknown face detector backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return _BACKEND_CLASSES[key](runtime or Runtime(), auto_download=auto_download, **options)
