"""The typed requests every front end builds: :class:`DubRequest` (a video re-synced to a voice),
:class:`SpeakRequest` (a voice spoken through a prepared avatar) and :class:`PrepareRequest` (an avatar prepared from
a video). Each holds every option with its default, range and choices; the defaults are read from the floor that
owns them (``FaceOptions``, ``BackendSpec``, the writer), so nothing below this floor imports it.

The command line's flags (pipeline/jobs/flags.py), the server's JSON options and OpenAPI (pipeline/jobs/schema.py),
batch rows (pipeline/jobs/batch.py) and the nodes' widgets (nodes/common.py) are all read from these fields.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from ..avatars.avatar import DEFAULT_LOOP, WHOLE_CLIP
from ..backends.blending import BLEND_CHOICES, BlendOptions
from ..backends.shaped_masks import DEFAULT_DILATE_PX, DEFAULT_FEATHER_PX, DILATE_RANGE, FEATHER_RANGE
from ..backends.selection import BACKEND_CHOICES, DEFAULT_BATCH_SIZE, BackendSpec
from ..faces.detectors import BACKENDS as DETECTORS, DEFAULT_BACKEND as DEFAULT_DETECTOR
from ..faces.cropbox import EDGE_FACES
from ..faces.landmarks import LANDMARK_CHOICES
from ..faces.options import SPEAKER_POLICIES, FaceOptions, parse_user_box
from ..lipsync.plan import LENGTH_POLICIES, LOOP_CHOICES
from ..lipsync.silence import FADE_RANGE, MIN_SILENCE_RANGE, ON_SILENCE, SilenceOptions
from ..media.video import MAX_FORCE_RATE
from .shards import DEFAULT_MIN_SECONDS, SHARD_CHOICES
from ..media.writer import CRF_RANGE, DEFAULT_CRF, DEFAULT_ENCODER, ENCODERS
from ..runtime import COMPILE_CHOICES, DTYPE_CHOICES, FRAME_OPS_CHOICES
from .fields import INPUT, MACHINE, OPTION, RequestError, build, checked, names_table, option, specs

BATCH_SIZE_RANGE = (1, 256)          # frames per model call (out of memory halves it at run time)
SEED_RANGE = (0, 2 ** 31 - 1)


@dataclass
class MachineSettings:
    """Where and how a job runs: set by whoever owns the machine (a server job cannot choose them)."""

    device: str = option("auto", "torch device: auto (the GPU when there is one), cpu, cuda, cuda:1, mps",
                         role=MACHINE)
    dtype: str = option("auto", "compute precision: auto = fp16 on a GPU, bf16 on a CPU with native bf16, else fp32",
                        choices=DTYPE_CHOICES)
    auto_download: bool = option(True, "download missing weights on first use (off: a missing file is an error that "
                                       "lists where to put it)", role=MACHINE, inverted_names=("no_download",))
    frame_ops: str = option(FRAME_OPS_CHOICES[0], "MuseTalk's face crop and paste-back: cv2 (OpenCV and Pillow on "
                                                  "the CPU), torch (the same arithmetic on the compute device, equal "
                                                  "pixel for pixel), auto = torch on CUDA", choices=FRAME_OPS_CHOICES,
                            role=MACHINE)
    compile: str = option(COMPILE_CHOICES[0], "MuseTalk networks: compile = torch.compile at one batch shape "
                                              "(minutes at the first batch), cuda_graphs = the same replayed as CUDA "
                                              "graphs", choices=COMPILE_CHOICES, role=MACHINE)


@dataclass
class FaceSettings:
    """Face Detect's options: which face, which frames are cutaways, where the crop box lies."""

    detector: str = option(DEFAULT_DETECTOR, "face detector", choices=DETECTORS)
    landmarks: str = option(LANDMARK_CHOICES[0], "68-point landmark source for the mtcnn boxes (auto: DWPose, FAN, "
                                                 "then dlib, whichever is installed; else the 5-point estimate)",
                            choices=LANDMARK_CHOICES)
    min_face_size: float = option(FaceOptions.min_face_size, "smallest usable face width in pixels (0 = no size "
                                                             "check)", range=(0, 2048))
    min_score: float = option(0.0, "minimum detector confidence (0 = the detector's own default)", range=(0, 1))
    speaker: str = option(FaceOptions.speaker, "which face to sync when several are visible", choices=SPEAKER_POLICIES)
    track_index: int = option(FaceOptions.track_index, "with speaker track_index: which face of each shot, 0 = the "
                                                       "first to appear", range=(0, 64))
    user_box: str = option("", "with speaker user_box: x1,y1,x2,y2 in pixels, or fractions of the frame when all are "
                               "<= 1")
    shot_threshold: float = option(FaceOptions.shot_threshold, "shot-cut sensitivity (mean HSV difference 0-255; 0 = "
                                                               "no cut detection)", range=(0, 255))
    debounce_frames: int = option(FaceOptions.debounce_frames, "a face must be seen in this many frames of a shot to "
                                                               "be used", range=(1, 100))
    bridge_gap: int = option(FaceOptions.bridge_gap, "fill detector dropouts of up to this many frames inside a face "
                                                     "track (0 = off)", range=(0, 50))
    bbox_shift: int = option(FaceOptions.bbox_shift, "MuseTalk crop: move the crop centre down (+) or up (-) in "
                                                     "pixels", range=(-100, 100))
    extra_margin: int = option(FaceOptions.extra_margin, "MuseTalk v1.5 crop: pixels added below the chin",
                               range=(0, 200))
    smooth_boxes: bool = option(FaceOptions.smooth_boxes, "smooth crop boxes over time within each face track",
                                inverted_names=("no_smooth_boxes",))
    edge_faces: str = option(FaceOptions.edge_faces, "faces at the frame's edge: pad = the crop follows the "
                                                     "landmarks past the edge (the frame's border pixels fill it); "
                                                     "original = the released rule (falls back to the detector box)",
                             choices=EDGE_FACES)

    def face_options(self) -> FaceOptions:
        """The face analysis' options (checked)."""
        options = FaceOptions(min_score=self.min_score or None, min_face_size=float(self.min_face_size),
                              shot_threshold=float(self.shot_threshold), debounce_frames=int(self.debounce_frames),
                              bridge_gap=int(self.bridge_gap), speaker=self.speaker, track_index=int(self.track_index),
                              user_box=self.user_box or None, bbox_shift=int(self.bbox_shift),
                              extra_margin=int(self.extra_margin), smooth_boxes=bool(self.smooth_boxes),
                              edge_faces=self.edge_faces)
        try:
            options.validate()
            parse_user_box(self.user_box, 1000, 1000)      # its syntax, before any work
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            raise RequestError(field if field in names_table(FaceSettings) else "speaker", message or str(exc),
                               "see the option's help") from None
        return options

    def identity(self) -> Dict[str, Any]:
        """The face settings a prepared avatar depends on (pipeline/avatars: a change means preparing it again), in
        the keys avatars were first stored with."""
        out = {k: getattr(self, k) for k in ("detector", "landmarks", "min_face_size", "min_score", "speaker",
                                             "track_index", "user_box", "shot_threshold", "bbox_shift",
                                             "extra_margin")}
        out["no_smooth_boxes"] = not self.smooth_boxes
        out["edge_faces"] = self.edge_faces              # avatars made before it used the original rule
        for k in ("debounce_frames", "bridge_gap"):     # added later: stored only when changed
            if getattr(self, k) != getattr(FaceOptions, k):
                out[k] = getattr(self, k)
        return out


