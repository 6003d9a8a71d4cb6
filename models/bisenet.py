"""BiSeNet face parser (19 CelebAMask-HQ classes) for MuseTalk's blending mask (MuseTalk face_parsing).

Key-compatible with the released ``face-parse-bisent/79999_iter.pth`` (191 state-dict keys including BatchNorm
buffers, 13,300,416 parameters: fixtures ``manifest_bisenet.json``). The ResNet-18 backbone is written here (no
torchvision). Structure:

* ``cp`` (context path): ResNet-18 features at strides 8/16/32 (128/256/512 channels); attention refinement modules
  ``arm16``/``arm32`` (conv-BN-ReLU, then a channel gate from global average pooling through a 1x1 conv, BN and a
  sigmoid); a global context branch ``conv_avg`` (1x1 conv-BN-ReLU on the pooled stride-32 features, broadcast back);
  ``conv_head32``/``conv_head16`` (3x3 conv-BN-ReLU after nearest-neighbour 2x upsampling).
* ``ffm`` (feature fusion): concatenates the stride-8 backbone features with the refined context, 1x1 conv-BN-ReLU,
  then a squeeze-excitation style gate (``conv1`` -> ReLU -> ``conv2`` -> sigmoid) applied as ``f + f * gate``.
* ``conv_out``/``conv_out16``/``conv_out32``: 3x3 conv-BN-ReLU + 1x1 classifier, upsampled bilinearly
  (``align_corners=True``) to the input size. Only ``conv_out`` is used at inference (``outputs[0]``).

Class labels: 0 bg, 1 skin, 2/3 brows, 4/5 eyes, 6 glasses, 7/8 ears, 9 earring, 10 nose, 11 mouth, 12 upper lip,
13 lower lip, 14 neck, 15 necklace, 16 cloth, 17 hair, 18 hat.
"""
from __future__ import annotations

from typing import Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointError, load_strict, read_state_dict

NUM_CLASSES = 19
NUM_PARAMETERS = 13_300_416
NUM_KEYS = 191
WEIGHTS_RELPATH = "face-parse-bisent/79999_iter.pth"
# ImageNet statistics of the parser's input normalisation (MuseTalk FaceParsing).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class ResidualBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity or 1x1-conv-BN shortcut (``downsample``), ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(skip + y)


class ResNet18Features(nn.Module):
    """ResNet-18 trunk returning the stride 8, 16 and 32 feature maps."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
        for i, (cin, cout, stride) in enumerate(widths, start=1):
            setattr(self, f"layer{i}", nn.Sequential(ResidualBlock(cin, cout, stride), ResidualBlock(cout, cout, 1)))

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        s8 = self.layer2(x)
        s16 = self.layer3(s8)
        s32 = self.layer4(s16)
        return s8, s16, s32


class AttentionRefinement(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3, 1, 1)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x):
        feat = self.conv(x)
        gate = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean(dim=(2, 3), keepdim=True))))
        return feat * gate


class ContextPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet = ResNet18Features()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3, 1, 1)
        self.conv_head16 = ConvBNReLU(128, 128, 3, 1, 1)
        self.conv_avg = ConvBNReLU(512, 128, 1, 1, 0)

    def forward(self, x):
        s8, s16, s32 = self.resnet(x)
        context = self.conv_avg(s32.mean(dim=(2, 3), keepdim=True))
        up32 = self.arm32(s32) + F.interpolate(context, size=s32.shape[2:], mode="nearest")
        up32 = self.conv_head32(F.interpolate(up32, size=s16.shape[2:], mode="nearest"))
        up16 = self.arm16(s16) + up32
        up16 = self.conv_head16(F.interpolate(up16, size=s8.shape[2:], mode="nearest"))
        return s8, up16, up32


class FeatureFusion(nn.Module):
    def __init__(self, cin: int = 256, cout: int = 256):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, 1, 1, 0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial, context):
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean(dim=(2, 3), keepdim=True)))))
        return feat + feat * gate


class SegmentationHead(nn.Module):
    def __init__(self, cin: int, mid: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid, 3, 1, 1)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face parser; ``forward(x [B,3,H,W] ImageNet-normalised)`` -> ``(logits, aux16, aux32)``, each ``[B,19,H,W]``."""

    def __init__(self, n_classes: int = NUM_CLASSES):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = SegmentationHead(256, 256, n_classes)
        self.conv_out16 = SegmentationHead(128, 64, n_classes)
        self.conv_out32 = SegmentationHead(128, 64, n_classes)

    def forward(self, x, with_aux: bool = True):
        size = x.shape[2:]
        s8, ctx8, ctx16 = self.cp(x)
        out = F.interpolate(self.conv_out(self.ffm(s8, ctx8)), size=size, mode="bilinear", align_corners=True)
        if not with_aux:
            return (out,)
        aux16 = F.interpolate(self.conv_out16(ctx8), size=size, mode="bilinear", align_corners=True)
        aux32 = F.interpolate(self.conv_out32(ctx16), size=size, mode="bilinear", align_corners=True)
        return out, aux16, aux32

    @torch.no_grad()
    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` float ``[B,3,H,W]`` in 0..1 (RGB) -> uint8 labels ``[B,H,W]`` (argmax of the main head)."""
        p = next(self.parameters())
        mean = torch.tensor(MEAN, device=p.device, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(STD, device=p.device, dtype=torch.float32).view(1, 3, 1, 1)
        x = ((images.to(p.device, torch.float32) - mean) / std).to(p.dtype)
        return self(x, with_aux=False)[0].argmax(dim=1).to(torch.uint8)


def build_bisenet(device: Union[str, torch.device, None] = None) -> BiSeNet:
    if device is None:
        return BiSeNet(NUM_CLASSES)
    with torch.device(device):
        return BiSeNet(NUM_CLASSES)


def load_bisenet(weights: Union[str, Mapping[str, torch.Tensor]], dtype: Optional[torch.dtype] = None) -> BiSeNet:
    """Load ``79999_iter.pth`` strictly (a wrong file raises :class:`CheckpointError`). Eval mode, CPU."""
    source = weights if isinstance(weights, str) else None
    sd = read_state_dict(weights) if isinstance(weights, str) else dict(weights)
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}  # saved from DataParallel
    model = build_bisenet(device="meta")
    load_strict(model, sd, "BiSeNet face parser", source, assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise CheckpointError(f"BiSeNet: tensors not initialised by the file: {leftover[:5]}")
    model = model.float() if dtype is None else model.to(dtype=dtype)
    return model.eval().requires_grad_(False)
