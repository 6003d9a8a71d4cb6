"""Orchestration: frames + faces + audio features + backend -> lip-synced frames, a report, and the aligned audio.

Rules users rely on (DESIGN.md "Behaviour users rely on"; spec musetalk.md §4):

* **Cutaways** (frames whose :class:`~.types.FrameFaces` has no face) are written bit-identical to their source and
  never enter a network. A face frame changes only inside its pasted region, and inside it only where the blend mask
  is non-zero.
* **Audio position is absolute**: output frame ``k`` uses the audio window at time ``k / fps`` whatever was skipped
  around it; the source frame shown at ``k`` comes from the length policy's plan.
* **Length policy** (explicit): ``follow_audio`` (default; output as long as the audio, the video ping-pongs
  ``0..N-1, N-1..0, ...`` like the original's frame cycle, spec §1.6), ``follow_video`` (output as long as the video;
  frames after the end of the audio are synced to silence, the audio is padded with silence), ``shortest``. The tail
  of the audio is never dropped silently: ``follow_audio`` rounds the frame count *up* and the report states any
  trimming another policy makes.
* **Source-frame work once**: VAE latents of a source frame are computed once and reused by every output frame
  showing it (ping-pong loops); blend masks are kept in a bounded cache.
* **Batches**: progress and cancellation every batch; out-of-memory halves the batch and retries; a backend that
  cannot load or keeps failing falls back along the chain, and the report says which frames used which backend and why.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .media.audio import Audio
from .media.frames import Frames, image_to_uint8
from .backends.latentsync_engine import DEFAULT_SEED
from .runtime import Runtime, is_oom
from .types import FaceSequence, ranges_text

LENGTH_POLICIES = ("follow_audio", "follow_video", "shortest")
BACKEND_CHOICES = ("auto", "musetalk-v1.5", "latentsync-1.6", "latentsync-1.5")
MUSETALK = "musetalk-v1.5"


class LipSyncError(RuntimeError):
    """The run cannot proceed; the message names the input and the fix."""


# --------------------------------------------------------------------------------------------------------------------
# backend selection (the MUSETALK_BACKEND payload)
@dataclass
class BackendSpec:
    """Which generator to run and how; models load lazily inside the lip-sync run."""

    choice: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    auto_download: bool = True
    posterior: str = "mode"            # MuseTalk VAE latent: "mode" (deterministic) or "sample" (the original)
    seed: int = DEFAULT_SEED
    latentsync_steps: int = 20
    latentsync_guidance: float = 1.5
    deepcache: bool = False
    better_paste: bool = True          # LatentSync: paste only the regenerated lower face (spec latentsync §9)

    def __post_init__(self):
        if self.choice not in BACKEND_CHOICES:
            raise LipSyncError(f"backend: unknown choice {self.choice!r}; use one of {', '.join(BACKEND_CHOICES)}.")
        if self.posterior not in ("mode", "sample"):
            raise LipSyncError(f"posterior: must be 'mode' or 'sample', got {self.posterior!r}.")

    def chain(self) -> List[Tuple[str, str]]:
        """``[(backend, why it is tried)]`` in order; MuseTalk is always the last resort."""
        if self.choice == "auto":
            out = [(v, "auto: weights present") for v in ("latentsync-1.6", "latentsync-1.5") if latentsync_present(v)]
            return out + [(MUSETALK, "auto: default" if not out else "fallback")]
        if self.choice == MUSETALK:
            return [(MUSETALK, "requested")]
        return [(self.choice, "requested"), (MUSETALK, "fallback")]

    def primary(self) -> str:
        return self.chain()[0][0]

    @property
    def audio_layout(self) -> str:
        return "latentsync" if self.primary().startswith("latentsync") else "musetalk"


def missing_weights(spec: "BackendSpec", detector: str = "mtcnn", blend_mode: str = "auto") -> List[str]:
    """Registry keys of every file a whole run needs and does not have (checked before any work starts, so one error
    lists everything). LatentSync files are not required: without them the run falls back to MuseTalk."""
    from ..models import registry
    from .audio_features import _present_whisper_files, whisper_weight_keys
    from .backends.musetalk_engine import WEIGHT_KEYS

    need: List[str] = []
    whisper = _present_whisper_files()
    if not (whisper["hf"] or whisper["openai"]):
        need += whisper_weight_keys(spec.audio_layout)
    for k in WEIGHT_KEYS:
        if registry.find(k) is None and not (k == "sd_vae.weights" and registry.find("sd_vae.weights_bin")):
            need.append(k)
    if detector == "mtcnn":
        from ..models import mtcnn

        if not all(registry.find(k) for k in mtcnn.REGISTRY_KEYS.values()) and not mtcnn.wheel_weight_paths():
            need += list(mtcnn.REGISTRY_KEYS.values())
    else:
        need += [k for k in ("s3fd", "fan68") if registry.find(k) is None]
    if blend_mode in ("jaw", "raw", "neck") and registry.find("face_parse.bisenet") is None:
        need.append("face_parse.bisenet")
    return list(dict.fromkeys(need))


def ensure_weights(spec: "BackendSpec", detector: str = "mtcnn", blend_mode: str = "auto", log=print) -> None:
    """Download what :func:`missing_weights` lists (when allowed), or raise one ``MissingWeightsError`` for all."""
    from ..models import registry

    need = missing_weights(spec, detector, blend_mode)
    if need:
        registry.ensure(need, auto_download=spec.auto_download, log=log)


def latentsync_present(version: str) -> bool:
    """True when the LatentSync UNet file of ``version`` ('latentsync-1.6' / '1.6') is on disk."""
    try:
        from ..models import registry
    except ImportError:  # pragma: no cover
        return False
    v = version.split("-")[-1].replace(".", "")
    key = f"latentsync{v}.unet"
    return key in registry.REGISTRY and registry.find(key) is not None


# --------------------------------------------------------------------------------------------------------------------
# the plan: which source frame each output frame shows
def ping_pong(k: int, n: int) -> int:
    """The original's cycle ``frames + frames[::-1]`` indexed by ``k % 2n`` (spec musetalk §1.6)."""
    if n <= 1:
        return 0
    r = k % (2 * n)
    return r if r < n else 2 * n - 1 - r


