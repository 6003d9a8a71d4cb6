"""A long video lip-synced in shards: split at its shot cuts, each shard made on its own (in a worker process), the
shards joined without a lossy step and encoded once with the voice.

Shots are independent for MuseTalk, and a LatentSync chunk never spans a cut (pipeline/backends/latentsync.py), so a
video cut at its shots can be lip-synced in parallel without changing a frame. Whatever a frame depends on beyond
its shard is computed once, for the whole video, exactly as in the unsharded run, and handed to every shard: the
voice's whisper features (their normalisation spans the file), the face analysis (shots, tracks, boxes, reset at
cuts), the plan (which source frame each output frame shows) and the silence weights. A shard's frames keep their
absolute numbers (audio windows, LatentSync's per-frame noise). Each shard decodes its frames from its own start:
no frame goes from one process to another. A shard of cutaways only never loads a model.

At batch size 1 every frame before the final encode is bit-identical to the unsharded run's (tested). At larger
batch sizes an unsharded run's MuseTalk batch may span a cut, and a batch of another composition can move float
rounding in the networks.

**Resuming**: a shard's patches are kept in the scratch folder under the shard's range, with the run's identity
(the inputs, options and weights: pipeline/jobs/identity.py ``job_key``) and its report; a run that was interrupted,
started again with the same identity, makes only the shards that have not finished. The caller removes the
folder once the video is encoded.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import runpy
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ..runtime import COMPILE_CHOICES, FRAME_OPS_CHOICES

SHARD_CHOICES = ("off", "shots")
DEFAULT_MIN_SECONDS = 10.0       # shots shorter than this are merged with the next


def shard_ranges(source: np.ndarray, faces, fps: float, min_seconds: float = DEFAULT_MIN_SECONDS
                 ) -> List[Tuple[int, int]]:
    """Half-open ``[start, stop)`` ranges of output frames, cut where the shown frame's shot changes; a range
    shorter than ``min_seconds`` is merged with the next (the last one with the one before)."""
    shots = [faces.frames[int(s)].shot for s in source]
    cuts = [0] + [k for k in range(1, len(shots)) if shots[k] != shots[k - 1]] + [len(shots)]
    shortest = max(1, int(round(min_seconds * fps)))
    ranges: List[Tuple[int, int]] = []
    for a, b in zip(cuts, cuts[1:]):
        if ranges and ranges[-1][1] - ranges[-1][0] < shortest:
            ranges[-1] = (ranges[-1][0], b)
        else:
            ranges.append((a, b))
    if len(ranges) > 1 and ranges[-1][1] - ranges[-1][0] < shortest:
        last = ranges.pop()
        ranges[-1] = (ranges[-1][0], last[1])
    return ranges


@dataclass
class Shard:
    """What one shard needs, sent to its worker (everything computed once for the whole video)."""

    video: str
    force_rate: float
    faces: Any                     # FaceSequence
    features: Any                  # AudioFeatures of the whole voice
    spec: Any                      # BackendSpec
    length_policy: str
    batch_size: int
    blend: Any                     # BlendOptions
    silence: Any                   # SilenceOptions
    start: int
    stop: int
    folder: str                    # where its patches are written
    device: str
    dtype: str
    identity: str = ""             # the run's identity: a finished shard of the same identity is reused
    frame_ops: str = FRAME_OPS_CHOICES[0]   # the runtime's frame_ops and compile (pipeline/runtime.py)
    compile: str = COMPILE_CHOICES[0]

    @property
    def name(self) -> str:
        return f"shard_{self.start:08d}_{self.stop:08d}.patches"

    def finished(self):
        """``(path, report)`` of this shard made earlier by a run of the same identity, or None."""
        from ..lipsync.patched_frames import PatchStore
        from ..lipsync.report import LipSyncReport

        path = os.path.join(self.folder, self.name)
        meta = PatchStore.meta(path)
        if not meta or not self.identity or meta.get("identity") != self.identity or not os.path.isfile(path):
            return None
        return path, LipSyncReport(**meta["report"])


def make_shard(shard: Shard):
    """Lip-sync the output frames ``[start, stop)`` of the video into a patch store another process can open;
    returns ``(its path, the shard's report)``."""
    from ..lipsync import LipSyncRun
    from ..lipsync.patched_frames import PatchSink
    from ..media.video import VideoFileFrames
    from ..runtime import Runtime, pick_device, pick_dtype

    frames = VideoFileFrames(shard.video, force_rate=shard.force_rate, name="video")
    run = LipSyncRun(frames, shard.faces, shard.features, shard.spec, shard.length_policy, shard.batch_size,
                     shard.blend, shard.silence)
    device = pick_device(shard.device)
    runtime = Runtime(device=device, dtype=pick_dtype(device, shard.dtype), show_progress=False,
                      frame_ops=shard.frame_ops, compile=shard.compile)
    sink = PatchSink(frames, run.plan.source, shard.folder, start=shard.start, name=shard.name)
    report = run.into(sink, runtime, output_range=(shard.start, shard.stop))
    path = sink.store.persist({"identity": shard.identity, "report": dataclasses.asdict(report)})
    sink.store.close()
    return path, report


class LocalWorkers:
    """Makes shards here (``workers`` 1) or in ``workers`` spawned worker processes, each loading its models once
    and taking its share of the cores. On a machine with several GPUs and the device ``auto`` or ``cuda``, each
    worker sees one GPU of its own (``CUDA_VISIBLE_DEVICES``, round robin over the visible ones)."""

    def __init__(self, workers: int = 1, device: str = "auto"):
        self.workers, self.device = max(1, int(workers)), device

    def describe(self) -> str:
        return f"{self.workers} worker{'s' if self.workers != 1 else ''}"

    def make(self, shards: Sequence[Shard], made) -> None:
        """``made(index, (path, report))`` for each shard as it finishes."""
        if self.workers <= 1 or len(shards) <= 1:
            for i, shard in enumerate(shards):
                made(i, make_shard(shard))
            return
        context = multiprocessing.get_context("spawn")
        gpus = worker_gpus(self.device, self.workers)
        gpu_queue = None
        if gpus:
            gpu_queue = context.Queue()
            for gpu in gpus:
                gpu_queue.put(gpu)
        pack = __name__.rsplit(".pipeline.", 1)[0]
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        boot = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot.py")
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=runpy.run_path,
                                 initargs=(boot, {"PACK_NAME": pack, "PACK_DIR": root, "THREADS": threads,
                                                  "GPU_QUEUE": gpu_queue})) as pool:
            futures = {pool.submit(make_shard, shard): i for i, shard in enumerate(shards)}
            for future in as_completed(futures):
                made(futures[future], future.result())


