"""The whisper-tiny audio encoder, loadable from both released formats into one transformers module.

MuseTalk v1.5 ships openai/whisper-tiny in the Hugging Face layout (``config.json`` + ``model.safetensors`` or
``pytorch_model.bin``, keys prefixed ``model.``; MuseTalk). LatentSync ships OpenAI's own ``tiny.pt``
(``{"dims": {...}, "model_state_dict": {...}}``, keys like ``encoder.blocks.0.attn.query.weight``; LatentSync
docs). Both hold the same network; we build transformers' ``WhisperEncoder`` once and convert OpenAI keys to its names.

Only the encoder is used (MuseTalk, LatentSync audio2feature): decoder keys in a file are ignored, encoder keys
must match exactly (:func:`..checkpoint.load_strict` lists every missing / unexpected / wrongly shaped key).

:class:`WhisperStates` returns the five hidden states both lip-sync models consume, ``[B, 1500, 5, 384]``:
the embedding (conv stem + positions), the outputs of layers 1-3, and either ``LayerNorm(layer 4)`` (MuseTalk, what
``hidden_states`` of transformers holds) or the raw output of layer 4 (LatentSync, whose modified whisper does not
apply ``ln_post``).
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from .checkpoint import CheckpointError, load_strict, read_state_dict

# openai/whisper-tiny as transformers describes it (its config.json on the Hugging Face hub).
WHISPER_TINY_CONFIG: Dict = {
    "activation_dropout": 0.0, "activation_function": "gelu", "attention_dropout": 0.0, "bos_token_id": 50257,
    "d_model": 384, "decoder_attention_heads": 6, "decoder_ffn_dim": 1536, "decoder_layerdrop": 0.0,
    "decoder_layers": 4, "decoder_start_token_id": 50258, "dropout": 0.0, "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536, "encoder_layerdrop": 0.0, "encoder_layers": 4, "eos_token_id": 50257, "init_std": 0.02,
    "is_encoder_decoder": True, "max_source_positions": 1500, "max_target_positions": 448, "num_hidden_layers": 4,
    "num_mel_bins": 80, "pad_token_id": 50257, "scale_embedding": False, "vocab_size": 51865,
}

# The same network in OpenAI's "dims" (LatentSync checkpoints/whisper/tiny.pt: n_audio_state 384, 6 heads, 4 layers).
WHISPER_TINY_DIMS: Dict[str, int] = {
    "n_mels": 80, "n_vocab": 51865, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
    "n_audio_layer": 4, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4,
}

# Config fields the encoder depends on (everything else in a config.json is irrelevant here).
_ENCODER_FIELDS = ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins",
                   "max_source_positions", "activation_function", "scale_embedding")

NUM_STATES = 5  # embedding + 4 layers (MuseTalk audio_processor.py, LatentSync audio2feature.py)


# ---- configs --------------------------------------------------------------------------------------------------------
def hf_config_from_dims(dims: Mapping[str, int]) -> Dict:
    """transformers ``WhisperConfig`` fields for OpenAI ``dims`` (encoder and decoder sizes)."""
    cfg = dict(WHISPER_TINY_CONFIG)
    cfg.update({
        "num_mel_bins": int(dims["n_mels"]), "max_source_positions": int(dims["n_audio_ctx"]),
        "d_model": int(dims["n_audio_state"]), "encoder_attention_heads": int(dims["n_audio_head"]),
        "encoder_layers": int(dims["n_audio_layer"]), "encoder_ffn_dim": 4 * int(dims["n_audio_state"]),
        "num_hidden_layers": int(dims["n_audio_layer"]),
        "vocab_size": int(dims.get("n_vocab", cfg["vocab_size"])),
        "max_target_positions": int(dims.get("n_text_ctx", cfg["max_target_positions"])),
        "decoder_attention_heads": int(dims.get("n_text_head", cfg["decoder_attention_heads"])),
        "decoder_layers": int(dims.get("n_text_layer", cfg["decoder_layers"])),
        "decoder_ffn_dim": 4 * int(dims.get("n_text_state", dims["n_audio_state"])),
    })
    return cfg


def dims_from_hf_config(cfg: Mapping) -> Dict[str, int]:
    """OpenAI ``dims`` for a transformers whisper config (OpenAI's MLP is always 4x wide)."""
    d = int(cfg["d_model"])
    for name in ("encoder_ffn_dim", "decoder_ffn_dim"):
        if int(cfg.get(name, 4 * d)) != 4 * d:
            raise ValueError(f"whisper config: {name}={cfg[name]} cannot be written in OpenAI format (needs 4*d_model)")
    return {
        "n_mels": int(cfg["num_mel_bins"]), "n_vocab": int(cfg["vocab_size"]),
        "n_audio_ctx": int(cfg["max_source_positions"]), "n_audio_state": d,
        "n_audio_head": int(cfg["encoder_attention_heads"]), "n_audio_layer": int(cfg["encoder_layers"]),
        "n_text_ctx": int(cfg["max_target_positions"]), "n_text_state": d,
        "n_text_head": int(cfg["decoder_attention_heads"]), "n_text_layer": int(cfg["decoder_layers"]),
    }


def encoder_config(cfg: Optional[Mapping] = None):
    """A transformers ``WhisperConfig`` holding the encoder fields of ``cfg`` (default: whisper-tiny)."""
    from transformers import WhisperConfig

    base = dict(WHISPER_TINY_CONFIG)
    if cfg:
        base.update({k: cfg[k] for k in _ENCODER_FIELDS if k in cfg})
    base["num_hidden_layers"] = base["encoder_layers"]
    return WhisperConfig(**base)


# ---- OpenAI <-> Hugging Face key names -------------------------------------------------------------------------------
# (OpenAI regex, HF template). Attention: query/key/value/out <-> q_proj/k_proj/v_proj/out_proj (key and k_proj have no
# bias in either format); block norms attn_ln/cross_attn_ln/mlp_ln <-> self_attn_layer_norm/encoder_attn_layer_norm/
# final_layer_norm; MLP mlp.0/mlp.2 <-> fc1/fc2; final norms ln_post/ln <-> layer_norm; OpenAI's encoder
# positional_embedding (a sinusoid buffer) <-> embed_positions.weight.
_ATTN = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "out": "out_proj"}
_BLOCK = {"attn_ln": "self_attn_layer_norm", "cross_attn_ln": "encoder_attn_layer_norm", "mlp_ln": "final_layer_norm",
          "mlp.0": "fc1", "mlp.2": "fc2"}
