"""ComfyUI adapters. Each ``*_nodes`` module declares ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``."""
from importlib import import_module

from . import comfy as _comfy

_comfy.register_model_folders()  # cheap: lets ComfyUI list and validate models/musetalk, models/latentsync at once

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

for _name in ("media_nodes", "face_nodes", "audio_nodes", "lipsync_nodes", "avatar_nodes"):
    _mod = import_module(f".{_name}", __name__)
    NODE_CLASS_MAPPINGS.update(getattr(_mod, "NODE_CLASS_MAPPINGS", {}))
    NODE_DISPLAY_NAME_MAPPINGS.update(getattr(_mod, "NODE_DISPLAY_NAME_MAPPINGS", {}))