def worker_gpus(device: str, workers: int, visible: Optional[Sequence[str]] = None) -> List[str]:
    """The GPU each local worker sees (one ``CUDA_VISIBLE_DEVICES`` value per worker), or ``[]`` when the workers
    share the device: a CPU, a device named by number (``cuda:1``), or one GPU. ``visible``: the GPUs this process
    sees (default: its ``CUDA_VISIBLE_DEVICES``, else every GPU torch counts)."""
    if device not in ("auto", "cuda"):
        return []
    if visible is None:
        import torch

        if not torch.cuda.is_available():
            return []
        listed = os.environ.get("CUDA_VISIBLE_DEVICES")
        visible = ([g.strip() for g in listed.split(",") if g.strip()] if listed
                   else [str(i) for i in range(torch.cuda.device_count())])
    if len(visible) < 2:
        return []
    return [visible[i % len(visible)] for i in range(workers)]


def run_shards(shards: Sequence[Shard], maker=None, progress=None, finished=None) -> List[Tuple[str, Any]]:
    """Every shard not finished before (``finished``: each shard's :meth:`Shard.finished`, when the caller has
    looked already) made by ``maker`` (:class:`LocalWorkers`, default one here, or
    pipeline/jobs/ray_actors.py :class:`RayShards`); ``(path, report)`` per shard in the shards' order."""
    maker = maker or LocalWorkers(1)
    results = list(finished if finished is not None else [shard.finished() for shard in shards])
    todo = [i for i, r in enumerate(results) if r is None]
    count = {"done": len(shards) - len(todo)}

    def made(j: int, result) -> None:
        results[todo[j]] = result
        count["done"] += 1
        if progress:
            progress("shards", count["done"], len(shards))

    maker.make([shards[i] for i in todo], made)
    return results


def joined_frames(source_frames, plan_source: np.ndarray, shards: Sequence[Shard], made):
    """The whole output: the source frames plus every shard's patches (:class:`~..lipsync.patched_frames
    .PatchedFrames`, composed when read)."""
    from ..lipsync.patched_frames import JoinedPatches, PatchedFrames, PatchStore

    parts = JoinedPatches([(s.start, s.stop, PatchStore.open(path)) for s, (path, _) in zip(shards, made)])
    return PatchedFrames(source_frames, plan_source, parts, source_frames.fps)


def sharded_lipsync(run, video: str, force_rate: float, runtime_device: str, runtime_dtype: str, min_seconds: float,
                    maker=None, scratch: Optional[str] = None, identity: str = "", progress=None,
                    frame_ops: str = FRAME_OPS_CHOICES[0], compile: str = COMPILE_CHOICES[0]):
    """``run`` (a :class:`~..lipsync.LipSyncRun` of the whole video) made in shards in the folder ``scratch``
    (default: a new temporary one; with ``identity``, shards a previous run of the same identity finished there
    are reused): returns ``(joined frames, joined report, the scratch folder)``; the caller encodes the frames and
    then removes the folder. A failure leaves the finished shards for the next run. ``frame_ops`` and ``compile``:
    the workers' runtime settings (pipeline/runtime.py)."""
    from ..lipsync.report import LipSyncReport

    scratch = scratch or tempfile.mkdtemp(prefix="musetalk_shards_")
    os.makedirs(scratch, exist_ok=True)
    shards = [Shard(video, force_rate, run.faces, run.features, run.spec, run.plan.policy, run.batch_size,
                    run.blend, run.silence, a, b, scratch, runtime_device, runtime_dtype, identity, frame_ops,
                    compile)
              for a, b in shard_ranges(run.plan.source, run.faces, run.fps, min_seconds)]
    finished = [s.finished() for s in shards]
    reused = sum(1 for f in finished if f is not None)
    maker = maker or LocalWorkers(1)
    made = run_shards(shards, maker, progress, finished)
    report = LipSyncReport.joined([r for _, r in made])
    report.notes.append(f"made in {len(shards)} shards at shot cuts ({maker.describe()})"
                        + (f"; {reused} finished by an earlier run, reused" if reused else ""))
    return joined_frames(run.frames, run.plan.source, shards, made), report, scratch
