"""LatentSync 1.5 / 1.6 as a lip-sync backend (LatentSync LipsyncPipeline): chunks of consecutive face frames.

A chunk is at most 16 consecutive output frames with a face, in one shot, showing consecutive source frames (the
ping-pong turn repeats one); it never spans a cut or a cutaway. Faces are aligned once per source frame, in
processing order, with the nose-bias smoothing reset at every cut and every cutaway gap; the affine of each source
frame is kept, the aligned pixels in a bounded cache. The engine (:mod:`.latentsync_engine`) denoises the chunk and
:mod:`.latentsync_align` pastes each face back as a patch.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..runtime import Runtime
from ..types import FaceSequence, LipSyncError, Patch
from .base import LRU, Unit
from .latentsync_engine import MAX_CHUNK_FRAMES as MAX_CHUNK   # frames per chunk (the original's num_frames)

VERSIONS = ("latentsync-1.6", "latentsync-1.5")
AUDIO_LAYOUT = "latentsync"


def face_chunks(source: np.ndarray, faces: FaceSequence, start: int, stop: int, max_len: int
                ) -> List[Tuple[int, int, bool]]:
    """Split output frames ``[start, stop)`` into ``(k0, k1, is_face)`` segments: face chunks are consecutive output
    frames with a face, in one shot, showing consecutive source frames, at most ``max_len`` long; cutaway runs are
    their own segments (LatentSync's temporal layers span a chunk)."""
    out: List[Tuple[int, int, bool]] = []
    k = start
    while k < stop:
        if faces.frames[int(source[k])].face is None:
            j = k + 1
            while j < stop and faces.frames[int(source[j])].face is None:
                j += 1
            out.append((k, j, False))
            k = j
            continue
        j = k + 1
        while j < stop and j - k < max_len:
            s2, s1 = int(source[j]), int(source[j - 1])
            f2 = faces.frames[s2]
            if f2.face is None or f2.shot != faces.frames[s1].shot or abs(s2 - s1) > 1:
                break
            j += 1
        out.append((k, j, True))
        k = j
    return out


class LatentSyncBackend:
    """Runs LatentSync on chunks of at most 16 frames."""

    audio_layout = AUDIO_LAYOUT
    unit_label = "chunk length"
    default_unit = MAX_CHUNK

    def __init__(self, engine, name: str, better_paste: bool = True, cache: int = 64, blend=None):
        from .blending import blend_options

        self.engine = engine
        self.name = name
        self.better_paste = better_paste
        self.blend = blend_options(blend)     # box / mouth replace the own paste-back mask; other modes keep it
        self.aligner = engine.aligner()
        self.affines: Dict[int, torch.Tensor] = {}
        self.aligned = LRU(cache)
        self.shaped = LRU(cache)            # source frame -> its box / mouth mask (a ping-pong repeats frames)
        self._last = None  # (shot, source index) of the last aligned frame

    def unit_at(self, source: np.ndarray, faces: FaceSequence, k: int, stop: int, size: int) -> Unit:
        return face_chunks(source, faces, k, min(stop, k + 4 * MAX_CHUNK), size)[0]

    def forget(self, sources: Sequence[int]) -> None:
        """Affines stay (a re-warp of an evicted face must not disturb the smoothing); pixels are a bounded cache."""

    def patches(self, ks: Sequence[int], srcs: Sequence[int], src_u8: Dict[int, np.ndarray], faces: FaceSequence,
                windows: torch.Tensor) -> List[Optional[Patch]]:
        aligned = []
        for s in srcs:                       # a cancel is honoured between frames and between DDIM steps
            self.engine._check_cancelled()
            aligned.append(self._aligned_face(s, src_u8[s], faces))
        out = self.engine.sync_chunk(np.stack(aligned), windows, frame_start=int(ks[0]), output="float")
        restored = []
        for j, s in enumerate(srcs):
            self.engine._check_cancelled()
            restored.append(self.engine.restore(src_u8[s], out[j], self.affines[s], better_paste=self.better_paste,
                                                shaped=self._shaped(s, faces.frames[s].face)))
        return restored

    def _shaped(self, s: int, face):
        """The ``box`` / ``mouth`` mask of source frame ``s``'s face when one was asked for
        (pipeline/backends/shaped_masks.py), drawn once per source frame."""
        if not self.blend.shaped:
            return None
        mask = self.shaped.get(s)
        if mask is None:
            from .shaped_masks import shaped_mask

            mask = shaped_mask(face.crop_box, self.blend, face.detection.landmarks)
            self.shaped.put(s, mask)
        return mask

    def _aligned_face(self, s: int, frame_u8: np.ndarray, faces: FaceSequence) -> np.ndarray:
        import cv2

        face = self.aligned.get(s)
        if face is not None:
            return face
        ff = faces.frames[s]
        replicate = (faces.params or {}).get("edge_faces") == "pad"   # pipeline/faces/cropbox.py EDGE_FACES
        if s in self.affines:  # evicted: re-warp with the affine it had (smoothing state untouched)
            crop = self.aligner.warp(frame_u8, self.affines[s], replicate)
            r = self.engine.resolution
            face = cv2.resize(crop, (r, r), interpolation=cv2.INTER_LANCZOS4)
        else:
            if self._last is None or self._last[0] != ff.shot or abs(self._last[1] - s) != 1:
                self.aligner.reset()  # a cut or a gap: the smoothing starts afresh
            pts = ff.face.align_points
            if pts is None:
                raise LipSyncError(f"frame {s}: the face has no alignment points (re-run Face Detect)")
            a = self.aligner.align(frame_u8, np.asarray(pts, dtype=np.float64), replicate=replicate)
            self.affines[s] = a.affine
            face = a.face
            self._last = (ff.shot, s)
        self.aligned.put(s, face)
        return face


def required_weights(version: str) -> List[Tuple[str, ...]]:
    """The weight files LatentSync ``version`` needs, as registry keys."""
    from .latentsync_engine import required_weights as keys

    return [(k,) for k in keys(version.split("-")[-1])]


def latentsync_present(version: str) -> bool:
    """True when the LatentSync UNet file of ``version`` ('latentsync-1.6' / '1.6') is on disk."""
    from ...models import registry

    key = f"latentsync{version.split('-')[-1].replace('.', '')}.unet"
    return key in registry.REGISTRY and registry.find(key) is not None


def open_latentsync(name: str, runtime: Runtime, auto_download: bool, steps: int, guidance: float,
                    deepcache: bool, seed: int, better_paste: bool, blend=None) -> LatentSyncBackend:
    """Load (or reuse) the engine of ``name`` ('latentsync-1.6' / 'latentsync-1.5'); ``blend``: the run's blend
    options (only ``box`` and ``mouth`` change LatentSync's paste-back)."""
    from .latentsync_engine import load_latentsync_cached

    engine = load_latentsync_cached(name.split("-")[-1], runtime, auto_download, steps=steps, guidance=guidance,
                                    deepcache=deepcache, seed=seed)
    return LatentSyncBackend(engine, name, better_paste=better_paste, blend=blend)
