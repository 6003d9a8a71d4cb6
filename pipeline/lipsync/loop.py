"""The lip-sync loop: work units in output order -> the backend chain -> patches composed into frames -> the sink.

Rules users rely on (README "What it does"; unlike MuseTalk scripts/inference.py)):

* **Cutaways** (frames whose :class:`~..types.FrameFaces` has no face) are written bit-identical to their source and
  never enter a network. A face frame changes only inside its patch, and inside it only where the backend changed
  a pixel (:func:`.sinks.compose`).
* **Audio position is absolute**: output frame ``k`` uses the audio window of frame ``k`` whatever was skipped around
  it; the source frame shown at ``k`` comes from the plan.
* **Silence** (pipeline/lipsync/silence.py, ``on_silence=keep_original``): an output frame of weight 0 is passed
  through like a cutaway and never enters a network (a unit ends where such a stretch begins); a frame of weight
  between 0 and 1 gets its patch faded towards the source frame.
* **Units**: the backend chain says how many frames go together (a MuseTalk batch, a LatentSync chunk); progress
  and cancellation come every unit; a unit that ran out of memory is read and run again, smaller.
* **Masks**: with a mask sink, each output frame's soft mask of the pixels the run changed (the patch's ``alpha``;
  nothing on cutaways and kept-silent frames) goes to it in output order.
* **Overlap**: the next unit's frames are read, and the previous unit's output is written, in two worker threads
  while the current unit is on the model. Per-source caches are dropped once no later output frame shows the source.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch

from ..types import FaceSequence, Patch
from .silence import fade_patch
from .sinks import compose


@dataclass
class _Unit:
    ks: List[int]                      # output frames
    srcs: List[int]                    # the source frame each shows
    src_u8: Dict[int, np.ndarray]      # uint8 pixels per source frame
    native: Dict[int, object]          # the same frames in their own form (float IMAGE rows or uint8)


class _Workers:
    """One reader and one writer thread, running in the caller's inference/grad mode (ComfyUI runs nodes under
    inference_mode, and an IMAGE tensor made there may only be written in that mode)."""

    def __init__(self):
        self.inference, self.grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()
        self.reader = ThreadPoolExecutor(1, thread_name_prefix="musetalk-read")
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="musetalk-write")

    def _in_mode(self, fn, *args):
        with torch.inference_mode(self.inference), torch.set_grad_enabled(self.grad and not self.inference):
            return fn(*args)

    def read(self, fn, *args) -> Future:
        return self.reader.submit(self._in_mode, fn, *args)

    def write(self, fn, *args) -> Future:
        return self.writer.submit(self._in_mode, fn, *args)

    def shutdown(self, cancel: bool = False) -> None:
        self.reader.shutdown(wait=True, cancel_futures=cancel)
        self.writer.shutdown(wait=True, cancel_futures=cancel)


class _UnitReader:
    """Reads the frames of a unit; :meth:`prefetch` starts reading the next one in the background."""

    def __init__(self, frames, source: np.ndarray, workers: _Workers):
        self.frames, self.source, self.workers = frames, source, workers
        self.pending = None   # (k0, k1, future)

    def read(self, k0: int, k1: int) -> _Unit:
        srcs = [int(self.source[j]) for j in range(k0, k1)]
        uniq = sorted(set(srcs))
        u8 = self.frames.read(uniq)
        native = self.frames.native_read(uniq) if hasattr(self.frames, "native_read") else u8
        return _Unit(list(range(k0, k1)), srcs, {s: u8[i] for i, s in enumerate(uniq)},
                     {s: native[i] for i, s in enumerate(uniq)})

    def get(self, k0: int, k1: int) -> _Unit:
        pending, self.pending = self.pending, None
        if pending is not None and pending[:2] == (k0, k1):
            return pending[2].result()
        return self.read(k0, k1)

    def prefetch(self, k0: int, k1: int) -> None:
        self.pending = (k0, k1, self.workers.read(self.read, k0, k1))


def _generate(chain, unit: _Unit, faces: FaceSequence, is_face: bool, report,
              weights: Optional[np.ndarray]) -> Optional[Dict[int, Patch]]:
    """Patches of the unit's face frames by output frame (faded by their silence weight); None when the unit shrank
    and must be run again."""
    face_pos = [i for i, s in enumerate(unit.srcs) if faces.frames[s].face is not None] if is_face else []
    if not face_pos or chain.backend is None:
        return {}
    ks = [unit.ks[i] for i in face_pos]
    got = chain.run(ks, [unit.srcs[i] for i in face_pos], unit.src_u8, faces)
    if got is None:
        return None
    name, patches = got
    done = {k: p for k, p in zip(ks, patches) if p is not None}
    if weights is not None:
        done = {k: fade_patch(p, unit.src_u8[unit.srcs[k - unit.ks[0]]], float(weights[k])) for k, p in done.items()}
    report.add(name, list(done))
    return done


def _compose(unit: _Unit, patches: Dict[int, Patch], report, kept: np.ndarray, faces: FaceSequence):
    """The unit's output frames: the source frame, with its patch written in when it has one."""
    out = []
    for k, s in zip(unit.ks, unit.srcs):
        frame = unit.native[s]
        if k in patches:
            frame = compose(frame.clone() if isinstance(frame, torch.Tensor) else frame.copy(), unit.src_u8[s],
                            patches[k])
        else:
            report.passed_through.append(k)
            if kept[k] and faces.frames[s].face is not None:
                report.kept_silent.append(k)
        out.append(frame)
    return torch.stack(out) if isinstance(out[0], torch.Tensor) else np.stack(out)


