"""Paste-back (MuseTalk musetalk/utils/blending.py): exact parity with the original's get_image / realtime blending for a given
parsing label map (fixtures blend.*), the patch contract, and the weight-free feather mode."""
import numpy as np
import pytest
import torch

from conftest import shared_path

from musetalk_enhanced.models import registry
from musetalk_enhanced.pipeline.backends import blending as B
from test_weights import bisenet as tw_bisenet

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def fx():
    from safetensors.torch import load_file

    t = load_file(shared_path("fixtures", "musetalk", "parity_small.safetensors"))
    return {k: v.numpy() for k, v in t.items() if k.startswith("blend.")}


def _rgb(bgr):
    return np.ascontiguousarray(bgr[..., ::-1])


def test_parsing_kernels_and_masks_exact(fx):
    assert np.array_equal(B.jaw_dilation_kernel(), fx["blend.fp_kernel"])
    assert np.array_equal(B.cheek_erosion_kernel(), fx["blend.fp_cheek_kernel"])
    assert np.array_equal(B.cheek_band_mask(90, 90), fx["blend.fp_cheek_mask"])
    for mode in ("jaw", "raw", "neck"):
        assert np.array_equal(B.parsing_mask(fx["blend.parsing_labels"], mode), fx[f"blend.fp_mask_{mode}"]), mode
    with pytest.raises(ValueError):
        B.parsing_mask(fx["blend.parsing_labels"], "feather")


@pytest.mark.parametrize("case", ["center", "edge"])
def test_offline_blend_exact(fx, case):
    frame, face = _rgb(fx["blend.frame_bgr_u8"]), _rgb(fx["blend.face256_bgr_u8"])
    box = fx[f"blend.{case}.bbox"].tolist()
    assert np.array_equal(B.resize_face(face, box), _rgb(fx[f"blend.{case}.res_resized"]))
    for mode in ("jaw", "raw"):
        before = frame.copy()
        patch = B.paste_face(frame, face, box, mode=mode, labels=fx["blend.parsing_labels"])
        assert np.array_equal(frame, before)  # input untouched
        y0, y1, x0, x1, pixels = patch
        h, w = frame.shape[:2]
        cx0, cy0, cx1, cy1 = B.expanded_crop_box(box)
        assert (y0, y1, x0, x1) == (max(0, cy0), min(h, cy1), max(0, cx0), min(w, cx1))
        assert pixels.shape == (y1 - y0, x1 - x0, 3) and pixels.dtype == np.uint8
        out = patch.apply(frame)
        assert np.array_equal(out, _rgb(fx[f"blend.{case}.out_{mode}"])), mode


@pytest.mark.parametrize("case", ["center", "edge"])
def test_realtime_blend_exact(fx, case):
    frame = _rgb(fx["blend.frame_bgr_u8"])
    box = fx[f"blend.{case}.bbox"].tolist()
    bm = B.prepare_blend_mask(frame, box, "jaw", labels=fx["blend.parsing_labels"], blur_ratio=B.REALTIME_BLUR_RATIO)
    assert list(bm.crop_box) == fx[f"blend.{case}.rt_crop_box"].tolist()
    assert np.array_equal(bm.mask, fx[f"blend.{case}.rt_mask"])
    patch = B.blend_face(frame, _rgb(fx[f"blend.{case}.res_resized"]), box, bm)
    assert np.array_equal(patch.apply(frame), _rgb(fx[f"blend.{case}.rt_out"]))


