"""LatentSync 1.5 / 1.6 UNet3DConditionModel (spec latentsync.md §1, §7, §10).

An AnimateDiff-style 3D UNet on the SD-1.5 layout: 13 input channels (noisy latents 4 + mask 1 + masked-image latents
4 + reference latents 4), audio cross-attention to 50 whisper tokens per frame, temporal ("motion") attention over the
frames of a chunk. State-dict keys are exactly those of the released ``latentsync_unet.pt`` (1,246 keys, including the
40 ``pos_encoder.pe`` buffers), so the released file loads strictly without conversion.

Numerics that matter (spec §7, §12):

* Tensors are 5-D ``(B, C, F, H, W)``. Convolutions run per frame; the GroupNorms of the resnets and of
  ``conv_norm_out`` are plain GroupNorms on the 5-D tensor, i.e. statistics pooled over all frames of the chunk.
  The GroupNorms inside the spatial transformers and the motion modules are per frame.
* Spatial transformer: per-frame self-attention over H*W tokens, cross-attention to that frame's audio tokens, GEGLU
  feed-forward. Motion module: two temporal self-attentions over the F frames at each spatial position, with the
  sinusoidal position table added to the *normalised* tokens inside each attention (not to the residual).
* 1.5 and 1.6 share the architecture and keys; only the face resolution differs (256 vs 512) and nothing in the file
  records it, so the resolution is tied to the registry slot the file was loaded from (``RESOLUTIONS``).

DeepCache (spec §10) is built in: ``forward(..., cache=DeepCacheState)`` stores the input of the last layer of the last
up block on a full step and, on a cached step, recomputes only ``conv_in``, the time embedding, that one layer and the
output head.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .registry import WeightFile, register

# ---- configuration (configs/unet/stage2.yaml == stage2_512.yaml, `model:` section; spec §1, §7) ---------------------
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

PARAM_COUNT = 1_267_099_844       # parameters of the full model (spec §1); + 844,800 buffer values
NUM_STATE_DICT_KEYS = 1_246
VERSIONS = ("1.5", "1.6")
RESOLUTIONS = {"1.5": 256, "1.6": 512}           # spec §1: tied to the checkpoint, not recorded in it
REGISTRY_KEYS = {"1.5": "latentsync15.unet", "1.6": "latentsync16.unet"}

# The fixed mouth mask every LatentSync run uses (spec §6). Fetched on first use from the original repository.
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


# ---- building blocks -----------------------------------------------------------------------------------------------
def _to_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B*F, C, H, W), batch-major (frame index fastest)."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def _from_frames(x: torch.Tensor, f: int) -> torch.Tensor:
    """(B*F, C, H, W) -> (B, C, F, H, W)."""
    bf, c, h, w = x.shape
    return x.reshape(bf // f, f, c, h, w).permute(0, 2, 1, 3, 4)


class FrameConv2d(nn.Conv2d):
    """A 2-D convolution applied to every frame of a 5-D tensor (keys ``weight``/``bias`` like the original)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        f = x.shape[2]
        return _from_frames(super().forward(_to_frames(x)), f)


class Attention(nn.Module):
    """Multi-head attention with ``to_q/to_k/to_v`` (no bias) and ``to_out.0`` (bias), computed with
    ``F.scaled_dot_product_attention`` (scale 1/sqrt(head_dim), no mask; spec §7).

    ``max_batch`` (set by :meth:`UNet3DConditionModel.set_attention_batch`) bounds how many sequences go through one
    SDPA call, to cap the attention-score memory on backends without a fused kernel.
    """

    def __init__(self, query_dim: int, heads: int, dim_head: int, cross_attention_dim: Optional[int] = None):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.max_batch: Optional[int] = None
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(cross_attention_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(cross_attention_dim or query_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.reshape(b, n, self.heads, d // self.heads).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        context = x if context is None else context
        q = self._split(self.to_q(x))
        k = self._split(self.to_k(context))
        v = self._split(self.to_v(context))
        mb = self.max_batch
        if mb is None or q.shape[0] <= mb:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = torch.cat([F.scaled_dot_product_attention(q[i:i + mb], k[i:i + mb], v[i:i + mb])
                             for i in range(0, q.shape[0], mb)])
        b, h, n, d = out.shape
        out = out.permute(0, 2, 1, 3).reshape(b, n, h * d)
        return self.to_out[1](self.to_out[0](out))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)  # exact (erf) GELU


class FeedForward(nn.Module):
    """GEGLU feed-forward C -> 4C -> C with the diffusers key layout ``net.0.proj`` / ``net.2``."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.net:
            x = m(x)
        return x


class ResnetBlock3D(nn.Module):
    """GroupNorm (cross-frame, 5-D) -> SiLU -> conv -> + time -> GroupNorm -> SiLU -> conv -> + shortcut (spec §7)."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float,
                 output_scale_factor: float = 1.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = FrameConv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = FrameConv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.conv_shortcut = (FrameConv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)
                              if in_channels != out_channels else None)
        self.output_scale_factor = output_scale_factor

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, cross_attention_dim: int, add_audio_layer: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim_head)
        if add_audio_layer:
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = Attention(dim, heads, dim_head, cross_attention_dim=cross_attention_dim)
        else:
            self.attn2 = None
        self.ff = FeedForward(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, audio: Optional[torch.Tensor]) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        if self.attn2 is not None and audio is not None:
            x = self.attn2(self.norm2(x), audio) + x
        return self.ff(self.norm3(x)) + x


