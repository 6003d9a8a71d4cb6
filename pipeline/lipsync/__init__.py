"""Lip-sync: frames + faces + audio features + a backend choice -> lip-synced frames, a report, the aligned audio.

:class:`LipSyncRun` is the one entry point: the ComfyUI node, the CLI (and the avatar, server and batch modes) all
make one. It checks the inputs and makes the plan (:mod:`.plan`: which source frame each output frame shows) and the
audio cut to the output's length once, at construction, so a caller can size its sink and its video writer from
them; :meth:`LipSyncRun.into` then opens the backend chain (pipeline/backends/selection.py), runs the loop
(:mod:`.loop`) into the sink (:mod:`.sinks`) and returns the report (:mod:`.report`).
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from ..backends.selection import DEFAULT_BATCH_SIZE, BackendChain, BackendSpec, open_backend
from ..types import FaceSequence, LipSyncError
from .loop import run_units
from .plan import LENGTH_POLICIES, aligned_audio, make_plan
from .report import LipSyncReport

__all__ = ["LipSyncRun", "run_lipsync", "LipSyncError", "LENGTH_POLICIES"]


class LipSyncRun:
    """One lip-sync run of ``frames`` (with their ``faces``) to ``features``; ``plan`` and ``audio`` (the voice cut
    or padded to exactly the output's length) are ready after construction."""

    def __init__(self, frames, faces: FaceSequence, features, spec: Optional[BackendSpec] = None,
                 length_policy: str = "follow_audio", batch_size: int = DEFAULT_BATCH_SIZE, blend_mode: str = "auto"):
        self.started = time.time()
        faces.check_matches(len(frames), frames.width, frames.height)
        if batch_size < 1:
            raise LipSyncError(f"batch_size: must be >= 1 (got {batch_size}).")
        if features.duration <= 0:
            raise LipSyncError("audio: the audio is empty (0 s). Connect a voice track.")
        self.frames, self.faces, self.features = frames, faces, features
        self.spec = spec if spec is not None else BackendSpec()
        self.batch_size, self.blend_mode = int(batch_size), blend_mode
        self.fps = float(frames.fps)
        self.plan = make_plan(len(frames), features.duration, self.fps, length_policy)
        self.audio = aligned_audio(features.audio, self.plan.num_frames, self.fps)

    def into(self, sink, runtime, engine_factory: Optional[Callable[[str], object]] = None,
             whisper_encoder=None) -> LipSyncReport:
        """Run into ``sink``. ``engine_factory(backend name) -> backend`` replaces model loading (tests);
        ``whisper_encoder`` is used when a fallback needs the features in another layout."""
        from ..audio_features import features_in_layout

        report = LipSyncReport(requested=self.spec.choice, num_frames=self.plan.num_frames,
                               landmarks=str((self.faces.params or {}).get("landmark_kind") or ""))
        report.notes.extend(self.plan.notes)
        chain = BackendChain(
            self.spec, runtime, report,
            engine_factory or (lambda name: open_backend(name, self.spec, runtime, self.blend_mode)),
            lambda layout: features_in_layout(self.features, self.fps, layout, runtime, self.spec.auto_download,
                                              whisper_encoder),
            self.batch_size)
        try:
            if self._has_faces():
                runtime.progress("loading models", 0, 1)
                chain.open()
                runtime.progress("loading models", 1, 1)
            else:
                report.notes.append("no frame has a face: every frame passes through unchanged")
        except BaseException:           # a cancel or a model that cannot load: nothing is left in the sink
            sink.abort()
            raise
        report.batch_sizes.append(self.batch_size)
        run_units(self.frames, self.faces, self.plan.source, chain, sink, runtime, report)
        report.seconds = time.time() - self.started
        return report

    def _has_faces(self) -> bool:
        return any(self.faces.frames[int(s)].face is not None for s in set(self.plan.source.tolist()))


def run_lipsync(frames, faces: FaceSequence, features, spec: BackendSpec, runtime, sink, batch_size: int = DEFAULT_BATCH_SIZE,
                length_policy: str = "follow_audio", blend_mode: str = "auto",
                engine_factory: Optional[Callable[[str], object]] = None, whisper_encoder=None):
    """:class:`LipSyncRun` in one call: returns ``(report, aligned audio)``."""
    run = LipSyncRun(frames, faces, features, spec, length_policy, batch_size, blend_mode)
    return run.into(sink, runtime, engine_factory, whisper_encoder), run.audio
