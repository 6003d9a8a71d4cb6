"""The plan of a run: which source frame each output frame shows, and the audio cut to the output's length.

**Length policy** (explicit; README "What it does"): ``follow_audio`` (default; output as long as the
audio, the video ping-pongs ``0..N-1, N-1..0, ...`` like MuseTalk's frame_list_cycle, scripts/inference.py),
``follow_video`` (output as long as the video; frames after the end of the audio are synced to silence, the audio is
padded with silence), ``shortest``. The tail of the audio is never dropped silently: ``follow_audio`` rounds the
frame count *up* and the plan's notes state any trimming another policy makes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ..media.audio import Audio
from ..types import LipSyncError

LENGTH_POLICIES = ("follow_audio", "follow_video", "shortest")
LOOP_CHOICES = ("ping_pong", "forward")   # how frames first..last repeat: the original's cycle, or start over


def ping_pong(k: int, n: int) -> int:
    """The original's cycle ``frames + frames[::-1]`` indexed by ``k % 2n`` (MuseTalk scripts/inference.py)."""
    if n <= 1:
        return 0
    r = k % (2 * n)
    return r if r < n else 2 * n - 1 - r


def loop_frame(k: int, first: int, last: int, loop: str = "ping_pong") -> int:
    """The source frame output frame ``k`` shows when the frames ``first..last`` (inclusive) repeat: ``ping_pong``
    (:func:`ping_pong` over them, the original's cycle) or ``forward`` (``first..last, first..last, ...``)."""
    if loop not in LOOP_CHOICES:
        raise LipSyncError(f"loop: unknown value {loop!r}; use one of {', '.join(LOOP_CHOICES)}.")
    n = last - first + 1
    return first + (k % n if loop == "forward" else ping_pong(k, n))


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
