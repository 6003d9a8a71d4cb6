"""The ``batch`` command against separate CLI calls: what loading the models once saves, in jobs/hour and s/job.

    python bench/batch.py                # 6 jobs, 256x256 clips of 1 s (8 face + 17 cutaway frames), full-size
                                         # networks (random test weights)
    python bench/batch.py --quick        # CI smoke run: 2 jobs, clips of 4 face + 2 cutaway frames, the small random
                                         # configs of the tests
    python bench/batch.py --json out.json --jobs 4 --face-frames 25 --cutaway-frames 0 --resolution 640x360

Inputs. ``--jobs`` clips in one folder, each paired with its own voice (``clipN.mp4`` + ``clipN.wav``): the astronaut
photo panning for ``--face-frames`` frames, then a cutaway (the rocket photo) for ``--cutaway-frames`` frames, at 25
fps (tests/mediakit.py); the voice is espeak-ng speech (a different sentence per clip; a tone without espeak-ng)
trimmed or padded to the clip's length, so every job makes the same number of output frames.

Weights. Random values in the released layouts in a models folder read through ``MUSETALK_MODELS_DIR``, as a user's
run would: full mode the full-size MuseTalk v1.5 UNet, sd-vae-ft-mse and whisper-tiny (written once to
``--weights-dir``, default ``$MUSETALK_MODELS_DIR`` or ``<pack>/test_weights``, by bench/lipsync.py's
``ensure_test_weights``; ~1.7 GB, about a minute); ``--quick`` the small UNet / VAE configs of tests/test_lipsync.py
(``UNET_SMALL``, ``VAE_SMALL``) with a full-size whisper-tiny, in a temporary folder (as tests/conftest.py's
``small_models_dir``). MTCNN uses its real weights (the facenet-pytorch wheel). Nothing downloads
(``--no-download``, ``HF_HUB_OFFLINE=1``).

Every run below is a fresh process with the same options (``--backend musetalk-v1.5 --blend-mode feather
--min-face-size 30 --quiet --no-download``, plus ``--device`` / ``--dtype`` when given), timed as wall clock from the
parent, so interpreter start-up, imports and model loading are included: that is what the batch saves.

1. **warm-up / probe**: one CLI dub of the first clip run in a process that wraps the pack's model cache
   (``pipeline.model_cache.cached``) to time every model it builds (MuseTalk UNet + VAE, whisper-tiny and its device
   copy, MTCNN, the landmark model: the kinds are listed in the JSON). A build includes the imports its loader does
   lazily (transformers for whisper, ~3 s here; diffusers for the UNet and VAE), which a batch also pays once. The
   probe also fills the page cache with the weight files, so neither of the timed runs below reads them cold. Not
   part of the comparison.
2. **batch (one process)**: ``python <pack> batch FOLDER ...`` once: the wall time of the whole command for all
   jobs (``seconds``), per job (``s/job`` = seconds / jobs) and ``jobs/hour`` = 3600 / s/job. From the command's
   own ``dubbed/batch_results.jsonl``: ``first_job_s`` (the first job loads the models) and ``steady_s_per_job``
   (the mean of the other jobs: the work of a job with the models loaded; with one job, the first).
3. **separate CLI calls**: ``python <pack> --video clipN.mp4 --audio clipN.wav --out ...`` once per clip, one after
   the other: the sum of their wall times (``seconds``), ``s/job`` (their mean) and ``jobs/hour``.
   ``speed-up`` = the CLI calls' seconds / the batch's seconds (= the ratio of the jobs/hour).
4. **fixed cost of a CLI call (derived)**: a CLI call's s/job minus the batch's steady s/job: start-up, imports,
   model loading and first-call warm-ups, which the batch pays once; ``share`` is that in % of a CLI call's s/job.
   ``speedup_limit`` = CLI s/job / batch steady s/job is the speed-up a long batch approaches.
5. **model loading in a CLI call (measured)**: the seconds spent building models in the probe (1.), and its
   ``share`` of the probe's wall time; **start-up and exit (measured)**: the probe's wall time minus the time inside
   the command's ``main()`` (interpreter start, importing the pack and torch, exit).

The shares depend on the clip length (the work per job grows with the frames, the fixed cost does not): they are
for the clips described in the note column. ``peak RSS MB`` is the process's high-water mark (``wait4``). Prints one
JSON line per measurement and a markdown table; ``--json PATH`` writes everything with the machine description.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

COLUMNS = [("stage", "stage"), ("jobs", "jobs"), ("seconds", "seconds"), ("s_per_job", "s/job"),
           ("jobs_per_hour", "jobs/hour"), ("speedup", "speed-up"), ("share_pct", "share %"),
           ("rss_peak_mb", "peak RSS MB"), ("note", "note")]
FPS = 25
OPTIONS = ["--backend", "musetalk-v1.5", "--blend-mode", "feather", "--min-face-size", "30"]
COMMON = ["--quiet", "--no-download"]
SENTENCES = ("Hello there, this is the first clip.", "Good morning, here is another voice.",
             "Yes, the batch loads its models once.", "Come here and listen to this one.",
             "Every clip has its own sentence.", "That was the last one, thank you.")
PROBE_FLAG = "--_probe"


# ---- inputs --------------------------------------------------------------------------------------------------------
def parse_size(text: str):
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def voice(path: str, text: str, seconds: float, workdir: str) -> str:
    """espeak-ng speech (a tone without it) trimmed or padded with silence to ``seconds``, 16-bit wav."""
    import numpy as np

    from musetalk_enhanced.pipeline.media.audio import load_audio_file

    mk = common.import_tests_helper("mediakit")
    rate, samples = 16000, None
    if mk.have_espeak():
        raw = os.path.join(workdir, "speech_raw.wav")
        audio = load_audio_file(mk.speech(raw, text, speed=170))
        rate, samples = audio.sample_rate, audio.samples[:1]
        os.remove(raw)
    if samples is None:  # pragma: no cover - espeak-ng is installed where the benchmarks run
        samples = mk.tone(220, seconds, rate)[None]
    n = int(round(seconds * rate))
    out = np.zeros((1, n), np.float32)
    out[:, :min(n, samples.shape[1])] = samples[:, :n]
    return mk.write_wav(path, out, rate)


def make_clips(folder: str, jobs: int, size, face_frames: int, cutaway_frames: int, workdir: str):
    """``clip{i}.mp4`` + ``clip{i}.wav`` pairs in ``folder``; returns the stems."""
    mk = common.import_tests_helper("mediakit")
    plan = (("astronaut", face_frames),) + ((("rocket", cutaway_frames),) if cutaway_frames else ())
    frames = mk.edited_clip(size, plan)
    seconds = len(frames) / FPS
    os.makedirs(folder, exist_ok=True)
    stems = []
    for i in range(jobs):
        stem = f"clip{i}"
        mk.write_video(os.path.join(folder, stem + ".mp4"), frames, FPS, crf=14)
        voice(os.path.join(folder, stem + ".wav"), SENTENCES[i % len(SENTENCES)], seconds, workdir)
        stems.append(stem)
    return stems


def models_folder(args, workdir: str) -> str:
    """The models folder the runs read (``MUSETALK_MODELS_DIR``), with the random weights they need."""
    if args.quick:
        import lipsync as LB
        from test_weights import musetalk_unet as tw_unet, vae as tw_vae, whisper as tw_whisper

        root = os.path.join(workdir, "models")
        tw_unet.write_test_weights(root, config=LB.UNET_SMALL)
        tw_vae.write_test_weights(root, config=LB.VAE_SMALL)
        tw_whisper.write_test_weights(root)
        return root
    import lipsync as LB
    from musetalk_enhanced.models import registry

    root = os.path.abspath(args.weights_dir or os.environ.get(registry.ENV_MODELS_DIR)
                           or os.path.join(common.ROOT, "test_weights"))
    LB.ensure_test_weights(root, with_parser=False)
    return root


# ---- running -------------------------------------------------------------------------------------------------------
def run_process(cmd, env, log_path: str):
    """Run ``cmd`` to the end: ``(returncode, wall seconds, peak RSS MiB of the process)``; output to ``log_path``."""
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=common.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = usage.ru_maxrss / common.MB if sys.platform == "darwin" else usage.ru_maxrss / 1024.0
    return proc.returncode, wall, rss


def check(rc: int, what: str, log_path: str) -> None:
    if rc != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"{what} failed with exit status {rc}:\n{tail}")


def machine_options(args):
    out = []
    if args.device != "auto":
        out += ["--device", args.device]
    if args.dtype != "auto":
        out += ["--dtype", args.dtype]
    return out


def child_env(models: str, threads: int):
    env = dict(os.environ, MUSETALK_MODELS_DIR=models, HF_HUB_OFFLINE="1")
    if threads and threads > 0:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def probe_main(argv) -> int:
    """(In a child process.) ``--_probe OUT.json -- <cli arguments>``: the CLI dub run in this process with every model
    build timed; writes ``{import_s, command_s, load_s, loads: {kind: s}, rc}``."""
    out_json, cli_argv = argv[0], argv[argv.index("--") + 1:]
    t0 = time.perf_counter()
    common.import_pack()
    from musetalk_enhanced.__main__ import main
    from musetalk_enhanced.pipeline import model_cache

    import_s = time.perf_counter() - t0
    loads, depth = {}, [0]
    original = model_cache.cached

    def timed_cached(kind, key, build, keep=1):
        def timed_build():
            depth[0] += 1
            t = time.perf_counter()
            try:
                return build()
            finally:
                depth[0] -= 1
                if depth[0] == 0:           # a build inside a build is counted once, in the outer one
                    loads[kind] = loads.get(kind, 0.0) + time.perf_counter() - t
        return original(kind, key, timed_build, keep=keep)

    model_cache.cached = timed_cached
    t1 = time.perf_counter()
    rc = main(cli_argv)
    command_s = time.perf_counter() - t1
    with open(out_json, "w") as f:
        json.dump({"import_s": import_s, "command_s": command_s, "load_s": sum(loads.values()),
                   "loads": {k: round(v, 3) for k, v in loads.items()}, "rc": rc}, f)
    return rc


def measure(args, workdir: str) -> list:
    size = parse_size(args.resolution)
    models = models_folder(args, workdir)
    folder = os.path.join(workdir, "clips")
    stems = make_clips(folder, args.jobs, size, args.face_frames, args.cutaway_frames, workdir)
    n_frames = args.face_frames + args.cutaway_frames
    env = child_env(models, args.threads)
    opts = OPTIONS + machine_options(args) + COMMON
    pack = [sys.executable, common.ROOT]
    logs = os.path.join(workdir, "logs")
    os.makedirs(logs, exist_ok=True)

    def cli_args(stem: str, out_dir: str):
        return ["--video", os.path.join(folder, stem + ".mp4"), "--audio", os.path.join(folder, stem + ".wav"),
                "--out", os.path.join(out_dir, stem + ".mp4")] + opts

    # 1. the probe: a CLI dub with its model builds timed (also the warm-up of the page cache)
    probe_dir = os.path.join(workdir, "probe")
    os.makedirs(probe_dir)
    probe_json = os.path.join(workdir, "probe.json")
    log = os.path.join(logs, "probe.log")
    rc, probe_wall, probe_rss = run_process([sys.executable, os.path.abspath(__file__), PROBE_FLAG, probe_json, "--"]
                                            + cli_args(stems[0], probe_dir), env, log)
    check(rc, "the probe (a CLI dub with its model loads timed)", log)
    with open(probe_json) as f:
        probe = json.load(f)

    # 2. the batch command, once, for every clip
    log = os.path.join(logs, "batch.log")
    rc, batch_s, batch_rss = run_process(pack + ["batch", folder] + opts, env, log)
    check(rc, "the batch command", log)
    with open(os.path.join(folder, "dubbed", "batch_results.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    done = [r for r in records if r.get("state") == "done"]
    if len(done) != len(stems) or not all(os.path.isfile(r["output"]) for r in done):
        raise SystemExit(f"the batch did not finish every job: {[r.get('state') for r in records]}")
    job_s = [float(r["seconds"]) for r in done]
    synced = [sum(r["report"]["synced"].values()) for r in done]
    out_frames = [r["report"]["frames"] for r in done]
    if not all(synced):
        raise SystemExit(f"a batch job synced no frame (no face found?): {synced}")
    steady = job_s[1:] or job_s

    # 3. the same clips, one CLI call each
    cli_dir = os.path.join(workdir, "cli")
    os.makedirs(cli_dir)
    cli_s, cli_rss = [], 0.0
    for stem in stems:
        log = os.path.join(logs, f"cli_{stem}.log")
        rc, wall, rss = run_process(pack + cli_args(stem, cli_dir), env, log)
        check(rc, f"the CLI call for {stem}", log)
        if not os.path.isfile(os.path.join(cli_dir, stem + ".mp4")):
            raise SystemExit(f"the CLI call for {stem} wrote no output")
        cli_s.append(wall)
        cli_rss = max(cli_rss, rss)

    n = len(stems)
    cli_total = sum(cli_s)
    batch_per, cli_per = batch_s / n, cli_total / n
    steady_per = sum(steady) / len(steady)
    fixed = cli_per - steady_per
    clips = (f"{n} clips of {size[0]}x{size[1]}, {n_frames} frames ({args.face_frames} face + "
             f"{args.cutaway_frames} cutaway, {n_frames / FPS:g} s) each")
    load_kinds = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(probe["loads"].items(), key=lambda kv: -kv[1]))
    startup = probe_wall - probe["command_s"]
    return [
        dict(stage="batch (one process)", jobs=n, seconds=round(batch_s, 2), s_per_job=round(batch_per, 2),
             jobs_per_hour=round(3600 / batch_per, 1), speedup=round(cli_total / batch_s, 2),
             first_job_s=round(job_s[0], 2), steady_s_per_job=round(steady_per, 2),
             job_seconds=[round(s, 2) for s in job_s], output_frames=out_frames, synced_frames=synced,
             rss_peak_mb=round(batch_rss, 1),
             note=f"{clips}; first job {job_s[0]:.1f} s (loads the models), then {steady_per:.1f} s/job"),
        dict(stage="separate CLI calls", jobs=n, seconds=round(cli_total, 2), s_per_job=round(cli_per, 2),
             jobs_per_hour=round(3600 / cli_per, 1), speedup=1.0, call_seconds=[round(s, 2) for s in cli_s],
             rss_peak_mb=round(cli_rss, 1), note=f"{n} x python <pack> --video ... (fresh process each)"),
        dict(stage="fixed cost of a CLI call (derived)", seconds=round(fixed, 2),
             share_pct=round(100 * fixed / cli_per, 1), speedup_limit=round(cli_per / steady_per, 2),
             note=f"CLI s/job - batch steady s/job; a long batch approaches {cli_per / steady_per:.2f}x"),
        dict(stage="model loading in a CLI call (measured)", seconds=round(probe["load_s"], 2),
             share_pct=round(100 * probe["load_s"] / probe_wall, 1), probe_wall_s=round(probe_wall, 2),
             loads=probe["loads"], rss_peak_mb=round(probe_rss, 1),
             note=f"model builds in one CLI dub of {probe_wall:.1f} s: {load_kinds}"),
        dict(stage="start-up and exit of a CLI call (measured)", seconds=round(startup, 2),
             share_pct=round(100 * startup / probe_wall, 1), import_s=round(probe["import_s"], 2),
             note=f"interpreter, imports (the pack {probe['import_s']:.1f} s; torch etc. partly inside the command), "
                  "exit"),
    ]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == PROBE_FLAG:
        return probe_main(argv[1:])
    ap = common.bench_parser(__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=0, help="clips, i.e. jobs (default 6; quick 2)")
    ap.add_argument("--resolution", default="256x256", help="WxH of the clips (default 256x256)")
    ap.add_argument("--face-frames", type=int, default=0, help="face frames per clip (default 8; quick 4)")
    ap.add_argument("--cutaway-frames", type=int, default=-1, help="cutaway frames per clip (default 17; quick 2)")
    ap.add_argument("--weights-dir", default="", help="random full-size test weights (default $MUSETALK_MODELS_DIR "
                                                      "or <pack>/test_weights)")
    ap.add_argument("--keep", default="", metavar="DIR", help="work in DIR and keep it (clips, outputs, logs)")
    args = ap.parse_args(argv)
    args.jobs = args.jobs or (2 if args.quick else 6)
    args.face_frames = args.face_frames or (4 if args.quick else 8)
    if args.cutaway_frames < 0:
        args.cutaway_frames = 2 if args.quick else 17
    common.setup_torch(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    common.import_pack()
    machine = common.machine_info()
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        workdir = tempfile.mkdtemp(prefix="batch_", dir=args.keep)
    else:
        workdir = tempfile.mkdtemp(prefix="musetalk_bench_batch_")
    try:
        results = measure(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    for row in results:
        print(json.dumps(row), flush=True)
    print(common.markdown_table(results, COLUMNS))
    common.write_json(args.json, common.report("batch", args, machine, results,
                                               {"weights": "random (small configs)" if args.quick else "random",
                                                "options_passed": OPTIONS + machine_options(args) + COMMON}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
