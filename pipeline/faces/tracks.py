"""Face analysis of a frame sequence: shots, face tracks, cutaway decisions, the speaker's face and its crop geometry.

:func:`analyze_faces` makes one streaming pass over the frames (memory bounded by the batch size): a face detector
backend (``pipeline.faces.detectors``) and the shot-cut detector (``pipeline.faces.shots``) see each frame once. Per frame:

1. **Filter** the detections (LatentSync's rules, latentsync/utils/face_detector.py, in source-resolution pixels):
   score ``>= min_score``; width ``>= min_face_size`` and height ``>= 1.6 * min_face_size`` (the 50 x 80 px of the
   original with the default 50); ``0.2 <= w/h <= 1.5``. ``min_score`` defaults per backend: 0.9 for MTCNN (its final
   stage already requires 0.7 and real faces score above 0.99) and 0.5 (the spec value) otherwise.
2. **Track** inside the shot: each kept detection joins the track whose last box overlaps it most (IoU >= 0.3,
   greedy, best pair first) or starts a new track. A track stays matchable for the rest of its shot, so a face that
   drops out and comes back keeps its identity. Every cut ends all tracks.
3. **Debounce**: a track counts (is *confirmed*) once it has been detected in ``debounce_frames`` frames (default 3)
   that follow each other with gaps of at most ``bridge_gap`` frames, or in every frame of a shot shorter than
   that. Confirmation is retroactive and covers the whole track in its shot: the first frames of a real face are
   kept, while a face seen in only one or two frames (typically a false positive, even if it recurs at the same
   place) is ignored.
4. **Bridge** dropouts: inside a confirmed track, a gap of at most ``bridge_gap`` frames (default 2: 80 ms at 25 fps)
   between two detections is filled by linear interpolation of the box and landmarks (``Detection.interpolated``).
   0 turns it off. Longer gaps stay cutaways; nothing is ever bridged across a cut.
5. **Choose the speaker** among the confirmed tracks of the shot, then per frame take the best-ranked eligible track
   present in that frame:

   * ``largest``: ranked by mean box area over the frames it is present; every track eligible (when the largest is
     absent from a frame, the next one is used);
   * ``most_central``: ranked by mean distance of the box centre from the frame centre; every track eligible;
   * ``track_index``: only the ``track_index``-th track of each shot by first appearance (0-based, counted per shot
     because tracks reset at cuts; simultaneous first appearances are ordered left to right); frames without it
     are cutaways;
   * ``user_box``: tracks whose boxes overlap the user's box, ranked by the mean fraction of the face box inside it;
     frames where none of them is present are cutaways.

   Ranking per shot, not per frame, keeps the choice stable when two faces have similar sizes.
6. **Crop geometry** of the chosen face (``pipeline.faces.cropbox``): the MuseTalk v1.5 crop box (``bbox_shift``,
   ``extra_margin``) and LatentSync's three alignment points; crop boxes are smoothed over each run of frames of the
   same track (``smooth_boxes``; off = the original's per-frame boxes).

A frame without a chosen face is a *cutaway*: it will pass through unchanged. Its ``reason`` is one of
:data:`CUTAWAY_REASONS`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cropbox import face_crop_geometry, smooth_boxes
from .options import (DEFAULT_MIN_SCORE, FALLBACK_MIN_SCORE, MIN_HEIGHT_RATIO, REASON_ASPECT, REASON_BAD_CROP,
                      REASON_LOW_SCORE, REASON_NO_FACE, REASON_NOT_SPEAKER, REASON_TOO_SMALL, REASON_UNCONFIRMED,
                      FaceOptions, parse_user_box)
from .shots import ShotDetector
from ..types import Detection, Face, FaceSequence, FaceTrack, FrameFaces

def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _inside_fraction(face, box) -> float:
    ix = max(0.0, min(face[2], box[2]) - max(face[0], box[0]))
    iy = max(0.0, min(face[3], box[3]) - max(face[1], box[1]))
    area = max(0.0, face[2] - face[0]) * max(0.0, face[3] - face[1])
    return float(ix * iy / area) if area > 0 else 0.0


# ---- per-shot working state ----------------------------------------------------------------------------------------
@dataclass
class _Track:
    key: int                                            # provisional id inside the shot
    hits: Dict[int, Detection] = field(default_factory=dict)
    filled: Dict[int, Detection] = field(default_factory=dict)  # bridged frames
    confirmed: set = field(default_factory=set)                 # hit frames usable (all of them once confirmed)
    last_box: Tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    first: int = 0
    public_id: int = -1
    ordinal: int = -1

    def at(self, index: int) -> Optional[Detection]:
        """The usable detection of this track in frame ``index`` (a confirmed hit or a bridged box), else None."""
        if index in self.confirmed:
            return self.hits[index]
        return self.filled.get(index)


@dataclass
class _FrameRecord:
    index: int
    detections: List[Detection]
    keys: List[int]                                     # provisional track key per detection, -1 = filtered out
    reasons: List[str]                                  # filter reason per detection ("" = kept)


def _interpolate(a: Detection, b: Detection, t: float) -> Detection:
    box = tuple(float((1 - t) * p + t * q) for p, q in zip(a.box, b.box))
    lm = None
    if a.landmarks is not None and b.landmarks is not None and np.shape(a.landmarks) == np.shape(b.landmarks):
        lm = ((1 - t) * np.asarray(a.landmarks, np.float64) + t * np.asarray(b.landmarks, np.float64)).astype(
            np.float32)
    align = None
    if a.align is not None and b.align is not None:
        align = ((1 - t) * np.asarray(a.align, np.float64) + t * np.asarray(b.align, np.float64)).astype(np.float32)
    return Detection(box=box, score=float(min(a.score, b.score)), landmarks=lm, landmark_kind=a.landmark_kind,
                     align=align,
                     interpolated=True)


class FaceAnalyzer:
    """The streaming state machine behind :func:`analyze_faces`; feed frames in order with :meth:`add_frame`
    (detections already computed), then :meth:`finish`. Usable without pixels (tests, precomputed detections)."""

    def __init__(self, width: int, height: int, options: FaceOptions, backend: str = ""):
        options.validate()
        self.width, self.height = int(width), int(height)
        self.opt = options
        ms = options.min_score
        self.min_score = float(ms) if ms is not None and ms > 0 else DEFAULT_MIN_SCORE.get(backend,
                                                                                            FALLBACK_MIN_SCORE)
        self.user_box = parse_user_box(options.user_box, self.width, self.height) \
            if options.speaker == "user_box" else None
        self.shot_starts: List[int] = [0]
        self.frames: List[FrameFaces] = []
        self.tracks: List[FaceTrack] = []
        self._records: List[_FrameRecord] = []
        self._tracks: List[_Track] = []
        self._next_key = 0
        self._next_public = 0

    # -- filtering ---------------------------------------------------------------------------------------------------
    def filter_reason(self, det: Detection) -> str:
        """"" when the detection is usable, else the cutaway reason it would give."""
        o = self.opt
        if det.score < self.min_score:
            return REASON_LOW_SCORE
        w, h = det.width, det.height
        if o.min_face_size > 0 and (w < o.min_face_size or h < MIN_HEIGHT_RATIO * o.min_face_size):
            return REASON_TOO_SMALL
        if h <= 0 or not (o.min_aspect <= w / h <= o.max_aspect):
            return REASON_ASPECT
        return ""

    # -- streaming ---------------------------------------------------------------------------------------------------
    def add_frame(self, index: int, detections: Sequence[Detection], new_shot: bool = False) -> None:
        """Frame ``index`` (frames in order 0, 1, ...) with the detector's detections; ``new_shot``: a cut before it."""
        expected = len(self.frames) + len(self._records)
        if index != expected:
            raise ValueError(f"FaceAnalyzer.add_frame: expected frame {expected}, got {index}")
        if new_shot and index > 0:
            self._finish_shot()
            self.shot_starts.append(index)
        dets = list(detections)
        reasons = [self.filter_reason(d) for d in dets]
        keys = [-1] * len(dets)
        kept = [i for i, r in enumerate(reasons) if not r]
        # greedy IoU matching, best pair first
        pairs = []
        for i in kept:
            for t in self._tracks:
                iou = box_iou(dets[i].box, t.last_box)
                if iou >= self.opt.iou_threshold:
                    pairs.append((iou, max(t.hits), -i, t.key))
        pairs.sort(reverse=True)
        used_d, used_t = set(), set()
        by_key = {t.key: t for t in self._tracks}
        for _, _, mi, k in pairs:
            i = -mi
            if i in used_d or k in used_t:
                continue
            used_d.add(i)
            used_t.add(k)
            keys[i] = k
        for i in kept:
            if keys[i] < 0:
                t = _Track(key=self._next_key, first=index)
                self._next_key += 1
                self._tracks.append(t)
                by_key[t.key] = t
                keys[i] = t.key
            t = by_key[keys[i]]
            t.hits[index] = dets[i]
            t.last_box = tuple(float(v) for v in dets[i].box[:4])
        self._records.append(_FrameRecord(index, dets, keys, reasons))

    def finish(self, fps: float, params: Optional[dict] = None) -> FaceSequence:
        self._finish_shot()
        return FaceSequence(frames=self.frames, width=self.width, height=self.height, fps=float(fps),
                            shot_starts=list(self.shot_starts), params=dict(params or {}), tracks=self.tracks)

    # -- per-shot decisions ------------------------------------------------------------------------------------------
    def _finish_shot(self) -> None:
        """The steps of module docstring 3-6 for the shot just ended: debounce and bridge its tracks, rank the
        speaker, choose a face per frame, place and smooth its crop, record the frames and tracks."""
        recs, tracks = self._records, self._tracks
        self._records, self._tracks = [], []
        if not recs:
            return
        confirmed = self._confirm(tracks, len(recs))
        present = {t.key: [r.index for r in recs if t.at(r.index) is not None] for t in confirmed}
        eligible = self._rank_speakers(confirmed, present)
        chosen = [next((t for t in eligible if t.at(r.index) is not None), None) for r in recs]
        geo = self._crop_geometry(recs, chosen)
        chosen_count = self._record_frames(recs, chosen, geo, confirmed)
        self._record_tracks(confirmed, present, chosen_count)

    def _confirm(self, tracks: List[_Track], shot_len: int) -> List[_Track]:
        """Debounce: a track counts once ``debounce_frames`` of its detections follow each other with gaps of at most
        ``bridge_gap`` frames (or it is detected in every frame of a shot shorter than that); then all its
        detections in the shot are used, earlier ones included, and its short gaps are bridged. Returns the
        confirmed tracks in order of first appearance (left to right when simultaneous), numbered."""
        need = max(1, int(self.opt.debounce_frames))
        gap_ok = max(0, int(self.opt.bridge_gap))
        for t in tracks:
            idx = sorted(t.hits)
            run = best = 1
            for a, b in zip(idx[:-1], idx[1:]):
                run = run + 1 if b - a - 1 <= gap_ok else 1
                best = max(best, run)
            if best >= need or (shot_len < need and len(idx) == shot_len):
                t.confirmed.update(idx)
                for a, b in zip(idx[:-1], idx[1:]):
                    if 1 <= b - a - 1 <= gap_ok:
                        for f in range(a + 1, b):
                            t.filled[f] = _interpolate(t.hits[a], t.hits[b], (f - a) / float(b - a))
        confirmed = [t for t in tracks if t.confirmed]
        for t in confirmed:
            t.first = min(t.confirmed)
        confirmed.sort(key=lambda t: (t.first, t.hits[t.first].box[0]))
        for n, t in enumerate(confirmed):
            t.public_id, t.ordinal = self._next_public, n
            self._next_public += 1
        return confirmed

    def _rank_speakers(self, confirmed: List[_Track], present: Dict[int, List[int]]) -> List[_Track]:
        """The tracks eligible as the speaker, best first, by the ``speaker`` policy."""
        o = self.opt
        if o.speaker == "track_index":
            return [t for t in confirmed if t.ordinal == o.track_index]

        def stat(t: _Track, fn) -> float:
            return float(np.mean([fn(t.at(i).box) for i in present[t.key]]))

        if o.speaker == "largest":
            scored = [(-stat(t, lambda b: (b[2] - b[0]) * (b[3] - b[1])), t.ordinal, t) for t in confirmed]
        elif o.speaker == "most_central":
            cx, cy, diag = self.width / 2.0, self.height / 2.0, float(np.hypot(self.width, self.height))
            scored = [(stat(t, lambda b: np.hypot((b[0] + b[2]) / 2 - cx, (b[1] + b[3]) / 2 - cy) / diag),
                       t.ordinal, t) for t in confirmed]
        else:  # user_box
            ub = self.user_box
            scored = [(-stat(t, lambda b: _inside_fraction(b, ub)), t.ordinal, t) for t in confirmed]
            scored = [s for s in scored if s[0] < 0]
        return [t for _, _, t in sorted(scored, key=lambda s: (s[0], s[1]))]

    def _crop_geometry(self, recs, chosen) -> List[Tuple[Optional[tuple], Optional[np.ndarray]]]:
        """Crop box and alignment points of each frame's chosen face, boxes smoothed per run of the same track."""
        o = self.opt
        geo = [(None, None) if t is None else
               face_crop_geometry(t.at(r.index), self.width, self.height, o.bbox_shift, o.extra_margin,
                                  o.edge_faces)
               for r, t in zip(recs, chosen)]
        if not (o.smooth_boxes and o.smooth_radius > 0):
            return geo
        k = 0
        while k < len(recs):
            if chosen[k] is None or geo[k][0] is None:
                k += 1
                continue
            e = k
            while e + 1 < len(recs) and chosen[e + 1] is chosen[k] and geo[e + 1][0] is not None:
                e += 1
            if e > k:
                sm = smooth_boxes([geo[j][0] for j in range(k, e + 1)], o.smooth_radius)
                for j in range(k, e + 1):
                    geo[j] = (tuple(int(v) for v in sm[j - k]), geo[j][1])
            k = e + 1
        return geo

    def _record_frames(self, recs, chosen, geo, confirmed: List[_Track]) -> Dict[int, int]:
        """One :class:`FrameFaces` per frame (the face, or the cutaway's reason); returns frames chosen per track."""
        shot = len(self.shot_starts) - 1
        key_to_public = {t.key: t.public_id for t in confirmed}
        chosen_count: Dict[int, int] = {}
        for r, t, (box, align) in zip(recs, chosen, geo):
            dets = list(r.detections)
            ids = [key_to_public.get(k, -1) for k in r.keys]
            for ct in confirmed:  # bridged boxes of confirmed tracks are reported with the detections
                fd = ct.filled.get(r.index)
                if fd is not None:
                    dets.append(fd)
                    ids.append(ct.public_id)
            face = None
            if t is not None and box is not None:
                face = Face(detection=t.at(r.index), track_id=t.public_id, crop_box=box, align_points=align)
                chosen_count[t.key] = chosen_count.get(t.key, 0) + 1
            reason = "" if face is not None else _cutaway_reason(r, t, confirmed)
            self.frames.append(FrameFaces(index=r.index, shot=shot, face=face, detections=dets, track_ids=ids,
                                          reason=reason))
        return chosen_count

    def _record_tracks(self, confirmed: List[_Track], present: Dict[int, List[int]],
                       chosen_count: Dict[int, int]) -> None:
        shot = len(self.shot_starts) - 1
        for t in confirmed:
            frames_present = present[t.key]
            boxes = np.array([t.at(i).box[:4] for i in frames_present], np.float64)
            self.tracks.append(FaceTrack(
                id=t.public_id, shot=shot, ordinal=t.ordinal, first=min(frames_present), last=max(frames_present),
                detected=len(t.confirmed), bridged=len(t.filled), chosen=chosen_count.get(t.key, 0),
                mean_box=tuple(float(v) for v in boxes.mean(0))))


