"""The first thing a shard's worker process runs (``runpy.run_path`` with ``PACK_NAME``, ``PACK_DIR``, ``THREADS``
and, in local workers, ``GPU_QUEUE`` given): it takes the worker's own GPU from ``GPU_QUEUE`` when there is one
(``CUDA_VISIBLE_DEVICES``, set before torch first touches CUDA); it imports the pack under the name its parent process knows it by (``musetalk_enhanced``, or the
folder name ComfyUI gives a custom node), so that the functions the parent sends, pickled by that name, resolve in
the worker; and it gives torch the worker's share of the cores. Standard library only: nothing of the pack can be
imported before this has run."""
import importlib.util
import os
import sys


def register(name: str, root: str) -> None:
    """Import ``root`` (the pack's folder) as the package ``name``, once."""
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "__init__.py"),
                                                  submodule_search_locations=[root])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


if "PACK_NAME" in globals():
    if globals().get("GPU_QUEUE") is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = GPU_QUEUE.get()  # noqa: F821
    register(PACK_NAME, PACK_DIR)  # noqa: F821 (given by runpy.run_path)
    import torch

    torch.set_num_threads(max(1, int(THREADS)))  # noqa: F821
