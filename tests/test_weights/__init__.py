"""Random full-size "test weights" in the released file layouts, one module per model of the pack's ``models/``.

Each ``<name>.py`` here (named like ``models/<name>.py``) defines ``write_test_weights(models_root, seed=0, ...)``,
which writes that model's files under ``<models_root>/<folder>/<relpath>`` and returns their paths, and optionally
``test_weight_files(models_root)``, the files it will write (tests/make_test_weights.py finds the writers by scanning
this folder and skips a model whose files all exist). The values are random: they let the whole pipeline run end to
end without downloads, and produce noise. The MuseTalk UNet, VAE, BiSeNet and LatentSync UNet writers leave a
``RANDOM_TEST_WEIGHTS.txt`` marker (``models.registry.TEST_WEIGHTS_MARKER``) next to their files, so the pack can warn
when it loads them.

Put ``tests/`` on ``sys.path`` and ``import test_weights``: importing it imports the pack as the package
``musetalk_enhanced`` (bootstrap.py, the way ComfyUI and tests/conftest.py do) unless that is done already. :func:`random_state_dict`
is the initialisation the writers share.
"""
from __future__ import annotations

import os
import sys
from typing import Mapping

import torch



import runpy  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
runpy.run_path(os.path.join(ROOT, "bootstrap.py"))["import_pack"]()


def random_state_dict(template: Mapping[str, torch.Tensor], seed: int = 0,
                      dtype: torch.dtype = torch.float16) -> dict:
    """Random "sane" weights with exactly the keys/shapes of ``template`` (a state dict, typically from a model built
    on the ``meta`` device).

    Matrices and kernels get N(0, 1/fan_in) (variance-preserving, so activations stay O(1) and finite in fp16);
    1-D ``weight``/``running_var`` get ones, other 1-D tensors (biases, ``running_mean``) zeros; integer buffers
    (``num_batches_tracked``) zeros of their own dtype. One generator walks the keys in order: same seed, same file.
    """
    gen = torch.Generator().manual_seed(int(seed))
    out = {}
    for key, ref in template.items():
        shape = tuple(ref.shape)
        if not ref.dtype.is_floating_point:
            out[key] = torch.zeros(shape, dtype=ref.dtype)
            continue
        leaf = key.rsplit(".", 1)[-1]
        if len(shape) >= 2:
            fan_in = 1
            for n in shape[1:]:
                fan_in *= int(n)
            t = torch.randn(shape, generator=gen) * (1.0 / max(1, fan_in) ** 0.5)
        elif leaf in ("weight", "running_var", "gamma"):
            t = torch.ones(shape)
        else:
            t = torch.zeros(shape)
        out[key] = t.to(dtype)
    return out
