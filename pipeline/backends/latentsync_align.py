"""LatentSync face alignment and paste-back (bytedance/LatentSync latentsync/utils/affine_transform.py, AlignRestore).

Forward: three landmarks (left-brow centre, right-brow centre, nose centre) -> similarity transform onto a fixed
template (float32 torch, unbiased std, SVD with reflection fix) plus the nose-bias "smoothing" whose state the caller
resets at every cut -> bilinear affine warp of the frame into a ``face_size`` crop with fill value 127 -> uint8
truncation -> LANCZOS4 resize to R x R (the network's input, "aligned face").

Backward: the generated R x R face (float, about [-1, 1]) -> bicubic antialiased resize back to the crop size ->
inverse affine warp into the frame -> eroded, feathered crop mask -> truncating blend with the frame. Instead of the
whole frame, the work is done in a window around the face and returned as a :class:`Patch` (pixels outside
it are unchanged), so a 4K frame costs no more than a 720p one.

The warps reproduce kornia 0.8's ``warp_affine`` (``align_corners=True``: pixel -> [-1, 1] normalisation of source and
destination, inverse of the normalised homography, ``affine_grid`` + ``grid_sample``; "fill" padding = zero-padded
warp + (1 - warped ones) * fill). They run in float32 (the original runs float16 on CUDA).

Optional better paste-back (``region=``): only the regenerated lower-face region (the black area of the mouth mask,
dilated and feathered) replaces frame pixels; elsewhere the frame keeps its own pixels instead of their warp ->
Lanczos -> bicubic -> warp-back copy that softens the whole face in the original (LatentSync restore_video, issue #67).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..types import Patch

FILL_VALUE = 127.0


# ---- geometry ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlignGeometry:
    """Template and crop size for face resolution ``resolution`` (AlignRestore): ``ratio = R/256 * 2.8``, template
    ``[[17, 20], [58, 20], [37.5, 40]] * ratio``, crop ``(int(75 ratio), int(100 ratio))`` = (w 210, h 280) at 256."""

    resolution: int
    template: np.ndarray   # float64 [3, 2] (x, y) in crop pixels
    crop_w: int
    crop_h: int


def align_geometry(resolution: int) -> AlignGeometry:
    ratio = resolution / 256 * 2.8
    template = np.array([[19 - 2, 30 - 10], [56 + 2, 30 - 10], [37.5, 45 - 5]], dtype=np.float64) * ratio
    return AlignGeometry(int(resolution), template, int(75 * ratio), int(100 * ratio))


def landmarks3_from_106(landmarks_106: np.ndarray) -> np.ndarray:
    """The three alignment points from InsightFace's 106-point layout, rounded (LatentSync): left brow = mean of points
    43, 48, 49, 51, 50; right brow = mean of 101..105; nose = mean of 74, 77, 83, 86."""
    lm = np.asarray(landmarks_106, dtype=np.float64)
    left = lm[[43, 48, 49, 51, 50]].mean(axis=0)
    right = lm[101:106].mean(axis=0)
    nose = lm[[74, 77, 83, 86]].mean(axis=0)
    return np.round(np.stack([left, right, nose]))


def similarity_transform(points: np.ndarray, template: np.ndarray, p_bias: Optional[torch.Tensor] = None,
                         smooth: bool = True) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """2x3 float32 matrix mapping frame pixels onto the template (AlignRestore), and the updated nose bias.

    Centre both point sets, divide by their unbiased std over all 6 numbers, ``R = V U^T`` from the SVD of
    ``p1^T p2`` (reflection fixed by negating V's last column), ``M = [s R | c2 - s R c1]`` with ``s = s2 / s1``.
    With ``smooth``: ``bias = p2n[2] - p1n[2]`` (nose difference in normalised units), blended ``0.2 old + 0.8 new``
    with the previous bias, and added to the translation (a quirk of the original the model was trained with).
    """
    p1 = torch.tensor(np.asarray(points, dtype=np.float64), dtype=torch.float32)
    p2 = torch.tensor(np.asarray(template, dtype=np.float64), dtype=torch.float32)
    c1 = p1.mean(dim=0)
    c2 = p2.mean(dim=0)
    p1c = p1 - c1
    p2c = p2 - c2
    s1 = torch.std(p1c)
    s2 = torch.std(p2c)
    p1n = p1c / s1
    p2n = p2c / s2
    cov = p1n.T @ p2n
    u, _, vh = torch.linalg.svd(cov)
    v = vh.mH.clone()
    r = v @ u.T
    if torch.det(r) < 0:
        v[:, -1] = -v[:, -1]
        r = v @ u.T
    s_r = (s2 / s1) * r
    t = c2.reshape(2, 1) - (s2 / s1) * (r @ c1.reshape(2, 1))
    m = torch.cat((s_r, t), dim=1)
    if smooth:
        bias = p2n[2] - p1n[2]
        if p_bias is not None:
            bias = p_bias * 0.2 + bias * 0.8
        p_bias = bias
        m[:, 2] = m[:, 2] + bias
    return m, p_bias


# ---- kornia-compatible warps ---------------------------------------------------------------------------------------
def _homography(m: torch.Tensor) -> torch.Tensor:
    """[B, 2, 3] -> [B, 3, 3]."""
    h = F.pad(m, [0, 0, 0, 1], "constant", value=0.0)
    h[..., -1, -1] += 1.0
    return h


def _inverse(m: torch.Tensor) -> torch.Tensor:
    dtype = m.dtype if m.dtype in (torch.float32, torch.float64) else torch.float32
    return torch.linalg.inv(m.to(dtype)).to(m.dtype)


def _pixel_to_normalised(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel -> [-1, 1] (corners at pixel centres, i.e. align_corners=True)."""
    t = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]])
    t[0, 0] = t[0, 0] * 2.0 / (1e-14 if width == 1 else width - 1.0)
    t[1, 1] = t[1, 1] * 2.0 / (1e-14 if height == 1 else height - 1.0)
    return t.unsqueeze(0).to(like)


