"""MuseTalk v1.5 as a lip-sync backend (TMElyralab/MuseTalk scripts/inference.py): batches of any output frames.

Per source frame, once: the face crop's VAE latents (kept while a later output frame shows that source frame, so a
ping-pong loop reuses them) and the blend mask (bounded cache). Per batch: one UNet step and a VAE decode
(:mod:`.musetalk_engine`), then each face is blended into its frame (:mod:`.blending`) and returned as a patch.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..runtime import Runtime
from ..types import FaceSequence, Patch
from . import frame_ops
from .base import LRU, Unit

NAME = "musetalk-v1.5"
AUDIO_LAYOUT = "musetalk"


class MuseTalkBackend:
    """Runs MuseTalk v1.5 on batches of output frames (the run's batch size)."""

    name = NAME
    audio_layout = AUDIO_LAYOUT
    unit_label = "batch size"
    default_unit = None   # the run's batch size

    def __init__(self, engine, blend_mode, parser=None, mask_cache: int = 256):
        from .blending import blend_options

        self.engine = engine
        self.blend = blend_options(blend_mode)         # a mode name, or BlendOptions (shaped masks' sizes)
        self.blend_mode = self.blend.mode
        self.parser = parser
        self.latents: Dict[int, torch.Tensor] = {}      # source frame -> [8, 32, 32] (computed once)
        self.masks = LRU(mask_cache)                     # source frame -> BlendMask
        self._frames_up = None                           # frame_ops=torch: the staging of frames to the device

    def unit_at(self, source: np.ndarray, faces: FaceSequence, k: int, stop: int, size: int) -> Unit:
        return k, min(stop, k + size), True

    def forget(self, sources: Sequence[int]) -> None:
        for s in sources:
            self.latents.pop(s, None)

    def patches(self, ks: Sequence[int], srcs: Sequence[int], src_u8: Dict[int, np.ndarray], faces: FaceSequence,
                windows: torch.Tensor) -> List[Optional[Patch]]:
        """One UNet step and a VAE decode for the batch, then each face pasted into its frame: with OpenCV and
        Pillow on the CPU, or (``runtime.frame_ops`` = torch) with the same arithmetic on the device
        (:mod:`.frame_ops`), the unit's source frames sent there once."""
        on_device = self._on_device()
        frames = self._uploader().upload(src_u8, srcs) if on_device else None
        need = sorted({s for s in srcs if s not in self.latents})
        if need:
            boxes = [faces.frames[s].face.crop_box for s in need]
            if on_device:
                crops = frame_ops.crop_faces([frames[s] for s in need], boxes)
            else:
                from .musetalk_engine import crop_faces

                crops = crop_faces(np.stack([src_u8[s] for s in need]), boxes)
            for s, latent in zip(need, self.engine.encode_reference(crops)):
                self.latents[s] = latent
            self._cancel_point()
        predicted = self.engine.denoise(torch.stack([self.latents[s] for s in srcs]), windows)
        self._cancel_point()
        decoded = self.engine.decode(predicted)
        masks = self._blend_masks(srcs, src_u8, faces)
        if on_device:
            generated = frame_ops.postprocess_decoded(decoded)
            paste = lambda s, face, box, mask: frame_ops.blend_face(frames[s], face, box, mask.crop_box,  # noqa: E731
                                                                     mask.mask)
        else:
            from .blending import blend_face
            from .musetalk_engine import postprocess_decoded

            generated = postprocess_decoded(decoded)
            paste = lambda s, face, box, mask: blend_face(src_u8[s], face, box, mask)  # noqa: E731
        out = []
        for face, s in zip(generated, srcs):
            self._cancel_point()            # between the frames of the paste-back
            out.append(paste(s, face, faces.frames[s].face.crop_box, masks[s]))
        return out

    def _blend_masks(self, srcs: Sequence[int], src_u8: Dict[int, np.ndarray], faces: FaceSequence) -> Dict:
        """The blend mask of each source frame: cached, the missing ones made together (one face-parser batch)."""
        from .blending import prepare_blend_masks

        have = {s: self.masks.get(s) for s in dict.fromkeys(srcs)}
        need = [s for s, m in have.items() if m is None]
        if need:
            made = prepare_blend_masks([src_u8[s] for s in need], [faces.frames[s].face.crop_box for s in need],
                                       self.blend, self.parser,
                                       [faces.frames[s].face.detection.landmarks for s in need])
            for s, mask in zip(need, made):
                self.masks.put(s, mask)
                have[s] = mask
        return have

    def _on_device(self) -> bool:
        runtime = getattr(self.engine, "runtime", None)
        return bool(runtime is not None and getattr(runtime, "device_frames", False))

    def _uploader(self):
        if self._frames_up is None:
            self._frames_up = frame_ops.DeviceFrames(self.engine.device)
        return self._frames_up

    def _cancel_point(self) -> None:
        """Between network calls and frames: a cancel stops the run here, not only between batches."""
        runtime = getattr(self.engine, "runtime", None)
        if runtime is not None:
            runtime.check_cancelled()


def required_weights(blend_mode: str = "auto") -> List[Tuple[str, ...]]:
    """The weight files MuseTalk needs, each as its acceptable registry keys (the sd-vae ``.bin`` stands in for its
    ``.safetensors``); the face parser only for the parser blend modes."""
    from .blending import PARSER_MODES, blend_options
    from .musetalk_engine import WEIGHT_KEYS

    need = [("sd_vae.weights", "sd_vae.weights_bin") if k == "sd_vae.weights" else (k,) for k in WEIGHT_KEYS]
    if blend_options(blend_mode).mode in PARSER_MODES:
        need.append(("face_parse.bisenet",))
    return need


def open_musetalk(runtime: Runtime, auto_download: bool, posterior: str, blend_mode) -> MuseTalkBackend:
    """Load (or reuse) the generator, and the face parser when the blend mode needs it. ``blend_mode``: a mode name
    or :class:`~.blending.BlendOptions`."""
    from .blending import PARSER_MODES, blend_options, load_face_parser
    from .musetalk_engine import load_musetalk

    engine = load_musetalk(runtime, auto_download, posterior=posterior)
    blend = blend_options(blend_mode).resolved()
    parser = load_face_parser(runtime, auto_download) if blend.mode in PARSER_MODES else None
    return MuseTalkBackend(engine, blend, parser)
