"""What a job's output depends on, as one digest (:func:`job_key`): a batch skips a job whose identity and output are
unchanged (pipeline/jobs/batch.py), and a sharded run reuses the shards an earlier run of the same identity
finished (pipeline/jobs/shards.py)."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict

from .requests import Request, SpeakRequest


def job_key(request: Request) -> str:
    """A digest of what the output depends on: the inputs (size and modification time), the options that differ
    from their defaults (an option added later does not make finished jobs run again), the mask asked for and the
    weights."""
    from .fields import specs
    from ..backends.selection import BackendSpec, MUSETALK, weights_in_use

    inputs: Dict[str, Any] = {}
    for key in ("video", "audio"):
        path = getattr(request, key, None)
        if path:
            st = os.stat(path)
            inputs[key] = {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
    if isinstance(request, SpeakRequest):
        from ..avatars import read_manifest
        from ..avatars.store import prepare_id

        inputs["avatar"] = prepare_id(read_manifest(request.avatar))
        weights = weights_in_use(BackendSpec(choice=MUSETALK))
    else:
        weights = weights_in_use(request.backend_spec(), request.detector, request.blend_mode)
    defaults = {f.name: f.default for f in specs(request)}
    options = {k: v for k, v in request.options().items() if v != defaults[k]}
    identity = {"kind": request.KIND, "inputs": inputs, "options": options, "weights": weights}
    if getattr(request, "mask_out", None):
        identity["mask"] = os.path.basename(request.mask_out)
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