def invert_affine(m: torch.Tensor) -> torch.Tensor:
    """Inverse of a [B, 2, 3] affine matrix (via its 3x3 homography)."""
    return _inverse(_homography(m))[..., :2, :3]


def _sampling_grid(m: torch.Tensor, src_hw: Tuple[int, int], dst_hw: Tuple[int, int],
                   window: Optional[Tuple[int, int, int, int]] = None) -> torch.Tensor:
    """Grid (B, h, w, 2) for ``grid_sample(align_corners=True)`` that maps destination pixels through ``m^-1``.
    ``window = (y0, y1, x0, x1)`` restricts it to a sub-rectangle of the destination (same values as the full grid)."""
    m3 = _homography(m)
    n_src = _pixel_to_normalised(src_hw[0], src_hw[1], m3)
    n_dst = _pixel_to_normalised(dst_hw[0], dst_hw[1], m3)
    dst_from_src = n_dst @ (m3 @ _inverse(n_src))
    theta = _inverse(dst_from_src)[:, :2, :]
    h, w = dst_hw
    xs = torch.linspace(-1, 1, w, dtype=m.dtype, device=m.device)
    ys = torch.linspace(-1, 1, h, dtype=m.dtype, device=m.device)
    if window is not None:
        y0, y1, x0, x1 = window
        xs, ys = xs[x0:x1], ys[y0:y1]
    gh, gw = ys.numel(), xs.numel()
    base = torch.empty(1, gh, gw, 3, dtype=m.dtype, device=m.device)
    base[..., 0] = xs
    base[..., 1] = ys.unsqueeze(-1)
    base[..., 2] = 1.0
    b = theta.shape[0]
    grid = base.expand(b, gh, gw, 3).reshape(b, gh * gw, 3).bmm(theta.transpose(1, 2))
    return grid.view(b, gh, gw, 2)


def warp_affine(src: torch.Tensor, m: torch.Tensor, dsize: Tuple[int, int], fill: Optional[float] = None,
                window: Optional[Tuple[int, int, int, int]] = None, replicate: bool = False) -> torch.Tensor:
    """Bilinear affine warp ``dst(p) = src(m^-1 p)`` of ``src`` [B, C, H, W] to ``dsize = (h, w)``; ``m`` [B, 2, 3]
    maps source to destination pixels. ``fill=None``: zeros outside; else that constant (kornia "fill" padding);
    ``replicate``: the nearest border pixel outside (a face at the frame's edge, ``edge_faces=pad``).
    ``window`` computes only ``dst[..., y0:y1, x0:x1]``."""
    grid = _sampling_grid(m.to(src.dtype), (src.shape[-2], src.shape[-1]), dsize, window)
    if replicate:
        return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if fill is not None:
        ones = torch.ones_like(src)
        outside = 1 - F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out = out + outside * fill
    return out


