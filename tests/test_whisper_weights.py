"""whisper-tiny weights: both released formats (Hugging Face folder, OpenAI tiny.pt), the key mapping both ways,
strict loading, the registry lookup and the full-size random test weights."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import shared_path
from musetalk_enhanced.models import registry
from musetalk_enhanced.models import whisper as W
from musetalk_enhanced.models.checkpoint import CheckpointError
from test_weights import whisper as tw_whisper

torch.set_num_threads(2)

# A small whisper with the real mel/position sizes (so it runs on real 30 s windows) but narrow layers.
SMALL = dict(W.WHISPER_TINY_CONFIG, d_model=64, encoder_attention_heads=2, encoder_ffn_dim=256, encoder_layers=4,
             num_hidden_layers=4, decoder_attention_heads=2, decoder_ffn_dim=256, decoder_layers=2, vocab_size=50,
             max_target_positions=12, pad_token_id=1, bos_token_id=1, eos_token_id=1, decoder_start_token_id=1)


_SHAPES = {}


def small_hf_state_dict(seed=0):
    if not _SHAPES:
        _SHAPES.update(tw_whisper.hf_model_shapes(SMALL))
    return tw_whisper.random_whisper_state_dict(_SHAPES, seed=seed, dtype=torch.float32)


def write_small_hf(folder, sd, prefix="model.", fmt="safetensors"):
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(dict(SMALL, architectures=["WhisperForConditionalGeneration"], model_type="whisper"), fh)
    tensors = {prefix + k: v.contiguous() for k, v in sd.items()}
    if fmt == "safetensors":
        save_file(tensors, os.path.join(folder, "model.safetensors"))
    else:
        torch.save(tensors, os.path.join(folder, "pytorch_model.bin"))


def write_small_openai(path, sd, drop=()):
    oa = W.hf_to_openai(sd)
    for k in drop:
        oa.pop(k)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"dims": W.dims_from_hf_config(SMALL), "model_state_dict": oa}, path)


def openai_reference_states(oa, n_head, mel):
    """Independent forward of OpenAI's AudioEncoder, written from the OpenAI key names (no transformers involved):
    returns [B, T, 5, d] = embedding, blocks 1-3 and block 4 (no ln_post), as LatentSync's whisper returns them."""
    def ln(x, p):
        return F.layer_norm(x, (x.shape[-1],), oa[p + ".weight"], oa[p + ".bias"], 1e-5)

    def lin(x, p, bias=True):
        return F.linear(x, oa[p + ".weight"], oa.get(p + ".bias") if bias else None)

    x = F.gelu(F.conv1d(mel, oa["encoder.conv1.weight"], oa["encoder.conv1.bias"], padding=1))
    x = F.gelu(F.conv1d(x, oa["encoder.conv2.weight"], oa["encoder.conv2.bias"], stride=2, padding=1))
    x = x.permute(0, 2, 1) + oa["encoder.positional_embedding"]
    states = [x]
    i = 0
    while f"encoder.blocks.{i}.attn.query.weight" in oa:
        p = f"encoder.blocks.{i}"
        h = ln(x, p + ".attn_ln")
        b, t, d = h.shape
        q = lin(h, p + ".attn.query").view(b, t, n_head, -1).transpose(1, 2)
        k = lin(h, p + ".attn.key", bias=False).view(b, t, n_head, -1).transpose(1, 2)
        v = lin(h, p + ".attn.value").view(b, t, n_head, -1).transpose(1, 2)
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // n_head), dim=-1)
        x = x + lin((w @ v).transpose(1, 2).reshape(b, t, d), p + ".attn.out")
        h = ln(x, p + ".mlp_ln")
        x = x + lin(F.gelu(lin(h, p + ".mlp.0")), p + ".mlp.2")
        states.append(x)
        i += 1
    return torch.stack(states, dim=2)