@dataclass
class GeneratorSettings(MachineSettings):
    """The lip-sync generator and its settings (the ``MUSETALK_BACKEND`` the UNet / Backend Selector node makes)."""

    backend: str = option(BackendSpec.choice, "lip-sync generator: auto = LatentSync when its weights are present, "
                                              "else MuseTalk v1.5", choices=BACKEND_CHOICES)
    sample_latents: bool = option(BackendSpec.posterior == "sample", "MuseTalk: sample the VAE posterior like the "
                                                                     "original (off: its mean, deterministic)",
                                  inverted_names=("deterministic_latents",))
    seed: int = option(BackendSpec.seed, "seed of LatentSync's noise and of posterior sampling", range=SEED_RANGE)
    latentsync_steps: int = option(BackendSpec.latentsync_steps, "LatentSync DDIM steps", range=(1, 100),
                                   old_names=("steps",))
    latentsync_guidance: float = option(BackendSpec.latentsync_guidance, "LatentSync guidance scale (1 = off)",
                                        range=(1.0, 5.0), old_names=("guidance",))
    deepcache: bool = option(BackendSpec.deepcache, "LatentSync: reuse deep UNet features (about 2x faster)")

    def backend_spec(self) -> BackendSpec:
        return BackendSpec(choice=self.backend, device=self.device, dtype=self.dtype,
                           auto_download=bool(self.auto_download),
                           posterior="sample" if self.sample_latents else "mode", seed=int(self.seed),
                           latentsync_steps=int(self.latentsync_steps),
                           latentsync_guidance=float(self.latentsync_guidance), deepcache=bool(self.deepcache),
                           frame_ops=self.frame_ops, compile=self.compile)


