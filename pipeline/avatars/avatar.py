"""Real-time avatars (MuseTalk realtime_inference): a face video prepared once, then any voice spoken through it fast.

Everything that depends only on the video is computed by :func:`prepare_avatar` and stored (pipeline/avatars/
store.py): the frames, the face decisions (cutaways included: they are kept and spoken bit-identical), the crop
boxes, MuseTalk's VAE latents of each face and each face's blend mask. :meth:`Avatar.speak` then costs only whisper,
the UNet step, the VAE decode and the paste: it runs the one lip-sync entry point (:class:`~..lipsync.LipSyncRun`)
on the stored frames with a MuseTalk backend whose per-frame caches are filled from the folder, so the output has
the avatar's fps and one frame per ``1/fps`` of audio (rounded up: nothing of the voice is dropped).

**Idle loop**: the frames an avatar shows while it speaks repeat over a range of source frames (``loop_range``
``"a-b"``, frames a..b inclusive; every frame by default) either ping-pong (``ping_pong``, the original's cycle,
MuseTalk Avatar.prepare_material) or from the start again (``forward``). The avatar keeps a default in its
manifest, set at preparation and changed in place (:meth:`Avatar.set_default_loop`: the latents do not depend on
it); every speech may override it.

**Prepared again under a live reference**: each preparation has an identity (``prepare_id``). An :class:`Avatar`
checks at every :meth:`Avatar.start` (and a live speech when it starts) that its folder still holds its preparation:
a newer valid one is loaded transparently (logged, and noted in the report), a removed one is an error naming the
avatar and the fix.

Differences from the original's real-time mode, deliberately: a clip with face-less frames can be prepared (the
original fails, #224), nothing prompts, the clip's own fps is kept (not forced to 25), the last frame is kept, and the
precision follows the runtime (not forced fp16).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ..backends.selection import DEFAULT_BATCH_SIZE
from ..lipsync.plan import LOOP_CHOICES, Plan, loop_frame
from ..media.frames import Frames
from ..runtime import Runtime
from ..types import Detection, Face, FaceSequence, FrameFaces
from . import store
from .store import AvatarError, AvatarFrames, file_identity, frames_identity, is_current, weights_identity  # noqa: F401

DEFAULT_LOOP = LOOP_CHOICES[0]          # ping_pong: the original's cycle
SPEECH_FRAME_CACHE = 512 << 20          # bytes of decoded frames one speech keeps (a loop decodes each PNG once)
WHOLE_CLIP = ("", "all")                # loop_range texts meaning every frame
LoopRange = Union[str, Tuple[int, int], List[int], None]


# ---- the idle loop: which stored frames repeat while the avatar speaks -------------------------------------------
@dataclass(frozen=True)
class IdleLoop:
    loop: str        # one of LOOP_CHOICES
    first: int       # source frames first..last, inclusive
    last: int

    def frame(self, k: int) -> int:
        """The source frame output frame ``k`` shows."""
        return loop_frame(k, self.first, self.last, self.loop)

    def plan(self, plan: Plan) -> Plan:
        """``plan`` (follow_audio: as long as the voice) showing this loop's frames."""
        source = np.array([self.frame(k) for k in range(plan.num_frames)], np.int64)
        return Plan(source, plan.num_audio_frames, plan.policy, [f"idle loop: {self.text()}"])

    def text(self) -> str:
        return f"{self.loop} over frames {self.first}-{self.last}"


def check_loop(loop: str, loop_range: LoopRange, num_frames: int, name: str) -> Tuple[str, Optional[List[int]]]:
    """``(loop, [first, last] or None for every frame)`` after checking both against an avatar of ``num_frames``.

    ``loop_range``: ``"a-b"`` (source frames a..b, inclusive), ``(a, b)``, or ``""``/``"all"``/None: every frame."""
    if loop not in LOOP_CHOICES:
        raise AvatarError(f"avatar {name!r}: loop {loop!r} is not an idle loop; use one of {', '.join(LOOP_CHOICES)}.")
    if loop_range is None or (isinstance(loop_range, str) and loop_range.strip().lower() in WHOLE_CLIP):
        return loop, None
    try:
        a, b = ([int(v) for v in loop_range.strip().split("-")] if isinstance(loop_range, str)
                else [int(v) for v in loop_range])
    except (TypeError, ValueError):
        a, b = -1, -1
    if not 0 <= a <= b < num_frames:
        raise AvatarError(f"avatar {name!r}: loop_range {loop_range!r} is not a range of its frames; give 'a-b' with "
                          f"0 <= a <= b <= {num_frames - 1} (source frames a to b, inclusive), or leave it empty "
                          "for every frame.")
    return loop, [a, b]