# ---- key mapping ----------------------------------------------------------------------------------------------------
def test_key_mapping_round_trip_both_ways():
    hf = small_hf_state_dict()
    oa = W.hf_to_openai(hf)
    assert len(oa) == len(hf)
    back = W.openai_to_hf(oa)
    assert set(back) == set(hf)
    assert all(torch.equal(back[k], hf[k]) for k in hf)
    # and starting from OpenAI names
    again = W.hf_to_openai(back)
    assert set(again) == set(oa) and all(torch.equal(again[k], oa[k]) for k in oa)
    # the model. prefix and the tied proj_out of a WhisperForConditionalGeneration file are handled
    prefixed = {"model." + k: v for k, v in hf.items()}
    prefixed["proj_out.weight"] = hf["decoder.embed_tokens.weight"]
    assert set(W.hf_to_openai(prefixed)) == set(oa)


def test_key_names_match_the_released_conventions():
    assert W.openai_key_to_hf("encoder.blocks.0.attn.query.weight") == "encoder.layers.0.self_attn.q_proj.weight"
    assert W.openai_key_to_hf("encoder.blocks.3.attn.key.weight") == "encoder.layers.3.self_attn.k_proj.weight"
    assert W.openai_key_to_hf("encoder.blocks.1.mlp.2.bias") == "encoder.layers.1.fc2.bias"
    assert W.openai_key_to_hf("encoder.blocks.1.mlp_ln.weight") == "encoder.layers.1.final_layer_norm.weight"
    assert W.openai_key_to_hf("encoder.ln_post.bias") == "encoder.layer_norm.bias"
    assert W.openai_key_to_hf("encoder.positional_embedding") == "encoder.embed_positions.weight"
    assert W.openai_key_to_hf("decoder.blocks.0.cross_attn.value.bias") == "decoder.layers.0.encoder_attn.v_proj.bias"
    assert W.openai_key_to_hf("decoder.blocks.0.cross_attn_ln.weight") == \
        "decoder.layers.0.encoder_attn_layer_norm.weight"
    assert W.hf_key_to_openai("model.decoder.embed_tokens.weight") == "decoder.token_embedding.weight"
    # k_proj has no bias in either format: no key maps to one
    oa = W.hf_to_openai(small_hf_state_dict())
    assert not any(k.endswith("attn.key.bias") for k in oa)
    with pytest.raises(CheckpointError, match="no counterpart"):
        W.openai_to_hf({"encoder.blocks.0.attn.rotary.weight": torch.zeros(3)})


def test_sinusoids_are_whisper_positions():
    s = W.sinusoids(1500, 384)
    assert s.shape == (1500, 384)
    assert torch.equal(s[0, :192], torch.zeros(192)) and torch.equal(s[0, 192:], torch.ones(192))
    # channel 0 has timescale 1: sin(t)
    assert torch.allclose(s[:, 0], torch.sin(torch.arange(1500.0)), atol=1e-4)


# ---- loading both formats -------------------------------------------------------------------------------------------
def test_both_formats_load_the_same_encoder_and_match_an_independent_openai_forward(tmp_path):
    hf = small_hf_state_dict(seed=3)
    write_small_hf(str(tmp_path / "hf"), hf)
    write_small_openai(str(tmp_path / "oa" / "tiny.pt"), hf)
    a = W.load_encoder(str(tmp_path / "hf"))
    b = W.load_encoder(str(tmp_path / "oa" / "tiny.pt"))
    assert W.detect_format(str(tmp_path / "oa" / "tiny.pt")) == "openai"
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    mel = torch.randn(2, 80, 3000, generator=torch.Generator().manual_seed(1))
    ya = a(mel, final_norm=True)
    yb = b(mel, final_norm=False)
    assert ya.shape == (2, 1500, 5, 64)
    assert torch.equal(ya[:, :, :4], yb[:, :, :4])
    # the fifth state differs exactly by the final LayerNorm
    enc = a.encoder
    assert torch.allclose(ya[:, :, 4], enc.layer_norm(yb[:, :, 4]), atol=1e-5)
    assert not torch.allclose(ya[:, :, 4], yb[:, :, 4], atol=1e-3)
    # semantics of the mapping: an OpenAI-style forward from the OpenAI keys gives the same states
    ref = openai_reference_states(W.hf_to_openai(hf), n_head=2, mel=mel)
    assert torch.allclose(yb, ref, atol=1e-4, rtol=1e-4), (yb - ref).abs().max()


