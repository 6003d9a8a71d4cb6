"""Which backend runs, and the fallback chain: the one place where a backend is chosen or given up on.

* :class:`BackendSpec` — the ``MUSETALK_BACKEND`` payload (the user's choice and settings; nothing loads).
* :meth:`BackendSpec.chain` — the order backends are tried: ``auto`` takes LatentSync 1.6, then 1.5, when their
  weights are present, and MuseTalk v1.5 is always the last resort.
* :func:`missing_weights` / :func:`ensure_weights` — the pre-flight check over the files each backend, the audio
  encoder and the face detector declare, so one error lists everything before any work starts.
* :class:`BackendChain` — opens the first backend that loads (each one that does not is reported with why), and
  runs work units on it: out of memory shrinks the unit and retries; a LatentSync unit that fails is redone by
  MuseTalk, and after :data:`MAX_FAILURES` failures MuseTalk takes over the rest. The report says which frames used
  which backend and why.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from ..runtime import COMPILE_CHOICES, FRAME_OPS_CHOICES, Runtime, is_oom
from ..types import LipSyncError
from . import latentsync, musetalk
from .base import Backend, is_interrupt, short_error
from .latentsync_engine import DEFAULT_GUIDANCE, DEFAULT_SEED, DEFAULT_STEPS

BACKEND_CHOICES = ("auto", musetalk.NAME) + latentsync.VERSIONS
MUSETALK = musetalk.NAME
DEFAULT_BATCH_SIZE = 8             # frames per model call (a MuseTalk batch); out of memory halves it
MAX_FAILURES = 3                   # LatentSync units that may fail before MuseTalk takes over the rest

Factory = Callable[[str], Backend]


@dataclass
class BackendSpec:
    """Which generator to run and how; models load lazily inside the lip-sync run."""

    choice: str = "auto"
    device: str = "auto"
    dtype: str = "auto"
    auto_download: bool = True
    posterior: str = "mode"            # MuseTalk VAE latent: "mode" (deterministic) or "sample" (the original)
    seed: int = DEFAULT_SEED
    latentsync_steps: int = DEFAULT_STEPS
    latentsync_guidance: float = DEFAULT_GUIDANCE
    deepcache: bool = False
    better_paste: bool = True          # LatentSync: paste only the regenerated lower face (AlignRestore.restore_img)
    frame_ops: str = FRAME_OPS_CHOICES[0]   # the runtime's (pipeline/runtime.py): where MuseTalk crops and pastes
    compile: str = COMPILE_CHOICES[0]       # the runtime's: fixed-shape speed-ups of the MuseTalk networks

    def __post_init__(self):
        if self.choice not in BACKEND_CHOICES:
            raise LipSyncError(f"backend: unknown choice {self.choice!r}; use one of {', '.join(BACKEND_CHOICES)}.")
        if self.posterior not in ("mode", "sample"):
            raise LipSyncError(f"posterior: must be 'mode' or 'sample', got {self.posterior!r}.")

    def chain(self) -> List[Tuple[str, str]]:
        """``[(backend, why it is tried)]`` in order; MuseTalk is always the last resort."""
        if self.choice == "auto":
            out = [(v, "auto: weights present") for v in latentsync.VERSIONS if latentsync.latentsync_present(v)]
            return out + [(MUSETALK, "auto: default" if not out else "fallback")]
        if self.choice == MUSETALK:
            return [(MUSETALK, "requested")]
        return [(self.choice, "requested"), (MUSETALK, "fallback")]

    def primary(self) -> str:
        return self.chain()[0][0]

    @property
    def audio_layout(self) -> str:
        """The whisper feature layout the first backend of the chain reads (the features node's "follow backend")."""
        return layout_of(self.primary())


def backend_class(name: str):
    """The class that runs the backend ``name``: what it declares (``audio_layout``, its work unit) is read there."""
    if name == MUSETALK:
        return musetalk.MuseTalkBackend
    if name in latentsync.VERSIONS:
        return latentsync.LatentSyncBackend
    raise LipSyncError(f"{name}: unknown backend; use one of {', '.join(BACKEND_CHOICES[1:])}.")


def layout_of(backend: str) -> str:
    """The whisper feature layout the backend ``backend`` reads: its own declaration (``audio_layout``); the one
    answer for the features node, the pre-flight check, the selection and the fallback."""
    return backend_class(backend).audio_layout


def open_backend(name: str, spec: BackendSpec, runtime: Runtime, blend_mode) -> Backend:
    """Load one backend by name (models are cached: a second run with the same files reuses them). ``blend_mode``:
    a mode name or pipeline/backends/blending.py ``BlendOptions``."""
    if name == MUSETALK:
        return musetalk.open_musetalk(runtime, spec.auto_download, spec.posterior, blend_mode)
    if name in latentsync.VERSIONS:
        return latentsync.open_latentsync(name, runtime, spec.auto_download, spec.latentsync_steps,
                                          spec.latentsync_guidance, spec.deepcache, spec.seed, spec.better_paste,
                                          blend_mode)
    raise LipSyncError(f"{name}: unknown backend")


# ---- pre-flight: every missing file in one message ----------------------------------------------------------------
def missing_weights(spec: BackendSpec, detector: str = "mtcnn", blend_mode: str = "auto") -> List[str]:
    """Registry keys of every file a whole run needs and does not have. LatentSync files are not required: without
    them the run falls back to MuseTalk."""
    from ...models import registry
    from ..whisper_encoder import whisper_requirements
    from ..faces.detectors import detector_requirements

    need = whisper_requirements(spec.audio_layout) + musetalk.required_weights(blend_mode) + \
        detector_requirements(detector)
    missing = [alternatives[0] for alternatives in need if not any(registry.find(k) for k in alternatives)]
    return list(dict.fromkeys(missing))


def ensure_weights(spec: BackendSpec, detector: str = "mtcnn", blend_mode: str = "auto", log=print) -> None:
    """Download what :func:`missing_weights` lists (when allowed), or raise one ``MissingWeightsError`` for all."""
    from ...models import registry

    need = missing_weights(spec, detector, blend_mode)
    if need:
        registry.ensure(need, auto_download=spec.auto_download, log=log)


def weights_in_use(spec: BackendSpec, detector: str = "mtcnn", blend_mode: str = "auto") -> Dict[str, Dict]:
    """The weight files a run would read now, ``{registry key: {file, size, mtime}}``: the backends of the chain, both
    whisper-tiny files, the detector's and the face parser's. A finished job is only the same job while these are
    the same files (pipeline/jobs/batch.py)."""
    from ...models import mtcnn, registry
    from ..whisper_encoder import whisper_weight_keys

    keys = [k for alternatives in musetalk.required_weights(blend_mode) for k in alternatives]
    for layout in dict.fromkeys(layout_of(name) for name in BACKEND_CHOICES[1:]):
        keys += whisper_weight_keys(layout)
    keys += list(mtcnn.REGISTRY_KEYS.values()) if detector == "mtcnn" else ["s3fd", "fan68"]
    keys += [k for name, _ in spec.chain() if name in latentsync.VERSIONS
             for alternatives in latentsync.required_weights(name) for k in alternatives]
    out = {}
    for key in dict.fromkeys(keys):
        path = registry.find(key) if key in registry.REGISTRY else None
        if path:
            st = os.stat(path)
            out[key] = {"file": os.path.basename(path), "size": int(st.st_size), "mtime": float(st.st_mtime)}
    return out


# ---- the chain at run time ----------------------------------------------------------------------------------------
class BackendChain:
    """The backend of a run, its unit size, and its fallback. ``factory(name)`` opens a backend (tests inject one),
    ``open_features(layout)`` gives the audio features in a layout."""

    def __init__(self, spec: BackendSpec, runtime: Runtime, report, factory: Factory,
                 open_features: Callable[[str], object], batch_size: int):
        self.spec, self.runtime, self.report = spec, runtime, report
        self.factory, self.open_features = factory, open_features
        self.batch_size = int(batch_size)
        self.backend: Optional[Backend] = None
        self.features = None
        self.size = self.batch_size
        self.failures = 0
        self._musetalk: Optional[Tuple[Backend, object]] = None

    def _use(self, backend: Backend, features) -> None:
        self.backend, self.features = backend, features
        self.size = backend.default_unit or self.batch_size

    def unit_at(self, source, faces, k: int, stop: int):
        """The next work unit (a batch of any frames when no backend is open: every frame is a cutaway)."""
        if self.backend is None:
            return k, min(stop, k + self.batch_size), True
        return self.backend.unit_at(source, faces, k, stop, self.size)

    def open(self) -> None:
        """Open the first backend of the chain that loads; each one that does not is reported with why."""
        chain = self.spec.chain()
        for i, (name, why) in enumerate(chain):
            try:
                self._use(self.factory(name), self.open_features(layout_of(name)))
                if i > 0 or why != "requested":
                    self.report.notes.append(f"backend {name} ({why})")
                return
            except Exception as exc:
                if is_interrupt(exc) or i == len(chain) - 1:
                    raise
                self.report.fallbacks.append(f"{name} unavailable -> {chain[i + 1][0]}: {short_error(exc)}")
                self.runtime.log(f"{name} unavailable ({short_error(exc)}); falling back to {chain[i + 1][0]}")

    def run(self, ks, srcs, src_u8, faces):
        """Patches of one unit: ``(backend name, patches)``, or None when the unit shrank and must be retried."""
        backend = self.backend
        try:
            return backend.name, backend.patches(ks, srcs, src_u8, faces, self.features.windows(ks))
        except Exception as exc:
            if is_interrupt(exc):
                raise
            oom = is_oom(exc)
            if oom:
                self.runtime.empty_cache()
                if self.size > 1:
                    self.size = max(1, self.size // 2)
                    self.report.shrunk(backend.name, backend.unit_label, self.size)
                    self.runtime.log(f"{backend.name}: out of memory; retrying with {backend.unit_label} {self.size}")
                    return None
            if backend.name == MUSETALK:
                raise
            return self._musetalk_instead(ks, srcs, src_u8, faces, f"out of memory at {backend.unit_label} 1" if oom
                                          else short_error(exc))

    def _musetalk_instead(self, ks, srcs, src_u8, faces, why: str):
        """Redo a failed unit with MuseTalk; after MAX_FAILURES failures MuseTalk takes over the rest."""
        failed = self.backend.name
        self.failures += 1
        if self._musetalk is None:
            self._musetalk = (self.factory(MUSETALK), self.open_features(layout_of(MUSETALK)))
        mt, feats = self._musetalk
        self.report.fallbacks.append(f"frames {ks[0]}-{ks[-1]}: {failed} failed ({why}) -> {MUSETALK}")
        self.runtime.log(f"{failed} failed on frames {ks[0]}-{ks[-1]} ({why}); using {MUSETALK} for them")
        if self.failures >= MAX_FAILURES:
            self.report.fallbacks.append(f"{failed} failed {self.failures} times: {MUSETALK} for the rest")
            self._use(mt, feats)
        return mt.name, mt.patches(ks, srcs, src_u8, faces, feats.windows(ks))

    def forget(self, sources) -> None:
        for backend in (self.backend, self._musetalk[0] if self._musetalk else None):
            if backend is not None:
                backend.forget(sources)
