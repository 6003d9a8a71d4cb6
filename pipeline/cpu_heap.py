"""The C heap of the pack's own processes: memory the networks free is kept for their next call.

On the CPU each layer of the MuseTalk VAE allocates fresh activations of 8-512 MB. With glibc's defaults every block
over its mmap threshold (128 KB, raised by glibc to at most 32 MB as the process runs) is a new ``mmap``, whose
pages the kernel zeroes and maps again on first touch, and the freed top of the heap is given back once it passes the
trim threshold: about 1.7 million page faults per VAE decode of 4 faces, 15-25 % of the decode's time and as much of
the encode's (bench/networks.py, bench/README.md). How much a process pays depends on the chance state its heap
reached while it loaded. :func:`keep_freed_memory` takes the chance out: no ``mmap`` for allocations, and freed
memory kept in the heap up to ``TRIM_THRESHOLD``, so the second call of a network reuses the pages of the first.

The cost is resident memory: what a run has freed stays mapped (at most ``TRIM_THRESHOLD`` above what is live) until
the process ends. The pack's own processes take it (``python <pack>``: the dub, batch, avatar and serve commands;
shard workers and Ray actors, pipeline/jobs/boot.py); ComfyUI's process keeps its own settings (the same effect is
had by starting ComfyUI with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``, :func:`environment`). Set
``MUSETALK_KEEP_FREED_MEMORY=0`` to keep glibc's defaults. Other C libraries (macOS, Windows, musl) are left as
they are.

Standard library only: ``__main__.py``, pipeline/jobs/boot.py and bench/networks.py load this file by path, before
anything of the pack is imported."""
import ctypes
import os
import platform

OPT_OUT = "MUSETALK_KEEP_FREED_MEMORY"     # "0": glibc's defaults
TRIM_THRESHOLD = (1 << 31) - 1             # bytes of freed memory kept at the heap's top (mallopt takes an int)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4      # mallopt parameter numbers (glibc)


def environment() -> dict:
    """The same settings as glibc environment variables, for a process started from outside (read at its start)."""
    return {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}


def keep_freed_memory() -> str:
    """Set this process's heap to keep freed memory (calling it again sets the same values). Returns what was done,
    for a log line: ``"kept"``, or why the heap keeps its defaults."""
    if os.environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"glibc defaults ({OPT_OUT}={os.environ[OPT_OUT]})"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return f"system defaults ({platform.system()}, not glibc)"
    libc = ctypes.CDLL(None)
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "glibc defaults (mallopt refused the settings)"
    return "kept"
