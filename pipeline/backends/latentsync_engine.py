"""LatentSync 1.5 / 1.6 denoising engine: aligned faces + audio windows -> lip-synced aligned faces
(bytedance/LatentSync latentsync/pipelines/lipsync_pipeline.py, LipsyncPipeline).

One call, :meth:`LatentSyncEngine.sync_chunk`, processes one chunk of up to 16 consecutive face frames (the caller
builds chunks from runs of face frames that never span a cut or a cutaway, docs/architecture.md):

1. conditioning (prepare_masked_latents):
   ``pixel = (x/255 - 0.5)/0.5`` (float32); ``masked = pixel * mask`` (float64 product, cast later);
   mask channel = nearest-resized ``mask[0]``; masked-image and reference latents = VAE posterior **samples**
   ``(mean + std * eps) * 0.18215`` (``eps`` injectable);
2. DDIM (diffusers ``DDIMScheduler`` with the original config) from the shared initial noise ``[1,4,1,h,w]``
   repeated over the frames; classifier-free guidance with an all-zero audio context when ``guidance > 1``;
   optional DeepCache (interval 3, branch 0);
3. VAE decode (in slices) and paste in aligned space (paste_surrounding_pixels_back): ``decoded * w + pixel * (1 - w)``,
   ``w = float(1 - mask[0])``; not clamped.

Frames are restored into the video with :mod:`.latentsync_align` (``resize_face_to_crop`` + ``restore_patch``).
The released mask (``mask.png``) is an asset fetched on first use into the LatentSync model folder (registry key
``latentsync.mask``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ...models import latentsync_unet3d as unet_mod
from ..runtime import Runtime

# LatentSync configs/scheduler_config.json (DDIMScheduler)
SCHEDULER_CONFIG: Dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}
VAE_SCALING_FACTOR = 0.18215
VAE_SHIFT_FACTOR = 0.0
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 1.5
DEFAULT_SEED = 1247
MAX_CHUNK_FRAMES = 16  # frames per chunk of the original; the UNet position table allows up to 24


def make_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)


def load_fixed_mask(resolution: int, path: str) -> np.ndarray:
    """``load_fixed_mask`` (LatentSync): mask.png -> RGB -> Lanczos4 resize to R x R -> /255, float64 [3, R, R]
    (1 = keep, 0 = regenerate)."""
    import cv2

    img = cv2.imread(path)
    if img is None:
        raise FileNotFoundError(f"cannot read the LatentSync mask image {path}")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4) / 255.0
    return np.ascontiguousarray(img.transpose(2, 0, 1))


@dataclass
class ChunkNoise:
    """Random inputs of one chunk, for reproducible runs and tests: ``init`` [1, 4, 1, h, w] (repeated over the
    frames), ``vae_masked`` / ``vae_ref`` [F, 4, h, w] (posterior sampling noise). ``None`` = drawn by the engine."""

    init: Optional[torch.Tensor] = None
    vae_masked: Optional[torch.Tensor] = None
    vae_ref: Optional[torch.Tensor] = None


class LatentSyncEngine:
    """Runs the LatentSync denoiser on chunks of aligned faces.

    ``unet``: :class:`~..models.latentsync_unet3d.UNet3DConditionModel` (on the compute device, in the compute dtype);
    ``vae``: diffusers ``AutoencoderKL`` (sd-vae-ft-mse) on the same device; ``resolution``: 256 (1.5) or 512 (1.6);
    ``mask``: float64 [3, R, R] from :func:`load_fixed_mask`. ``seed`` fixes the shared initial noise and, with the
    chunk's first frame index, each chunk's VAE sampling noise (so a retried chunk gets the same noise).
    ``split_cfg`` runs the unconditional and audio halves of CFG one after the other (half the activation memory;
    same result up to float rounding, GroupNorm statistics are per sample). ``vae_batch`` bounds the frames per VAE
    encode/decode call.
    """

    def __init__(self, unet, vae, runtime: Optional[Runtime] = None, resolution: int = 256,
                 steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, deepcache: bool = False,
                 seed: int = DEFAULT_SEED, mask: Optional[np.ndarray] = None, deepcache_interval: int = 3,
                 vae_batch: int = 8, split_cfg: bool = False):
        if mask is None:
            raise ValueError("LatentSyncEngine needs the fixed mask (load_fixed_mask(resolution, mask_path))")
        self.unet = unet
        self.vae = vae
        self.runtime = runtime
        self.resolution = int(resolution)
        if self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8, got {resolution}")
        self.latent_size = self.resolution // 8
        self.steps = int(steps)
        self.guidance = float(guidance)
        self.deepcache = bool(deepcache)
        self.deepcache_interval = int(deepcache_interval)
        self.vae_batch = max(1, int(vae_batch))
        self.split_cfg = bool(split_cfg)
        self.seed = int(seed)
        mask = np.asarray(mask, dtype=np.float64)
        if mask.shape != (3, self.resolution, self.resolution):
            raise ValueError(f"mask must be [3, {self.resolution}, {self.resolution}], got {mask.shape}")
        self.mask = torch.from_numpy(mask)  # float64, 1 = keep
        self.scheduler = make_scheduler()
        self.scheduler.set_timesteps(self.steps)
        self._gen = torch.Generator().manual_seed(self.seed)
        self.init_noise = torch.randn((1, 4, 1, self.latent_size, self.latent_size), generator=self._gen)

    # -- devices -----------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def unet_dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def vae_dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def _check_cancelled(self) -> None:
        if self.runtime is not None:
            self.runtime.check_cancelled()

    def regenerated_region(self) -> torch.Tensor:
        """Float [R, R], 1 where the model regenerates the face (black area of the mask); for the better paste-back
        (``latentsync_align.restore_patch(region=...)``)."""
        return (1.0 - self.mask[0]).float()

    # -- noise -------------------------------------------------------------------------------------------------
    def chunk_noise(self, num_frames: int, frame_start: Optional[int] = None) -> ChunkNoise:
        """The VAE sampling noise of a chunk: from (seed, first frame index) when ``frame_start`` is given, else from
        the engine's running generator (order: masked, then reference, like the original)."""
        shape = (num_frames, 4, self.latent_size, self.latent_size)
        if frame_start is None:
            gen = self._gen
        else:
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + int(frame_start) + 1) % (2 ** 63))
        masked = torch.randn(shape, generator=gen)
        ref = torch.randn(shape, generator=gen)
        return ChunkNoise(self.init_noise, masked, ref)

    # -- pieces ------------------------------------------------------------------------------------------------
    def prepare_pixels(self, faces_u8) -> torch.Tensor:
        """uint8 [F, R, R, 3] (numpy or tensor) -> float32 [F, 3, R, R] in [-1, 1], contiguous NCHW (ImageProcessor)."""
        x = torch.as_tensor(np.asarray(faces_u8))
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"aligned faces must be uint8 [F, R, R, 3], got {tuple(x.shape)} {x.dtype}")
        if x.shape[1] != self.resolution or x.shape[2] != self.resolution:
            raise ValueError(f"aligned faces must be {self.resolution}x{self.resolution}, got {tuple(x.shape[1:3])}")
        x = x.permute(0, 3, 1, 2).contiguous()
        return ((x / 255.0) - 0.5) / 0.5

    def _encode(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """VAE posterior sample ``(mean + std * eps - shift) * scale`` of [F, 3, R, R] -> [F, 4, h, w] (float32)."""
        out = []
        dev, dt = self.device, self.vae_dtype
        for i in range(0, x.shape[0], self.vae_batch):
            xi = x[i:i + self.vae_batch].to(device=dev, dtype=dt).contiguous()
            dist = self.vae.encode(xi).latent_dist
            e = eps[i:i + self.vae_batch].to(device=dev, dtype=dist.mean.dtype)
            z = dist.mean + dist.std * e
            out.append(((z - VAE_SHIFT_FACTOR) * VAE_SCALING_FACTOR).float())
        return torch.cat(out)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """[1, 4, F, h, w] -> [F, 3, R, R] float32 (``vae.decode(z / 0.18215 + 0)``, not clamped), in slices."""
        z = latents / VAE_SCALING_FACTOR + VAE_SHIFT_FACTOR
        b, c, f, h, w = z.shape
        z = z.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        out = []
        for i in range(0, z.shape[0], self.vae_batch):
            zi = z[i:i + self.vae_batch].to(device=self.device, dtype=self.vae_dtype).contiguous()
            out.append(self.vae.decode(zi).sample.float())
        return torch.cat(out)

    def _unet(self, x: torch.Tensor, t, audio: Optional[torch.Tensor], cache, j: int) -> torch.Tensor:
        dt = self.unet_dtype
        return self.unet(x.to(dt), t, audio.to(dt) if audio is not None else None, cache=cache,
                         step_index=j).float()

    # -- one chunk ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sync_chunk(self, aligned_faces_u8, audio_windows, noise: Optional[ChunkNoise] = None,
                   frame_start: Optional[int] = None, output: str = "float",
                   trace: Optional[Dict] = None):
        """Lip-sync one chunk.

        ``aligned_faces_u8``: uint8 [F, R, R, 3] aligned faces of consecutive frames of one shot (F <= 24, normally
        <= 16); ``audio_windows``: float [F, 50, 384], the windows of those frames' absolute indices (feature2chunks);
        ``noise``: optional :class:`ChunkNoise`; ``frame_start``: absolute index of the first frame (seeds the VAE
        noise reproducibly). Returns float32 [F, 3, R, R] pasted faces in about [-1, 1] (``output="float"``, the input
        of ``latentsync_align.resize_face_to_crop``) or uint8 [F, R, R, 3] (``output="uint8"``).
        Out-of-memory errors propagate (``pipeline.runtime.is_oom`` recognises them).
        """
        if output not in ("float", "uint8"):
            raise ValueError("output must be 'float' or 'uint8'")
        pixel = self.prepare_pixels(aligned_faces_u8)
        n = pixel.shape[0]
        if n < 1 or n > 24:
            raise ValueError(f"a LatentSync chunk has 1..24 frames (position table of 24), got {n}")
        audio = torch.as_tensor(audio_windows, dtype=torch.float32)
        if tuple(audio.shape) != (n, 50, 384):
            raise ValueError(f"audio windows must be [{n}, 50, 384], got {tuple(audio.shape)}")
        drawn = self.chunk_noise(n, frame_start) if (noise is None or noise.vae_masked is None
                                                     or noise.vae_ref is None) else None
        init = noise.init if noise is not None and noise.init is not None else self.init_noise
        eps_masked = noise.vae_masked if noise is not None and noise.vae_masked is not None else drawn.vae_masked
        eps_ref = noise.vae_ref if noise is not None and noise.vae_ref is not None else drawn.vae_ref
        cond = self._conditioning(pixel, eps_masked, eps_ref, trace)
        latents = self._denoise(cond, audio.to(self.device), init, trace)
        decoded = self.decode(latents)
        if trace is not None:
            trace.update(latents_final=latents.cpu(), decoded=decoded.cpu())
        # paste the surrounding pixels back in aligned space (LipsyncPipeline): weights from the float64 mask, cast
        w = (1 - self.mask[0:1]).float().to(decoded.device)
        out = (decoded * w + pixel.to(decoded.device) * (1 - w)).cpu()
        if output == "uint8":
            from .latentsync_align import faces_to_uint8

            return faces_to_uint8(out)
        return out

    def _conditioning(self, pixel: torch.Tensor, eps_masked, eps_ref, trace: Optional[Dict]) -> torch.Tensor:
        """The UNet's 9 conditioning channels ``[1, 9, F, h, w]`` (LipsyncPipeline): mask, masked-image and reference
        latents; float64 products, cast where the original casts."""
        n, h, dev = pixel.shape[0], self.latent_size, self.device
        masked = pixel * self.mask.unsqueeze(0)                 # float64
        m1 = self.mask[0:1].unsqueeze(0).expand(n, 1, -1, -1)   # [F, 1, R, R] float64
        mask_lat = F.interpolate(m1, size=(h, h)).float()       # nearest
        mask_lat = mask_lat.permute(1, 0, 2, 3).unsqueeze(0).to(dev)       # [1, 1, F, h, w]
        masked_lat = self._encode(masked.float(), eps_masked)               # [F, 4, h, w]
        masked_lat = masked_lat.permute(1, 0, 2, 3).unsqueeze(0)            # [1, 4, F, h, w]
        ref_lat = self._encode(pixel, eps_ref).permute(1, 0, 2, 3).unsqueeze(0)
        del masked
        self._check_cancelled()
        if trace is not None:
            trace.update(mask_latents=mask_lat.cpu(), masked_image_latents=masked_lat.cpu(),
                         ref_latents=ref_lat.cpu(), steps=[])
        return torch.cat([mask_lat, masked_lat, ref_lat], dim=1)

    def _denoise(self, cond: torch.Tensor, audio: torch.Tensor, init: torch.Tensor,
                 trace: Optional[Dict]) -> torch.Tensor:
        """DDIM from the shared initial noise, with classifier-free guidance on the audio (LipsyncPipeline) and optional
        DeepCache; returns the final latents ``[1, 4, F, h, w]``."""
        n = cond.shape[2]
        cfg = self.guidance > 1.0
        latents = init.to(self.device, torch.float32).repeat(1, 1, n, 1, 1) * self.scheduler.init_noise_sigma
        caches = None
        if self.deepcache:
            n_pass = 2 if (cfg and self.split_cfg) else 1
            caches = [unet_mod.DeepCacheState(self.deepcache_interval) for _ in range(n_pass)]
        for j, t in enumerate(self.scheduler.timesteps):
            x = self.scheduler.scale_model_input(latents, t)
            if cfg and not self.split_cfg:
                inp = torch.cat([torch.cat([x, x]), torch.cat([cond, cond])], dim=1)
                ctx = torch.cat([torch.zeros_like(audio), audio])
                out = self._unet(inp, t, ctx, caches[0] if caches else None, j)
                uncond, cond_out = out.chunk(2)
            elif cfg:
                inp = torch.cat([x, cond], dim=1)
                uncond = self._unet(inp, t, torch.zeros_like(audio), caches[0] if caches else None, j)
                cond_out = self._unet(inp, t, audio, caches[1] if caches else None, j)
                out = torch.cat([uncond, cond_out]) if trace is not None else None
            else:
                inp = torch.cat([x, cond], dim=1)
                out = cond_out = self._unet(inp, t, audio, caches[0] if caches else None, j)
            eps = uncond + self.guidance * (cond_out - uncond) if cfg else cond_out
            latents = self.scheduler.step(eps, t, latents).prev_sample
            if trace is not None:
                full_in = torch.cat([torch.cat([x, x]), torch.cat([cond, cond])], dim=1) if cfg else inp
                trace["steps"].append({"unet_in": full_in.cpu(), "unet_out": out.cpu(),
                                       "noise_pred_cfg": eps.cpu(), "latents_out": latents.cpu()})
            self._check_cancelled()
        return latents

    # -- back into the frame ------------------------------------------------------------------------------------
    def aligner(self):
        """A :class:`~.latentsync_align.FaceAligner` for this resolution (reset it at every cut)."""
        from .latentsync_align import FaceAligner

        return FaceAligner(self.resolution)

    def restore(self, frame_u8: np.ndarray, face: torch.Tensor, affine: torch.Tensor, better_paste: bool = True,
                device: Optional[torch.device | str] = None, shaped=None):
        """Paste one generated face (float [3, R, R] from :meth:`sync_chunk`) back into its frame; returns a
        :class:`~.latentsync_align.Patch` (or None when the face is outside the frame).

        ``better_paste`` (the product default) replaces only the regenerated lower-face region, feathered, and keeps
        the frame's own pixels elsewhere; ``False`` pastes the whole aligned crop like the original (restore_img).
        ``shaped``: a ``box`` / ``mouth`` mask in frame coordinates (pipeline/backends/shaped_masks.py ``shaped_mask``)
        used instead of either."""
        from .latentsync_align import align_geometry, resize_face_to_crop, restore_patch

        g = align_geometry(self.resolution)
        crop = resize_face_to_crop(face.float(), (g.crop_h, g.crop_w))
        region = self.regenerated_region() if better_paste else None
        return restore_patch(frame_u8, crop, affine, region=region, device=device or "cpu", shaped=shaped)