@dataclass
class Plan:
    source: np.ndarray                 # int64 [n_out]: source frame of each output frame
    num_audio_frames: int              # frames the audio covers (rounded up)
    policy: str
    notes: List[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.source.shape[0])


def make_plan(num_video: int, audio_seconds: float, fps: float, policy: str = "follow_audio") -> Plan:
    if policy not in LENGTH_POLICIES:
        raise LipSyncError(f"length_policy: unknown value {policy!r}; use one of {', '.join(LENGTH_POLICIES)}.")
    if num_video <= 0:
        raise LipSyncError("frames: the video has no frames.")
    n_audio = max(1, int(math.ceil(audio_seconds * fps - 1e-6)))
    notes: List[str] = []
    if policy == "follow_audio":
        n = n_audio
        src = np.array([ping_pong(k, num_video) for k in range(n)], np.int64)
        if n > num_video:
            notes.append(f"video ({num_video} frames) shorter than the audio ({n} frames): ping-pong loop")
        elif n < num_video:
            notes.append(f"video trimmed to the audio: {num_video - n} trailing frames not used")
    elif policy == "follow_video":
        n = num_video
        src = np.arange(n, dtype=np.int64)
        if n_audio > n:
            notes.append(f"audio trimmed to the video: {(n_audio - n) / fps:.2f} s of audio after the last frame "
                         "dropped (length_policy=follow_video)")
        elif n_audio < n:
            notes.append(f"audio shorter than the video: the last {n - n_audio} frames are synced to silence")
    else:
        n = min(num_video, n_audio)
        src = np.arange(n, dtype=np.int64)
        if n_audio > n:
            notes.append(f"audio trimmed to the video: {(n_audio - n) / fps:.2f} s dropped (length_policy=shortest)")
        elif num_video > n:
            notes.append(f"video trimmed to the audio: {num_video - n} trailing frames not used")
    return Plan(src, n_audio, policy, notes)


