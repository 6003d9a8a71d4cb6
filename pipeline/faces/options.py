"""Options of the face analysis (pipeline/faces/tracks.py) and the reasons a frame becomes a cutaway."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

from .cropbox import EDGE_FACES
from .shots import DEFAULT_MIN_SHOT_LEN, DEFAULT_THRESHOLD

SPEAKER_POLICIES = ("largest", "most_central", "track_index", "user_box")
DEFAULT_MIN_SCORE = {"mtcnn": 0.9}
FALLBACK_MIN_SCORE = 0.5            # LatentSync face_detector.py: det_score >= 0.5
MIN_HEIGHT_RATIO = 1.6              # LatentSync's 80 px / 50 px

REASON_NO_FACE = "no face"
REASON_LOW_SCORE = "low score"
REASON_TOO_SMALL = "face too small"
REASON_ASPECT = "odd box shape"
REASON_UNCONFIRMED = "unconfirmed face"
REASON_NOT_SPEAKER = "not the chosen speaker"
REASON_BAD_CROP = "empty crop box"
CUTAWAY_REASONS = (REASON_NO_FACE, REASON_LOW_SCORE, REASON_TOO_SMALL, REASON_ASPECT, REASON_UNCONFIRMED,
                   REASON_NOT_SPEAKER, REASON_BAD_CROP)


@dataclass
class FaceOptions:
    """Options of :func:`analyze_faces` (see the module docstring for the meaning of each)."""

    min_score: Optional[float] = None          # None or <= 0 -> backend default (DEFAULT_MIN_SCORE)
    min_face_size: float = 50.0                # min box width in px; min height is 1.6x this; 0 = no size filter
    min_aspect: float = 0.2                    # w/h
    max_aspect: float = 1.5
    shot_threshold: float = DEFAULT_THRESHOLD  # 0 disables cut detection
    min_shot_len: int = DEFAULT_MIN_SHOT_LEN
    debounce_frames: int = 3
    bridge_gap: int = 2
    iou_threshold: float = 0.3
    speaker: str = "largest"
    track_index: int = 0
    user_box: Union[None, str, Sequence[float]] = None   # "x1,y1,x2,y2" in pixels, or fractions when all <= 1
    bbox_shift: int = 0
    extra_margin: int = 10
    smooth_boxes: bool = True
    smooth_radius: int = 2                     # moving-average half window in frames
    batch_size: int = 8
    edge_faces: str = EDGE_FACES[0]            # pad: crop boxes may leave the frame (pipeline/faces/cropbox.py)

    def validate(self) -> None:
        if self.speaker not in SPEAKER_POLICIES:
            raise ValueError(f"speaker: unknown policy {self.speaker!r}; use one of {', '.join(SPEAKER_POLICIES)}")
        if self.min_aspect > self.max_aspect:
            raise ValueError(f"face aspect limits: min {self.min_aspect} > max {self.max_aspect}")
        if self.edge_faces not in EDGE_FACES:
            raise ValueError(f"edge_faces: unknown value {self.edge_faces!r}; use one of {', '.join(EDGE_FACES)}")
        if self.track_index < 0:
            raise ValueError(f"track_index: must be >= 0 (got {self.track_index})")
        if self.speaker == "user_box" and not self.user_box:
            raise ValueError("user_box: speaker is 'user_box' but no box was given; type 'x1,y1,x2,y2' in pixels "
                             "(or fractions of the frame size, e.g. '0.5,0,1,1' for the right half)")


def parse_user_box(value, width: int, height: int) -> Optional[Tuple[float, float, float, float]]:
    """``"x1,y1,x2,y2"`` (commas and/or spaces) or a 4-sequence -> a box in pixels. When all four values are within
    0..1 they are fractions of the frame width/height. Empty/None -> None."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"user_box: cannot read {value!r}; expected four numbers 'x1,y1,x2,y2'") from None
    else:
        vals = [float(v) for v in value]
    if len(vals) != 4:
        raise ValueError(f"user_box: expected four numbers 'x1,y1,x2,y2', got {len(vals)} in {value!r}")
    if all(0.0 <= v <= 1.0 for v in vals):
        vals = [vals[0] * width, vals[1] * height, vals[2] * width, vals[3] * height]
    x1, y1, x2, y2 = vals
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"user_box: x2 must be > x1 and y2 > y1 (got {value!r})")
    return (x1, y1, x2, y2)
