"""Random MuseTalk v1.5 UNet weights in the released layout: ``<root>/musetalk/musetalkV15/{unet.pth,
musetalk.json}`` (+ the test-weights marker); full size by default, a smaller ``config`` for tests."""
from __future__ import annotations

import json
import os
from typing import List, Mapping, Optional

import torch

from musetalk_enhanced.models.musetalk_unet import CONFIG_RELPATH, MUSETALK_V15_CONFIG, UNET_RELPATH, build_unet
from musetalk_enhanced.models.registry import TEST_WEIGHTS_MARKER

from . import random_state_dict


def test_weight_files(models_root: str) -> List[str]:
    """The files :func:`write_test_weights` writes (tests/make_test_weights.py skips the model when all exist)."""
    return [os.path.join(models_root, "musetalk", UNET_RELPATH), os.path.join(models_root, "musetalk", CONFIG_RELPATH)]


def write_test_weights(models_root: str, seed: int = 0, config: Optional[Mapping[str, object]] = None) -> List[str]:
    """Write random weights in the released layout: ``<root>/musetalk/musetalkV15/{unet.pth, musetalk.json}``.

    Full size by default (686 keys, fp16 values, ~1.7 GB); ``config`` builds a smaller variant (tests). A
    ``RANDOM_TEST_WEIGHTS.txt`` marker is written next to them (models.registry.is_test_weights).
    """
    cfg = dict(config if config is not None else MUSETALK_V15_CONFIG)
    folder = os.path.join(models_root, "musetalk", os.path.dirname(UNET_RELPATH))
    os.makedirs(folder, exist_ok=True)
    template = build_unet(cfg, device="meta").state_dict()
    sd = random_state_dict(template, seed=seed, dtype=torch.float16)
    # The last conv predicts a latent: a smaller init keeps random outputs in the VAE's usual latent range.
    for k in ("conv_out.weight",):
        if k in sd:
            sd[k] = (sd[k].float() * 0.2).half()
    paths = [os.path.join(models_root, "musetalk", UNET_RELPATH), os.path.join(models_root, "musetalk", CONFIG_RELPATH),
             os.path.join(folder, TEST_WEIGHTS_MARKER)]
    torch.save(sd, paths[0])
    del sd
    with open(paths[1], "w", encoding="utf-8") as fh:
        json.dump(cfg, fh, indent=2)
    with open(paths[2], "w", encoding="utf-8") as fh:
        fh.write(f"Random MuseTalk UNet test weights (seed {seed}); NOT the released model. They produce noise.\n")
    return paths
