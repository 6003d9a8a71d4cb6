"""The building blocks of the LatentSync UNet3D (models/latentsync_unet3d.py): per-frame convolutions, spatial
transformers with audio cross-attention, motion modules (temporal attention with the sinusoidal position table),
3D resnets, down/up sampling and the block wrappers. State-dict names follow the released checkpoint
(LatentSync latentsync/models/motion_module.py); numerics notes are in that module's docstring.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


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
    ``F.scaled_dot_product_attention`` (scale 1/sqrt(head_dim), no mask; LatentSync attention.py).

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
    """GroupNorm (cross-frame, 5-D) -> SiLU -> conv -> + time -> GroupNorm -> SiLU -> conv -> + shortcut
    (LatentSync resnet.py)."""

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
    """Sinusoidal table ``pe[0, pos, 2i] = sin(pos * 10000^(-2i/C))``, ``pe[0, pos, 2i+1] = cos(...)`` (motion_module).
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
    layer-normalised) tokens here, so the residual stays free of it (LatentSync motion_module.py)."""

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
    """Motion module (AnimateDiff "Vanilla"): no timestep and no audio inside (LatentSync motion_module.py)."""

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
    """Down / up block: per layer resnet -> [spatial transformer] -> [motion module] (LatentSync unet_blocks.py)."""

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
    """resnet -> spatial transformer (audio) -> resnet; no motion module (LatentSync unet_blocks.py)."""

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
