"""Import the pack's folder as a package, the way ComfyUI loads a custom node folder (relative imports inside).

The one import helper: ``python <pack folder>`` (__main__.py), install.py, a shard's worker process and a Ray actor
(pipeline/jobs/boot.py), the tests, the benchmarks and the scripts all load this file by its path
(``runpy.run_path``) and call :func:`register` or :func:`import_pack`. Standard library only: nothing of the pack can
be imported before it has run.
"""
from __future__ import annotations

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
PACK = "musetalk_enhanced"


def register(name: str = PACK, root: str = ROOT):
    """Import the folder ``root`` as the package ``name`` (once) and return it."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "__init__.py"),
                                                  submodule_search_locations=[root])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_pack():
    """This folder as the package ``musetalk_enhanced`` (imported once)."""
    return register(PACK, ROOT)