def test_pytorch_model_bin_and_unprefixed_keys(tmp_path):
    hf = small_hf_state_dict(seed=4)
    write_small_hf(str(tmp_path / "bin"), hf, prefix="model.", fmt="bin")
    write_small_hf(str(tmp_path / "plain"), hf, prefix="")
    a = W.load_hf_encoder(str(tmp_path / "bin"))
    b = W.load_hf_encoder(str(tmp_path / "plain" / "model.safetensors"))
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_missing_and_unexpected_encoder_keys_are_reported(tmp_path):
    hf = small_hf_state_dict(seed=5)
    bad = dict(hf)
    bad.pop("encoder.layers.2.fc1.weight")
    bad["encoder.layers.2.extra.weight"] = torch.zeros(2)
    write_small_hf(str(tmp_path / "bad"), bad)
    with pytest.raises(CheckpointError) as err:
        W.load_hf_encoder(str(tmp_path / "bad"))
    assert "layers.2.fc1.weight" in str(err.value) and "layers.2.extra.weight" in str(err.value)
    # OpenAI: a missing block key is reported; a missing positional buffer is rebuilt (it is a fixed sinusoid)
    write_small_openai(str(tmp_path / "oa1" / "tiny.pt"), hf, drop=("encoder.blocks.1.attn.out.weight",))
    with pytest.raises(CheckpointError, match="layers.1.self_attn.out_proj.weight"):
        W.load_openai_encoder(str(tmp_path / "oa1" / "tiny.pt"))
    oa = W.hf_to_openai(hf)
    oa["encoder.blocks.0.attn.key.bias"] = torch.zeros(64)  # k_proj has no bias: such a file is malformed
    torch.save({"dims": W.dims_from_hf_config(SMALL), "model_state_dict": oa}, str(tmp_path / "kb.pt"))
    with pytest.raises(CheckpointError, match="unexpected: layers.0.self_attn.k_proj.bias"):
        W.load_openai_encoder(str(tmp_path / "kb.pt"))
    write_small_openai(str(tmp_path / "oa2" / "tiny.pt"), hf, drop=("encoder.positional_embedding",))
    enc = W.load_openai_encoder(str(tmp_path / "oa2" / "tiny.pt"))
    assert torch.equal(enc.encoder.embed_positions.weight, W.sinusoids(1500, 64))
    # a file that is not a whisper checkpoint is refused
    torch.save({"weights": torch.zeros(3)}, str(tmp_path / "junk.pt"))
    with pytest.raises(CheckpointError):
        W.load_openai_encoder(str(tmp_path / "junk.pt"))


def test_latentsync_fixture_whisper_loads_strictly(tmp_path):
    from safetensors.torch import load_file

    t = load_file(shared_path("fixtures", "latentsync", "parity_small.safetensors"))
    with open(shared_path("fixtures", "latentsync", "configs.json")) as fh:
        dims = json.load(fh)["whisper_dims"]
    oa = {k[len("whisper."):]: v for k, v in t.items() if k.startswith("whisper.")}
    # the OpenAI key names our mapping writes are exactly the released ones
    ours = W.hf_to_openai({k: torch.zeros(1) for k in tw_whisper.hf_model_shapes() if k.startswith("encoder.")})
    assert set(ours) == {k for k in oa if k.startswith("encoder.")}
    # the table the released file stores: equal to ours up to float32 sin/exp rounding, which differs by an ulp
    # between CPU vector units (angles up to 1500 rad: ~1e-4)
    assert torch.allclose(oa["encoder.positional_embedding"], W.sinusoids(1500, 384), atol=1e-4, rtol=0)
    torch.save({"dims": dims, "model_state_dict": oa}, str(tmp_path / "tiny.pt"))
    enc = W.load_openai_encoder(str(tmp_path / "tiny.pt"))
    assert torch.equal(enc.encoder.layers[0].self_attn.q_proj.weight, oa["encoder.blocks.0.attn.query.weight"].float())


