"""MTCNN weights at ``<root>/musetalk/mtcnn/{pnet,rnet,onet}.pt``: copies of the real files when the facenet-pytorch
wheel is installed (they are tiny), otherwise random weights with the released keys and shapes."""
from __future__ import annotations

import os
import shutil
from typing import List

import torch

from musetalk_enhanced.models import mtcnn
from musetalk_enhanced.models.registry import REGISTRY


def write_test_weights(models_root: str, seed: int = 0) -> List[str]:
    """Write ``<root>/musetalk/mtcnn/{pnet,rnet,onet}.pt``: the real files when the facenet-pytorch wheel is
    installed (they are tiny), otherwise random weights with the released keys and shapes."""
    real = mtcnn.wheel_weight_paths()   # looked up at call time (tests may patch it)
    gen = torch.Generator().manual_seed(seed)
    written = []
    for name, net in mtcnn.build_networks().items():
        wf = REGISTRY[mtcnn.REGISTRY_KEYS[name]]
        dest = os.path.join(models_root, wf.folder, wf.relpath)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if real:
            shutil.copyfile(real[name], dest)
        else:
            sd = {k: (torch.randn(v.shape, generator=gen) * 0.1) for k, v in net.state_dict().items()}
            torch.save(sd, dest)
        written.append(dest)
    return written
