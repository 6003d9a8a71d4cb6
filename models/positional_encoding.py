"""MuseTalk's fixed sinusoidal positional encoding added to the audio tokens before the UNet (MuseTalk unet.py).

``pe[p, 2k] = sin(p * d_k)``, ``pe[p, 2k+1] = cos(p * d_k)`` with ``d_k = exp(2k * (-ln 10000 / d_model))``, computed
in float32 for ``p < max_len``. ``forward(x[B, S, d]) = x + pe[:, :S]``: the positions are the token indices of the
50-token audio window (0..49), not time. The buffer is bit-exact with the fixture ``pe.pe``.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def sinusoid_table(d_model: int = 384, max_len: int = 5000) -> torch.Tensor:
    """The ``[1, max_len, d_model]`` float32 table, evaluated in the same order and precision as the original."""
    position = torch.arange(0, max_len, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe.unsqueeze(0)


class PositionalEncoding(nn.Module):
    """``x + pe[:, :S]`` for ``x`` of shape ``[B, S, d_model]`` (MuseTalk PositionalEncoding.forward).

    The table is a non-persistent buffer: it is not part of any released checkpoint (MuseTalk builds it in code), so it
    follows ``.to(device, dtype)`` without appearing in state dicts.
    """

    def __init__(self, d_model: int = 384, max_len: int = 5000):
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.register_buffer("pe", sinusoid_table(d_model, max_len), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.size(1)
        if seq > self.max_len:
            raise ValueError(f"PositionalEncoding: sequence of {seq} tokens is longer than max_len {self.max_len}")
        return x + self.pe[:, :seq].to(dtype=x.dtype)
