"""LatentSync UNet3D: released key layout (meta device), strict loading, fixture parity, structural properties."""
import json
import math
import os

import pytest
import torch

from conftest import shared_path
from musetalk_enhanced.models import latentsync_unet3d as L
from musetalk_enhanced.models.latentsync_blocks import sinusoid_table
from musetalk_enhanced.models.checkpoint import CheckpointError
from musetalk_enhanced.models.registry import REGISTRY
from test_weights import latentsync_unet3d as tw_unet3d

SMALL = {"block_out_channels": [32, 64, 64, 64], "sample_size": 16}  # the fixtures' small model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is fastest and robust on a busy 2-core machine
    yield
    torch.set_num_threads(n)


def small_unet(seed=0):
    torch.manual_seed(seed)
    m = L.UNet3DConditionModel(SMALL).eval()
    with torch.no_grad():  # the constructor zero-initialises conv_in/conv_out/motion proj_out; make them matter
        for p in m.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return m


@pytest.mark.parametrize("manifest", ["manifest_v1.5_stage2.json", "manifest_v1.6_stage2_512.json"])
def test_full_size_keys_match_release_manifest(manifest):
    man = json.load(open(shared_path("fixtures", "latentsync", manifest)))
    with torch.device("meta"):
        m = L.UNet3DConditionModel(man["model_config"])
    got = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    exp = {e["key"]: tuple(e["shape"]) for e in man["state_dict"]}
    assert sorted(set(exp) - set(got)) == [] and sorted(set(got) - set(exp)) == []
    assert {k: s for k, s in got.items() if exp[k] != s} == {}
    assert len(got) == L.NUM_STATE_DICT_KEYS == man["num_state_dict_keys"]
    assert sum(p.numel() for p in m.parameters()) == L.PARAM_COUNT == man["param_count"]
    assert sum(1 for k in got if k.endswith("pos_encoder.pe")) == 40
    assert sum(b.numel() for b in m.buffers()) == man["buffer_count"]


@pytest.mark.parametrize("resolution", [256, 512])
def test_full_size_forward_shapes_on_meta(resolution):
    """The whole forward (and the DeepCache shallow path) of the released model, shapes only, for free."""
    h = resolution // 8
    with torch.device("meta"):
        m = L.UNet3DConditionModel()
        x = torch.empty(2, 13, 16, h, h)
        a = torch.empty(32, 50, 384)
    cache = L.DeepCacheState()
    assert m(x, torch.tensor(951), a, cache=cache, step_index=0).shape == (2, 4, 16, h, h)
    assert cache.feature.shape == (2, 320, 16, h, h)
    assert m(x, torch.tensor(901), a, cache=cache, step_index=1).shape == (2, 4, 16, h, h)


def test_default_config_is_the_release_config():
    man = json.load(open(shared_path("fixtures", "latentsync", "manifest_v1.5_stage2.json")))
    assert L.UNET_CONFIG == man["model_config"]
    assert L.RESOLUTIONS == {"1.5": 256, "1.6": 512}


def test_registry_entries():
    assert REGISTRY[L.REGISTRY_KEYS["1.5"]].relpath == "1.5/latentsync_unet.pt"
    assert REGISTRY[L.REGISTRY_KEYS["1.6"]].repo_id == "ByteDance/LatentSync-1.6"
    mask = REGISTRY[L.MASK_KEY]
    assert (mask.folder, mask.relpath) == ("latentsync", "mask.png")
    assert mask.url.startswith("https://raw.githubusercontent.com/bytedance/LatentSync/")
    assert L.normalize_version("v1.6") == "1.6" and L.normalize_version("15") == "1.5"
    with pytest.raises(ValueError):
        L.normalize_version("1.0")


def test_position_table_is_the_sinusoid():
    pe = sinusoid_table(320, 24)[0].double()
    pos, i = 7, 13
    ang = pos * 10000 ** (-(2 * i) / 320)
    assert abs(pe[pos, 2 * i] - math.sin(ang)) < 1e-5 and abs(pe[pos, 2 * i + 1] - math.cos(ang)) < 1e-5


