"""MuseTalk v1.5 engine core against the original's outputs (fixtures groups test_unet.*, core.*; MuseTalk
scripts/inference.py, musetalk/utils/utils.py datagen): crop, preprocessing, VAE latents, UNet at t=0, decode and
uint8 post-processing."""
import json
import os

import numpy as np
import pytest
import torch

from conftest import shared_path

from musetalk_enhanced.models import musetalk_unet, registry, vae
from musetalk_enhanced.pipeline.backends import musetalk_engine as me
from musetalk_enhanced.pipeline.runtime import Runtime, pick_dtype
from test_weights import musetalk_unet as tw_unet, vae as tw_vae

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def fx():
    from safetensors.torch import load_file

    t = load_file(shared_path("fixtures", "musetalk", "parity_small.safetensors"))
    with open(shared_path("fixtures", "musetalk", "parity_small_meta.json")) as fh:
        meta = json.load(fh)
    unet = musetalk_unet.load_unet({k[5:]: v.float() for k, v in t.items() if k.startswith("unet.")},
                                   meta["configs"]["unet_small"])
    model_vae = vae.load_vae({k[4:]: v.float() for k, v in t.items() if k.startswith("vae.")},
                             meta["configs"]["vae_small"])
    engine = me.MuseTalkEngine(unet, model_vae, None, Runtime(device="cpu", dtype=torch.float32,
                                                             show_progress=False))
    return t, meta, engine


def _rgb(bgr):
    return np.ascontiguousarray(np.asarray(bgr)[..., ::-1])


def test_unet_forward_matches_original(fx):
    t, _, engine = fx
    with torch.inference_mode():
        out = engine.unet(t["test_unet.in_latents"], torch.tensor([0]),
                          encoder_hidden_states=t["test_unet.in_cond"]).sample
    assert out.shape == (2, 4, 32, 32)
    assert (out - t["test_unet.out"]).abs().max().item() <= 1e-4


def test_preprocessing_is_bit_exact(fx):
    t, _, _ = fx
    crops = _rgb(t["core.crops_bgr_u8"].numpy()[:2])
    masked, ref = me.preprocess_crops(crops)
    assert torch.equal(ref, t["core.img_ref"])
    assert torch.equal(masked, t["core.img_masked"])
    assert (masked[:, :, 128:] == -1).all()


def test_latents_match_with_injected_eps(fx):
    t, _, engine = fx
    crops = _rgb(t["core.crops_bgr_u8"].numpy())
    lat = engine.encode_reference(crops, eps=t["core.eps"])
    assert lat.shape == (6, 8, 32, 32) and lat.dtype == torch.float32 and lat.device.type == "cpu"
    assert (lat - t["core.latents"]).abs().max().item() <= 1e-4
    # the original's global-RNG draw order (frame by frame, masked then reference) is reproduced by a generator
    lat_g = engine.encode_reference(crops[:2], generator=torch.Generator().manual_seed(777))
    assert (lat_g - t["core.latents"][:2]).abs().max().item() <= 1e-4
    # deterministic mode(): 0.18215 * posterior mean, masked in channels 0-3, reference in 4-7
    lat_m = engine.encode_reference(crops[:2], posterior="mode")
    mean = t["core.posterior_mean"][:2]
    assert (lat_m[:, :4] - 0.18215 * mean[:, 0]).abs().max().item() <= 1e-4
    assert (lat_m[:, 4:] - 0.18215 * mean[:, 1]).abs().max().item() <= 1e-4
    # one crop at a time gives the same as a batch (cacheable per source frame)
    one = engine.encode_reference(crops[3], eps=t["core.eps"][3:4])
    assert (one[0] - t["core.latents"][3]).abs().max().item() <= 1e-4


