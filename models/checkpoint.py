"""Safe loading of released checkpoint files and strict, explained state-dict loading.

Only safetensors or ``torch.load(weights_only=True)`` are used: a checkpoint can never run code.
Like spandrel, a file that is not what it claims gets a precise error naming the file and what is wrong with it.
"""
from __future__ import annotations

import os
from typing import Iterable, Mapping, Optional

import torch


class CheckpointError(RuntimeError):
    """A weight file could not be read, or its keys/shapes do not match the architecture it is loaded into."""


def read_state_dict(path: str, unwrap: Iterable[str] = ("state_dict", "model_state_dict", "module")) -> dict:
    """Read a ``.safetensors``/``.pt``/``.pth``/``.bin``/``.ckpt`` file into a flat ``{key: tensor}`` dict on CPU.

    Wrappers such as ``{"state_dict": {...}}`` (LatentSync) are unwrapped when the top level has that key.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"weight file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path, device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, pickled code, LFS pointer...
        size = os.path.getsize(path)
        raise CheckpointError(
            f"cannot read weight file {path} ({size} bytes): {type(exc).__name__}: {exc}. "
            "The file may be truncated or not a PyTorch/safetensors checkpoint; delete it and download it again."
        ) from exc
    if isinstance(sd, Mapping):
        for key in unwrap:
            if key in sd and isinstance(sd[key], Mapping):
                sd = sd[key]
                break
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} does not contain a state dict of tensors")
    return dict(sd)


def load_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str,
                source: Optional[str] = None, max_list: int = 8, assign: bool = False) -> torch.nn.Module:
    """Load ``state_dict`` into ``module`` requiring exactly the same keys and shapes.

    Any missing or unexpected key, or a shape mismatch, raises :class:`CheckpointError` listing them (never silently
    ignored, unlike the original LatentSync loader: UNet3DConditionModel.from_pretrained).

    ``assign=True`` makes the module adopt the file's tensors (``load_state_dict(assign=True)``): use it for a module
    built on the ``meta`` device, so a large model never exists twice in memory.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        src = f" from {source}" if source else ""
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
            if items:
                shown = ", ".join(items[:max_list]) + (f", ... ({len(items)} in all)" if len(items) > max_list else "")
                parts.append(f"{len(items)} {label}: {shown}")
        raise CheckpointError(f"{what}{src} does not match the expected architecture: " + "; ".join(parts))
    module.load_state_dict(dict(state_dict), strict=True, assign=assign)
    return module


def onnx_session(path: str, device: str = "cpu"):
    """An onnxruntime session for an ``.onnx`` weight file on ``device`` (CUDA when asked for and available, else the
    CPU). onnxruntime is optional: only ONNX weight files need it."""
    import onnxruntime as ort

    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"] if str(device).startswith("cuda") \
        else ["CPUExecutionProvider"]
    return ort.InferenceSession(path, providers=[p for p in wanted if p in ort.get_available_providers()])
