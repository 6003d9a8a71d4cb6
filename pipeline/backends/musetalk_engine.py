"""MuseTalk v1.5 engine core: face crop -> VAE latents -> UNet at t=0 with audio tokens -> VAE decode -> uint8 face.

ComfyUI-free and numerically faithful to the original inference path (TMElyralab/MuseTalk scripts/inference.py):

* :func:`crop_face` — ``frame[y1:y2, x1:x2]`` squashed to 256x256 with ``cv2.INTER_LANCZOS4``. The original
  crops BGR frames; resizing is per channel, so cropping our RGB frames gives the channel-swapped identical result.
* :meth:`MuseTalkEngine.encode_reference` — per source frame, the lower-half-masked crop and the full crop are
  normalised (``(u8/255 - 0.5)/0.5``, masked rows 128..255 = -1), VAE-encoded and scaled by 0.18215; the result
  ``[masked, reference]`` is ``[n, 8, 32, 32]`` (channels 0-3 masked, 4-7 reference). By default the posterior is
  *sampled* like the original (``mean + std * eps``); ``eps``/``generator`` make that reproducible (the original
  draws eps on the global RNG per frame, masked then reference: a generator seeded like the global RNG reproduces
  it exactly), and ``posterior="mode"`` uses the deterministic mean (what MuseTalk's training used, train.py).
  These latents depend only on the source frame: the orchestrator computes them once per source frame and caches
  them (on the CPU, 32 KiB each).
* :meth:`MuseTalkEngine.generate` — positional encoding on the ``[b, 50, 384]`` audio windows, one UNet pass
  at timestep 0 (no scheduler), ``vae.decode(pred * (1/0.18215))``, ``round(clamp(x/2 + 0.5, 0, 1) * 255)`` with
  round-half-to-even -> uint8 ``[b, 256, 256, 3]`` **RGB** (the original returns BGR).

dtype follows ``runtime.dtype`` (``pick_dtype``: bf16/fp16 on CUDA; bf16 on CPUs with native bf16, else fp32). In
half precision the models run channels_last (oneDNN's and cuDNN's fast layout for these convolutions; on a CPU with
AVX512-BF16 bf16 + channels_last halves the time of every network, bench/README.md); in fp32 on the CPU the memory
format is left alone so results stay within the parity tolerances of the fixtures. Attention uses
PyTorch SDPA (diffusers' default processor, as in the original environment).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ...models import registry
from ..runtime import Runtime

FACE_SIZE = 256          # the generator's face resolution
LATENT_SIZE = 32         # FACE_SIZE / 8
AUDIO_TOKENS = 50        # 10 whisper frames x 5 hidden layers per video frame (MuseTalk audio_processor.py)
AUDIO_WIDTH = 384
SCALING_FACTOR = 0.18215

ArrayLike = Union[np.ndarray, torch.Tensor]


# ---- crop (VAE.get_latents_for_unet) ---------------------------------------------------------------------------------
def crop_face(frame: np.ndarray, box: Sequence[float], size: int = FACE_SIZE) -> np.ndarray:
    """``cv2.resize(frame[y1:y2, x1:x2], (size, size), INTER_LANCZOS4)`` for one uint8 ``[H, W, 3]`` frame.

    ``box`` is ``(x1, y1, x2, y2)`` in pixels (the MuseTalk crop box with extra_margin already applied). A box that
    leaves the frame (``edge_faces=pad``, pipeline/faces/cropbox.py) is cut from the frame padded with its border
    pixels, so the crop keeps the box's shape. Raises ValueError for an empty crop instead of the original's silent
    skip (MuseTalk scripts/inference.py).
    """
    import cv2

    x1, y1, x2, y2 = (int(v) for v in box)
    h, w = frame.shape[:2]
    crop = frame[max(0, y1):max(0, y2), max(0, x1):max(0, x2)]
    if crop.size == 0 or crop.shape[0] == 0 or crop.shape[1] == 0:
        raise ValueError(f"empty face crop for box {tuple(box)} in a {frame.shape[1]}x{frame.shape[0]} frame")
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        crop = cv2.copyMakeBorder(np.ascontiguousarray(crop), max(0, -y1), max(0, y2 - h), max(0, -x1),
                                  max(0, x2 - w), cv2.BORDER_REPLICATE)
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_LANCZOS4)


def crop_faces(frames: np.ndarray, boxes: Sequence[Sequence[float]], size: int = FACE_SIZE) -> np.ndarray:
    """:func:`crop_face` for a batch: frames ``[n, H, W, 3]`` (or a list), one box each -> ``[n, size, size, 3]``."""
    return np.stack([crop_face(f, b, size) for f, b in zip(frames, boxes)]) if len(boxes) else \
        np.zeros((0, size, size, 3), np.uint8)


def _as_u8_batch(crops: ArrayLike) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(crops)) if isinstance(crops, np.ndarray) else crops
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"face crops must be uint8 [n, {FACE_SIZE}, {FACE_SIZE}, 3], got {tuple(t.shape)} {t.dtype}")
    if tuple(t.shape[1:3]) != (FACE_SIZE, FACE_SIZE):
        raise ValueError(f"face crops must be {FACE_SIZE}x{FACE_SIZE}, got {tuple(t.shape[1:3])} (use crop_face)")
    return t


def preprocess_crops(crops_rgb_u8: ArrayLike, device: Union[str, torch.device] = "cpu"
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """RGB uint8 ``[n, 256, 256, 3]`` -> ``(masked, reference)`` float32 ``[n, 3, 256, 256]`` in [-1, 1] (VAE).

    ``u8/255`` in float32 equals the original's float64-then-float32 for all 256 values; the masked image has rows
    128..255 zeroed before ``(x - 0.5) / 0.5``, i.e. exactly -1 there.
    """
    t = _as_u8_batch(crops_rgb_u8).to(device)
    x = t.permute(0, 3, 1, 2).float() / 255.0
    half = torch.ones((1, 1, FACE_SIZE, 1), dtype=torch.float32, device=x.device)
    half[:, :, FACE_SIZE // 2:] = 0
    masked = (x * half - 0.5) / 0.5
    ref = (x - 0.5) / 0.5
    return masked, ref


def postprocess_decoded(images: torch.Tensor) -> np.ndarray:
    """VAE output ``[b, 3, 256, 256]`` -> uint8 RGB ``[b, 256, 256, 3]``: ``round(clamp(x/2+0.5, 0, 1)*255)``, half to
    even, in float32 (VAE.decode_latents; identical to the original's NumPy rounding, without its final BGR flip)."""
    from .frame_ops import postprocess_decoded as on_device

    return on_device(images).cpu().numpy()


class quiet_diffusers:
    """Silence diffusers' ``ModelMixin.to(dtype)`` warning about (empty) fp32-pinned module lists while casting."""

    def __enter__(self):
        import logging

        self._logger = logging.getLogger("diffusers.models.modeling_utils")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        self._logger.setLevel(self._level)
        return False


def _local_positional_encoding():
    from ...models.positional_encoding import PositionalEncoding

    return PositionalEncoding(d_model=AUDIO_WIDTH, max_len=5000)


# ---- fixed-shape speed-ups (runtime.compile) ---------------------------------------------------------------------
class FixedShapeCall:
    """One network call run by ``torch.compile`` at one batch shape (``runtime.compile``: ``compile``, or
    ``cuda_graphs`` = mode ``reduce-overhead``, which replays CUDA graphs on a GPU). A smaller batch (a run's last
    one, or one halved after running out of memory) is padded with copies of its last item and the outputs cut
    back, so the graph compiled at the first batch serves the whole run; a larger batch compiles once more and
    becomes the shape. Each item's outputs depend on that item alone (convolutions, group norm and attention are
    per item), equal to the uncompiled call within float tolerance (tests/test_speedups.py). When compiling
    fails (no C++ compiler, an unsupported GPU) the call runs uncompiled from then on and says so once."""

    def __init__(self, fn, mode: str, log):
        self.eager, self.log = fn, log
        self.fn = torch.compile(fn, mode="reduce-overhead" if mode == "cuda_graphs" else None, dynamic=False)
        self.batch = 0
        self.failed = False

    def __call__(self, *tensors: torch.Tensor):
        if self.failed:
            return self.eager(*tensors)
        n = tensors[0].shape[0]
        self.batch = max(self.batch, n)
        # padded, and always inference tensors (the engine runs under inference_mode): a tensor made outside it
        # would fail the graph's guards and compile it again
        padded = [torch.cat([t, t[-1:].expand(self.batch - n, *t.shape[1:])]) if n < self.batch else
                  t if t.is_inference() else t.clone() for t in tensors]
        try:
            out = self.fn(*padded)
        except Exception as exc:  # noqa: BLE001 - an accelerator's out-of-memory goes on to the batch halving
            from ..runtime import is_oom
            from .base import short_error

            if is_oom(exc):
                raise
            self.failed = True
            self.log(f"[MuseTalk] compile failed ({short_error(exc)}); the networks run uncompiled")
            return self.eager(*tensors)
        cut = lambda t: t[:n].clone()   # noqa: E731 - CUDA graph outputs are overwritten by the next replay
        return tuple(cut(t) for t in out) if isinstance(out, tuple) else cut(out)


# ---- the engine ---------------------------------------------------------------------------------------------------
class MuseTalkEngine:
    """The MuseTalk v1.5 generator: UNet + VAE + positional encoding on one device/dtype.

    ``posterior`` is the default VAE latent: ``"sample"`` (mean + std * eps, like the original) or ``"mode"`` (mean).
    ``channels_last``: the memory format of the networks (default: on CUDA and in half precision, see the module's
    docstring). ``runtime.compile`` compiles the three network calls (:class:`FixedShapeCall`).
    """

    def __init__(self, unet: torch.nn.Module, vae: torch.nn.Module, pe: Optional[torch.nn.Module] = None,
                 runtime: Optional[Runtime] = None, posterior: str = "sample", channels_last: Optional[bool] = None):
        if posterior not in ("sample", "mode"):
            raise ValueError(f"posterior must be 'sample' or 'mode', got {posterior!r}")
        self.runtime = runtime or Runtime()
        self.posterior = posterior
        self.device = torch.device(self.runtime.device)
        self.dtype = self.runtime.dtype or torch.float32
        with quiet_diffusers():
            self.unet = self.runtime.prepare_model(unet.eval(), self.dtype)
            self.vae = self.runtime.prepare_model(vae.eval(), self.dtype)
        self.pe = (pe if pe is not None else _local_positional_encoding()).to(self.device)  # kept in float32
        self.scaling = float(getattr(getattr(vae, "config", None), "scaling_factor", None) or SCALING_FACTOR)
        self.channels_last = self.device.type == "cuda" or self.dtype in (torch.bfloat16, torch.float16) \
            if channels_last is None else bool(channels_last)
        if self.channels_last:
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        self._t0 = torch.tensor([0], dtype=torch.long, device=self.device)
        self.cpu_encode_images = 1  # images per VAE encode call on the CPU (see encode_reference)
        self._compiled: Dict[Tuple[str, str], FixedShapeCall] = {}   # (network call, compile mode) -> its graph

    # -- the three network calls, compiled when runtime.compile asks ------------------------------------------------
    def _call(self, name: str):
        mode = getattr(self.runtime, "compile", "off")
        eager = {"encode": self._encode_eager, "unet": self._unet_eager, "decode": self._decode_eager}[name]
        if mode == "off":
            return eager
        key = (name, mode)
        if key not in self._compiled:
            self._compiled[key] = FixedShapeCall(eager, mode, self.runtime.log)
        return self._compiled[key]

    def _encode_eager(self, x: torch.Tensor):
        dist = self.vae.encode(x).latent_dist
        return dist.mean, dist.std

    def _unet_eager(self, lat: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(lat, self._t0, encoder_hidden_states=cond).sample

    def _decode_eager(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample

    # -- encode: once per source frame (get_latents_for_unet) ----------------------------------------------------------
    @torch.inference_mode()
    def encode_reference(self, crops_rgb_u8: ArrayLike, eps: Optional[torch.Tensor] = None,
                         generator: Optional[torch.Generator] = None, posterior: Optional[str] = None
                         ) -> torch.Tensor:
        """Face crops (RGB uint8 ``[n, 256, 256, 3]``) -> latents float32 ``[n, 8, 32, 32]`` on the CPU.

        ``eps``: the posterior noise, ``[n, 2, 4, 32, 32]`` (dim 1: 0 = masked, 1 = reference, the fixture's
        ``core.eps`` layout). Else drawn from ``generator`` or the global CPU RNG, in the original's order
        (frame by frame, masked then reference). Ignored for ``posterior="mode"``.
        """
        mode = posterior or self.posterior
        masked, ref = preprocess_crops(crops_rgb_u8, self.device)
        n = masked.shape[0]
        if n == 0:
            return torch.zeros((0, 8, LATENT_SIZE, LATENT_SIZE), dtype=torch.float32)
        x = torch.stack([masked, ref], dim=1).reshape(2 * n, 3, FACE_SIZE, FACE_SIZE).to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # On the CPU big VAE batches only add memory traffic (one image per call is as fast and needs a tenth of the
        # memory); on an accelerator the whole batch goes in one call.
        step = x.shape[0] if self.device.type != "cpu" else self.cpu_encode_images
        encode = self._call("encode")
        parts = [encode(x[i:i + step]) for i in range(0, x.shape[0], step)]
        mean = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        std = torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        z = mean
        if mode == "sample":
            shape = (n, 2, 4, LATENT_SIZE, LATENT_SIZE)
            if eps is None:
                dev = generator.device if generator is not None else torch.device("cpu")
                eps = torch.randn(shape, generator=generator, dtype=torch.float32, device=dev)
            if tuple(eps.shape) != shape:
                raise ValueError(f"eps must have shape {shape}, got {tuple(eps.shape)}")
            z = mean + std * eps.reshape(2 * n, 4, LATENT_SIZE, LATENT_SIZE).to(z.device, z.dtype)
        z = self.scaling * z
        return z.reshape(n, 8, LATENT_SIZE, LATENT_SIZE).float().cpu()

    # -- generate: per batch of output frames (MuseTalk scripts/inference.py loop) ------------------------------
    @torch.inference_mode()
    def audio_tokens(self, audio_windows: ArrayLike) -> torch.Tensor:
        """``pe(windows)``: ``[b, 50, 384]`` + the sinusoid table, in float32, cast to the compute dtype."""
        a = torch.as_tensor(np.asarray(audio_windows) if isinstance(audio_windows, np.ndarray) else audio_windows)
        if a.ndim != 3 or a.shape[-1] != AUDIO_WIDTH:
            raise ValueError(f"audio windows must be [b, {AUDIO_TOKENS}, {AUDIO_WIDTH}], got {tuple(a.shape)}")
        return self.pe(a.to(self.device, torch.float32)).to(self.dtype)

    @torch.inference_mode()
    def denoise(self, latents: ArrayLike, audio_windows: ArrayLike) -> torch.Tensor:
        """One UNet pass at t = 0: latents ``[b, 8, 32, 32]`` + audio windows -> predicted latent ``[b, 4, 32, 32]``."""
        lat = torch.as_tensor(latents).to(self.device, self.dtype)
        if lat.ndim != 4 or lat.shape[1] != 8:
            raise ValueError(f"latents must be [b, 8, {LATENT_SIZE}, {LATENT_SIZE}], got {tuple(lat.shape)}")
        cond = self.audio_tokens(audio_windows)
        if cond.shape[0] != lat.shape[0]:
            raise ValueError(f"{lat.shape[0]} latents but {cond.shape[0]} audio windows")
        if self.channels_last:
            lat = lat.contiguous(memory_format=torch.channels_last)
        return self._call("unet")(lat, cond)

    @torch.inference_mode()
    def decode(self, pred: torch.Tensor) -> torch.Tensor:
        """``vae.decode((1/0.18215) * pred).sample`` -> ``[b, 3, 256, 256]`` (about [-1, 1], not clamped)."""
        z = (1.0 / self.scaling) * pred.to(self.device, self.dtype)
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        return self._call("decode")(z)

    @torch.inference_mode()
    def generate(self, latents: ArrayLike, audio_windows: ArrayLike) -> np.ndarray:
        """Latents ``[b, 8, 32, 32]`` (from :meth:`encode_reference`) + audio windows ``[b, 50, 384]`` -> generated
        faces, RGB uint8 ``[b, 256, 256, 3]``."""
        if len(latents) == 0:
            return np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
        return postprocess_decoded(self.decode(self.denoise(latents, audio_windows)))

# ---- loading ------------------------------------------------------------------------------------------------------
WEIGHT_KEYS = ("musetalk.unet", "musetalk.unet_config", "sd_vae.config", "sd_vae.weights")


def weight_paths(auto_download: bool = True) -> Dict[str, str]:
    """``{key: path}`` of the MuseTalk generator's files; the sd-vae ``.bin`` is accepted instead of the
    ``.safetensors`` when only it is present. Raises ``MissingWeightsError`` listing every missing file."""
    keys = list(WEIGHT_KEYS)
    if registry.find("sd_vae.weights") is None and registry.find("sd_vae.weights_bin") is not None:
        keys[keys.index("sd_vae.weights")] = "sd_vae.weights_bin"
    paths = registry.ensure(keys, auto_download=auto_download)
    if "sd_vae.weights_bin" in paths:
        paths["sd_vae.weights"] = paths.pop("sd_vae.weights_bin")
    return paths


def load_musetalk(runtime: Optional[Runtime] = None, auto_download: bool = True, posterior: str = "sample",
                  cache: bool = True) -> MuseTalkEngine:
    """Find (or download) the weights and build a :class:`MuseTalkEngine` on ``runtime``'s device and dtype.

    Engines are kept in the model cache (pipeline/model_cache.py; one at a time) per (files, device, dtype,
    posterior) unless ``cache=False``."""
    from .. import model_cache

    runtime = runtime or Runtime()
    paths = weight_paths(auto_download)
    key = (model_cache.file_stamp(p for _, p in sorted(paths.items())), str(runtime.device), str(runtime.dtype),
           posterior)
    build = lambda: _build_engine(paths, runtime, posterior)  # noqa: E731
    engine = model_cache.cached("backends.musetalk", key, build) if cache else build()
    engine.runtime = runtime
    return engine


def _build_engine(paths: Dict[str, str], runtime: Runtime, posterior: str) -> MuseTalkEngine:
    from ...models.musetalk_unet import load_unet
    from ...models.vae import load_vae

    for p in paths.values():
        if registry.is_test_weights(p):
            runtime.log(f"[MuseTalk] WARNING: {p} holds random test weights; the output will be noise.")
            break
    unet = load_unet(paths["musetalk.unet"], paths["musetalk.unet_config"])
    vae = load_vae(paths["sd_vae.weights"], paths["sd_vae.config"])
    return MuseTalkEngine(unet, vae, None, runtime, posterior=posterior)


def clear_cache() -> None:
    """Forget the cached MuseTalk engine."""
    from .. import model_cache

    model_cache.clear("backends.musetalk")
