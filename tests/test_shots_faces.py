"""Shots and faces: cut detection on an edited video of real photos, face presence per frame with the real MTCNN
detector, cutaway ranges, speaker choice on a two-face frame, debounce and bridging with a scripted detector, the
Face Detect node."""
import numpy as np
import pytest
import torch

from musetalk_enhanced.pipeline.faces.tracks import (FaceOptions, REASON_LOW_SCORE, REASON_NO_FACE, REASON_NOT_SPEAKER,
                                              REASON_ASPECT, REASON_TOO_SMALL, REASON_UNCONFIRMED, analyze_faces,
                                              parse_user_box)
from musetalk_enhanced.pipeline.faces.preview import summarize
from musetalk_enhanced.pipeline.media.frames import ArrayFrames, ImageFrames
from musetalk_enhanced.pipeline.runtime import Cancelled, Runtime
from musetalk_enhanced.pipeline.faces.shots import ShotDetector, detect_shots
from musetalk_enhanced.pipeline.types import Detection

W, H = 480, 360
# the edited video: (source, frames) per shot
EDIT = [("astronaut", 12), ("rocket", 8), ("coffee", 10), ("astronaut zoomed", 10), ("chelsea", 6),
        ("astronaut", 10)]
CUTS = [0, 12, 20, 30, 40, 46]
FACE_FRAMES = list(range(0, 12)) + list(range(30, 40)) + list(range(46, 56))
CUTAWAYS = [(12, 29), (40, 45)]


def _view(img, cx, cy, zoom, w=W, h=H):
    import cv2

    m = np.float32([[zoom, 0, w / 2 - zoom * cx], [0, zoom, h / 2 - zoom * cy]])
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def edited_video():
    """56 frames at 25 fps, 480x360: shots with slight per-frame camera motion (pan/zoom) inside each shot."""
    import skimage.data as data

    ast, rocket, coffee, cat = data.astronaut(), data.rocket(), data.coffee(), data.chelsea()
    fr = [_view(ast, 256 + 2 * k, 230 + k, 0.9 + 0.004 * k) for k in range(12)]
    fr += [_view(rocket, 320 + 3 * k, 213, 0.9) for k in range(8)]
    fr += [_view(coffee, 300, 200 - k, 0.85 + 0.005 * k) for k in range(10)]
    fr += [_view(ast, 215 - k, 140, 1.6 + 0.01 * k) for k in range(10)]
    fr += [_view(cat, 225 + k, 150, 1.1) for k in range(6)]
    fr += [_view(ast, 230, 200 + k, 1.0) for k in range(10)]
    return ArrayFrames(np.stack(fr), 25.0)


@pytest.fixture(scope="module")
def two_face_video():
    """5 frames 720x400: a large astronaut face on the left, a smaller one in the centre, a coffee cup on the
    right."""
    import skimage.data as data

    ast, coffee = data.astronaut(), data.coffee()
    fr = [np.concatenate([_view(ast, 223 + k, 118, 1.5, 240, 400), _view(ast, 223, 118 - k, 0.95, 240, 400),
                          _view(coffee, 300, 200, 0.8, 240, 400)], axis=1) for k in range(5)]
    return ArrayFrames(np.stack(fr), 25.0)


def _runtime(**kw):
    return Runtime(device="cpu", show_progress=False, **kw)


@pytest.fixture(scope="module")
def mtcnn():
    try:
        from musetalk_enhanced.pipeline.faces.detectors import create_detector
    except ImportError as exc:
        pytest.skip(f"pipeline.faces.detectors is not available: {exc}")
    from musetalk_enhanced.models.registry import MissingWeightsError

    torch.set_num_threads(min(2, torch.get_num_threads()))
    try:
        # min_face_size 40 (detector pixels) = a smaller image pyramid; the analysis keeps faces >= 50 px wide anyway
        return create_detector("mtcnn", _runtime(), auto_download=False, min_face_size=40)
    except MissingWeightsError as exc:
        pytest.skip(f"MTCNN weights not available offline: {exc}")


