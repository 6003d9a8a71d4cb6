"""MuseTalk v1.5 model builders and loaders: keys/shapes against the released manifests (meta device), strict loading,
legacy VAE key names, clear errors, random test weights and the tool that writes them."""
import json
import os

import pytest
import torch

from conftest import shared_path

from musetalk_enhanced.models import bisenet, musetalk_unet, registry, vae
from musetalk_enhanced.models.checkpoint import CheckpointError
from test_weights import bisenet as tw_bisenet, musetalk_unet as tw_unet, random_state_dict, vae as tw_vae

torch.set_num_threads(2)


def _manifest(name):
    with open(shared_path("fixtures", "musetalk", f"manifest_{name}.json")) as fh:
        return json.load(fh)


def _check_against_manifest(model, man):
    sd = model.state_dict()
    assert set(sd) == set(man["state_dict"]), (set(sd) ^ set(man["state_dict"]))
    wrong = {k: (list(v.shape), man["state_dict"][k]) for k, v in sd.items() if list(v.shape) != man["state_dict"][k]}
    assert not wrong
    assert len(sd) == man["num_state_dict_keys"]
    assert sum(p.numel() for p in model.parameters()) == man["num_parameters"]
    odd = {k: str(v.dtype).replace("torch.", "") for k, v in sd.items() if v.dtype != torch.float32}
    assert odd == man["non_float32_dtypes"]


def test_unet_matches_manifest_on_meta():
    man = _manifest("unet_v15")
    # the released config is what the manifest was built from (MuseTalk's musetalkV15/musetalk.json)
    assert musetalk_unet.MUSETALK_V15_CONFIG == man["config"]
    model = musetalk_unet.build_unet(device="meta")
    _check_against_manifest(model, man)
    assert man["num_parameters"] == musetalk_unet.NUM_PARAMETERS_V15 == 849_947_844
    blk = model.down_blocks[0].attentions[0].transformer_blocks[0]
    assert blk.attn1.heads == 8 and blk.attn2.to_k.weight.shape == (320, 384)


def test_vae_matches_manifest_on_meta():
    man = _manifest("vae_sd_ft_mse")
    model = vae.build_vae(device="meta")
    _check_against_manifest(model, man)
    assert model.config.scaling_factor == pytest.approx(0.18215)
    assert vae.scaling_factor(model) == 0.18215


def test_bisenet_matches_manifest_on_meta():
    man = _manifest("bisenet")
    model = bisenet.build_bisenet(device="meta")
    _check_against_manifest(model, man)  # incl. the int64 num_batches_tracked buffers
    assert man["num_state_dict_keys"] == 191


def test_registry_keys_exist():
    for key in ("musetalk.unet", "musetalk.unet_config", "sd_vae.config", "sd_vae.weights", "sd_vae.weights_bin",
                "face_parse.bisenet"):
        assert key in registry.REGISTRY
    assert registry.REGISTRY["musetalk.unet"].relpath == musetalk_unet.UNET_RELPATH
    assert registry.REGISTRY["musetalk.unet_config"].relpath == musetalk_unet.CONFIG_RELPATH
    assert registry.REGISTRY["sd_vae.weights"].relpath == vae.WEIGHTS_RELPATH
    assert registry.REGISTRY["sd_vae.weights_bin"].relpath == vae.WEIGHTS_BIN_RELPATH
    assert registry.REGISTRY["face_parse.bisenet"].relpath == bisenet.WEIGHTS_RELPATH