@dataclass
class BlendSettings:
    """How the new mouth is pasted (pipeline/backends/blending.py)."""

    blend_mode: str = option(BLEND_CHOICES[0], "how the new mouth is pasted: auto = jaw with the face parser, else "
                                               "feather; box = a feathered box; mouth = the lower face drawn from the "
                                               "landmarks (box and mouth also replace LatentSync's own mask)",
                             choices=BLEND_CHOICES)
    feather_px: int = option(DEFAULT_FEATHER_PX, "box and mouth masks: fade-in width, in pixels of the 256 px face",
                             range=FEATHER_RANGE)
    dilate_px: int = option(DEFAULT_DILATE_PX, "box and mouth masks: grow (+) or shrink (-) the region, in pixels "
                                               "of the 256 px face", range=DILATE_RANGE)

    def blend_options(self) -> BlendOptions:
        return BlendOptions(self.blend_mode, int(self.feather_px), int(self.dilate_px))

    def blend_identity(self) -> Dict[str, Any]:
        """What a prepared avatar's masks depend on (the sizes only for the shaped masks that read them)."""
        out: Dict[str, Any] = {"blend_mode": self.blend_mode}
        if self.blend_options().shaped:
            out.update(feather_px=int(self.feather_px), dilate_px=int(self.dilate_px))
        return out


@dataclass
class SilenceSettings:
    """What silent stretches of the voice do (pipeline/lipsync/silence.py)."""

    on_silence: str = option(SilenceOptions.on_silence, "sync: lip-sync every face frame; keep_original: frames of "
                                                        "silence keep the real mouth (passed through bit-identical)",
                             choices=ON_SILENCE)
    silence_fade: int = option(SilenceOptions.fade_frames, "keep_original: frames of cross-fade on the speech side "
                                                           "of each silence", range=FADE_RANGE)
    min_silence: float = option(SilenceOptions.min_silence, "keep_original: the shortest silence acted on, in "
                                                            "seconds (shorter pauses stay lip-synced)",
                                range=MIN_SILENCE_RANGE)

    def silence_options(self) -> SilenceOptions:
        return SilenceOptions(self.on_silence, int(self.silence_fade), float(self.min_silence))


@dataclass
class LipSyncSettings(SilenceSettings, BlendSettings):
    """The lip-sync run's options (the Batched Lip-Sync node's)."""

    length_policy: str = option(LENGTH_POLICIES[0], "follow_audio: as long as the voice (the video ping-pongs); "
                                                    "follow_video: as long as the video; shortest",
                                choices=LENGTH_POLICIES)
    batch_size: int = option(DEFAULT_BATCH_SIZE, "frames per model call (out of memory halves it)",
                             range=BATCH_SIZE_RANGE)