def aligned_audio(audio: Optional[Audio], num_frames: int, fps: float) -> Optional[Audio]:
    """The audio cut or padded with silence to exactly ``num_frames / fps`` seconds (original rate and channels)."""
    if audio is None:
        return None
    n = int(round(num_frames / fps * audio.sample_rate))
    s = audio.samples[:, :n]
    if s.shape[1] < n:
        s = np.pad(s, ((0, 0), (0, n - s.shape[1])))
    return Audio(np.ascontiguousarray(s, dtype=np.float32), audio.sample_rate)


# --------------------------------------------------------------------------------------------------------------------
# sinks: where output frames go
class ImageSink:
    """Collects output frames in a ComfyUI IMAGE tensor (float32 [n, H, W, 3])."""

    def __init__(self, num_frames: int, height: int, width: int):
        self.image = torch.empty((num_frames, height, width, 3), dtype=torch.float32)
        self.count = 0

    def write(self, native) -> None:
        t = native if isinstance(native, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(native)).float() / 255.0
        n = t.shape[0]
        self.image[self.count:self.count + n] = t
        self.count += n

    def close(self):
        return self.image[:self.count]

    def abort(self) -> None:
        self.image = None


class WriterSink:
    """Streams output frames into a :class:`~.video.VideoWriter` (bounded memory)."""

    def __init__(self, writer):
        self.writer = writer

    def write(self, native) -> None:
        arr = image_to_uint8(native) if isinstance(native, torch.Tensor) else native
        self.writer.write(arr)

    def close(self):
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


# --------------------------------------------------------------------------------------------------------------------
@dataclass
class LipSyncReport:
    requested: str
    num_frames: int = 0
    synced: Dict[str, List[int]] = field(default_factory=dict)   # backend -> output frames it synced
    passed_through: List[int] = field(default_factory=list)      # output frames copied unchanged (cutaways)
    fallbacks: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    batch_sizes: List[int] = field(default_factory=list)
    seconds: float = 0.0
    landmarks: str = ""                                          # where the crop boxes came from (pipeline/landmarks)

    def add(self, backend: str, ks: Sequence[int]) -> None:
        self.synced.setdefault(backend, []).extend(int(k) for k in ks)

    @property
    def backends_used(self) -> List[str]:
        return [b for b, ks in self.synced.items() if ks]

    def text(self) -> str:
        lines = [f"backend requested: {self.requested}; used: {', '.join(self.backends_used) or 'none'}"]
        if self.landmarks:
            lines.append(f"landmarks: {self.landmarks}")
        for b, ks in self.synced.items():
            lines.append(f"  {b}: {len(ks)} frames synced ({ranges_text(_ranges(ks))})")
        lines.append(f"frames: {self.num_frames} out, {sum(len(v) for v in self.synced.values())} synced, "
                     f"{len(self.passed_through)} passed through unchanged "
                     f"({ranges_text(_ranges(self.passed_through))})")
        for f in self.fallbacks:
            lines.append(f"fallback: {f}")
        for n in self.notes:
            lines.append(f"note: {n}")
        if self.batch_sizes:
            lines.append(f"batch size: {self.batch_sizes[0]}" + (
                f" (lowered to {min(self.batch_sizes)} after running out of memory)"
                if min(self.batch_sizes) < self.batch_sizes[0] else ""))
        lines.append(f"time: {self.seconds:.1f} s")
        return "\n".join(lines)


def _ranges(ks: Sequence[int]) -> List[Tuple[int, int]]:
    out: List[Tuple[int, int]] = []
    for k in sorted(ks):
        if out and out[-1][1] == k - 1:
            out[-1] = (out[-1][0], k)
        else:
            out.append((k, k))
    return out


