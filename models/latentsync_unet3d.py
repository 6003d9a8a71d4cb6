"""LatentSync 1.5 / 1.6 UNet3DConditionModel (bytedance/LatentSync latentsync/models/unet.py).

An AnimateDiff-style 3D UNet on the SD-1.5 layout: 13 input channels (noisy latents 4 + mask 1 + masked-image latents
4 + reference latents 4), audio cross-attention to 50 whisper tokens per frame, temporal ("motion") attention over the
frames of a chunk. State-dict keys are exactly those of the released ``latentsync_unet.pt`` (1,246 keys, including the
40 ``pos_encoder.pe`` buffers), so the released file loads strictly without conversion.

Numerics that matter (LatentSync unet_blocks.py, resnet.py, motion_module.py):

* Tensors are 5-D ``(B, C, F, H, W)``. Convolutions run per frame; the GroupNorms of the resnets and of
  ``conv_norm_out`` are plain GroupNorms on the 5-D tensor, i.e. statistics pooled over all frames of the chunk.
  The GroupNorms inside the spatial transformers and the motion modules are per frame.
* Spatial transformer: per-frame self-attention over H*W tokens, cross-attention to that frame's audio tokens, GEGLU
  feed-forward. Motion module: two temporal self-attentions over the F frames at each spatial position, with the
  sinusoidal position table added to the *normalised* tokens inside each attention (not to the residual).
* 1.5 and 1.6 share the architecture and keys; only the face resolution differs (256 vs 512) and nothing in the file
  records it, so the resolution is tied to the registry slot the file was loaded from (``RESOLUTIONS``).

DeepCache (PR #230) is built in: ``forward(..., cache=DeepCacheState)`` stores the input of the last layer of the last
up block on a full step and, on a cached step, recomputes only ``conv_in``, the time embedding, that one layer and the
output head.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .latentsync_blocks import Attention, FrameConv2d, UNetMidBlock3DCrossAttn, _Block
from .registry import WeightFile, register

# ---- configuration (LatentSync configs/unet/stage2.yaml == stage2_512.yaml, `model:` section) ----------
UNET_CONFIG: Dict = {
    "act_fn": "silu",
    "add_audio_layer": True,
    "attention_head_dim": 8,  # the number of heads (head dim = C / 8)
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "mid_block_type": "UNetMidBlock3DCrossAttn",
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 13,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "resnet_time_scale_shift": "default",
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": False,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 24,
        "temporal_attention_dim_div": 1,
        "zero_initialize": True,
    },
}

PARAM_COUNT = 1_267_099_844       # parameters of the full model; + 844,800 buffer values
NUM_STATE_DICT_KEYS = 1_246
VERSIONS = ("1.5", "1.6")
RESOLUTIONS = {"1.5": 256, "1.6": 512}           # tied to the checkpoint, not recorded in it
REGISTRY_KEYS = {"1.5": "latentsync15.unet", "1.6": "latentsync16.unet"}

# The fixed mouth mask every LatentSync run uses (utils/mask.png). Fetched on first use from the original repository.
MASK_KEY = "latentsync.mask"
register(WeightFile(
    MASK_KEY, "latentsync", "mask.png",
    url="https://raw.githubusercontent.com/bytedance/LatentSync/main/latentsync/utils/mask.png", size=1_871,
    description="LatentSync fixed mouth mask (256x256 PNG, white = keep)", groups=("latentsync-1.5", "latentsync-1.6")))


def normalize_version(version: str) -> str:
    v = str(version).strip().lower().lstrip("v")
    v = {"15": "1.5", "16": "1.6", "latentsync15": "1.5", "latentsync16": "1.6"}.get(v.replace(".", ""), v)
    if v not in VERSIONS:
        raise ValueError(f"unknown LatentSync version {version!r}; expected one of {', '.join(VERSIONS)}")
    return v


@dataclass
class DeepCacheState:
    """DeepCache with ``cache_branch_id = 0`` (DeepCache): a full step stores the hidden state that enters the last
    layer of the last up block; the next ``interval - 1`` steps reuse it. Use one state per chunk."""

    interval: int = 3
    feature: Optional[torch.Tensor] = None

    def is_full_step(self, step_index: int) -> bool:
        return self.feature is None or step_index % self.interval == 0


class UNet3DConditionModel(nn.Module):
    """LatentSync UNet3D; ``forward(sample (B,13,F,h,w), timestep, audio (B*F,50,384) or (B,F,50,384)) -> (B,4,F,h,w)``
    (epsilon prediction)."""

    def __init__(self, config: Optional[Dict] = None):
        super().__init__()
        cfg = dict(UNET_CONFIG)
        if config:
            cfg.update(config)
        self.config = cfg
        if cfg["resnet_time_scale_shift"] != "default" or cfg["center_input_sample"] or cfg["motion_module_mid_block"] \
                or cfg["motion_module_decoder_only"] or cfg["motion_module_type"] != "Vanilla":
            raise ValueError("configuration outside LatentSync 1.5/1.6 is not supported")
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        ch = list(cfg["block_out_channels"])
        heads = cfg["attention_head_dim"]
        temb = ch[0] * 4
        mm_res = set(cfg["motion_module_resolutions"])
        use_mm = cfg["use_motion_module"]

        self.conv_in = FrameConv2d(cfg["in_channels"], ch[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(ch[0], cfg["flip_sin_to_cos"], cfg["freq_shift"])
        self.time_embedding = TimestepEmbedding(ch[0], temb)

        self.down_blocks = nn.ModuleList()
        out_c = ch[0]
        for i, kind in enumerate(cfg["down_block_types"]):
            in_c, out_c = out_c, ch[i]
            self.down_blocks.append(_Block(
                "down", in_c, out_c, 0, temb, cfg["layers_per_block"], cfg, heads,
                add_sampler=i < len(ch) - 1, motion=use_mm and (2 ** i) in mm_res,
                cross_attn=kind == "CrossAttnDownBlock3D"))
        self.mid_block = UNetMidBlock3DCrossAttn(ch[-1], temb, cfg, heads)

        self.up_blocks = nn.ModuleList()
        rev = list(reversed(ch))
        out_c = rev[0]
        for i, kind in enumerate(cfg["up_block_types"]):
            prev_c, out_c = out_c, rev[i]
            in_c = rev[min(i + 1, len(ch) - 1)]
            res = 2 ** (3 - i)
            self.up_blocks.append(_Block(
                "up", in_c, out_c, prev_c, temb, cfg["layers_per_block"] + 1, cfg, heads,
                add_sampler=i < len(ch) - 1, motion=use_mm and res in mm_res,
                cross_attn=kind == "CrossAttnUpBlock3D"))

        self.conv_norm_out = nn.GroupNorm(cfg["norm_num_groups"], ch[0], eps=cfg["norm_eps"])
        self.conv_act = nn.SiLU()
        self.conv_out = FrameConv2d(ch[0], cfg["out_channels"], kernel_size=3, padding=1)

    # -- helpers --------------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def set_attention_batch(self, max_batch: Optional[int]) -> None:
        """Bound the number of sequences per SDPA call (None = no bound). Lowers peak memory where SDPA has no fused
        kernel (the score matrix is ``batch x heads x N x N``); results are unchanged up to float rounding."""
        for m in self.modules():
            if isinstance(m, Attention):
                m.max_batch = max_batch

    def _time_embedding(self, timestep, batch: int, device: torch.device) -> torch.Tensor:
        t = timestep
        if not torch.is_tensor(t):
            t = torch.tensor([t], dtype=torch.float64 if isinstance(t, float) else torch.int64, device=device)
        elif t.dim() == 0:
            t = t[None].to(device)
        t = t.expand(batch)
        return self.time_embedding(self.time_proj(t).to(dtype=self.dtype))

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: Optional[torch.Tensor] = None,
                cache: Optional[DeepCacheState] = None, step_index: int = 0) -> torch.Tensor:
        n_up = 2 ** (len(self.up_blocks) - 1)
        upsample_size = None
        forward_size = any(s % n_up != 0 for s in sample.shape[-2:])
        audio = encoder_hidden_states
        emb = self._time_embedding(timestep, sample.shape[0], sample.device)
        h = self.conv_in(sample)

        last = self.up_blocks[-1]
        if cache is not None and not cache.is_full_step(step_index):
            # DeepCache shallow path: only the last layer of the last up block and the head are recomputed.
            h = torch.cat([cache.feature, h], dim=1)
            return self._head(last.layer(len(last.resnets) - 1, h, emb, audio))

        skips: List[torch.Tensor] = [h]
        for block in self.down_blocks:
            for i in range(len(block.resnets)):
                h = block.layer(i, h, emb, audio)
                skips.append(h)
            if hasattr(block, "downsamplers"):
                h = block.downsamplers[0](h)
                skips.append(h)

        h = self.mid_block(h, emb, audio)

        for bi, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            is_last = bi == len(self.up_blocks) - 1
            if not is_last and forward_size:
                upsample_size = tuple(skips[-1].shape[2:])
            for i in range(n):
                if is_last and cache is not None and i == n - 1:
                    cache.feature = h
                h = torch.cat([h, res[-1 - i]], dim=1)
                h = block.layer(i, h, emb, audio)
            if hasattr(block, "upsamplers"):
                h = block.upsamplers[0](h, upsample_size)
        return self._head(h)


# ---- building and loading ------------------------------------------------------------------------------------------
def build_unet(config: Optional[Dict] = None, device: Optional[torch.device | str] = None,
               dtype: Optional[torch.dtype] = None) -> UNet3DConditionModel:
    """Build the model (``device="meta"`` for a free key/shape check)."""
    if device is not None and str(device) == "meta":
        with torch.device("meta"):
            return UNet3DConditionModel(config)
    m = UNet3DConditionModel(config)
    if device is not None or dtype is not None:
        m = m.to(device=device, dtype=dtype)
    return m


def expected_state_dict_shapes(config: Optional[Dict] = None) -> Dict[str, Tuple[int, ...]]:
    m = build_unet(config, device="meta")
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def unwrap_checkpoint(obj) -> Dict[str, torch.Tensor]:
    """``{"state_dict": {...}, "global_step": n}`` (released files) or a bare state dict -> the state dict."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        from .checkpoint import CheckpointError

        raise CheckpointError("not a LatentSync UNet checkpoint (expected a dict of tensors or {'state_dict': ...})")
    return obj


