"""S3FD face detector (Zhang et al. 2017, "S3FD: Single Shot Scale-invariant Face Detector"), batched, pure torch.

The detector used by the original MuseTalk preprocessing as a presence gate and fallback box (preprocessing.py).
Parameter names and shapes are those of the released ``s3fd-619a316812.pth`` (65 keys, 22,459,110 parameters;
fixture ``manifest_s3fd.json``), so the file loads unchanged.

Architecture (from the paper):

* VGG16 trunk ``conv1_1`` .. ``conv5_3`` (3x3, ReLU, 2x2 max-pool after each block), ``fc6`` (3x3, padding 3,
  no dilation: the released SFD_trained model was trained that way, so its fc7 map is 4 cells larger than the
  stride-32 grid; face_alignment's definition is the same) and ``fc7`` (1x1) as convolutions, extra layers
  ``conv6_1/conv6_2`` and ``conv7_1/conv7_2`` (1x1 then 3x3 stride 2).
* Six detection levels: ``conv3_3``, ``conv4_3``, ``conv5_3`` (each L2-normalised over channels and scaled by a
  learned per-channel weight: ``conv*_norm.weight``), ``fc7``, ``conv6_2``, ``conv7_2``; strides 4..128.
* A 3x3 classification head (``*_mbox_conf``) and a 3x3 box head (``*_mbox_loc``) per level, one square anchor per
  location of side 4x the stride, centred on the cell. ``conv3_3`` uses "max-out background": 3 background logits
  whose maximum competes with the 1 face logit (the 4-channel ``conv3_3_norm_mbox_conf``).
* Boxes decode SSD-style with variances 0.1 (centre) and 0.2 (log size).

Post-processing as MuseTalk's sfd: softmax score > 0.05, NMS at IoU 0.3, then keep > 0.5 (the caller's
threshold). Preprocessing (:func:`preprocess`): RGB minus ``[104, 117, 123]`` (BGR means applied to RGB, a quirk of
the original kept because the released weights were used that way), full image, no resizing by default.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .mtcnn import nms

REGISTRY_KEY = "s3fd"                 # folder "musetalk", relpath "s3fd/s3fd-619a316812.pth"
MEAN = (104.0, 117.0, 123.0)          # subtracted from R, G, B (sic)
VARIANCES = (0.1, 0.2)
LEVELS = ("conv3_3", "conv4_3", "conv5_3", "fc7", "conv6_2", "conv7_2")
STRIDES = (4, 8, 16, 32, 64, 128)
_VGG = (("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128), ("conv2_2", 128, 128),
        ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
        ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512),
        ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512))
_POOL_AFTER = {"conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"}


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (state key ``weight``)."""

    def __init__(self, channels: int, scale: float, eps: float = 1e-10):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.float().pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return (x.float() / norm).to(x.dtype) * self.weight.view(1, -1, 1, 1)


class S3FD(nn.Module):
    def __init__(self):
        super().__init__()
        for name, cin, cout in _VGG:
            self.add_module(name, nn.Conv2d(cin, cout, 3, padding=1))
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=3)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.conv6_1 = nn.Conv2d(1024, 256, 1)
        self.conv6_2 = nn.Conv2d(256, 512, 3, stride=2, padding=1)
        self.conv7_1 = nn.Conv2d(512, 128, 1)
        self.conv7_2 = nn.Conv2d(128, 256, 3, stride=2, padding=1)
        self.conv3_3_norm = L2Norm(256, 10.0)
        self.conv4_3_norm = L2Norm(512, 8.0)
        self.conv5_3_norm = L2Norm(512, 5.0)
        heads = {"conv3_3_norm": (256, 4), "conv4_3_norm": (512, 2), "conv5_3_norm": (512, 2), "fc7": (1024, 2),
                 "conv6_2": (512, 2), "conv7_2": (256, 2)}
        for src, (cin, nconf) in heads.items():
            self.add_module(f"{src}_mbox_conf", nn.Conv2d(cin, nconf, 3, padding=1))
            self.add_module(f"{src}_mbox_loc", nn.Conv2d(cin, 4, 3, padding=1))
        self._heads = list(heads)

    def forward(self, x: torch.Tensor):
        """``x`` [n,3,H,W] preprocessed. Returns per level ``(face_prob [n,h,w], loc [n,4,h,w])`` (float32)."""
        feats = {}
        for name, _, _ in _VGG:
            x = F.relu(getattr(self, name)(x))
            if name in _POOL_AFTER:
                feats[name] = x
                x = F.max_pool2d(x, 2, 2)
        x = F.relu(self.fc6(x))
        x = F.relu(self.fc7(x))
        feats["fc7"] = x
        x = F.relu(self.conv6_1(x))
        x = F.relu(self.conv6_2(x))
        feats["conv6_2"] = x
        x = F.relu(self.conv7_1(x))
        x = F.relu(self.conv7_2(x))
        feats["conv7_2"] = x
        sources = [self.conv3_3_norm(feats["conv3_3"]), self.conv4_3_norm(feats["conv4_3"]),
                   self.conv5_3_norm(feats["conv5_3"]), feats["fc7"], feats["conv6_2"], feats["conv7_2"]]
        out = []
        for head, src in zip(self._heads, sources):
            conf = getattr(self, f"{head}_mbox_conf")(src).float()
            loc = getattr(self, f"{head}_mbox_loc")(src).float()
            if conf.shape[1] == 4:   # max-out background label
                conf = torch.cat([conf[:, :3].amax(dim=1, keepdim=True), conf[:, 3:]], dim=1)
            out.append((torch.softmax(conf, dim=1)[:, 1], loc))
        return out