# --------------------------------------------------------------------------------------------------------------------
def _apply_patch_native(native_frame, u8_frame: np.ndarray, patch) -> object:
    """Write a blend patch into one native frame (float IMAGE or uint8), touching only pixels the blend changed."""
    if patch.y1 <= patch.y0 or patch.x1 <= patch.x0:
        return native_frame
    region = u8_frame[patch.y0:patch.y1, patch.x0:patch.x1]
    changed = (patch.pixels != region).any(axis=-1)
    if isinstance(native_frame, torch.Tensor):
        sub = native_frame[patch.y0:patch.y1, patch.x0:patch.x1]
        m = torch.from_numpy(changed)
        sub[m] = torch.from_numpy(patch.pixels[changed].astype(np.float32) / 255.0)
    else:
        sub = native_frame[patch.y0:patch.y1, patch.x0:patch.x1]
        sub[changed] = patch.pixels[changed]
    return native_frame


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class MuseTalkRunner:
    """Runs MuseTalk v1.5 on batches of output frames (spec musetalk §1.4-§1.9)."""

    name = MUSETALK

    def __init__(self, engine, blend_mode: str, parser=None, mask_cache: int = 256):
        self.engine = engine
        self.blend_mode = blend_mode
        self.parser = parser
        self.latents: Dict[int, torch.Tensor] = {}      # source frame -> [8, 32, 32] (computed once)
        self.masks = _LRU(mask_cache)                     # source frame -> BlendMask

    def patches(self, ks: Sequence[int], srcs: Sequence[int], src_u8: Dict[int, np.ndarray], faces: FaceSequence,
                windows: torch.Tensor) -> List[object]:
        from .backends.blending import prepare_blend_mask, blend_face
        from .backends.musetalk_engine import crop_faces

        need = sorted({s for s in srcs if s not in self.latents})
        if need:
            crops = crop_faces(np.stack([src_u8[s] for s in need]), [faces.frames[s].face.crop_box for s in need])
            lat = self.engine.encode_reference(crops)
            for j, s in enumerate(need):
                self.latents[s] = lat[j]
        gen = self.engine.generate(torch.stack([self.latents[s] for s in srcs]), windows)
        out = []
        for j, s in enumerate(srcs):
            box = faces.frames[s].face.crop_box
            bm = self.masks.get(s)
            if bm is None:
                bm = prepare_blend_mask(src_u8[s], box, self.blend_mode, self.parser)
                self.masks.put(s, bm)
            out.append(blend_face(src_u8[s], gen[j], box, bm))
        return out


class LatentSyncRunner:
    """Runs LatentSync 1.5/1.6 on chunks of consecutive face frames of one shot (spec latentsync §§4-9, §13).

    Faces are aligned once per source frame, in processing order, with the nose-bias smoothing reset at every cut
    (and at every cutaway gap); the affine of each source frame is kept, the aligned pixels in a bounded cache.
    """

    def __init__(self, engine, name: str, better_paste: bool = True, cache: int = 64):
        self.engine = engine
        self.name = name
        self.better_paste = better_paste
        self.aligner = engine.aligner()
        self.affines: Dict[int, torch.Tensor] = {}
        self.aligned = _LRU(cache)
        self._last = None  # (shot, source index) of the last aligned frame

    def _aligned_face(self, s: int, frame_u8: np.ndarray, faces: FaceSequence) -> np.ndarray:
        import cv2

        face = self.aligned.get(s)
        if face is not None:
            return face
        ff = faces.frames[s]
        if s in self.affines:  # evicted: re-warp with the affine it had (smoothing state untouched)
            crop = self.aligner.warp(frame_u8, self.affines[s])
            r = self.engine.resolution
            face = cv2.resize(crop, (r, r), interpolation=cv2.INTER_LANCZOS4)
        else:
            if self._last is None or self._last[0] != ff.shot or abs(self._last[1] - s) != 1:
                self.aligner.reset()  # a cut or a gap: the smoothing starts afresh
            pts = ff.face.align_points
            if pts is None:
                raise LipSyncError(f"frame {s}: the face has no alignment points (re-run Face Detect)")
            a = self.aligner.align(frame_u8, np.asarray(pts, dtype=np.float64))
            self.affines[s] = a.affine
            face = a.face
            self._last = (ff.shot, s)
        self.aligned.put(s, face)
        return face

    def patches(self, ks, srcs, src_u8, faces, windows):
        aligned = np.stack([self._aligned_face(s, src_u8[s], faces) for s in srcs])
        out = self.engine.sync_chunk(aligned, windows, frame_start=int(ks[0]), output="float")
        return [self.engine.restore(src_u8[s], out[j], self.affines[s], better_paste=self.better_paste)
                for j, s in enumerate(srcs)]