SMALL_UNET = {"_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
              "block_out_channels": [32, 64, 64, 64], "cross_attention_dim": 384,
              "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "DownBlock2D"],
              "in_channels": 8, "layers_per_block": 1, "norm_num_groups": 16, "out_channels": 4, "sample_size": 32,
              "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
SMALL_VAE = {"_class_name": "AutoencoderKL", "block_out_channels": [16, 32, 32, 32],
             "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
             "layers_per_block": 1, "norm_num_groups": 8, "latent_channels": 4, "sample_size": 256}


def test_vae_legacy_attention_names_and_conv_shapes_are_converted():
    model = vae.build_vae(SMALL_VAE)
    sd = model.state_dict()
    old = {}
    names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    n_renamed = 0
    for k, v in sd.items():
        for new, o in names.items():
            if ".attentions." in k and f".{new}." in k:
                k = k.replace(f".{new}.", f".{o}.")
                if k.endswith(".weight"):
                    v = v[:, :, None, None]  # 1x1-conv style storage
                n_renamed += 1
                break
        old[k] = v.clone()
    assert n_renamed == 16  # 2 mid-blocks x 4 projections x weight/bias
    conv = vae.convert_legacy_keys(old)
    assert set(conv) == set(sd) and all(conv[k].shape == sd[k].shape for k in sd)
    loaded = vae.load_vae(old, SMALL_VAE)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k])
    # new-style files pass through unchanged
    assert vae.convert_legacy_keys(sd).keys() == sd.keys()


def test_loaders_reject_wrong_files(tmp_path):
    # a VAE state dict offered to the UNet loader: every problem named, in a CheckpointError
    vae_sd = random_state_dict(vae.build_vae(SMALL_VAE, device="meta").state_dict(), dtype=torch.float32)
    p = tmp_path / "unet.pth"
    torch.save(vae_sd, p)
    with pytest.raises(CheckpointError) as ei:
        musetalk_unet.load_unet(str(p), SMALL_UNET)
    msg = str(ei.value)
    assert "MuseTalk UNet" in msg and str(p) in msg and "missing" in msg and "unexpected" in msg
    # a shape mismatch (same keys, other widths)
    other = dict(SMALL_UNET, block_out_channels=[32, 32, 64, 64])
    sd = random_state_dict(musetalk_unet.build_unet(other, device="meta").state_dict(), dtype=torch.float32)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        musetalk_unet.load_unet(sd, SMALL_UNET)
    # a truncated / non-checkpoint file
    bad = tmp_path / "diffusion_pytorch_model.safetensors"
    bad.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(CheckpointError, match="cannot read"):
        vae.load_vae(str(bad), SMALL_VAE)
    # BiSeNet with a key missing
    bsd = random_state_dict(bisenet.build_bisenet(device="meta").state_dict())
    bsd.pop("conv_out.conv_out.weight")
    with pytest.raises(CheckpointError, match="conv_out.conv_out.weight"):
        bisenet.load_bisenet(bsd)
    # a config that is not a UNet config
    cfg = tmp_path / "musetalk.json"
    cfg.write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not a UNet2DConditionModel config"):
        musetalk_unet.load_unet(vae_sd, str(cfg))


def test_write_test_weights_vae_bisenet_full_size_load(tmp_path):
    root = str(tmp_path)
    paths = tw_vae.write_test_weights(root, seed=1)
    assert paths[0] == os.path.join(root, "musetalk", vae.WEIGHTS_RELPATH)
    assert os.path.isfile(os.path.join(root, "musetalk", "sd-vae", registry.TEST_WEIGHTS_MARKER))
    assert registry.is_test_weights(paths[0])
    model = vae.load_vae(paths[0], paths[1], dtype=torch.float32)  # the file holds fp16 values
    _check_against_manifest(model, _manifest("vae_sd_ft_mse"))
    assert model.config.scaling_factor == pytest.approx(0.18215)
    del model
    bp = tw_bisenet.write_test_weights(root, seed=1)
    net = bisenet.load_bisenet(bp[0])
    assert not net.training and next(net.parameters()).dtype == torch.float32
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 64))
    assert len(out) == 3 and out[0].shape == (1, 19, 64, 64) and torch.isfinite(out[0]).all()
    assert registry.is_test_weights(bp[0])


