"""frame_ops=torch (pipeline/backends/frame_ops.py) against the cv2/PIL path it replaces on the device: the crop
(cv2 Lanczos-4), the face resized to its box (cv2 bilinear) and the masked paste (Pillow), on random frames, on a
real photo, on every box shape that matters (shrinking, growing, odd sizes, past the frame's edge), and through the
MuseTalk backend and a whole lip-sync run (the same frames with either path)."""
import numpy as np
import pytest
import torch

from musetalk_enhanced.pipeline.backends import blending, frame_ops
from musetalk_enhanced.pipeline.backends import musetalk_engine as me

BOXES = [(40, 30, 340, 330),      # 300 px: the crop shrinks
         (100, 80, 197, 177),     # 97 px: it grows
         (10, 5, 141, 136),       # odd sides
         (20, 40, 211, 229),      # not square
         (-30, -20, 150, 170),    # past the top-left corner (edge_faces=pad)
         (400, 300, 520, 430),    # past the bottom-right corner
         (0, 0, 256, 256)]        # the network's own size


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (400, 480, 3), dtype=np.uint8)


def _diff(a, b) -> int:
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


@pytest.mark.parametrize("box", BOXES)
def test_crop_equals_cv2_lanczos(frame, box):
    ours = frame_ops.crop_face(torch.from_numpy(frame), box).numpy()
    assert np.array_equal(ours, me.crop_face(frame, box)), f"max diff {_diff(ours, me.crop_face(frame, box))}"


def test_crop_of_a_real_photo_equals_cv2():
    from skimage import data

    img = np.ascontiguousarray(data.astronaut())                  # 512x512, a face at about (170..350, 60..250)
    for box in [(160, 40, 360, 280), (171, 63, 333, 247), (150, 30, 400, 300)]:
        assert np.array_equal(frame_ops.crop_face(torch.from_numpy(img), box).numpy(), me.crop_face(img, box))


@pytest.mark.parametrize("box", BOXES[:4] + [(0, 0, 256, 256), (3, 3, 612, 501)])
def test_face_resize_equals_cv2_bilinear(box):
    face = np.random.default_rng(sum(box) & 0xFFFF).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    ours = frame_ops.resize_face(torch.from_numpy(face), box).numpy()
    assert np.array_equal(ours, blending.resize_face(face, box)), f"max diff {_diff(ours, blending.resize_face(face, box))}"


def test_blend_formula_equals_pillow_for_every_alpha():
    from PIL import Image

    old = np.arange(256, dtype=np.uint8)[None, :, None].repeat(256, 0).repeat(3, 2)        # every value ...
    new = np.ascontiguousarray(old.transpose(1, 0, 2)[::-1])                                # ... against every other
    alpha = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)
    alpha[0, :] = 0
    alpha[1, :] = 255
    region = Image.fromarray(old.copy())
    region.paste(Image.fromarray(new), (0, 0), Image.fromarray(alpha))
    ours = frame_ops.blend_region(torch.from_numpy(old), torch.from_numpy(new), torch.from_numpy(alpha)).numpy()
    assert np.array_equal(ours, np.asarray(region))


@pytest.mark.parametrize("mode", ["feather", "box"])
@pytest.mark.parametrize("box", [BOXES[0], BOXES[2], BOXES[4], BOXES[5]])
def test_paste_back_equals_the_cv2_pil_path(frame, box, mode):
    face = np.random.default_rng(3).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    mask = blending.prepare_blend_mask(frame, box, mode)
    want = blending.blend_face(frame, face, box, mask)
    got = frame_ops.blend_face(torch.from_numpy(frame), torch.from_numpy(face), box, mask.crop_box,
                               mask.mask)
    assert (got.y0, got.y1, got.x0, got.x1) == (want.y0, want.y1, want.x0, want.x1)
    assert np.array_equal(got.pixels, want.pixels), f"max diff {_diff(got.pixels, want.pixels)}"
    assert np.array_equal(got.alpha, want.alpha)


def test_decoded_faces_round_like_the_cpu_path():
    images = torch.randn(3, 3, 256, 256) * 1.2
    images[0, 0, 0, :4] = torch.tensor([-1.0, 1.0, 1 / 255 - 1, 2 * (0.5 / 255) - 1])   # the ends and a half step
    assert np.array_equal(frame_ops.postprocess_decoded(images).numpy(), me.postprocess_decoded(images))


def test_device_frames_on_the_cpu_are_the_arrays(frame):
    staged = frame_ops.DeviceFrames(torch.device("cpu")).upload({3: frame, 5: frame[::-1]}, [5, 3, 5])
    assert list(staged) == [5, 3]
    assert np.array_equal(staged[5].numpy(), frame[::-1]) and staged[3].dtype == torch.uint8