def face_chunks(plan: Plan, faces: FaceSequence, start: int, stop: int, max_len: int) -> List[Tuple[int, int, bool]]:
    """Split output frames ``[start, stop)`` into ``(k0, k1, is_face)`` segments: face chunks are consecutive output
    frames with a face, in one shot, showing consecutive source frames (the ping-pong turn repeats one), at most
    ``max_len`` long; they never span a cut or a cutaway (spec latentsync §13)."""
    out: List[Tuple[int, int, bool]] = []
    k = start
    while k < stop:
        s = int(plan.source[k])
        ff = faces.frames[s]
        if ff.face is None:
            j = k + 1
            while j < stop and faces.frames[int(plan.source[j])].face is None:
                j += 1
            out.append((k, j, False))
            k = j
            continue
        j = k + 1
        while j < stop and j - k < max_len:
            s2, s1 = int(plan.source[j]), int(plan.source[j - 1])
            f2 = faces.frames[s2]
            if f2.face is None or f2.shot != faces.frames[s1].shot or abs(s2 - s1) > 1:
                break
            j += 1
        out.append((k, j, True))
        k = j
    return out


def _features_for(features, fps: float, layout: str, runtime: Runtime, auto_download: bool, encoder=None):
    """Audio features in ``layout`` timed at ``fps`` (recomputed from the kept source audio only when needed)."""
    from .audio_features import compute_audio_features, latentsync_frame_count, musetalk_frame_count

    if features.layout != layout:
        if features.audio is None:
            raise LipSyncError(f"audio_features: computed for {features.layout} but the backend needs {layout}, and "
                               "the source audio is not attached; set the features node's layout to 'follow backend'.")
        return compute_audio_features(features.audio, fps, layout, encoder, runtime, features.compat, auto_download)
    if abs(features.fps - fps) > 1e-6:
        if layout == "musetalk":
            n = musetalk_frame_count(features.num_samples_16k, fps, features.compat)
        else:
            n = latentsync_frame_count(features.rows, fps)
        return replace(features, fps=float(fps), num_frames=int(n))
    return features


