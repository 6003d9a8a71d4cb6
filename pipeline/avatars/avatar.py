"""Real-time avatars (spec musetalk.md §2): a face video prepared once, then any voice spoken through it fast.

Everything that depends only on the video is computed by :func:`prepare_avatar` and stored (pipeline/avatars/
store.py): the frames, the face decisions (cutaways included: they are kept and spoken bit-identical), the crop
boxes, MuseTalk's VAE latents of each face and each face's blend mask. :meth:`Avatar.speak` then costs only whisper,
the UNet step, the VAE decode and the paste: it runs the one lip-sync entry point (:class:`~..lipsync.LipSyncRun`)
on the stored frames with a MuseTalk backend whose per-frame caches are filled from the folder, so the output has
the avatar's fps, one frame per ``1/fps`` of audio (rounded up: nothing of the voice is dropped), and loops the frames
ping-pong like the original when the voice is longer than the clip.

Differences from the original's real-time mode, deliberately: a clip with face-less frames can be prepared (the
original fails, #224), nothing prompts, the clip's own fps is kept (not forced to 25), the last frame is kept, and the
precision follows the runtime (not forced fp16).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from ..media.frames import Frames
from ..runtime import Runtime
from ..types import Detection, Face, FaceSequence, FrameFaces
from . import store
from .store import AvatarError

LOOP = "ping-pong"   # the original's frame cycle (spec musetalk §1.6); the plan's follow_audio policy


# ---- identity: when an avatar must be prepared again --------------------------------------------------------------
def file_identity(path: str) -> Dict:
    """What identifies a source file: absolute path, size and modification time."""
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": int(st.st_size), "mtime": float(st.st_mtime)}


def frames_identity(frames: Frames) -> Dict:
    """What identifies frames given in memory (an IMAGE batch): a digest of their pixels."""
    digest = hashlib.sha1()
    for batch in frames.iter_batches(32):
        digest.update(np.ascontiguousarray(batch.rgb).tobytes())
    return {"sha1": digest.hexdigest(), "frames": len(frames), "width": frames.width, "height": frames.height}


def weights_identity() -> Dict:
    """The files the stored latents and masks depend on: the VAE (latents) and the face parser (masks)."""
    from ...models import registry

    out = {}
    for key in ("sd_vae.weights", "sd_vae.weights_bin", "face_parse.bisenet"):
        path = registry.find(key)
        if path:
            out[key] = {"file": os.path.basename(path), "size": int(os.path.getsize(path))}
    return out


# ---- preparing -----------------------------------------------------------------------------------------------------
def prepare_avatar(name: str, frames: Frames, faces: FaceSequence, runtime: Optional[Runtime] = None, *,
                   source: Dict, settings: Dict, engine=None, parser=None, blend_mode: str = "auto",
                   auto_download: bool = True, root: Optional[str] = None) -> "Avatar":
    """Store ``frames`` with their ``faces`` as avatar ``name``: frames, face decisions, VAE latents and blend masks
    (streamed, bounded memory). ``source`` and ``settings`` identify what it was made from (see
    :func:`is_current`). ``engine``/``parser`` override model loading (tests)."""
    from ..backends.blending import load_face_parser, resolve_blend_mode
    from ..backends.musetalk_engine import load_musetalk

    runtime = runtime or Runtime()
    faces.check_matches(len(frames), frames.width, frames.height)
    mode = resolve_blend_mode(blend_mode)
    engine = engine or load_musetalk(runtime, auto_download, posterior="mode")
    if mode != "feather" and parser is None:
        parser = load_face_parser(runtime, auto_download)
    staging = store.staging_dir(name, root)
    try:
        latents, masks = _store_frames(staging, frames, faces, engine, parser, mode, runtime)
        _save(staging, latents, masks, _manifest(name, frames, faces, source, settings, mode, masks))
        store.commit(staging, name, root)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Avatar(name, root)


def _store_frames(folder: str, frames: Frames, faces: FaceSequence, engine, parser, mode: str,
                  runtime: Runtime, batch_size: int = 8):
    """Write every frame as PNG; encode the face frames' latents and blend masks. Returns ({frame: latent},
    {frame: BlendMask})."""
    import cv2

    from ..backends.blending import prepare_blend_mask
    from ..backends.musetalk_engine import crop_faces

    latents: Dict[int, torch.Tensor] = {}
    masks: Dict[int, object] = {}
    for batch in frames.iter_batches(batch_size):
        for j, rgb in enumerate(batch.rgb):
            if not cv2.imwrite(store.frame_file(folder, batch.start + j), np.ascontiguousarray(rgb[..., ::-1])):
                raise AvatarError(f"could not write frame {batch.start + j} into {folder} (disk full?)")
        face_idx = [batch.start + j for j in range(len(batch)) if faces.frames[batch.start + j].face is not None]
        if face_idx:
            rgb = {i: batch.rgb[i - batch.start] for i in face_idx}
            boxes = [faces.frames[i].face.crop_box for i in face_idx]
            for i, lat in zip(face_idx, engine.encode_reference(crop_faces(np.stack([rgb[i] for i in face_idx]),
                                                                           boxes))):
                latents[i] = lat
            for i, box in zip(face_idx, boxes):
                masks[i] = prepare_blend_mask(rgb[i], box, mode, parser)
        runtime.progress("avatar", batch.stop, len(frames))
    return latents, masks


def _manifest(name: str, frames: Frames, faces: FaceSequence, source: Dict, settings: Dict, mode: str,
              masks: Dict) -> Dict:
    per_frame = []
    for ff in faces.frames:
        if ff.face is None:
            per_frame.append({"cutaway": ff.reason or "cutaway", "shot": int(ff.shot)})
        else:
            per_frame.append({"crop_box": [int(v) for v in ff.face.crop_box], "shot": int(ff.shot),
                              "track": int(ff.face.track_id),
                              "mask_box": [int(v) for v in masks[ff.index].crop_box]})
    return {"format": store.FORMAT, "version": store.VERSION, "name": name, "created": time.time(),
            "fps": float(frames.fps), "width": int(frames.width), "height": int(frames.height),
            "num_frames": len(frames), "loop": LOOP, "blend_mode": mode, "source": source,
            "settings": settings, "weights": weights_identity(), "frames": per_frame,
            "face_params": {k: v for k, v in (faces.params or {}).items() if isinstance(v, (str, int, float))}}


def _save(folder: str, latents: Dict[int, torch.Tensor], masks: Dict, manifest: Dict) -> None:
    from safetensors.torch import save_file

    order = sorted(latents)
    stacked = torch.stack([latents[i] for i in order]) if order else torch.zeros((0, 8, 32, 32))
    save_file({"latents": stacked.float().contiguous(), "face_frames": torch.tensor(order, dtype=torch.int64)},
              os.path.join(folder, store.LATENTS_FILE))
    save_file({f"mask.{i}": torch.from_numpy(np.ascontiguousarray(m.mask)) for i, m in masks.items()} or
              {"none": torch.zeros(0, dtype=torch.uint8)}, os.path.join(folder, store.MASKS_FILE))
    with open(os.path.join(folder, store.MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)


def is_current(name: str, source: Dict, settings: Dict, root: Optional[str] = None) -> bool:
    """True when avatar ``name`` exists, is readable, and was made from this source with these settings and the
    weight files present now: then preparing it again would change nothing."""
    try:
        m = store.read_manifest(name, root)
    except AvatarError:
        return False
    return m.get("source") == source and m.get("settings") == settings and m.get("weights") == weights_identity()


# ---- speaking ------------------------------------------------------------------------------------------------------
class AvatarFrames(Frames):
    """The stored frames of an avatar (PNG, read on demand)."""

    def __init__(self, folder: str, n: int, fps: float, width: int, height: int):
        self.folder, self.n = folder, int(n)
        self.fps, self.width, self.height = float(fps), int(width), int(height)

    def __len__(self) -> int:
        return self.n

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        import cv2

        out = np.empty((stop - start, self.height, self.width, 3), np.uint8)
        for k in range(start, stop):
            bgr = cv2.imread(store.frame_file(self.folder, k), cv2.IMREAD_COLOR)
            if bgr is None or bgr.shape[:2] != (self.height, self.width):
                raise AvatarError(f"avatar frame {k} in {self.folder} is missing or damaged. Prepare the avatar "
                                  "again.")
            out[k - start] = bgr[..., ::-1]
        return out


class Avatar:
    """A prepared avatar (checked when opened): ``frames``, ``faces``, and :meth:`speak`."""

    def __init__(self, name: str, root: Optional[str] = None):
        self.name = name
        self.folder = store.avatar_dir(name, root)
        self.manifest = store.read_manifest(name, root)
        m = self.manifest
        self.fps = float(m["fps"])
        self.frames = AvatarFrames(self.folder, m["num_frames"], self.fps, m["width"], m["height"])
        self.faces = _faces_from_manifest(m)
        if len(m["frames"]) != m["num_frames"]:
            raise AvatarError(f"avatar {name!r}: its manifest lists {len(m['frames'])} frames for "
                              f"{m['num_frames']}. Prepare the avatar again.")

    def check_weights(self) -> None:
        """The latents and masks are only valid with the VAE and face parser they were made with."""
        now, then = weights_identity(), self.manifest.get("weights", {})
        changed = [k for k in set(now) | set(then) if k != "face_parse.bisenet" and now.get(k) != then.get(k)]
        if changed:
            raise AvatarError(f"avatar {self.name!r}: prepared with other weight files ({', '.join(sorted(changed))}"
                              " differ from the ones installed now). Prepare the avatar again.")

    def speaking_backend(self, runtime: Runtime, engine=None, auto_download: bool = True):
        """:meth:`backend` on ``engine`` (default: MuseTalk loaded through the registry), once the avatar's weights
        are checked against the installed ones."""
        from ..backends.musetalk_engine import load_musetalk

        self.check_weights()
        return self.backend(engine or load_musetalk(runtime, auto_download, posterior="mode"))

    def backend(self, engine):
        """A MuseTalk backend whose latents and blend masks come from the avatar folder."""
        from safetensors.torch import load_file

        from ..backends.blending import BlendMask
        from ..backends.musetalk import MuseTalkBackend

        try:
            lat = load_file(os.path.join(self.folder, store.LATENTS_FILE))
            masks = load_file(os.path.join(self.folder, store.MASKS_FILE))
        except Exception as exc:  # noqa: BLE001 - any damage to the files is the same problem for the user
            raise AvatarError(f"avatar {self.name!r}: its cached files cannot be read ({exc}). Prepare the avatar "
                              "again.") from None
        face_frames = [int(i) for i in lat["face_frames"].tolist()]
        expected = [i for i, f in enumerate(self.manifest["frames"]) if "crop_box" in f]
        if face_frames != expected or tuple(lat["latents"].shape[1:]) != (8, 32, 32):
            raise AvatarError(f"avatar {self.name!r}: its latents do not match its manifest. Prepare the avatar "
                              "again.")
        backend = MuseTalkBackend(engine, self.manifest["blend_mode"], None, mask_cache=max(1, len(expected)))
        for row, i in enumerate(face_frames):
            backend.latents[i] = lat["latents"][row]
            backend.masks.put(i, BlendMask(tuple(self.manifest["frames"][i]["mask_box"]),
                                           masks[f"mask.{i}"].numpy()))
        return backend

    def start(self, features, runtime: Optional[Runtime] = None, engine=None, batch_size: int = 8,
              auto_download: bool = True) -> "AvatarRun":
        """A run of the avatar speaking ``features`` (whisper features at the avatar's fps, MuseTalk layout): its
        ``plan`` and ``audio`` (the voice cut to the output's length) are ready, ``into(sink)`` runs it."""
        from ..backends.selection import MUSETALK, BackendSpec
        from ..lipsync import LipSyncRun

        runtime = runtime or Runtime()
        if abs(float(features.fps) - self.fps) > 1e-6:
            raise AvatarError(f"avatar {self.name!r}: the voice features are timed at {features.fps:g} fps but the "
                              f"avatar plays at {self.fps:g} fps; compute them at the avatar's fps.")
        if features.layout != "musetalk":
            raise AvatarError(f"avatar {self.name!r}: avatars speak with MuseTalk; compute the voice features in "
                              f"the 'musetalk' layout (got {features.layout!r}).")
        backend = self.speaking_backend(runtime, engine, auto_download)
        run = LipSyncRun(self.frames, self.faces, features, BackendSpec(choice=MUSETALK, auto_download=auto_download),
                         length_policy="follow_audio", batch_size=batch_size, blend_mode=backend.blend_mode)
        return AvatarRun(self, run, backend, runtime)

    def speak(self, features, sink, runtime: Optional[Runtime] = None, engine=None, batch_size: int = 8,
              auto_download: bool = True):
        """:meth:`start` + ``into(sink)``: returns ``(report, the voice cut to the output's length)``."""
        run = self.start(features, runtime, engine, batch_size, auto_download)
        return run.into(sink), run.audio


class AvatarRun:
    """One speech of an avatar: ``plan`` and ``audio`` at once, :meth:`into` lip-syncs into a sink."""

    def __init__(self, avatar: Avatar, run, backend, runtime: Runtime):
        self.avatar, self.run, self.backend, self.runtime = avatar, run, backend, runtime
        self.plan, self.audio = run.plan, run.audio

    def into(self, sink):
        report = self.run.into(sink, self.runtime, engine_factory=lambda name: self.backend)
        report.notes.append(f"avatar {self.avatar.name}: {len(self.avatar.frames)} frames, faces from its cache")
        return report


def _faces_from_manifest(m: Dict) -> FaceSequence:
    frames: List[FrameFaces] = []
    shot_starts: List[int] = []
    for i, f in enumerate(m["frames"]):
        if not shot_starts or f["shot"] != frames[-1].shot:
            shot_starts.append(i)
        if "crop_box" in f:
            box = tuple(int(v) for v in f["crop_box"])
            face = Face(detection=Detection(box=tuple(float(v) for v in box), score=1.0), track_id=f["track"],
                        crop_box=box)
            frames.append(FrameFaces(index=i, shot=f["shot"], face=face))
        else:
            frames.append(FrameFaces(index=i, shot=f["shot"], face=None, reason=f["cutaway"]))
    return FaceSequence(frames=frames, width=m["width"], height=m["height"], fps=m["fps"],
                        shot_starts=shot_starts or [0], params=dict(m.get("face_params") or {}))


def describe(manifest: Dict) -> str:
    """One line about an avatar, for ``avatar list``."""
    n = manifest["num_frames"]
    faces = sum(1 for f in manifest["frames"] if "crop_box" in f)
    src = manifest.get("source", {})
    return (f"{manifest['name']}: {n} frames {manifest['width']}x{manifest['height']} @ {manifest['fps']:g} fps, "
            f"{faces} with a face, {n - faces} cutaway; from {src.get('path', 'an IMAGE batch')}")


__all__ = ["Avatar", "AvatarRun", "AvatarError", "prepare_avatar", "is_current", "file_identity", "frames_identity",
           "describe"]
