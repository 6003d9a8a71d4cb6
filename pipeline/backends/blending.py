"""Paste a generated 256x256 face back into its frame (MuseTalk blending.py, get_image), as a patch.

Faithful path (modes ``jaw`` — the v1.5 default —, ``raw``, ``neck``), per frame:

1. the face is resized to the crop box, ``cv2.resize(face, (x2-x1, y2-y1))`` with INTER_LINEAR;
2. the *expanded square* around the box: centre ``((x1+x2)//2, (y1+y2)//2)``, half side
   ``s = int(max(w, h)//2 * 1.5)``; ``face_large`` = that square cut from the frame (black outside the frame);
3. a face-parsing mask of ``face_large`` (BiSeNet at 512x512, then the jaw/raw/neck rules), resized back to the
   square with PIL BICUBIC, kept only inside the box and only on the rows ``>= int(0.5 * side)`` (below the box
   centre), blurred with ``cv2.GaussianBlur(k, k)``, ``k = int(ratio * side // 2 * 2) + 1`` (ratio 0.05 offline, 0.1 in
   the original realtime mode);
4. the resized face is pasted into ``face_large`` at the box, and ``face_large`` is alpha-composited onto the frame
   with that mask (PIL's integer blend).

The original works on BGR frames converted to PIL RGB and back; every step is per channel, so running it on our RGB
frames gives the channel-swapped identical result. Pixels outside the expanded square (clipped to the frame) never
change, so the result is returned as a :class:`Patch` ``(y0, y1, x0, x1, pixels)`` that :meth:`~..types.Patch.apply`
writes into the frame; only pixels under a non-zero mask differ from the input.

``feather`` mode (no weights needed, the default when the BiSeNet file is missing): the mask is the lower half of an
ellipse inscribed in the crop box — centred on the box's horizontal centre and on the square's centre row (the
MuseTalk mask line), half-axes ``w/2 - m - 1`` and ``(y2 - centre) - m - 1`` with ``m = k//2`` so that after
the Gaussian blur (``k`` from ratio 0.1) the soft edge stays inside the box. It covers mouth, chin and lower cheeks,
fades out towards the jaw line and the nose, and needs no network.

**Shaped masks** (modes ``box`` and ``mouth``, no weights needed): drawn by pipeline/backends/shaped_masks.py in frame
coordinates and placed here in the expanded square (:func:`shaped_blend_mask`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..types import Patch
from .shaped_masks import DEFAULT_DILATE_PX, DEFAULT_FEATHER_PX, DILATE_RANGE, FEATHER_RANGE, shaped_mask
from .shaped_masks import int_box as _int_box

PARSE_SIZE = 512
PARSER_MODES = ("jaw", "raw", "neck")       # need the BiSeNet face parser
SHAPED_MODES = ("box", "mouth")             # drawn from the crop box and the landmarks (LatentSync takes these too)
MODES = PARSER_MODES + ("feather",) + SHAPED_MODES
BLEND_CHOICES = ("auto",) + MODES   # what a user may ask for: auto picks jaw with the face parser, else feather
SKIN, NOSE, MOUTH, UPPER_LIP, LOWER_LIP, NECK = 1, 10, 11, 12, 13, 14
OFFLINE_BLUR_RATIO = 0.05     # MuseTalk musetalk/utils/blending.py get_image (what scripts/inference.py pastes with)
REALTIME_BLUR_RATIO = 0.1     # realtime get_image_prepare_material
FEATHER_BLUR_RATIO = 0.1


@dataclass(frozen=True)
class BlendOptions:
    """How a generated face is pasted: the mode, and the shaped masks' ``feather_px`` / ``dilate_px``."""

    mode: str = "auto"
    feather_px: int = DEFAULT_FEATHER_PX
    dilate_px: int = DEFAULT_DILATE_PX

    def __post_init__(self):
        if self.mode not in BLEND_CHOICES:
            raise ValueError(f"blend_mode: unknown value {self.mode!r}; use one of {', '.join(BLEND_CHOICES)}")
        for name, value, (lo, hi) in (("feather_px", self.feather_px, FEATHER_RANGE),
                                      ("dilate_px", self.dilate_px, DILATE_RANGE)):
            if not lo <= int(value) <= hi:
                raise ValueError(f"{name}: {value} is outside {lo}..{hi}")

    @property
    def shaped(self) -> bool:
        return self.mode in SHAPED_MODES

    def resolved(self) -> "BlendOptions":
        """``auto`` made concrete (:func:`resolve_blend_mode`)."""
        return BlendOptions(resolve_blend_mode(self.mode), self.feather_px, self.dilate_px)


