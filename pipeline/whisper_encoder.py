"""whisper-tiny, the audio encoder both backends read: which file is present, loading it once, and a copy on the
runtime's device and dtype.

MuseTalk ships the Hugging Face layout of whisper-tiny and LatentSync OpenAI's ``tiny.pt``; both hold the same
network and weights, so whichever is present serves both layouts (pipeline/audio_features.py). The loaded float32
encoder lives in the model cache (pipeline/model_cache.py); a device/dtype copy is made from it, never a conversion
in place (a float16 round trip would lose precision).
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch

from . import model_cache
from .runtime import Runtime

LAYOUTS = ("musetalk", "latentsync")


class AudioFeaturesError(ValueError):
    """Bad input to the audio feature stage; the message says what to change."""


def _present_whisper_files() -> Dict[str, Optional[str]]:
    """Existing whisper-tiny files: ``{"hf": folder or None, "openai": tiny.pt or None}``."""
    import os

    from ..models import registry

    found: Dict[str, Optional[str]] = {"hf": None, "openai": None}
    for d in registry.folder_dirs(registry.REGISTRY["whisper_tiny.config"].folder):
        folder = os.path.join(d, os.path.dirname(registry.REGISTRY["whisper_tiny.config"].relpath))
        if os.path.isfile(os.path.join(folder, "config.json")) and any(
                os.path.isfile(os.path.join(folder, n)) for n in ("model.safetensors", "pytorch_model.bin")):
            found["hf"] = folder
            break
    found["openai"] = registry.find("latentsync.whisper_tiny")
    return found


def whisper_weight_keys(layout: str) -> List[str]:
    """Registry keys of the whisper-tiny file each layout's original ships with."""
    return ["whisper_tiny.config", "whisper_tiny.weights"] if layout == "musetalk" else ["latentsync.whisper_tiny"]


def whisper_requirements(layout: str) -> List[Tuple[str, ...]]:
    """The pre-flight check's view (pipeline/backends/selection.py): nothing when either whisper-tiny file is
    present (both hold the same network), else the layout's own files."""
    present = _present_whisper_files()
    if present["hf"] or present["openai"]:
        return []
    return [(k,) for k in whisper_weight_keys(layout)]


def load_whisper(layout: str = "musetalk", auto_download: bool = True, runtime: Optional[Runtime] = None):
    """The whisper-tiny encoder (:class:`..models.whisper.WhisperStates`, CPU float32, cached per file).

    MuseTalk ships the Hugging Face layout and LatentSync OpenAI's ``tiny.pt``; both hold the same network and the
    same weights, so whichever is already present is used (the layout's own format first) and only when neither is
    present is the layout's own file downloaded (``auto_download``) or reported missing
    (:class:`..models.registry.MissingWeightsError`).
    """
    import os

    from ..models import registry
    from ..models.whisper import load_hf_encoder, load_openai_encoder

    if layout not in LAYOUTS:
        raise AudioFeaturesError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    present = _present_whisper_files()
    order = ["hf", "openai"] if layout == "musetalk" else ["openai", "hf"]
    path = next((present[k] for k in order if present[k]), None)
    fmt = next((k for k in order if present[k]), None)
    if path is None:
        log = runtime.log if runtime is not None else print
        got = registry.ensure(whisper_weight_keys(layout), auto_download, log=log)
        if layout == "musetalk":
            path, fmt = os.path.dirname(got["whisper_tiny.weights"]), "hf"
        else:
            path, fmt = got["latentsync.whisper_tiny"], "openai"
    return model_cache.cached("audio.whisper", model_cache.file_stamp([os.path.abspath(path)]),
                              lambda: load_hf_encoder(path) if fmt == "hf" else load_openai_encoder(path))


EncoderLike = Union[torch.nn.Module, Callable[[], torch.nn.Module], None]


def _encoder_dtype(runtime: Runtime) -> torch.dtype:
    """fp16 on an accelerator whenever the runtime computes in half precision (both originals run whisper in fp16 on
    CUDA, LatentSync scripts/inference.py), float32 otherwise."""
    if runtime.device.type != "cpu" and runtime.dtype in (torch.float16, torch.bfloat16):
        return torch.float16
    return torch.float32


def _module_place(module: torch.nn.Module) -> Tuple[torch.device, torch.dtype]:
    for p in module.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def prepare_encoder(encoder: EncoderLike, layout: str, auto_download: bool, runtime: Runtime):
    if encoder is None:
        encoder = load_whisper(layout, auto_download, runtime)
    elif not isinstance(encoder, torch.nn.Module) and callable(encoder):
        encoder = encoder()
    dtype = _encoder_dtype(runtime)
    dev, cur = _module_place(encoder)
    if dev.type == runtime.device.type and (dev.index == runtime.device.index or runtime.device.index is None) \
            and cur == dtype:
        return encoder, dtype
    # Never convert the caller's (cached, float32) module in place: a float16 round trip would lose precision. The
    # device copy is kept (one at a time) so repeated runs hand the same module to the runtime's memory management.
    key = (id(encoder), runtime.device.type, runtime.device.index, dtype)
    entry = model_cache.cached("audio.whisper_device_copy", key, lambda: (encoder, copy.deepcopy(encoder)))
    if entry[0] is not encoder:   # the id of a freed module was reused
        model_cache.clear("audio.whisper_device_copy")
        entry = model_cache.cached("audio.whisper_device_copy", key, lambda: (encoder, copy.deepcopy(encoder)))
    return runtime.prepare_model(entry[1], dtype=dtype), dtype
