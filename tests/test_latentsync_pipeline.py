"""LatentSync engine: parity with the original pipeline run (fixtures pipe.* / pipe_deepcache.*), plus behaviour that
needs no fixtures (paste-back keeps the unmasked pixels, noise reproducibility, missing-weights error)."""
import json

import numpy as np
import pytest
import torch

from conftest import shared_path
from musetalk_enhanced.models import latentsync_unet3d as L
from musetalk_enhanced.pipeline.backends import latentsync_engine as E
from musetalk_enhanced.pipeline.backends.latentsync_align import faces_to_uint8
from test_weights import latentsync_unet3d as tw_unet3d
from musetalk_enhanced.pipeline.lipsync.plan import ping_pong

TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is fastest and robust on a busy 2-core machine
    yield
    torch.set_num_threads(n)


def _vae(cfg):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**cfg)
    vae.register_to_config(shift_factor=0.0)
    return vae.eval()


@pytest.fixture(scope="module")
def fx():
    from safetensors import safe_open

    path = shared_path("fixtures", "latentsync", "parity_small.safetensors")
    cfg = json.load(open(shared_path("fixtures", "latentsync", "configs.json")))
    with safe_open(path, "pt") as f:
        usd = {k[5:]: f.get_tensor(k).float() for k in f.keys() if k.startswith("unet.")}
        vsd = {k[4:]: f.get_tensor(k).float() for k in f.keys() if k.startswith("vae.")}
        t = {k: f.get_tensor(k) for k in f.keys() if k.split(".")[0] in ("pipe", "pipe_deepcache", "audio")}
    unet = L.load_unet(usd, config=cfg["unet"])
    vae = _vae(cfg["vae"])
    vae.load_state_dict(vsd)
    mask = E.load_fixed_mask(128, shared_path("fixtures", "latentsync", "mask.png"))
    windows = t["audio.whisper_feature"][t["audio.chunk_feature_indices"]].reshape(52, 50, 384)
    order = [ping_pong(k, 16) for k in range(52)]   # the original loop_video order (LatentSync LipsyncPipeline.loop_video)
    return dict(t=t, unet=unet, vae=vae, mask=mask, windows=windows, order=order, cfg=cfg)


def _run_chunk(fx, k, deepcache=False, split_cfg=False, trace=None):
    t = fx["t"]
    eng = E.LatentSyncEngine(fx["unet"], fx["vae"], resolution=128, steps=3, guidance=1.5, mask=fx["mask"],
                             deepcache=deepcache, split_cfg=split_cfg)
    r = E.chunk_ranges(0, 52)[k]
    noise = E.ChunkNoise(t["pipe.init_noise"], t[f"pipe.c{k}.vae_noise_masked"], t[f"pipe.c{k}.vae_noise_ref"])
    faces = t["pipe.faces_in"].numpy()[[fx["order"][i] for i in r]]
    return r, eng.sync_chunk(faces, fx["windows"][list(r)], noise=noise, trace=trace)


def test_mask_scheduler_and_chunking(fx):
    np.testing.assert_array_equal(fx["mask"], fx["t"]["pipe.mask_image"].numpy())
    eng = E.LatentSyncEngine(fx["unet"], fx["vae"], resolution=128, steps=3, mask=fx["mask"])
    assert eng.scheduler.timesteps.tolist() == fx["t"]["pipe.timesteps"].tolist() == [667, 334, 1]
    eng20 = E.LatentSyncEngine(fx["unet"], fx["vae"], resolution=128, mask=fx["mask"])
    assert eng20.scheduler.timesteps.tolist() == list(range(951, 0, -50))
    assert fx["order"][:17] == list(range(16)) + [15] and fx["order"][32:34] == [0, 1]
    assert fx["order"][48:] == [15, 14, 13, 12]  # README: faces 0..15, 15..0, 0..15, 15..12
    assert [len(r) for r in E.chunk_ranges(0, 52)] == [16, 16, 16, 4]
    assert E.chunk_ranges(5, 9, 16) == [range(5, 9)]


def test_pipeline_parity_full_chunk(fx):
    t = fx["t"]
    tr = {}
    r, out = _run_chunk(fx, 0, trace=tr)
    for name in ("mask_latents", "masked_image_latents", "ref_latents", "latents_final"):
        torch.testing.assert_close(tr[name], t[f"pipe.c0.{name}"], **TOL)
    for j, step in enumerate(tr["steps"]):
        for name in ("unet_in", "unet_out", "noise_pred_cfg", "latents_out"):
            torch.testing.assert_close(step[name], t[f"pipe.c0.step{j}.{name}"], **TOL)
    torch.testing.assert_close(out, t["pipe.synced_faces"][list(r)], **TOL)
    got = faces_to_uint8(out).astype(int)
    ref = t["pipe.out_frames_uint8"][list(r)].numpy().astype(int)
    assert np.abs(got - ref).max() <= 1 and (got != ref).mean() < 1e-3