class Transformer3DModel(nn.Module):
    """Per-frame spatial transformer: GroupNorm (per frame, eps 1e-6) -> 1x1 conv -> block -> 1x1 conv -> + input."""

    def __init__(self, heads: int, dim_head: int, in_channels: int, groups: int, cross_attention_dim: int,
                 add_audio_layer: bool):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(in_channels, inner, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, cross_attention_dim, add_audio_layer)])
        self.proj_out = nn.Conv2d(inner, in_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, audio: Optional[torch.Tensor]) -> torch.Tensor:
        f = x.shape[2]
        x = _to_frames(x)
        bf, c, h, w = x.shape
        residual = x
        y = self.proj_in(self.norm(x))
        inner = y.shape[1]
        y = y.permute(0, 2, 3, 1).reshape(bf, h * w, inner)
        if audio is not None and audio.dim() == 4:  # (B, F, N, D) -> (B*F, N, D)
            audio = audio.reshape(-1, audio.shape[-2], audio.shape[-1])
        for block in self.transformer_blocks:
            y = block(y, audio)
        y = y.reshape(bf, h, w, inner).permute(0, 3, 1, 2).contiguous()
        return _from_frames(self.proj_out(y) + residual, f)


class PositionalEncoding(nn.Module):
    """Sinusoidal table ``pe[0, pos, 2i] = sin(pos * 10000^(-2i/C))``, ``pe[0, pos, 2i+1] = cos(...)`` (spec §7).
    A persistent buffer: it is part of the released state dict."""

    def __init__(self, dim: int, max_len: int = 24):
        super().__init__()
        self.register_buffer("pe", sinusoid_table(dim, max_len))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]]


def sinusoid_table(dim: int, max_len: int = 24) -> torch.Tensor:
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


class TemporalAttention(Attention):
    """Self-attention over the frames at each spatial position; the position table is added to the (already
    layer-normalised) tokens here, so the residual stays free of it (spec §7, §12)."""

    def __init__(self, dim: int, heads: int, dim_head: int, max_len: int):
        super().__init__(dim, heads, dim_head)
        self.pos_encoder = PositionalEncoding(dim, max_len=max_len)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:  # type: ignore[override]
        bf, s, c = x.shape
        b = bf // frames
        x = x.reshape(b, frames, s, c).permute(0, 2, 1, 3).reshape(b * s, frames, c)  # (b f) s c -> (b s) f c
        out = super().forward(self.pos_encoder(x))
        return out.reshape(b, s, frames, c).permute(0, 2, 1, 3).reshape(bf, s, c)    # (b s) f c -> (b f) s c


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, n_attn: int, max_len: int):
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalAttention(dim, heads, dim_head, max_len)
                                               for _ in range(n_attn)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(n_attn)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = attn(norm(x), frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3DModel(nn.Module):
    def __init__(self, channels: int, heads: int, dim_head: int, n_blocks: int, n_attn: int, groups: int,
                 max_len: int):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(inner, heads, dim_head, n_attn, max_len)
                                                 for _ in range(n_blocks)])
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.shape[2]
        x = _to_frames(x)
        bf, c, h, w = x.shape
        residual = x
        y = self.norm(x).permute(0, 2, 3, 1).reshape(bf, h * w, c)
        y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y, f)
        y = self.proj_out(y).reshape(bf, h, w, c).permute(0, 3, 1, 2).contiguous()
        return _from_frames(y + residual, f)