def blend_options(value) -> BlendOptions:
    """A :class:`BlendOptions` from itself or a mode name."""
    return value if isinstance(value, BlendOptions) else BlendOptions(str(value or "auto"))


@dataclass
class BlendMask:
    """The alpha mask (uint8 ``[side, side]``) over the expanded square ``crop_box`` = ``(x0, y0, x1, y1)``.

    It depends only on the source frame and its box (never on the generated face), so it can be computed once per
    source frame and reused (what the original realtime mode precomputes).
    """
    crop_box: Tuple[int, int, int, int]
    mask: np.ndarray


# ---- geometry ------------------------------------------------------------------------------------------------------
def expanded_crop_box(box: Sequence[float], expand: float = 1.5) -> Tuple[int, int, int, int]:
    """The square around the face box (original ``get_crop_box``): half side ``int(max(w, h)//2 * expand)``."""
    x1, y1, x2, y2 = _int_box(box)
    xc, yc = (x1 + x2) // 2, (y1 + y2) // 2
    s = int(max(x2 - x1, y2 - y1) // 2 * expand)
    return xc - s, yc - s, xc + s, yc + s


def resize_face(face: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """``cv2.resize(face, (x2-x1, y2-y1))`` with the default INTER_LINEAR (MuseTalk scripts/inference.py)."""
    import cv2

    x1, y1, x2, y2 = _int_box(box)
    return cv2.resize(np.ascontiguousarray(face, dtype=np.uint8), (x2 - x1, y2 - y1))


def _cut(frame: np.ndarray, crop_box: Tuple[int, int, int, int]) -> np.ndarray:
    """``PIL.Image.crop`` semantics: the region of ``frame`` under ``crop_box``, zero (black) outside the frame."""
    x0, y0, x1, y1 = crop_box
    h, w = frame.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0) + frame.shape[2:], dtype=frame.dtype)
    ys, ye, xs, xe = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
    if ye > ys and xe > xs:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = frame[ys:ye, xs:xe]
    return out


# ---- face-parsing masks (MuseTalk FaceParsing) ----------------------------------------------------------------
def jaw_dilation_kernel() -> np.ndarray:
    """33x33 kernel, anchor at the centre: rows 0-9 empty, a widening cone on rows 10-20 (row r: columns
    ``16-(r-10) .. 16+(r-10)``), then rows 21-32 at the cone's full width (columns 6..26). Dilating skin with it
    grows the mask downwards (over the chin and jaw) but not upwards."""
    k = np.zeros((33, 33), np.uint8)
    for r in range(10, 21):
        k[r, 16 - (r - 10):16 + (r - 10) + 1] = 1
    k[21:, 6:27] = 1
    return k


def cheek_erosion_kernel() -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (35, 3))


def cheek_band_mask(left_width: int = 90, right_width: int = 90, size: int = PARSE_SIZE) -> np.ndarray:
    """255 on columns ``0 .. c-left`` and ``c+right .. size-1`` (inclusive, ``c = size//2``), else 0."""
    m = np.zeros((size, size), np.uint8)
    c = size // 2
    m[:, :max(0, c - left_width + 1)] = 255
    m[:, c + right_width:] = 255
    return m