class Replay:
    """A detector that replays per-frame detections (scripted, or recorded once from a real detector)."""

    def __init__(self, per_frame, name="scripted", landmark_kind="mtcnn5"):
        self.per_frame = per_frame
        self.name, self.landmark_kind = name, landmark_kind
        self.pos = 0
        self.calls = 0

    def detect(self, rgb):
        n = rgb.shape[0]
        out = [list(self.per_frame[i]) for i in range(self.pos, self.pos + n)]
        self.pos += n
        self.calls += 1
        return out


class Recorder:
    """Wraps a real detector and keeps its answers, so one detection pass serves several tests."""

    def __init__(self, detector):
        self.detector, self.name, self.landmark_kind = detector, detector.name, detector.landmark_kind
        self.per_frame = []

    def detect(self, rgb):
        out = self.detector.detect(rgb)
        self.per_frame += out
        return out


@pytest.fixture(scope="module")
def edited_analysis(mtcnn, edited_video):
    """The real detector end to end over the edited video (batches of 16), and its recorded detections."""
    rec = Recorder(mtcnn)
    seq = analyze_faces(edited_video, rec, _runtime(), batch_size=16)
    return seq, rec.per_frame


@pytest.fixture(scope="module")
def two_face_detections(mtcnn, two_face_video):
    return mtcnn.detect(two_face_video.rgb)


def _face(x, y, w=100, h=120, score=0.99):
    """A scripted face with plausible 5 landmarks (eyes, nose, mouth corners) inside its box."""
    lm = np.array([[x + 0.3 * w, y + 0.4 * h], [x + 0.7 * w, y + 0.4 * h], [x + 0.5 * w, y + 0.6 * h],
                   [x + 0.33 * w, y + 0.78 * h], [x + 0.67 * w, y + 0.78 * h]], np.float32)
    return Detection(box=(x, y, x + w, y + h), score=score, landmarks=lm, landmark_kind="mtcnn5")


def _blank(n, w=W, h=H):
    return ArrayFrames(np.full((n, h, w, 3), 128, np.uint8), 25.0)


def _presence(seq):
    return [f.index for f in seq.frames if f.face is not None]


# ---- shots -------------------------------------------------------------------------------------------------------
def test_shot_cuts_exactly_at_the_edit_boundaries(edited_video):
    assert detect_shots(edited_video) == CUTS
    det = ShotDetector()
    det.push_batch(0, edited_video.rgb)
    scores = np.array(det.scores)
    inside = np.delete(scores[1:], [c - 1 for c in CUTS[1:]])
    assert scores[CUTS[1:]].min() > 40 and inside.max() < 15   # clear margin around the default 27


def test_shot_detector_threshold_and_min_length(edited_video):
    assert detect_shots(edited_video, threshold=0) == [0]
    assert detect_shots(edited_video, threshold=200) == [0]
    # a minimum shot length of 8 frames drops the cut that would end the 6-frame cat shot (at 46)
    assert detect_shots(edited_video, min_shot_len=8) == [0, 12, 20, 30, 40]
    det = ShotDetector()
    with pytest.raises(ValueError):
        det.push(3, edited_video.rgb[0])
    with pytest.raises(ValueError):
        ShotDetector(threshold=-1)


def test_shot_detection_reports_progress(edited_video):
    seen = []

    class R(Runtime):
        def progress(self, stage, done, total):
            seen.append((stage, done, total))

    detect_shots(edited_video, runtime=R(device="cpu", show_progress=False), batch_size=20)
    assert seen == [("shot detection", 20, 56), ("shot detection", 40, 56), ("shot detection", 56, 56)]