# ---- loading -------------------------------------------------------------------------------------------------------
def required_weights(version: str) -> List[str]:
    v = unet_mod.normalize_version(version)
    return [unet_mod.REGISTRY_KEYS[v], unet_mod.MASK_KEY, "sd_vae.config", "sd_vae.weights"]


def load_latentsync(version: str, runtime: Optional[Runtime] = None, auto_download: bool = True,
                    vae=None, unet_config: Optional[Dict] = None, **engine_kwargs) -> LatentSyncEngine:
    """Build a :class:`LatentSyncEngine` for LatentSync ``version`` ("1.5" -> 256 px, "1.6" -> 512 px).

    Fetches missing files when allowed (``registry.ensure`` raises one ``MissingWeightsError`` listing all of them),
    loads the UNet strictly (missing / unexpected keys are errors) and moves UNet and VAE to ``runtime.device`` in
    ``runtime.dtype``. ``vae`` may be passed in to share an already loaded sd-vae-ft-mse; ``unet_config`` overrides
    the architecture (tests).
    """
    from ...models.checkpoint import read_state_dict
    from ...models.registry import ensure

    runtime = runtime or Runtime()
    v = unet_mod.normalize_version(version)
    resolution = unet_mod.RESOLUTIONS[v]
    keys = required_weights(v)
    if vae is not None:
        keys = keys[:2]
    paths = ensure(keys, auto_download=auto_download, log=runtime.log)
    sd = read_state_dict(paths[unet_mod.REGISTRY_KEYS[v]])
    warning = unet_mod.check_resolution_matches(sd, v)
    if warning:
        runtime.log(warning)
    unet = unet_mod.load_unet(sd, config=unet_config, source=paths[unet_mod.REGISTRY_KEYS[v]])
    del sd
    unet = runtime.prepare_model(unet)
    if vae is None:
        from ...models.vae import load_vae

        vae = load_vae(paths["sd_vae.weights"], paths["sd_vae.config"])  # old/new key names, .safetensors/.bin
        vae.register_to_config(scaling_factor=VAE_SCALING_FACTOR, shift_factor=VAE_SHIFT_FACTOR)
    vae = runtime.prepare_model(vae)
    mask = load_fixed_mask(resolution, paths[unet_mod.MASK_KEY])
    return LatentSyncEngine(unet, vae, runtime=runtime, resolution=resolution, mask=mask, **engine_kwargs)