def run_lipsync(frames: Frames, faces: FaceSequence, features, spec: BackendSpec, runtime: Runtime,
                sink, batch_size: int = 8, length_policy: str = "follow_audio", blend_mode: str = "auto",
                engine_factory: Optional[Callable[[str], object]] = None,
                whisper_encoder=None) -> Tuple[LipSyncReport, Optional[Audio]]:
    """Lip-sync ``frames`` to ``features`` into ``sink``. Returns the report and the audio aligned to the output.

    ``engine_factory(backend) -> runner`` overrides model loading (tests); by default runners are built from the
    registry's weights on ``runtime``. ``whisper_encoder`` is used when features must be recomputed for another
    backend's layout (a fallback); by default whisper-tiny is loaded through the registry.
    """
    t_start = time.time()
    faces.check_matches(len(frames), frames.width, frames.height)
    if batch_size < 1:
        raise LipSyncError(f"batch_size: must be >= 1 (got {batch_size}).")
    fps = float(frames.fps)
    duration = features.duration
    if duration <= 0:
        raise LipSyncError("audio: the audio is empty (0 s). Connect a voice track.")
    plan = make_plan(len(frames), duration, fps, length_policy)
    report = LipSyncReport(requested=spec.choice, num_frames=plan.num_frames,
                           landmarks=str((faces.params or {}).get("landmark_kind") or ""))
    report.notes.extend(plan.notes)
    out_audio = aligned_audio(features.audio, plan.num_frames, fps)

    # --- backend chain -------------------------------------------------------------------------------------------
    face_ks = [k for k in range(plan.num_frames) if faces.frames[int(plan.source[k])].face is not None]
    runner = None
    chain = spec.chain()
    feats = None
    if face_ks:
        for i, (backend, why) in enumerate(chain):
            try:
                runner = (engine_factory or _default_factory(spec, runtime, blend_mode))(backend)
                feats = _features_for(features, fps, "latentsync" if backend.startswith("latentsync") else "musetalk",
                                      runtime, spec.auto_download, whisper_encoder)
                if i > 0 or why != "requested":
                    report.notes.append(f"backend {backend} ({why})")
                break
            except Exception as exc:
                if isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "InterruptProcessingException":
                    raise
                if i == len(chain) - 1:
                    raise
                report.fallbacks.append(f"{backend} unavailable -> {chain[i + 1][0]}: {_short(exc)}")
                runtime.log(f"{backend} unavailable ({_short(exc)}); falling back to {chain[i + 1][0]}")
    else:
        report.notes.append("no frame has a face: every frame passes through unchanged")

    # --- the loop ------------------------------------------------------------------------------------------------
    # Reading the next unit's frames and encoding the previous unit's output run in two worker threads while the
    # current unit is on the model (decode/encode overlap with compute).
    from concurrent.futures import ThreadPoolExecutor

    factory = engine_factory or _default_factory(spec, runtime, blend_mode)
    state = _LoopState(runner, feats, int(batch_size), encoder=whisper_encoder)
    report.batch_sizes.append(state.bs)
    total = plan.num_frames
    has_native = hasattr(frames, "native_read")

    def unit_at(k: int) -> Tuple[int, int, bool]:
        if isinstance(state.runner, LatentSyncRunner):
            return face_chunks(plan, faces, k, min(total, k + 4 * MAX_CHUNK), state.chunk)[0]
        return k, min(total, k + state.bs), True

    def load(k0: int, k1: int):
        srcs = [int(plan.source[j]) for j in range(k0, k1)]
        uniq = sorted(set(srcs))
        u8 = frames.read(uniq)
        return srcs, uniq, u8, (frames.native_read(uniq) if has_native else u8)

    last_use = np.full(len(frames), -1, np.int64)  # last output frame showing each source frame
    last_use[plan.source] = np.arange(total)
    # worker threads start outside the caller's inference/grad mode (ComfyUI runs nodes under inference_mode, and an
    # IMAGE tensor made there may only be written in that mode): run them in the caller's mode
    inference = torch.is_inference_mode_enabled()
    grad = torch.is_grad_enabled()

    def in_mode(fn):
        def call(*a):
            with torch.inference_mode(inference), torch.set_grad_enabled(grad and not inference):
                return fn(*a)
        return call

    reader = ThreadPoolExecutor(1, thread_name_prefix="musetalk-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="musetalk-write")
    pending = None      # (k0, k1, future) of the prefetched next unit
    written = None      # future of the last sink write
    try:
        k = 0
        while k < total:
            k0, k1, is_face = unit_at(k)
            if pending is not None and pending[:2] == (k0, k1):
                srcs, uniq, u8, native_all = pending[2].result()
            else:
                srcs, uniq, u8, native_all = load(k0, k1)
            pending = None
            if k1 < total:
                n0, n1, _ = unit_at(k1)
                pending = (n0, n1, reader.submit(in_mode(load), n0, n1))
            ks = list(range(k0, k1))
            src_u8 = {s: u8[i] for i, s in enumerate(uniq)}
            patches: Dict[int, object] = {}
            face_pos = [i for i, s in enumerate(srcs) if faces.frames[s].face is not None] if is_face else []
            if face_pos and state.runner is not None:
                fk = [ks[i] for i in face_pos]
                fs = [srcs[i] for i in face_pos]
                got = _run_unit(state, fk, fs, src_u8, faces, features, fps, spec, runtime, report, factory)
                if got is None:
                    continue  # batch/chunk size lowered: retry the same frames
                name, plist = got
                for j, p in zip(fk, plist):
                    if p is not None:
                        patches[j] = p
                report.add(name, [j for j, p in zip(fk, plist) if p is not None])
            out = []
            for j, s in zip(ks, srcs):
                nat = native_all[uniq.index(s)]
                if j in patches:
                    nat = nat.clone() if isinstance(nat, torch.Tensor) else nat.copy()
                    nat = _apply_patch_native(nat, src_u8[s], patches[j])
                else:
                    report.passed_through.append(j)
                out.append(nat)
            batch = torch.stack(out) if isinstance(out[0], torch.Tensor) else np.stack(out)
            if written is not None:
                written.result()  # surface an encoder error now; keeps at most one unit in flight
            written = writer.submit(in_mode(sink.write), batch)
            _forget_done(state, last_use, k1)
            k = k1
            runtime.progress("lip-sync", k, total)
        if written is not None:
            written.result()
    except BaseException:
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True, cancel_futures=True)
        sink.abort()
        raise
    reader.shutdown(wait=True)
    writer.shutdown(wait=True)
    report.seconds = time.time() - t_start
    return report, out_audio


