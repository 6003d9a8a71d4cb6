"""Live speech through an avatar: push the voice as it arrives, get each frame as soon as its audio is there.

:class:`LiveSpeech` takes 16 kHz mono float PCM in chunks of any length (:meth:`LiveSpeech.push`) and returns the
output frames whose audio window is complete; :meth:`LiveSpeech.close` returns the rest. Frame ``k`` (at ``k/fps``)
reads whisper rows up to ``floor(k*50/fps) + 10 - 2m`` (MuseTalk get_whisper_chunk: 120 ms after it at 25 fps), so a
frame is ready once that much voice has arrived.

The whisper features are those of the voice received so far, as if it ended there (:class:`LiveVoice`): a frame made
before the whole voice is known can differ slightly from the same frame made offline, the price of not waiting.
Pushed in one piece, the voice gives exactly :meth:`.avatar.Avatar.speak`'s frames (tested). Frame order, count
(``ceil(seconds * fps)``), the idle loop (the avatar's default, or the one given) and the cutaway frames (untouched)
are those of the offline run.

**Silence** (``silence``, pipeline/lipsync/silence.py): with ``on_silence=keep_original`` a frame is made only once
the voice ``silence_fade + min_silence`` frames after it has arrived (:meth:`SilenceOptions.lookahead`), so that
its weight is the offline run's: the price of keeping the real mouth live is that much more latency.

Cost per push: the new voice plus one 30 s whisper window (two when a window has just been completed), whatever the
length of the speech; MuseTalk encodes each 30 s window alone (MuseTalk get_audio_feature: zero-padded to 30 s,
log-mel maximum per window, no context across the seam), so a complete window's states never change and are kept.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..audio_features import (ROWS_PER_SECOND, ROWS_PER_SEGMENT, SEGMENT_SAMPLES, WINDOW_ROWS, AudioFeatures,
                              compute_audio_features, musetalk_frame_count, musetalk_pad_unit)
from ..lipsync.silence import (SilenceOptions, VoiceActivity, fade_patch, fade_weights, frame_level, frame_span,
                               silent_runs)
from ..media.audio import Audio
from ..runtime import Runtime
from .avatar import SPEECH_FRAME_CACHE
from .store import AvatarError

SAMPLE_RATE = 16000


class LiveVoice:
    """The voice received so far and its whisper states (MuseTalk layout at ``fps``). Complete 30 s windows are
    encoded once and kept; the open window is encoded again, as if the voice ended there, when :meth:`features` is
    asked for after new voice arrived. ``windows_encoded`` counts the 30 s windows that went through the encoder."""

    def __init__(self, fps: float, encoder=None, runtime: Optional[Runtime] = None):
        self.fps, self.encoder, self.runtime = float(fps), encoder, runtime or Runtime()
        self.samples = 0                          # voice received, 16 kHz samples
        self.tail = np.zeros(0, np.float32)       # the samples after the kept windows
        self.kept = 0                             # complete 30 s windows encoded for good
        self.hidden: Optional[torch.Tensor] = None   # [capacity, 5, d]: the kept windows' rows, then the open one's
        self.rows = 0                             # rows of ``hidden`` that are valid
        self.fresh = True                         # ``hidden`` covers every sample received
        self.windows_encoded = 0

    def add(self, pcm: np.ndarray) -> None:
        if len(pcm):
            self.tail = np.concatenate([self.tail, pcm])
            self.samples += len(pcm)
            self.fresh = False

    def features(self) -> AudioFeatures:
        """The features of all the voice so far (rows ``floor(samples*50/16000)``, MuseTalk get_audio_feature)."""
        if not self.fresh:
            self._encode_tail()
        hidden = self.hidden[:self.rows] if self.hidden is not None else torch.zeros((0, 5, 384))
        return AudioFeatures(layout="musetalk", fps=self.fps, num_frames=musetalk_frame_count(self.samples, self.fps),
                             hidden=hidden, audio=None, num_samples_16k=self.samples)

    def _encode_tail(self) -> None:
        """Encode the samples after the kept windows (the windows completed since, and the open one); keep the
        complete ones. Their rows start at ``kept * 1500``: a 30 s window is exactly 1500 rows."""
        part = compute_audio_features(Audio(self.tail[None], SAMPLE_RATE), self.fps, "musetalk", self.encoder,
                                      self.runtime)
        self.windows_encoded += int(part.info["windows_30s"])
        base = self.kept * ROWS_PER_SEGMENT
        self._store(base, part.hidden)
        self.rows = base + part.rows
        complete = len(self.tail) // SEGMENT_SAMPLES
        self.kept += complete
        self.tail = self.tail[complete * SEGMENT_SAMPLES:].copy()
        self.fresh = True

    def _store(self, base: int, states: torch.Tensor) -> None:
        need = base + states.shape[0]
        if self.hidden is None or need > self.hidden.shape[0]:      # grow by doubling: amortised O(new rows)
            old = 0 if self.hidden is None else self.hidden.shape[0]
            grown = torch.empty((max(need, 2 * old, ROWS_PER_SEGMENT),) + tuple(states.shape[1:]), dtype=states.dtype)
            if self.hidden is not None:
                grown[:base] = self.hidden[:base]
            self.hidden = grown
        self.hidden[base:need] = states.to(self.hidden.dtype)


class LiveSilence:
    """Voice activity of the frames whose voice has arrived, decided exactly as the offline run decides it."""

    def __init__(self, options: SilenceOptions, fps: float):
        self.options, self.fps = options, float(fps)
        self.activity = VoiceActivity()
        self.voiced: List[bool] = []
        self.pending = np.zeros(0, np.float32)   # samples from the start of frame len(voiced)
        self.start = 0                           # sample index of pending[0]

    def add(self, pcm: np.ndarray, final: bool = False) -> None:
        self.pending = np.concatenate([self.pending, pcm])
        while True:
            a, b = frame_span(len(self.voiced), SAMPLE_RATE, self.fps)
            have = self.start + len(self.pending)
            if have < b and not (final and have > a):
                return
            segment = self.pending[a - self.start:b - self.start]
            if len(segment) < b - a:        # the voice's last, partial frame: padded like the offline audio
                segment = np.pad(segment, (0, b - a - len(segment)))
            self.voiced.append(self.activity.voiced(frame_level(segment, SAMPLE_RATE)))
            self.pending, self.start = self.pending[b - self.start:], b

    def ready(self, final: bool) -> int:
        """How many frames' weights are decided."""
        return len(self.voiced) if final else max(0, len(self.voiced) - self.options.lookahead(self.fps) + 1)

    def weights(self, first: int) -> np.ndarray:
        """The weights of frames ``first`` onwards (index 0 = frame ``first``). They depend on the frames within
        ``lookahead`` of them only, so the voice before that is not looked at again (a long speech costs the same
        per push)."""
        lo = max(0, first - self.options.lookahead(self.fps) - 1)
        voiced = np.asarray(self.voiced[lo:], bool)
        weights = fade_weights(len(voiced), silent_runs(voiced, self.options.min_frames(self.fps)),
                               int(self.options.fade_frames))
        return weights[first - lo:]


