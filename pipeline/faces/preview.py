"""What Face Detect shows: the preview (up to 64 frames with the detections, the chosen face and its crop box drawn,
cutaways framed in red with the reason) and the text summary (shots, tracks, cutaway ranges and why)."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from ..types import FaceSequence, ranges_text

PREVIEW_MAX_FRAMES = 64
PREVIEW_MAX_WIDTH = 512


def preview_indices(num_frames: int, max_frames: int = PREVIEW_MAX_FRAMES):
    """All frames of a short clip, else ``max_frames`` indices spread evenly (first and last included)."""
    import numpy as np

    if num_frames <= max_frames:
        return list(range(num_frames))
    return sorted(set(int(round(x)) for x in np.linspace(0, num_frames - 1, max_frames)))


def draw_preview(rgb, frame_faces, scale: float):
    """One preview frame: detections (grey: filtered out, yellow: other tracks), the chosen face (green) and its
    crop box (cyan); cutaways get a red border and "CUTAWAY" with the reason."""
    import cv2
    import numpy as np

    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    th = max(1, int(round(min(h, w) / 180)))

    def rect(box, color, t=th):
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box[:4])
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), color, t)

    chosen = frame_faces.face.detection if frame_faces.face is not None else None
    for det, tid in zip(frame_faces.detections, frame_faces.track_ids):
        if det is chosen:
            continue
        rect(det.box, (255, 220, 0) if tid >= 0 else (150, 150, 150))
    font = cv2.FONT_HERSHEY_SIMPLEX
    fs = max(0.35, min(h, w) / 500.0)
    if frame_faces.face is not None:
        face = frame_faces.face
        rect(face.detection.box, (0, 220, 0))
        rect(face.crop_box, (0, 200, 255))
        if face.detection.landmarks is not None:
            for x, y in np.asarray(face.detection.landmarks)[:, :2]:
                cv2.circle(img, (int(round(x * scale)), int(round(y * scale))), max(1, th), (0, 255, 0), -1)
        label = f"#{frame_faces.index} shot {frame_faces.shot} track {face.track_id}"
    else:
        b = max(3, int(round(min(h, w) / 40)))
        img[:b], img[-b:], img[:, :b], img[:, -b:] = (220, 0, 0), (220, 0, 0), (220, 0, 0), (220, 0, 0)
        cv2.putText(img, "CUTAWAY", (b + 4, h - b - 8 - int(28 * fs)), font, fs * 1.4, (255, 0, 0),
                    max(1, th + 1), cv2.LINE_AA)
        cv2.putText(img, frame_faces.reason or "", (b + 4, h - b - 6), font, fs, (255, 60, 60), max(1, th),
                    cv2.LINE_AA)
        label = f"#{frame_faces.index} shot {frame_faces.shot}"
    cv2.putText(img, label, (6, 6 + int(22 * fs)), font, fs, (0, 0, 0), th + 2, cv2.LINE_AA)
    cv2.putText(img, label, (6, 6 + int(22 * fs)), font, fs, (255, 255, 255), th, cv2.LINE_AA)
    return img


class PreviewCollector:
    """Keeps the preview frames (downscaled to PREVIEW_MAX_WIDTH) while :func:`.tracks.analyze_faces` streams the
    frames past (its ``frame_hook``), then draws them once the face decisions are known."""

    def __init__(self, num_frames: int, width: int, height: int):
        self.wanted = preview_indices(num_frames)
        self._wanted = set(self.wanted)
        self.scale = min(1.0, PREVIEW_MAX_WIDTH / float(width))
        self.size = (max(1, int(round(width * self.scale))), max(1, int(round(height * self.scale))))
        self.kept: Dict[int, np.ndarray] = {}

    def keep(self, batch) -> None:
        import cv2

        for k in range(len(batch)):
            i = batch.start + k
            if i in self._wanted:
                self.kept[i] = cv2.resize(batch.rgb[k], self.size, interpolation=cv2.INTER_AREA) \
                    if self.scale < 1.0 else batch.rgb[k].copy()

    def draw(self, faces) -> np.ndarray:
        """uint8 ``[n, h, w, 3]``; a black frame when there were no frames at all (the IMAGE output stays valid)."""
        if not self.wanted:
            return np.zeros((1, self.size[1], self.size[0], 3), np.uint8)
        frames: List[np.ndarray] = [draw_preview(self.kept[i], faces.frames[i], self.scale) for i in self.wanted]
        return np.stack(frames)


def summarize(seq: FaceSequence, max_shot_lines: int = 100) -> str:
    """Human-readable report: shots with frame ranges, tracks, cutaway ranges and why, counts (at most
    ``max_shot_lines`` shot lines; the rest are counted)."""
    n = len(seq)
    starts = list(seq.shot_starts) + [n]
    faces = len(seq.face_indices())
    lines = [f"{n} frames {seq.width}x{seq.height} @ {seq.fps:.3f} fps: {faces} with a face, {n - faces} cutaway; "
             f"{len(seq.shot_starts)} shot(s), {len(seq.tracks)} face track(s)"]
    p = seq.params
    if p:
        lines.append(f"backend {p.get('backend', '?')}, landmarks: {p.get('landmark_kind', '?')}, min score "
                     f"{p.get('min_score_used', '?')}, speaker {p.get('speaker', '?')}")
        for why in p.get("landmark_notes") or []:
            lines.append(f"  (skipped {why})")
    for s in range(len(seq.shot_starts)):
        if s >= max_shot_lines:
            lines.append(f"... {len(seq.shot_starts) - max_shot_lines} more shot(s)")
            break
        a, b = starts[s], starts[s + 1] - 1
        shot_frames = seq.frames[a:b + 1]
        nf = sum(1 for f in shot_frames if f.face is not None)
        tr = [t for t in seq.tracks if t.shot == s]
        tr_text = "; ".join(
            f"track {t.id} frames {t.first}-{t.last} (detected {t.detected}, bridged {t.bridged}, chosen {t.chosen})"
            for t in tr) or "no face track"
        lines.append(f"shot {s}: frames {a}-{b} ({b - a + 1}), {nf} face frame(s); {tr_text}")
    cut = seq.cutaway_ranges()
    lines.append(f"cutaway frames: {ranges_text(cut)}")
    by_reason: Dict[str, List[Tuple[int, int]]] = {}
    for a, b in cut:
        for i in range(a, b + 1):
            r = seq.frames[i].reason or "cutaway"
            rr = by_reason.setdefault(r, [])
            if rr and rr[-1][1] == i - 1:
                rr[-1] = (rr[-1][0], i)
            else:
                rr.append((i, i))
    for r, rr in by_reason.items():
        lines.append(f"  {r}: {ranges_text(rr)} ({sum(b - a + 1 for a, b in rr)} frames)")
    return "\n".join(lines)
