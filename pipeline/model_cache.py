"""One cache for every loaded model (generators, whisper, face parser, detectors, landmark models).

A model is loaded once per *kind* and *key* and reused by later runs, nodes and threads. The key names everything
the loaded object depends on: the weight files with their modification times (:func:`file_stamp`, so a replaced
file is reloaded), the device, the dtype and the settings. Each kind keeps at most ``keep`` entries (the least
recently used goes first): the big generators keep one, so switching weights or devices never holds two copies.
:func:`clear` frees them (all, or one kind).
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Callable, Dict, Iterable, Optional, Tuple, TypeVar

T = TypeVar("T")

_ENTRIES: Dict[str, "OrderedDict[tuple, object]"] = {}
_LOADS: Dict[str, int] = {}          # how many times each kind was built (a server shows it: loaded once, reused)
_LOCK = threading.RLock()


def file_stamp(paths: Iterable[Optional[str]]) -> Tuple[Tuple[str, float], ...]:
    """``((path, mtime), ...)`` of the files a model is loaded from (None for a missing one)."""
    return tuple((p, os.path.getmtime(p)) if p and os.path.exists(p) else (p, None) for p in paths)


def cached(kind: str, key: tuple, build: Callable[[], T], keep: int = 1) -> T:
    """The model of ``kind`` for ``key``, built with ``build()`` the first time (under a lock: two threads asking
    for the same model load it once)."""
    with _LOCK:
        entries = _ENTRIES.setdefault(kind, OrderedDict())
        if key in entries:
            entries.move_to_end(key)
            return entries[key]
        while len(entries) >= max(1, keep):
            entries.popitem(last=False)   # free the old one before loading the new one
        value = build()
        entries[key] = value
        _LOADS[kind] = _LOADS.get(kind, 0) + 1
        return value


def load_counts() -> Dict[str, int]:
    """``{kind: times built}`` since the process started (``clear`` does not reset it)."""
    with _LOCK:
        return dict(_LOADS)


def clear(kind: Optional[str] = None) -> None:
    """Forget loaded models: every kind, or ``kind`` and the kinds under it (``"faces"`` clears ``"faces.mtcnn"``)."""
    with _LOCK:
        for name in [k for k in _ENTRIES if kind is None or k == kind or k.startswith(kind + ".")]:
            del _ENTRIES[name]
