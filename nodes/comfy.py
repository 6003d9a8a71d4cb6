"""The ONLY module that touches ComfyUI internals (docs/architecture.md; ComfyUI's model_management, folder_paths).

Everything is imported lazily inside functions, with standalone behaviour when ComfyUI is absent:
* directories: ComfyUI's input/output/temp dirs, else ``$MUSETALK_INPUT_DIR`` / ``$MUSETALK_OUTPUT_DIR`` /
  ``$MUSETALK_TEMP_DIR`` (defaults ``./input``, ``./output``, the system temp dir + ``musetalk_enhanced``);
* model folders: ``ComfyUI/models/<folder>`` registered with ``folder_paths`` (plus any ``extra_model_paths.yaml``
  entries), else ``$MUSETALK_MODELS_DIR/<folder>`` (see ``models/registry.py``);
* progress: ``comfy.utils.ProgressBar`` (each update is also a cancel point inside the server), else tqdm;
* cancellation: ``comfy.model_management.throw_exception_if_processing_interrupted``;
* devices and memory: ``comfy.model_management`` (device, dtype choice, ``soft_empty_cache``), else torch's own;
* the core VIDEO type: ``comfy_api`` ``VideoFromFile``.
"""
from __future__ import annotations

import os
import tempfile
from typing import List, Optional

from ..models import registry
from ..pipeline.runtime import Runtime, pick_device, pick_dtype

MODEL_FOLDERS = ("musetalk", "latentsync")


def _try_import(name: str):
    try:
        import importlib

        return importlib.import_module(name)
    except Exception:
        return None


# --------------------------------------------------------------------------------------------------------------------
# directories
def input_dir() -> str:
    fp = _try_import("folder_paths")
    if fp is not None and hasattr(fp, "get_input_directory"):
        return fp.get_input_directory()
    return os.path.abspath(os.environ.get("MUSETALK_INPUT_DIR", "input"))


def output_dir() -> str:
    fp = _try_import("folder_paths")
    if fp is not None and hasattr(fp, "get_output_directory"):
        return fp.get_output_directory()
    return os.path.abspath(os.environ.get("MUSETALK_OUTPUT_DIR", "output"))


def temp_dir() -> str:
    fp = _try_import("folder_paths")
    if fp is not None and hasattr(fp, "get_temp_directory"):
        d = fp.get_temp_directory()
    else:
        d = os.environ.get("MUSETALK_TEMP_DIR", os.path.join(tempfile.gettempdir(), "musetalk_enhanced"))
    os.makedirs(d, exist_ok=True)
    return d


