"""Random LatentSync 1.5 / 1.6 UNet3D weights in the released wrapping ``{"state_dict": ..., "global_step": 0}`` at
``<root>/latentsync/{1.5,1.6}/latentsync_unet.pt`` (+ the test-weights marker), and a stand-in
``<root>/latentsync/mask.png``; full size by default (~2.5 GB each), a smaller ``config`` for tests."""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Optional

import torch

from musetalk_enhanced.models.latentsync_blocks import sinusoid_table
from musetalk_enhanced.models.latentsync_unet3d import REGISTRY_KEYS, VERSIONS, build_unet, normalize_version
from musetalk_enhanced.models.registry import REGISTRY, TEST_WEIGHTS_MARKER

from . import random_state_dict as _random


def random_state_dict(config: Optional[Dict] = None, seed: int = 0, dtype: torch.dtype = torch.float16,
                      ) -> Dict[str, torch.Tensor]:
    """Random weights with the released keys and shapes (``test_weights.random_state_dict``: N(0, 1/fan_in)
    matrices, unit norm weights, zero biases); ``pos_encoder.pe`` keeps its exact sinusoid table (float32)."""
    sd = _random(build_unet(config, device="meta").state_dict(), seed=seed, dtype=dtype)
    for k, t in sd.items():
        if k.endswith("pos_encoder.pe"):
            sd[k] = sinusoid_table(t.shape[-1], t.shape[1])
    return sd


def write_test_weights(models_root: str, seed: int = 0, versions: Iterable[str] = VERSIONS,
                       config: Optional[Dict] = None) -> List[str]:
    """Write full-size random UNets (fp16 values, ~2.5 GB each) in the released wrapping ``{"state_dict": ...}`` to
    ``<models_root>/latentsync/1.5/latentsync_unet.pt`` and/or ``.../1.6/latentsync_unet.pt``.
    ``config`` overrides the architecture (tests use a small one)."""
    written = []
    for i, v in enumerate(normalize_version(x) for x in versions):
        wf = REGISTRY[REGISTRY_KEYS[v]]
        dest = os.path.join(models_root, wf.folder, wf.relpath)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        sd = random_state_dict(config, seed=seed + i)
        tmp = dest + ".part"
        torch.save({"state_dict": sd, "global_step": 0}, tmp)
        del sd
        os.replace(tmp, dest)
        with open(os.path.join(os.path.dirname(dest), TEST_WEIGHTS_MARKER), "w") as fh:
            fh.write(f"random LatentSync {v} UNet test weights (seed {seed + i}); not a real model\n")
        written.append(dest)
    mask = os.path.join(models_root, "latentsync", "mask.png")
    if not os.path.exists(mask):  # a stand-in of the released mask's geometry (LatentSync latentsync/utils/mask.png)
        import cv2
        import numpy as np

        img = np.full((256, 256, 3), 255, np.uint8)
        img[95:243, 9:248] = 0       # lower face regenerated
        img[95:129, 78:178] = 255    # nose notch kept
        cv2.imwrite(mask, img)
        written.append(mask)
    return written