# ---- full size ------------------------------------------------------------------------------------------------------
def test_full_size_shapes_match_the_manifest():
    with open(shared_path("fixtures", "musetalk", "manifest_whisper_tiny.json")) as fh:
        manifest = json.load(fh)
    shapes = tw_whisper.hf_model_shapes()
    assert {k: list(v) for k, v in shapes.items()} == manifest["state_dict"]
    with torch.device("meta"):
        enc = W.build_encoder()
    enc_shapes = {k: list(v.shape) for k, v in enc.state_dict().items()}
    assert len(enc_shapes) == manifest["encoder_state_dict_keys"] == 67
    assert sum(p.numel() for p in enc.parameters()) == manifest["encoder_parameters"]
    assert enc_shapes == {k[len("encoder."):]: v for k, v in manifest["state_dict"].items() if k.startswith("encoder.")}
    assert W.dims_from_hf_config(manifest["config"]) == W.WHISPER_TINY_DIMS
    assert W.hf_config_from_dims(W.WHISPER_TINY_DIMS)["encoder_ffn_dim"] == manifest["config"]["encoder_ffn_dim"]


def test_write_test_weights_full_size(tmp_path):
    from safetensors import safe_open

    files = tw_whisper.write_test_weights(str(tmp_path), seed=0)
    rel = sorted(os.path.relpath(f, tmp_path) for f in files)
    assert rel == sorted([os.path.join("musetalk", "whisper", "config.json"),
                          os.path.join("musetalk", "whisper", "model.safetensors"),
                          os.path.join("latentsync", "whisper", "tiny.pt")])
    shapes = tw_whisper.hf_model_shapes()
    with safe_open(str(tmp_path / "musetalk" / "whisper" / "model.safetensors"), "pt") as f:
        assert {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()} == {"model." + k: v for k, v in shapes.items()}
    obj = torch.load(str(tmp_path / "latentsync" / "whisper" / "tiny.pt"), weights_only=True)
    assert obj["dims"] == W.WHISPER_TINY_DIMS
    assert len(obj["model_state_dict"]) == len(shapes)
    a = W.load_encoder(str(tmp_path / "musetalk" / "whisper"))
    b = W.load_encoder(str(tmp_path / "latentsync" / "whisper" / "tiny.pt"))
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert a.d_model == 384 and a.num_frames_in == 3000


# ---- registry -------------------------------------------------------------------------------------------------------
def test_load_whisper_through_the_registry(tmp_path, monkeypatch):
    from musetalk_enhanced.pipeline import audio_features as AF

    monkeypatch.setattr(registry, "_resolver", None)
    monkeypatch.setenv(registry.ENV_MODELS_DIR, str(tmp_path))
    for key in ("whisper_tiny.config", "whisper_tiny.weights", "latentsync.whisper_tiny"):
        assert key in registry.REGISTRY
    # nothing present, downloads off: one error naming every file of the layout
    with pytest.raises(registry.MissingWeightsError) as err:
        AF.load_whisper("musetalk", auto_download=False)
    assert "config.json" in str(err.value) and "model.safetensors" in str(err.value)
    with pytest.raises(registry.MissingWeightsError, match="tiny.pt"):
        AF.load_whisper("latentsync", auto_download=False)
    # only LatentSync's tiny.pt present: the MuseTalk layout uses it too (same network, same weights)
    hf = small_hf_state_dict(seed=6)
    write_small_openai(str(tmp_path / "latentsync" / "whisper" / "tiny.pt"), hf)
    enc = AF.load_whisper("musetalk", auto_download=False)
    assert enc.source.endswith("tiny.pt")
    # both present: each layout prefers its own format
    write_small_hf(str(tmp_path / "musetalk" / "whisper"), hf)
    assert AF.load_whisper("musetalk", auto_download=False).source.endswith("model.safetensors")
    assert AF.load_whisper("latentsync", auto_download=False).source.endswith("tiny.pt")