def list_input_files(kinds=("video",)) -> List[str]:
    """Files in the input dir of the given content kinds (for an upload combo)."""
    d = input_dir()
    if not os.path.isdir(d):
        return []
    files = [f for f in os.listdir(d) if os.path.isfile(os.path.join(d, f))]
    fp = _try_import("folder_paths")
    if fp is not None and hasattr(fp, "filter_files_content_types"):
        return sorted(fp.filter_files_content_types(files, list(kinds)))
    exts = {"video": (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif", ".flv", ".mpg", ".mpeg", ".ts"),
            "audio": (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus", ".wma", ".aiff", ".aif")}
    allowed = tuple(e for k in kinds for e in exts.get(k, ()))
    return sorted(f for f in files if f.lower().endswith(allowed))


def resolve_input_path(name: str) -> str:
    """An upload-combo value (``clip.mp4``, ``clip.mp4 [input]``, a subfolder path) or an absolute path -> path."""
    if not name:
        return ""
    if os.path.isabs(name):
        return name
    fp = _try_import("folder_paths")
    if fp is not None and hasattr(fp, "get_annotated_filepath"):
        return fp.get_annotated_filepath(name)
    return os.path.join(input_dir(), name)


# --------------------------------------------------------------------------------------------------------------------
# model folders
_folders_installed = False


def register_model_folders() -> None:
    """Register the model folder types with folder_paths; a no-op outside ComfyUI. Only touches
    an in-memory table, so it is safe at import time."""
    fp = _try_import("folder_paths") if "folder_paths" in __import__("sys").modules else None
    if fp is None or not hasattr(fp, "models_dir") or not hasattr(fp, "add_model_folder_path"):
        return
    for folder in MODEL_FOLDERS:
        default = os.path.join(fp.models_dir, folder)
        try:
            fp.add_model_folder_path(folder, default, is_default=True)
        except TypeError:  # older ComfyUI without is_default
            fp.add_model_folder_path(folder, default)
        except Exception:
            pass


def install_model_folders() -> None:
    """Register ``models/musetalk`` and ``models/latentsync`` with folder_paths and point the registry at them.

    Called at execution time (never at import). Idempotent.
    """
    global _folders_installed
    if _folders_installed:
        return
    fp = _try_import("folder_paths")
    if fp is not None and hasattr(fp, "models_dir"):
        register_model_folders()

        def resolver(folder: str) -> List[str]:
            try:
                dirs = list(fp.get_folder_paths(folder))
            except Exception:
                dirs = []
            return dirs or [os.path.join(fp.models_dir, folder)]

        registry.set_folder_resolver(resolver)
    _folders_installed = True


# --------------------------------------------------------------------------------------------------------------------
# runtime
class ComfyRuntime(Runtime):
    """Runtime that reports to ComfyUI's progress bar, honours Cancel and uses its device/memory management."""

    def __init__(self, node_id: Optional[str] = None, device: Optional[str] = None, dtype: Optional[str] = None,
                 **settings):
        mm = _try_import("comfy.model_management")
        self._mm = mm
        if device and device != "auto":
            dev = pick_device(device)
        elif mm is not None:
            dev = mm.get_torch_device()
        else:
            dev = pick_device("auto")
        super().__init__(device=dev, dtype=pick_dtype(dev, dtype or "auto"), show_progress=False, **settings)
        self.node_id = node_id
        self._pbars = {}
        self._patchers = {}

    def progress(self, stage: str, done: int, total: int) -> None:
        self.check_cancelled()
        utils = _try_import("comfy.utils")
        if utils is None or not hasattr(utils, "ProgressBar"):
            return
        bar = self._pbars.get(stage)
        if bar is None:
            bar = utils.ProgressBar(max(1, total), node_id=self.node_id)
            self._pbars = {stage: bar}  # ComfyUI shows one bar per node: the current stage
        bar.update_absolute(min(done, total), total=max(1, total))

    def check_cancelled(self) -> None:
        if self._mm is not None and hasattr(self._mm, "throw_exception_if_processing_interrupted"):
            self._mm.throw_exception_if_processing_interrupted()

    def log(self, message: str) -> None:
        print(f"[MuseTalk] {message}")

    def prepare_model(self, module, dtype=None):
        """Load through ComfyUI's model management when possible so ComfyUI can offload it for other workflows."""
        import torch

        module = torch.nn.Module.to(module, dtype=dtype or self.dtype)
        mp = _try_import("comfy.model_patcher")
        if self._mm is not None and mp is not None and self.device.type != "cpu":
            try:
                key = id(module)
                patcher = self._patchers.get(key)
                if patcher is None:
                    patcher = mp.ModelPatcher(module, load_device=self.device,
                                              offload_device=self._mm.unet_offload_device())
                    self._patchers[key] = patcher
                self._mm.load_models_gpu([patcher])
                return module
            except Exception as exc:  # fall back to a plain move; never fail because of memory bookkeeping
                self.log(f"model management unavailable ({type(exc).__name__}: {exc}); moving the model directly")
        return torch.nn.Module.to(module, self.device)

    def empty_cache(self) -> None:
        if self._mm is not None and hasattr(self._mm, "soft_empty_cache"):
            self._mm.soft_empty_cache()
        else:
            super().empty_cache()

def make_runtime(node_id: Optional[str] = None, device: Optional[str] = None, dtype: Optional[str] = None,
                 **settings) -> Runtime:
    """The runtime for a node execution: ComfyUI's when running in the server, standalone otherwise; ``settings``:
    the Runtime's ``frame_ops`` and ``compile``."""
    install_model_folders()
    if _try_import("comfy.model_management") is not None:
        return ComfyRuntime(node_id, device, dtype, **settings)
    dev = pick_device(device or "auto")
    return Runtime(device=dev, dtype=pick_dtype(dev, dtype or "auto"), show_progress=True, **settings)


# --------------------------------------------------------------------------------------------------------------------
# core VIDEO type
def video_from_file(path: str):
    """A core ``VIDEO`` object for an mp4 we wrote (``VideoFromFile``), or None when ComfyUI's API is absent."""
    for mod in ("comfy_api.latest", "comfy_api.input_impl"):
        m = _try_import(mod)
        if m is None:
            continue
        impl = getattr(m, "InputImpl", None)
        cls = getattr(impl, "VideoFromFile", None) if impl is not None else getattr(m, "VideoFromFile", None)
        if cls is not None:
            return cls(path)
    return None


def video_stream_source(video):
    """Path or BytesIO behind a core VIDEO input (``get_stream_source``); None when the object cannot stream."""
    getter = getattr(video, "get_stream_source", None)
    if getter is None:
        return None
    try:
        return getter()
    except Exception:
        return None


def output_subfolder(path: str) -> str:
    rel = os.path.relpath(os.path.dirname(path), output_dir())
    return "" if rel == "." else rel
