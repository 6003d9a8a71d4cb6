"""Import the pack from its folder as the package ``musetalk_enhanced`` (relative imports inside), the way ComfyUI
loads a custom node folder. Tests, benchmarks and tools share this one helper (each puts ``tools/`` on sys.path)."""
from __future__ import annotations

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK = "musetalk_enhanced"


def import_pack():
    """The pack's package module (imported once)."""
    if PACK in sys.modules:
        return sys.modules[PACK]
    spec = importlib.util.spec_from_file_location(PACK, os.path.join(ROOT, "__init__.py"),
                                                  submodule_search_locations=[ROOT])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = mod
    spec.loader.exec_module(mod)
    return mod
