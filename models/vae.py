"""The Stable Diffusion VAE used by MuseTalk: ``stabilityai/sd-vae-ft-mse`` as a diffusers ``AutoencoderKL``
(TMElyralab/MuseTalk musetalk/models/vae.py).

Files, inside the ``musetalk`` model folder: ``sd-vae/config.json`` and ``sd-vae/diffusion_pytorch_model.safetensors``
(or the original ``.bin``). 248 state-dict keys, 83,653,863 parameters (fixtures ``manifest_vae_sd_ft_mse.json``).

The released file was written by diffusers 0.4.2 and may carry the OLD attention names of the VAE's mid-block
(``query``/``key``/``value``/``proj_attn``). ``from_pretrained`` renames them on load; this loader builds the model
itself (meta device + adopt the file's tensors), so it renames them too, and turns 1x1-conv shaped ``[C, C, 1, 1]``
attention weights into the ``[C, C]`` matrices of today's linear layers (as diffusers' from_pretrained does).

``scaling_factor`` is 0.18215: the diffusers default, which MuseTalk reads from ``vae.config.scaling_factor``.
"""
from __future__ import annotations

import json
import re
from typing import Dict, Mapping, Optional, Union

import torch

from .checkpoint import CheckpointError, load_strict, read_state_dict

SCALING_FACTOR = 0.18215

# The released sd-vae-ft-mse config.json (no scaling_factor key: the constructor default 0.18215 applies).
SD_VAE_FT_MSE_CONFIG: Dict[str, object] = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.4.2",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
}
NUM_PARAMETERS = 83_653_863
NUM_KEYS = 248

CONFIG_RELPATH = "sd-vae/config.json"
WEIGHTS_RELPATH = "sd-vae/diffusion_pytorch_model.safetensors"
WEIGHTS_BIN_RELPATH = "sd-vae/diffusion_pytorch_model.bin"

# diffusers<=0.13 names of the mid-block attention layers -> today's
OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_OLD_KEY = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")


def convert_legacy_keys(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename diffusers<=0.13 VAE attention keys to today's names; squeeze ``[C, C, 1, 1]`` attention weights.

    Keys already in the new layout pass through unchanged, so this is safe to apply to any diffusers VAE file.
    """
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = _OLD_KEY.match(key)
        if m:
            key = f"{m.group(1)}.{OLD_ATTENTION_NAMES[m.group(2)]}.{m.group(3)}"
        if (".attentions." in key and key.endswith(".weight") and value.ndim == 4
                and value.shape[2] == 1 and value.shape[3] == 1
                and any(f".{n}.weight" in key for n in ("to_q", "to_k", "to_v", "to_out.0"))):
            value = value[:, :, 0, 0]
        out[key] = value
    return out


def read_config(path: str) -> Dict[str, object]:
    try:
        with open(path, "r", encoding="utf-8") as fh:
            cfg = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the VAE config {path}: {type(exc).__name__}: {exc}") from exc
    if (not isinstance(cfg, dict) or cfg.get("_class_name", "AutoencoderKL") != "AutoencoderKL"
            or not ("latent_channels" in cfg or "_class_name" in cfg or "down_block_types" in cfg)):
        raise CheckpointError(f"{path} is not an AutoencoderKL config")
    return cfg


def build_vae(config: Optional[Mapping[str, object]] = None, device: Union[str, torch.device, None] = None):
    """``AutoencoderKL`` from a config dict (unknown and ``_`` keys ignored, like ``from_config``)."""
    from diffusers import AutoencoderKL

    import inspect

    params = set(inspect.signature(AutoencoderKL.__init__).parameters) - {"self"}
    kwargs = {k: v for k, v in dict(config if config is not None else SD_VAE_FT_MSE_CONFIG).items()
              if not str(k).startswith("_") and k in params}
    if device is None:
        return AutoencoderKL(**kwargs)
    with torch.device(device):
        return AutoencoderKL(**kwargs)


def load_vae(weights: Union[str, Mapping[str, torch.Tensor]],
             config: Union[str, Mapping[str, object], None] = None,
             dtype: Optional[torch.dtype] = None):
    """Load an ``AutoencoderKL`` strictly from ``diffusion_pytorch_model.safetensors``/``.bin`` (old or new key names).

    Raises :class:`CheckpointError` naming the file and every missing/unexpected/mis-shaped key. Eval mode, CPU.
    """
    if isinstance(config, str):
        config = read_config(config)
    source = weights if isinstance(weights, str) else None
    sd = read_state_dict(weights) if isinstance(weights, str) else dict(weights)
    sd = convert_legacy_keys(sd)
    model = build_vae(config, device="meta")
    load_strict(model, sd, "VAE (AutoencoderKL)", source, assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise CheckpointError(f"VAE: tensors not initialised by the file: {leftover[:5]}")
    if dtype is not None:
        model = torch.nn.Module.to(model, dtype=dtype)  # (diffusers warns needlessly on .to(dtype))
    return model.eval().requires_grad_(False)


def scaling_factor(vae) -> float:
    """``vae.config.scaling_factor`` (0.18215 for sd-vae-ft-mse)."""
    return float(getattr(getattr(vae, "config", None), "scaling_factor", None) or SCALING_FACTOR)