def load_unet(path_or_state_dict, config: Optional[Dict] = None, device: Optional[torch.device | str] = None,
              dtype: Optional[torch.dtype] = None, source: Optional[str] = None) -> UNet3DConditionModel:
    """Load a LatentSync UNet strictly (any missing, unexpected or mis-shaped key raises
    :class:`~.checkpoint.CheckpointError` listing them; the original from_pretrained ignored them).

    The module is built on the meta device and the file's tensors are assigned in place (no second full-size copy),
    then moved to ``device``/``dtype`` (default: the dtype of the stored weights).
    """
    from .checkpoint import load_strict, read_state_dict

    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = source or str(path_or_state_dict)
        sd = read_state_dict(str(path_or_state_dict))  # unwraps {"state_dict": ...}; bare dicts pass through
    else:
        sd = unwrap_checkpoint(path_or_state_dict)
    unet = build_unet(config, device="meta")
    load_strict(unet, sd, "LatentSync UNet3D", source=source, assign=True)
    unet.eval()
    # one dtype for every tensor (a file may mix fp16 weights with fp32 buffers): the requested one, else the weights'
    return unet.to(device=device, dtype=dtype or unet.conv_in.weight.dtype)


# ---- which version is this file? -----------------------------------------------------------------------------------
# 1.5 and 1.6 have identical keys and shapes, so a file cannot say which resolution it was trained for. The
# resolution is taken from the registry slot the file was loaded from. A fingerprint (a cheap statistic of one small
# tensor) can recognise the released files once their values are known; fill KNOWN_FINGERPRINTS with
# ``fingerprint(sd)`` of the released 1.5 / 1.6 files to turn on the warning below.
KNOWN_FINGERPRINTS: Dict[str, str] = {}


def fingerprint(state_dict: Dict[str, torch.Tensor]) -> str:
    """A short statistic of ``conv_in`` (sum and sum of squares, 4 significant digits), computed on the values rounded
    to float16 so that fp32, fp16 and bf16-from-fp16 copies of one release agree."""
    w = state_dict["conv_in.weight"].half().double()
    b = state_dict["conv_in.bias"].half().double()
    return f"{float(w.sum()):.4g}/{float((w * w).sum()):.4g}/{float(b.sum()):.4g}"


def check_resolution_matches(state_dict: Dict[str, torch.Tensor], version: str) -> Optional[str]:
    """Return a warning when the file is recognised as the *other* release (e.g. 1.6 weights in the 1.5 slot, which
    gives garbage or a visible mask, issues #271/#297), else None. Files not in KNOWN_FINGERPRINTS are not judged."""
    v = normalize_version(version)
    fp = fingerprint(state_dict)
    for other, known in KNOWN_FINGERPRINTS.items():
        if known == fp and other != v:
            return (f"this LatentSync UNet looks like the {other} release ({RESOLUTIONS[other]} px) but is used as {v} "
                    f"({RESOLUTIONS[v]} px); put it in the {other} folder")
    return None