_TOP = {
    "encoder.positional_embedding": "encoder.embed_positions.weight",
    "encoder.ln_post.weight": "encoder.layer_norm.weight", "encoder.ln_post.bias": "encoder.layer_norm.bias",
    "decoder.token_embedding.weight": "decoder.embed_tokens.weight",
    "decoder.positional_embedding": "decoder.embed_positions.weight",
    "decoder.ln.weight": "decoder.layer_norm.weight", "decoder.ln.bias": "decoder.layer_norm.bias",
}
_TOP_INV = {v: k for k, v in _TOP.items()}
_OA_BLOCK_RE = re.compile(r"^(encoder|decoder)\.blocks\.(\d+)\.(.+)$")
_HF_LAYER_RE = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)$")
_OA_INNER = {}
for _a, _h in (("attn", "self_attn"), ("cross_attn", "encoder_attn")):
    for _o, _p in _ATTN.items():
        for _s in ("weight", "bias"):
            _OA_INNER[f"{_a}.{_o}.{_s}"] = f"{_h}.{_p}.{_s}"
for _o, _p in _BLOCK.items():
    for _s in ("weight", "bias"):
        _OA_INNER[f"{_o}.{_s}"] = f"{_p}.{_s}"
_HF_INNER = {v: k for k, v in _OA_INNER.items()}


def openai_key_to_hf(key: str) -> Optional[str]:
    """HF name of an OpenAI whisper key (``encoder.conv1.weight`` stays), or None for keys HF has no slot for."""
    if key in _TOP:
        return _TOP[key]
    if re.match(r"^encoder\.conv[12]\.(weight|bias)$", key):
        return key
    m = _OA_BLOCK_RE.match(key)
    if m and m.group(3) in _OA_INNER:
        return f"{m.group(1)}.layers.{m.group(2)}.{_OA_INNER[m.group(3)]}"
    return None


