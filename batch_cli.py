"""``python <pack> batch JOBS``: dub a folder of videos, or a CSV / JSONL list of jobs, with one command.

    batch clips/                     pairs clips/name.mp4 with clips/name.wav (.mp3, .flac, .m4a) -> clips/dubbed/
    batch jobs.csv --out-dir out/    one job a row: video or avatar, audio, out, and any option by its field name
    batch jobs.jsonl --dry-run       check every row (one line per bad row, naming the field); run nothing
    batch clips/ --backend musetalk-v1.5 --batch-size 16      an option for every row (a row's own value wins)

The models load once for the whole batch. Each job is recorded in the results file (``batch_results.jsonl`` in the
out folder); a rerun skips the jobs finished with the same inputs, options and weights and does the rest. Ctrl-C or
SIGTERM abandons the current job cleanly (nothing under its name) and stops; run the same command to resume.
Existing outputs are never overwritten without ``--overwrite``. Exit status: 0 all done or skipped, 1 some failed,
2 the list cannot be read, 130 stopped.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from .pipeline.jobs import DubRequest
from .pipeline.jobs.batch import RESULTS_FILE, BatchRun
from .pipeline.jobs.joblist import check_files, default_out_dir, read_jobs
from .pipeline.jobs.fields import MACHINE, RequestError, specs
from .pipeline.jobs.limits import MediaLimits
from .pipeline.jobs.flags import add_command_flags, add_request_flags, given, run_command, use_models_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musetalk_enhanced batch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("jobs", help="a folder of videos with their voices, or a .csv / .jsonl list of jobs")
    p.add_argument("--out-dir", help="where the outputs go (default: dubbed/ beside the inputs)")
    p.add_argument("--results", help=f"the results file (default: {RESULTS_FILE} in the out folder)")
    p.add_argument("--dry-run", action="store_true", help="check every row and run nothing")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist (default: never)")
    p.add_argument("--ray", metavar="ADDRESS", help="run the jobs on Ray actors: auto (the cluster this machine "
                                                    "joined), local (start Ray here) or a cluster address; needs "
                                                    "the ray extra (pip install -r requirements-ray.txt)")
    p.add_argument("--actors", type=int, help="with --ray: how many actors (default: one per GPU, or per "
                                              "--cpus-per-actor CPUs)")
    p.add_argument("--cpus-per-actor", type=int, default=2, help="with --ray on CPUs: cores per actor (default 2)")
    p.add_argument("--masks", action="store_true", help="also write each dub's mask of the changed pixels as "
                                                        "<out>.mask.mp4 (a grey mp4; a row's mask_out wins)")
    p.add_argument("--max-seconds", type=float, default=MediaLimits.max_seconds,
                   help="refuse inputs longer than this, counted from their packets (0: no limit)")
    p.add_argument("--max-frames", type=int, default=MediaLimits.max_frames,
                   help="refuse videos with more frames (0: no limit)")
    p.add_argument("--max-pixels", type=int, default=MediaLimits.max_pixels,
                   help="refuse larger pictures, width x height (0: no limit)")
    add_request_flags(p, DubRequest, skip=("video", "audio", "out"), title="options for every row")
    add_command_flags(p)
    return p


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    use_models_dir(args)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    chosen = given(args, DubRequest)
    machine_names = {s.name for s in specs(DubRequest) if s.role == MACHINE}
    machine = {k: v for k, v in chosen.items() if k in machine_names}
    defaults = {k: v for k, v in chosen.items() if k not in machine_names}
    out_dir = os.path.abspath(args.out_dir or default_out_dir(args.jobs))

    def batch() -> int:
        parsed = DubRequest.from_mapping(machine)
        jobs = read_jobs(args.jobs, out_dir, defaults, {k: getattr(parsed, k) for k in machine}, args.masks)
        if not jobs:
            raise RequestError("jobs", f"no jobs in {args.jobs}", "a folder needs name.mp4 + name.wav pairs; a list "
                                                                 "needs rows")
        limits = MediaLimits(args.max_seconds, args.max_frames, args.max_pixels)
        if args.dry_run:
            return dry_run(jobs, limits)
        return run_batch(jobs, args.results or os.path.join(out_dir, RESULTS_FILE), args, limits)

    return run_command(batch, DubRequest)


def dry_run(jobs, limits: MediaLimits) -> int:
    bad = 0
    for job in jobs:
        try:
            if job.error is not None:
                raise job.error
            check_files(job.request)
            limits.check_request(job.request)
        except RequestError as exc:
            bad += 1
            print(f"{job.label}: {exc.field}: {exc.message}" + (f" ({exc.fix})" if exc.fix else ""))
    print(f"dry run: {len(jobs) - bad} of {len(jobs)} jobs valid, {bad} refused; nothing was run")
    return 1 if bad else 0


def runner(args):
    """The batch runner: here (pipeline/jobs/batch.py), or on Ray actors (pipeline/jobs/cluster.py)."""
    if not args.ray:
        return BatchRun
    from functools import partial

    from .pipeline.jobs.requests import require_ray

    require_ray("ray")

    from .pipeline.jobs.cluster import RayBatchRun

    return partial(RayBatchRun, address=args.ray, actors=args.actors, cpus_per_actor=args.cpus_per_actor)


def run_batch(jobs, results: str, args, limits: MediaLimits) -> int:
    """Run with SIGINT/SIGTERM turned into a clean stop (a second Ctrl-C interrupts at once)."""
    stop = threading.Event()
    previous = {}

    def on_signal(signum, _frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        print(f"\n{signal.Signals(signum).name}: stopping; the current job is abandoned (nothing written under its "
              "name). Run the same command again to resume.", file=sys.stderr)

    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = runner(args)(jobs, results, overwrite=args.overwrite, stop=stop, show_progress=not args.quiet,
                               limits=limits).run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(f"{summary.text()}; results in {results}")
    if summary.stopped:
        return 130
    return 1 if summary.counts["failed"] else 0