def test_pipeline_parity_short_last_chunk(fx):
    t = fx["t"]
    tr = {}
    r, out = _run_chunk(fx, 3, trace=tr)
    assert out.shape == (4, 3, 128, 128)
    torch.testing.assert_close(tr["latents_final"], t["pipe.c3.latents_final"], **TOL)
    torch.testing.assert_close(tr["decoded"], t["pipe.c3.decoded"], **TOL)
    torch.testing.assert_close(out, t["pipe.synced_faces"][48:52], **TOL)
    got = faces_to_uint8(out).astype(int)
    assert np.abs(got - t["pipe.out_frames_uint8"][48:52].numpy().astype(int)).max() <= 1
    # sequential CFG halves: same result up to float rounding
    _, out_split = _run_chunk(fx, 3, split_cfg=True)
    torch.testing.assert_close(out_split, out, **TOL)


def test_deepcache_parity(fx):
    t = fx["t"]
    tr = {}
    r, out = _run_chunk(fx, 0, deepcache=True, trace=tr)
    for j in range(3):  # step 0 full UNet, steps 1 and 2 the cached shallow path (DeepCache)
        torch.testing.assert_close(tr["steps"][j]["unet_out"], t[f"pipe_deepcache.c0.step{j}.unet_out"], **TOL)
    torch.testing.assert_close(tr["latents_final"], t["pipe_deepcache.c0.latents_final"], **TOL)
    got = faces_to_uint8(out).astype(int)
    assert np.abs(got - t["pipe_deepcache.out_frames_uint8"][list(r)].numpy().astype(int)).max() <= 1
    tr3 = {}
    _run_chunk(fx, 3, deepcache=True, trace=tr3)
    torch.testing.assert_close(tr3["latents_final"], t["pipe_deepcache.c3.latents_final"], **TOL)


# ---- behaviour without fixtures (tiny random models) ---------------------------------------------------------------
def _tiny_engine(**kw):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    unet = L.UNet3DConditionModel({"block_out_channels": [32, 32, 32, 32]}).eval()
    vae = AutoencoderKL(block_out_channels=[32, 32, 32, 32], layers_per_block=1,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        latent_channels=4, norm_num_groups=32).eval()
    mask = np.ones((3, 64, 64))
    mask[:, 36:60, 8:56] = 0.0  # lower face regenerated
    return E.LatentSyncEngine(unet, vae, resolution=64, steps=2, mask=mask, **kw), mask