def load_latentsync_cached(version: str, runtime: Optional[Runtime] = None, auto_download: bool = True,
                           **engine_kwargs) -> LatentSyncEngine:
    """:func:`load_latentsync`, reusing the engine in the model cache (pipeline/model_cache.py; one at a time) when
    the files, device, dtype and settings are the same. The shared initial noise is re-drawn from the seed each
    time."""
    from ...models.registry import find
    from .. import model_cache

    runtime = runtime or Runtime()
    v = unet_mod.normalize_version(version)
    paths = [find(k) for k in required_weights(v)]
    key = (model_cache.file_stamp(paths), str(runtime.device), str(runtime.dtype),
           json.dumps(engine_kwargs, sort_keys=True, default=str))
    build = lambda: load_latentsync(v, runtime, auto_download, **engine_kwargs)  # noqa: E731
    eng = model_cache.cached("backends.latentsync", key, build) if all(paths) else build()
    eng.runtime = runtime
    eng._gen = torch.Generator().manual_seed(eng.seed)
    eng.init_noise = torch.randn((1, 4, 1, eng.latent_size, eng.latent_size), generator=eng._gen)
    return eng


def chunk_ranges(start: int, stop: int, size: int = MAX_CHUNK_FRAMES) -> List[range]:
    """Split the frames ``start..stop-1`` of one face run into chunks of ``size`` (the last one shorter)."""
    return [range(s, min(s + size, stop)) for s in range(start, stop, size)]
