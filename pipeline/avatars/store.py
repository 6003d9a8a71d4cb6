"""Where avatars live on disk, what an avatar folder holds, and reading its frames back.

An avatar is a folder ``<root>/<name>/`` (root: ``$MUSETALK_AVATARS_DIR``, else the ``musetalk`` model folder's
``avatars/``: ``ComfyUI/models/musetalk/avatars`` in ComfyUI, ``~/.cache/musetalk_enhanced/models/musetalk/avatars``
standalone):

* ``avatar.json`` — the manifest: format and version, the preparation's identity (``prepare_id``, new at every
  preparation), the source (path, size, modification time), the settings it was prepared with, the weight files its
  latents and masks came from, frame size and rate, the default idle loop (``loop``, ``loop_range``: a speaking-time
  choice, changed in place without preparing again), and per frame either the crop box and blend-mask box of its
  face or the reason it is a cutaway;
* ``frames/NNNNNN.png`` — every source frame, lossless (cutaway frames are spoken bit-identical);
* ``latents.safetensors`` — MuseTalk's VAE latents of each face frame (``latents`` [F, 8, 32, 32] float32 and
  ``face_frames`` [F] int64, the frame each row belongs to);
* ``masks.safetensors`` — the blend mask of each face frame (``mask.<frame>`` uint8).

No pickle anywhere. A folder is written under a temporary name and renamed into place when complete, so a cancelled
preparation never leaves a half avatar behind; an avatar that fails any check is reported with its name and the fix
(prepare it again), never used.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..media.frames import Frames

FORMAT = "musetalk-enhanced-avatar"
VERSION = 1
MANIFEST = "avatar.json"
FRAMES_DIR = "frames"
LATENTS_FILE = "latents.safetensors"
MASKS_FILE = "masks.safetensors"
ENV_AVATARS_DIR = "MUSETALK_AVATARS_DIR"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class AvatarError(ValueError):
    """An avatar cannot be prepared, found or used; the message names the avatar and the fix."""


def avatars_root() -> str:
    """The folder avatars are stored in (created on first use)."""
    from ...models import registry

    return os.environ.get(ENV_AVATARS_DIR) or os.path.join(registry.folder_dirs("musetalk")[0], "avatars")


def check_name(name: str) -> str:
    """An avatar name is a folder name: letters, digits, ``_ . -``, at most 64 characters."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise AvatarError(f"avatar name {name!r}: use letters, digits, '_', '.' or '-' (at most 64 characters, "
                          "starting with a letter or digit).")
    return name


def avatar_dir(name: str, root: Optional[str] = None) -> str:
    return os.path.join(root or avatars_root(), check_name(name))


def frame_file(folder: str, index: int) -> str:
    return os.path.join(folder, FRAMES_DIR, f"{index:06d}.png")


def read_manifest(name: str, root: Optional[str] = None) -> Dict:
    """The manifest of a complete avatar of this pack's format and version; :class:`AvatarError` otherwise."""
    folder = avatar_dir(name, root)
    path = os.path.join(folder, MANIFEST)
    if not os.path.isdir(folder):
        known = ", ".join(list_avatars(root)) or "none yet"
        raise AvatarError(f"avatar {name!r}: not found in {os.path.dirname(folder)} (avatars there: {known}). "
                          "Prepare it first (Prepare Avatar node, or `avatar prepare --video ... --name ...`).")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise AvatarError(f"avatar {name!r}: {MANIFEST} is missing or unreadable ({exc}); the folder {folder} is "
                          "damaged. Prepare the avatar again.") from None
    if manifest.get("format") != FORMAT:
        raise AvatarError(f"avatar {name!r}: {folder} is not an avatar of this pack. Prepare the avatar again.")
    if manifest.get("version") != VERSION:
        raise AvatarError(f"avatar {name!r}: made by another version of the pack (avatar format "
                          f"{manifest.get('version')}, this pack reads {VERSION}). Prepare the avatar again.")
    for file in (LATENTS_FILE, MASKS_FILE):
        if not os.path.isfile(os.path.join(folder, file)):
            raise AvatarError(f"avatar {name!r}: {file} is missing from {folder}. Prepare the avatar again.")
    return manifest