def parsing_mask(labels: np.ndarray, mode: str = "jaw", left_cheek_width: int = 90,
                 right_cheek_width: int = 90) -> np.ndarray:
    """19-class label map ``[512, 512]`` -> 0/255 uint8 mask (MuseTalk FaceParsing.__call__).

    ``raw``: skin, mouth and lips. ``neck``: those plus neck. ``jaw``: skin dilated downwards by
    :func:`jaw_dilation_kernel`; inside the two cheek bands that dilation is eroded twice with a flat 35x3 ellipse;
    then nose pixels are removed and mouth/lips added.
    """
    import cv2

    labels = np.asarray(labels)
    if mode == "raw":
        keep = np.isin(labels, [SKIN, MOUTH, UPPER_LIP, LOWER_LIP])
    elif mode == "neck":
        keep = np.isin(labels, [SKIN, MOUTH, UPPER_LIP, LOWER_LIP, NECK])
    elif mode == "jaw":
        skin = np.where(labels == SKIN, 255, 0).astype(np.uint8)
        dilated = cv2.dilate(skin, jaw_dilation_kernel(), iterations=1)
        eroded = cv2.erode(dilated, cheek_erosion_kernel(), iterations=2)
        bands = cheek_band_mask(left_cheek_width, right_cheek_width, labels.shape[0])
        region = cv2.bitwise_or(cv2.bitwise_and(eroded, bands), cv2.bitwise_and(dilated, cv2.bitwise_not(bands)))
        keep = ((region == 255) & (labels != NOSE)) | np.isin(labels, [MOUTH, UPPER_LIP, LOWER_LIP])
    else:
        raise ValueError(f"parsing mode must be one of jaw, raw, neck; got {mode!r}")
    return np.where(keep, 255, 0).astype(np.uint8)