def test_write_test_weights_unet_layout_and_load(tmp_path):
    # full size is ~1.7 GB: check the writer's layout/format with a small config, the full template on meta
    paths = tw_unet.write_test_weights(str(tmp_path), seed=3, config=SMALL_UNET)
    assert paths[0].endswith(os.path.join("musetalk", "musetalkV15", "unet.pth"))
    raw = torch.load(paths[0], map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw.values())  # plain state dict, fp16 values
    model = musetalk_unet.load_unet(paths[0], paths[1], dtype=torch.float32)
    assert not model.training
    with torch.no_grad():
        out = model(torch.randn(1, 8, 32, 32, dtype=torch.float16).float(), torch.tensor([0]),
                    encoder_hidden_states=torch.randn(1, 50, 384)).sample
    assert out.shape == (1, 4, 32, 32) and torch.isfinite(out).all()
    full = musetalk_unet.build_unet(device="meta").state_dict()
    man = _manifest("unet_v15")
    assert {k: list(v.shape) for k, v in full.items()} == man["state_dict"]


def test_missing_weights_error_lists_every_file(tmp_path, monkeypatch):
    from musetalk_enhanced.pipeline.backends import musetalk_engine

    monkeypatch.setattr(registry, "_resolver", lambda folder: [str(tmp_path / folder)])
    with pytest.raises(registry.MissingWeightsError) as ei:
        musetalk_engine.load_musetalk(auto_download=False)
    msg = str(ei.value)
    for rel in ("musetalkV15/unet.pth", "musetalkV15/musetalk.json", "sd-vae/config.json",
                "sd-vae/diffusion_pytorch_model.safetensors"):
        assert os.path.join(str(tmp_path / "musetalk"), rel) in msg
    assert len(ei.value.missing) == 4
    from musetalk_enhanced.pipeline.backends import blending

    with pytest.raises(registry.MissingWeightsError, match="79999_iter.pth"):
        blending.load_face_parser(auto_download=False)


def test_make_test_weights_tool_discovers_and_is_idempotent(tmp_path, capsys):
    import make_test_weights as tool  # beside the tests
    names = [n for n, _ in tool.discover()]
    for n in ("musetalk_unet", "vae", "bisenet"):
        assert n in names
    assert tool.main(["--out", str(tmp_path), "--only", "bisenet"]) == 0
    p = tmp_path / "musetalk" / bisenet.WEIGHTS_RELPATH
    assert p.is_file() and (p.parent / registry.TEST_WEIGHTS_MARKER).is_file()
    assert oct(p.stat().st_mode & 0o077) != "0o0"  # readable like any other file, not a private temp file
    mtime = p.stat().st_mtime_ns
    assert tool.main(["--out", str(tmp_path), "--only", "bisenet"]) == 0
    assert p.stat().st_mtime_ns == mtime  # skipped
    assert "kept" in capsys.readouterr().out
    assert not [d for d in os.listdir(tmp_path) if d.startswith(".tmp_")]


def test_cpu_weights_are_copied_once_into_their_own_memory():
    """Runtime.prepare_model on the CPU gives each weight memory of its own (adopted file tensors ran the VAE 25-45 %
    slower, bench/networks.py): the values are kept, nothing still points into the loaded buffer."""
    from musetalk_enhanced.pipeline.runtime import Runtime

    layer = torch.nn.Linear(4, 4)
    loaded = torch.randn(8, 4)                   # one buffer holding two tensors, as a file read can give them
    layer.weight.data = loaded[:4]
    layer.bias.data = loaded[4, :]
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    out = Runtime(device="cpu", dtype=torch.float32, show_progress=False).prepare_model(layer)
    for name, tensor in out.state_dict().items():
        assert torch.equal(tensor, before[name]) and tensor.is_contiguous()
        assert tensor.untyped_storage().data_ptr() != loaded.untyped_storage().data_ptr()
