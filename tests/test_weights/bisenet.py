"""Random BiSeNet face-parser weights: ``<root>/musetalk/face-parse-bisent/79999_iter.pth`` (+ the test-weights
marker), the released keys and shapes with fp16 values."""
from __future__ import annotations

import os
from typing import List

import torch

from musetalk_enhanced.models.bisenet import WEIGHTS_RELPATH, build_bisenet
from musetalk_enhanced.models.registry import TEST_WEIGHTS_MARKER

from . import random_state_dict


def test_weight_files(models_root: str) -> List[str]:
    """The files :func:`write_test_weights` writes (tests/make_test_weights.py skips the model when all exist)."""
    return [os.path.join(models_root, "musetalk", WEIGHTS_RELPATH)]


def write_test_weights(models_root: str, seed: int = 0) -> List[str]:
    """Random weights as ``<root>/musetalk/face-parse-bisent/79999_iter.pth`` (+ the test-weights marker)."""
    folder = os.path.join(models_root, "musetalk", os.path.dirname(WEIGHTS_RELPATH))
    os.makedirs(folder, exist_ok=True)
    sd = random_state_dict(build_bisenet(device="meta").state_dict(), seed=seed, dtype=torch.float16)
    paths = [os.path.join(folder, os.path.basename(WEIGHTS_RELPATH)), os.path.join(folder, TEST_WEIGHTS_MARKER)]
    torch.save(sd, paths[0])
    with open(paths[1], "w", encoding="utf-8") as fh:
        fh.write(f"Random BiSeNet test weights (seed {seed}); NOT the released model.\n")
    return paths
