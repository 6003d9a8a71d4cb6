"""Random full-size whisper-tiny weights in both released layouts, with the same values in both:
``<root>/musetalk/whisper/{config.json, model.safetensors}`` (Hugging Face) and ``<root>/latentsync/whisper/tiny.pt``
(OpenAI)."""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from musetalk_enhanced.models.whisper import WHISPER_TINY_CONFIG, dims_from_hf_config, hf_to_openai, sinusoids


def random_whisper_state_dict(shapes: Mapping[str, Tuple[int, ...]], seed: int = 0,
                              dtype: torch.dtype = torch.float16) -> Dict[str, torch.Tensor]:
    """Random weights for ``{key: shape}``: matrices N(0,1)/sqrt(fan_in), norm scales 1+0.1 N, biases 0.05 N; the
    audio positional table is whisper's sinusoid (as in the released files)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in sorted(shapes):
        shape = tuple(shapes[k])
        if k.endswith("encoder.embed_positions.weight") or k == "encoder.positional_embedding":
            t = sinusoids(*shape)
        elif len(shape) >= 2:
            fan_in = int(torch.tensor(shape[1:]).prod())
            t = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        elif k.endswith("weight"):
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            t = 0.05 * torch.randn(shape, generator=g)
        out[k] = t.to(dtype)
    return out


def hf_model_shapes(cfg: Optional[Mapping] = None) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of transformers ``WhisperModel`` (encoder + decoder), built on the meta device."""
    from transformers import WhisperConfig, WhisperModel

    c = dict(WHISPER_TINY_CONFIG)
    if cfg:
        c.update(cfg)
    with torch.device("meta"):
        model = WhisperModel(WhisperConfig(**c))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def write_test_weights(models_root: str, seed: int = 0) -> List[str]:
    """Random full-size whisper-tiny in both released layouts (same values in both):

    * ``<root>/musetalk/whisper/config.json`` + ``model.safetensors`` (HF, ``model.`` prefixed keys, fp16),
    * ``<root>/latentsync/whisper/tiny.pt`` (OpenAI ``{"dims", "model_state_dict"}``, fp16; positional table fp32).
    """
    from safetensors.torch import save_file

    cfg = dict(WHISPER_TINY_CONFIG)
    sd = random_whisper_state_dict(hf_model_shapes(cfg), seed)
    written = []
    hf_dir = os.path.join(models_root, "musetalk", "whisper")
    os.makedirs(hf_dir, exist_ok=True)
    config_json = dict(cfg, architectures=["WhisperForConditionalGeneration"], model_type="whisper",
                       torch_dtype="float32")
    p = os.path.join(hf_dir, "config.json")
    with open(p, "w", encoding="utf-8") as fh:
        json.dump(config_json, fh, indent=2, sort_keys=True)
    written.append(p)
    p = os.path.join(hf_dir, "model.safetensors")
    save_file({"model." + k: v.contiguous() for k, v in sd.items()}, p, metadata={"format": "pt"})
    written.append(p)

    oa_dir = os.path.join(models_root, "latentsync", "whisper")
    os.makedirs(oa_dir, exist_ok=True)
    oa = hf_to_openai(sd)
    oa["encoder.positional_embedding"] = oa["encoder.positional_embedding"].float()
    p = os.path.join(oa_dir, "tiny.pt")
    torch.save({"dims": dims_from_hf_config(cfg), "model_state_dict": oa}, p)
    written.append(p)
    return written
