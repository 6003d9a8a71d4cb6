"""Live speech through an avatar: push the voice as it arrives, get each frame as soon as its audio is there.

:class:`LiveSpeech` takes 16 kHz mono float PCM in chunks of any length (:meth:`LiveSpeech.push`) and returns the
output frames whose audio window is complete; :meth:`LiveSpeech.close` returns the rest. Frame ``k`` (at ``k/fps``)
reads whisper rows up to ``floor(k*50/fps) + 10 - 2m`` (spec musetalk.md §1.2: 120 ms after its time at 25 fps), so a
frame is ready once that much voice has arrived.

The whisper features are computed on the voice received so far, as if it ended there (MuseTalk's layout encodes 30 s
windows zero-padded to 30 s): a frame made before the whole voice is known can differ slightly from the same frame
made offline, the price of not waiting. Pushed in one piece, the voice gives exactly :meth:`.avatar.Avatar.speak`'s
frames (tested). Frame order, count (``ceil(seconds * fps)``), the ping-pong loop and the cutaway frames (untouched)
are those of the offline run.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..media.audio import Audio
from ..runtime import Runtime
from .store import AvatarError

SAMPLE_RATE = 16000


class LiveSpeech:
    """One live speech of ``avatar``; ``encoder``/``engine`` override model loading (tests, a server's shared
    models)."""

    def __init__(self, avatar, runtime: Optional[Runtime] = None, engine=None, encoder=None, batch_size: int = 4,
                 sample_rate: int = SAMPLE_RATE):
        if sample_rate != SAMPLE_RATE:
            raise AvatarError(f"live speech takes {SAMPLE_RATE} Hz mono PCM (got {sample_rate} Hz); resample the "
                              "voice first.")
        self.avatar, self.runtime = avatar, runtime or Runtime()
        self.backend = avatar.speaking_backend(self.runtime, engine)
        self.encoder, self.batch_size = encoder, max(1, int(batch_size))
        self.pcm = np.zeros(0, np.float32)
        self.next = 0          # the next output frame to make
        self.closed = False

    def push(self, pcm) -> List[Tuple[int, np.ndarray]]:
        """Add voice samples; returns ``[(output frame index, uint8 [H, W, 3])]`` of the frames now ready."""
        if self.closed:
            raise AvatarError(f"avatar {self.avatar.name!r}: this live speech is closed; start a new one.")
        chunk = np.asarray(pcm, np.float32).reshape(-1)
        self.pcm = np.concatenate([self.pcm, chunk])
        return self._make(self._ready(final=False))

    def close(self) -> List[Tuple[int, np.ndarray]]:
        """The voice has ended: the remaining frames (the last one covers the voice's tail)."""
        self.closed = True
        return self._make(self._ready(final=True))

    # -- which frames are ready ---------------------------------------------------------------------------------------
    def _ready(self, final: bool) -> int:
        from ..audio_features import ROWS_PER_SECOND, WINDOW_ROWS, musetalk_pad_unit

        fps = self.avatar.fps
        total = max(1, int(math.ceil(len(self.pcm) / SAMPLE_RATE * fps - 1e-6)))   # as the plan: rounded up
        if final:
            return total if len(self.pcm) else 0
        rows = len(self.pcm) * ROWS_PER_SECOND // SAMPLE_RATE
        last = rows - WINDOW_ROWS + 2 * musetalk_pad_unit(fps)   # the latest window start the rows cover
        if last < 0:
            return 0
        return min(total, int(math.floor((last + 1) * fps / ROWS_PER_SECOND - 1e-9)) + 1)

    # -- making frames ------------------------------------------------------------------------------------------------
    def _make(self, ready: int) -> List[Tuple[int, np.ndarray]]:
        from ..audio_features import compute_audio_features

        if ready <= self.next:
            return []
        features = compute_audio_features(Audio(self.pcm[None], SAMPLE_RATE), self.avatar.fps, "musetalk",
                                          self.encoder, self.runtime)
        out = []
        while self.next < ready:
            ks = list(range(self.next, min(ready, self.next + self.batch_size)))
            out += self._unit(ks, features)
            self.next = ks[-1] + 1
            self.runtime.check_cancelled()
        return out

    def _unit(self, ks, features) -> List[Tuple[int, np.ndarray]]:
        from ..lipsync.plan import ping_pong
        from ..lipsync.sinks import compose

        frames, faces = self.avatar.frames, self.avatar.faces
        srcs = [ping_pong(k, len(frames)) for k in ks]
        uniq = sorted(set(srcs))
        u8 = dict(zip(uniq, frames.read(uniq)))
        face_ks = [k for k, s in zip(ks, srcs) if faces.frames[s].face is not None]
        patches = {}
        if face_ks:
            face_srcs = [s for s in srcs if faces.frames[s].face is not None]
            with torch.inference_mode():
                made = self.backend.patches(face_ks, face_srcs, u8, faces, features.windows(face_ks))
            patches = {k: p for k, p in zip(face_ks, made) if p is not None}
        return [(k, compose(u8[s].copy(), u8[s], patches[k]) if k in patches else u8[s]) for k, s in zip(ks, srcs)]