def hf_key_to_openai(key: str) -> Optional[str]:
    """OpenAI name of an HF whisper key (``model.`` prefix allowed), or None (e.g. the tied ``proj_out``)."""
    if key.startswith("model."):
        key = key[len("model."):]
    if key in _TOP_INV:
        return _TOP_INV[key]
    if re.match(r"^encoder\.conv[12]\.(weight|bias)$", key):
        return key
    m = _HF_LAYER_RE.match(key)
    if m and m.group(3) in _HF_INNER:
        return f"{m.group(1)}.blocks.{m.group(2)}.{_HF_INNER[m.group(3)]}"
    return None


def _convert(sd: Mapping[str, torch.Tensor], fn, direction: str) -> Dict[str, torch.Tensor]:
    out, unknown = {}, []
    for k, v in sd.items():
        nk = fn(k)
        if nk is None:
            unknown.append(k)
        else:
            out[nk] = v
    if unknown:
        raise CheckpointError(f"whisper {direction}: {len(unknown)} key(s) have no counterpart: "
                              + ", ".join(unknown[:8]))
    return out


def openai_to_hf(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename a whole OpenAI whisper state dict to transformers ``WhisperModel`` names (no ``model.`` prefix)."""
    return _convert(sd, openai_key_to_hf, "OpenAI -> HF")


def hf_to_openai(sd: Mapping[str, torch.Tensor], drop_tied: bool = True) -> Dict[str, torch.Tensor]:
    """Rename a transformers whisper state dict (``model.`` prefix optional) to OpenAI names.

    ``proj_out.weight`` (tied to the token embedding in whisper) is dropped when ``drop_tied``.
    """
    if drop_tied:
        sd = {k: v for k, v in sd.items() if k != "proj_out.weight"}
    return _convert(sd, hf_key_to_openai, "HF -> OpenAI")


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's audio positional table ``[length, channels]``: sines in the first half, cosines in the second, with
    timescales log-spaced from 1 to ``max_timescale``. OpenAI stores it as a buffer; HF as ``embed_positions``."""
    if channels % 2:
        raise ValueError("sinusoids: channels must be even")
    half = channels // 2
    step = math.log(max_timescale) / (half - 1)
    inv = torch.exp(-step * torch.arange(half, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


# ---- the module -----------------------------------------------------------------------------------------------------
def build_encoder(cfg: Optional[Mapping] = None) -> nn.Module:
    """transformers ``WhisperEncoder`` for ``cfg`` (HF config fields; default whisper-tiny), eval mode, no grad."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    enc = WhisperEncoder(encoder_config(cfg))
    enc.eval()
    enc.requires_grad_(False)
    return enc


class WhisperStates(nn.Module):
    """Five encoder hidden states per mel window: ``forward(mel[B, 80, 3000], final_norm) -> [B, 1500, 5, d]``.

    ``final_norm=True``: the fifth state is ``LayerNorm(layer 4)`` (transformers ``hidden_states``, MuseTalk,
    MuseTalk get_audio_feature). ``final_norm=False``: the raw output of layer 4 (LatentSync, audio2feature.py).
    The states are captured with hooks around transformers' own forward, so the numerics are exactly those of
    ``WhisperEncoder`` whatever its version.
    """

    def __init__(self, encoder: nn.Module, source: str = ""):
        super().__init__()
        self.encoder = encoder
        self.source = source

    @property
    def d_model(self) -> int:
        return int(self.encoder.config.d_model)

    @property
    def num_frames_in(self) -> int:
        """Mel frames per window (3000 for whisper: 30 s at 100 Hz)."""
        return int(self.encoder.config.max_source_positions) * 2

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.encoder.conv1.weight.device

    def forward(self, mel: torch.Tensor, final_norm: bool = True) -> torch.Tensor:
        layers = self.encoder.layers
        if len(layers) + 1 != NUM_STATES:
            raise ValueError(f"whisper encoder has {len(layers)} layers; the lip-sync models need 4 (whisper-tiny)")
        captured: List[torch.Tensor] = []

        def pre_hook(_module, args, kwargs):
            captured.append(args[0] if args else kwargs["hidden_states"])

        def post_hook(_module, _args, output):
            captured.append(output[0] if isinstance(output, (tuple, list)) else output)

        handles = [layers[0].register_forward_pre_hook(pre_hook, with_kwargs=True)]
        handles += [layer.register_forward_hook(post_hook) for layer in layers]
        try:
            with torch.no_grad():
                out = self.encoder(mel.to(device=self.device, dtype=self.dtype))
        finally:
            for h in handles:
                h.remove()
        states = captured[:NUM_STATES]
        if final_norm:
            states[-1] = out.last_hidden_state
        return torch.stack(states, dim=2)


# ---- reading the released files -------------------------------------------------------------------------------------
def _torch_load(path: str):
    if not os.path.isfile(path):
        raise CheckpointError(f"weight file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read weight file {path} ({os.path.getsize(path)} bytes): "
                              f"{type(exc).__name__}: {exc}. Delete it and download it again.") from exc


def _encoder_part(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The encoder's own keys (``encoder.`` stripped) of an HF-named state dict; decoder / ``proj_out`` ignored.

    A bare encoder state dict (``conv1.weight``, ``layers.0...``) is accepted as is."""
    sd = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in sd.items()}
    if not any(k.startswith("encoder.") for k in sd) and "conv1.weight" in sd:
        return dict(sd)
    return {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}


def _load_encoder(cfg: Mapping, enc_sd: Mapping[str, torch.Tensor], what: str, source: str) -> WhisperStates:
    enc = build_encoder(cfg)
    enc_sd = {k: v.float() if v.is_floating_point() else v for k, v in enc_sd.items()}
    load_strict(enc, enc_sd, what, source)
    return WhisperStates(enc, source)


def _hf_files(path: str) -> Tuple[Optional[str], str]:
    """(config.json or None, weights file) for an HF folder or a weights file inside one."""
    if os.path.isdir(path):
        for name in ("model.safetensors", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(path, name)):
                weights = os.path.join(path, name)
                break
        else:
            raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin (Hugging Face whisper layout)")
        folder = path
    else:
        weights, folder = path, os.path.dirname(path)
    cfg = os.path.join(folder, "config.json")
    return (cfg if os.path.isfile(cfg) else None), weights


def load_hf_encoder(path: str) -> WhisperStates:
    """Whisper encoder from the Hugging Face layout: a folder (``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin``) or one of those weight files (its ``config.json`` beside it, else whisper-tiny's)."""
    cfg_path, weights = _hf_files(path)
    cfg = dict(WHISPER_TINY_CONFIG)
    if cfg_path:
        try:
            with open(cfg_path, "r", encoding="utf-8") as fh:
                cfg.update(json.load(fh))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read whisper config {cfg_path}: {exc}") from exc
    sd = read_state_dict(weights)
    return _load_encoder(cfg, _encoder_part(sd), "whisper encoder (Hugging Face layout)", weights)


def load_openai_encoder(path: str) -> WhisperStates:
    """Whisper encoder from OpenAI's checkpoint format (``tiny.pt``: ``{"dims", "model_state_dict"}``).

    A missing ``encoder.positional_embedding`` (it is a deterministic buffer in OpenAI's code) is rebuilt with
    :func:`sinusoids`; every other encoder key is required.
    """
    obj = _torch_load(path)
    if not isinstance(obj, Mapping) or "model_state_dict" not in obj:
        raise CheckpointError(f"{path} is not an OpenAI whisper checkpoint (expected a dict with 'dims' and "
                              f"'model_state_dict'; found keys {list(obj)[:6] if isinstance(obj, Mapping) else obj})")
    dims = dict(obj.get("dims") or WHISPER_TINY_DIMS)
    cfg = hf_config_from_dims(dims)
    oa = {k: v for k, v in obj["model_state_dict"].items() if k.startswith("encoder.")}
    if "encoder.positional_embedding" not in oa:
        oa["encoder.positional_embedding"] = sinusoids(cfg["max_source_positions"], cfg["d_model"])
    hf = {}
    for k, v in oa.items():
        nk = openai_key_to_hf(k)
        hf[nk if nk is not None else k] = v  # an unknown key stays as is, so load_strict lists it as unexpected
    return _load_encoder(cfg, _encoder_part(hf), "whisper encoder (OpenAI format)", path)


def detect_format(path: str) -> str:
    """``"hf"`` or ``"openai"`` for a whisper file or folder (by layout, then by content)."""
    if os.path.isdir(path) or path.endswith((".safetensors", ".bin")):
        return "hf"
    obj = _torch_load(path)
    return "openai" if isinstance(obj, Mapping) and "model_state_dict" in obj else "hf"


def load_encoder(path: str) -> WhisperStates:
    """Whisper encoder from either released format (recognised by layout and keys)."""
    return load_openai_encoder(path) if detect_format(path) == "openai" else load_hf_encoder(path)