def _cutaway_reason(record, track, confirmed) -> str:
    """Why a frame has no face to lip-sync (CUTAWAY_REASONS)."""
    if track is not None:
        return REASON_BAD_CROP
    if not record.detections:
        return REASON_NO_FACE
    if all(record.reasons):
        return record.reasons[0]           # the detector's best detection says why
    if not any(ct.at(record.index) is not None for ct in confirmed):
        return REASON_UNCONFIRMED
    return REASON_NOT_SPEAKER


def analyze_faces(frames, detector, runtime=None, *, options: Optional[FaceOptions] = None,
                  frame_hook: Optional[Callable] = None, **overrides) -> FaceSequence:
    """Detect, track and choose the face to lip-sync in every frame of ``frames`` (a :class:`~.frames.Frames`).

    ``detector``: a ``pipeline.faces.detectors.FaceDetector`` (``detect(rgb uint8 [n,H,W,3]) -> per-frame detection
    lists``). ``options``: :class:`FaceOptions`; keyword overrides (e.g. ``speaker="most_central"``) replace single
    fields. Streams ``options.batch_size`` frames at a time; reports progress as stage ``"face detection"`` through
    ``runtime.progress`` (also the cancel point). ``frame_hook(batch)``, when given, sees every
    :class:`~.frames.FrameBatch` of this single pass (e.g. to keep preview thumbnails without reading the video
    twice). Returns the ``MUSETALK_FACES`` payload."""
    opt = replace(options or FaceOptions(), **overrides)
    backend = str(getattr(detector, "name", ""))
    analyzer = FaceAnalyzer(frames.width, frames.height, opt, backend=backend)
    shots = ShotDetector(threshold=opt.shot_threshold, min_shot_len=opt.min_shot_len)
    total = len(frames)
    if runtime is not None:
        runtime.progress("face detection", 0, total)
    for batch in frames.iter_batches(max(1, int(opt.batch_size))):
        if frame_hook is not None:
            frame_hook(batch)
        per_frame = detector.detect(batch.rgb)
        if len(per_frame) != len(batch):
            raise RuntimeError(f"face detector {backend!r} returned {len(per_frame)} results for {len(batch)} frames")
        for k, dets in enumerate(per_frame):
            idx = batch.start + k
            cut = shots.push(idx, batch.rgb[k])
            analyzer.add_frame(idx, sorted(dets, key=lambda d: -d.score), new_shot=cut)
        if runtime is not None:
            runtime.progress("face detection", batch.stop, total)
    params = asdict(opt)
    params.update(backend=backend, landmark_kind=str(getattr(detector, "landmark_kind", "")),
                  landmark_notes=list(getattr(detector, "landmark_notes", []) or []),
                  min_score_used=analyzer.min_score)
    if analyzer.user_box is not None:
        params["user_box_px"] = analyzer.user_box
    return analyzer.finish(frames.fps, params)
