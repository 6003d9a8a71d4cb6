"""MuseTalk Enhanced: audio-driven lip-sync nodes for ComfyUI (MuseTalk v1.5, LatentSync 1.5/1.6), cutaway-safe.

ComfyUI imports this folder as a package (its name may contain hyphens); every import inside is relative and nothing
heavy happens at import time (no model load, no CUDA initialisation).
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"  # the frontend extension: the audio player of Load Audio (MuseTalk)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
