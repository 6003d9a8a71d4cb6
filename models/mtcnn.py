"""MTCNN face detector (Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks"), in pure torch and batched over frames.

Three networks run as a cascade:

* **P-Net** (fully convolutional, 12x12 receptive field, stride 2) scans an image pyramid and proposes windows;
* **R-Net** (24x24 crops) rejects most of them and refines the boxes;
* **O-Net** (48x48 crops) gives the final score, box refinement and 5 landmarks (image-left eye, image-right eye,
  nose tip, image-left mouth corner, image-right mouth corner).

Each stage keeps windows above its threshold (default 0.6 / 0.7 / 0.7), applies non-maximum suppression, applies the
predicted box offsets (fractions of the window width/height) and, before R-Net and O-Net, squares the windows.

The parameter names and shapes are those of the converted Caffe weights shipped in the ``facenet-pytorch`` wheel
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``, plain state dicts), so those files load unchanged. Two conventions of
those converted weights matter:

* inputs are RGB, normalised as ``(x - 127.5) / 128``;
* the fully connected layers of R-Net and O-Net read the last feature map flattened in (width, height, channel)
  order (the original Caffe models were trained on transposed images).

Geometry uses continuous, half-open pixel coordinates: pixel ``i`` covers ``[i, i+1)``, a box ``(x1, y1, x2, y2)``
has width ``x2 - x1``. Crops are resampled with :func:`roi_resample` (an area-style average of bilinear samples,
like RoIAlign), batched per frame, so the whole cascade runs on any torch device. Post-processing (thresholds, NMS)
is done in numpy on the CPU: after P-Net the candidate lists are short.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHT_NAMES = ("pnet", "rnet", "onet")
REGISTRY_KEYS = {name: f"mtcnn.{name}" for name in WEIGHT_NAMES}   # folder "musetalk", relpath "mtcnn/<name>.pt"


# ---- networks ------------------------------------------------------------------------------------------------------
def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, W*H*C] in (width, height, channel) order, the order the converted weights expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal network: 12x12 window classifier run convolutionally (output stride 2)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)   # face / not-face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)   # box offsets dx1, dy1, dx2, dy2

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu1(self.conv1(x))
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        prob = torch.softmax(self.conv4_1(x).float(), dim=1)[:, 1]
        return prob, self.conv4_2(x).float()


class RNet(nn.Module):
    """Refinement network on 24x24 crops."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu1(self.conv1(x))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = self.prelu2(self.conv2(x))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_whc(x)))
        prob = torch.softmax(self.dense5_1(x).float(), dim=1)[:, 1]
        return prob, self.dense5_2(x).float()


class ONet(nn.Module):
    """Output network on 48x48 crops: score, box offsets and 5 landmarks (x1..x5, y1..y5 as window fractions)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.prelu1(self.conv1(x))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = self.prelu2(self.conv2(x))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x))
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_whc(x)))
        prob = torch.softmax(self.dense6_1(x).float(), dim=1)[:, 1]
        return prob, self.dense6_2(x).float(), self.dense6_3(x).float()


NETWORKS = {"pnet": PNet, "rnet": RNet, "onet": ONet}


# ---- geometry helpers (numpy, CPU) ---------------------------------------------------------------------------------
def box_iou_one(box: np.ndarray, boxes: np.ndarray, mode: str = "union") -> np.ndarray:
    """Overlap of one box [4] with boxes [N,4]: intersection over union, or over the smaller area (``mode="min"``)."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area = max(0.0, (box[2] - box[0])) * max(0.0, (box[3] - box[1]))
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    denom = np.minimum(area, areas) if mode == "min" else area + areas - inter
    return inter / np.maximum(denom, 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union",
        groups: Optional[np.ndarray] = None) -> np.ndarray:
    """Greedy non-maximum suppression. Returns the indices kept, best score first.

    A box is dropped when its overlap (IoU, or intersection over the smaller area for ``mode="min"``) with an
    already kept, higher-scoring box exceeds ``threshold``. With ``groups`` (one integer per box), boxes of different
    groups never suppress each other (they are shifted apart before the overlap test).
    """
    n = len(scores)
    if n == 0:
        return np.zeros((0,), dtype=np.int64)
    b = boxes.astype(np.float64, copy=True)
    if groups is not None and len(np.unique(groups)) > 1:
        span = float(b.max() - b.min()) + 1.0
        b += (groups.astype(np.float64) * 2.0 * span)[:, None]
    order = np.argsort(-scores, kind="stable")
    b = b[order]
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        if i + 1 < n:
            ov = box_iou_one(b[i], b[i + 1:], mode)
            suppressed[i + 1:] |= ov > threshold
    return order[np.asarray(keep, dtype=np.int64)]


