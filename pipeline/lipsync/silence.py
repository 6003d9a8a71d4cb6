"""Silence in the voice: which output frames keep their real mouth, and the cross-fade around them.

Lips that quiver or stay open while nobody speaks are the most common complaint about MuseTalk and LatentSync
(README "Silence"). With ``on_silence=keep_original`` the frames of a silent stretch pass through bit-identical (they
are reported like cutaways) and the lip-synced mouth fades in and out over ``silence_fade`` frames on the speech side
of each boundary, so the mouth never pops.

**The voice activity detector** (one decision per output frame, no model):

1. the voice is mixed to mono and split at the output frames (frame ``k`` covers ``[k/fps, (k+1)/fps)``);
2. a frame's level is the loudest 10 ms window inside it, in dB full scale (the DC removed per window), so a short
   onset counts;
3. a frame is voiced when its level is above ``max(-50 dBFS, peak - 35 dB, floor + 6 dB)``, where ``peak`` and
   ``floor`` are the loudest and quietest frame levels *so far* (causal, so a live speech decides exactly as the
   offline run does): digital silence and room noise are silent, quiet speech next to loud speech is not;
4. a run of silent frames shorter than ``min_silence`` seconds counts as speech (pauses between words stay synced).

**The weights**: 1 = lip-synced, 0 = the original frame, in between = the generated patch blended towards the
original by that weight. Frame ``j`` frames away from a silent run (``j = 1`` next to it) weighs ``j / (fade + 1)``
for ``j <= fade``: monotonic away from the silence on both sides.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

ON_SILENCE = ("sync", "keep_original")    # sync: today's lip-sync of every face frame
DEFAULT_FADE_FRAMES = 3
DEFAULT_MIN_SILENCE = 0.3                 # seconds: shorter pauses stay lip-synced
FADE_RANGE = (0, 25)
MIN_SILENCE_RANGE = (0.0, 10.0)
WINDOW_SECONDS = 0.010                    # the level of a frame is its loudest 10 ms window
SILENCE_FLOOR_DB = -50.0                  # never voiced below this
PEAK_RANGE_DB = 35.0                      # voiced within this much of the loudest frame so far ...
NOISE_MARGIN_DB = 6.0                     # ... and this much above the quietest


@dataclass(frozen=True)
class SilenceOptions:
    """What to do with the frames of silent stretches (see the module docstring)."""

    on_silence: str = ON_SILENCE[0]
    fade_frames: int = DEFAULT_FADE_FRAMES
    min_silence: float = DEFAULT_MIN_SILENCE

    def __post_init__(self):
        if self.on_silence not in ON_SILENCE:
            raise ValueError(f"on_silence: unknown value {self.on_silence!r}; use one of {', '.join(ON_SILENCE)}")
        if not FADE_RANGE[0] <= int(self.fade_frames) <= FADE_RANGE[1]:
            raise ValueError(f"silence_fade: {self.fade_frames} frames is outside {FADE_RANGE[0]}..{FADE_RANGE[1]}")
        if not MIN_SILENCE_RANGE[0] <= float(self.min_silence) <= MIN_SILENCE_RANGE[1]:
            raise ValueError(f"min_silence: {self.min_silence} s is outside {MIN_SILENCE_RANGE[0]:g}.."
                             f"{MIN_SILENCE_RANGE[1]:g}")

    @property
    def active(self) -> bool:
        return self.on_silence == "keep_original"

    def min_frames(self, fps: float) -> int:
        """The shortest silent run acted on, in frames (at least one)."""
        return max(1, int(math.ceil(float(self.min_silence) * fps - 1e-9)))

    def lookahead(self, fps: float) -> int:
        """Frames of voice after frame ``k`` that decide ``k``'s weight (a live speech holds frames back this long)."""
        return int(self.fade_frames) + self.min_frames(fps)


