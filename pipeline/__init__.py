"""The lip-sync pipeline, ComfyUI-free. The front door names the five steps of a dub, in order; each lives in one
floor (docs/architecture.md):

1. :func:`open_video` — frames streamed from a file (:mod:`.media`);
2. :func:`analyze_faces` — shots, face tracks, cutaways and crop geometry (:mod:`.faces`);
3. :func:`compute_audio_features` — whisper-tiny windows per output frame (:mod:`.audio_features`);
4. :class:`LipSyncRun` — the plan, the backend chain and the loop into a sink (:mod:`.lipsync`, :mod:`.backends`);
5. :func:`write_video` — the one lossy encode (:mod:`.media.video`).

Imports are deferred to the call, so importing the pack (ComfyUI start-up) loads no model code.
"""
from __future__ import annotations


def open_video(path: str, **options):
    """:class:`~.media.video.VideoFileFrames` (streamed; ``force_rate``, ``frame_load_cap``, ...)."""
    from .media.video import VideoFileFrames

    return VideoFileFrames(path, **options)


def load_audio(path: str, **options):
    """:class:`~.media.audio.Audio` from any file FFmpeg reads (native rate and channels)."""
    from .media.audio import load_audio_file

    return load_audio_file(path, **options)


def analyze_faces(frames, detector, runtime=None, **options):
    """:func:`.faces.tracks.analyze_faces`: the ``MUSETALK_FACES`` of ``frames``."""
    from .faces.tracks import analyze_faces as analyze

    return analyze(frames, detector, runtime, **options)


def compute_audio_features(audio, fps: float, layout: str = "musetalk", **options):
    """:func:`.audio_features.compute_audio_features`: one whisper window per output frame at ``fps``."""
    from .audio_features import compute_audio_features as compute

    return compute(audio, fps, layout, **options)


def write_video(path: str, frames, audio=None, **options):
    """:func:`.media.writer.write_video`: frames (+ audio) -> mp4, the only lossy encode."""
    from .media.writer import write_video as write

    return write(path, frames, audio, **options)


def __getattr__(name: str):
    """``pipeline.LipSyncRun`` is :class:`.lipsync.LipSyncRun`, imported on first use."""
    if name == "LipSyncRun":
        from .lipsync import LipSyncRun

        return LipSyncRun
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