def preprocess(rgb: torch.Tensor) -> torch.Tensor:
    """uint8/float RGB [n,H,W,3] -> float [n,3,H,W] minus the (BGR-order) means, as MuseTalk's sfd_detector."""
    x = rgb.permute(0, 3, 1, 2).float()
    return x - torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)


def decode(level_outputs, score_threshold: float = 0.05, nms_threshold: float = 0.3,
           keep_threshold: float = 0.5, scale_xy=(1.0, 1.0)) -> List[Dict[str, np.ndarray]]:
    """Anchor decoding + NMS per image. Returns per image ``boxes`` [k,4] (x1,y1,x2,y2) and ``scores``, best first.
    ``scale_xy`` multiplies the boxes (to map a resized input back to frame pixels)."""
    n = level_outputs[0][0].shape[0]
    per_img = [([], []) for _ in range(n)]
    for (prob, loc), stride in zip(level_outputs, STRIDES):
        p = prob.cpu().numpy()
        bi, yi, xi = np.nonzero(p > score_threshold)
        if len(bi) == 0:
            continue
        lv = loc.permute(0, 2, 3, 1).cpu().numpy()[bi, yi, xi].astype(np.float64)   # [k,4]
        cx = stride / 2.0 + xi * stride
        cy = stride / 2.0 + yi * stride
        a = stride * 4.0
        bcx = cx + lv[:, 0] * VARIANCES[0] * a
        bcy = cy + lv[:, 1] * VARIANCES[0] * a
        bw = a * np.exp(lv[:, 2] * VARIANCES[1])
        bh = a * np.exp(lv[:, 3] * VARIANCES[1])
        boxes = np.stack([bcx - bw / 2, bcy - bh / 2, bcx + bw / 2, bcy + bh / 2], axis=1)
        scores = p[bi, yi, xi].astype(np.float64)
        for b in np.unique(bi):
            m = bi == b
            per_img[b][0].append(boxes[m])
            per_img[b][1].append(scores[m])
    sx, sy = scale_xy
    out = []
    for boxes_l, scores_l in per_img:
        if not boxes_l:
            out.append({"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros((0,), np.float32)})
            continue
        boxes, scores = np.concatenate(boxes_l), np.concatenate(scores_l)
        keep = nms(boxes, scores, nms_threshold)
        keep = keep[scores[keep] > keep_threshold]
        boxes = boxes[keep] * np.array([sx, sy, sx, sy])
        out.append({"boxes": boxes.astype(np.float32), "scores": scores[keep].astype(np.float32)})
    return out


@torch.inference_mode()
def detect(model: S3FD, rgb: torch.Tensor, score_threshold: float = 0.05, nms_threshold: float = 0.3,
           keep_threshold: float = 0.5, max_short_side: Optional[int] = None) -> List[Dict[str, np.ndarray]]:
    """Detect faces in ``rgb`` [n,H,W,3] (uint8 or 0..255 float, any device). ``max_short_side`` optionally runs
    on a smaller copy (area resampling) and maps the boxes back; None keeps the original full-resolution behaviour."""
    p = next(model.parameters())
    x = preprocess(rgb.to(p.device))
    h, w = x.shape[2:]
    scale = (1.0, 1.0)
    if max_short_side and min(h, w) > max_short_side:
        f = max_short_side / min(h, w)
        nh, nw = max(1, round(h * f)), max(1, round(w * f))
        x = F.interpolate(x, size=(nh, nw), mode="area")
        scale = (w / nw, h / nh)
    return decode(model(x.to(p.dtype)), score_threshold, nms_threshold, keep_threshold, scale)


def load_s3fd(path: str, device="cpu", dtype: torch.dtype = torch.float32) -> S3FD:
    from .checkpoint import load_strict, read_state_dict

    model = S3FD()
    load_strict(model, read_state_dict(path), "S3FD face detector", path)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
