"""Shot-cut detection: where does the camera cut from one shot to the next?

:class:`ShotDetector` is a content detector in the style of PySceneDetect's ``ContentDetector``: every frame is
downscaled (to ``analysis_width`` pixels wide, area interpolation), converted to HSV (OpenCV ranges: H 0..179, S and V
0..255), and compared with the previous frame. The *content score* is the mean over the three channels of the mean
absolute per-pixel difference. A cut starts at frame ``i`` when ``score(i-1, i) >= threshold`` and the shot that would
end there is at least ``min_shot_len`` frames long.

Why it matters here: face tracks reset at every cut, and LatentSync chunks must never span one (LatentSync's UNet:
temporal attention and cross-frame GroupNorm couple the frames of a chunk). A missed cut is therefore worse than a
spurious one (a spurious cut only restarts a track), so the default minimum shot length is short (4 frames = 0.16 s at
25 fps, where PySceneDetect uses 15): fast edits (music videos, trailers) have shots of a few frames.

The detector is streaming: feed frames in order with :meth:`ShotDetector.push` (the face analysis does this during its
single pass over the video), or call :func:`detect_shots` to run over a :class:`~.frames.Frames` on its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

DEFAULT_THRESHOLD = 27.0      # PySceneDetect ContentDetector's default, same 0..255 scale
DEFAULT_MIN_SHOT_LEN = 4      # frames
DEFAULT_ANALYSIS_WIDTH = 256  # pixels; frames narrower than this are analysed at their own size


@dataclass
class ShotDetector:
    """Content-based shot-cut detector (one job: say where shots start).

    ``threshold``: content score (mean absolute HSV difference, 0..255 scale) at or above which two consecutive frames
    are in different shots. Lower finds more cuts (and more false cuts on fast motion); 0 disables detection.
    ``min_shot_len``: a cut is ignored when the shot it would close has fewer frames than this.
    """

    threshold: float = DEFAULT_THRESHOLD
    min_shot_len: int = DEFAULT_MIN_SHOT_LEN
    analysis_width: int = DEFAULT_ANALYSIS_WIDTH
    shot_starts: List[int] = field(default_factory=lambda: [0])
    scores: List[float] = field(default_factory=list)   # scores[i] = content score between frame i-1 and i (0 at i=0)
    _prev: Optional[np.ndarray] = field(default=None, repr=False)
    _next_index: int = field(default=0, repr=False)

    def __post_init__(self):
        if self.threshold < 0:
            raise ValueError(f"shot_threshold: must be >= 0 (got {self.threshold}); 0 disables cut detection")
        self.min_shot_len = max(1, int(self.min_shot_len))

    def reset(self) -> None:
        self.shot_starts = [0]
        self.scores = []
        self._prev = None
        self._next_index = 0

    # -- per-frame analysis ------------------------------------------------------------------------------------------
    def _small_hsv(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = rgb.shape[:2]
        if w > self.analysis_width:
            nh = max(1, int(round(h * self.analysis_width / float(w))))
            rgb = cv2.resize(np.ascontiguousarray(rgb), (self.analysis_width, nh), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV).astype(np.int16)

    @staticmethod
    def content_score(hsv_a: np.ndarray, hsv_b: np.ndarray) -> float:
        """Mean over H, S, V of the mean absolute difference between two HSV images (0..255 scale)."""
        d = np.abs(hsv_a - hsv_b).reshape(-1, 3)
        return float(d.mean(axis=0).mean())

    def push(self, index: int, rgb: np.ndarray) -> bool:
        """Analyse frame ``index`` (``uint8 [H, W, 3]`` RGB; frames must come in order 0, 1, 2, ...).
        Returns True when a new shot starts at this frame (never for frame 0, which always starts shot 0)."""
        if index != self._next_index:
            raise ValueError(f"ShotDetector.push: expected frame {self._next_index}, got {index} (frames must be "
                             "given in order; call reset() to start over)")
        self._next_index = index + 1
        hsv = self._small_hsv(rgb)
        prev, self._prev = self._prev, hsv
        if prev is None:
            self.scores.append(0.0)
            return False
        score = self.content_score(prev, hsv) if prev.shape == hsv.shape else 255.0
        self.scores.append(score)
        if self.threshold <= 0 or score < self.threshold:
            return False
        if index - self.shot_starts[-1] < self.min_shot_len:
            return False
        self.shot_starts.append(index)
        return True

    def push_batch(self, start: int, rgb: np.ndarray) -> List[int]:
        """Analyse frames ``start .. start+len(rgb)-1``; returns the indices among them where a shot starts."""
        return [start + k for k in range(rgb.shape[0]) if self.push(start + k, rgb[k])]


def detect_shots(frames, threshold: float = DEFAULT_THRESHOLD, min_shot_len: int = DEFAULT_MIN_SHOT_LEN,
                 runtime=None, batch_size: int = 16) -> List[int]:
    """Shot start indices of ``frames`` (a :class:`~.frames.Frames`); always starts with 0. Streams in batches; reports
    progress (and honours cancellation) through ``runtime`` when given."""
    det = ShotDetector(threshold=threshold, min_shot_len=min_shot_len)
    total = len(frames)
    for batch in frames.iter_batches(batch_size):
        det.push_batch(batch.start, batch.rgb)
        if runtime is not None:
            runtime.progress("shot detection", batch.stop, total)
    return list(det.shot_starts)