def write_manifest(folder: str, manifest: Dict) -> None:
    """Write ``avatar.json`` whole or not at all (a temporary file renamed over it)."""
    path = os.path.join(folder, MANIFEST)
    with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(path + ".tmp", path)


def new_prepare_id() -> str:
    """The identity of one preparation: an avatar object knows it is stale when its folder holds another."""
    return uuid.uuid4().hex


def prepare_id(manifest: Dict) -> str:
    """The preparation a manifest belongs to (avatars prepared before ids existed: their creation time)."""
    return str(manifest.get("prepare_id") or f"created {manifest.get('created')}")


class AvatarFrames(Frames):
    """The stored frames of an avatar (``frames/NNNNNN.png``), read on demand: only the frames asked for, decoded in
    parallel (PNG decoding releases the GIL), through an LRU of decoded frames of up to ``cache_bytes`` (0: none) so
    a speech that loops over the frames decodes each of them once. :meth:`speech_view` gives one speech its own."""

    _pool: Optional[ThreadPoolExecutor] = None
    _pool_lock = threading.Lock()

    def __init__(self, folder: str, n: int, fps: float, width: int, height: int, cache_bytes: int = 0,
                 name: str = ""):
        self.folder, self.n, self.name = folder, int(n), name or os.path.basename(folder)
        self._stamp = None            # a speech's view: the manifest file its frames belong to (see speech_view)
        self.fps, self.width, self.height = float(fps), int(width), int(height)
        self.capacity = int(cache_bytes) // max(1, self.width * self.height * 3)
        self._cache: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.n

    def speech_view(self, cache_bytes: int) -> "AvatarFrames":
        """The same frames with a fresh cache of ``cache_bytes`` (dropped with the speech that holds it). The view
        remembers which preparation it reads: if the folder is prepared again (or removed) while the speech runs,
        its next read of a frame not yet decoded stops with an error instead of mixing two preparations' frames."""
        view = AvatarFrames(self.folder, self.n, self.fps, self.width, self.height, cache_bytes, self.name)
        view._stamp = (manifest_stamp(self.folder), _folder_prepare_id(self.folder))
        return view

    def read(self, indices: Sequence[int]) -> np.ndarray:
        idx = [int(i) for i in indices]
        bad = [i for i in idx if not 0 <= i < self.n]
        if bad:
            raise IndexError(f"frame {bad[0]} out of range (0..{self.n - 1})")
        decoded = self._decoded(sorted(set(idx)))
        out = np.empty((len(idx), self.height, self.width, 3), np.uint8)
        for j, i in enumerate(idx):
            out[j] = decoded[i]
        return out

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        return self.read(range(start, stop))

    def _decoded(self, wanted: List[int]) -> Dict[int, np.ndarray]:
        with self._lock:
            got = {i: self._cache[i] for i in wanted if i in self._cache}
            for i in got:
                self._cache.move_to_end(i)
        missing = [i for i in wanted if i not in got]
        if missing and self._stamp is not None:
            self._check_same_preparation()
        if len(missing) > 1:
            got.update(zip(missing, self._decoder_pool().map(self._decode, missing)))
        elif missing:
            got[missing[0]] = self._decode(missing[0])
        if self.capacity:
            with self._lock:
                for i in missing:
                    self._cache[i] = got[i]
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
        return got

    def _check_same_preparation(self) -> None:
        """A stat per batch; the manifest is read only when its file changed (a new default loop rewrites it
        without a new preparation)."""
        now = manifest_stamp(self.folder)
        if now == self._stamp[0]:
            return
        pid = _folder_prepare_id(self.folder) if now is not None else None
        if pid is None or pid != self._stamp[1]:
            raise AvatarError(f"avatar {self.name!r} was prepared again or removed while it was speaking; nothing "
                              "of that speech is kept. Speak again (prepare between speeches, not during one).")
        self._stamp = (now, pid)

    def _decode(self, k: int) -> np.ndarray:
        import cv2

        bgr = cv2.imread(frame_file(self.folder, k), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape[:2] != (self.height, self.width):
            raise AvatarError(f"avatar frame {k} in {self.folder} is missing or damaged. Prepare the avatar again.")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    @classmethod
    def _decoder_pool(cls) -> ThreadPoolExecutor:
        with cls._pool_lock:
            if cls._pool is None:
                cls._pool = ThreadPoolExecutor(min(8, os.cpu_count() or 1), thread_name_prefix="avatar-png")
            return cls._pool


def list_avatars(root: Optional[str] = None) -> List[str]:
    """Names of the avatar folders under ``root`` that hold a manifest, sorted."""
    root = root or avatars_root()
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root)
                  if _NAME.match(n) and os.path.isfile(os.path.join(root, n, MANIFEST)))


