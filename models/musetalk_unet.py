"""MuseTalk v1.5 generator UNet: diffusers ``UNet2DConditionModel`` built from ``musetalk.json`` (MuseTalk unet.py).

The released files are ``musetalkV15/musetalk.json`` (the constructor config) and ``musetalkV15/unet.pth`` (a plain
state dict, 686 keys, 849,947,844 parameters, see fixtures ``manifest_unet_v15.json``). The original passes the whole
JSON to the constructor and diffusers drops the ``_``-prefixed keys; we drop them explicitly.
``attention_head_dim: 8`` is really the head count (8 heads of width 40/80/160/160). The network takes
``[B, 8, 32, 32]`` latents (masked + reference), timestep 0 and ``[B, 50, 384]`` audio tokens.

The model is built on the ``meta`` device and adopts the file's tensors (``assign=True``), so 3.4 GB of fp32 weights
exist once in memory while loading.
"""
from __future__ import annotations

import json
from typing import Dict, Mapping, Optional, Union

import torch

from .checkpoint import CheckpointError, load_strict, read_state_dict

# The released musetalkV15/musetalk.json (HF TMElyralab/MuseTalk; values consistent across every public copy).
MUSETALK_V15_CONFIG: Dict[str, object] = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
NUM_PARAMETERS_V15 = 849_947_844
NUM_KEYS_V15 = 686

# Layout of the released files inside the "musetalk" model folder (models/registry.py keys musetalk.unet[_config]).
UNET_RELPATH = "musetalkV15/unet.pth"
CONFIG_RELPATH = "musetalkV15/musetalk.json"


def constructor_config(config: Mapping[str, object]) -> Dict[str, object]:
    """The keyword arguments for ``UNet2DConditionModel``: the JSON minus its ``_``-prefixed metadata."""
    return {k: v for k, v in dict(config).items() if not str(k).startswith("_")}


def read_config(path: str) -> Dict[str, object]:
    try:
        with open(path, "r", encoding="utf-8") as fh:
            cfg = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the MuseTalk UNet config {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(cfg, dict) or "block_out_channels" not in cfg:
        raise CheckpointError(f"{path} is not a UNet2DConditionModel config (no 'block_out_channels')")
    return cfg


def build_unet(config: Optional[Mapping[str, object]] = None, device: Union[str, torch.device, None] = None):
    """``UNet2DConditionModel(**config)``; ``device="meta"`` builds it without allocating weights."""
    from diffusers import UNet2DConditionModel

    kwargs = constructor_config(config if config is not None else MUSETALK_V15_CONFIG)
    if device is None:
        return UNet2DConditionModel(**kwargs)
    with torch.device(device):
        return UNet2DConditionModel(**kwargs)


def load_unet(weights: Union[str, Mapping[str, torch.Tensor]],
              config: Union[str, Mapping[str, object], None] = None,
              dtype: Optional[torch.dtype] = None):
    """Load the MuseTalk UNet from ``unet.pth`` (plain state dict) or a ``.safetensors`` file, strictly.

    ``config`` is a path to ``musetalk.json`` or a dict (default: the released v1.5 config). A file whose keys or
    shapes differ raises :class:`CheckpointError` listing them. Returns the model in eval mode on the CPU, in the
    file's dtype unless ``dtype`` is given.
    """
    if isinstance(config, str):
        config = read_config(config)
    source = weights if isinstance(weights, str) else None
    sd = read_state_dict(weights) if isinstance(weights, str) else dict(weights)
    model = build_unet(config, device="meta")
    load_strict(model, sd, "MuseTalk UNet", source, assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:  # a non-persistent buffer that the file cannot provide
        raise CheckpointError(f"MuseTalk UNet: tensors not initialised by the file: {leftover[:5]}")
    if dtype is not None:
        model = torch.nn.Module.to(model, dtype=dtype)  # (diffusers warns needlessly on .to(dtype))
    return model.eval().requires_grad_(False)
