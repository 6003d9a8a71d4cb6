"""Execution context handed to every long-running pipeline function.

The pipeline never imports ComfyUI. Whoever calls it (a ComfyUI node through ``nodes/comfy.py``, the CLI, a test)
passes a :class:`Runtime` that knows the device, the compute dtype, how to report progress, how to check for
cancellation and how to put a model on the device. The default implementation here is the standalone one
(docs/architecture.md; nodes/comfy.py is the ComfyUI one).
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

log = logging.getLogger("musetalk_enhanced")


class Cancelled(Exception):
    """Raised between batches when the user cancelled the run (ComfyUI's Cancel, Ctrl-C in the CLI)."""


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu. Any explicit torch device string is accepted."""
    if name and name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX): oneDNN then runs bf16 convolutions and
    matmuls about twice as fast as fp32 (bench/README.md). Without it bf16 is emulated and no faster than fp32."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # pragma: no cover - an old/odd torch build
            continue
    return False


DTYPE_CHOICES = ("auto", "fp16", "bf16", "fp32")


def pick_dtype(device: torch.device, name: str = "auto") -> torch.dtype:
    """Compute dtype for the neural stages.

    ``auto``: on CUDA fp16 from compute capability 7 (MuseTalk scripts/inference.py ``--use_float16``; MuseTalk's
    realtime script forces fp16; LatentSync inference.py: fp16 on Ampere+), fp32 on older GPUs; on MPS fp16; on a CPU
    bf16 when the CPU has native bf16 arithmetic (:func:`cpu_has_native_bf16`), else fp32. fp16 is never picked on a
    CPU: torch runs it there ~45x slower than fp32. bf16 is twice as fast as fp32 on such CPUs but has 3 fewer
    mantissa bits than fp16: on the parity fixtures the generated faces differ from the fp32 original by 1.25 grey
    levels on average (fp16: 0.14); ``fp32`` reproduces the original within the fixtures' tolerances
    (bench/README.md "Precision").
    """
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if name and name != "auto":
        if name not in table:
            raise ValueError(f"dtype: unknown value {name!r}; use one of auto, fp32, fp16, bf16")
        return table[name]
    device = torch.device(device)
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.float16 if major >= 7 else torch.float32
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


FRAME_OPS_CHOICES = ("auto", "cv2", "torch")
COMPILE_CHOICES = ("off", "compile", "cuda_graphs")


def pick_frame_ops(device: torch.device, name: str = "auto") -> str:
    """Where MuseTalk crops faces and pastes them back: ``cv2`` (OpenCV and Pillow on the CPU, frame by frame, the
    original's own calls) or ``torch`` (the same arithmetic as batched torch ops on the compute device,
    pipeline/backends/frame_ops.py; equal pixel for pixel). ``auto``: torch on CUDA, cv2 elsewhere."""
    if name not in FRAME_OPS_CHOICES:
        raise ValueError(f"frame_ops: unknown value {name!r}; use one of {', '.join(FRAME_OPS_CHOICES)}")
    if name != "auto":
        return name
    return "torch" if torch.device(device).type == "cuda" else "cv2"


def is_oom(exc: BaseException) -> bool:
    """True for an accelerator out-of-memory error (any backend)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "outofmemory" in text)


def own_weights(module: torch.nn.Module) -> torch.nn.Module:
    """Copy each parameter and buffer of ``module`` into a tensor of its own, one at a time (the peak grows by one
    tensor). Weights adopted from a file (models/checkpoint.py ``load_strict(assign=True)``) or converted from it
    ran the VAE encoder 25-45 % slower on the CPU than the same values copied once more
    (bench/networks.py measured it against the original's ``from_pretrained``); the copy costs about 0.3 s per GB."""
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)
    return module


@dataclass
class Runtime:
    """Standalone runtime: tqdm-style progress on stderr, no cancellation source, torch's own device handling.

    ``frame_ops``: where MuseTalk crops and pastes faces (:func:`pick_frame_ops`). ``compile``: the fixed-shape
    speed-ups of the MuseTalk networks (pipeline/backends/musetalk_engine.py ``CompiledNetworks``): ``off``,
    ``compile`` (``torch.compile`` at one batch shape) or ``cuda_graphs`` (the same, replayed as CUDA graphs)."""

    device: torch.device = field(default_factory=pick_device)
    dtype: Optional[torch.dtype] = None
    show_progress: bool = True
    cancel_flag: Callable[[], bool] = lambda: False
    frame_ops: str = FRAME_OPS_CHOICES[0]
    compile: str = COMPILE_CHOICES[0]
    _bars: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if isinstance(self.device, str):
            self.device = pick_device(self.device)
        if self.dtype is None:
            self.dtype = pick_dtype(self.device)
        pick_frame_ops(self.device, self.frame_ops)                  # a bad choice fails here, not mid-run
        if self.compile not in COMPILE_CHOICES:
            raise ValueError(f"compile: unknown value {self.compile!r}; use one of {', '.join(COMPILE_CHOICES)}")

    @property
    def device_frames(self) -> bool:
        """True when MuseTalk's crop and paste-back run as torch ops on the device (``frame_ops``)."""
        return pick_frame_ops(self.device, self.frame_ops) == "torch"

    # progress / cancellation -------------------------------------------------------------------------------------
    def progress(self, stage: str, done: int, total: int) -> None:
        """Report ``done`` of ``total`` units of ``stage``. Also a cancel point."""
        self.check_cancelled()
        if not self.show_progress:
            return
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm is a requirement
            return
        bar = self._bars.get(stage)
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, desc=stage, file=sys.stderr, leave=False, dynamic_ncols=True)
            self._bars[stage] = bar
        bar.update(max(0, done - bar.n))
        if done >= total:
            bar.close()
            self._bars.pop(stage, None)

    def check_cancelled(self) -> None:
        if self.cancel_flag():
            raise Cancelled("cancelled by the user")

    def log(self, message: str) -> None:
        log.info(message)

    # models / memory ---------------------------------------------------------------------------------------------
    def prepare_model(self, module: torch.nn.Module, dtype: Optional[torch.dtype] = None) -> torch.nn.Module:
        """Put ``module`` on the compute device in ``dtype`` (default: the runtime dtype) and return it. On the CPU
        every weight is then copied once into memory of its own (:func:`own_weights`)."""
        # torch's own .to: diffusers' override warns about dtype casts it cannot judge
        module = torch.nn.Module.to(module, device=self.device, dtype=dtype or self.dtype)
        if self.device.type == "cpu":
            own_weights(module)
        return module

    def release_model(self, module: torch.nn.Module) -> None:
        """Hint that ``module`` is not needed for a while (ComfyUI may offload it)."""

    def empty_cache(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
