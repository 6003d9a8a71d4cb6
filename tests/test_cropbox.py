"""Crop geometry: MuseTalk v1.5 crop box parity with the original (fixture bbox.*), extra margin, the 5-point
approximation, LatentSync alignment points and box smoothing."""
import json

import numpy as np
import pytest

from conftest import shared_path
from musetalk_enhanced.pipeline.faces import cropbox as cb
from musetalk_enhanced.pipeline.types import Detection


def _fixture():
    from safetensors.numpy import load_file

    t = load_file(shared_path("fixtures", "musetalk", "parity_small.safetensors"))
    meta = json.load(open(shared_path("fixtures", "musetalk", "parity_small_meta.json")))
    return t, meta["bbox_cases"]


def _five(lm68):
    lm = np.asarray(lm68, np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("tag,shift", [("p0", 0), ("p7", 7), ("m7", -7)])
def test_musetalk_crop_box_matches_original(tag, shift):
    t, cases = _fixture()
    kp, s3fd, has_face = t["bbox.keypoints133"], t["bbox.s3fd_box"], t["bbox.has_face"]
    expected = t[f"bbox.coords_shift{tag}"]
    assert cases == ["normal", "near_top", "x1_negative", "no_face", "small"]
    for i, case in enumerate(cases):
        box = tuple(int(v) for v in s3fd[i]) if has_face[i] else None
        got = cb.musetalk_crop_box(kp[i, 23:91], box, bbox_shift=shift)
        assert tuple(float(v) for v in got) == tuple(expected[i]), (case, got, expected[i])
        if case == "no_face":
            assert got == cb.COORD_PLACEHOLDER and all(isinstance(v, float) for v in got)
        else:
            assert all(isinstance(v, int) for v in got)


def test_crop_box_rule_details():
    t, _ = _fixture()
    lm = t["bbox.keypoints133"][0, 23:91].astype(np.float64)
    # a worked example of MuseTalk's get_landmark_and_bbox: (200, 148, 380, 344); y1 moves by 2*shift
    assert cb.musetalk_crop_box(lm, (0, 0, 1, 1)) == (200, 148, 380, 344)
    assert cb.musetalk_crop_box(lm, (0, 0, 1, 1), 7)[1] == 148 + 14
    # int(y29) = 246, max(y) = 344: shift 97 -> yc 343, half 1 -> y1 342
    assert cb.musetalk_crop_box(lm, (5, 6, 7, 8), 97) == (200, 342, 380, 344)
    # the shift is written into point 29, which takes part in max(y): from 98 on half = 0, y2 - y1 = 0 -> fallback
    assert cb.musetalk_crop_box(lm, (5, 6, 7, 8), 98) == (5, 6, 7, 8)
    assert cb.musetalk_crop_box(lm, (5, 6, 7, 8), 200) == (5, 6, 7, 8)
    # negative landmark x truncates toward zero (-29.5 -> -29) and triggers the fallback, clipped detector box
    lm2 = lm.copy()
    lm2[0, 0] = -0.5          # int32(-0.5) == 0 -> still valid
    assert cb.musetalk_crop_box(lm2, (1, 2, 3, 4))[0] == 0
    lm2[0, 0] = -1.5
    assert cb.musetalk_crop_box(lm2, (-3.7, 2.9, 300.2, 400.9)) == (0, 2, 300, 400)


def test_extra_margin():
    assert cb.apply_extra_margin((200, 148, 380, 344), 10, 720) == (200, 148, 380, 354)
    assert cb.apply_extra_margin((200, 148, 380, 344), 10, 350) == (200, 148, 380, 350)
    assert cb.apply_extra_margin((200, 148, 380, 344), 0, 350) == (200, 148, 380, 344)


def test_face_crop_geometry_68_is_the_original_plus_margin():
    t, _ = _fixture()
    for i in (0, 1, 4):
        lm = t["bbox.keypoints133"][i, 23:91]
        box = tuple(float(v) for v in t["bbox.s3fd_box"][i])
        det = Detection(box=box, score=0.99, landmarks=lm, landmark_kind="ibug68")
        crop, align = cb.face_crop_geometry(det, 640, 480, bbox_shift=0, extra_margin=10)
        exp = tuple(int(v) for v in t["bbox.coords_shiftp0"][i])
        assert crop == (exp[0], exp[1], exp[2], min(exp[3] + 10, 480))
        lmf = lm.astype(np.float64)
        np.testing.assert_allclose(align, [lmf[17:22].mean(0), lmf[22:27].mean(0), lmf[27:36].mean(0)], atol=1e-4)
    # the box is clipped to the frame on the right/bottom
    det = Detection(box=(0, 0, 10, 10), score=1.0, landmarks=t["bbox.keypoints133"][0, 23:91])
    crop, _ = cb.face_crop_geometry(det, 300, 200, extra_margin=10)
    assert crop == (200, 148, 300, 200)


def _detector_box(lm):
    """An MTCNN-like box for 68 points, placed as MTCNN places it on real photos (mean over the faces of
    scripts/fit_five_point.py): cheek to cheek, its top a third of the brow-to-chin height above the brows, its bottom
    just above the chin."""
    x1, x2 = lm[:, 0].min(), lm[:, 0].max()
    top, chin = lm[17:27, 1].min(), lm[:, 1].max()
    h, w = chin - top, x2 - x1
    return (x1, top - 0.34 * h, x2 - 0.02 * w, chin - 0.03 * h)


def test_five_point_box_approximates_the_68_point_box():
    t, _ = _fixture()
    for i in (0, 1, 4):   # normal, near_top (clamped), small
        lm = t["bbox.keypoints133"][i, 23:91].astype(np.float64)
        box = _detector_box(lm)
        ref = cb.musetalk_crop_box(lm, box)
        got = cb.crop_box_from_5(_five(lm), box)
        assert _iou(ref, got) > 0.8, (i, ref, got)
        h = ref[3] - ref[1]
        assert got[3] >= ref[3] - 0.05 * h   # the chin is inside
        al68 = cb.align_points_68(lm)
        al5 = cb.align_points_5(_five(lm))
        assert np.abs(al68 - al5).max() < 0.06 * (ref[2] - ref[0])


def test_five_point_box_follows_the_face():
    five = np.array([[100.0, 100.0], [140.0, 100.0], [120.0, 124.0], [102.0, 144.0], [138.0, 144.0]])
    det = np.array([76.0, 76.0, 164.0, 174.0])
    box = cb.crop_box_from_5(five, det)
    # the exact rule on the estimated points
    assert box == cb.musetalk_crop_box(cb.estimate_68(five, det), det)
    x1, y1, x2, y2 = box
    assert x1 < 102 and x2 > 138 and y2 > 160 and y1 < 100   # cheek to cheek, the chin below the mouth
    moved = cb.crop_box_from_5(five + [30, 17], det + [30, 17, 30, 17])
    assert np.abs(np.subtract(moved, box) - [30, 17, 30, 17]).max() <= 1
    double = cb.crop_box_from_5(five * 2, det * 2)
    assert np.abs(np.subtract(double, np.multiply(box, 2))).max() <= 3
    shifted = cb.crop_box_from_5(five, det, bbox_shift=5)
    assert shifted[1] - box[1] == 10 and shifted[3] == box[3]
    # the box informs the estimate: a taller detector box (a longer chin) moves the chin down
    taller = cb.estimate_68(five, det + [0, 0, 0, 20])
    assert taller[8, 1] > cb.estimate_68(five, det)[8, 1] + 5
    # a face cut by the left frame edge falls back to the (clipped) detector box; no box -> placeholder
    assert cb.crop_box_from_5(five - [100, 0], (-20.5, 60.2, 45.0, 170.0)) == (0, 60, 45, 170)
    assert cb.crop_box_from_5(five, None) == cb.COORD_PLACEHOLDER
    # the 68 estimated points follow a rolled face: rotating the points by 20 degrees rotates the estimate (without a
    # box; an axis-aligned box does not rotate with the face)
    a = np.radians(20)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    c = five.mean(0)
    assert np.allclose(cb.estimate_68((five - c) @ rot.T + c), (cb.estimate_68(five) - c) @ rot.T + c, atol=1e-6)
    with pytest.raises(ValueError, match="5 landmarks"):
        cb.estimate_68(five[:4], det)


def test_five_point_model_file():
    """The fitted regression matches the features the code computes and states its held-out score."""
    import json

    with open(cb.FIVE_POINT_MODEL) as f:
        doc = json.load(f)
    assert doc["features"] == list(cb.FIVE_POINT_FEATURES)
    model = cb.five_point_model()
    n = len(cb.FIVE_POINT_FEATURES)
    assert model["feature_mean"].shape == (n,) and model["basis"].shape == (n, 136)
    assert model["shape_mean"].shape == (68, 2)
    held_out = doc["crop_iou_held_out"]     # each person left out of the fit (scripts/fit_five_point.py)
    assert doc["fitted_on"]["people"] >= 40 and 0.90 <= held_out["mean_over_people"] <= 1.0, held_out
    assert held_out["mean_over_faces"] >= 0.88, held_out
    # the mean shape is a face in the eye frame: eyes around (+-0.5, 0), the chin below the mouth
    shape = model["shape_mean"]
    assert np.allclose(shape[36:42].mean(0), [-0.5, 0.0], atol=0.12) and np.allclose(shape[42:48].mean(0), [0.5, 0],
                                                                                    atol=0.12)
    assert shape[8, 1] > shape[57, 1] > shape[33, 1] > 0


def test_smooth_boxes():
    boxes = np.array([[10, 10, 50, 60]] * 5 + [[20, 10, 60, 60]] * 5)
    assert (cb.smooth_boxes(boxes, 0) == boxes).all()
    same = np.array([[10, 10, 50, 60]] * 7)
    assert (cb.smooth_boxes(same, 2) == same).all()
    sm = cb.smooth_boxes(boxes, 2)
    assert sm.dtype.kind == "i" and sm.shape == boxes.shape
    assert list(sm[:, 0]) == [10, 10, 10, 12, 14, 16, 18, 20, 20, 20]
    jitter = np.array([[10, 10, 50, 60], [14, 10, 54, 60]] * 5)
    assert np.ptp(cb.smooth_boxes(jitter, 2)[2:-2, 0]) <= 1 < np.ptp(jitter[:, 0])


def test_fit_similarity_recovers_transform():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(6, 2))
    a = np.radians(33)
    m = 2.5 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    dst = src @ m.T + [4.0, -7.0]
    fit = cb.fit_similarity(src, dst)
    np.testing.assert_allclose(fit[:, :2], m, atol=1e-9)
    np.testing.assert_allclose(fit[:, 2], [4.0, -7.0], atol=1e-9)
