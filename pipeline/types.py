"""Small typed records that travel between stages (and between ComfyUI nodes as custom types).

* :class:`Detection` — one face found by a detector backend in one frame.
* :class:`Face` — the face chosen for lip-sync in one frame, with the crop geometry each engine needs.
* :class:`FrameFaces` — per frame: the chosen face or ``None`` (a cutaway) and why.
* :class:`FaceSequence` — the ``MUSETALK_FACES`` payload: one :class:`FrameFaces` per frame plus shots and tracks.
* :class:`Patch` — what a backend hands back for one frame: the rectangle of the frame its face changed.
* :class:`LipSyncError` — a run cannot proceed; the message names the input and the fix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

Box = Tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels (x2/y2 exclusive)


class LipSyncError(RuntimeError):
    """The run cannot proceed; the message names the input and the fix."""


@dataclass
class Patch:
    """Replace ``frame[y0:y1, x0:x1]`` by ``pixels`` (uint8 ``[y1-y0, x1-x0, 3]``); nothing else changes. Every
    backend returns its pasted face as a patch; the lip-sync loop writes it into the output frame. ``alpha`` (uint8
    ``[y1-y0, x1-x0]``) is the soft mask of the paste: above 0 wherever a pixel may differ from the frame (the MASK
    output); None when the backend did not say."""

    y0: int
    y1: int
    x0: int
    x1: int
    pixels: np.ndarray
    alpha: Optional[np.ndarray] = None

    @property
    def empty(self) -> bool:
        return self.y1 <= self.y0 or self.x1 <= self.x0

    def __iter__(self):   # y0, y1, x0, x1, pixels = patch
        return iter((self.y0, self.y1, self.x0, self.x1, self.pixels))

    def apply(self, frame: np.ndarray, inplace: bool = False) -> np.ndarray:
        """``frame`` (uint8 ``[H, W, 3]``) with the patch written in (a copy unless ``inplace``)."""
        out = frame if inplace else frame.copy()
        if not self.empty:
            out[self.y0:self.y1, self.x0:self.x1] = self.pixels
        return out


@dataclass
class Detection:
    box: Box                                 # detector box
    score: float                             # detector confidence 0..1
    landmarks: Optional[np.ndarray] = None   # float [K, 2] (x, y); K = 5 (MTCNN) or 68 (iBUG order)
    landmark_kind: str = ""                  # "mtcnn5", "ibug68", ...
    interpolated: bool = False               # True: not detected, bridged over a short dropout inside a face track
    align: Optional[np.ndarray] = None       # LatentSync's 3 alignment points from a 106-point model, when one ran

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)


@dataclass
class Face:
    """The face to lip-sync in one frame."""

    detection: Detection
    track_id: int
    crop_box: Tuple[int, int, int, int]            # MuseTalk v1.5 crop box + extra_margin (get_landmark_and_bbox)
    align_points: Optional[np.ndarray] = None      # float [3, 2]: left brow, right brow, nose (LatentSync)


@dataclass
class FrameFaces:
    index: int
    shot: int
    face: Optional[Face]                            # None = cutaway: the frame passes through unchanged
    detections: List[Detection] = field(default_factory=list)
    track_ids: List[int] = field(default_factory=list)  # track id of each detection (-1 = filtered out)
    reason: str = ""                                 # why it is a cutaway ("no face", "too small", "not speaker"...)

    @property
    def is_cutaway(self) -> bool:
        return self.face is None


@dataclass
class FaceTrack:
    """One face followed through one shot (tracks never cross a cut; a track may have gaps)."""

    id: int                                          # unique in the sequence, numbered by first appearance
    shot: int
    ordinal: int                                     # position among the shot's tracks by first appearance (0-based)
    first: int                                       # first frame (inclusive)
    last: int                                        # last frame (inclusive)
    detected: int = 0                                # frames where the detector found it
    bridged: int = 0                                 # frames filled by interpolation over a dropout
    chosen: int = 0                                  # frames where it is the face to lip-sync
    mean_box: Box = (0.0, 0.0, 0.0, 0.0)


@dataclass
class FaceSequence:
    """``MUSETALK_FACES``: per-frame decisions for a whole frame sequence."""

    frames: List[FrameFaces]
    width: int
    height: int
    fps: float
    shot_starts: List[int] = field(default_factory=lambda: [0])
    params: Dict[str, object] = field(default_factory=dict)
    tracks: List[FaceTrack] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def face_indices(self) -> List[int]:
        return [f.index for f in self.frames if f.face is not None]

    def cutaway_ranges(self) -> List[Tuple[int, int]]:
        """Inclusive ``(first, last)`` frame ranges of consecutive cutaway frames."""
        out: List[Tuple[int, int]] = []
        for f in self.frames:
            if f.face is None:
                if out and out[-1][1] == f.index - 1:
                    out[-1] = (out[-1][0], f.index)
                else:
                    out.append((f.index, f.index))
        return out

    def face_runs(self) -> List[Tuple[int, int]]:
        """Half-open ``[start, stop)`` runs of consecutive face frames that never span a shot cut."""
        runs: List[Tuple[int, int]] = []
        prev_shot = None
        for f in self.frames:
            if f.face is None:
                prev_shot = None
                continue
            if runs and prev_shot == f.shot and runs[-1][1] == f.index:
                runs[-1] = (runs[-1][0], f.index + 1)
            else:
                runs.append((f.index, f.index + 1))
            prev_shot = f.shot
        return runs

    def check_matches(self, num_frames: int, width: int, height: int, name: str = "faces") -> None:
        if len(self.frames) != num_frames or (self.width, self.height) != (width, height):
            raise ValueError(
                f"{name}: the face data was computed for {len(self.frames)} frames of {self.width}x{self.height}, but "
                f"the frames given have {num_frames} frames of {width}x{height}. Connect the same frames to Face "
                "Detect and to this node.")


def ranges_text(ranges: Sequence[Tuple[int, int]]) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges) or "none"