class LiveSpeech:
    """One live speech of ``avatar``; ``encoder``/``engine`` override model loading (tests, a server's shared
    models); ``loop``/``loop_range`` override the avatar's default idle loop (:meth:`.avatar.Avatar.idle_loop`);
    ``silence``: what silent stretches do (module docstring)."""

    def __init__(self, avatar, runtime: Optional[Runtime] = None, engine=None, encoder=None, batch_size: int = 4,
                 sample_rate: int = SAMPLE_RATE, loop: Optional[str] = None, loop_range=None,
                 silence: Optional[SilenceOptions] = None):
        if sample_rate != SAMPLE_RATE:
            raise AvatarError(f"live speech takes {SAMPLE_RATE} Hz mono PCM (got {sample_rate} Hz); resample the "
                              "voice first.")
        self.avatar, self.runtime = avatar, runtime or Runtime()
        avatar.ensure_current(self.runtime)             # prepared again since it was loaded? then reloaded
        self.notes = avatar.take_reload_notes()
        self.idle = avatar.idle_loop(loop, loop_range)
        self.backend = avatar.speaking_backend(self.runtime, engine)
        self.frames = avatar.frames.speech_view(SPEECH_FRAME_CACHE)     # each looped frame decoded once
        self.voice = LiveVoice(avatar.fps, encoder, self.runtime)
        self.batch_size = max(1, int(batch_size))
        self.silence = LiveSilence(silence, avatar.fps) if silence is not None and silence.active else None
        self.kept_silent: List[int] = []   # output frames that kept the original mouth
        self.next = 0          # the next output frame to make
        self.closed = False

    def push(self, pcm) -> List[Tuple[int, np.ndarray]]:
        """Add voice samples; returns ``[(output frame index, uint8 [H, W, 3])]`` of the frames now ready."""
        if self.closed:
            raise AvatarError(f"avatar {self.avatar.name!r}: this live speech is closed; start a new one.")
        pcm = np.asarray(pcm, np.float32).reshape(-1)
        self.voice.add(pcm)
        if self.silence is not None:
            self.silence.add(pcm)
        return self._make(self._ready(final=False))

    def close(self) -> List[Tuple[int, np.ndarray]]:
        """The voice has ended: the remaining frames (the last one covers the voice's tail)."""
        self.closed = True
        if self.silence is not None:
            self.silence.add(np.zeros(0, np.float32), final=True)
        return self._make(self._ready(final=True))

    # -- which frames are ready ---------------------------------------------------------------------------------------
    def _ready(self, final: bool) -> int:
        fps, samples = self.avatar.fps, self.voice.samples
        total = max(1, int(math.ceil(samples / SAMPLE_RATE * fps - 1e-6)))   # as the plan: rounded up
        if self.silence is not None:
            total = min(total, self.silence.ready(final))
        if final:
            return total if samples else 0
        rows = samples * ROWS_PER_SECOND // SAMPLE_RATE
        last = rows - WINDOW_ROWS + 2 * musetalk_pad_unit(fps)   # the latest window start the rows cover
        if last < 0:
            return 0
        return min(total, int(math.floor((last + 1) * fps / ROWS_PER_SECOND - 1e-9)) + 1)

    # -- making frames ------------------------------------------------------------------------------------------------
    def _make(self, ready: int) -> List[Tuple[int, np.ndarray]]:
        if ready <= self.next:
            return []
        features = self.voice.features()
        out = []
        while self.next < ready:
            ks = list(range(self.next, min(ready, self.next + self.batch_size)))
            out += self._unit(ks, features)
            self.next = ks[-1] + 1
            self.runtime.check_cancelled()
        return out

    def _unit(self, ks, features) -> List[Tuple[int, np.ndarray]]:
        from ..lipsync.sinks import compose

        frames, faces = self.frames, self.avatar.faces
        srcs = [self.idle.frame(k) for k in ks]
        uniq = sorted(set(srcs))
        u8 = dict(zip(uniq, frames.read(uniq)))
        weights = dict(zip(ks, self.silence.weights(ks[0]))) if self.silence is not None else None
        with_face = [(k, s) for k, s in zip(ks, srcs) if faces.frames[s].face is not None]
        if weights is not None:
            self.kept_silent += [k for k, _ in with_face if weights[k] <= 0]
            with_face = [(k, s) for k, s in with_face if weights[k] > 0]
        patches = {}
        if with_face:
            face_ks, face_srcs = [k for k, _ in with_face], [s for _, s in with_face]
            with torch.inference_mode():
                made = self.backend.patches(face_ks, face_srcs, u8, faces, features.windows(face_ks))
            patches = {k: p for k, p in zip(face_ks, made) if p is not None}
            if weights is not None:
                patches = {k: fade_patch(p, u8[s], float(weights[k])) for (k, s), p in
                           zip(with_face, made) if p is not None}
        return [(k, compose(u8[s].copy(), u8[s], patches[k]) if k in patches else u8[s]) for k, s in zip(ks, srcs)]
