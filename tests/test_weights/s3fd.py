"""Random S3FD face-detector weights at ``<root>/musetalk/s3fd/s3fd-619a316812.pth``: the released keys and shapes,
fp16 values (He-initialised kernels, zero biases, the L2-norm scales at 8)."""
from __future__ import annotations

import os
from typing import List

import numpy as np
import torch

from musetalk_enhanced.models.registry import REGISTRY
from musetalk_enhanced.models.s3fd import REGISTRY_KEY, S3FD


def write_test_weights(models_root: str, seed: int = 0) -> List[str]:
    """Random fp16 weights with the released keys/shapes at ``<root>/musetalk/s3fd/s3fd-619a316812.pth``."""
    wf = REGISTRY[REGISTRY_KEY]
    dest = os.path.join(models_root, wf.folder, wf.relpath)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = S3FD()
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("_norm.weight"):
            sd[k] = torch.full(v.shape, 8.0, dtype=torch.float16)
        elif k.endswith(".bias"):
            sd[k] = torch.zeros(v.shape, dtype=torch.float16)
        else:
            fan_in = int(np.prod(v.shape[1:]))
            sd[k] = (torch.randn(v.shape, generator=gen) * (2.0 / fan_in) ** 0.5).half()
    torch.save(sd, dest)
    return [dest]
