"""Random FAN (2DFAN4) 68-point landmark weights at ``<root>/musetalk/fan/2DFAN4-11f355bf06.pth.tar``: the released
keys and shapes (no ``num_batches_tracked``, like the released file), fp16 values; fewer stacks for fast tests."""
from __future__ import annotations

import os
from typing import List

import numpy as np
import torch

from musetalk_enhanced.models.landmarks68 import FAN, REGISTRY_KEY
from musetalk_enhanced.models.registry import REGISTRY


def random_state_dict(num_modules: int = 4, seed: int = 0, dtype: torch.dtype = torch.float16) -> dict:
    """Random weights with the released keys/shapes (no ``num_batches_tracked``, like the released file)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = FAN(num_modules)
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var") or (k.endswith(".weight") and v.dim() == 1):
            sd[k] = torch.ones(v.shape, dtype=dtype)
        elif k.endswith("running_mean") or k.endswith(".bias"):
            sd[k] = torch.zeros(v.shape, dtype=dtype)
        else:
            fan_in = int(np.prod(v.shape[1:]))
            sd[k] = (torch.randn(v.shape, generator=gen) * (1.0 / fan_in) ** 0.5).to(dtype)
    return sd


def write_test_weights(models_root: str, seed: int = 0, num_modules: int = 4) -> List[str]:
    """Random fp16 weights at ``<root>/musetalk/fan/2DFAN4-11f355bf06.pth.tar`` (``num_modules`` < 4 writes a
    smaller FAN with the same key scheme, for fast tests)."""
    wf = REGISTRY[REGISTRY_KEY]
    dest = os.path.join(models_root, wf.folder, wf.relpath)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    torch.save(random_state_dict(num_modules, seed), dest)
    return [dest]