def stored_loop(manifest: Dict) -> str:
    """The avatar's default idle loop (``ping-pong`` in avatars made before the choice existed)."""
    loop = manifest.get("loop", DEFAULT_LOOP)
    return DEFAULT_LOOP if loop == "ping-pong" else loop


# ---- preparing -----------------------------------------------------------------------------------------------------
def prepare_avatar(name: str, frames: Frames, faces: FaceSequence, runtime: Optional[Runtime] = None, *,
                   source: Dict, settings: Dict, engine=None, parser=None, blend_mode="auto",
                   auto_download: bool = True, root: Optional[str] = None, loop: str = DEFAULT_LOOP,
                   loop_range: LoopRange = None) -> "Avatar":
    """Store ``frames`` with their ``faces`` as avatar ``name``: frames, face decisions, VAE latents and blend masks
    (streamed, bounded memory). ``source`` and ``settings`` identify what it was made from (see
    :func:`is_current`); ``loop``/``loop_range`` are its default idle loop (:func:`check_loop`); ``blend_mode``: a
    mode name or ``BlendOptions`` (pipeline/backends/blending.py). ``engine``/``parser`` override model loading
    (tests)."""
    from ..backends.blending import PARSER_MODES, blend_options, load_face_parser
    from ..backends.musetalk_engine import load_musetalk

    runtime = runtime or Runtime()
    faces.check_matches(len(frames), frames.width, frames.height)
    idle = check_loop(loop, loop_range, len(frames), name)
    blend = blend_options(blend_mode).resolved()
    engine = engine or load_musetalk(runtime, auto_download, posterior="mode")
    if blend.mode in PARSER_MODES and parser is None:
        parser = load_face_parser(runtime, auto_download)
    staging = store.staging_dir(name, root)
    try:
        latents, masks = _store_frames(staging, frames, faces, engine, parser, blend, runtime)
        _save(staging, latents, masks, _manifest(name, frames, faces, source, settings, blend.mode, masks, idle))
        store.commit(staging, name, root)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Avatar(name, root)