class _Units:
    """The chain's units, ended where a kept-silent stretch begins; such a stretch is a unit of its own with no face
    frames (it is passed through like cutaways)."""

    def __init__(self, chain, faces: FaceSequence, source: np.ndarray, kept: np.ndarray):
        self.chain, self.faces, self.source, self.kept = chain, faces, source, kept

    def at(self, k: int, total: int):
        if self.kept[k]:
            j = k + 1
            while j < total and self.kept[j]:
                j += 1
            return k, j, False
        k0, k1, is_face = self.chain.unit_at(self.source, self.faces, k, total)
        silent = np.flatnonzero(self.kept[k0:k1])
        return (k0, k0 + int(silent[0]), is_face) if len(silent) else (k0, k1, is_face)


def _masks(unit: _Unit, patches: Dict[int, Patch]) -> List[Optional[Patch]]:
    """Per output frame of the unit: its patch (whose ``alpha`` is the mask), or None (mask 0)."""
    return [patches.get(k) for k in unit.ks]


def run_units(frames, faces: FaceSequence, source: np.ndarray, chain, sink, runtime, report,
              weights: Optional[np.ndarray] = None, mask_sink=None, start: int = 0,
              stop: Optional[int] = None) -> None:
    """The output frames ``[start, stop)`` (``source[k]``: the source frame output frame ``k`` shows; default: all)
    through the chain into ``sink``; ``weights``: each output frame's silence weight (None: all 1); ``mask_sink``:
    where the frames' masks go. A range is one shard of a long video (pipeline/jobs/shards.py): its frames are made
    exactly as in the whole run (audio windows and LatentSync's noise follow the absolute frame number)."""
    total = int(len(source)) if stop is None else int(stop)
    last_use = np.full(len(frames), -1, np.int64)   # the last output frame showing each source frame
    last_use[source[:total]] = np.arange(total)
    kept = np.zeros(total, bool) if weights is None else np.asarray(weights) <= 0
    units = _Units(chain, faces, source, kept)
    workers = _Workers()
    reader = _UnitReader(frames, source, workers)
    written = None   # the last sink write: at most one unit in flight
    try:
        runtime.progress("lip-sync", 0, total - start)     # shown from the start, even when one unit holds all
        k = int(start)
        while k < total:
            k0, k1, is_face = units.at(k, total)
            unit = reader.get(k0, k1)
            if k1 < total:
                reader.prefetch(*units.at(k1, total)[:2])
            patches = _generate(chain, unit, faces, is_face, report, weights)
            if patches is None:
                continue
            batch = _compose(unit, patches, report, kept, faces)
            if written is not None:
                written.result()   # surface an encoder error now
            written = workers.write(_write, sink, batch, mask_sink, _masks(unit, patches))
            chain.forget([s for s in set(unit.srcs) if last_use[s] < k1])
            k = k1
            runtime.progress("lip-sync", k - start, total - start)
        if written is not None:
            written.result()
    except BaseException:
        workers.shutdown(cancel=True)
        sink.abort()
        if mask_sink is not None:
            mask_sink.abort()
        raise
    workers.shutdown()


def _write(sink, batch, mask_sink, masks) -> None:
    sink.write(batch)
    if mask_sink is not None:
        mask_sink.write(masks)
