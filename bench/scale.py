"""Past one machine: the same batch on 1 and 2 local Ray actors, and one long clip lip-synced in shards at its shot
cuts against the same run unsharded (issue "Past one machine").

    python bench/scale.py                  # 6 jobs of 256x256 clips (8 face + 17 cutaway frames), a 60 s clip with
                                           # one face scene (2 shots of 4 frames) among cutaways; on a CPU the small
                                           # networks, plus the batch-8 difference with the full-size ones (~5 min
                                           # on 2 cores)
    python bench/scale.py --quick          # smoke run (~1 min): 4 jobs, a 10 s clip, the small networks
    python bench/scale.py --networks full  # every run with the full-size networks (the default on a GPU; on a
                                           # 2-core CPU ~10 s per synced frame, so about half an hour)
    python bench/scale.py --json out.json --jobs 8 --long-seconds 120 --scenes 2 --no-shards

Weights and inputs are those of bench/batch.py (its helpers are imported): random values in the released layouts in
a models folder read through ``MUSETALK_MODELS_DIR``. ``--networks``: ``small`` = the small UNet / VAE configs of
the tests (with a full-size whisper-tiny) written to a temporary folder, ``full`` = the full-size MuseTalk v1.5 UNet,
sd-vae-ft-mse and whisper-tiny in ``--weights-dir`` (default ``$MUSETALK_MODELS_DIR`` or ``<pack>/test_weights``,
written there once when missing, ~1.7 GB), ``auto`` (default) = full on a GPU, small on a CPU: on a 2-core CPU a
full-size synced frame costs ~10 s, so the full-size runs of both parts would take half an hour, while what this
script measures (Ray's and the actors' start-up, model loading per actor, how a batch shares the cores, what
sharding adds around the networks) is there with small networks too. MTCNN has its real weights; nothing downloads.
Every file of the models folder is read once first, so no run below reads weights cold. Jobs and runs use
``blend_mode feather`` (no face parser), ``min_face_size 30`` and the pack's dtype rule (``--dtype auto``: bf16 on a
CPU with native bf16).

**1. A batch on Ray** (pipeline/jobs/cluster.py ``RayBatchRun``, each actor a ``JobActor`` that loads its models
once). A folder of ``--jobs`` clips, each with its own espeak-ng voice (bench/batch.py ``make_clips``: the
astronaut photo for ``--face-frames`` frames, then the rocket for ``--cutaway-frames``). Ray is started on this
machine only, once: ``ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)``, after
``MUSETALK_MODELS_DIR`` is set (workers inherit the environment at init), and shut down at the end. The same jobs
then run twice, each run into its own out folder with fresh actors: **1 actor x 2 CPUs** (``actors=1,
cpus_per_actor=2``: torch on 2 threads) and **2 actors x 1 CPU** (1 thread each). On a GPU run an actor takes a
whole GPU (cluster.py): 1 actor and 2 actors of 1 GPU each with 2 GPUs or more; with one GPU only the 1-actor run,
whose steady s/job and model load are what the formula below needs.

* ``ray.init``: the wall time of that call (GCS, raylet, the object store; the first workers start later).
* ``seconds``: wall time of ``RayBatchRun.run()`` for all jobs, from the first actor's creation to the last job's
  results line, so actor start-up and model loading are inside; ``s/job`` = seconds / jobs; ``jobs/hour`` =
  3600 x jobs / seconds; ``speed-up`` = the 1-actor run's seconds / this run's (the ratio of the jobs/hour).
* ``steady s/job``: the mean time of an actor's jobs after its first (dispatch to results line, from the runner's
  ``dispatched`` / ``finish`` hooks): a job's work with the models loaded; ``steady jobs/hour`` = actors x 3600 /
  steady s/job, what a long batch approaches.
* ``actor start`` (derived): for an actor's first job, the time from the job's ``start`` to ``dispatched`` (the
  runner creates the actor and waits for its pid: a Ray worker process, pipeline/jobs/boot.py importing the pack and
  torch) minus the same interval of its later jobs (job checks, milliseconds). ``model load`` (derived): the first
  job's dispatch-to-finish time minus the actor's steady s/job: building the models it needs (MuseTalk UNet + VAE,
  whisper-tiny, MTCNN, the landmark model) plus first-call warm-ups, paid once per actor. Both are per actor (the
  mean over the run's actors; with 2 actors they start and load at the same time on the same cores).
* ``cores busy``: the machine's busy CPU time (all processes: psutil's system-wide counters) over the run / its wall
  time, out of 2: how much of the 2 cores the run kept busy.

On this 2-core machine the two runs share the same 2 cores: 2 actors of 1 thread can only win the time one actor
leaves a core idle (decoding, MTCNN, encoding, Python between the networks), so the speed-up here is bounded by the
cores, not by the number of actors. With one actor per GPU the jobs do not share a device, and a batch of J jobs
takes about ``T_ray + T_actor + T_load + ceil(J / N) x t_job`` on N GPUs (t_job: s/job of one actor on one GPU with
its models loaded, T_load: the model load above, paid once per actor in parallel, T_ray: ray.init), i.e.
``jobs/hour ~ N x 3600 / t_job`` minus the one-time ``T_ray + T_actor + T_load`` spread over the batch (as long as
the shared file system keeps up with N readers and writers).

**2. One long clip, sharded vs unsharded** (pipeline/jobs/shards.py ``sharded_lipsync``). A ``--long-seconds`` clip
(``--resolution``, 25 fps, espeak-ng speech looped on the audio track) of cutaway shots (rocket / coffee / chelsea
photos panning, a new shot every ``--shot-seconds``) with ``--scenes`` face scenes: the astronaut in two shots of
``--shot-frames`` frames back to back (the second mirrored: a hard cut between two faces, as in a dialogue). Each
scene sits on a shard boundary (shards are cut at shots and hold at least ``--shard-seconds``): its first shot ends
one shard, its second begins the next, so the unsharded run's batch of ``--batch-size`` spans the cut and the sharded
runs make the same frames in two smaller batches: the case the module's docstring warns about. Face analysis (MTCNN,
shots, tracks) and the whisper features are computed once, untimed, and shared by every run below.

* ``unsharded``: ``LipSyncRun(...).into(sink)`` in this process (torch on all threads) at ``--batch-size``; the sink
  counts the frames, keeps a CRC-32 of each and a copy of the synced ones (no encode: the encode is the same for
  both and is not what sharding changes). The model cache is emptied before each timed run, so every run loads
  its models once (per process that has a face shard; a shard of cutaways loads none).
* ``sharded, 1 worker``: ``sharded_lipsync(..., LocalWorkers(1))``: the shards one after another in this process, then
  the joined frames read into the same kind of sink (their reading is the join: source frames decoded again with the
  shards' patches pasted). ``sharded, 2 workers``: the same in 2 spawned worker processes (1 torch thread each,
  each loading the models once). ``seconds`` covers making the shards and the join (``shards_s`` / ``join_s``
  split it); ``speed-up`` = the unsharded run's seconds / this run's.
* ``max abs diff``: the largest absolute difference of a pixel (0-255) between the run's frames and the unsharded
  run's at the same batch size, over the synced frames; ``frames_differing`` counts frames whose CRC differs
  (cutaway frames must all be equal). Measured at ``--batch-size`` (the timed runs) and at batch size 1 (two more
  runs, untimed: unsharded, and sharded with 1 worker in this process, which the pack's tests hold bit-identical).
  The 2-worker run also runs torch on 1 thread where the unsharded one uses 2, which alone can move float rounding.
* ``full-size networks: sharded vs unsharded at batch 8`` (full mode with small networks; ``--no-full-check``
  skips it): the same comparison at ``--batch-size`` with the full-size networks on a 4 s excerpt (one scene, 2 s
  shards: the 8 synced frames are one batch unsharded and 4 + 4 sharded), unsharded and sharded with 1 worker in
  this process, each loading the models; their seconds are in the row (a run whose time is the networks').

On a CPU with small networks the sharded runs are slower than the unsharded one: what sharding adds around the
networks (each shard decodes its own frames and reads its source frames again to keep only the changed pixels, the
join decodes the clip once more; 2 workers add two process starts, imports and model loads) is not hidden by network
time. The excerpt with the full-size networks shows the other end: there the networks' time dominates and the
sharded run took about as long as the unsharded one. On N GPUs (a worker each), sharding pays when the clip's synced
frames take much longer than a worker's start and model load: time ~ T_start + T_load + (synced frames / N) x t_frame
+ the decoding above (when the face shots spread over the shards evenly).

Prints one JSON line per measurement and a markdown table; ``--json PATH`` writes everything with the machine
description. ``--no-ray`` / ``--no-shards`` skip a part.
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

COLUMNS = [("stage", "stage"), ("jobs", "jobs"), ("frames", "frames"), ("seconds", "seconds"),
           ("s_per_job", "s/job"), ("jobs_per_hour", "jobs/hour"), ("speedup", "speed-up"),
           ("max_abs_diff", "max abs diff"), ("note", "note")]
FPS = 25.0
CUTAWAYS = ("rocket", "coffee", "chelsea")
JOB_OPTIONS = {"backend": "musetalk-v1.5", "blend_mode": "feather", "min_face_size": 30}
MIN_FACE = 30
CONFIGS = ((1, 2), (2, 1))          # (actors, cpus_per_actor)


# ---- helpers -------------------------------------------------------------------------------------------------------
def warm_page_cache(folder: str) -> float:
    """Read every file under ``folder`` once (the weights), so no timed run reads them cold; returns MiB read."""
    total = 0
    for base, _dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(base, name), "rb") as f:
                while True:
                    block = f.read(1 << 24)
                    if not block:
                        break
                    total += len(block)
    return total / common.MB


def busy_cpu_seconds() -> float:
    """The machine's busy CPU seconds so far, all processes and cores (psutil's system-wide counters)."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def clear_models() -> None:
    """Empty the pack's model cache in this process (every loaded network), so the next run loads its own."""
    from musetalk_enhanced.pipeline import model_cache

    model_cache.clear()
    gc.collect()


