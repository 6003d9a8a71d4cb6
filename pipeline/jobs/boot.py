"""The first thing a shard's worker process or a Ray actor runs (``runpy.run_path`` with ``PACK_NAME``, ``PACK_DIR``,
``THREADS`` and, in local workers, ``GPU_QUEUE`` given):

1. it keeps the memory the networks free for their next call (pipeline/cpu_heap.py), as ``python <pack>`` does,
   before anything is allocated;
2. it takes the worker's own GPU from ``GPU_QUEUE`` when there is one (``CUDA_VISIBLE_DEVICES``, set before torch
   first touches CUDA);
3. it imports the pack under the name its parent process knows it by (``musetalk_enhanced``, or the folder name
   ComfyUI gives a custom node) through the pack's bootstrap.py, so that the functions the parent sends, pickled by
   that name, resolve in the worker;
4. it gives torch the worker's share of the cores.

Standard library only: nothing of the pack can be imported before this has run."""
import os
import runpy

if "PACK_NAME" in globals():
    runpy.run_path(os.path.join(PACK_DIR, "pipeline", "cpu_heap.py"))["keep_freed_memory"]()  # noqa: F821
    if globals().get("GPU_QUEUE") is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = GPU_QUEUE.get()  # noqa: F821
    runpy.run_path(os.path.join(PACK_DIR, "bootstrap.py"))["register"](PACK_NAME, PACK_DIR)  # noqa: F821
    import torch

    torch.set_num_threads(max(1, int(THREADS)))  # noqa: F821