class Request:
    """What the three requests share: building from a mapping, checking, listing options."""

    KIND = ""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], roles: Tuple[str, ...] = (INPUT, OPTION, MACHINE),
                     prefix: str = ""):
        """A request from ``{name: value}`` (JSON, a CSV row, parsed argv): :func:`.fields.build`."""
        return build(cls, values, roles, prefix, cls.KIND)

    def validate(self):
        """Every field's type, range and choices, then what a job of this kind needs; returns the request."""
        checked(self)
        self.check_inputs()
        return self

    def check_inputs(self) -> None:
        raise NotImplementedError

    def options(self) -> Dict[str, Any]:
        """The option fields (no inputs, no machine settings): what a job's identity and a server job hold."""
        return {s.name: getattr(self, s.name) for s in specs(self) if s.role == "option"}

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def require_ray(field: str = "ray") -> None:
    """Refuse ``field`` when the ray extra is not installed, naming the fix."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise RequestError(field, "Ray is not installed", "pip install -r requirements-ray.txt with this Python "
                                                          "(in a clone: bash scripts/setup.sh --ray)") from None


def _required(value: Optional[str], field: str, fix: str) -> None:
    if not value or not str(value).strip():
        raise RequestError(field, "is required", fix)
    if "\x00" in str(value):
        raise RequestError(field, "contains a NUL byte", "give a plain file name")


def _check_out(out: str, field: str = "out") -> None:
    _required(out, field, "name the .mp4 to write")
    if not out.lower().endswith(".mp4"):
        raise RequestError(field, f"{os.path.basename(out)!r} is not an .mp4 name", "end the output name with .mp4")


def _check_loop_range(value: Optional[str], field: str = "loop_range") -> None:
    if value is None or value.strip().lower() in WHOLE_CLIP:
        return
    a, sep, b = value.strip().partition("-")
    if not (sep and a.strip().isdigit() and b.strip().isdigit() and int(a) <= int(b)):
        raise RequestError(field, f"{value!r} is not a frame range", "write A-B (frames A to B, from 0), or all")


@dataclass
class DubRequest(FaceSettings, LipSyncSettings, GeneratorSettings, Request):
    """Re-sync the lips in ``video`` to ``audio`` (default: the video's own sound) into the mp4 ``out``."""

    KIND = "dub"
    video: str = option("", "the video to dub (any format FFmpeg reads)", role=INPUT)
    audio: Optional[str] = option(None, "the voice track (any format); default: the video's own audio", kind=str,
                                  role=INPUT)
    out: str = option("", "the mp4 to write (never overwritten)", role=INPUT)
    force_rate: float = option(0.0, "resample the video to this frame rate first (0 = keep)",
                               range=(0, MAX_FORCE_RATE))
    compat_int_fps: bool = option(False, "reproduce the original's int(fps) audio timing (drifts at 29.97 fps)")
    crf: int = option(DEFAULT_CRF, "H.264 quality of the output (lower = better, bigger)", range=CRF_RANGE)
    encoder: str = option(DEFAULT_ENCODER, "H.264 encoder: libx264; nvenc = NVIDIA's hardware encoder (crf becomes "
                                           "its cq) where it opens, else libx264; auto = nvenc when CUDA is there",
                          choices=ENCODERS)
    mask_out: Optional[str] = option(None, "also write the mask of the changed pixels, per frame, as a grey mp4 "
                                           "(never overwritten)", kind=str, role=INPUT)
    shard: str = option(SHARD_CHOICES[0], "shots: lip-sync a long video in shards cut at its shot cuts, in worker "
                                          "processes, joined before the one encode (the same frames)",
                        choices=SHARD_CHOICES)
    shard_seconds: float = option(DEFAULT_MIN_SECONDS, "shard shots: shots shorter than this many seconds join the "
                                                       "next shard", range=(0.04, 3600))
    workers: int = option(1, "shard shots: worker processes (each loads the models once; one per GPU, or per few "
                             "CPU cores), or with shard_ray the Ray actors (default there: one per GPU)",
                          range=(1, 64), role=MACHINE)
    shard_ray: Optional[str] = option(None, "shard shots: make the shards on Ray actors instead of local "
                                            "processes: auto (the cluster this machine joined), local (start Ray "
                                            "here) or a cluster address; the output's folder must be shared",
                                      kind=str, role=MACHINE)

    def check_inputs(self) -> None:
        _required(self.video, "video", "name the video to dub")
        if self.audio is not None and "\x00" in self.audio:
            raise RequestError("audio", "contains a NUL byte", "give a plain file name")
        _check_out(self.out)
        if self.mask_out is not None:
            _check_out(self.mask_out, "mask_out")
            if os.path.abspath(self.mask_out) == os.path.abspath(self.out):
                raise RequestError("mask_out", "is the same file as out", "give the mask its own name")
            if self.shard != "off":
                raise RequestError("mask_out", "is not written by a sharded run yet", "leave out --shard, or the "
                                                                                      "mask")
        if self.shard_ray:
            if self.shard == "off":
                raise RequestError("shard_ray", "is only used by a sharded run", "add --shard shots, or leave it out")
            require_ray("shard_ray")
        self.face_options()


@dataclass
class SpeakRequest(SilenceSettings, MachineSettings, Request):
    """Speak ``audio`` through the prepared avatar ``avatar`` into the mp4 ``out``."""

    KIND = "avatar"
    avatar: str = option("", "the prepared avatar's name", role=INPUT, flag="--name")
    audio: str = option("", "the voice to speak (any format FFmpeg reads)", role=INPUT)
    out: str = option("", "the mp4 to write (never overwritten)", role=INPUT)
    batch_size: int = option(DEFAULT_BATCH_SIZE, "frames per model call (out of memory halves it)",
                             range=BATCH_SIZE_RANGE)
    crf: int = option(DEFAULT_CRF, "H.264 quality of the output (lower = better, bigger)", range=CRF_RANGE)
    encoder: str = option(DEFAULT_ENCODER, "H.264 encoder: libx264; nvenc = NVIDIA's hardware encoder (crf becomes "
                                           "its cq) where it opens, else libx264; auto = nvenc when CUDA is there",
                          choices=ENCODERS)
    loop: Optional[str] = option(None, "idle loop: ping_pong (forward then back) or forward (start over); default: "
                                       "the avatar's", kind=str, choices=LOOP_CHOICES)
    loop_range: Optional[str] = option(None, "the source frames the idle loop uses, A-B inclusive from 0, or all; "
                                             "default: the avatar's", kind=str)

    def check_inputs(self) -> None:
        from ..avatars.store import check_name
        from ..avatars import AvatarError

        _required(self.avatar, "avatar", "name a prepared avatar (avatar list shows them)")
        try:
            check_name(self.avatar)
        except AvatarError as exc:
            raise RequestError("avatar", str(exc), "avatar names are letters, digits, _ . -") from None
        _required(self.audio, "audio", "name the voice to speak")
        _check_out(self.out)
        _check_loop_range(self.loop_range)


@dataclass
class PrepareRequest(FaceSettings, BlendSettings, MachineSettings, Request):
    """Prepare (or reuse, when nothing changed) the avatar ``name`` from ``video``."""

    KIND = "prepare"
    video: str = option("", "the face video (any format FFmpeg reads)", role=INPUT)
    name: str = option("", "the avatar's name (letters, digits, _ . -)", role=INPUT)
    force: bool = option(False, "prepare again even when nothing changed")
    loop: str = option(DEFAULT_LOOP, "the avatar's default idle loop (changing it later does not prepare again)",
                       choices=LOOP_CHOICES)
    loop_range: str = option("", "the source frames the idle loop uses, A-B inclusive from 0 (default: every frame)")
    force_rate: float = option(0.0, "resample the video to this frame rate first (0 = keep)",
                               range=(0, MAX_FORCE_RATE))

    def check_inputs(self) -> None:
        from ..avatars.store import check_name
        from ..avatars import AvatarError

        _required(self.video, "video", "name the face video")
        _required(self.name, "name", "name the avatar")
        try:
            check_name(self.name)
        except AvatarError as exc:
            raise RequestError("name", str(exc), "avatar names are letters, digits, _ . -") from None
        _check_loop_range(self.loop_range)
        self.face_options()

    def settings(self) -> Dict[str, Any]:
        """What the prepared avatar depends on (pipeline/avatars: ``is_current``)."""
        return {**self.identity(), "force_rate": self.force_rate, **self.blend_identity()}


REQUESTS = {r.KIND: r for r in (DubRequest, SpeakRequest, PrepareRequest)}