# ---- voice activity ----------------------------------------------------------------------------------------------
def frame_level(segment: np.ndarray, sample_rate: int) -> float:
    """The level (dBFS) of one frame's samples: its loudest 10 ms window, each window's mean removed."""
    win = max(1, int(round(WINDOW_SECONDS * sample_rate)))
    parts = np.array_split(np.asarray(segment, np.float64), max(1, len(segment) // win))
    power = max(float(np.mean((p - p.mean()) ** 2)) for p in parts)
    return 10.0 * math.log10(power + 1e-12)


def frame_span(k: int, sample_rate: int, fps: float) -> Tuple[int, int]:
    """The samples ``[a, b)`` of output frame ``k``."""
    return int(round(k * sample_rate / fps)), int(round((k + 1) * sample_rate / fps))


def frame_levels(mono: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """Per output frame: :func:`frame_level`; frames past the voice's end are -inf."""
    x = np.asarray(mono, np.float64).reshape(-1)
    levels = np.full(num_frames, -np.inf)
    for k in range(num_frames):
        a, b = frame_span(k, sample_rate, fps)
        if min(b, len(x)) > a:
            levels[k] = frame_level(x[a:b], sample_rate)
    return levels


class VoiceActivity:
    """The causal threshold of the module docstring, one frame level at a time."""

    def __init__(self):
        self.peak, self.floor = -np.inf, np.inf

    def voiced(self, level: float) -> bool:
        if not np.isfinite(level):
            return False
        self.peak, self.floor = max(self.peak, level), min(self.floor, level)
        return level > max(SILENCE_FLOOR_DB, self.peak - PEAK_RANGE_DB, self.floor + NOISE_MARGIN_DB)


def voiced_frames(levels: np.ndarray) -> np.ndarray:
    """:class:`VoiceActivity` over frame levels: bool per frame."""
    activity = VoiceActivity()
    return np.array([activity.voiced(float(level)) for level in levels], bool)


def voice_activity(audio, fps: float, num_frames: int) -> np.ndarray:
    """``audio`` (a :class:`~..media.audio.Audio`, or None: all silent) -> voiced flag per output frame."""
    if audio is None:
        return np.zeros(num_frames, bool)
    return voiced_frames(frame_levels(audio.mono(), audio.sample_rate, fps, num_frames))


# ---- the weights -------------------------------------------------------------------------------------------------
def silent_runs(voiced: np.ndarray, min_frames: int) -> List[Tuple[int, int]]:
    """Half-open ``[start, stop)`` runs of unvoiced frames at least ``min_frames`` long."""
    runs: List[Tuple[int, int]] = []
    k, n = 0, len(voiced)
    while k < n:
        if voiced[k]:
            k += 1
            continue
        j = k
        while j < n and not voiced[j]:
            j += 1
        if j - k >= min_frames:
            runs.append((k, j))
        k = j
    return runs


def fade_weights(num_frames: int, runs: List[Tuple[int, int]], fade_frames: int) -> np.ndarray:
    """Per output frame: 0 inside a silent run, ``j / (fade + 1)`` for the ``j``-th frame away from one
    (``j <= fade``), else 1."""
    weights = np.ones(num_frames, np.float64)
    step = 1.0 / (fade_frames + 1)
    for a, b in runs:
        weights[a:b] = 0.0
        for j in range(1, fade_frames + 1):
            for k in (a - j, b - 1 + j):
                if 0 <= k < num_frames:
                    weights[k] = min(weights[k], j * step)
    return weights


def silence_weights(audio, fps: float, num_frames: int, options: Optional[SilenceOptions]) -> Optional[np.ndarray]:
    """The weight of each output frame's lip-sync, or None when every frame is synced in full (``sync``)."""
    if options is None or not options.active:
        return None
    voiced = voice_activity(audio, fps, num_frames)
    return fade_weights(num_frames, silent_runs(voiced, options.min_frames(fps)), int(options.fade_frames))


def fade_patch(patch, source_u8: np.ndarray, weight: float):
    """``patch`` blended towards the source frame by ``weight`` (0..1): pixels ``round(src + w (new - src))``, the
    soft mask scaled by ``w`` (rounded up, so every changed pixel keeps a mask above 0)."""
    from ..types import Patch

    if weight >= 1.0 or patch.empty:
        return patch
    src = source_u8[patch.y0:patch.y1, patch.x0:patch.x1].astype(np.float32)
    pixels = np.rint(src + float(weight) * (patch.pixels.astype(np.float32) - src)).clip(0, 255).astype(np.uint8)
    alpha = None
    if patch.alpha is not None:
        alpha = np.ceil(patch.alpha.astype(np.float32) * float(weight)).clip(0, 255).astype(np.uint8)
    return Patch(patch.y0, patch.y1, patch.x0, patch.x1, pixels, alpha)
