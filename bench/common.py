"""Shared helpers of the benchmark scripts (bench/media.py, bench/lipsync.py).

* :func:`import_pack` imports the pack as the package ``musetalk_enhanced`` (relative imports inside), the way
  tests/conftest.py and ComfyUI do (bootstrap.py). Importing this module puts ``tests/`` on ``sys.path``
  (``make_test_weights`` and the random test-weight writers: ``from test_weights import s3fd as tw_s3fd``).
* :func:`bench_parser` gives every script the same options: ``--quick`` (a smoke run of seconds, for CI),
  ``--json PATH``, ``--device``, ``--dtype``, ``--threads``.
* :func:`pick_device_dtype` (CPU here, CUDA when present), :func:`sync` and :func:`timed` (optional warm-up call,
  ``torch.cuda.synchronize`` around the measured call on a GPU).
* :class:`PeakMemory`: peak host RSS of a block (a psutil sampling thread, every 5 ms by default) and peak VRAM
  (``torch.cuda.max_memory_allocated`` after a reset); :func:`process_peak_rss_mb` is the whole process' high-water
  mark (``resource.getrusage``).
* :func:`machine_info` (CPU model from /proc/cpuinfo, cores, load average, torch threads, GPU name, library versions),
  :func:`markdown_table`, :func:`write_json`.

Numbers are wall-clock on whatever else the machine is doing: :func:`machine_info` records the load average before and
after so a reader can judge.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import sys
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK = "musetalk_enhanced"
MB = 1024.0 * 1024.0
TESTS = os.path.join(ROOT, "tests")
if TESTS not in sys.path:
    sys.path.append(TESTS)


# ---- the pack ------------------------------------------------------------------------------------------------------
import_pack = __import__("runpy").run_path(os.path.join(ROOT, "bootstrap.py"))["import_pack"]  # the one helper


def import_tests_helper(name: str):
    """A helper module from tests/ (e.g. ``mediakit``) without running pytest's conftest."""
    path = os.path.join(ROOT, "tests", name + ".py")
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- options -------------------------------------------------------------------------------------------------------
def bench_parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run (seconds): small sizes, for CI")
    ap.add_argument("--json", default="", metavar="PATH", help="also write the results to this JSON file")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ...")
    ap.add_argument("--dtype", default="auto", help="auto (the pack's rule: fp16 on CUDA, bf16 on a CPU with native "
                                                    "bf16, else fp32), fp32, fp16, bf16")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    return ap


def setup_torch(threads: int = 0):
    import torch

    if threads and threads > 0:
        torch.set_num_threads(int(threads))
    return torch


def pick_device_dtype(device: str = "auto", dtype: str = "auto"):
    """``(torch.device, torch.dtype)`` with the pack's own rules (pipeline.runtime.pick_device / pick_dtype)."""
    import_pack()
    from musetalk_enhanced.pipeline.runtime import pick_device, pick_dtype

    dev = pick_device(device)
    return dev, pick_dtype(dev, dtype)


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---- timing --------------------------------------------------------------------------------------------------------
def sync(device=None) -> None:
    """Wait for queued GPU work (no-op on the CPU)."""
    import torch

    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], object], device=None, warmup: Optional[Callable[[], object]] = None,
          repeats: int = 1) -> Tuple[float, object]:
    """Best wall time of ``repeats`` calls of ``fn`` (after one ``warmup()`` call when given) and the last result.

    The device is synchronised before starting the clock and before stopping it, so queued GPU work is counted.
    """
    if warmup is not None:
        warmup()
        sync(device)
    best, result = float("inf"), None
    for _ in range(max(1, int(repeats))):
        sync(device)
        t0 = time.perf_counter()
        result = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, result


class Stopwatch:
    """``with Stopwatch(device) as sw: ...`` then ``sw.seconds`` (wall, device synchronised at both ends) and
    ``sw.cpu_seconds`` (CPU time of the whole process, all threads: ``time.process_time``).

    On a shared machine the wall time depends on what else runs; the CPU time much less so, and
    ``cpu_seconds / seconds`` (``cores_busy``) shows how many cores the process actually got.
    """

    def __init__(self, device=None):
        self.device = device
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def __enter__(self):
        sync(self.device)
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.seconds = time.perf_counter() - self._t0
        self.cpu_seconds = time.process_time() - self._c0
        return False

    def as_dict(self) -> Dict[str, float]:
        return {"cpu_s": round(self.cpu_seconds, 4),
                "cores_busy": round(self.cpu_seconds / self.seconds, 2) if self.seconds > 0 else None}