class VanillaTemporalModule(nn.Module):
    """Motion module (AnimateDiff "Vanilla"): no timestep and no audio inside (spec §7)."""

    def __init__(self, channels: int, num_attention_heads: int = 8, num_transformer_block: int = 1,
                 attention_block_types: Sequence[str] = ("Temporal_Self", "Temporal_Self"),
                 temporal_position_encoding: bool = True, temporal_position_encoding_max_len: int = 24,
                 temporal_attention_dim_div: int = 1, zero_initialize: bool = True, groups: int = 32):
        super().__init__()
        if not temporal_position_encoding or any(t != "Temporal_Self" for t in attention_block_types):
            raise ValueError("only Temporal_Self attention with position encoding is supported (LatentSync 1.5/1.6)")
        self.temporal_transformer = TemporalTransformer3DModel(
            channels, num_attention_heads, channels // num_attention_heads // temporal_attention_dim_div,
            num_transformer_block, len(attention_block_types), groups, temporal_position_encoding_max_len)
        if zero_initialize:
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal_transformer(x)


class Downsample3D(nn.Module):
    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.conv = FrameConv2d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample3D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = FrameConv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, size: Optional[Tuple[int, int, int]] = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=[1.0, 2.0, 2.0], mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


class _Block(nn.Module):
    """Down / up block: per layer resnet -> [spatial transformer] -> [motion module] (spec §7)."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, prev_channels: int, temb: int, n_layers: int,
                 cfg: Dict, heads: int, add_sampler: bool, motion: bool, cross_attn: bool):
        super().__init__()
        self.kind = kind
        groups, eps = cfg["norm_num_groups"], cfg["norm_eps"]
        mm_kwargs = dict(cfg["motion_module_kwargs"])
        resnets, attentions, motions = [], [], []
        for i in range(n_layers):
            if kind == "down":
                rin = in_channels if i == 0 else out_channels
            else:
                res_skip = in_channels if i == n_layers - 1 else out_channels
                rin = (prev_channels if i == 0 else out_channels) + res_skip
            resnets.append(ResnetBlock3D(rin, out_channels, temb, groups, eps))
            if cross_attn:
                attentions.append(Transformer3DModel(heads, out_channels // heads, out_channels, groups,
                                                     cfg["cross_attention_dim"], cfg["add_audio_layer"]))
            if motion:
                motions.append(VanillaTemporalModule(out_channels, groups=groups, **mm_kwargs))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions) if cross_attn else None
        self.motion_modules = nn.ModuleList(motions) if motion else None
        if add_sampler and kind == "down":
            self.downsamplers = nn.ModuleList([Downsample3D(out_channels, cfg["downsample_padding"])])
        elif add_sampler:
            self.upsamplers = nn.ModuleList([Upsample3D(out_channels)])

    def layer(self, i: int, h: torch.Tensor, temb: torch.Tensor, audio: Optional[torch.Tensor]) -> torch.Tensor:
        h = self.resnets[i](h, temb)
        if self.attentions is not None:
            h = self.attentions[i](h, audio)
        if self.motion_modules is not None:
            h = self.motion_modules[i](h)
        return h


class UNetMidBlock3DCrossAttn(nn.Module):
    """resnet -> spatial transformer (audio) -> resnet; no motion module (spec §7)."""

    def __init__(self, channels: int, temb: int, cfg: Dict, heads: int):
        super().__init__()
        groups, eps = cfg["norm_num_groups"], cfg["norm_eps"]
        scale = cfg["mid_block_scale_factor"]
        self.resnets = nn.ModuleList([ResnetBlock3D(channels, channels, temb, groups, eps, scale),
                                      ResnetBlock3D(channels, channels, temb, groups, eps, scale)])
        self.attentions = nn.ModuleList([Transformer3DModel(heads, channels // heads, channels, groups,
                                                            cfg["cross_attention_dim"], cfg["add_audio_layer"])])

    def forward(self, h: torch.Tensor, temb: torch.Tensor, audio: Optional[torch.Tensor]) -> torch.Tensor:
        h = self.resnets[0](h, temb)
        for attn, resnet in zip(self.attentions, self.resnets[1:]):
            h = resnet(attn(h, audio), temb)
        return h


@dataclass
class DeepCacheState:
    """DeepCache with ``cache_branch_id = 0`` (spec §10): a full step stores the hidden state that enters the last
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
            # DeepCache shallow path (spec §10): only the last layer of the last up block and the head are recomputed.
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
    :class:`~.checkpoint.CheckpointError` listing them; the original loader ignored them, spec §1).

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
# 1.5 and 1.6 have identical keys and shapes (spec §1), so a file cannot say which resolution it was trained for. The
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