MAX_CHUNK = 16  # LatentSync frames per chunk (the original's num_frames)
MAX_LATENTSYNC_FAILURES = 3


@dataclass
class _LoopState:
    runner: object
    feats: object
    bs: int
    chunk: int = MAX_CHUNK
    failures: int = 0
    musetalk: object = None
    musetalk_feats: object = None
    encoder: object = None


def _forget_done(state: "_LoopState", last_use: np.ndarray, k: int) -> None:
    """Drop per-source caches (MuseTalk latents) of frames no later output frame shows: memory stays bounded on long
    videos while ping-pong loops still reuse them."""
    for runner in (state.runner, state.musetalk):
        cache = getattr(runner, "latents", None)
        if cache:
            for s in [s for s in cache if last_use[s] < k]:
                del cache[s]


def _run_unit(state: _LoopState, fk, fs, src_u8, faces, features, fps, spec, runtime, report, factory):
    """Run the current runner on one unit; handle OOM back-off and per-chunk fallback to MuseTalk.

    Returns ``(backend name, patches)``, or None when the unit must be retried with a smaller size."""
    runner = state.runner
    try:
        return runner.name, runner.patches(fk, fs, src_u8, faces, state.feats.windows(fk))
    except Exception as exc:
        if type(exc).__name__ == "InterruptProcessingException":
            raise
        oom = is_oom(exc)
        if oom:
            runtime.empty_cache()
        if isinstance(runner, LatentSyncRunner):
            if oom and state.chunk > 1:
                state.chunk = max(1, state.chunk // 2)
                report.notes.append(f"{runner.name}: out of memory; chunk length lowered to {state.chunk}")
                return None
            state.failures += 1
            why = "out of memory at chunk length 1" if oom else _short(exc)
            if state.musetalk is None:
                state.musetalk = factory(MUSETALK)
                state.musetalk_feats = _features_for(features, fps, "musetalk", runtime, spec.auto_download,
                                                     state.encoder)
            report.fallbacks.append(f"frames {fk[0]}-{fk[-1]}: {runner.name} failed ({why}) -> {MUSETALK}")
            runtime.log(f"{runner.name} failed on frames {fk[0]}-{fk[-1]} ({why}); using {MUSETALK} for them")
            if state.failures >= MAX_LATENTSYNC_FAILURES:
                report.fallbacks.append(f"{runner.name} failed {state.failures} times: {MUSETALK} for the rest")
                state.runner, state.feats = state.musetalk, state.musetalk_feats
            mt = state.musetalk
            return mt.name, mt.patches(fk, fs, src_u8, faces, state.musetalk_feats.windows(fk))
        if oom and state.bs > 1:
            state.bs = max(1, state.bs // 2)
            report.batch_sizes.append(state.bs)
            runtime.log(f"out of memory; retrying with batch size {state.bs}")
            return None
        raise


def _short(exc: BaseException, n: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


def _default_factory(spec: BackendSpec, runtime: Runtime, blend_mode: str):
    def make(backend: str):
        if backend == MUSETALK:
            from .backends.blending import load_face_parser, resolve_blend_mode
            from .backends.musetalk_engine import load_musetalk

            engine = load_musetalk(runtime, spec.auto_download, posterior=spec.posterior)
            mode = resolve_blend_mode(blend_mode)
            parser = load_face_parser(runtime, spec.auto_download) if mode != "feather" else None
            return MuseTalkRunner(engine, mode, parser)
        if backend.startswith("latentsync"):
            from .backends.latentsync_engine import load_latentsync_cached

            engine = load_latentsync_cached(backend.split("-")[-1], runtime, spec.auto_download,
                                            steps=spec.latentsync_steps, guidance=spec.latentsync_guidance,
                                            deepcache=spec.deepcache, seed=spec.seed)
            return LatentSyncRunner(engine, backend, better_paste=spec.better_paste)
        raise LipSyncError(f"{backend}: unknown backend")
    return make
