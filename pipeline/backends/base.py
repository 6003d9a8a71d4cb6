"""The backend protocol: what the lip-sync loop asks of a generator, whatever it is.

A backend is opened for one run (:func:`.selection.open_backend` loads its models) and then only answers four
questions, so the loop (pipeline/lipsync/loop.py) never asks which backend it has:

* ``name`` — reported per frame (``"musetalk-v1.5"``, ``"latentsync-1.6"``, ...); ``audio_layout`` — the layout of
  the whisper features it reads (``"musetalk"`` or ``"latentsync"``, pipeline/audio_features.py);
* :meth:`Backend.unit_at` — the output frames of the next work unit from frame ``k``, at most ``size`` long: MuseTalk
  takes a batch of any frames, LatentSync a chunk of consecutive face frames of one shot (docs/architecture.md).
  ``unit_label`` names the size in reports ("batch size", "chunk length"); ``default_unit`` is its starting value
  (None: the run's batch size). Out of memory halves it (:class:`.selection.BackendChain`);
* :meth:`Backend.patches` — the lip-synced face of each frame of a unit, as a :class:`~..types.Patch` (the rectangle
  of the frame that changes) or ``None``; the backend crops, generates and blends, the loop only writes patches;
* :meth:`Backend.forget` — drop per-source-frame caches no later output frame needs.

Weight files are declared next to each backend (``required_weights``) and queried by the pre-flight check
(:func:`.selection.missing_weights`).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np
import torch

from ..types import FaceSequence, Patch

Unit = Tuple[int, int, bool]   # output frames [k0, k1), and whether the unit may hold faces


class Backend(Protocol):
    name: str
    audio_layout: str
    unit_label: str
    default_unit: Optional[int]

    def unit_at(self, source: np.ndarray, faces: FaceSequence, k: int, stop: int, size: int) -> Unit:
        """The work unit starting at output frame ``k``, at most ``size`` frames (``source[k]``: the source frame
        output ``k`` shows)."""

    def patches(self, ks: Sequence[int], srcs: Sequence[int], src_u8: Dict[int, np.ndarray], faces: FaceSequence,
                windows: torch.Tensor) -> List[Optional[Patch]]:
        """Output frames ``ks`` showing source frames ``srcs`` (all with a face), their uint8 pixels and audio
        windows -> one patch per frame."""

    def forget(self, sources: Sequence[int]) -> None:
        """Drop what is cached for these source frames."""


class LRU(OrderedDict):
    """A bounded cache: the least recently stored entry goes first."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def short_error(exc: BaseException, n: int = 300) -> str:
    """One line naming an exception, for reports and logs."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= n else text[:n] + "..."


def is_interrupt(exc: BaseException) -> bool:
    """The user cancelled (Ctrl-C, ComfyUI's Cancel): never a reason to fall back."""
    return isinstance(exc, KeyboardInterrupt) or type(exc).__name__ in ("InterruptProcessingException", "Cancelled")