# ---- memory --------------------------------------------------------------------------------------------------------
def rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / MB
    except Exception:  # pragma: no cover - psutil is a dev requirement
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def process_peak_rss_mb() -> float:
    """High-water mark of this process' RSS since it started (``ru_maxrss``; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024.0


class PeakMemory:
    """Peak host RSS (sampled by a thread) and peak CUDA memory of a block::

        with PeakMemory(device) as mem:
            work()
        mem.start_mb, mem.peak_mb, mem.delta_mb, mem.vram_peak_mb   # vram_peak_mb is None on the CPU

    ``samples`` keeps ``(seconds since start, rss MiB)`` when ``keep_samples`` (for growth curves).
    """

    def __init__(self, device=None, interval: float = 0.005, keep_samples: bool = False):
        self.device = device
        self.interval = float(interval)
        self.keep_samples = keep_samples
        self.samples: List[Tuple[float, float]] = []
        self.start_mb = self.peak_mb = self.end_mb = 0.0
        self.vram_peak_mb: Optional[float] = None
        self._stop = threading.Event()
        self._thread = None
        self._proc = None

    def _rss(self) -> float:
        if self._proc is not None:
            return self._proc.memory_info().rss / MB
        return rss_mb()

    def _run(self):
        t0 = time.perf_counter()
        while not self._stop.wait(self.interval):
            r = self._rss()
            if r > self.peak_mb:
                self.peak_mb = r
            if self.keep_samples:
                self.samples.append((time.perf_counter() - t0, r))

    def poll(self) -> float:
        """Sample now (from the measured thread) and return the current RSS in MiB."""
        r = self._rss()
        self.peak_mb = max(self.peak_mb, r)
        return r

    def __enter__(self):
        try:
            import psutil

            self._proc = psutil.Process()
        except Exception:  # pragma: no cover
            self._proc = None
        self.start_mb = self.peak_mb = self._rss()
        if self._is_cuda():
            import torch

            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.end_mb = self._rss()
        self.peak_mb = max(self.peak_mb, self.end_mb)
        if self._is_cuda():
            import torch

            sync(self.device)
            self.vram_peak_mb = torch.cuda.max_memory_allocated(self.device) / MB
        return False

    def _is_cuda(self) -> bool:
        if self.device is None:
            return False
        import torch

        return torch.device(self.device).type == "cuda"

    @property
    def delta_mb(self) -> float:
        return self.peak_mb - self.start_mb

    def as_dict(self) -> Dict[str, Optional[float]]:
        out = {"rss_start_mb": round(self.start_mb, 1), "rss_peak_mb": round(self.peak_mb, 1),
               "rss_peak_delta_mb": round(self.delta_mb, 1)}
        if self.vram_peak_mb is not None:
            out["vram_peak_mb"] = round(self.vram_peak_mb, 1)
        return out


class LiveTensorPeak:
    """Peak bytes of the tensors that ops create inside the block and that are alive at the same time (activations),
    on any device::

        with LiveTensorPeak(exclude=model.parameters()) as live:
            model(x)
        live.peak_bytes

    A ``TorchDispatchMode`` sees every op's outputs; each new storage is counted until the last tensor using it is
    garbage (weakref finalizers). Storages of ``exclude`` (weights, inputs) are not counted. This is what
    ``torch.cuda.max_memory_allocated`` minus the weights would report for the same tensors on a GPU, without the
    caching allocator's rounding and fragmentation and without library workspaces (cuDNN/oneDNN scratch), which is
    why figures derived from it are labelled estimates.
    """

    def __init__(self, exclude=()):
        self.exclude = set()
        for t in exclude:
            try:
                self.exclude.add(t.untyped_storage().data_ptr())
            except Exception:  # noqa: BLE001 - meta / sparse tensors have no storage
                pass
        self.current = self.peak_bytes = 0
        self._live: Dict[int, List[int]] = {}
        self._mode = None

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self._live[key]
            self.current -= entry[0]

    def _track(self, t) -> None:
        import weakref

        try:
            st = t.untyped_storage()
            key = st.data_ptr()
        except Exception:  # noqa: BLE001
            return
        if key == 0 or key in self.exclude:
            return
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = [st.nbytes(), 0]
            self.current += entry[0]
            self.peak_bytes = max(self.peak_bytes, self.current)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def __enter__(self):
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        owner = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        owner._track(t)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        return False


def fp16_footprint(*modules, dtype, extra_params: int = 0):
    """``(tensors, weights_mb, scale)`` for a VRAM estimate in fp16: the modules' parameters and buffers (to exclude
    from :class:`LiveTensorPeak`), their size in MiB at 2 bytes per element (plus ``extra_params`` more), and the
    factor from ``dtype``'s element size to fp16's 2 bytes for traced activations."""
    import torch

    tensors = [t for m in modules for t in list(m.parameters()) + list(m.buffers())]
    weights_mb = (sum(t.numel() for t in tensors) + int(extra_params)) * 2 / MB
    return tensors, weights_mb, 2.0 / torch.empty((), dtype=dtype).element_size()


# ---- machine -------------------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> List[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                            if f in have]
    except OSError:
        pass
    return []


def load_average() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def machine_info(device=None) -> Dict[str, object]:
    """What ran the benchmark: CPU, cores, load, memory, torch threads, GPU, library versions."""
    import numpy
    import torch

    info: Dict[str, object] = {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1_5_15": load_average(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }
    try:
        import psutil

        info["ram_total_gb"] = round(psutil.virtual_memory().total / 1024 ** 3, 1)
        info["ram_available_gb"] = round(psutil.virtual_memory().available / 1024 ** 3, 1)
    except Exception:  # pragma: no cover
        pass
    for mod in ("av", "cv2", "diffusers", "transformers"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            pass
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        dev = torch.device(device) if device is not None and torch.device(device).type == "cuda" else \
            torch.device("cuda")
        props = torch.cuda.get_device_properties(dev)
        info["gpu"] = torch.cuda.get_device_name(dev)
        info["gpu_memory_gb"] = round(props.total_memory / 1024 ** 3, 1)
        info["cuda"] = torch.version.cuda
    return info


def describe_machine(info: Dict[str, object]) -> str:
    text = (f"{info.get('cpu')} ({info.get('cores_usable')} usable cores, torch {info.get('torch_threads')} threads, "
            f"load {info.get('load_average_1_5_15')})")
    if info.get("gpu"):
        text += f"; GPU {info['gpu']} ({info.get('gpu_memory_gb')} GB)"
    return text


# ---- output --------------------------------------------------------------------------------------------------------
def fmt(value, digits: int = 3) -> str:
    """A compact table cell: ``-`` for None, up to ``digits`` significant decimals for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        a = abs(value)
        if a >= 100:
            return f"{value:.0f}"
        if a >= 10:
            return f"{value:.1f}"
        if a >= 1:
            return f"{value:.2f}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(rows: Iterable[Dict[str, object]], columns: Sequence[Tuple[str, str]]) -> str:
    """``columns`` = ``[(key, header)]``; missing keys print as ``-``."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |")
    return "\n".join(lines)


def write_json(path: str, payload: Dict[str, object]) -> None:
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, default=str)
    os.replace(tmp, path)


def report(benchmark: str, args, machine_before: Dict[str, object], results: List[Dict[str, object]],
           extra: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """The JSON document every script writes: benchmark, mode, options, machine (load before/after), results."""
    machine = dict(machine_before)
    machine["load_average_after"] = load_average()
    payload = {"benchmark": benchmark, "mode": "quick" if getattr(args, "quick", False) else "full",
               "options": {k: v for k, v in vars(args).items() if k != "json"},
               "machine": machine, "process_peak_rss_mb": round(process_peak_rss_mb(), 1),
               "results": results}
    if extra:
        payload.update(extra)
    return payload
