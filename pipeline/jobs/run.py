"""Running a request: ``run(request, runtime, progress, cancel) -> JobResult`` (the output path and the report).

The command line, the server's workers, batch and the avatar commands all come here; each step of a job is one
short function, in the order of a dub (pipeline/__init__.py): open the inputs, check the weights, analyse the faces,
compute the voice features, lip-sync into the one encode.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..runtime import Runtime, pick_device, pick_dtype
from .fields import RequestError
from .requests import DubRequest, PrepareRequest, Request, SpeakRequest

Progress = Callable[[str, int, int], None]
Log = Callable[[str], None]
# A job's progress bar: the stages each kind of job goes through, in order, and each one's share of the bar (by
# their cost on a GPU and a CPU, roughly). The stage names are the ones runtime.progress reports.
STAGE_SHARES = {
    "dub": (("face detection", 0.30), ("whisper audio features", 0.05), ("loading models", 0.05),
            ("lip-sync", 0.55), ("encoding", 0.05)),
    "avatar": (("whisper audio features", 0.10), ("loading models", 0.05), ("lip-sync", 0.80), ("encoding", 0.05)),
    "prepare": (("face detection", 0.60), ("avatar", 0.40)),
}


@dataclass
class JobResult:
    """What a job made: ``output`` (the mp4, or the avatar's folder) and the run's report (None for a reused
    avatar)."""

    kind: str
    output: str
    report: Any = None
    seconds: float = 0.0
    message: str = ""

    def as_dict(self, output_name: Optional[str] = None) -> Dict:
        """The report as JSON (``--report-json``, the server's job records, batch's results file)."""
        out = {"output": output_name or self.output, "seconds": round(self.seconds, 3)}
        r = self.report
        if r is not None:
            out.update({"frames": r.num_frames, "synced": {k: len(v) for k, v in r.synced.items()},
                        "passed_through": r.passed_through, "kept_silent": r.kept_silent,
                        "fallbacks": r.fallbacks, "notes": r.notes,
                        "lipsync_seconds": round(r.seconds, 3), "text": r.text()})
        if self.message:
            out["message"] = self.message
        return out


def make_runtime(request: Request, progress: Optional[Progress] = None, cancel: Optional[Callable[[], bool]] = None,
                 show_progress: bool = True) -> Runtime:
    """A Runtime on the request's device and dtype that also reports progress to ``progress`` and stops at the next
    progress point once ``cancel()`` is true."""
    device = pick_device(request.device)

    class JobRuntime(Runtime):
        def progress(self, stage: str, done: int, total: int) -> None:
            super().progress(stage, done, total)     # the cancel point
            if progress is not None:
                progress(stage, done, total)

    return JobRuntime(device=device, dtype=pick_dtype(device, request.dtype), show_progress=show_progress,
                      cancel_flag=cancel or (lambda: False), frame_ops=request.frame_ops, compile=request.compile)


def run(request: Request, runtime: Optional[Runtime] = None, progress: Optional[Progress] = None,
        cancel: Optional[Callable[[], bool]] = None, log: Optional[Log] = None) -> JobResult:
    """Check ``request`` and run it. Without ``runtime`` one is made from the request (``progress``, ``cancel``).
    Raises :class:`RequestError` before any work for a bad request, the pipeline's own errors (missing weights,
    unreadable media) during it, and :class:`~pipeline.runtime.Cancelled` when cancelled."""
    request.validate()
    if isinstance(request, (DubRequest, SpeakRequest)):
        check_output(request.out, [getattr(request, k, None) for k in ("video", "audio")])
    if getattr(request, "mask_out", None):
        check_output(request.mask_out, [request.video, request.audio], field="mask_out")
    runtime = runtime or make_runtime(request, progress, cancel, show_progress=False)
    log = log or runtime.log
    started = time.time()
    if isinstance(request, DubRequest):
        result = dub(request, runtime, log)
    elif isinstance(request, SpeakRequest):
        result = speak(request, runtime, log)
    elif isinstance(request, PrepareRequest):
        result = prepare(request, runtime, log)
    else:
        raise TypeError(f"not a request: {type(request).__name__}")
    result.seconds = time.time() - started
    return result


def job_fraction(kind: str, stage: str, done: int, total: int) -> Optional[float]:
    """How much of a ``kind`` job is done when ``stage`` is at ``done`` of ``total`` (0..1); None for a stage the
    bar does not know (it then stays where it was)."""
    start = 0.0
    for name, share in STAGE_SHARES.get(kind, ()):
        if name == stage:
            return min(1.0, start + share * (min(done, total) / total if total > 0 else 0.0))
        start += share
    return None


def check_output(out: str, inputs=(), field: str = "out") -> None:
    """Before any work: the output is new, is none of the job's ``inputs``, and its folder exists and is writable
    (nothing is overwritten)."""
    out = os.path.abspath(out)
    folder = os.path.dirname(out)
    for path in inputs:
        if path and os.path.realpath(path) == os.path.realpath(out):
            raise RequestError(field, f"{os.path.basename(out)} is this job's own input",
                               "write the output to another name or folder")
    if os.path.exists(out):
        raise RequestError(field, f"{out} already exists", "choose another name (nothing is overwritten)")
    if not os.path.isdir(folder):
        raise RequestError(field, f"the folder {folder} does not exist", "create it first, or choose another folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RequestError(field, f"the folder {folder} is not writable", "choose a folder you can write to")


# ---- a dub ---------------------------------------------------------------------------------------------------------
def dub(request: DubRequest, runtime: Runtime, log: Log) -> JobResult:
    """1. open the inputs, 2. check every weight file, 3. analyse the faces, 4. the voice features, 5. lip-sync into
    the one encode."""
    from ..audio_features import compute_audio_features
    from ..backends.selection import ensure_weights
    from ..lipsync import LipSyncRun
    from ..media.audio import load_audio_file
    from ..media.video import VideoFileFrames
    from ..media.writer import VideoWriter

    frames = VideoFileFrames(request.video, force_rate=request.force_rate, name="video")
    audio = load_audio_file(request.audio or request.video, name="audio" if request.audio else "video's audio")
    log(f"video: {frames.describe()}; audio: {audio.duration:.2f} s, {audio.sample_rate} Hz, {audio.channels} ch; "
        f"device {runtime.device}, {str(runtime.dtype).replace('torch.', '')}")
    spec = request.backend_spec()
    ensure_weights(spec, request.detector, request.blend_mode, log=log)   # one error listing every missing file
    faces = analyse_faces(request, frames, runtime, log)
    warnings = extreme_value_warnings(request, faces)
    for warning in warnings:
        log(f"warning: {warning}")
    features = compute_audio_features(audio, frames.fps, spec.audio_layout, None, runtime,
                                      compat=request.compat_int_fps, auto_download=request.auto_download)
    run_ = LipSyncRun(frames, faces, features, spec, length_policy=request.length_policy,
                      batch_size=request.batch_size, blend_mode=request.blend_options(),
                      silence=request.silence_options())
    out = os.path.abspath(request.out)
    writer = VideoWriter(out, frames.fps, frames.width, frames.height, run_.audio, crf=request.crf,
                         encoder=request.encoder)
    masks = mask_writer(request.mask_out, frames.fps, frames.width, frames.height, request.crf)
    if request.shard == "shots":        # (a mask is refused with shards: DubRequest.check_inputs)
        report = encode(lambda sink: sharded(request, run_, runtime, sink, log), writer, runtime)
    else:
        report = encode(lambda sink, mask_sink=None: run_.into(sink, runtime, mask_sink=mask_sink), writer, runtime,
                        masks)
    report.notes.extend(f"warning: {w}" for w in warnings)
    report.notes.extend(encoder_notes(writer))
    if masks is not None:
        report.notes.append(f"mask of the changed pixels: {os.path.basename(request.mask_out)}")
    return JobResult("dub", out, report)


def sharded(request: DubRequest, run_, runtime: Runtime, sink, log: Log):
    """The run made in shards at its shot cuts (pipeline/jobs/shards.py), its joined frames into ``sink``; the
    shards are kept beside the output (``.<out>.shards/``) until it is written, so an interrupted run resumes."""
    import shutil

    from .shards import sharded_lipsync

    def progress(_stage: str, done: int, total: int) -> None:
        runtime.progress("lip-sync", done, total)

    from .identity import job_key

    out = os.path.abspath(request.out)
    scratch = os.path.join(os.path.dirname(out), "." + os.path.basename(out) + ".shards")
    try:
        frames, report, scratch = sharded_lipsync(run_, request.video, request.force_rate, str(runtime.device),
                                                  request.dtype, request.shard_seconds, shard_maker(request, log),
                                                  scratch, job_key(request), progress, runtime.frame_ops,
                                                  runtime.compile)
    except BaseException:           # the finished shards stay in the scratch folder: a rerun reuses them
        sink.abort()
        raise
    try:
        for batch in frames.iter_batches(16):
            sink.write(batch.rgb)
        return report
    finally:
        frames.patches.close()
        shutil.rmtree(scratch, ignore_errors=True)


def shard_maker(request: DubRequest, log):
    """Where the shards are made: on the Ray cluster ``shard_ray`` (``workers`` actors, or one per GPU), else in
    ``workers`` local processes."""
    from .shards import LocalWorkers

    if not request.shard_ray:
        return LocalWorkers(request.workers, request.device)
    from .ray_actors import RayShards

    return RayShards(request.shard_ray, request.workers if request.workers > 1 else None, log=log)


def encoder_notes(writer) -> list:
    """What the report says of the encoder: nothing for libx264 as asked; the hardware encoder when it ran; why
    nvenc was not used when it was asked for."""
    notes = [writer.encoder_note] if writer.encoder_note else []
    if writer.encoder != "libx264":
        notes.append(f"encoded with {writer.encoder}")
    return notes


def mask_writer(path: Optional[str], fps: float, width: int, height: int, crf: int):
    """The grey mp4 of ``--mask-out`` (no sound), or None."""
    from ..media.writer import VideoWriter

    return None if not path else VideoWriter(os.path.abspath(path), fps, width, height, None, crf=crf)


EXTREME_SHARE = 0.25     # a crop moved (bbox_shift) or grown (extra_margin) by more than this share of the face


def extreme_value_warnings(request, faces) -> List[str]:
    """Legal values that are extreme for this clip's faces: a ``bbox_shift`` or ``extra_margin`` larger than a
    quarter of the median face height moves the mouth towards the crop's edge (MuseTalk v1.5 was made for 0 and
    10)."""
    heights = [f.face.detection.box[3] - f.face.detection.box[1] for f in faces.frames if f.face is not None]
    if not heights:
        return []
    height = float(np.median(heights))
    out = []
    for field, value in (("bbox_shift", request.bbox_shift), ("extra_margin", request.extra_margin)):
        if abs(value) > EXTREME_SHARE * height:
            out.append(f"{field} {value} px is {abs(value) / height:.0%} of the faces' height ({height:.0f} px): the "
                       "mouth may leave the crop; values near 0 (bbox_shift) and 10 (extra_margin) suit most clips")
    return out


def analyse_faces(request, frames, runtime: Runtime, log: Log):
    """Face Detect with the request's face settings (the node's rule for the detector's options), logging its
    summary."""
    from ..faces.detectors import create_detector, detector_options
    from ..faces.preview import summarize
    from ..faces.tracks import analyze_faces

    options = request.face_options()
    detector = create_detector(request.detector, runtime, auto_download=request.auto_download,
                               **detector_options(request.detector, request.min_face_size, frames.width,
                                                  frames.height, request.landmarks))
    faces = analyze_faces(frames, detector, runtime, options=options)
    log(summarize(faces))
    return faces


# ---- avatars -------------------------------------------------------------------------------------------------------
def speak(request: SpeakRequest, runtime: Runtime, log: Log) -> JobResult:
    """The voice's features, then the avatar's run into the one encode."""
    from ..audio_features import compute_audio_features
    from ..avatars import Avatar
    from ..media.audio import load_audio_file
    from ..media.writer import VideoWriter

    avatar = Avatar(request.avatar)
    avatar.ensure_current(runtime)
    voice = load_audio_file(request.audio, name="audio")
    features = compute_audio_features(voice, avatar.fps, "musetalk", None, runtime,
                                      auto_download=request.auto_download)
    run_ = avatar.start(features, runtime, batch_size=request.batch_size, auto_download=request.auto_download,
                        loop=request.loop, loop_range=request.loop_range, silence=request.silence_options())
    out = os.path.abspath(request.out)
    writer = VideoWriter(out, avatar.fps, avatar.frames.width, avatar.frames.height, run_.audio, crf=request.crf,
                         encoder=request.encoder)
    report = encode(run_.into, writer, runtime)
    report.notes.extend(encoder_notes(writer))
    return JobResult("avatar", out, report)


def encode(into: Callable, writer, runtime: Runtime, mask_writer=None):
    """``into(sink)`` (a run) into ``writer`` (and ``into(sink, mask_sink)`` when a ``mask_writer`` takes the masks),
    then the encoders' last frames and the files moved into place, a stage of its own on the progress bar; on any
    failure or cancel nothing is left under the outputs' names. Returns the run's report."""
    from ..lipsync.sinks import MaskWriterSink, WriterSink

    writers = ([mask_writer] if mask_writer is not None else []) + [writer]    # the output itself last
    closed = []
    try:
        if mask_writer is None:
            report = into(WriterSink(writer))
        else:
            report = into(WriterSink(writer), MaskWriterSink(mask_writer))
        runtime.progress("encoding", 0, 1)
        for w in writers:
            closed.append(w.close())
        runtime.progress("encoding", 1, 1)
    except BaseException:
        for w in writers:
            w.abort()
        for path in closed:             # the mask of an output that failed goes with it
            os.remove(path)
        raise
    return report


def prepare(request: PrepareRequest, runtime: Runtime, log: Log) -> JobResult:
    """Reuse the avatar when its video, settings and weights are unchanged (only the idle loop is updated), else
    analyse the faces and store it."""
    from ..avatars import Avatar, check_loop, file_identity, is_current, prepare_avatar
    from ..media.video import VideoFileFrames

    source, settings = file_identity(request.video), request.settings()
    if is_current(request.name, source, settings) and not request.force:
        changed = Avatar(request.name).set_default_loop(request.loop, request.loop_range)
        message = (f"avatar {request.name}: up to date (same video, settings and weights); reused"
                   + (f"; idle loop now {request.loop} over {request.loop_range or 'every frame'}" if changed else ""))
        return JobResult("prepare", Avatar(request.name).folder, None, message=message)
    frames = VideoFileFrames(request.video, force_rate=request.force_rate, name="video")
    check_loop(request.loop, request.loop_range, len(frames), request.name)   # before the long face analysis
    faces = analyse_faces(request, frames, runtime, log)
    avatar = prepare_avatar(request.name, frames, faces, runtime, source=source, settings=settings,
                            blend_mode=request.blend_options(), auto_download=request.auto_download, loop=request.loop,
                            loop_range=request.loop_range)
    return JobResult("prepare", avatar.folder, None, message=f"avatar {request.name}: prepared")


def explain(exc: BaseException) -> str:
    """A failed job's reason as a user reads it: the pipeline's own errors already name the input and the fix;
    anything else is an internal error whose details belong in the log."""
    from ...models.registry import MissingWeightsError
    from ..media.audio import AudioError
    from ..media.video import VideoError
    from ..types import LipSyncError

    if isinstance(exc, (MissingWeightsError, VideoError, AudioError, LipSyncError, ValueError)):
        return str(exc)
    return f"internal error ({type(exc).__name__}: {exc}); the log has the details"