def remove_avatar(name: str, root: Optional[str] = None) -> str:
    """Delete an avatar folder (only one that holds an avatar manifest); returns its path."""
    folder = avatar_dir(name, root)
    if not os.path.isfile(os.path.join(folder, MANIFEST)):
        raise AvatarError(f"avatar {name!r}: not found in {os.path.dirname(folder)}; nothing removed.")
    shutil.rmtree(folder)
    return folder


# ---- identity: when an avatar must be prepared again --------------------------------------------------------------
def file_identity(path: str) -> Dict:
    """What identifies a source file: absolute path, size and modification time."""
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": int(st.st_size), "mtime": float(st.st_mtime)}


def frames_identity(frames) -> Dict:
    """What identifies frames given in memory (an IMAGE batch): a digest of their pixels."""
    import numpy as np

    digest = hashlib.sha1()
    for batch in frames.iter_batches(32):
        digest.update(np.ascontiguousarray(batch.rgb).tobytes())
    return {"sha1": digest.hexdigest(), "frames": len(frames), "width": frames.width, "height": frames.height}


def weights_identity() -> Dict:
    """The files the stored latents and masks depend on: the VAE (latents) and the face parser (masks)."""
    from ...models import registry

    out = {}
    for key in ("sd_vae.weights", "sd_vae.weights_bin", "face_parse.bisenet"):
        path = registry.find(key)
        if path:
            out[key] = {"file": os.path.basename(path), "size": int(os.path.getsize(path))}
    return out


def is_current(name: str, source: Dict, settings: Dict, root: Optional[str] = None) -> bool:
    """True when avatar ``name`` exists, is readable, and was made from this source with these settings and the
    weight files present now: then preparing it again would change nothing (the idle loop is not part of this: it
    is a speaking-time choice)."""
    try:
        m = read_manifest(name, root)
    except AvatarError:
        return False
    return m.get("source") == source and m.get("settings") == settings and m.get("weights") == weights_identity()


# ---- writing a new avatar ------------------------------------------------------------------------------------------
def staging_dir(name: str, root: Optional[str] = None) -> str:
    """A fresh temporary folder next to the avatar's, to be renamed into place by :func:`commit`."""
    import tempfile

    root = root or avatars_root()
    os.makedirs(root, exist_ok=True)
    path = tempfile.mkdtemp(prefix=f".{check_name(name)}.", dir=root)
    os.makedirs(os.path.join(path, FRAMES_DIR))
    return path


def manifest_stamp(folder: str):
    """Which file ``avatar.json`` is now (a new preparation writes a new one; None when the folder is gone)."""
    try:
        st = os.stat(os.path.join(folder, MANIFEST))
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _folder_prepare_id(folder: str) -> Optional[str]:
    try:
        with open(os.path.join(folder, MANIFEST)) as f:
            return prepare_id(json.load(f))
    except (OSError, ValueError):
        return None


def commit(staging: str, name: str, root: Optional[str] = None) -> str:
    """Move a complete staging folder into place, replacing the avatar of that name."""
    folder = avatar_dir(name, root)
    if os.path.isdir(folder):
        old = staging + ".old"
        os.rename(folder, old)
        os.rename(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, folder)
    return folder
