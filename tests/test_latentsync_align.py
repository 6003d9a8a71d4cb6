"""LatentSync AlignRestore math: parity with the original (fixture align.*), geometry, smoothing state, patches."""
import numpy as np
import pytest
import torch

from conftest import shared_path
from musetalk_enhanced.pipeline.backends import latentsync_align as A


@pytest.fixture(scope="module")
def fx():
    from safetensors import safe_open

    path = shared_path("fixtures", "latentsync", "parity_small.safetensors")
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith("align.")}


def test_geometry_per_resolution():
    g = A.align_geometry(256)
    assert (g.crop_w, g.crop_h) == (210, 280)
    np.testing.assert_allclose(g.template, [[47.6, 56], [162.4, 56], [105, 112]])
    g = A.align_geometry(512)
    assert (g.crop_w, g.crop_h) == (420, 560)
    assert (A.align_geometry(128).crop_w, A.align_geometry(128).crop_h) == (105, 140)


def test_alignment_parity_with_original(fx):
    al = A.FaceAligner(128)
    for i in range(3):  # in order: the nose-bias smoothing state carries over from frame to frame
        r = al.align(fx["align.frames"][i].numpy(), fx["align.landmarks3"][i].numpy())
        torch.testing.assert_close(r.affine, fx["align.affine"][i], rtol=1e-6, atol=1e-5)
        crop_ref = fx["align.crops"][i].numpy().astype(int)
        assert r.crop.shape == crop_ref.shape and np.abs(r.crop.astype(int) - crop_ref).max() <= 1
        face_ref = fx["align.faces"][i].permute(1, 2, 0).numpy().astype(int)
        assert r.face.shape == (128, 128, 3) and np.abs(r.face.astype(int) - face_ref).max() <= 1


def test_restore_parity_with_original(fx):
    for i in range(3):
        frame = fx["align.frames"][i].numpy()
        face = A.resize_face_to_crop(fx["align.faces_back"][i], (140, 105))
        out = A.restore_frame(frame, face, fx["align.affine"][i])
        ref = fx["align.restored"][i].numpy().astype(int)
        diff = np.abs(out.astype(int) - ref)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
        assert (out != frame).any()


def test_smoothing_state_resets_at_a_cut(fx):
    lm = fx["align.landmarks3"].numpy()
    other = np.array([[120.0, 90.0], [190.0, 97.0], [150.0, 142.0]])  # a different face shape (not a translation)
    a = A.FaceAligner(128)
    first = a.affine(lm[0])
    carried = a.affine(other)
    fresh = A.FaceAligner(128).affine(other)
    assert not torch.equal(carried, fresh)  # without a reset the previous nose bias leaks in (0.2 old + 0.8 new)
    a.reset()
    torch.testing.assert_close(a.affine(other), fresh, rtol=0, atol=0)
    torch.testing.assert_close(first, fx["align.affine"][0], rtol=1e-6, atol=1e-5)


def test_similarity_maps_points_onto_template_and_fixes_reflection():
    g = A.align_geometry(256)
    s, ang = 1.7, 0.2
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = (g.template - g.template.mean(0)) @ rot.T * s + [300.0, 200.0]
    m, _ = A.similarity_transform(pts, g.template, smooth=False)
    mapped = pts @ m[:, :2].double().numpy().T + m[:, 2].double().numpy()
    np.testing.assert_allclose(mapped, g.template, atol=1e-3)
    mirrored = pts * [-1, 1]  # a mirrored point set: still a proper rotation (det > 0), never a reflection
    m2, _ = A.similarity_transform(mirrored, g.template, smooth=False)
    assert torch.det(m2[:, :2]) > 0


def test_landmarks3_from_106():
    lm = np.zeros((106, 2))
    lm[[43, 48, 49, 51, 50]] = [10.2, 20.0]
    lm[101:106] = [50.0, 21.4]
    lm[[74, 77, 83, 86]] = [30.0, 40.6]
    np.testing.assert_array_equal(A.landmarks3_from_106(lm), [[10, 20], [50, 21], [30, 41]])


def test_windowed_warp_equals_full_warp():
    src = torch.rand(1, 3, 40, 30) * 255
    m = torch.tensor([[[0.9, 0.1, 12.5], [-0.1, 0.9, 30.2]]])
    full = A.warp_affine(src, m, (90, 120), fill=127.0)
    win = A.warp_affine(src, m, (90, 120), fill=127.0, window=(10, 60, 5, 70))
    torch.testing.assert_close(win, full[..., 10:60, 5:70], rtol=0, atol=1e-4)
    assert (full[..., 0, 0] == 127.0).all()  # outside the source: the fill value


def _scene(seed=0, size=(200, 260)):
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    al = A.FaceAligner(128)
    m = al.affine(np.array([[110.0, 70.0], [160.0, 72.0], [136.0, 104.0]]))
    face = torch.rand(3, 140, 105) * 2 - 1
    return frame, m, face


def test_patch_changes_only_its_rectangle():
    frame, m, face = _scene()
    patch = A.restore_patch(frame, face, m)
    assert patch is not None
    out = patch.apply(frame)
    changed = np.argwhere((out != frame).any(-1))
    assert changed[:, 0].min() >= patch.y0 and changed[:, 0].max() < patch.y1
    assert changed[:, 1].min() >= patch.x0 and changed[:, 1].max() < patch.x1
    assert patch.pixels.shape == (patch.y1 - patch.y0, patch.x1 - patch.x0, 3)
    np.testing.assert_array_equal(A.restore_frame(frame, face, m), out)


def test_region_paste_replaces_only_the_regenerated_area():
    frame, m, face = _scene(1)
    region = torch.zeros(128, 128)
    region[80:120, 20:108] = 1.0                      # lower face only
    whole = A.restore_patch(frame, face, m)
    part = A.restore_patch(frame, face, m, region=region)
    out_whole, out_part = whole.apply(frame), part.apply(frame)
    n_whole = (out_whole != frame).any(-1).sum()
    n_part = (out_part != frame).any(-1).sum()
    assert 0 < n_part < 0.6 * n_whole
    # the eyes / brows (top of the aligned crop) keep the frame's own pixels
    inv = A.invert_affine(m.reshape(1, 2, 3))[0].double().numpy()
    ex, ey = inv @ np.array([52.0, 30.0, 1.0])       # a template point between the brows, in frame pixels
    y, x = int(round(ey)), int(round(ex))
    np.testing.assert_array_equal(out_part[y - 3:y + 4, x - 3:x + 4], frame[y - 3:y + 4, x - 3:x + 4])
    assert (out_whole[y - 3:y + 4, x - 3:x + 4] != frame[y - 3:y + 4, x - 3:x + 4]).any()
    # inside the regenerated area both modes paste the same face
    cx, cy = inv @ np.array([52.0, 120.0, 1.0])
    y, x = int(round(cy)), int(round(cx))
    np.testing.assert_array_equal(out_part[y - 2:y + 3, x - 2:x + 3], out_whole[y - 2:y + 3, x - 2:x + 3])


def test_face_outside_frame_gives_no_patch():
    frame = np.zeros((50, 60, 3), np.uint8)
    m = torch.tensor([[1.0, 0.0, 5000.0], [0.0, 1.0, 5000.0]])  # the face lies far outside the frame
    assert A.restore_patch(frame, torch.zeros(3, 140, 105), m) is None


def test_faces_to_uint8_truncates():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 3.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    u = A.faces_to_uint8(x)
    assert u.shape == (1, 1, 5, 3) and u[0, 0, :, 0].tolist() == [0, 0, 127, 254, 255]
