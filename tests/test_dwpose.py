"""DWPose's pre/post-processing (models/dwpose.py) against the formulas of the original code path (mmpose 1.1.0 as
MuseTalk calls it, MuseTalk musetalk/utils/preprocessing.py get_landmark_and_bbox), with small synthetic networks of the released exports' signature:
input float32 [N, 3, 384, 288] -> simcc_x [N, 133, 576], simcc_y [N, 133, 768]."""
import os

import numpy as np
import pytest
import torch

from musetalk_enhanced.models import dwpose

W, H = dwpose.INPUT_W, dwpose.INPUT_H


# ---- the original's formulas, written out independently (mmpose: bbox_xyxy2cs, _fix_aspect_ratio,
# get_warp_matrix with its 3-point construction, get_simcc_maximum, add_pred_to_datasample) ---------------------
def mm_center_scale(box, padding=1.25):
    x1, y1, x2, y2 = np.asarray(box, np.float32)
    c = np.array([x1 + x2, y1 + y2], np.float32) * 0.5
    s = np.array([x2 - x1, y2 - y1], np.float32) * padding
    aspect = W / H
    w, h = s
    return c, (np.array([w, w / aspect]) if w > aspect * h else np.array([h * aspect, h])).astype(np.float32)


def mm_warp(c, s):
    import cv2

    src_w = s[0]
    dst_w, dst_h = W, H
    src_dir = np.array([0.0, src_w * -0.5])
    dst_dir = np.array([0.0, dst_w * -0.5])
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0], src[1] = c, c + src_dir
    dst[0], dst[1] = [dst_w * 0.5, dst_h * 0.5], np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir

    def third(a, b):
        d = a - b
        return b + np.r_[-d[1], d[0]]

    src[2], dst[2] = third(src[0], src[1]), third(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


def mm_decode(sx, sy):
    n, k, wx = sx.shape
    fx, fy = sx.reshape(n * k, -1), sy.reshape(n * k, -1)
    locs = np.stack([fx.argmax(1), fy.argmax(1)], -1).astype(np.float32)
    vals = np.minimum(fx.max(1), fy.max(1))
    locs[vals <= 0.0] = -1
    return (locs / 2.0).reshape(n, k, 2), vals.reshape(n, k)


@pytest.mark.parametrize("box", [(0, 0, 1920, 1080), (0, 0, 384, 384), (100.5, 40, 300, 420), (-20, 10, 60, 500)])
def test_center_scale_and_warp_match_mmpose(box):
    c, s = dwpose.center_scale(box)
    mc, ms = mm_center_scale(box)
    assert np.allclose(c, mc) and np.allclose(s, ms, rtol=1e-6)
    assert np.allclose(dwpose.warp_matrix(c, s), mm_warp(mc, ms), atol=1e-4)


def test_decode_and_back_projection_match_mmpose():
    rng = np.random.default_rng(0)
    sx = rng.normal(size=(2, 68, 576)).astype(np.float32)
    sy = rng.normal(size=(2, 68, 768)).astype(np.float32)
    sx[0, 3] = -1.0  # all logits negative: an invisible point
    pts, score = dwpose.decode(sx, sy)
    mp, mv = mm_decode(sx, sy)
    assert np.array_equal(pts, mp) and np.allclose(score, mv) and (pts[0, 3] == -0.5).all()
    c, s = dwpose.center_scale((0, 0, 1280, 720))
    frame = dwpose.to_frame(pts[1], c, s)
    # mmpose add_pred_to_datasample: kp / input_size * bbox_scales + bbox_centers - 0.5 * bbox_scales
    assert np.allclose(frame, pts[1] / np.array([W, H]) * s + c - 0.5 * s, atol=1e-3)
    # ... which is the inverse of the crop's affine
    m = dwpose.warp_matrix(c, s)
    assert np.allclose(frame @ m[:, :2].T + m[:, 2], pts[1], atol=1e-3)


def test_face_flip_is_the_ibug_mirror():
    flip = np.array(dwpose.FACE_FLIP)
    assert sorted(flip) == list(range(68)) and (flip[flip] == np.arange(68)).all()
    assert flip[0] == 16 and flip[8] == 8 and flip[36] == 45 and flip[48] == 54 and flip[62] == 62


class PeakNet(torch.nn.Module):
    """Logits that peak at the brightest column/row of the input, plus ``shift * keypoint`` bins for keypoint k (so
    the decoded point tells which of the 133 channels it came from)."""

    def __init__(self, shift=0):
        super().__init__()
        self.shift = shift

    def forward(self, x):
        g = x.mean(1)
        col = torch.nn.functional.interpolate(g.amax(1, keepdim=True), size=W * 2, mode="nearest")
        row = torch.nn.functional.interpolate(g.amax(2).unsqueeze(1), size=H * 2, mode="nearest")
        xs = [torch.roll(col, self.shift * k, dims=-1) for k in range(dwpose.NUM_KEYPOINTS)]
        return torch.cat(xs, 1), row.expand(-1, dwpose.NUM_KEYPOINTS, -1).contiguous()


def synthetic_export(path, shift=0, batch=dwpose.TORCHSCRIPT_BATCH):
    traced = torch.jit.trace(PeakNet(shift).eval(), torch.zeros(batch, 3, H, W))
    traced.save(path)
    return path


def dot_frame(w, h, x, y):
    img = np.full((h, w, 3), 20, np.uint8)
    img[y - 2:y + 3, x - 2:x + 3] = 255
    return img


@pytest.mark.parametrize("size,dot,box", [((1280, 720), (700, 300), (600, 200, 800, 450)),
                                          ((1920, 1080), (1500, 200), (1470, 170, 1530, 240)),
                                          ((384, 384), (200, 180), (120, 100, 280, 300))])
def test_points_land_where_the_network_points(tmp_path, size, dot, box):
    """End to end through the TorchScript path (batch-5 export, padded): crop, normalise, network, flip test,
    decode, back to the frame: every face point lands on the dot within one SimCC bin of the region."""
    net = dwpose.DWPoseNet(synthetic_export(str(tmp_path / "peak.torchscript.pt")))
    frames = [dot_frame(*size, *dot)]
    for whole in (True, False):
        pts, score = dwpose.face_landmarks(net, frames, [0, 0], [box, box], whole_frame=whole)
        region = (0, 0) + size if whole else dwpose.face_region(box, *size)
        bin_px = dwpose.center_scale(region)[1][0] / (2 * W)
        assert pts.shape == (2, 68, 2) and (score > 0).all()
        assert np.abs(pts - np.array(dot)).max() <= 1.5 * bin_px + 2.5, (whole, pts[0, :3], bin_px)


def test_face_points_are_channels_23_to_90(tmp_path):
    """Keypoint k's x logits are shifted by k bins: the 68 face points must be whole-body channels 23..90."""
    net = dwpose.DWPoseNet(synthetic_export(str(tmp_path / "shift.torchscript.pt"), shift=1))
    frame = dot_frame(384, 384, 40, 200)
    pts, _ = dwpose.face_landmarks(net, [frame], [0], [(0, 0, 384, 384)], flip_test=False, whole_frame=True)
    c, s = dwpose.center_scale((0, 0, 384, 384))
    bin_px = s[0] / (2 * W)
    dx = (pts[0, :, 0] - pts[0, 0, 0]) / bin_px
    assert np.allclose(dx, np.arange(68), atol=0.01)
    base = dwpose.face_landmarks(dwpose.DWPoseNet(synthetic_export(str(tmp_path / "p.pt"))), [frame], [0],
                                 [(0, 0, 384, 384)], flip_test=False, whole_frame=True)[0]
    assert abs((pts[0, 0, 0] - base[0, 0, 0]) / bin_px - 23) < 0.01


def test_small_face_region_and_close_up_region():
    assert dwpose.face_region((800, 300, 1100, 700), 1920, 1080) == (0.0, 0.0, 1920.0, 1080.0)
    x1, y1, x2, y2 = dwpose.face_region((900, 400, 960, 470), 1920, 1080)
    assert (x2 - x1) == pytest.approx(3.5 * 70) and (x1 + x2) / 2 == pytest.approx(930)


def test_onnx_export_runs_through_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = str(tmp_path / "peak.onnx")
    torch.onnx.export(PeakNet(), torch.zeros(1, 3, H, W), path, input_names=["input"],
                      output_names=["simcc_x", "simcc_y"], dynamic_axes={"input": {0: "n"}}, dynamo=False)
    assert ort.InferenceSession(path).get_inputs()[0].shape[1:] == [3, H, W]
    net = dwpose.DWPoseNet(path)
    frame = dot_frame(640, 480, 300, 240)
    pts, _ = dwpose.face_landmarks(net, [frame], [0], [(200, 100, 420, 380)])
    ts = dwpose.DWPoseNet(synthetic_export(str(tmp_path / "peak.pt")))
    assert np.allclose(pts, dwpose.face_landmarks(ts, [frame], [0], [(200, 100, 420, 380)])[0], atol=1e-3)


def test_a_file_with_other_outputs_is_refused(tmp_path):
    class Wrong(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), x.mean((1, 2))

    path = str(tmp_path / "wrong.pt")
    torch.jit.trace(Wrong(), torch.zeros(5, 3, H, W)).save(path)
    with pytest.raises(ValueError, match="SimCC"):
        dwpose.face_landmarks(dwpose.DWPoseNet(path), [np.zeros((100, 100, 3), np.uint8)], [0], [(0, 0, 50, 50)])
    assert os.path.exists(path)
