"""Lip-sync: frames + faces + audio features + a backend choice -> lip-synced frames, a report, the aligned audio.

:class:`LipSyncRun` is the one entry point: the ComfyUI node, the CLI (and the avatar, server and batch modes) all
make one. It checks the inputs and makes the plan (:mod:`.plan`: which source frame each output frame shows) and the
audio cut to the output's length once, at construction, so a caller can size its sink and its video writer from
them; :meth:`LipSyncRun.into` then opens the backend chain (pipeline/backends/selection.py), runs the loop
(:mod:`.loop`) into the sink (:mod:`.sinks`) and returns the report (:mod:`.report`).
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Tuple

from ..backends.blending import blend_options
from ..backends.selection import DEFAULT_BATCH_SIZE, BackendChain, BackendSpec, open_backend
from ..types import FaceSequence, LipSyncError
from .loop import run_units
from .plan import LENGTH_POLICIES, aligned_audio, make_plan
from .report import LipSyncReport
from .silence import SilenceOptions, silence_weights

__all__ = ["LipSyncRun", "run_lipsync", "LipSyncError", "LENGTH_POLICIES"]


class LipSyncRun:
    """One lip-sync run of ``frames`` (with their ``faces``) to ``features``; ``plan`` and ``audio`` (the voice cut
    or padded to exactly the output's length) are ready after construction. ``blend_mode``: a mode name or
    ``BlendOptions`` (pipeline/backends/blending.py); ``silence``: what silent stretches do (:mod:`.silence`)."""

    def __init__(self, frames, faces: FaceSequence, features, spec: Optional[BackendSpec] = None,
                 length_policy: str = "follow_audio", batch_size: int = DEFAULT_BATCH_SIZE, blend_mode="auto",
                 silence: Optional[SilenceOptions] = None):
        self.started = time.time()
        faces.check_matches(len(frames), frames.width, frames.height)
        if batch_size < 1:
            raise LipSyncError(f"batch_size: must be >= 1 (got {batch_size}).")
        if features.duration <= 0:
            raise LipSyncError("audio: the audio is empty (0 s). Connect a voice track.")
        self.frames, self.faces, self.features = frames, faces, features
        self.spec = spec if spec is not None else BackendSpec()
        self.batch_size = int(batch_size)
        self.blend = blend_options(blend_mode)
        self.blend_mode = self.blend.mode
        self.silence = silence or SilenceOptions()
        self.fps = float(frames.fps)
        self.plan = make_plan(len(frames), features.duration, self.fps, length_policy)
        self.audio = aligned_audio(features.audio, self.plan.num_frames, self.fps)
        if self.silence.active and self.audio is None:
            raise LipSyncError("on_silence: keep_original needs the voice's samples, and these audio features "
                               "carry none; compute them from the voice track (Whisper Audio Features).")
        self.weights = silence_weights(self.audio, self.fps, self.plan.num_frames, self.silence)

    def into(self, sink, runtime, engine_factory: Optional[Callable[[str], object]] = None,
             whisper_encoder=None, mask_sink=None, output_range: Optional[Tuple[int, int]] = None) -> LipSyncReport:
        """Run into ``sink`` (and each frame's mask into ``mask_sink``, when given). ``engine_factory(backend name)
        -> backend`` replaces model loading (tests); ``whisper_encoder`` is used when a fallback needs the features
        in another layout; ``output_range`` ``(start, stop)``: only those output frames (a shard)."""
        from ..audio_features import features_in_layout

        start, stop = output_range or (0, self.plan.num_frames)
        report = LipSyncReport(requested=self.spec.choice, num_frames=stop - start,
                               landmarks=str((self.faces.params or {}).get("landmark_kind") or ""))
        report.notes.extend(self.plan.notes)
        if self.weights is not None:
            report.notes.append(f"on_silence keep_original: silent stretches of at least {self.silence.min_silence:g}"
                                f" s keep the original frames; {self.silence.fade_frames}-frame fades")
        chain = BackendChain(
            self.spec, runtime, report,
            engine_factory or (lambda name: open_backend(name, self.spec, runtime, self.blend)),
            lambda layout: features_in_layout(self.features, self.fps, layout, runtime, self.spec.auto_download,
                                              whisper_encoder),
            self.batch_size)
        try:
            if self._has_faces(start, stop):
                runtime.progress("loading models", 0, 1)
                chain.open()
                runtime.progress("loading models", 1, 1)
            elif (start, stop) == (0, self.plan.num_frames):
                report.notes.append("no frame has a face: every frame passes through unchanged")
            else:
                report.notes.append(f"frames {start}-{stop - 1}: no face, no model loaded")
        except BaseException:           # a cancel or a model that cannot load: nothing is left in the sink
            sink.abort()
            if mask_sink is not None:
                mask_sink.abort()
            raise
        report.batch_sizes.append(self.batch_size)
        run_units(self.frames, self.faces, self.plan.source, chain, sink, runtime, report, self.weights, mask_sink,
                  start, stop)
        report.seconds = time.time() - self.started
        return report

    def _has_faces(self, start: int, stop: int) -> bool:
        """Whether any output frame of ``[start, stop)`` needs a network (a face that is not kept silent)."""
        for k in range(start, stop):
            if self.faces.frames[int(self.plan.source[k])].face is not None and \
                    (self.weights is None or self.weights[k] > 0):
                return True
        return False


def run_lipsync(frames, faces: FaceSequence, features, spec: BackendSpec, runtime, sink, batch_size: int = DEFAULT_BATCH_SIZE,
                length_policy: str = "follow_audio", blend_mode="auto",
                engine_factory: Optional[Callable[[str], object]] = None, whisper_encoder=None,
                silence: Optional[SilenceOptions] = None, mask_sink=None):
    """:class:`LipSyncRun` in one call: returns ``(report, aligned audio)``."""
    run = LipSyncRun(frames, faces, features, spec, length_policy, batch_size, blend_mode, silence)
    return run.into(sink, runtime, engine_factory, whisper_encoder, mask_sink), run.audio