# ---- 1. a batch on Ray ---------------------------------------------------------------------------------------------
class JobClock:
    """The runner's hooks: per job the times of ``start`` / ``dispatched`` / ``finish`` and the actor's pid."""

    def __init__(self):
        self.jobs = {}

    def __call__(self, event, i, job, detail):
        rec = self.jobs.setdefault(i, {"label": job.label})
        rec[event] = time.perf_counter()
        if event == "dispatched":
            rec["pid"] = detail.get("pid")
        elif event == "finish":
            rec["state"] = detail.get("state")

    def per_actor(self):
        """``{pid: [job records in start order]}``."""
        out = {}
        for rec in sorted(self.jobs.values(), key=lambda r: r["start"]):
            out.setdefault(rec.get("pid"), []).append(rec)
        return out


def num(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def mean(values):
    values = list(values)
    return sum(values) / len(values) if values else None


def run_on_ray(folder: str, out_dir: str, actors: int, cpus: int, machine_opts: dict, n_jobs: int, ray) -> dict:
    from musetalk_enhanced.models import registry
    from musetalk_enhanced.pipeline.jobs.cluster import RayBatchRun
    from musetalk_enhanced.pipeline.jobs.joblist import read_jobs

    registry.set_folder_resolver(None)
    jobs = read_jobs(folder, out_dir, dict(JOB_OPTIONS), machine_opts)
    clock, lines = JobClock(), []
    runner = RayBatchRun(jobs, os.path.join(out_dir, "batch_results.jsonl"), show_progress=False, log=lines.append,
                         hooks=[clock], address="local", actors=actors, cpus_per_actor=cpus)
    busy0, t0 = busy_cpu_seconds(), time.perf_counter()
    summary = runner.run()
    wall = time.perf_counter() - t0
    busy = busy_cpu_seconds() - busy0
    del runner
    gc.collect()
    with open(os.path.join(out_dir, "batch_results.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    done = [r for r in records if r.get("state") == "done"]
    if summary.counts["done"] != n_jobs or len(done) != n_jobs or not all(os.path.isfile(r["output"]) for r in done):
        raise SystemExit(f"the Ray batch ({actors} actor(s)) did not finish every job: {summary.text()}\n"
                         + "\n".join(lines[-10:]))
    synced = [sum(r["report"]["synced"].values()) for r in done]
    if not all(synced):
        raise SystemExit(f"a Ray job synced no frame (no face found?): {synced}")
    per_actor = clock.per_actor()
    steady_all = [r["finish"] - r["dispatched"] for recs in per_actor.values() for r in recs[1:]]
    steady_mean = mean(steady_all)
    starts, loads, firsts, steadies = [], [], [], []
    for recs in per_actor.values():
        first = recs[0]
        later_pre = [r["dispatched"] - r["start"] for r in recs[1:]]
        starts.append(first["dispatched"] - first["start"] - (mean(later_pre) or 0.0))
        own = mean(r["finish"] - r["dispatched"] for r in recs[1:])
        steady = own if own is not None else steady_mean
        first_run = first["finish"] - first["dispatched"]
        firsts.append(first_run)
        if steady is not None:
            steadies.append(steady)
            loads.append(first_run - steady)
    steady = mean(steadies)
    # let Ray take the actors down (their handles died with the runner's threads) before the next run starts
    deadline = time.time() + 60
    while time.time() < deadline and ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0):
        time.sleep(0.2)
    return {"actors": len(per_actor), "cpus_per_actor": cpus, "seconds": wall, "busy_cpu_s": busy,
            "jobs_per_actor": [len(v) for v in per_actor.values()], "job_seconds": [r["seconds"] for r in done],
            "first_job_run_s": firsts, "actor_start_s": mean(starts), "model_load_s": mean(loads),
            "steady_s_per_job": steady, "synced": synced, "frames": [r["report"]["frames"] for r in done],
            "log": lines[0] if lines else ""}


def measure_ray(args, workdir: str, models: str, emit) -> dict:
    import batch as BB

    size = BB.parse_size(args.resolution)
    folder = os.path.join(workdir, "clips")
    stems = BB.make_clips(folder, args.jobs, size, args.face_frames, args.cutaway_frames, workdir)
    n_frames = args.face_frames + args.cutaway_frames
    machine_opts = {"auto_download": False, "device": args.device, "dtype": args.dtype}
    os.environ["MUSETALK_MODELS_DIR"] = models          # before ray.init: its workers inherit the environment
    os.environ["HF_HUB_OFFLINE"] = "1"
    import ray
    import torch

    device = common.pick_device_dtype(args.device, args.dtype)[0]
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    # an actor takes a whole GPU (cluster.py): on a CPU run Ray gets none; with one GPU only the 1-actor run is made
    configs = CONFIGS if not gpus else ((1, 1), (2, 1))[:2 if gpus >= 2 else 1]
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             **({} if gpus else {"num_gpus": 0}))
    init_s = time.perf_counter() - t0
    runs = {}
    try:
        for actors, cpus in configs:
            out_dir = os.path.join(workdir, f"out_{actors}x{cpus}")
            os.makedirs(out_dir)
            print(f"# ray: {len(stems)} jobs on {actors} actor(s) x {cpus} CPU", flush=True)
            runs[(actors, cpus)] = run_on_ray(folder, out_dir, actors, cpus, machine_opts, len(stems), ray)
    finally:
        t1 = time.perf_counter()
        ray.shutdown()
        shutdown_s = time.perf_counter() - t1
    n = len(stems)
    clips = (f"{n} clips of {size[0]}x{size[1]}, {n_frames} frames ({args.face_frames} face + "
             f"{args.cutaway_frames} cutaway) each")
    emit(dict(stage="ray.init (local, 2 CPUs" + (f", {gpus} GPU" if gpus else "") + ")", seconds=round(init_s, 2),
              shutdown_s=round(shutdown_s, 2), note=f"ray {ray.__version__}; ray.shutdown {shutdown_s:.1f} s"))
    base = runs[configs[0]]["seconds"]
    rows = {}
    for (actors, cpus), r in runs.items():
        per = r["seconds"] / n
        steady = r["steady_s_per_job"]
        unit = f"{cpus} CPU" if not gpus else "1 GPU"
        row = dict(stage=f"Ray batch, {actors} actor{'s' if actors > 1 else ''} x {unit}", actors=actors,
                   cpus_per_actor=cpus, jobs=n, seconds=round(r["seconds"], 2), s_per_job=round(per, 2),
                   jobs_per_hour=round(3600 / per, 1), speedup=round(base / r["seconds"], 2),
                   steady_s_per_job=round(steady, 2) if steady else None,
                   steady_jobs_per_hour=round(actors * 3600 / steady, 1) if steady else None,
                   actor_start_s=round(r["actor_start_s"], 2),
                   model_load_s=round(r["model_load_s"], 2) if r["model_load_s"] is not None else None,
                   first_job_run_s=[round(s, 2) for s in r["first_job_run_s"]],
                   jobs_per_actor=r["jobs_per_actor"], job_seconds=r["job_seconds"],
                   cores_busy=round(r["busy_cpu_s"] / r["seconds"], 2), output_frames=r["frames"],
                   synced_frames=r["synced"],
                   note=f"{clips}; steady {num(steady)} s/job per actor; cores busy "
                        f"{r['busy_cpu_s'] / r['seconds']:.2f} of 2")
        rows[(actors, cpus)] = row
        emit(row)
    for (actors, cpus), r in runs.items():
        unit = f"{cpus} CPU" if not gpus else "1 GPU"
        emit(dict(stage=f"actor start + model load, {actors} actor{'s' if actors > 1 else ''} x {unit} "
                        "(derived, per actor)",
                  seconds=round(r["actor_start_s"] + r["model_load_s"], 2) if r["model_load_s"] is not None else None,
                  actor_start_s=round(r["actor_start_s"], 2),
                  model_load_s=round(r["model_load_s"], 2) if r["model_load_s"] is not None else None,
                  note=f"actor start {num(r['actor_start_s'])} s + model load {num(r['model_load_s'])} s "
                       "(first job minus steady)"))
    if len(rows) < 2:
        print("# one GPU: the 2-actor run needs 2 GPUs (an actor takes a whole one); jobs/hour on N GPUs ~ N x 3600 / "
              "steady s/job above, less ray.init and one actor start + model load", flush=True)
    elif gpus:
        print(f"# 2 actors on 2 GPUs vs 1: x{rows[configs[1]]['speedup']}", flush=True)
    else:
        one, two = rows[configs[0]], rows[configs[1]]
        print(f"# 2 actors x 1 CPU vs 1 actor x 2 CPUs: x{two['speedup']} ({two['jobs_per_hour']} vs "
              f"{one['jobs_per_hour']} jobs/hour). Both share this machine's {os.cpu_count()} cores, so the speed-up "
              f"is bounded by the cores (cores busy {one['cores_busy']} vs {two['cores_busy']} of 2), not by the "
              f"actors; with one actor per GPU, jobs/hour ~ N x 3600 / t_job (t_job = s/job on one GPU, models "
              f"loaded) less the one-time ray.init ({init_s:.1f} s here) and actor start + model load (per actor, in "
              "parallel).", flush=True)
    return {"ray_init_s": init_s}


# ---- 2. one long clip in shards ------------------------------------------------------------------------------------
def long_schedule(total: int, shard_len: int, shot_len: int, scenes: int, shot_frames: int):
    """``[(start, length, kind)]`` covering ``total`` frames: cutaway shots cut every ``shot_len`` frames (kinds
    cycling :data:`CUTAWAYS`), and ``scenes`` face scenes, each two face shots of ``shot_frames`` (``astronaut``
    then ``astronaut-mirror``) whose cut sits on a multiple of ``shard_len``, so it is a shard boundary."""
    boundaries = max(1, total // shard_len - 1)          # multiples of shard_len strictly inside the clip
    step = max(1, boundaries // max(1, scenes))
    scene_at = [shard_len * (1 + j * step) for j in range(scenes) if 1 + j * step <= boundaries]
    cuts = {0, total}
    cuts.update(range(shot_len, total, shot_len))
    faces = {}
    for b in scene_at:
        a, c = b - shot_frames, b + shot_frames
        cuts = {x for x in cuts if not a < x < c}
        cuts.update((a, b, c))
        faces[a], faces[b] = "astronaut", "astronaut-mirror"
    points = sorted(x for x in cuts if 0 <= x <= total)
    shots, k = [], 0
    for p, q in zip(points, points[1:]):
        if p in faces:
            shots.append((p, q - p, faces[p]))
        else:
            shots.append((p, q - p, CUTAWAYS[k % len(CUTAWAYS)]))
            k += 1
    return shots, scene_at


def write_long_clip(path: str, width: int, height: int, shots, audio) -> None:
    import numpy as np

    import lipsync as LB
    from musetalk_enhanced.pipeline.media.writer import VideoWriter

    with VideoWriter(path, FPS, width, height, audio, crf=18, preset="ultrafast") as w:
        for start, n, kind in shots:
            for a in range(0, n, 25):
                k = min(25, n - a)
                photo = "astronaut" if kind.startswith("astronaut") else kind
                # a face shot continues the pan of the scene; the mirrored one is the hard cut to "the other face"
                frames = LB.photo_frames(photo, width, height, k, start=(start + a) % 500)
                if kind.endswith("mirror"):
                    frames = frames[:, :, ::-1]
                w.write(np.ascontiguousarray(frames))


class CountSink:
    """Counts the frames; keeps a CRC-32 of each and a copy of those at ``keep`` (output indices)."""

    def __init__(self, keep=()):
        self.keep = set(int(k) for k in keep)
        self.count, self.crc, self.kept = 0, [], {}

    def write(self, native) -> None:
        import numpy as np
        import torch

        from musetalk_enhanced.pipeline.media.frames import image_to_uint8

        arr = image_to_uint8(native) if isinstance(native, torch.Tensor) else np.asarray(native)
        for j in range(arr.shape[0]):
            k = self.count + j
            self.crc.append(zlib.crc32(np.ascontiguousarray(arr[j]).data))
            if k in self.keep:
                self.kept[k] = arr[j].copy()
        self.count += arr.shape[0]

    def close(self):
        return self.count

    def abort(self) -> None:
        pass


def compare(a: CountSink, b: CountSink):
    """``(max |diff| over the kept frames, frames whose CRC differs)``."""
    import numpy as np

    if a.count != b.count:
        raise SystemExit(f"the runs made {a.count} and {b.count} frames")
    diff = 0
    for k, x in a.kept.items():
        diff = max(diff, int(np.abs(x.astype(np.int16) - b.kept[k].astype(np.int16)).max()))
    return diff, sum(1 for x, y in zip(a.crc, b.crc) if x != y)


class LongClip:
    """A long clip written once with its face analysis and whisper features (untimed), and its runs."""

    def __init__(self, args, workdir: str, name: str, seconds: float, shot_seconds: float, shard_seconds: float,
                 scenes: int):
        import lipsync as LB
        from musetalk_enhanced.pipeline.audio_features import compute_audio_features
        from musetalk_enhanced.pipeline.faces.detectors import create_detector
        from musetalk_enhanced.pipeline.faces.tracks import analyze_faces
        from musetalk_enhanced.pipeline.jobs import shards as sh
        from musetalk_enhanced.pipeline.media.audio import load_audio_file
        from musetalk_enhanced.pipeline.media.video import VideoFileFrames
        from musetalk_enhanced.pipeline.runtime import Runtime

        self.args, self.workdir, self.shard_seconds = args, workdir, shard_seconds
        self.device, self.dtype = common.pick_device_dtype(args.device, args.dtype)
        _, (w, h) = LB.parse_resolution(args.resolution)
        self.size = (w, h)
        self.total = total = int(round(seconds * FPS))
        self.seconds = seconds
        shard_len = int(round(shard_seconds * FPS))
        shot_len = max(args.shot_frames + 1, int(round(shot_seconds * FPS)))
        shots, self.scene_at = long_schedule(total, shard_len, shot_len, scenes, args.shot_frames)
        self.src = os.path.join(workdir, f"{name}.mp4")
        t0 = time.perf_counter()
        write_long_clip(self.src, w, h, shots, LB.speech_audio(total / FPS, workdir))
        self.write_s = time.perf_counter() - t0
        self.rt = Runtime(device=self.device, dtype=self.dtype, show_progress=False)
        t0 = time.perf_counter()
        detector = create_detector("mtcnn", self.rt, auto_download=False)
        self.faces = analyze_faces(VideoFileFrames(self.src), detector, self.rt, min_face_size=MIN_FACE)
        self.faces_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.feats = compute_audio_features(load_audio_file(self.src), FPS, "musetalk", None, self.rt,
                                            auto_download=False)
        self.audio_s = time.perf_counter() - t0
        del detector
        clear_models()
        probe = self.make_run(args.batch_size)
        self.face_out = [k for k in range(probe.plan.num_frames)
                         if self.faces.frames[int(probe.plan.source[k])].face is not None]
        self.ranges = sh.shard_ranges(probe.plan.source, self.faces, FPS, shard_seconds)
        self.face_shards = [r for r in self.ranges if any(r[0] <= k < r[1] for k in self.face_out)]
        self.spanning = sum(1 for a, _ in self.ranges[1:] if (a - 1) in self.face_out and a in self.face_out)
        print(f"# {name}: {total} frames ({seconds:g} s) at {w}x{h}, {len(self.faces.shot_starts)} shots, "
              f"{len(self.face_out)} face frames; {len(self.ranges)} shards ({len(self.face_shards)} with faces), "
              f"{self.spanning} face-to-face cut(s) on a shard boundary", flush=True)
        if not self.face_out:
            raise SystemExit(f"{name}: no face frame (MTCNN found none)")

    def describe(self) -> str:
        return (f"{self.seconds:g} s {self.size[0]}x{self.size[1]}, {len(self.faces.shot_starts)} shots, "
                f"{len(self.face_out)} synced frames in {len(self.face_shards)} of {len(self.ranges)} shards")

    def make_run(self, batch: int):
        from musetalk_enhanced.pipeline.backends.selection import MUSETALK, BackendSpec
        from musetalk_enhanced.pipeline.lipsync import LipSyncRun
        from musetalk_enhanced.pipeline.media.video import VideoFileFrames

        return LipSyncRun(VideoFileFrames(self.src), self.faces, self.feats,
                          BackendSpec(choice=MUSETALK, auto_download=False), length_policy="follow_video",
                          batch_size=batch, blend_mode="feather")

    def unsharded(self, batch: int):
        """``(sink, seconds, report)`` of the run in this process, models loaded anew."""
        clear_models()
        run = self.make_run(batch)
        sink = CountSink(self.face_out)
        t = time.perf_counter()
        report = run.into(sink, self.rt)
        return sink, time.perf_counter() - t, report

    def sharded(self, batch: int, workers: int):
        """``(sink, seconds, shards seconds, join seconds, report)``: the shards made, then the joined frames read."""
        from musetalk_enhanced.pipeline.jobs import shards as sh

        clear_models()
        run = self.make_run(batch)
        sink = CountSink(self.face_out)
        folder = tempfile.mkdtemp(prefix=f"shards_b{batch}_w{workers}_", dir=self.workdir)   # new: nothing reused
        t = time.perf_counter()
        frames, report, scratch = sh.sharded_lipsync(run, self.src, 0.0, str(self.device), self.args.dtype,
                                                     self.shard_seconds, sh.LocalWorkers(workers), folder)
        t_made = time.perf_counter()
        try:
            for b in frames.iter_batches(16):
                sink.write(b.rgb)
        finally:
            frames.patches.close()
            for path in {scratch, folder}:
                shutil.rmtree(path, ignore_errors=True)
        t_end = time.perf_counter()
        return sink, t_end - t, t_made - t, t_end - t_made, report


def measure_shards(args, workdir: str, models: str, emit) -> None:
    import torch

    from musetalk_enhanced.models import registry

    os.environ["MUSETALK_MODELS_DIR"] = models
    registry.set_folder_resolver(None)
    clip = LongClip(args, workdir, "long clip", args.long_seconds, args.shot_seconds, args.shard_seconds,
                    args.scenes)
    bs = args.batch_size
    print(f"# unsharded, batch {bs}", flush=True)
    base, base_s, base_rep = clip.unsharded(bs)
    emit(dict(stage=f"long clip unsharded (batch {bs})", frames=base.count, seconds=round(base_s, 2),
              fps=round(base.count / base_s, 2), speedup=1.0, synced=sum(len(v) for v in base_rep.synced.values()),
              passed_through=len(base_rep.passed_through), batch_size=bs, networks=args.networks,
              note=f"{clip.describe()}; one process, {torch.get_num_threads()} torch threads, models loaded once"))
    for workers in (1, 2):
        print(f"# sharded, {workers} worker(s), batch {bs}", flush=True)
        sink, sec, made_s, join_s, rep = clip.sharded(bs, workers)
        diff, differing = compare(base, sink)
        emit(dict(stage=f"long clip sharded, {workers} worker{'s' if workers > 1 else ''} (batch {bs})",
                  frames=sink.count, seconds=round(sec, 2), fps=round(sink.count / sec, 2),
                  speedup=round(base_s / sec, 2), shards_s=round(made_s, 2), join_s=round(join_s, 2),
                  shards=len(clip.ranges), face_shards=len(clip.face_shards), max_abs_diff=diff,
                  frames_differing=differing, batch_size=bs, networks=args.networks,
                  synced=sum(len(v) for v in rep.synced.values()),
                  note=(f"{len(clip.ranges)} shards, {'in this process' if workers == 1 else 'spawned processes'}; "
                        f"shards {made_s:.1f} s + join {join_s:.1f} s; {differing} frame(s) differ")))
        del sink
    del base
    gc.collect()
    print("# batch size 1: unsharded and sharded (1 worker)", flush=True)
    one, one_s, _ = clip.unsharded(1)
    sink, sec, _, _, _ = clip.sharded(1, 1)
    diff, differing = compare(one, sink)
    emit(dict(stage="long clip sharded vs unsharded at batch 1 (1 worker)", frames=sink.count, max_abs_diff=diff,
              frames_differing=differing, batch_size=1, networks=args.networks, unsharded_s=round(one_s, 2),
              sharded_s=round(sec, 2), note=f"bit-identical expected; {differing} frame(s) differ"))
    del one, sink
    emit(dict(stage="long clip setup (once, untimed above)", frames=clip.total, write_clip_s=round(clip.write_s, 2),
              faces_s=round(clip.faces_s, 2), audio_s=round(clip.audio_s, 2), shard_ranges=clip.ranges,
              scenes_at=clip.scene_at, shot_starts=list(clip.faces.shot_starts), face_frames=clip.face_out,
              boundary_face_cuts=clip.spanning,
              note=f"MTCNN + tracks {clip.faces_s:.1f} s, whisper {clip.audio_s:.1f} s, shared by every run"))
    clear_models()


def measure_full_size_difference(args, workdir: str, full_dir: str, emit) -> None:
    """The batch-size difference again with the full-size networks, on a short excerpt (one scene)."""
    from types import SimpleNamespace

    import batch as BB
    from musetalk_enhanced.models import registry

    models = BB.models_folder(SimpleNamespace(quick=False, weights_dir=full_dir), workdir)
    warm_page_cache(models)
    os.environ["MUSETALK_MODELS_DIR"] = models
    registry.set_folder_resolver(None)
    clip = LongClip(args, workdir, "full-size excerpt", 4.0, 1.0, 2.0, 1)
    bs = args.batch_size
    print(f"# full-size networks: unsharded and sharded (1 worker), batch {bs}", flush=True)
    base, base_s, _ = clip.unsharded(bs)
    sink, sec, made_s, join_s, _ = clip.sharded(bs, 1)
    diff, differing = compare(base, sink)
    emit(dict(stage=f"full-size networks: sharded vs unsharded at batch {bs} (1 worker)", frames=sink.count,
              max_abs_diff=diff, frames_differing=differing, batch_size=bs, networks="full",
              unsharded_s=round(base_s, 2), sharded_s=round(sec, 2), seconds=round(sec, 2),
              speedup=round(base_s / sec, 2), shards=len(clip.ranges), face_shards=len(clip.face_shards),
              note=f"{clip.describe()}; unsharded {base_s:.1f} s, sharded {sec:.1f} s; {differing} frame(s) differ"))
    clear_models()


# ---- main ----------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = common.bench_parser(__doc__.split("\n\n")[0])
    ap.add_argument("--networks", default="auto", choices=("auto", "small", "full"),
                    help="MuseTalk networks: small (the tests' configs), full (full-size), auto = full on a GPU, "
                         "small on a CPU (default)")
    ap.add_argument("--jobs", type=int, default=0, help="Ray part: clips, i.e. jobs (default 6; quick 4)")
    ap.add_argument("--resolution", default="256x256", help="WxH of the job clips and the long clip (256x256)")
    ap.add_argument("--face-frames", type=int, default=0, help="face frames per job clip (default 8; quick 4)")
    ap.add_argument("--cutaway-frames", type=int, default=-1, help="cutaway frames per job clip (default 17; "
                                                                   "quick 2)")
    ap.add_argument("--long-seconds", type=float, default=0, help="the long clip's length (default 60; quick 10)")
    ap.add_argument("--scenes", type=int, default=0, help="face scenes in the long clip (default 1)")
    ap.add_argument("--shot-frames", type=int, default=0, help="frames per face shot, 2 shots a scene (default 4)")
    ap.add_argument("--shot-seconds", type=float, default=0, help="cutaway shot length (default 5; quick 1)")
    ap.add_argument("--shard-seconds", type=float, default=0, help="shortest shard (default 10; quick 2)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--weights-dir", default="", help="random full-size test weights (default $MUSETALK_MODELS_DIR "
                                                      "or <pack>/test_weights)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray part")
    ap.add_argument("--no-shards", action="store_true", help="skip the long-clip part")
    ap.add_argument("--no-full-check", action="store_true", help="skip the full-size batch-size difference (full "
                                                                 "mode with small networks)")
    ap.add_argument("--keep", default="", metavar="DIR", help="work in DIR and keep it (clips, outputs)")
    args = ap.parse_args(argv)
    q = args.quick
    args.jobs = args.jobs or (4 if q else 6)
    args.face_frames = max(4, args.face_frames or (4 if q else 8))   # fewer face frames are no face shot
    if args.cutaway_frames < 0:
        args.cutaway_frames = 2 if q else 17
    args.long_seconds = args.long_seconds or (10.0 if q else 60.0)
    args.scenes = args.scenes or 1
    args.shot_frames = max(4, args.shot_frames or 4)      # shorter shots are not cuts (shots.DEFAULT_MIN_SHOT_LEN)
    args.shot_seconds = args.shot_seconds or (1.0 if q else 5.0)
    args.shard_seconds = args.shard_seconds or (2.0 if q else 10.0)
    common.setup_torch(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    common.import_pack()
    from types import SimpleNamespace

    import batch as BB

    from musetalk_enhanced.models import registry

    # the full-size weights' folder, before anything below points MUSETALK_MODELS_DIR at the small ones
    full_dir = os.path.abspath(args.weights_dir or os.environ.get(registry.ENV_MODELS_DIR)
                               or os.path.join(common.ROOT, "test_weights"))
    machine = common.machine_info()
    device, dtype = common.pick_device_dtype(args.device, args.dtype)
    if args.networks == "auto":
        args.networks = "full" if device.type == "cuda" else "small"
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        workdir = tempfile.mkdtemp(prefix="scale_", dir=args.keep)
    else:
        workdir = tempfile.mkdtemp(prefix="musetalk_bench_scale_")
    results = []

    def emit(row):
        results.append(row)
        print(json.dumps(row), flush=True)

    try:
        models = BB.models_folder(SimpleNamespace(quick=args.networks == "small", weights_dir=full_dir), workdir)
        warm_mb = warm_page_cache(models)
        print(f"# {args.networks} networks: models folder {models} ({warm_mb:.0f} MiB read into the page cache); "
              f"device {device} {common.dtype_name(dtype)}", flush=True)
        if not args.no_ray:
            measure_ray(args, workdir, models, emit)
        if not args.no_shards:
            measure_shards(args, workdir, models, emit)
        if not q and args.networks == "small" and not args.no_full_check:
            measure_full_size_difference(args, workdir, full_dir, emit)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(common.markdown_table(results, COLUMNS))
    common.write_json(args.json, common.report("scale", args, machine, results,
                                               {"weights": "random (small configs)" if args.networks == "small"
                                                else "random", "networks": args.networks,
                                                "device": str(device), "dtype": common.dtype_name(dtype),
                                                "job_options": JOB_OPTIONS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