def apply_offsets(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Box regression: each edge moves by its offset times the window width (x) or height (y)."""
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return boxes + offsets * np.concatenate([w, h, w, h], axis=1)


def to_square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square of side max(w, h) around the same centre."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    cx = boxes[:, 0] + w / 2
    cy = boxes[:, 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


# ---- crop resampling (torch, any device) ---------------------------------------------------------------------------
def roi_resample(images: torch.Tensor, image_index: np.ndarray, boxes: np.ndarray, size: int,
                 max_ratio: int = 4) -> torch.Tensor:
    """Resample the box regions of a batch of images to ``size x size`` crops.

    ``images`` [n,C,H,W] float, ``image_index`` [K] int (which image each box is on), ``boxes`` [K,4] float in
    continuous pixel coordinates (may extend past the image: outside is zero, i.e. black for raw 0..255 images).
    Each output pixel is the mean of ``r x r`` bilinear samples spread over its footprint, with ``r`` the
    power of two >= footprint size (at most ``max_ratio``): an area average when shrinking, bilinear when enlarging.
    Returns [K,C,size,size] in the images' dtype, on their device.
    """
    k = len(boxes)
    n, c, h, w = images.shape
    out = images.new_zeros((k, c, size, size))
    if k == 0:
        return out
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    image_index = np.asarray(image_index).reshape(-1)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / size
    ratio = np.clip(2 ** np.ceil(np.log2(np.maximum(side, 1.0))), 1, max_ratio).astype(np.int64)
    # Box edges in grid_sample's normalised coordinates (align_corners=False: -1/+1 are the outer pixel edges).
    norm = np.stack([2 * boxes[:, 0] / w - 1, 2 * boxes[:, 1] / h - 1, 2 * boxes[:, 2] / w - 1,
                     2 * boxes[:, 3] / h - 1], axis=1)
    norm_t = torch.from_numpy(norm).to(images.device, torch.float32)
    for b in np.unique(image_index):
        for r in np.unique(ratio[image_index == b]):
            r = int(r)
            sel = np.nonzero((image_index == b) & (ratio == r))[0]
            m = size * r
            t = (torch.arange(m, device=images.device, dtype=torch.float32) + 0.5) / m       # [m] in (0,1)
            nb = norm_t[torch.from_numpy(sel).to(images.device)]                              # [k,4]
            gx = nb[:, 0:1] + t[None] * (nb[:, 2:3] - nb[:, 0:1])                             # [k,m]
            gy = nb[:, 1:2] + t[None] * (nb[:, 3:4] - nb[:, 1:2])
            grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # [k,m,m,2]
            grid = grid.reshape(1, len(sel) * m, m, 2).to(images.dtype)
            s = F.grid_sample(images[int(b):int(b) + 1], grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False)                                            # [1,C,k*m,m]
            if r > 1:
                s = F.avg_pool2d(s, r)                                                        # [1,C,k*size,size]
            out[torch.from_numpy(sel).to(images.device)] = s.reshape(c, len(sel), size, size).transpose(0, 1)
    return out


# ---- the cascade ---------------------------------------------------------------------------------------------------
@dataclass
class MTCNNConfig:
    min_face_size: float = 20.0            # smallest face searched, in pixels of the image given to detect()
    thresholds: Tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709                  # pyramid scale step (area halves every two levels)
    nms_pnet_scale: float = 0.5            # within one pyramid level
    nms_pnet: float = 0.7                  # across levels
    nms_rnet: float = 0.7
    nms_onet: float = 0.7                  # "min" overlap (intersection over the smaller box)


class MTCNN:
    """The three-stage cascade. ``detect`` takes a batch of same-size RGB images and returns, per image, numpy
    ``boxes`` [k,4] (x1,y1,x2,y2), ``scores`` [k] and ``landmarks`` [k,5,2], best score first."""

    def __init__(self, pnet: PNet, rnet: RNet, onet: ONet, config: Optional[MTCNNConfig] = None):
        self.pnet, self.rnet, self.onet = pnet.eval(), rnet.eval(), onet.eval()
        self.config = config or MTCNNConfig()

    @property
    def device(self) -> torch.device:
        return self.pnet.conv1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pnet.conv1.weight.dtype

    def pyramid_scales(self, height: int, width: int, min_face_size: Optional[float] = None) -> List[float]:
        cfg = self.config
        s = 12.0 / float(min_face_size or cfg.min_face_size)
        scales = []
        while min(height, width) * s >= 12.0:
            scales.append(s)
            s *= cfg.factor
        return scales

    @staticmethod
    def _normalise(x: torch.Tensor) -> torch.Tensor:
        return (x - 127.5) * (1.0 / 128.0)

    @torch.inference_mode()
    def detect(self, images: torch.Tensor, min_face_size: Optional[float] = None,
               thresholds: Optional[Sequence[float]] = None, net_batch: int = 512) -> List[Dict[str, np.ndarray]]:
        """``images``: float [n,3,H,W], RGB values 0..255, on the model device. The three stages of the cascade:
        P-Net proposals over the pyramid, R-Net refinement, O-Net scores, offsets and landmarks."""
        cfg = self.config
        t1, t2, t3 = thresholds or cfg.thresholds
        images = images.to(self.device, self.dtype)
        n = images.shape[0]
        empty = [{"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros((0,), np.float32),
                  "landmarks": np.zeros((0, 5, 2), np.float32)} for _ in range(n)]
        proposals = self._propose(images, min_face_size, t1)
        if proposals is None:
            return empty
        boxes, img = proposals

        # Stage 2: R-Net on 24x24 crops.
        prob, reg = self._run(self.rnet, images, img, boxes, 24, net_batch)
        sel = prob > t2
        boxes, scores, reg, img = boxes[sel], prob[sel], reg[sel], img[sel]
        if len(boxes) == 0:
            return empty
        keep = nms(boxes, scores, cfg.nms_rnet, groups=img)
        boxes = to_square(apply_offsets(boxes[keep], reg[keep]))
        img = img[keep]

        # Stage 3: O-Net on 48x48 crops: score, offsets, landmarks.
        prob, reg, lm = self._run(self.onet, images, img, boxes, 48, net_batch)
        sel = prob > t3
        boxes, scores, reg, lm, img = boxes[sel], prob[sel], reg[sel], lm[sel], img[sel]
        if len(boxes) == 0:
            return empty
        w = (boxes[:, 2] - boxes[:, 0])[:, None]
        h = (boxes[:, 3] - boxes[:, 1])[:, None]
        points = np.stack([boxes[:, 0:1] + w * lm[:, :5], boxes[:, 1:2] + h * lm[:, 5:]], axis=2)   # [k,5,2]
        boxes = apply_offsets(boxes, reg)
        keep = nms(boxes, scores, cfg.nms_onet, mode="min", groups=img)
        out = []
        for b in range(n):
            k = keep[img[keep] == b]                                                # already best-first
            out.append({"boxes": boxes[k].astype(np.float32), "scores": scores[k].astype(np.float32),
                        "landmarks": points[k].astype(np.float32)})
        return out

    def _propose(self, images: torch.Tensor, min_face_size: Optional[float], t1: float):
        """Stage 1: P-Net over the pyramid -> (square candidate boxes, their image index), or None. Each level is
        area-resampled from the previous one (cheaper than from the full image every time)."""
        cfg = self.config
        height, width = images.shape[2:]
        boxes_l, scores_l, offs_l, img_l = [], [], [], []
        level = images
        for s in self.pyramid_scales(height, width, min_face_size):
            hs, ws = max(12, int(math.ceil(height * s))), max(12, int(math.ceil(width * s)))
            sy, sx = hs / height, ws / width
            if (hs, ws) != tuple(level.shape[2:]):
                level = F.interpolate(level, size=(hs, ws), mode="area")
            # channels-last is about twice as fast for these thin convolutions on the CPU (and fine elsewhere)
            prob, reg = self.pnet(self._normalise(level).contiguous(memory_format=torch.channels_last))
            prob = prob.cpu().numpy()
            bi, yi, xi = np.nonzero(prob >= t1)
            if len(bi) == 0:
                continue
            reg = reg.permute(0, 2, 3, 1).cpu().numpy()[bi, yi, xi]                 # [k, 4]
            win = np.stack([2.0 * xi / sx, 2.0 * yi / sy, (2.0 * xi + 12) / sx, (2.0 * yi + 12) / sy], axis=1)
            sc = prob[bi, yi, xi]
            keep = nms(win, sc, cfg.nms_pnet_scale, groups=bi)
            boxes_l.append(win[keep])
            scores_l.append(sc[keep])
            offs_l.append(reg[keep])
            img_l.append(bi[keep])
        if not boxes_l:
            return None
        boxes, scores = np.concatenate(boxes_l), np.concatenate(scores_l)
        offs, img = np.concatenate(offs_l), np.concatenate(img_l)
        keep = nms(boxes, scores, cfg.nms_pnet, groups=img)
        return to_square(apply_offsets(boxes[keep], offs[keep])), img[keep]

    def _run(self, net: nn.Module, images: torch.Tensor, img: np.ndarray, boxes: np.ndarray, size: int,
             net_batch: int):
        outs = []
        for i in range(0, len(boxes), net_batch):
            crops = roi_resample(images, img[i:i + net_batch], boxes[i:i + net_batch], size)
            crops = self._normalise(crops).contiguous(memory_format=torch.channels_last)
            outs.append([o.cpu().numpy().astype(np.float64) for o in net(crops)])
        return [np.concatenate(parts) for parts in zip(*outs)]


# ---- weights -------------------------------------------------------------------------------------------------------
def wheel_weight_paths() -> Optional[Dict[str, str]]:
    """Paths of ``pnet.pt``/``rnet.pt``/``onet.pt`` inside an installed ``facenet-pytorch`` distribution (which is
    not imported: it needs torchvision), or None when it is not installed or lacks them."""
    candidates = []
    try:
        import importlib.metadata as md

        dist = md.distribution("facenet-pytorch")
        candidates.append(str(dist.locate_file("facenet_pytorch/data")))
    except Exception:
        pass
    try:
        import importlib.util

        spec = importlib.util.find_spec("facenet_pytorch")   # finds the package without executing it
        for loc in (spec.submodule_search_locations or []) if spec else []:
            candidates.append(os.path.join(loc, "data"))
    except Exception:
        pass
    for d in candidates:
        paths = {name: os.path.join(d, f"{name}.pt") for name in WEIGHT_NAMES}
        if all(os.path.isfile(p) for p in paths.values()):
            return paths
    return None


def build_networks() -> Dict[str, nn.Module]:
    return {name: cls() for name, cls in NETWORKS.items()}


def load_mtcnn(paths: Dict[str, str], device="cpu", dtype: torch.dtype = torch.float32,
               config: Optional[MTCNNConfig] = None) -> MTCNN:
    """Build the cascade from ``{"pnet": path, "rnet": path, "onet": path}`` (plain state dicts, strict keys)."""
    from .checkpoint import load_strict, read_state_dict

    nets = build_networks()
    for name, net in nets.items():
        load_strict(net, read_state_dict(paths[name]), f"MTCNN {name}", paths[name])
        net.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return MTCNN(nets["pnet"], nets["rnet"], nets["onet"], config)