def test_paste_back_keeps_unmasked_pixels_and_shapes():
    eng, mask = _tiny_engine(vae_batch=2)
    faces = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    audio = torch.randn(3, 50, 384)
    out = eng.sync_chunk(faces, audio, frame_start=40)
    assert out.shape == (3, 3, 64, 64) and out.dtype == torch.float32 and torch.isfinite(out).all()
    pixel = (torch.from_numpy(faces).permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5
    keep = torch.from_numpy(mask[0] == 1.0)
    torch.testing.assert_close(out[:, :, keep], pixel[:, :, keep], rtol=0, atol=0)
    assert (out[:, :, ~keep] - pixel[:, :, ~keep]).abs().max() > 1e-3
    u8 = eng.sync_chunk(faces, audio, frame_start=40, output="uint8")
    assert u8.shape == (3, 64, 64, 3) and u8.dtype == np.uint8
    np.testing.assert_array_equal(u8, faces_to_uint8(out))  # frame_start fixes the VAE noise: same result
    assert eng.regenerated_region().sum() == (mask[0] == 0).sum()


def test_noise_reproducible_per_chunk_and_inputs_checked():
    eng, _ = _tiny_engine()
    a, b, c = eng.chunk_noise(4, 16), eng.chunk_noise(4, 16), eng.chunk_noise(4, 32)
    torch.testing.assert_close(a.vae_masked, b.vae_masked, rtol=0, atol=0)
    assert not torch.equal(a.vae_masked, c.vae_masked) and not torch.equal(a.vae_masked, a.vae_ref)
    eng2, _ = _tiny_engine()
    torch.testing.assert_close(eng.init_noise, eng2.init_noise, rtol=0, atol=0)  # the seed fixes the shared noise
    with pytest.raises(ValueError):
        eng.sync_chunk(np.zeros((2, 64, 64, 3), np.uint8), torch.zeros(3, 50, 384))
    with pytest.raises(ValueError):
        eng.sync_chunk(np.zeros((2, 32, 32, 3), np.uint8), torch.zeros(2, 50, 384))


def test_no_cfg_when_guidance_is_one():
    eng, _ = _tiny_engine(guidance=1.0)
    tr = {}
    eng.sync_chunk(np.full((2, 64, 64, 3), 128, np.uint8), torch.randn(2, 50, 384), frame_start=0, trace=tr)
    assert tr["steps"][0]["unet_in"].shape[0] == 1 and len(tr["steps"]) == 2


def test_missing_weights_are_listed(tmp_path, monkeypatch):
    from musetalk_enhanced.models.registry import MissingWeightsError

    monkeypatch.setenv("MUSETALK_MODELS_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError) as e:
        E.load_latentsync("1.6", auto_download=False)
    msg = str(e.value)
    assert "latentsync_unet.pt" in msg and "mask.png" in msg and "sd-vae" in msg
    assert E.required_weights("1.5")[0] == "latentsync15.unet"


def test_engine_restore_patch_modes():
    eng, _ = _tiny_engine()
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)
    al = eng.aligner()
    aligned = al.align(frame, np.array([[80.0, 60.0], [120.0, 61.0], [100.0, 86.0]]))
    assert aligned.face.shape == (64, 64, 3)
    face = torch.rand(3, 64, 64) * 2 - 1
    whole = eng.restore(frame, face, aligned.affine, better_paste=False)
    part = eng.restore(frame, face, aligned.affine, better_paste=True)
    n_whole = (whole.apply(frame) != frame).any(-1).sum()
    n_part = (part.apply(frame) != frame).any(-1).sum()
    assert 0 < n_part < n_whole


def test_load_latentsync_from_model_folders(tmp_path, monkeypatch):
    """The loader end to end with small files in the released layouts: registry paths, {"state_dict"} unwrapping,
    strict VAE load from config.json + safetensors, mask.png asset."""
    import cv2
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from musetalk_enhanced.pipeline.runtime import Runtime, pick_dtype

    monkeypatch.setenv("MUSETALK_MODELS_DIR", str(tmp_path))
    small = {"block_out_channels": [32, 32, 32, 32]}
    tw_unet3d.write_test_weights(str(tmp_path), versions=("1.5",), config=small)
    vae = AutoencoderKL(block_out_channels=[32, 32, 32, 32], layers_per_block=1,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
    vae_dir = tmp_path / "musetalk" / "sd-vae"
    vae.save_config(str(vae_dir))
    save_file(vae.state_dict(), str(vae_dir / "diffusion_pytorch_model.safetensors"))
    png = np.full((256, 256, 3), 255, np.uint8)
    png[95:243, 9:248] = 0
    cv2.imwrite(str(tmp_path / "latentsync" / "mask.png"), png)
    eng = E.load_latentsync("1.5", Runtime(device="cpu", show_progress=False), auto_download=False,
                            unet_config=small, steps=1, guidance=1.0)
    auto = pick_dtype(torch.device("cpu"))  # the CPU's default: bf16 with native bf16 arithmetic, else fp32
    assert eng.resolution == 256 and eng.unet_dtype == auto and eng.vae.config.scaling_factor == 0.18215
    assert float(eng.mask[0, 150, 128]) == 0.0 and float(eng.mask[0, 20, 128]) == 1.0
    out = eng.sync_chunk(np.full((1, 256, 256, 3), 90, np.uint8), torch.zeros(1, 50, 384), frame_start=0)
    assert out.shape == (1, 3, 256, 256) and torch.isfinite(out).all()


def test_cached_loader_reuses_the_engine(tmp_path, monkeypatch):
    """load_latentsync_cached (what the lip-sync node uses): one engine per files/device/settings, noise re-seeded."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from musetalk_enhanced.pipeline.runtime import Runtime

    monkeypatch.setenv("MUSETALK_MODELS_DIR", str(tmp_path))
    small = {"block_out_channels": [32, 32, 32, 32]}
    tw_unet3d.write_test_weights(str(tmp_path), versions=("1.5",), config=small)  # also writes a stand-in mask.png
    vae = AutoencoderKL(block_out_channels=[32, 32, 32, 32], layers_per_block=1,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
    vae_dir = tmp_path / "musetalk" / "sd-vae"
    vae.save_config(str(vae_dir))
    save_file(vae.state_dict(), str(vae_dir / "diffusion_pytorch_model.safetensors"))
    rt = Runtime(device="cpu", show_progress=False)
    a = E.load_latentsync_cached("1.5", rt, False, unet_config=small, steps=1, guidance=1.0, seed=5)
    noise = a.init_noise.clone()
    a.init_noise.add_(1.0)
    b = E.load_latentsync_cached("1.5", rt, False, unet_config=small, steps=1, guidance=1.0, seed=5)
    assert a is b and torch.equal(b.init_noise, noise)
    c = E.load_latentsync_cached("1.5", rt, False, unet_config=small, steps=2, guidance=1.0, seed=5)
    assert c is not b and c.steps == 2
    assert float(c.mask[0, 200, 128]) == 0.0 and float(c.mask[0, 20, 128]) == 1.0
