"""Lip-synced frames handed from node to node without a lossy encode: the source frames plus the patches.

The lip-sync loop changes a face frame only inside the pasted mouth region and returns a cutaway frame untouched
(README, "What it does"). So a streamed result needs no video of its own: :class:`PatchSink` keeps,
for each output frame, the rectangle where it differs from its source frame (lossless PNG in one temporary file),
and :class:`PatchedFrames` composes the source frame and that rectangle when a later node reads the frame. The only
lossy encode of a workflow is then the final one (Mux Video), and cutaway frames reach it bit-identical to what the
loader decoded. Memory stays bounded: the source is streamed, the patches are on disk (a face-sized PNG per synced
frame).
"""
from __future__ import annotations

import os
import tempfile
import threading
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ..media.frames import Frames, image_to_uint8

Box = Tuple[int, int, int, int]


class PatchStore:
    """Rectangles of pixels by output frame index, PNG-encoded (lossless) in one temporary file. :meth:`persist`
    writes its index beside it (``<file>.json``) and keeps both, so another process can :meth:`open` it (a shard of
    a long video, pipeline/jobs/shards.py)."""

    def __init__(self, directory: Optional[str] = None, name: Optional[str] = None):
        os.makedirs(directory or tempfile.gettempdir(), exist_ok=True)
        if name:                        # a shard's store, found again by its name when a run resumes
            self.path = os.path.join(directory or tempfile.gettempdir(), name)
            self._file = open(self.path, "w+b")
        else:
            fd, self.path = tempfile.mkstemp(prefix="musetalk_patches_", suffix=".bin", dir=directory)
            self._file = os.fdopen(fd, "w+b")
        self._index: Dict[int, Tuple[int, int, Box]] = {}
        self._lock = threading.Lock()
        self.kept = False

    def persist(self, meta: Optional[dict] = None) -> str:
        """Write the index (and ``meta``) beside the file, the index last and atomically, and keep both after this
        object is gone; returns the file's path."""
        import json

        with self._lock:
            self._file.flush()
            os.fsync(self._file.fileno())
        with open(self.path + ".json.tmp", "w") as f:
            json.dump({"index": {str(k): [o, n, list(b)] for k, (o, n, b) in self._index.items()},
                       "meta": meta or {}}, f)
        os.replace(self.path + ".json.tmp", self.path + ".json")
        self.kept = True
        return self.path

    @staticmethod
    def meta(path: str) -> Optional[dict]:
        """The ``meta`` a persisted store was written with, or None when there is none (never finished)."""
        import json

        try:
            with open(path + ".json") as f:
                return json.load(f).get("meta")
        except (OSError, ValueError):
            return None

    @classmethod
    def open(cls, path: str) -> "PatchStore":
        """A store :meth:`persist` wrote (this object owns the files from now on: :meth:`close` removes them)."""
        import json

        store = cls.__new__(cls)
        store.path, store._lock, store.kept = path, threading.Lock(), False
        with open(path + ".json") as f:
            store._index = {int(k): (o, n, tuple(b)) for k, (o, n, b) in json.load(f)["index"].items()}
        store._file = open(path, "r+b")
        return store

    def __len__(self) -> int:
        return len(self._index)

    def add(self, k: int, box: Box, pixels: np.ndarray) -> None:
        import cv2

        ok, png = cv2.imencode(".png", np.ascontiguousarray(pixels[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise RuntimeError(f"could not encode the patch of output frame {k}")
        data = png.tobytes()
        with self._lock:
            self._file.seek(0, os.SEEK_END)
            offset = self._file.tell()
            self._file.write(data)
            self._index[int(k)] = (offset, len(data), tuple(int(v) for v in box))

    def get(self, k: int) -> Optional[Tuple[Box, np.ndarray]]:
        import cv2

        entry = self._index.get(int(k))
        if entry is None:
            return None
        offset, size, box = entry
        with self._lock:
            self._file.flush()
            self._file.seek(offset)
            data = self._file.read(size)
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        return box, np.ascontiguousarray(bgr[..., ::-1])

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            for path in (self.path, self.path + ".json"):
                if not self.kept and os.path.exists(path):
                    os.remove(path)

    def __del__(self):  # the temporary file goes with the last frames object that reads it
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class PatchedFrames(Frames):
    """Output frame ``k`` = source frame ``source_index[k]`` with patch ``k`` (if any) pasted in."""

    def __init__(self, source: Frames, source_index: np.ndarray, patches: PatchStore, fps: float):
        self.source = source
        self.source_index = np.asarray(source_index, np.int64)
        self.patches = patches
        self.fps = float(fps)
        self.width, self.height = source.width, source.height

    def __len__(self) -> int:
        return int(len(self.source_index))

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        out = np.array(self.source.read(self.source_index[start:stop]), np.uint8, copy=True)
        for k in range(start, stop):
            got = self.patches.get(k)
            if got is not None:
                (x1, y1, x2, y2), pixels = got
                out[k - start, y1:y2, x1:x2] = pixels
        return out

    def describe(self) -> str:
        return f"{super().describe()} (source + {len(self.patches)} lip-sync patches)"


def changed_box(frame: np.ndarray, source: np.ndarray) -> Optional[Box]:
    """The smallest rectangle holding every pixel where ``frame`` differs from ``source`` (None: identical)."""
    diff = np.any(frame != source, axis=2)
    if not diff.any():
        return None
    rows, cols = np.nonzero(diff.any(axis=1))[0], np.nonzero(diff.any(axis=0))[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


class JoinedPatches:
    """Several stores, each holding the output frames ``[start, stop)`` of one shard, read as one."""

    def __init__(self, parts):
        self.parts = list(parts)          # [(start, stop, PatchStore)]

    def __len__(self) -> int:
        return sum(len(store) for _, _, store in self.parts)

    def get(self, k: int):
        for start, stop, store in self.parts:
            if start <= k < stop:
                return store.get(k)
        return None

    def close(self) -> None:
        for _, _, store in self.parts:
            store.close()


class PatchSink:
    """A lip-sync output sink (like ``ImageSink`` / ``WriterSink``) that keeps only what changed: output frames
    arrive in order from output frame ``start``; ``source_index[k]`` names the source frame of output frame ``k``.
    ``close()`` returns the :class:`PatchedFrames`."""

    def __init__(self, source: Frames, source_index: np.ndarray, directory: Optional[str] = None, start: int = 0,
                 name: Optional[str] = None):
        self.source = source
        self.source_index = np.asarray(source_index, np.int64)
        self.store = PatchStore(directory, name)
        self.start = int(start)
        self.count = 0

    def write(self, native) -> None:
        frames = image_to_uint8(native) if isinstance(native, torch.Tensor) else np.asarray(native, np.uint8)
        n = frames.shape[0]
        k0 = self.start + self.count
        src = self.source.read(self.source_index[k0:k0 + n])
        for j in range(n):
            box = changed_box(frames[j], src[j])
            if box is not None:
                x1, y1, x2, y2 = box
                self.store.add(k0 + j, box, frames[j, y1:y2, x1:x2])
        self.count += n

    def close(self) -> PatchedFrames:
        return PatchedFrames(self.source, self.source_index[:self.start + self.count], self.store, self.source.fps)

    def abort(self) -> None:
        self.store.close()