# ---- faces on real photos ----------------------------------------------------------------------------------------
def test_real_faces_per_frame_and_cutaways(edited_video, edited_analysis):
    direct, detections = edited_analysis
    seq = analyze_faces(edited_video, Replay(detections, "mtcnn"), _runtime())
    assert len(seq) == 56 and (seq.width, seq.height, seq.fps) == (W, H, 25.0)
    assert seq.shot_starts == CUTS
    assert _presence(seq) == FACE_FRAMES
    assert seq.cutaway_ranges() == CUTAWAYS
    assert seq.face_runs() == [(0, 12), (30, 40), (46, 56)]
    assert [f.shot for f in seq.frames] == [s for s, (_, n) in enumerate(EDIT) for _ in range(n)]
    # rocket, coffee and the cat: nothing detected at all
    assert all(seq.frames[i].reason == REASON_NO_FACE for a, b in CUTAWAYS for i in range(a, b + 1))
    # one track per face shot, reset at every cut
    assert [(t.shot, t.first, t.last) for t in seq.tracks] == [(0, 0, 11), (3, 30, 39), (5, 46, 55)]
    assert [t.id for t in seq.tracks] == [0, 1, 2]
    for f in seq.frames:
        if f.face is None:
            continue
        x1, y1, x2, y2 = f.face.crop_box
        bx = f.face.detection.box
        assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
        # the crop covers the detected face horizontally and reaches below the mouth (chin + extra margin)
        mouth_y = float(np.asarray(f.face.detection.landmarks)[3:, 1].mean())
        assert y2 > mouth_y + 0.15 * (bx[3] - bx[1]) and x1 < bx[0] + 0.2 * (bx[2] - bx[0])
        assert f.face.align_points.shape == (3, 2)
        assert f.face.track_id == seq.tracks[[0, 0, 0, 1, 1, 2][f.shot]].id
    # the real detector end to end (other batch size) gives the same answer
    assert _presence(direct) == FACE_FRAMES and direct.shot_starts == CUTS
    assert [f.face.crop_box for f in direct.frames if f.face] == [f.face.crop_box for f in seq.frames if f.face]
    assert direct.params["backend"] == "mtcnn" and direct.params["min_score_used"] == 0.9


def test_cat_and_objects_are_not_faces(mtcnn):
    import skimage.data as data

    frames = np.stack([_view(getattr(data, n)(), 240, 180, 1.0) for n in ("chelsea", "coffee", "rocket")])
    assert [len(d) for d in mtcnn.detect(frames)] == [0, 0, 0]


