#!/usr/bin/env python
"""Write random full-size "test weights" in the released file layouts, for every model the pack knows.

    python tests/make_test_weights.py --out DIR [--only musetalk,whisper] [--seed 0] [--force] [--list]

Every ``tests/test_weights/<name>.py`` (named like the ``models/<name>.py`` it writes for) that defines
``write_test_weights(models_root, seed=0) -> list[str]`` is called (found by scanning the folder, so new models need
no change here). ``--only`` keeps the modules whose name contains one of the given words. The files carry random
values (the MuseTalk UNet, VAE, BiSeNet and LatentSync folders get a ``RANDOM_TEST_WEIGHTS.txt`` marker): they let the
whole pipeline run end to end without downloads, and produce noise.

Idempotent: a module whose files all exist already (those its ``test_weight_files`` names) is skipped; otherwise it
writes into a scratch folder next to ``--out`` and only the files not yet present are moved into place (all of them
with ``--force``). One model is written at a time, with fp16 values, to keep memory low. Point
``MUSETALK_MODELS_DIR`` at ``DIR`` to use them.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import os
import shutil
import sys
import tempfile
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))  # on sys.path: the script's folder, or put there by the caller
WRITERS = "test_weights"  # the package tests/test_weights (importing it imports the pack as musetalk_enhanced)


def discover(only=None):
    """``[(module name, write_test_weights)]`` for every tests/test_weights/*.py defining it, sorted by name."""
    importlib.import_module(WRITERS)
    found = []
    for fn in sorted(os.listdir(os.path.join(TOOLS, WRITERS))):
        if not fn.endswith(".py") or fn.startswith("_"):
            continue
        name = fn[:-3]
        if only and not any(w in name for w in only):
            continue
        try:
            mod = importlib.import_module(f"{WRITERS}.{name}")
        except Exception as exc:  # a broken optional module must not stop the others
            print(f"  ! cannot import {WRITERS}/{fn}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        fn_ = getattr(mod, "write_test_weights", None)
        if callable(fn_) and getattr(fn_, "__module__", "") == mod.__name__:
            found.append((name, fn_))
    return found


def _relfiles(folder):
    out = []
    for d, _, files in os.walk(folder):
        for f in files:
            out.append(os.path.relpath(os.path.join(d, f), folder))
    return sorted(out)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_one(name, writer, out_dir, seed=0, force=False):
    """Run ``writer`` into a scratch folder and move its files under ``out_dir``. Returns (written, skipped)."""
    expected = getattr(sys.modules[writer.__module__], "test_weight_files", None)
    if not force and callable(expected):
        paths = expected(out_dir)
        if paths and all(os.path.exists(p) for p in paths):
            return [], list(paths)
    scratch = tempfile.mkdtemp(prefix=f".tmp_{name}_", dir=out_dir)
    try:
        kwargs = {"seed": seed} if "seed" in inspect.signature(writer).parameters else {}
        writer(scratch, **kwargs)
        written, skipped = [], []
        for rel in _relfiles(scratch):
            dst = os.path.join(out_dir, rel)
            if os.path.exists(dst) and not force:
                skipped.append(dst)
                continue
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(os.path.join(scratch, rel), dst)
            os.chmod(dst, 0o666 & ~_umask())  # some writers create 0600 files
            written.append(dst)
        return written, skipped
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        gc.collect()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=False, help="models root to write into (becomes <out>/<folder>/<relpath>)")
    ap.add_argument("--only", default="", help="comma-separated words; keep the models whose name contains one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="overwrite files that already exist")
    ap.add_argument("--list", action="store_true", help="only list the modules that can write test weights")
    args = ap.parse_args(argv)
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    writers = discover(only)
    if args.list or not args.out:
        for name, _ in writers:
            print(f"tests/{WRITERS}/{name}.py")
        if not args.out and not args.list:
            ap.error("--out is required")
        return 0
    if not writers:
        print(f"no {WRITERS}/*.py with write_test_weights matched", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    for name, writer in writers:
        t0 = time.time()
        print(f"tests/{WRITERS}/{name}.py ...", flush=True)
        written, skipped = write_one(name, writer, args.out, args.seed, args.force)
        for p in written:
            print(f"  wrote {p} ({os.path.getsize(p) / 1e6:.1f} MB)")
        for p in skipped:
            print(f"  kept  {p} (exists; --force to overwrite)")
        print(f"  {time.time() - t0:.1f} s", flush=True)
    print(f"done. Use them with: export MUSETALK_MODELS_DIR={os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
