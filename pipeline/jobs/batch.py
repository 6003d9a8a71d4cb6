"""Batch: many requests from one list, run one after another with the models loaded once, each recorded, the whole
resumable.

The list of jobs (a CSV, a JSONL, a folder) is read into requests by pipeline/jobs/joblist.py.

* a job's identity (pipeline/jobs/identity.py ``job_key``): its inputs (size and modification time; an avatar's
  preparation), its options and the weight files it would read. A finished job is skipped only while all three are
  the same and its output is the file it recorded, never because "the file exists".
* :class:`Results` — the results file (JSONL, one line per job per run: state, report, seconds, error).
* :class:`BatchRun` — runs the jobs: each writes under a staging name that is renamed into place after its line is
  recorded; a failing job is recorded and the batch goes on; a stop request abandons the current job cleanly (no
  partial file under the final name) and the next run resumes.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ..runtime import Cancelled
from .fields import RequestError
from .joblist import BatchJob, check_files
from .limits import MediaLimits
from .identity import job_key
from .requests import Request
from .run import JobResult, explain, make_runtime, run

RESULTS_FILE = "batch_results.jsonl"
STAGING_SUFFIX = ".batch-staging.mp4"
DONE, FAILED, SKIPPED, CANCELLED = "done", "failed", "skipped", "cancelled"


# ---- the results file ----------------------------------------------------------------------------------------------
class Results:
    """The results JSONL: appended, one line per job per run, flushed and synced at once; the latest ``done`` line of
    an output is what a rerun compares with."""

    def __init__(self, path: str):
        self.path = path
        self.done: Dict[str, Dict] = {}
        self._lock = threading.Lock()           # a Ray batch appends from one thread per actor
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue                         # a line cut by a kill: ignored
                    if isinstance(rec, dict) and rec.get("state") == DONE and rec.get("output"):
                        self.done[rec["output"]] = rec

    def finished(self, out: str, key: str) -> Optional[Dict]:
        """The record that makes ``out`` a finished job: same identity, and the file is the one it recorded."""
        rec = self.done.get(out)
        if rec and rec.get("key") == key and os.path.isfile(out) and os.path.getsize(out) == rec.get("bytes"):
            return rec
        return None

    def append(self, record: Dict) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with self._lock:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if record.get("state") == DONE:
                self.done[record["output"]] = record


# ---- running -------------------------------------------------------------------------------------------------------
Hook = Callable[[str, int, "BatchJob", Dict[str, Any]], None]


@dataclass
class BatchSummary:
    counts: Dict[str, int] = field(default_factory=lambda: {DONE: 0, SKIPPED: 0, FAILED: 0, CANCELLED: 0})
    seconds: float = 0.0
    stopped: bool = False

    def text(self) -> str:
        c = self.counts
        extra = f", {c[CANCELLED]} cancelled" if c[CANCELLED] else ""
        return (f"batch: {c[DONE]} done, {c[SKIPPED]} skipped, {c[FAILED]} failed{extra} in {self.seconds:.1f} s"
                + ("; stopped early, run the same command again to resume" if self.stopped else ""))


class BatchRun:
    """Runs ``jobs`` in order on this machine. ``stop`` (an Event) abandons the current job at its next progress
    point; ``hooks`` see ``(event, index, job, detail)`` for ``start``, ``progress`` and ``finish``; ``limits`` are
    held against every job's inputs (measured from their packets) before it runs."""

    def __init__(self, jobs: List[BatchJob], results_path: str, overwrite: bool = False,
                 stop: Optional[threading.Event] = None, show_progress: bool = True, log: Callable[[str], None] = print,
                 hooks: Optional[List[Hook]] = None, limits: MediaLimits = MediaLimits()):
        self.jobs, self.results, self.limits = jobs, Results(results_path), limits
        self.overwrite, self.stop = overwrite, stop or threading.Event()
        self.show_progress, self.log, self.hooks = show_progress, log, list(hooks or [])

    def run(self) -> BatchSummary:
        summary, started = BatchSummary(), time.time()
        bar = _bar(len(self.jobs), self.show_progress)
        for i, job in enumerate(self.jobs):
            if self.stop.is_set():
                summary.stopped = True
                break
            state = self.run_one(i, job)
            summary.counts[state] += 1
            if bar is not None:
                bar.update(1)
            if state == CANCELLED:
                summary.stopped = True
                break
        if bar is not None:
            bar.close()
        summary.seconds = time.time() - started
        return summary

    def run_one(self, i: int, job: BatchJob) -> str:
        """One job from start to its line in the results file; returns its state."""
        self._emit("start", i, job, {})
        prefix = f"[{i + 1}/{len(self.jobs)}] {job.label}"
        t0 = time.time()
        record: Dict[str, Any] = {"job": job.label, "kind": job.request.KIND if job.request else None,
                                  "output": getattr(job.request, "out", None)}
        try:
            if job.error is not None:
                raise job.error
            request = job.request
            check_files(request)
            self.limits.check_request(request)
            key = record["key"] = job_key(request)
            done = self.results.finished(request.out, key)
            if done is not None:
                return self._finish(i, job, {**record, "state": SKIPPED, "bytes": done["bytes"]}, t0,
                                    f"{prefix}: skipped (done before with the same inputs, options and weights)")
            for field in ("out", "mask_out"):
                path = getattr(request, field, None)
                if path and os.path.exists(path) and not self.overwrite:
                    raise RequestError(field, f"{path} exists and was not made by this batch from these inputs, "
                                              "options and weights", "pass --overwrite to replace it, or move it away")
            result = self.execute(i, job, request, key, record, t0)
            return self._finish(i, job, {**record, "state": DONE}, t0, f"{prefix}: done in {time.time() - t0:.1f} s"
                                f" ({_short(result)})", written=True)
        except (Cancelled, KeyboardInterrupt):
            return self._finish(i, job, {**record, "state": CANCELLED, "error": "stopped while running"}, t0,
                                f"{prefix}: stopped; nothing written under its name")
        except Exception as exc:       # this job's failure alone: recorded, and the batch goes on
            reason = explain(exc)
            return self._finish(i, job, {**record, "state": FAILED, "error": reason}, t0,
                                f"{prefix}: failed: {reason}")

    def execute(self, i: int, job: BatchJob, request: Request, key: str, record: Dict, t0: float) -> JobResult:
        """Run into the staging name; record ``done``; then rename into place (a kill in between leaves a record
        whose file is missing, which a rerun redoes)."""
        out, mask = request.out, getattr(request, "mask_out", None)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        staging, mask_staging = _staging(out), _staging(mask) if mask else None
        for path in (staging, mask_staging):
            _remove(path)
        try:
            staged = request.replace(out=staging, **({"mask_out": mask_staging} if mask else {}))
            result = self.run_request(i, job, staged)
            record.update(key=job_key(request),       # again: weights downloaded by this job are part of it now
                          report=result.as_dict(out), bytes=os.path.getsize(staging))
            if mask:
                record["mask"] = mask
            self.results.append({**record, "state": DONE, "seconds": round(time.time() - t0, 3),
                                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
            if mask:
                self._place(mask_staging, mask, "mask_out")
            self._place(staging, out)
        finally:
            for path in (staging, mask_staging):
                _remove(path)
        result.output = out
        return result

    def run_request(self, i: int, job: BatchJob, staged: Request) -> JobResult:
        """Run one job's request (its outputs under their staging names) here, with the models loaded once in this
        process; a Ray batch runs it on an actor instead (pipeline/jobs/cluster.py)."""
        runtime = make_runtime(staged, lambda stage, done, total: self._emit(
            "progress", i, job, {"stage": stage, "done": done, "total": total}), self.stop.is_set,
                               show_progress=self.show_progress)
        return run(staged, runtime, log=lambda _text: None)

    def _place(self, staging: str, out: str, field: str = "out") -> None:
        if self.overwrite:
            os.replace(staging, out)
            return
        try:
            os.link(staging, out)               # fails if a file appeared there meanwhile: it is never replaced
        except FileExistsError:
            raise RequestError(field, f"{out} appeared while the job ran; it was kept",
                               "move it away, or pass --overwrite") from None
        except OSError:                         # a file system without hard links
            if os.path.exists(out):
                raise
            os.replace(staging, out)

    def _finish(self, i: int, job: BatchJob, record: Dict, t0: float, line: str, written: bool = False) -> str:
        record = {**record, "seconds": round(time.time() - t0, 3), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if not written:
            self.results.append(record)
        self.log(line)
        self._emit("finish", i, job, record)
        return record["state"]

    def _emit(self, event: str, i: int, job: BatchJob, detail: Dict[str, Any]) -> None:
        for hook in self.hooks:
            hook(event, i, job, detail)


def _short(result: JobResult) -> str:
    r = result.report
    if r is None:
        return result.message
    synced = sum(len(v) for v in r.synced.values())
    return (f"{r.num_frames} frames, {synced} synced, {len(r.passed_through)} passed through"
            + ("; no frame had a face" if not synced and r.num_frames else ""))


def _bar(total: int, show: bool):
    if not show:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a requirement
        return None
    return tqdm(total=total, desc="batch", unit="job", position=0, leave=True, dynamic_ncols=True)


def _staging(out: str) -> str:
    """The name a job writes ``out`` under until its results line is written."""
    return os.path.join(os.path.dirname(out), "." + os.path.basename(out) + STAGING_SUFFIX)


def _remove(path: Optional[str]) -> None:
    try:
        if path:
            os.remove(path)
    except FileNotFoundError:
        pass