def test_speaker_policies_on_two_faces(two_face_video, two_face_detections):
    assert all(len(d) == 2 for d in two_face_detections)

    def run(**kw):
        return analyze_faces(two_face_video, Replay(two_face_detections, "mtcnn"), _runtime(), **kw)

    def chosen_centres(seq):
        return {int((f.face.detection.box[0] + f.face.detection.box[2]) / 2 // 240) for f in seq.frames}

    largest = run(speaker="largest")
    assert _presence(largest) == [0, 1, 2, 3, 4] and len(largest.tracks) == 2
    assert chosen_centres(largest) == {0}                      # the big face on the left
    assert chosen_centres(run(speaker="most_central")) == {1}  # the small one in the middle
    assert chosen_centres(run(speaker="track_index", track_index=0)) == {0}   # simultaneous: left to right
    assert chosen_centres(run(speaker="track_index", track_index=1)) == {1}
    none = run(speaker="track_index", track_index=2)
    assert _presence(none) == [] and {f.reason for f in none.frames} == {REASON_NOT_SPEAKER}
    assert chosen_centres(run(speaker="user_box", user_box="0.34,0,0.66,1")) == {1}
    assert chosen_centres(run(speaker="user_box", user_box="0, 0, 240, 400")) == {0}
    outside = run(speaker="user_box", user_box="500,0,720,400")
    assert _presence(outside) == [] and outside.frames[0].reason == REASON_NOT_SPEAKER
    # every track is reported, non-chosen faces stay in the detections with their track id
    f0 = largest.frames[0]
    assert sorted(f0.track_ids) == [0, 1] and len(f0.detections) == 2
    assert f0.face.detection in f0.detections
    with pytest.raises(ValueError, match="user_box"):
        run(speaker="user_box", user_box="")


# ---- tracking logic with a scripted detector ---------------------------------------------------------------------
def test_debounce_ignores_blips_and_confirms_retroactively():
    n = 30
    script = [[] for _ in range(n)]
    script[2] = [_face(50, 50)]                                 # 1-frame blip
    script[8] = [_face(300, 60)]                                # 2-frame blip elsewhere
    script[9] = [_face(302, 60)]
    for i in range(15, 30):                                     # a real face from frame 15 on
        script[i] = [_face(150 + i, 100)]
    seq = analyze_faces(_blank(n), Replay(script), _runtime(), bridge_gap=0)
    assert _presence(seq) == list(range(15, 30))                # frames 15 and 16 are kept (retroactive)
    assert seq.frames[2].reason == REASON_UNCONFIRMED and seq.frames[8].reason == REASON_UNCONFIRMED
    assert seq.frames[0].reason == REASON_NO_FACE
    assert len(seq.tracks) == 1 and seq.tracks[0].first == 15
    assert analyze_faces(_blank(n), Replay(script), _runtime(), debounce_frames=1, bridge_gap=0).cutaway_ranges() \
        == [(0, 1), (3, 7), (10, 14)]
    # a blip that recurs at the same place later is still not a persistent face
    script2 = [[] for _ in range(n)]
    for i in (3, 10, 11, 20):
        script2[i] = [_face(100, 100)]
    assert _presence(analyze_faces(_blank(n), Replay(script2), _runtime())) == []


def test_bridging_short_dropouts():
    n = 20
    script = [[_face(100 + 4 * i, 80)] for i in range(n)]
    script[6] = []                                              # 1-frame dropout
    script[10] = script[11] = []                                # 2-frame dropout
    script[14] = script[15] = script[16] = []                   # 3-frame dropout
    seq = analyze_faces(_blank(n), Replay(script), _runtime(), bridge_gap=2, smooth_boxes=False)
    assert seq.cutaway_ranges() == [(14, 16)]
    f6 = seq.frames[6].face
    assert f6.detection.interpolated and f6.detection.box == pytest.approx((124, 80, 224, 200))
    np.testing.assert_allclose(f6.detection.landmarks, _face(124, 80).landmarks, atol=1e-4)
    assert not seq.frames[5].face.detection.interpolated
    assert seq.frames[11].face.detection.box == pytest.approx((144, 80, 244, 200))
    assert len(seq.tracks) == 1 and seq.tracks[0].bridged == 3 and seq.tracks[0].detected == 14
    assert seq.frames[6].track_ids == [seq.tracks[0].id]
    off = analyze_faces(_blank(n), Replay(script), _runtime(), bridge_gap=0)
    assert off.cutaway_ranges() == [(6, 6), (10, 11), (14, 16)]
    assert len(off.tracks) == 1                                 # one identity through the dropouts


def test_tracks_reset_at_cuts_and_never_bridge_them():
    # two shots (a grey and a black half): the same face position on both sides of the cut
    rgb = np.concatenate([np.full((10, H, W, 3), 200, np.uint8), np.full((10, H, W, 3), 10, np.uint8)])
    script = [[_face(100, 100)] for _ in range(20)]
    script[9] = []                                              # dropout just before the cut
    script[10] = []                                             # and just after it
    seq = analyze_faces(ArrayFrames(rgb, 25.0), Replay(script), _runtime(), bridge_gap=5)
    assert seq.shot_starts == [0, 10]
    assert seq.cutaway_ranges() == [(9, 10)]                    # no bridging across the cut
    assert [(t.id, t.shot, t.first, t.last) for t in seq.tracks] == [(0, 0, 0, 8), (1, 1, 11, 19)]
    assert {f.face.track_id for f in seq.frames if f.face and f.shot == 1} == {1}
    # a face seen in every frame of a shot shorter than the debounce still counts
    rgb2 = np.concatenate([np.full((2, H, W, 3), 200, np.uint8), np.full((6, H, W, 3), 10, np.uint8)])
    script2 = [[_face(100, 100)] for _ in range(8)]
    seq2 = analyze_faces(ArrayFrames(rgb2, 25.0), Replay(script2), _runtime(), min_shot_len=1)
    assert seq2.shot_starts == [0, 2] and _presence(seq2) == list(range(8))


def test_filters_and_reasons():
    script = [[_face(100, 100, score=0.8)], [_face(100, 100, w=40, h=60)], [_face(100, 100, w=200, h=100)],
              [_face(100, 100, w=60, h=85)]]
    seq = analyze_faces(_blank(4), Replay(script, name="mtcnn"), _runtime(), debounce_frames=1)
    assert [f.reason for f in seq.frames] == [REASON_LOW_SCORE, REASON_TOO_SMALL, REASON_ASPECT, ""]
    # the spec default (0.5) for other backends, explicit values override; min_face_size 0 disables the size rule
    seq = analyze_faces(_blank(4), Replay(script, name="other"), _runtime(), debounce_frames=1, min_face_size=0,
                        bridge_gap=0)
    assert [f.reason for f in seq.frames] == ["", "", REASON_ASPECT, ""]
    seq = analyze_faces(_blank(4), Replay(script, name="other"), _runtime(), debounce_frames=1, min_score=0.85)
    assert seq.frames[0].reason == REASON_LOW_SCORE
    assert seq.frames[0].track_ids == [-1] and seq.frames[0].detections[0].score == 0.8


def test_largest_ranks_per_shot_and_falls_back():
    n = 12
    script = [[_face(40, 40, w=150, h=180), _face(300, 60, w=100, h=120)] for _ in range(n)]
    for i in range(5, 8):
        script[i] = [script[i][1]]                              # the big face leaves for 3 frames
    seq = analyze_faces(_blank(n), Replay(script), _runtime(), bridge_gap=0)
    ids = [f.face.track_id for f in seq.frames]
    big = seq.tracks[0].id
    assert ids[:5] == [big] * 5 and ids[8:] == [big] * 4 and set(ids[5:8]) == {seq.tracks[1].id}
    tidx = analyze_faces(_blank(n), Replay(script), _runtime(), bridge_gap=0, speaker="track_index", track_index=0)
    assert tidx.cutaway_ranges() == [(5, 7)] and {f.reason for f in tidx.frames[5:8]} == {REASON_NOT_SPEAKER}


def test_box_smoothing_inside_a_track():
    n = 12
    script = [[_face(100 + (6 if i % 2 else 0), 100)] for i in range(n)]   # jittering detections
    raw = analyze_faces(_blank(n), Replay(script), _runtime(), smooth_boxes=False)
    smooth = analyze_faces(_blank(n), Replay(script), _runtime(), smooth_boxes=True)
    rx = np.array([f.face.crop_box[0] for f in raw.frames])
    sx = np.array([f.face.crop_box[0] for f in smooth.frames])
    assert np.ptp(rx) >= 5 and np.ptp(sx[2:-2]) <= 2
    from musetalk_enhanced.pipeline.faces.cropbox import face_crop_geometry

    for f in raw.frames:                                        # off = the per-frame geometry exactly
        assert f.face.crop_box == face_crop_geometry(f.face.detection, W, H, 0, 10)[0]


def test_progress_cancel_and_streaming():
    n = 20
    script = [[_face(100, 100)] for _ in range(n)]
    seen = []

    class R(Runtime):
        def progress(self, stage, done, total):
            seen.append((stage, done, total))
            super().progress(stage, done, total)

    det = Replay(script)
    analyze_faces(_blank(n), det, R(device="cpu", show_progress=False), batch_size=8)
    assert det.calls == 3 and seen[-1] == ("face detection", 20, 20) and len(seen) == 4
    calls = []
    cancel_rt = Runtime(device="cpu", show_progress=False, cancel_flag=lambda: len(calls) > 0)
    det2 = Replay(script)
    orig = det2.detect
    det2.detect = lambda rgb: (calls.append(1), orig(rgb))[1]
    with pytest.raises(Cancelled):
        analyze_faces(_blank(n), det2, cancel_rt, batch_size=8)
    assert det2.calls == 1


def test_user_box_parsing():
    assert parse_user_box("0.5,0,1,1", 640, 360) == (320, 0, 640, 360)
    assert parse_user_box("10 20 300 200", 640, 360) == (10, 20, 300, 200)
    assert parse_user_box((10, 20, 300, 200), 640, 360) == (10, 20, 300, 200)
    assert parse_user_box("", 640, 360) is None
    for bad in ("1,2,3", "a,b,c,d", "300,0,100,10"):
        with pytest.raises(ValueError, match="user_box"):
            parse_user_box(bad, 640, 360)
    with pytest.raises(ValueError, match="speaker"):
        FaceOptions(speaker="loudest").validate()


def test_summary_text():
    rgb = np.concatenate([np.full((10, H, W, 3), 200, np.uint8), np.full((6, H, W, 3), 10, np.uint8)])
    script = [[_face(100, 100)] for _ in range(10)] + [[] for _ in range(6)]
    seq = analyze_faces(ArrayFrames(rgb, 25.0), Replay(script), _runtime())
    text = summarize(seq)
    assert "16 frames" in text and "10 with a face, 6 cutaway" in text
    assert "shot 0: frames 0-9" in text and "shot 1: frames 10-15" in text
    assert "track 0 frames 0-9" in text and "cutaway frames: 10-15" in text and "no face: 10-15 (6 frames)" in text


# ---- the node ----------------------------------------------------------------------------------------------------
def test_node_declaration():
    from musetalk_enhanced.nodes import face_nodes

    node = face_nodes.MuseTalkFaceDetect
    spec = node.INPUT_TYPES()
    for key, group in spec.items():
        if key == "hidden":
            continue
        for name, (kind, *rest) in group.items():
            assert rest and rest[0].get("tooltip"), name
    assert set(spec["optional"]) == {"images", "frames", "edge_faces"} and spec["optional"]["frames"][0] == "MUSETALK_FRAMES"
    assert node.RETURN_TYPES == ("MUSETALK_FACES", "IMAGE", "STRING") and node.CATEGORY == "MuseTalk/faces"
    assert face_nodes.NODE_DISPLAY_NAME_MAPPINGS["MuseTalkFaceDetect"] == "Face Detect with Cutaways"
    from musetalk_enhanced.pipeline.faces.preview import preview_indices
    from musetalk_enhanced.pipeline.media.frames import FramesError

    with pytest.raises(FramesError, match="images"):
        node().detect()
    assert preview_indices(10) == list(range(10))
    assert face_nodes.detector_options("mtcnn", 50, 480, 360) == {"min_face_size": 40.0, "landmarks": "auto"}
    assert face_nodes.detector_options("mtcnn", 50, 1920, 1080, "dlib") == {
        "min_face_size": pytest.approx(26.667, abs=1e-3), "landmarks": "dlib"}
    assert face_nodes.detector_options("mtcnn", 0, 480, 360) == {"landmarks": "auto"}
    assert face_nodes.detector_options("s3fd+fan68", 50, 480, 360) == {}  # its landmarks are FAN's
    idx = preview_indices(1000)
    assert len(idx) == 64 and idx[0] == 0 and idx[-1] == 999


def test_node_runs_on_image_and_frames(mtcnn, edited_video):
    from musetalk_enhanced.nodes.face_nodes import MuseTalkFaceDetect

    sub = edited_video.rgb[[0, 1, 2, 3, 12, 13, 14, 15]]       # 4 astronaut frames, cut, 4 rocket frames
    image = torch.from_numpy(sub).float() / 255.0
    faces, preview, summary = MuseTalkFaceDetect().detect(images=image, fps=25.0)
    assert faces.shot_starts == [0, 4] and faces.cutaway_ranges() == [(4, 7)] and faces.fps == 25.0
    assert preview.shape == (8, H, W, 3) and preview.dtype == torch.float32
    red = preview[4, 1, W // 2]                                 # red border on cutaways
    assert red[0] > 0.8 and red[1] < 0.1 and red[2] < 0.1
    assert not (preview[0, 1, W // 2, 0] > 0.8 and preview[0, 1, W // 2, 1] < 0.1)
    assert "cutaway frames: 4-7" in summary and "shot 1: frames 4-7" in summary
    same, _, _ = MuseTalkFaceDetect().detect(frames=ImageFrames(image, 30.0), fps=25.0, smooth_boxes=False)
    assert same.fps == 30.0 and same.cutaway_ranges() == [(4, 7)]
