"""Face detector backends: MTCNN with the real weights of the facenet-pytorch wheel on real photos (skimage), S3FD and
FAN key layouts and random-weight forward passes, weight lookup and missing-weight errors."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path

skdata = pytest.importorskip("skimage.data")

from musetalk_enhanced.models import landmarks68, mtcnn, registry, s3fd  # noqa: E402
from musetalk_enhanced.pipeline.faces import detectors  # noqa: E402
from musetalk_enhanced.pipeline.faces.detectors import create_detector  # noqa: E402
from musetalk_enhanced.pipeline.runtime import Runtime  # noqa: E402
from test_weights import landmarks68 as tw_fan, mtcnn as tw_mtcnn, s3fd as tw_s3fd  # noqa: E402

# Where the astronaut's face is in skimage's 512x512 astronaut() (checked by drawing the detection on the image):
# the face (brows to chin, cheek to cheek) spans about x 178-268, y 58-176.
ASTRO_FACE = (178.0, 58.0, 268.0, 176.0)


def _runtime():
    return Runtime(device="cpu", show_progress=False)


@pytest.fixture(scope="module")
def mt():
    if mtcnn.wheel_weight_paths() is None:
        pytest.skip("facenet-pytorch (for its MTCNN weight files) is not installed")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return create_detector("mtcnn", _runtime(), auto_download=False, landmarks="5-point estimate")


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _check_face_landmarks(det):
    assert det.landmark_kind == "mtcnn5" and det.landmarks.shape == (5, 2)
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = det.landmarks
    assert lex < nx < rex and lmx < rmx                  # image-left before image-right
    assert max(ley, rey) < ny < min(lmy, rmy)            # eyes above the nose above the mouth
    x1, y1, x2, y2 = det.box
    assert np.all((det.landmarks[:, 0] > x1) & (det.landmarks[:, 0] < x2))
    assert np.all((det.landmarks[:, 1] > y1) & (det.landmarks[:, 1] < y2))


def _two_face_canvas():
    face = skdata.astronaut()[40:200, 160:290]           # 160x130 crop around the face
    canvas = np.full((240, 400, 3), 128, np.uint8)
    canvas[40:200, 20:150] = face
    canvas[40:200, 250:380] = face[:, ::-1]              # the second one mirrored
    return canvas


# ---- MTCNN on real photos with the real weights ---------------------------------------------------------------------
def test_astronaut_has_exactly_one_face(mt):
    out = mt.detect(skdata.astronaut())
    assert len(out) == 1 and len(out[0]) == 1
    det = out[0][0]
    assert det.score > 0.95
    assert _iou(det.box, ASTRO_FACE) > 0.7, det.box
    _check_face_landmarks(det)


@pytest.mark.parametrize("name", ["rocket", "coffee", "chelsea"])
def test_photos_without_a_face(mt, name):
    assert mt.detect(getattr(skdata, name)()) == [[]]


def test_two_faces_side_by_side(mt):
    dets = mt.detect(_two_face_canvas()[None])[0]
    assert len(dets) == 2
    assert all(d.score > 0.9 for d in dets)
    assert dets[0].score >= dets[1].score
    centres = sorted((d.box[0] + d.box[2]) / 2 for d in dets)
    assert 20 < centres[0] < 150 and 250 < centres[1] < 380
    for d in dets:
        _check_face_landmarks(d)


def test_batch_equals_one_by_one_and_mirroring(mt):
    astro = skdata.astronaut()
    coffee = np.asarray(Image.fromarray(skdata.coffee()).resize((512, 512), Image.BILINEAR))
    two = np.asarray(Image.fromarray(_two_face_canvas()).resize((512, 512), Image.BILINEAR))
    batch = np.stack([astro, coffee, astro[:, ::-1], two])
    together = mt.detect(batch)
    alone = [mt.detect(frame)[0] for frame in batch]
    assert [len(d) for d in together] == [len(d) for d in alone] == [1, 0, 1, 2]
    for a_list, b_list in zip(together, alone):
        for a, b in zip(a_list, b_list):
            assert np.allclose(a.box, b.box, atol=0.05) and abs(a.score - b.score) < 1e-4
            assert np.allclose(a.landmarks, b.landmarks, atol=0.05)
    # The mirrored frame gives (nearly: the networks are not mirror-symmetric) the mirrored box.
    box, mbox = together[0][0].box, together[2][0].box
    assert _iou((512 - mbox[2], mbox[1], 512 - mbox[0], mbox[3]), box) > 0.8


def test_1080p_frame_finds_the_face_at_the_right_place(mt):
    big = np.asarray(Image.fromarray(skdata.astronaut()).resize((1080, 1080), Image.BICUBIC))
    frame = np.full((1080, 1920, 3), 128, np.uint8)
    frame[:, 420:1500] = big
    dets = mt.detect(frame[None])[0]
    assert len(dets) == 1
    f = 1080 / 512
    expected = (ASTRO_FACE[0] * f + 420, ASTRO_FACE[1] * f, ASTRO_FACE[2] * f + 420, ASTRO_FACE[3] * f)
    assert _iou(dets[0].box, expected) > 0.7, dets[0].box
    _check_face_landmarks(dets[0])


# ---- the 5 points re-read over shifted and mirrored windows (models/mtcnn_refine.py) --------------------------------
def test_refinement_is_exactly_mirror_symmetric(mt):
    """Readings of a face and of its mirror image are one set (the windows are left-right symmetric and each is read
    both ways), so the refined points of the mirror image are the mirrored points, eyes and mouth corners swapped.
    A wrong sign in un-mirroring the mirrored readings breaks this."""
    from musetalk_enhanced.models.mtcnn_refine import refine

    astro = skdata.astronaut()
    width = astro.shape[1]
    box = np.array([[170.0, 50.0, 275.0, 180.0]])
    images = torch.from_numpy(np.stack([astro, np.ascontiguousarray(astro[:, ::-1])])).permute(0, 3, 1, 2).float()
    mirrored_box = np.array([[width - box[0, 2], box[0, 1], width - box[0, 0], box[0, 3]]])
    boxes, points = refine(mt.model, images, np.array([0, 1]), np.concatenate([box, mirrored_box]))
    back = points[1].copy()
    back[:, 0] = width - back[:, 0]
    assert np.allclose(back[[1, 0, 2, 4, 3]], points[0], atol=0.02), (back, points[0])
    assert np.allclose([width - boxes[1, 2], boxes[1, 1], width - boxes[1, 0], boxes[1, 3]], boxes[0], atol=0.02)


def test_refinement_stays_on_the_face_and_is_used_only_for_the_estimate(mt):
    """The refined points stay within a few % of the eye distance of the cascade's (they average out its noise,
    they do not move the face), and only the 5-point-estimate mode refines: the cascade's own output is unchanged
    when a 68-point model will read the box."""
    from musetalk_enhanced.models.mtcnn_refine import refine

    astro = skdata.astronaut()
    raw = mt.model.detect(torch.from_numpy(astro[None]).permute(0, 3, 1, 2).float())[0]
    boxes, points = refine(mt.model, torch.from_numpy(astro[None]).permute(0, 3, 1, 2).float(), np.array([0]),
                           raw["boxes"])
    eye_distance = np.linalg.norm(raw["landmarks"][0, 1] - raw["landmarks"][0, 0])
    moved = np.linalg.norm(points[0] - raw["landmarks"][0], axis=1) / eye_distance
    assert moved.max() < 0.12 and moved.mean() > 1e-4, moved
    assert _iou(boxes[0], raw["boxes"][0]) > 0.85
    det = mt.detect(astro)[0][0]
    assert np.allclose(det.landmarks, points[0], atol=1e-3) and np.allclose(det.box, boxes[0], atol=1e-3)
    pytest.importorskip("dlib")
    with_68 = create_detector("mtcnn", _runtime(), auto_download=False, landmarks="dlib")
    if with_68.landmarks is None:
        pytest.skip("dlib's 68-point predictor file is not installed")
    assert np.allclose(with_68.detect(astro)[0][0].box, raw["boxes"][0], atol=1e-3)


def test_mtcnn_weights_from_model_folder_first(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.ENV_MODELS_DIR, str(tmp_path))
    if mtcnn.wheel_weight_paths() is not None:
        written = tw_mtcnn.write_test_weights(str(tmp_path))   # copies of the real files
        assert all(os.path.isfile(p) for p in written)
        paths = detectors.mtcnn_weight_paths(auto_download=False)
        assert paths == {n: str(tmp_path / "musetalk" / "mtcnn" / f"{n}.pt") for n in mtcnn.WEIGHT_NAMES}


def test_mtcnn_missing_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.ENV_MODELS_DIR, str(tmp_path))
    monkeypatch.setattr(mtcnn, "wheel_weight_paths", lambda: None)
    with pytest.raises(registry.MissingWeightsError) as err:
        create_detector("mtcnn", _runtime(), auto_download=False)
    text = str(err.value)
    for name in ("pnet.pt", "rnet.pt", "onet.pt"):
        assert name in text
    assert "facenet-pytorch" in text


def test_unknown_backend():
    with pytest.raises(ValueError, match="mtcnn"):
        create_detector("retinaface", _runtime())


# ---- geometry helpers -----------------------------------------------------------------------------------------------
def test_nms_modes_and_groups():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert list(mtcnn.nms(boxes, scores, 0.5)) == [0, 2, 3]            # IoU(0,1)=0.68, IoU(0,3)=0.16
    assert list(mtcnn.nms(boxes, scores, 0.5, mode="min")) == [0, 2]   # box 3 lies inside box 0
    assert list(mtcnn.nms(boxes, scores, 0.5, groups=np.array([0, 1, 0, 0]))) == [0, 1, 2, 3]


def test_roi_resample_is_exact_on_pixel_grids():
    img = torch.arange(2 * 3 * 48 * 48, dtype=torch.float32).reshape(2, 3, 48, 48)
    same = mtcnn.roi_resample(img, np.array([1]), np.array([[0, 0, 48, 48]], float), 48)
    assert torch.allclose(same[0], img[1])
    half = mtcnn.roi_resample(img, np.array([0, 1]), np.array([[0, 0, 48, 48], [8, 16, 32, 40]], float), 24)
    assert torch.allclose(half[0], torch.nn.functional.avg_pool2d(img[0], 2), atol=1e-3)
    assert torch.allclose(half[1], img[1, :, 16:40, 8:32], atol=1e-3)
    outside = mtcnn.roi_resample(img + 1, np.array([0]), np.array([[-100, -100, -52, -52]], float), 12)
    assert float(outside.abs().max()) == 0.0                           # black outside the frame


# ---- S3FD -----------------------------------------------------------------------------------------------------------
def test_s3fd_keys_match_the_released_file():
    manifest = json.load(open(shared_path("fixtures", "musetalk", "manifest_s3fd.json")))
    with torch.device("meta"):
        net = s3fd.S3FD()
    own = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert set(own) == set(manifest["state_dict"]) and len(own) == 65
    assert own == manifest["state_dict"]
    assert sum(p.numel() for p in net.parameters()) == manifest["num_parameters"]


def test_s3fd_decode_anchor_geometry():
    # One confident cell on the stride-4 level at (row 2, col 3): anchor centre (14, 10), side 16.
    levels = []
    for i, stride in enumerate(s3fd.STRIDES):
        size = max(1, 64 // stride)
        prob = torch.zeros(1, size, size)
        loc = torch.zeros(1, 4, size, size)
        if i == 0:
            prob[0, 2, 3] = 0.9
            prob[0, 5, 5] = 0.04                                       # below the candidate threshold
            loc[0, :, 2, 3] = torch.tensor([1.0, -0.5, 0.0, float(np.log(2.0) / 0.2)])
        levels.append((prob, loc))
    out = s3fd.decode(levels)[0]
    assert out["boxes"].shape == (1, 4)
    cx, cy, w, h = 14 + 1.0 * 0.1 * 16, 10 - 0.5 * 0.1 * 16, 16.0, 32.0
    assert np.allclose(out["boxes"][0], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-4)
    assert np.allclose(out["scores"], [0.9])


def test_s3fd_random_weights_forward_is_well_formed():
    torch.manual_seed(0)
    net = s3fd.S3FD().eval()
    rgb = torch.from_numpy((np.random.RandomState(0).rand(2, 96, 128, 3) * 255).astype(np.uint8))
    levels = net(s3fd.preprocess(rgb))
    # fc7: (H/32 + 4) x (W/32 + 4) (fc6 pads 3 without dilation, as the released model), then halved twice
    assert [tuple(p.shape) for p, _ in levels] == [(2, 24, 32), (2, 12, 16), (2, 6, 8), (2, 7, 8), (2, 4, 4),
                                                   (2, 2, 2)]
    out = s3fd.detect(net, rgb, keep_threshold=0.0)
    assert len(out) == 2
    for r in out:
        assert r["boxes"].shape == (len(r["scores"]), 4) and np.isfinite(r["boxes"]).all()
        assert np.all(np.diff(r["scores"]) <= 0) and np.all((r["scores"] > 0.05) & (r["scores"] <= 1))


# ---- FAN 68 ---------------------------------------------------------------------------------------------------------
def test_fan_key_layout():
    with torch.device("meta"):
        sd = landmarks68.FAN(4).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["conv2.downsample.2.weight"] == (128, 64, 1, 1) and "conv3.downsample.0.weight" not in shapes
    assert shapes["m3.b2_plus_1.conv1.weight"] == (128, 256, 3, 3)
    assert shapes["m0.b1_4.conv3.weight"] == (64, 64, 3, 3)
    assert shapes["l3.weight"] == (68, 256, 1, 1) and shapes["al2.weight"] == (256, 68, 1, 1)
    assert "bl3.weight" not in shapes and "al3.weight" not in shapes
    assert landmarks68.stack_count(sd) == 4
    params = {k for k in shapes if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert sum(int(np.prod(shapes[k])) for k in params) == 23_820_176


def test_fan_loads_old_style_files(tmp_path):
    sd = tw_fan.random_state_dict(num_modules=1)                       # no num_batches_tracked
    assert not any(k.endswith("num_batches_tracked") for k in sd)
    path = str(tmp_path / "fan.pth.tar")
    torch.save({"module." + k: v for k, v in sd.items()}, path)        # DataParallel prefix
    model = landmarks68.load_fan(path)
    assert model.num_modules == 1
    assert torch.equal(model.l0.weight, sd["l0.weight"].float())


def test_heatmap_decoding_and_crop_convention():
    heat = torch.zeros(1, 2, 64, 64)
    heat[0, 0, 20, 10] = 1.0
    heat[0, 0, 20, 11] = 0.5                                           # larger right neighbour: +0.25 in x
    heat[0, 1, 0, 63] = 1.0                                            # border peak: no refinement
    squares = np.array([[100.0, 50.0, 356.0, 306.0]])                  # 256 px square: 4 frame px per cell
    pts, peak = landmarks68.heatmaps_to_points(heat, squares)
    assert np.allclose(pts[0, 0], [100 + 10.75 * 4, 50 + 20.5 * 4])
    assert np.allclose(pts[0, 1], [100 + 63.5 * 4, 50 + 0.5 * 4])
    assert np.allclose(peak, [[1.0, 1.0]])
    sq = landmarks68.crop_squares(np.array([[100.0, 100.0, 200.0, 200.0]]))[0]
    side = 200.0 * 200.0 / 195.0
    assert np.allclose(sq, [150 - side / 2, 138 - side / 2, 150 + side / 2, 138 + side / 2])


def test_fan_random_weights_forward_shape():
    model = landmarks68.FAN(1).eval()
    with torch.inference_mode():
        heat = model(torch.rand(1, 3, 64, 64))                         # fully convolutional: 64 in -> 16 out
    assert heat.shape == (1, 68, 16, 16) and torch.isfinite(heat).all()


# ---- the s3fd+fan68 backend -----------------------------------------------------------------------------------------
def test_s3fd_fan68_missing_weights_names_both_files(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.ENV_MODELS_DIR, str(tmp_path))
    with pytest.raises(registry.MissingWeightsError) as err:
        create_detector("s3fd+fan68", _runtime(), auto_download=False)
    text = str(err.value)
    assert "s3fd-619a316812.pth" in text and "2DFAN4-11f355bf06.pth.tar" in text
    assert str(tmp_path) in text


def test_s3fd_fan68_backend_with_random_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.ENV_MODELS_DIR, str(tmp_path))
    tw_s3fd.write_test_weights(str(tmp_path))
    tw_fan.write_test_weights(str(tmp_path), num_modules=1)            # same key scheme, one stack: fast
    det = create_detector("s3fd+fan68", _runtime(), auto_download=False, max_faces=1)
    assert det.name == "s3fd+fan68" and det.landmark_kind == "fan-68"
    rgb = (np.random.RandomState(1).rand(1, 64, 80, 3) * 255).astype(np.uint8)
    out = det.detect(rgb)
    assert len(out) == 1 and len(out[0]) <= 1
    for d in out[0]:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= 80 and 0 <= y1 < y2 <= 64 and 0.5 < d.score <= 1
        assert d.landmarks.shape == (68, 2) and np.isfinite(d.landmarks).all()
        assert d.landmark_kind == "fan-68"
    assert det.detect(np.zeros((0, 64, 80, 3), np.uint8)) == []