def erode2x2(mask: torch.Tensor) -> torch.Tensor:
    """kornia ``erosion`` with a 2x2 ones kernel (origin (1, 1), geodesic border): min over the pixel and its
    up / left / up-left neighbours, out-of-image neighbours ignored."""
    padded = F.pad(mask, [1, 0, 1, 0], mode="constant", value=1e4)
    return -F.max_pool2d(-padded, kernel_size=2, stride=1)


def gaussian_blur(x: torch.Tensor, ksize: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect borders (kornia ``gaussian_blur2d``, odd ``ksize``)."""
    s = torch.tensor([[sigma]], dtype=x.dtype, device=x.device)
    t = torch.arange(ksize, dtype=x.dtype, device=x.device) - float(ksize // 2)
    g = torch.exp(-t.pow(2.0) / (2 * s.pow(2.0)))
    g = (g / g.sum(-1, keepdim=True)).reshape(-1)
    c = x.shape[1]
    half = ksize // 2
    kx = g.flip(0).view(1, 1, 1, ksize).expand(c, 1, 1, ksize)
    ky = g.flip(0).view(1, 1, ksize, 1).expand(c, 1, ksize, 1)
    x = F.conv2d(F.pad(x, [half, half, 0, 0], mode="reflect"), kx, groups=c)
    return F.conv2d(F.pad(x, [0, 0, half, half], mode="reflect"), ky, groups=c)


# ---- forward: frame -> aligned face --------------------------------------------------------------------------------
@dataclass
class AlignedFace:
    face: np.ndarray          # uint8 [R, R, 3], the network input
    crop: np.ndarray          # uint8 [crop_h, crop_w, 3], before the Lanczos resize
    affine: torch.Tensor      # float32 [2, 3], frame pixels -> crop pixels


class FaceAligner:
    """Aligns faces for one face resolution. Holds the nose-bias smoothing state of the original (carried from frame
    to frame in processing order); call :meth:`reset` at every cut / new face run so that it never leaks across shots
    (docs/architecture.md)."""

    def __init__(self, resolution: int, device: torch.device | str = "cpu"):
        self.geometry = align_geometry(resolution)
        self.device = torch.device(device)
        self.p_bias: Optional[torch.Tensor] = None

    def reset(self) -> None:
        self.p_bias = None

    def affine(self, landmarks3: np.ndarray, smooth: bool = True) -> torch.Tensor:
        m, bias = similarity_transform(landmarks3, self.geometry.template, self.p_bias, smooth)
        if smooth:
            self.p_bias = bias
        return m

    def warp(self, frame: np.ndarray, affine: torch.Tensor, replicate: bool = False) -> np.ndarray:
        """Frame uint8 [H, W, 3] -> crop uint8 [crop_h, crop_w, 3] (bilinear, fill 127 outside the frame like the
        original, or the frame's border pixels with ``replicate``; truncation)."""
        g = self.geometry
        src = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device, torch.float32).permute(2, 0, 1)[None]
        out = warp_affine(src, affine.reshape(1, 2, 3).to(self.device), (g.crop_h, g.crop_w), fill=FILL_VALUE,
                          replicate=replicate)
        return out[0].permute(1, 2, 0).cpu().numpy().astype(np.uint8)

    def align(self, frame: np.ndarray, landmarks3: np.ndarray, smooth: bool = True,
              replicate: bool = False) -> AlignedFace:
        import cv2

        m = self.affine(landmarks3, smooth)
        crop = self.warp(frame, m, replicate)
        r = self.geometry.resolution
        face = cv2.resize(crop, (r, r), interpolation=cv2.INTER_LANCZOS4)
        return AlignedFace(face, crop, m)


# ---- backward: generated face -> frame -----------------------------------------------------------------------------
def resize_face_to_crop(faces: torch.Tensor, crop_hw: Tuple[int, int]) -> torch.Tensor:
    """Generated faces [N, 3, R, R] (or [3, R, R]) float -> crop size with bicubic + antialias (torchvision
    ``resize(BICUBIC, antialias=True)`` on float tensors; no rounding, no clamping)."""
    single = faces.dim() == 3
    x = faces[None] if single else faces
    if tuple(x.shape[-2:]) != tuple(crop_hw):
        x = F.interpolate(x, size=tuple(crop_hw), mode="bicubic", align_corners=False, antialias=True)
    return x[0] if single else x


def _window_for(inv: torch.Tensor, crop_hw: Tuple[int, int], frame_hw: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """Frame rectangle containing every pixel the warped crop can touch, plus room for erosion and feathering."""
    ch, cw = crop_hw
    corners = torch.tensor([[-1.0, -1.0, 1.0], [cw, -1.0, 1.0], [-1.0, ch, 1.0], [cw, ch, 1.0]],
                           dtype=torch.float64)
    pts = corners @ inv.reshape(2, 3).double().cpu().T
    x_lo, y_lo = pts.min(dim=0).values.tolist()
    x_hi, y_hi = pts.max(dim=0).values.tolist()
    h, w = frame_hw
    bw, bh = max(1.0, x_hi - x_lo), max(1.0, y_hi - y_lo)
    margin = 2 * (int(math.sqrt(bw * bh)) // 20) + 4
    y0 = max(0, int(math.floor(y_lo)) - margin)
    y1 = min(h, int(math.ceil(y_hi)) + margin + 1)
    x0 = max(0, int(math.floor(x_lo)) - margin)
    x1 = min(w, int(math.ceil(x_hi)) + margin + 1)
    return y0, max(y0, y1), x0, max(x0, x1)


def restore_patch(frame: np.ndarray, face_crop: torch.Tensor, affine: torch.Tensor,
                  region: Optional[torch.Tensor] = None, device: torch.device | str = "cpu",
                  shaped=None) -> Optional[Patch]:
    """Paste a generated face back into its frame (LatentSync AlignRestore.restore_img), as a patch.

    ``frame`` uint8 [H, W, 3]; ``face_crop`` float [3, crop_h, crop_w] in about [-1, 1] (already resized back with
    :func:`resize_face_to_crop`); ``affine`` [2, 3] frame -> crop (as returned by :class:`FaceAligner`).
    ``region``: optional float [h, w] map in aligned-face space (any size, e.g. R x R), 1 where the face was
    regenerated; when given only that region (dilated and feathered) replaces frame pixels.
    ``shaped``: ``((x1, y1, x2, y2), uint8 alpha)`` in frame coordinates (pipeline/backends/shaped_masks.py
    ``shaped_mask``): the ``box`` / ``mouth`` mask, used instead of ``region``.
    The patch's ``alpha`` is the final soft mask, rounded up (above 0 wherever a pixel may change).
    Returns None when the face lies completely outside the frame.
    """
    import cv2

    dev = torch.device(device)
    h, w = frame.shape[:2]
    ch, cw = int(face_crop.shape[-2]), int(face_crop.shape[-1])
    m = affine.reshape(1, 2, 3).to(dev, torch.float32)
    inv = invert_affine(m)
    y0, y1, x0, x1 = _window_for(inv, (ch, cw), (h, w))
    if y1 <= y0 or x1 <= x0:
        return None
    win = (y0, y1, x0, x1)
    face = face_crop.to(dev, torch.float32).reshape(1, 3, ch, cw)
    inv_face = warp_affine(face, inv, (h, w), fill=FILL_VALUE, window=win)[0]
    inv_face = (inv_face / 2 + 0.5).clamp(0, 1) * 255
    ones = torch.ones((1, 1, ch, cw), device=dev, dtype=torch.float32)
    inv_mask = warp_affine(ones, inv, (h, w), window=win)
    mask_e = erode2x2(inv_mask)
    pasted = mask_e[0] * inv_face
    area = torch.sum(mask_e.float())
    w_edge = int(area ** 0.5) // 20
    if w_edge < 1:  # a face of a few pixels: nothing sensible to feather
        return None
    mask_np = mask_e[0, 0].cpu().numpy().astype(np.float32)
    center = cv2.erode(mask_np, np.ones((2 * w_edge, 2 * w_edge), np.uint8))
    center_t = torch.from_numpy(center).to(dev)[None, None]
    k = 2 * w_edge + 1
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    soft = gaussian_blur(center_t, k, sigma)[0]
    if shaped is not None:
        soft = soft * _shaped_weight(shaped, win, dev)
    elif region is not None:
        soft = soft * _region_weight(region, (ch, cw), inv, (h, w), win, w_edge, dev)
    src = torch.from_numpy(np.ascontiguousarray(frame[y0:y1, x0:x1])).to(dev, torch.float32).permute(2, 0, 1)
    out = soft * pasted + (1 - soft) * src
    pixels = out.permute(1, 2, 0).contiguous().to(torch.uint8).cpu().numpy()
    # shrink to where anything changed (soft > 0), so the patch stays small
    nz = (soft[0] > 0).cpu().numpy()
    if not nz.any():
        return None
    rows = np.flatnonzero(nz.any(axis=1))
    cols = np.flatnonzero(nz.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    alpha = torch.ceil(soft[0] * 255).clamp(0, 255).to(torch.uint8).cpu().numpy()
    return Patch(y0 + r0, y0 + r1, x0 + c0, x0 + c1, pixels[r0:r1, c0:c1], alpha[r0:r1, c0:c1])


def _shaped_weight(shaped, win: Tuple[int, int, int, int], dev: torch.device) -> torch.Tensor:
    """A frame-space shaped mask ``((x1, y1, x2, y2), uint8 alpha)`` cut to the window ``(y0, y1, x0, x1)``, 0..1."""
    (bx1, by1, bx2, by2), alpha = shaped
    y0, y1, x0, x1 = win
    out = np.zeros((y1 - y0, x1 - x0), np.float32)
    ys, ye, xs, xe = max(y0, by1), min(y1, by2), max(x0, bx1), min(x1, bx2)
    if ye > ys and xe > xs:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = alpha[ys - by1:ye - by1, xs - bx1:xe - bx1] / 255.0
    return torch.from_numpy(out).to(dev)[None]


def _region_weight(region: torch.Tensor, crop_hw: Tuple[int, int], inv: torch.Tensor, frame_hw: Tuple[int, int],
                   win: Tuple[int, int, int, int], w_edge: int, dev: torch.device) -> torch.Tensor:
    """Feathered frame-space weight of the regenerated region: aligned-space map -> crop size -> inverse warp ->
    dilated by ``w_edge`` -> Gaussian feather of the same width, so the fade happens outside the regenerated area,
    where the pasted face is a resampled copy of the frame itself."""
    import cv2

    r = region.to(dev, torch.float32).reshape(1, 1, region.shape[-2], region.shape[-1])
    r = F.interpolate(r, size=crop_hw, mode="bilinear", align_corners=False)
    rw = warp_affine(r, inv, frame_hw, window=win)[0, 0].cpu().numpy()
    rw = (rw > 0.5).astype(np.float32)
    rw = cv2.dilate(rw, np.ones((2 * w_edge + 1, 2 * w_edge + 1), np.uint8))
    k = 2 * w_edge + 1
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    return gaussian_blur(torch.from_numpy(rw).to(dev)[None, None], k, sigma)[0]


def regen_region_from_mask(mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Regenerated region (1 = generated) from a LatentSync mask (1 = keep; [3, R, R], [R, R] or [R, R, 3])."""
    m = torch.as_tensor(np.asarray(mask), dtype=torch.float32)
    if m.dim() == 3:
        m = m[0] if m.shape[0] in (1, 3) else m[..., 0]
    return 1.0 - m


def restore_frame(frame: np.ndarray, face_crop: torch.Tensor, affine: torch.Tensor,
                  region: Optional[torch.Tensor] = None, device: torch.device | str = "cpu") -> np.ndarray:
    """Whole output frame (uint8 [H, W, 3]) = ``frame`` with :func:`restore_patch` applied."""
    patch = restore_patch(frame, face_crop, affine, region=region, device=device)
    return frame.copy() if patch is None else patch.apply(frame)


def faces_to_uint8(faces: torch.Tensor) -> np.ndarray:
    """Generated faces [N, 3, R, R] float -> uint8 [N, R, R, 3]: trunc(clamp(x / 2 + 0.5, 0, 1) * 255) (restore_img)."""
    x = (faces.permute(0, 2, 3, 1) / 2 + 0.5).clamp(0, 1)
    return (x * 255).to(torch.uint8).cpu().numpy()
