"""68-point facial landmarks (iBUG 300-W order) from a face box: FAN / 2DFAN4 (Bulat & Tzimiropoulos 2017, "How far
are we from solving the 2D & 3D Face Alignment problem?"), pure torch, batched over faces.

The original MuseTalk takes its 68 points from DWPose (RTMPose-l whole body, points 23..90; MuseTalk preprocessing.py),
run on the whole frame. This pack uses the equivalent 68-point model of the ``face_alignment`` package instead, run
on each S3FD box: same iBUG point order (so MuseTalk's crop-box rules apply unchanged), better precision on small
faces (it sees a 256x256 crop around the face, not the whole frame at 288x384). LatentSync 1.0/1.5 used exactly this
S3FD + 2DFAN4 pair (LatentSync v1.0 face alignment).

Architecture (from the paper): a 7x7 stride-2 stem, three bottleneck blocks and an average pool bring the 256x256
input to 64x64x256; then 4 stacked hourglasses (depth 4, 256 features) each followed by a block, a 1x1 conv+BN+ReLU
and a 1x1 conv to 68 heatmaps; between stacks the features and the heatmaps are mapped back (1x1) and added. The
blocks are the "hierarchical, parallel and multi-scale" block of the paper: three 3x3 convs (BN-ReLU-conv, no bias)
with out/2, out/4, out/4 channels whose outputs are concatenated, plus a residual (BN-ReLU-1x1 conv when the channel
count changes). Hourglass: skip branch ``b1``, 2x2 average pool, ``b2``, recursion (or ``b2_plus`` at the bottom),
``b3``, nearest 2x upsampling, sum. The last stack's heatmaps are used.

Key naming assumed for the released ``2DFAN4-11f355bf06.pth.tar`` (a plain state dict, loaded with
``torch.load(weights_only=True)``; a ``module.`` prefix from DataParallel is stripped; BatchNorm
``num_batches_tracked`` counters, absent from files saved by old PyTorch, are filled in):

* stem: ``conv1``, ``bn1``; blocks ``conv2`` (64->128), ``conv3`` (128->128), ``conv4`` (128->256);
* a block: ``bn1 conv1 bn2 conv2 bn3 conv3`` and, when channels change, ``downsample.0`` (BN), ``downsample.2``
  (1x1 conv, no bias);
* stack ``i`` (0..3): hourglass ``m{i}`` with blocks ``b1_{d}``, ``b2_{d}``, ``b3_{d}`` for d = 4..1 and
  ``b2_plus_1``; ``top_m_{i}`` (block), ``conv_last{i}`` (1x1), ``bn_end{i}``, ``l{i}`` (1x1 -> 68);
  for i < 3 also ``bl{i}`` (1x1 256->256) and ``al{i}`` (1x1 68->256).

Pre/post-processing follows the face_alignment convention: centre = box centre moved up by 0.12 x box height,
scale = (w + h) / 195, the crop is the square of side 200 x scale around the centre resized to 256x256, RGB / 255.
Each heatmap's argmax is refined by a quarter pixel towards the larger neighbour and mapped back to the frame.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REGISTRY_KEY = "fan68"               # folder "musetalk", relpath "fan/2DFAN4-11f355bf06.pth.tar"
INPUT_SIZE = 256
HEATMAP_SIZE = 64
REFERENCE_SCALE = 195.0
NUM_POINTS = 68
# the left/right mirror of the 68 iBUG points (jaw, brows, nose, eyes, outer and inner lips): point i of a face is
# point IBUG_MIRROR[i] of its mirror image
IBUG_MIRROR = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
               + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40] + list(range(54, 47, -1))
               + list(range(59, 54, -1)) + list(range(64, 59, -1)) + [67, 66, 65])


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=1, padding=1, bias=False)


class ConvBlock(nn.Module):
    """Multi-scale residual block: concat of three chained 3x3 convs (out/2, out/4, out/4) plus a residual."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cout // 2)
        self.bn2 = nn.BatchNorm2d(cout // 2)
        self.conv2 = _conv3x3(cout // 2, cout // 4)
        self.bn3 = nn.BatchNorm2d(cout // 4)
        self.conv3 = _conv3x3(cout // 4, cout // 4)
        self.downsample = None
        if cin != cout:
            self.downsample = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(True), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(F.relu(self.bn1(x)))
        b = self.conv2(F.relu(self.bn2(a)))
        c = self.conv3(F.relu(self.bn3(b)))
        res = x if self.downsample is None else self.downsample(x)
        return torch.cat([a, b, c], dim=1) + res


class HourGlass(nn.Module):
    def __init__(self, depth: int = 4, features: int = 256):
        super().__init__()
        self.depth = depth
        for d in range(depth, 0, -1):
            self.add_module(f"b1_{d}", ConvBlock(features, features))
            self.add_module(f"b2_{d}", ConvBlock(features, features))
            if d == 1:
                self.add_module("b2_plus_1", ConvBlock(features, features))
            self.add_module(f"b3_{d}", ConvBlock(features, features))

    def _level(self, d: int, x: torch.Tensor) -> torch.Tensor:
        up = self._modules[f"b1_{d}"](x)
        low = self._modules[f"b2_{d}"](F.avg_pool2d(x, 2, stride=2))
        low = self._level(d - 1, low) if d > 1 else self._modules["b2_plus_1"](low)
        low = self._modules[f"b3_{d}"](low)
        return up + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class FAN(nn.Module):
    """Face Alignment Network with ``num_modules`` stacked hourglasses (4 = 2DFAN4)."""

    def __init__(self, num_modules: int = 4, num_points: int = NUM_POINTS):
        super().__init__()
        self.num_modules = num_modules
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, 256)
        for i in range(num_modules):
            self.add_module(f"m{i}", HourGlass(4, 256))
            self.add_module(f"top_m_{i}", ConvBlock(256, 256))
            self.add_module(f"conv_last{i}", nn.Conv2d(256, 256, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(256))
            self.add_module(f"l{i}", nn.Conv2d(256, num_points, 1))
            if i < num_modules - 1:
                self.add_module(f"bl{i}", nn.Conv2d(256, 256, 1))
                self.add_module(f"al{i}", nn.Conv2d(num_points, 256, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [n,3,256,256] RGB 0..1 -> heatmaps of the last stack [n,68,64,64]."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.avg_pool2d(self.conv2(x), 2, stride=2)
        x = self.conv4(self.conv3(x))
        prev = x
        heat = x
        for i in range(self.num_modules):
            ll = self._modules[f"top_m_{i}"](self._modules[f"m{i}"](prev))
            ll = F.relu(self._modules[f"bn_end{i}"](self._modules[f"conv_last{i}"](ll)))
            heat = self._modules[f"l{i}"](ll)
            if i < self.num_modules - 1:
                prev = prev + self._modules[f"bl{i}"](ll) + self._modules[f"al{i}"](heat)
        return heat


# ---- geometry ------------------------------------------------------------------------------------------------------
def crop_squares(boxes: np.ndarray) -> np.ndarray:
    """Detector boxes [k,4] -> the square crop regions [k,4] FAN expects (face_alignment convention)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = boxes[:, 2] - w / 2.0
    cy = boxes[:, 3] - h / 2.0 - 0.12 * h
    side = 200.0 * (w + h) / REFERENCE_SCALE
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def heatmaps_to_points(heat: torch.Tensor, squares: np.ndarray) -> np.ndarray:
    """Heatmaps [k,P,64,64] + crop squares [k,4] -> points [k,P,2] (x, y) in frame pixels, and peak values [k,P].

    Argmax, then a quarter-pixel step towards the larger neighbour along x and y (interior peaks only); the heatmap
    cell ``i`` has its centre at ``i + 0.5`` in a [0, 64) frame that spans the crop square."""
    k, p, hh, ww = heat.shape
    hm = heat.float().cpu().numpy().reshape(k * p, hh, ww)
    flat = hm.reshape(k * p, -1)
    idx = flat.argmax(axis=1)
    peak = flat[np.arange(k * p), idx]
    py, px = np.divmod(idx, ww)
    fx = px.astype(np.float64) + 0.5
    fy = py.astype(np.float64) + 0.5
    inner = (px > 0) & (px < ww - 1) & (py > 0) & (py < hh - 1)
    r = np.nonzero(inner)[0]
    dx = hm[r, py[r], px[r] + 1] - hm[r, py[r], px[r] - 1]
    dy = hm[r, py[r] + 1, px[r]] - hm[r, py[r] - 1, px[r]]
    fx[r] += 0.25 * np.sign(dx)
    fy[r] += 0.25 * np.sign(dy)
    sq = np.repeat(np.asarray(squares, dtype=np.float64), p, axis=0)
    x = sq[:, 0] + fx / ww * (sq[:, 2] - sq[:, 0])
    y = sq[:, 1] + fy / hh * (sq[:, 3] - sq[:, 1])
    return np.stack([x, y], axis=1).reshape(k, p, 2).astype(np.float32), peak.reshape(k, p).astype(np.float32)


@torch.inference_mode()
def predict(model: FAN, images: torch.Tensor, image_index: np.ndarray, boxes: np.ndarray,
            batch: int = 16) -> np.ndarray:
    """68 points for each box. ``images`` float [n,3,H,W] RGB 0..255 on the model device; ``image_index`` [k] says
    which image each box [k,4] is on. Returns [k,68,2] float32 frame coordinates."""
    from .mtcnn import roi_resample

    p = next(model.parameters())
    squares = crop_squares(boxes)
    out = []
    for i in range(0, len(squares), batch):
        crops = roi_resample(images, np.asarray(image_index)[i:i + batch], squares[i:i + batch], INPUT_SIZE,
                             max_ratio=4)
        heat = model((crops / 255.0).to(p.dtype))
        out.append(heatmaps_to_points(heat, squares[i:i + batch])[0])
    if not out:
        return np.zeros((0, NUM_POINTS, 2), np.float32)
    return np.concatenate(out)


# ---- weights -------------------------------------------------------------------------------------------------------
def prepare_state_dict(sd: dict, model: nn.Module) -> dict:
    """Strip a ``module.`` prefix and add the BatchNorm counters old files lack (see the module docstring)."""
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros_like(v, device="cpu")
    return sd


def stack_count(sd: dict) -> int:
    """Number of stacked hourglasses in a FAN state dict (4 for 2DFAN4), from its ``l{i}.weight`` heads."""
    n = 0
    while f"l{n}.weight" in sd or f"module.l{n}.weight" in sd:
        n += 1
    return n


def load_fan(path: str, device="cpu", dtype: torch.dtype = torch.float32, num_modules: Optional[int] = None) -> FAN:
    """Load a FAN file; the number of stacks is read from its keys unless given."""
    from .checkpoint import CheckpointError, load_strict, read_state_dict

    sd = read_state_dict(path)
    num_modules = num_modules or stack_count(sd)
    if num_modules < 1:
        raise CheckpointError(f"{path} is not a FAN landmark model (no 'l0.weight' heatmap head among its "
                              f"{len(sd)} keys)")
    model = FAN(num_modules)
    load_strict(model, prepare_state_dict(sd, model), "FAN 68-point landmark model", path)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