def test_changes_only_under_the_mask(fx):
    frame = _rgb(fx["blend.frame_bgr_u8"])
    box = fx["blend.center.bbox"].tolist()
    face = np.full((256, 256, 3), 7, np.uint8)
    bm = B.prepare_blend_mask(frame, box, "jaw", labels=fx["blend.parsing_labels"])
    out = B.blend_face(frame, face, box, bm).apply(frame)
    changed = np.any(out != frame, axis=2)
    full_mask = np.zeros(frame.shape[:2], np.uint8)
    x0, y0, x1, y1 = bm.crop_box
    full_mask[y0:y1, x0:x1] = bm.mask
    assert changed.any() and not (changed & (full_mask == 0)).any()
    # nothing above the box centre line changes (lower half only, before blur spill of k//2 rows)
    k = int(0.05 * (x1 - x0) // 2 * 2) + 1
    assert not changed[: (y0 + (y1 - y0) // 2) - k // 2 - 1].any()


def test_feather_mode_needs_no_weights_and_stays_in_box():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    face = np.zeros((256, 256, 3), np.uint8)
    for box in [(100, 60, 200, 190), (250, 150, 330, 260), (-5, -10, 60, 70)]:
        bm = B.feather_mask(box)
        x0, y0, x1, y1 = bm.crop_box
        assert bm.mask.shape == (y1 - y0, x1 - x0) and bm.mask.max() == 255
        bx0, by0, bx1, by1 = (v - o for v, o in zip(box, (x0, y0, x0, y0)))
        inside = np.zeros_like(bm.mask, bool)
        inside[max(0, by0):by1, max(0, bx0):bx1] = True
        assert not bm.mask[~inside].any()               # never outside the crop box
        top = int(0.5 * bm.mask.shape[0])
        k = int(0.1 * bm.mask.shape[1] // 2 * 2) + 1
        assert not bm.mask[: max(0, top - k // 2)].any()  # lower part only
        patch = B.paste_face(frame, face, box, mode="feather")
        out = patch.apply(frame)
        changed = np.any(out != frame, axis=2)
        assert changed.any()
        ys, xs = np.nonzero(changed)
        assert ys.min() >= max(0, box[1]) and ys.max() < box[3] and xs.min() >= max(0, box[0]) and xs.max() < box[2]
    assert B.paste_face(frame, face, (100, 60, 200, 190)).pixels.shape[2] == 3  # feather is the default mode


def test_modes_and_errors(tmp_path, monkeypatch):
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="feather"):
        B.prepare_blend_mask(frame, (10, 10, 40, 50), "jaw")  # no parser, no labels
    with pytest.raises(ValueError):
        B.prepare_blend_mask(frame, (10, 10, 40, 50), "lips")
    with pytest.raises(ValueError, match="empty face box"):
        B.paste_face(frame, frame, (0.0, 0.0, 0.0, 10.0))
    monkeypatch.setattr(registry, "_resolver", lambda folder: [str(tmp_path / folder)])
    assert B.resolve_blend_mode("auto") == "feather"
    tw_bisenet.write_test_weights(str(tmp_path))
    assert B.resolve_blend_mode("auto") == "jaw"
    assert B.resolve_blend_mode("raw") == "raw"
    with pytest.raises(ValueError):
        B.resolve_blend_mode("nope")


def test_face_parser_with_network(tmp_path, monkeypatch):
    from musetalk_enhanced.pipeline.runtime import Runtime

    monkeypatch.setattr(registry, "_resolver", lambda folder: [str(tmp_path / folder)])
    tw_bisenet.write_test_weights(str(tmp_path))
    parser = B.load_face_parser(Runtime(device="cpu", show_progress=False), auto_download=False)
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
    box = (80, 50, 160, 150)
    crop = B._cut(frame, B.expanded_crop_box(box))
    labels = parser.labels([frame[:90, :70], crop])
    assert labels.shape == (2, 512, 512) and labels.dtype == np.uint8 and labels.max() < 19
    # the network path equals the label path with the network's labels
    via_net = B.prepare_blend_mask(frame, box, "jaw", parser=parser)
    via_labels = B.prepare_blend_mask(frame, box, "jaw", labels=labels[1])
    assert np.array_equal(via_net.mask, via_labels.mask)


def test_blend_masks_of_a_unit_in_one_parser_batch(tmp_path, monkeypatch):
    """prepare_blend_masks labels all the unit's squares in one BiSeNet call and makes the same masks as one call
    per frame."""
    from musetalk_enhanced.pipeline.runtime import Runtime

    monkeypatch.setattr(registry, "_resolver", lambda folder: [str(tmp_path / folder)])
    tw_bisenet.write_test_weights(str(tmp_path))
    parser = B.load_face_parser(Runtime(device="cpu", show_progress=False), auto_download=False)
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (200, 240, 3), dtype=np.uint8) for _ in range(3)]
    boxes = [(80, 50, 160, 150), (20, 10, 130, 120), (150, 90, 240, 200)]
    calls = []
    real = parser.labels
    monkeypatch.setattr(parser, "labels", lambda images: calls.append(len(images)) or real(images))
    together = B.prepare_blend_masks(frames, boxes, "jaw", parser)
    assert calls == [3]
    for f, b, m in zip(frames, boxes, together):
        single = B.prepare_blend_mask(f, b, "jaw", parser=parser)
        assert m.crop_box == single.crop_box and np.array_equal(m.mask, single.mask)
    shaped = B.prepare_blend_masks(frames, boxes, B.BlendOptions("box", 8, 0), parser)
    assert calls == [3, 1, 1, 1] and all(m.mask.any() for m in shaped)