def _store_frames(folder: str, frames: Frames, faces: FaceSequence, engine, parser, blend,
                  runtime: Runtime, batch_size: int = DEFAULT_BATCH_SIZE):
    """Write every frame as PNG; encode the face frames' latents and blend masks. Returns ({frame: latent},
    {frame: BlendMask})."""
    import cv2

    from ..backends.blending import prepare_blend_mask
    from ..backends.musetalk_engine import crop_faces

    latents: Dict[int, torch.Tensor] = {}
    masks: Dict[int, object] = {}
    for batch in frames.iter_batches(batch_size):
        for j, rgb in enumerate(batch.rgb):
            if not cv2.imwrite(store.frame_file(folder, batch.start + j), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise AvatarError(f"could not write frame {batch.start + j} into {folder} (disk full?)")
        face_idx = [batch.start + j for j in range(len(batch)) if faces.frames[batch.start + j].face is not None]
        if face_idx:
            rgb = {i: batch.rgb[i - batch.start] for i in face_idx}
            boxes = [faces.frames[i].face.crop_box for i in face_idx]
            for i, lat in zip(face_idx, engine.encode_reference(crop_faces(np.stack([rgb[i] for i in face_idx]),
                                                                           boxes))):
                latents[i] = lat
            for i, box in zip(face_idx, boxes):
                masks[i] = prepare_blend_mask(rgb[i], box, blend, parser,
                                              landmarks=faces.frames[i].face.detection.landmarks)
        runtime.progress("avatar", batch.stop, len(frames))
    return latents, masks


def _manifest(name: str, frames: Frames, faces: FaceSequence, source: Dict, settings: Dict, mode: str,
              masks: Dict, idle: Tuple[str, Optional[List[int]]]) -> Dict:
    per_frame = []
    for ff in faces.frames:
        if ff.face is None:
            per_frame.append({"cutaway": ff.reason or "cutaway", "shot": int(ff.shot)})
        else:
            per_frame.append({"crop_box": [int(v) for v in ff.face.crop_box], "shot": int(ff.shot),
                              "track": int(ff.face.track_id),
                              "mask_box": [int(v) for v in masks[ff.index].crop_box]})
    return {"format": store.FORMAT, "version": store.VERSION, "name": name, "created": time.time(),
            "prepare_id": store.new_prepare_id(), "fps": float(frames.fps), "width": int(frames.width),
            "height": int(frames.height), "num_frames": len(frames), "loop": idle[0], "loop_range": idle[1],
            "blend_mode": mode, "source": source,
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
    store.write_manifest(folder, manifest)


# ---- speaking ------------------------------------------------------------------------------------------------------
class Avatar:
    """A prepared avatar (checked when opened): ``frames``, ``faces``, its default idle loop, and :meth:`speak`."""

    def __init__(self, name: str, root: Optional[str] = None):
        self.name, self.root = name, root
        self.folder = store.avatar_dir(name, root)
        self.reload_notes: List[str] = []     # "prepared again, reloaded", until the next speech reports it
        self._load(store.read_manifest(name, root))

    def _load(self, manifest: Dict) -> None:
        m = self.manifest = manifest
        if len(m["frames"]) != m["num_frames"]:
            raise AvatarError(f"avatar {self.name!r}: its manifest lists {len(m['frames'])} frames for "
                              f"{m['num_frames']}. Prepare the avatar again.")
        self.prepare_id = store.prepare_id(m)
        self.fps = float(m["fps"])
        self.frames = AvatarFrames(self.folder, m["num_frames"], self.fps, m["width"], m["height"])
        self.faces = _faces_from_manifest(m)

    # -- the folder may have been prepared again (ComfyUI caches node outputs; the CLI may run meanwhile) ----------
    def ensure_current(self, runtime: Optional[Runtime] = None) -> bool:
        """Check the folder still holds this preparation. A newer valid one is loaded (logged, kept in
        ``reload_notes`` for the next speech's report; returns True); a removed avatar is an :class:`AvatarError`
        naming the fix; the same preparation refreshes the manifest (its default idle loop may have changed)."""
        if not os.path.isfile(os.path.join(self.folder, store.MANIFEST)):
            raise AvatarError(f"avatar {self.name!r}: its folder {self.folder} was removed after the avatar was "
                              "loaded. Prepare it again (Prepare Avatar node, or `avatar prepare --video ... --name "
                              f"{self.name}`), or speak another avatar.")
        fresh = store.read_manifest(self.name, self.root)
        if store.prepare_id(fresh) == self.prepare_id:
            self.manifest = fresh
            return False
        self._load(fresh)
        self.reload_notes.append(f"avatar {self.name}: its folder was prepared again after it was loaded; "
                                 "reloaded the new preparation")
        (runtime or Runtime()).log(self.reload_notes[-1])
        return True

    def take_reload_notes(self) -> List[str]:
        notes, self.reload_notes = self.reload_notes, []
        return notes

    # -- the idle loop ---------------------------------------------------------------------------------------------
    def idle_loop(self, loop: Optional[str] = None, loop_range: LoopRange = None) -> IdleLoop:
        """The idle loop of one speech: ``loop``/``loop_range`` where given (a ``loop_range`` of ``""`` or ``"all"``
        means every frame), the avatar's stored default otherwise."""
        rng = self.manifest.get("loop_range") if loop_range is None else loop_range
        mode, rng = check_loop(loop or stored_loop(self.manifest), rng, len(self.frames), self.name)
        first, last = rng or (0, len(self.frames) - 1)
        return IdleLoop(mode, first, last)

    def set_default_loop(self, loop: str = DEFAULT_LOOP, loop_range: LoopRange = None) -> bool:
        """Store a new default idle loop in the manifest (nothing is prepared again: it is a speaking-time choice).
        Returns False when it was already the default."""
        self.ensure_current()
        mode, rng = check_loop(loop, loop_range, len(self.frames), self.name)
        if (self.manifest.get("loop"), self.manifest.get("loop_range")) == (mode, rng):
            return False
        self.manifest = {**self.manifest, "loop": mode, "loop_range": rng}
        store.write_manifest(self.folder, self.manifest)
        return True

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

    def start(self, features, runtime: Optional[Runtime] = None, engine=None, batch_size: int = DEFAULT_BATCH_SIZE,
              auto_download: bool = True, loop: Optional[str] = None, loop_range: LoopRange = None,
              silence=None) -> "AvatarRun":
        """A run of the avatar speaking ``features`` (whisper features at the avatar's fps, MuseTalk layout) over its
        idle loop (:meth:`idle_loop`): its ``plan`` and ``audio`` (the voice cut to the output's length) are ready,
        ``into(sink)`` runs it. ``silence``: pipeline/lipsync/silence.py ``SilenceOptions``."""
        from ..backends.selection import MUSETALK, BackendSpec
        from ..lipsync import LipSyncRun

        runtime = runtime or Runtime()
        self.ensure_current(runtime)
        notes = self.take_reload_notes()
        idle = self.idle_loop(loop, loop_range)
        if abs(float(features.fps) - self.fps) > 1e-6:
            raise AvatarError(f"avatar {self.name!r}: the voice features are timed at {features.fps:g} fps but the "
                              f"avatar plays at {self.fps:g} fps; compute them at the avatar's fps.")
        if features.layout != "musetalk":
            raise AvatarError(f"avatar {self.name!r}: avatars speak with MuseTalk; compute the voice features in "
                              f"the 'musetalk' layout (got {features.layout!r}).")
        backend = self.speaking_backend(runtime, engine, auto_download)
        run = LipSyncRun(self.frames.speech_view(SPEECH_FRAME_CACHE), self.faces, features,
                         BackendSpec(choice=MUSETALK, auto_download=auto_download), length_policy="follow_audio",
                         batch_size=batch_size, blend_mode=backend.blend_mode, silence=silence)
        run.plan = idle.plan(run.plan)      # the same length, the frames of the idle loop
        return AvatarRun(self, run, backend, runtime, notes)

    def speak(self, features, sink, runtime: Optional[Runtime] = None, engine=None, batch_size: int = DEFAULT_BATCH_SIZE,
              auto_download: bool = True, loop: Optional[str] = None, loop_range: LoopRange = None, silence=None):
        """:meth:`start` + ``into(sink)``: returns ``(report, the voice cut to the output's length)``."""
        run = self.start(features, runtime, engine, batch_size, auto_download, loop, loop_range, silence)
        return run.into(sink), run.audio


class AvatarRun:
    """One speech of an avatar: ``plan`` and ``audio`` at once, :meth:`into` lip-syncs into a sink."""

    def __init__(self, avatar: Avatar, run, backend, runtime: Runtime, notes: Optional[List[str]] = None):
        self.avatar, self.run, self.backend, self.runtime = avatar, run, backend, runtime
        self.plan, self.audio, self.notes = run.plan, run.audio, list(notes or [])

    def into(self, sink):
        report = self.run.into(sink, self.runtime, engine_factory=lambda name: self.backend)
        report.notes.append(f"avatar {self.avatar.name}: {len(self.avatar.frames)} frames, faces from its cache")
        report.notes.extend(self.notes)
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
            f"{faces} with a face, {n - faces} cutaway; idle loop {stored_loop(manifest)} over frames "
            f"{'-'.join(str(v) for v in manifest.get('loop_range') or (0, n - 1))}; "
            f"from {src.get('path', 'an IMAGE batch')}")


__all__ = ["Avatar", "AvatarRun", "AvatarError", "IdleLoop", "prepare_avatar", "check_loop", "is_current",
           "file_identity", "frames_identity", "describe", "DEFAULT_LOOP"]