def test_forward_parity_with_original():
    from safetensors import safe_open

    path = shared_path("fixtures", "latentsync", "parity_small.safetensors")
    cfg = json.load(open(shared_path("fixtures", "latentsync", "configs.json")))["unet"]
    with safe_open(path, "pt") as f:
        sd = {k[5:]: f.get_tensor(k).float() for k in f.keys() if k.startswith("unet.")}
        fx = {k: f.get_tensor(k) for k in f.keys() if k.startswith("fwd.")}
    unet = L.load_unet(sd, config=cfg)
    with torch.no_grad():
        out = unet(fx["fwd.sample"], fx["fwd.timestep"], fx["fwd.encoder_hidden_states"])
        out4 = unet(fx["fwd.sample"], fx["fwd.timestep"], fx["fwd.encoder_hidden_states"].reshape(2, 16, 50, 384))
    torch.testing.assert_close(out, fx["fwd.out"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out4, out, rtol=0, atol=0)


def test_strict_loading_names_missing_and_unexpected_keys():
    sd = small_unet().state_dict()
    sd.pop("mid_block.attentions.0.proj_in.bias")
    sd["module.extra.weight"] = torch.zeros(3)
    sd["conv_out.weight"] = torch.zeros(4, 32, 1, 1)
    with pytest.raises(CheckpointError) as e:
        L.load_unet(sd, config=SMALL)
    msg = str(e.value)
    assert "mid_block.attentions.0.proj_in.bias" in msg and "module.extra.weight" in msg
    assert "conv_out.weight" in msg and "missing" in msg and "unexpected" in msg


@pytest.mark.parametrize("wrapped", [True, False])
def test_released_wrapping_and_bare_dict_load(tmp_path, wrapped):
    ref = small_unet(1)
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    path = tmp_path / "latentsync_unet.pt"
    torch.save({"state_dict": sd, "global_step": 123} if wrapped else sd, path)
    unet = L.load_unet(str(path), config=SMALL)
    assert not any(p.is_meta for p in unet.parameters()) and not unet.training
    x = torch.randn(1, 13, 3, 8, 8)
    a = torch.randn(3, 50, 384)
    with torch.no_grad():
        torch.testing.assert_close(unet(x, 500, a), ref(x, 500, a), rtol=0, atol=0)


def test_write_test_weights_layout(tmp_path):
    paths = tw_unet3d.write_test_weights(str(tmp_path), seed=3, versions=("1.6",), config=SMALL)
    assert paths == [os.path.join(str(tmp_path), "latentsync", "1.6", "latentsync_unet.pt"),
                     os.path.join(str(tmp_path), "latentsync", "mask.png")]  # stand-in mask asset
    obj = torch.load(paths[0], weights_only=True)
    assert set(obj) >= {"state_dict"}
    sd = obj["state_dict"]
    assert all(v.dtype == torch.float16 for k, v in sd.items() if not k.endswith(".pe"))
    torch.testing.assert_close(sd["down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0."
                                  "attention_blocks.0.pos_encoder.pe"], sinusoid_table(32, 24))
    unet = L.load_unet(paths[0], config=SMALL)
    assert {t.dtype for t in unet.state_dict().values()} == {torch.float16}
    unet = unet.float()
    with torch.no_grad():
        y = unet(torch.randn(1, 13, 2, 8, 8), 1, torch.randn(2, 50, 384))
    assert torch.isfinite(y).all()
    assert os.path.isfile(os.path.join(os.path.dirname(paths[0]), "RANDOM_TEST_WEIGHTS.txt"))


def test_frames_of_a_chunk_are_coupled_but_batch_items_are_not():
    """Cross-frame GroupNorm + temporal attention couple the frames of a chunk (LatentSync latentsync/models/unet.py); batch items are independent
    (what CFG relies on)."""
    unet = small_unet(2)
    x = torch.randn(2, 13, 4, 8, 8)
    a = torch.randn(8, 50, 384)
    with torch.no_grad():
        y = unet(x, 300, a)
        x2 = x.clone()
        x2[0, :, 3] += 1.0          # change the last frame of batch item 0
        y2 = unet(x2, 300, a)
        y_b1 = unet(x[1:], 300, a[4:])
    assert (y2[0, :, 0] - y[0, :, 0]).abs().max() > 1e-4   # frame 0 of the same chunk moved
    torch.testing.assert_close(y2[1], y[1], rtol=0, atol=0)  # the other batch item did not
    torch.testing.assert_close(y_b1[0], y[1], rtol=1e-5, atol=1e-5)


def test_audio_reaches_the_output_and_none_skips_it():
    unet = small_unet(3)
    x = torch.randn(1, 13, 2, 8, 8)
    with torch.no_grad():
        y0 = unet(x, 100, torch.zeros(2, 50, 384))
        y1 = unet(x, 100, torch.randn(2, 50, 384))
        yn = unet(x, 100, None)
    assert (y1 - y0).abs().max() > 1e-4
    assert yn.shape == y0.shape and torch.isfinite(yn).all()


def test_deepcache_shallow_path_reuses_the_cached_feature():
    unet = small_unet(4)
    x = torch.randn(1, 13, 3, 8, 8)
    a = torch.randn(3, 50, 384)
    cache = L.DeepCacheState(interval=3)
    with torch.no_grad():
        full = unet(x, 400, a, cache=cache, step_index=0)
        assert cache.feature is not None and cache.feature.shape[1] == 32
        again = unet(x, 400, a, cache=cache, step_index=1)   # same input: shallow path == full output
        moved = L.DeepCacheState(interval=3, feature=cache.feature + 0.5 * torch.randn_like(cache.feature))
        shifted = unet(x, 400, a, cache=moved, step_index=1)  # the shallow path really uses the cached feature
        feat = cache.feature
        unet(x, 200, a, cache=cache, step_index=3)           # full step refreshes the cache
    torch.testing.assert_close(again, full, rtol=1e-5, atol=1e-5)
    assert (shifted - again).abs().max() > 1e-3
    assert cache.feature is not feat


def test_attention_batch_bound_gives_the_same_result():
    unet = small_unet(5)
    x = torch.randn(1, 13, 2, 8, 8)
    a = torch.randn(2, 50, 384)
    with torch.no_grad():
        y = unet(x, 10, a)
        unet.set_attention_batch(3)
        y2 = unet(x, 10, a)
        unet.set_attention_batch(None)
    torch.testing.assert_close(y2, y, rtol=1e-5, atol=1e-5)


def test_resolution_check_hook(monkeypatch):
    sd = small_unet(6).state_dict()
    assert L.check_resolution_matches(sd, "1.5") is None     # unknown file: not judged
    monkeypatch.setitem(L.KNOWN_FINGERPRINTS, "1.6", L.fingerprint(sd))
    assert "1.6" in L.check_resolution_matches(sd, "1.5")
    assert L.check_resolution_matches(sd, "1.6") is None


def test_version_mismatch_is_warned(monkeypatch):
    """1.5 and 1.6 files have identical keys: a file recognised (by fingerprint) as the other release than the slot
    it was loaded from gets a warning naming the right folder; unknown files are not judged."""
    import torch

    from musetalk_enhanced.models import latentsync_unet3d as U

    sd = {"conv_in.weight": torch.full((320, 13, 3, 3), 0.01), "conv_in.bias": torch.full((320,), 0.02)}
    assert U.check_resolution_matches(sd, "1.6") is None  # nothing known yet
    monkeypatch.setitem(U.KNOWN_FINGERPRINTS, "1.5", U.fingerprint(sd))
    msg = U.check_resolution_matches(sd, "1.6")
    assert msg and "1.5 release (256 px)" in msg and "used as 1.6 (512 px)" in msg
    assert U.check_resolution_matches(sd, "1.5") is None
    sd16 = {k: v.half() for k, v in sd.items()}  # dtype-independent
    assert U.check_resolution_matches(sd16, "1.6") == msg