class FaceParser:
    """BiSeNet face parsing of the expanded face squares (FaceParsing): PIL BILINEAR resize to 512x512, ToTensor,
    ImageNet normalisation, argmax of the main head."""

    def __init__(self, net, runtime=None, left_cheek_width: int = 90, right_cheek_width: int = 90):
        import torch

        from ..runtime import Runtime

        self.runtime = runtime or Runtime()
        dtype = self.runtime.dtype if self.runtime.device.type != "cpu" else torch.float32
        self.net = self.runtime.prepare_model(net.eval(), dtype)
        self.left, self.right = left_cheek_width, right_cheek_width

    def labels(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 images (any sizes) -> uint8 label maps ``[n, 512, 512]``."""
        import torch
        from PIL import Image

        if not len(images):
            return np.zeros((0, PARSE_SIZE, PARSE_SIZE), np.uint8)
        arr = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(im)).resize((PARSE_SIZE, PARSE_SIZE),
                                                                                      Image.BILINEAR))
                        for im in images])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
        with torch.inference_mode():
            return self.net.labels(x).cpu().numpy()

    def masks(self, images: Sequence[np.ndarray], mode: str = "jaw") -> List[np.ndarray]:
        return [parsing_mask(lab, mode, self.left, self.right) for lab in self.labels(images)]


def load_face_parser(runtime=None, auto_download: bool = True, left_cheek_width: int = 90,
                     right_cheek_width: int = 90) -> FaceParser:
    """BiSeNet from ``face-parse-bisent/79999_iter.pth`` (registry key ``face_parse.bisenet``), kept in the model
    cache (pipeline/model_cache.py)."""
    from ...models import registry
    from ...models.bisenet import load_bisenet
    from .. import model_cache

    from ..runtime import Runtime

    runtime = runtime or Runtime()
    path = registry.ensure(["face_parse.bisenet"], auto_download=auto_download)["face_parse.bisenet"]
    key = (model_cache.file_stamp([path]), str(runtime.device), str(runtime.dtype))   # one copy per device/dtype
    net = model_cache.cached("backends.face_parser", key, lambda: load_bisenet(path))
    return FaceParser(net, runtime, left_cheek_width, right_cheek_width)


def resolve_blend_mode(requested: str = "auto") -> str:
    """``auto`` -> ``jaw`` when the BiSeNet weights are on disk, else ``feather`` (which needs no weights)."""
    if requested != "auto":
        if requested not in MODES:
            raise ValueError(f"blend mode must be auto or one of {', '.join(MODES)}; got {requested!r}")
        return requested
    from ...models import registry

    return "jaw" if registry.find("face_parse.bisenet") else "feather"


# ---- masks over the expanded square ----------------------------------------------------------------------------
def _blur(mask: np.ndarray, ratio: float) -> np.ndarray:
    import cv2

    k = int(ratio * mask.shape[1] // 2 * 2) + 1
    return cv2.GaussianBlur(mask, (k, k), 0)


def mask_from_parsing(parse_mask_512: np.ndarray, box: Sequence[float], blur_ratio: float = OFFLINE_BLUR_RATIO,
                      upper_boundary_ratio: float = 0.5, expand: float = 1.5) -> BlendMask:
    """The blend mask from a 512x512 parsing mask of ``face_large`` (MuseTalk blending.py ``get_image`` /
    ``get_image_prepare_material``): resize BICUBIC to the square, keep the box, keep the lower part, blur."""
    from PIL import Image

    x1, y1, x2, y2 = _int_box(box)
    crop_box = expanded_crop_box(box, expand)
    xs, ys = crop_box[0], crop_box[1]
    side = (crop_box[2] - crop_box[0], crop_box[3] - crop_box[1])
    seg = Image.fromarray(np.ascontiguousarray(parse_mask_512, dtype=np.uint8)).resize(side, Image.BICUBIC)
    rel = (x1 - xs, y1 - ys, x2 - xs, y2 - ys)
    in_box = Image.new("L", side, 0)
    in_box.paste(seg.crop(rel), rel)
    width, height = side
    top = int(height * upper_boundary_ratio)
    lower = Image.new("L", side, 0)
    lower.paste(in_box.crop((0, top, width, height)), (0, top))
    return BlendMask(crop_box, _blur(np.array(lower), blur_ratio))


def feather_mask(box: Sequence[float], blur_ratio: float = FEATHER_BLUR_RATIO, upper_boundary_ratio: float = 0.5,
                 expand: float = 1.5) -> BlendMask:
    """The weight-free mask of ``feather`` mode (see the module docstring)."""
    import cv2

    x1, y1, x2, y2 = _int_box(box)
    crop_box = expanded_crop_box(box, expand)
    xs, ys = crop_box[0], crop_box[1]
    width, height = crop_box[2] - crop_box[0], crop_box[3] - crop_box[1]
    k = int(blur_ratio * width // 2 * 2) + 1
    margin = k // 2
    top = int(height * upper_boundary_ratio)
    mask = np.zeros((height, width), np.uint8)
    cx = (x1 + x2 - 2 * xs) / 2.0
    ax = (x2 - x1) / 2.0 - margin - 1  # the ellipse covers its end pixels: keep the blurred edge inside
    ay = (y2 - ys) - top - margin - 1
    if ax >= 1 and ay >= 1:
        shift = 4  # sub-pixel centre/axes for cv2.ellipse
        cv2.ellipse(mask, (int(round(cx * (1 << shift))), int(round(top * (1 << shift)))),
                    (int(round(ax * (1 << shift))), int(round(ay * (1 << shift)))), 0, 0, 360, 255, -1,
                    cv2.LINE_8, shift)
        mask[:top] = 0
    return BlendMask(crop_box, cv2.GaussianBlur(mask, (k, k), 0))


def shaped_blend_mask(box: Sequence[float], options: BlendOptions, landmarks=None, expand: float = 1.5) -> BlendMask:
    """:func:`shaped_mask` placed in the expanded square of MuseTalk's paste-back."""
    (x1, y1, x2, y2), alpha = shaped_mask(box, options, landmarks)
    crop_box = expanded_crop_box(box, expand)
    xs, ys = crop_box[0], crop_box[1]
    mask = np.zeros((crop_box[3] - ys, crop_box[2] - xs), np.uint8)
    mask[y1 - ys:y2 - ys, x1 - xs:x2 - xs] = alpha
    return BlendMask(crop_box, mask)


def prepare_blend_mask(frame: np.ndarray, box: Sequence[float], mode: str = "jaw", parser: Optional[FaceParser] = None,
                       labels: Optional[np.ndarray] = None, blur_ratio: Optional[float] = None,
                       upper_boundary_ratio: float = 0.5, expand: float = 1.5, left_cheek_width: int = 90,
                       right_cheek_width: int = 90, landmarks=None) -> BlendMask:
    """The blend mask for one source frame (RGB uint8 ``[H, W, 3]``) and its face box ``(x1, y1, x2, y2)``.

    ``mode``: a mode name or :class:`BlendOptions` (the shaped modes' feather and dilation). ``jaw``/``raw``/``neck``
    need the 19-class labels of the expanded square: given as ``labels`` (512x512), or computed by ``parser``.
    ``blur_ratio`` defaults to 0.05 (offline) for those and 0.1 for ``feather``. ``box``/``mouth`` read the face's
    ``landmarks`` (68 or 5 points).
    """
    if isinstance(mode, BlendOptions):
        if mode.shaped:
            return shaped_blend_mask(box, mode, landmarks, expand)
        mode = mode.mode
    if mode in SHAPED_MODES:
        return shaped_blend_mask(box, BlendOptions(mode), landmarks, expand)
    if mode == "feather":
        return feather_mask(box, FEATHER_BLUR_RATIO if blur_ratio is None else blur_ratio, upper_boundary_ratio,
                            expand)
    if mode not in MODES:
        raise ValueError(f"blend mode must be one of {', '.join(MODES)}; got {mode!r}")
    if labels is None:
        if parser is None:
            raise ValueError(f"blend mode {mode!r} needs the face parser (BiSeNet weights); use mode 'feather' "
                             "to blend without them")
        labels = parser.labels([_cut(frame, expanded_crop_box(box, expand))])[0]
        left_cheek_width, right_cheek_width = parser.left, parser.right
    pm = parsing_mask(labels, mode, left_cheek_width, right_cheek_width)
    return mask_from_parsing(pm, box, OFFLINE_BLUR_RATIO if blur_ratio is None else blur_ratio,
                             upper_boundary_ratio, expand)


def prepare_blend_masks(frames: Sequence[np.ndarray], boxes: Sequence[Sequence[float]], mode="jaw",
                        parser: Optional[FaceParser] = None, landmarks: Optional[Sequence] = None) -> List[BlendMask]:
    """:func:`prepare_blend_mask` for several frames and their boxes: the face parser labels all their expanded
    squares in one batch (the parser modes); ``landmarks``: one entry per frame (or None)."""
    landmarks = list(landmarks) if landmarks is not None else [None] * len(boxes)
    name = mode.mode if isinstance(mode, BlendOptions) else mode
    if name not in PARSER_MODES or parser is None or not len(boxes):
        return [prepare_blend_mask(f, b, mode, parser, landmarks=lm) for f, b, lm in zip(frames, boxes, landmarks)]
    labels = parser.labels([_cut(f, expanded_crop_box(b)) for f, b in zip(frames, boxes)])
    return [prepare_blend_mask(f, b, name, labels=lab, left_cheek_width=parser.left, right_cheek_width=parser.right)
            for f, b, lab in zip(frames, boxes, labels)]


# ---- compositing --------------------------------------------------------------------------------------------------
def blend_face(frame: np.ndarray, face: np.ndarray, box: Sequence[float], blend_mask: BlendMask) -> Patch:
    """Composite ``face`` (the generated 256x256 face, or already resized to the box) onto ``frame`` through
    ``blend_mask`` (original ``get_image_blending``). Returns the changed region as a :class:`Patch`; ``frame`` is not
    modified."""
    from PIL import Image

    x1, y1, x2, y2 = _int_box(box)
    if face.shape[:2] != (y2 - y1, x2 - x1):
        face = resize_face(face, box)
    cx0, cy0, cx1, cy1 = blend_mask.crop_box
    if blend_mask.mask.shape != (cy1 - cy0, cx1 - cx0):
        raise ValueError(f"blend mask {blend_mask.mask.shape} does not match its crop box {blend_mask.crop_box}")
    large = Image.fromarray(_cut(frame, blend_mask.crop_box))
    large.paste(Image.fromarray(np.ascontiguousarray(face, dtype=np.uint8)), (x1 - cx0, y1 - cy0, x2 - cx0, y2 - cy0))
    h, w = frame.shape[:2]
    y0, y1c, x0, x1c = max(0, cy0), min(h, cy1), max(0, cx0), min(w, cx1)
    if y1c <= y0 or x1c <= x0:
        return Patch(0, 0, 0, 0, np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.uint8))
    region = Image.fromarray(np.ascontiguousarray(frame[y0:y1c, x0:x1c]))
    rel = (x0 - cx0, y0 - cy0, x1c - cx0, y1c - cy0)
    alpha = Image.fromarray(blend_mask.mask).crop(rel)
    region.paste(large.crop(rel), (0, 0), alpha)
    return Patch(y0, y1c, x0, x1c, np.array(region), np.array(alpha))


def paste_face(frame: np.ndarray, face: np.ndarray, box: Sequence[float], mode: str = "feather",
               parser: Optional[FaceParser] = None, labels: Optional[np.ndarray] = None,
               blur_ratio: Optional[float] = None, **kw) -> Patch:
    """:func:`prepare_blend_mask` + :func:`blend_face` for one frame (the original offline ``get_image`` when
    ``mode='jaw'`` and the default blur ratio)."""
    return blend_face(frame, face, box, prepare_blend_mask(frame, box, mode, parser, labels, blur_ratio, **kw))