def test_generate_matches_original_batches(fx):
    t, meta, engine = fx
    bs = meta["core"]["datagen_batch_size"]
    # + the PE table: bit-exact on the machine that made the fixture, within float32 sin/exp's ulp on other CPU
    # vector units (tests/test_audio_features.py PE_USED_ATOL)
    assert torch.allclose(engine.audio_tokens(t["core.audio_chunks"]), t["core.audio_pe"], atol=1e-5, rtol=0)
    pred = torch.cat([engine.denoise(t["core.latents"][i:i + bs], t["core.audio_chunks"][i:i + bs])
                      for i in range(0, 6, bs)])
    assert (pred - t["core.unet_out"]).abs().max().item() <= 1e-4
    dec = engine.decode(t["core.unet_out"])
    assert (dec - t["core.vae_decode_out"]).abs().max().item() <= 1e-3
    faces = me.postprocess_decoded(dec)
    assert faces.shape == (6, 256, 256, 3) and faces.dtype == np.uint8
    ref = _rgb(t["core.out_bgr_u8"].numpy())   # the engine returns RGB
    diff = np.abs(faces.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.001
    # the post-processing formula itself is exact
    assert np.array_equal(me.postprocess_decoded(t["core.vae_decode_out"]), ref)


def test_postprocess_rounds_half_to_even():
    # x = 0 gives exactly 127.5 -> 128 (round half to even); the ends are clamped
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    out = me.postprocess_decoded(x)
    assert out.shape == (1, 1, 5, 3)
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_end_to_end_from_crops(fx):
    t, _, engine = fx
    crops = _rgb(t["core.crops_bgr_u8"].numpy()[4:6])
    lat = engine.encode_reference(crops, eps=t["core.eps"][4:6])
    faces = engine.generate(lat, t["core.audio_chunks"][4:6].numpy())
    diff = np.abs(faces.astype(np.int16) - _rgb(t["core.out_bgr_u8"].numpy()[4:6]).astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.001
    with pytest.raises(ValueError):
        engine.generate(lat[:2], t["core.audio_chunks"][:3])
    assert engine.generate(lat[:0], t["core.audio_chunks"][:0]).shape == (0, 256, 256, 3)


def test_crop_face_rgb_equals_original_bgr():
    import cv2

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    box = (30, 10, 111, 119)
    # the original: crop the BGR frame, resize 256x256 LANCZOS4
    bgr = frame[..., ::-1]
    orig = cv2.resize(np.ascontiguousarray(bgr[10:119, 30:111]), (256, 256), interpolation=cv2.INTER_LANCZOS4)
    ours = me.crop_face(frame, box)
    assert np.array_equal(ours, orig[..., ::-1])
    batch = me.crop_faces(np.stack([frame, frame]), [box, (0, 0, 50, 40)])
    assert batch.shape == (2, 256, 256, 3) and np.array_equal(batch[0], ours)
    with pytest.raises(ValueError, match="empty face crop"):
        me.crop_face(frame, (0.0, 0.0, 0.0, 10.0))


def test_load_musetalk_through_registry(tmp_path, monkeypatch):
    small_unet = {"block_out_channels": [32, 64, 64, 64], "norm_num_groups": 16, "layers_per_block": 1,
                  "attention_head_dim": 8, "cross_attention_dim": 384, "in_channels": 8, "out_channels": 4,
                  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                       "DownBlock2D"],
                  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
    small_vae = {"block_out_channels": [16, 32, 32, 32], "down_block_types": ["DownEncoderBlock2D"] * 4,
                 "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 1, "norm_num_groups": 8}
    tw_unet.write_test_weights(str(tmp_path), config=small_unet)
    tw_vae.write_test_weights(str(tmp_path), config=small_vae, legacy_names=True)
    # only the .bin alternative present: it is used instead of the safetensors
    st = tmp_path / "musetalk" / vae.WEIGHTS_RELPATH
    from safetensors.torch import load_file

    torch.save(load_file(str(st)), str(tmp_path / "musetalk" / vae.WEIGHTS_BIN_RELPATH))
    os.remove(st)
    monkeypatch.setattr(registry, "_resolver", lambda folder: [str(tmp_path / folder)])
    rt = Runtime(device="cpu", show_progress=False)
    engine = me.load_musetalk(rt, auto_download=False, cache=False)
    auto = pick_dtype(torch.device("cpu"))  # the CPU's default: bf16 with native bf16 arithmetic, else fp32
    assert engine.dtype == auto and next(engine.unet.parameters()).dtype == auto
    crops = np.random.default_rng(1).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    lat = engine.encode_reference(crops, posterior="mode")
    faces = engine.generate(lat, np.zeros((2, 50, 384), np.float32))
    assert faces.shape == (2, 256, 256, 3) and faces.dtype == np.uint8
    again = me.load_musetalk(rt, auto_download=False)
    assert me.load_musetalk(rt, auto_download=False) is again  # cached
    me.clear_cache()


def test_auto_dtype_rule(monkeypatch):
    """auto: bf16 only on a CPU with native bf16 arithmetic (else fp32, never fp16 on a CPU); explicit names win."""
    from musetalk_enhanced.pipeline import runtime as R

    cpu = torch.device("cpu")
    monkeypatch.setattr(R, "cpu_has_native_bf16", lambda: True)
    assert R.pick_dtype(cpu) == torch.bfloat16 and R.Runtime("cpu", show_progress=False).dtype == torch.bfloat16
    monkeypatch.setattr(R, "cpu_has_native_bf16", lambda: False)
    assert R.pick_dtype(cpu) == torch.float32 and R.pick_dtype(cpu, "auto") == torch.float32
    assert R.pick_dtype(cpu, "fp16") == torch.float16 and R.pick_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="auto, fp32, fp16, bf16"):
        R.pick_dtype(cpu, "half")
    monkeypatch.undo()
    cap = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert R.cpu_has_native_bf16() == bool(cap)


def test_bf16_engine_stays_close_to_the_original(fx):
    """The bf16 + channels_last path (auto on CPUs with native bf16) against the original's fp32 outputs: same
    shapes, latents within bf16 rounding, faces within a few grey levels on average (bench/README.md "Precision")."""
    import copy

    t, _, fp32 = fx
    eng = me.MuseTalkEngine(copy.deepcopy(fp32.unet), copy.deepcopy(fp32.vae), None,
                            Runtime("cpu", torch.bfloat16, show_progress=False))
    assert eng.channels_last and next(eng.unet.parameters()).dtype == torch.bfloat16
    crops = _rgb(t["core.crops_bgr_u8"].numpy())
    lat = eng.encode_reference(crops, eps=t["core.eps"])
    assert lat.dtype == torch.float32 and lat.shape == t["core.latents"].shape
    scale = t["core.latents"].abs().max().item()
    assert (lat - t["core.latents"]).abs().max().item() <= 0.05 * scale
    faces = eng.generate(lat, t["core.audio_chunks"].numpy())
    diff = np.abs(faces.astype(np.int16) - _rgb(t["core.out_bgr_u8"].numpy()).astype(np.int16))
    # measured: mean 1.25, 99th percentile 7 grey levels (fp16, the original's GPU mode: 0.14 / 1)
    assert diff.mean() <= 3.0 and np.percentile(diff, 99) <= 16
    assert not np.array_equal(faces, _rgb(t["core.out_bgr_u8"].numpy()))  # it really ran in bf16
