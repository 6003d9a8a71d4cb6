"""Random sd-vae-ft-mse weights in the released layout: ``<root>/musetalk/sd-vae/{config.json,
diffusion_pytorch_model.safetensors}`` (+ the test-weights marker), optionally with the old attention key names."""
from __future__ import annotations

import json
import os
from typing import List, Mapping, Optional

import torch

from musetalk_enhanced.models.registry import TEST_WEIGHTS_MARKER
from musetalk_enhanced.models.vae import (CONFIG_RELPATH, OLD_ATTENTION_NAMES, SD_VAE_FT_MSE_CONFIG, WEIGHTS_RELPATH,
                                          build_vae)

from . import random_state_dict


def test_weight_files(models_root: str) -> List[str]:
    """The files :func:`write_test_weights` writes (tests/make_test_weights.py skips the model when all exist)."""
    folder = os.path.join(models_root, "musetalk")
    return [os.path.join(folder, WEIGHTS_RELPATH), os.path.join(folder, CONFIG_RELPATH)]


def write_test_weights(models_root: str, seed: int = 0, config: Optional[Mapping[str, object]] = None,
                       legacy_names: bool = False) -> List[str]:
    """Random weights in the released layout: ``<root>/musetalk/sd-vae/{config.json,
    diffusion_pytorch_model.safetensors}`` (fp16 values, full size unless ``config`` is given) plus the
    ``RANDOM_TEST_WEIGHTS.txt`` marker. ``legacy_names`` writes the old ``query/key/value/proj_attn`` names."""
    from safetensors.torch import save_file

    cfg = dict(config if config is not None else SD_VAE_FT_MSE_CONFIG)
    folder = os.path.join(models_root, "musetalk", os.path.dirname(WEIGHTS_RELPATH))
    os.makedirs(folder, exist_ok=True)
    template = build_vae(cfg, device="meta").state_dict()
    sd = random_state_dict(template, seed=seed, dtype=torch.float16)
    if legacy_names:
        back = {v: k for k, v in OLD_ATTENTION_NAMES.items()}
        renamed = {}
        for k, v in sd.items():
            for new, old in back.items():
                if ".attentions." in k and f".{new}." in k:
                    k = k.replace(f".{new}.", f".{old}.")
                    break
            renamed[k] = v
        sd = renamed
    paths = [os.path.join(folder, os.path.basename(WEIGHTS_RELPATH)), os.path.join(folder, "config.json"),
             os.path.join(folder, TEST_WEIGHTS_MARKER)]
    save_file({k: v.contiguous() for k, v in sd.items()}, paths[0], metadata={"format": "pt"})
    with open(paths[1], "w", encoding="utf-8") as fh:
        json.dump(cfg, fh, indent=2)
    with open(paths[2], "w", encoding="utf-8") as fh:
        fh.write(f"Random sd-vae test weights (seed {seed}); NOT the released model.\n")
    return paths
