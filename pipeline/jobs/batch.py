"""Batch: many requests from one list, run one after another with the models loaded once, each recorded, the whole
resumable.

* :func:`read_jobs` — the list: a CSV or JSONL file (one job a row: ``video`` or ``avatar``, ``audio``, ``out`` and
  any option by its request field name) or a folder pairing ``name.mp4`` with ``name.wav`` / ``.mp3`` / ``.flac`` /
  ``.m4a``; outputs go to the out folder (default: ``dubbed/`` beside the inputs).
* :func:`job_key` — a job's identity: its inputs (size and modification time; an avatar's preparation), its options
  and the weight files it would read. A finished job is skipped only while all three are the same and its output is
  the file it recorded, never because "the file exists".
* :class:`Results` — the results file (JSONL, one line per job per run: state, report, seconds, error).
* :class:`BatchRun` — runs the jobs: each writes under a staging name that is renamed into place after its line is
  recorded; a failing job is recorded and the batch goes on; a stop request abandons the current job cleanly (no
  partial file under the final name) and the next run resumes.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..runtime import Cancelled
from .fields import INPUT, OPTION, RequestError, as_sent, names_table
from .limits import MediaLimits
from .requests import DubRequest, Request, SpeakRequest
from .run import JobResult, explain, make_runtime, run

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
AUDIO_EXTS = (".wav", ".mp3", ".flac", ".m4a")      # searched in this order beside each video
DEFAULT_OUT_DIR = "dubbed"
RESULTS_FILE = "batch_results.jsonl"
STAGING_SUFFIX = ".batch-staging.mp4"
DONE, FAILED, SKIPPED, CANCELLED = "done", "failed", "skipped", "cancelled"


@dataclass
class BatchJob:
    """One row: its label, and the request it makes or why it cannot make one."""

    label: str
    request: Optional[Request] = None
    error: Optional[RequestError] = None


# ---- the list ------------------------------------------------------------------------------------------------------
def default_out_dir(source: str) -> str:
    folder = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    return os.path.join(os.path.abspath(folder), DEFAULT_OUT_DIR)


def read_jobs(source: str, out_dir: Optional[str] = None, defaults: Optional[Dict[str, Any]] = None,
              machine: Optional[Dict[str, Any]] = None) -> List[BatchJob]:
    """The jobs of ``source`` (a folder, a ``.csv`` or a ``.jsonl``). ``defaults``: options for every row (a row's
    own value wins); ``machine``: the device, dtype and downloads every job runs with."""
    if not os.path.exists(source):
        raise RequestError("jobs", f"{source} does not exist", "give a folder of videos, a .csv or a .jsonl file")
    out_dir = os.path.abspath(out_dir or default_out_dir(source))
    if os.path.isdir(source):
        rows = folder_rows(source)
    elif source.lower().endswith(".csv"):
        rows = csv_rows(source)
    elif source.lower().endswith((".jsonl", ".ndjson")):
        rows = jsonl_rows(source)
    else:
        raise RequestError("jobs", f"{os.path.basename(source)} is not a folder, .csv or .jsonl",
                           "list the jobs in a .csv or .jsonl file, or give a folder pairing name.mp4 with name.wav")
    base = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    jobs = [make_job(label, row, base, out_dir, defaults or {}, machine or {}) for label, row in rows]
    return refuse_shared_outputs(jobs)


def refuse_shared_outputs(jobs: List[BatchJob]) -> List[BatchJob]:
    """A row whose output is any row's input (``--out-dir`` pointing at the inputs) is refused, whatever
    ``--overwrite`` says: a source is never replaced by a dub. A second row writing the same output is refused too
    (it would replace the first one's result)."""
    inputs = {os.path.realpath(p): job.label for job in jobs if job.request is not None
              for p in (getattr(job.request, "video", None), job.request.audio) if p}
    first: Dict[str, str] = {}
    for job in jobs:
        if job.request is None:
            continue
        out = os.path.abspath(job.request.out)
        if os.path.realpath(out) in inputs:
            job.request, job.error = None, RequestError(
                "out", f"{os.path.basename(out)} is the input of {inputs[os.path.realpath(out)]}",
                "choose an --out-dir (or out) apart from the inputs: a source is never replaced")
        elif out in first:
            job.request, job.error = None, RequestError("out", f"{os.path.basename(out)} is also the output of "
                                                               f"{first[out]}", "give each row its own out")
        else:
            first[out] = job.label
    return jobs


def folder_rows(folder: str) -> List[Tuple[str, Dict[str, Any]]]:
    """``name.mp4`` + ``name.wav`` (or .mp3, .flac, .m4a) pairs, by name; a video without a voice is a row that
    fails with the reason."""
    names = sorted(os.listdir(folder))
    present = {n.lower(): n for n in names}            # clip.WAV pairs with clip.mp4
    videos = [n for n in names if os.path.splitext(n)[1].lower() in VIDEO_EXTS and not n.startswith(".")
              and os.path.isfile(os.path.join(folder, n))]
    stems = [os.path.splitext(n)[0].lower() for n in videos]
    rows = []
    for name in videos:
        stem, ext = os.path.splitext(name)
        voice = next((present[(stem + e).lower()] for e in AUDIO_EXTS if (stem + e).lower() in present), None)
        out = stem + ".mp4" if stems.count(stem.lower()) == 1 else f"{stem}_{ext[1:].lower()}.mp4"  # clip.mov, clip.mp4
        rows.append((name, {"video": name, "audio": voice, "out": out,
                            "_missing": None if voice else
                            ("audio", f"no voice track beside {name}",
                             f"add {stem}.wav (or .mp3, .flac, .m4a) to the folder")}))
    return rows


def csv_rows(path: str) -> List[Tuple[str, Dict[str, Any]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        return [(f"row {i}", {k.strip(): v for k, v in row.items() if k and v is not None and str(v).strip() != ""})
                for i, row in enumerate(reader, start=2)]


def jsonl_rows(path: str) -> List[Tuple[str, Dict[str, Any]]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                row = {"_missing": ("row", f"not valid JSON ({exc})", "write one JSON object per line")}
            if not isinstance(row, dict):
                row = {"_missing": ("row", "is not a JSON object", 'write {"video": ..., "audio": ...} per line')}
            rows.append((f"line {i}", row))
    return rows


def make_job(label: str, row: Dict[str, Any], base: str, out_dir: str, defaults: Dict[str, Any],
             machine: Dict[str, Any]) -> BatchJob:
    """A row's request: paths relative to the list's folder (outputs: to ``out_dir``), the command line's options
    under the row's own; any problem becomes the row's error."""
    row = dict(row)
    missing = row.pop("_missing", None)
    kind = SpeakRequest if row.get("avatar") else DubRequest
    if row.get("video") and row.get("avatar"):
        return BatchJob(label, error=RequestError("avatar", "a row takes a video or an avatar, not both",
                                                  "leave out one of the two columns"))
    try:
        if missing:
            raise RequestError(*missing)
        for key in ("video", "audio"):
            if row.get(key):
                row[key] = os.path.join(base, str(row[key]))
        row["out"] = os.path.join(out_dir, str(row.get("out") or default_out_name(row)))
        known = names_table(kind)
        options = {k: v for k, v in defaults.items() if k in known}
        values = {**options, **row}
        request = kind.from_mapping(values, roles=(INPUT, OPTION)).replace(**machine)
        return BatchJob(label, request.validate())
    except RequestError as exc:
        return BatchJob(label, error=as_sent(exc, kind, row))


def default_out_name(row: Dict[str, Any]) -> str:
    """``clip.mp4`` for the video ``clip.mov``; ``host_voice.mp4`` for the avatar ``host`` speaking ``voice.wav``."""
    if row.get("video"):
        return os.path.splitext(os.path.basename(str(row["video"])))[0] + ".mp4"
    voice = os.path.splitext(os.path.basename(str(row.get("audio") or "voice")))[0]
    return f"{row.get('avatar') or 'avatar'}_{voice}.mp4"


def check_files(request: Request) -> None:
    """The inputs exist (``--dry-run`` checks this without decoding anything)."""
    for key in ("video", "audio"):
        path = getattr(request, key, None)
        if path and not os.path.isfile(path):
            raise RequestError(key, f"{path} does not exist", "fix the path; relative paths start at the list's folder")
    if isinstance(request, SpeakRequest):
        from ..avatars import AvatarError, read_manifest

        try:
            read_manifest(request.avatar)
        except AvatarError as exc:
            raise RequestError("avatar", str(exc), "prepare it first (avatar prepare), or fix the name") from None


# ---- identity ------------------------------------------------------------------------------------------------------
def job_key(request: Request) -> str:
    """A digest of what the output depends on: the inputs (size and modification time), the options and the
    weights."""
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
    text = json.dumps({"kind": request.KIND, "inputs": inputs, "options": request.options(), "weights": weights},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# ---- the results file ----------------------------------------------------------------------------------------------
class Results:
    """The results JSONL: appended, one line per job per run, flushed and synced at once; the latest ``done`` line of
    an output is what a rerun compares with."""

    def __init__(self, path: str):
        self.path = path
        self.done: Dict[str, Dict] = {}
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
            if os.path.exists(request.out) and not self.overwrite:
                raise RequestError("out", f"{request.out} exists and was not made by this batch from these inputs, "
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
        out = request.out
        os.makedirs(os.path.dirname(out), exist_ok=True)
        staging = os.path.join(os.path.dirname(out), "." + os.path.basename(out) + STAGING_SUFFIX)
        _remove(staging)
        runtime = make_runtime(request, lambda stage, done, total: self._emit(
            "progress", i, job, {"stage": stage, "done": done, "total": total}), self.stop.is_set,
                               show_progress=self.show_progress)
        try:
            result = run(request.replace(out=staging), runtime, log=lambda _text: None)
            record.update(key=job_key(request),       # again: weights downloaded by this job are part of it now
                          report=result.as_dict(out), bytes=os.path.getsize(staging))
            self.results.append({**record, "state": DONE, "seconds": round(time.time() - t0, 3),
                                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
            self._place(staging, out)
        finally:
            _remove(staging)
        result.output = out
        return result

    def _place(self, staging: str, out: str) -> None:
        if self.overwrite:
            os.replace(staging, out)
            return
        try:
            os.link(staging, out)               # fails if a file appeared there meanwhile: it is never replaced
        except FileExistsError:
            raise RequestError("out", f"{out} appeared while the job ran; it was kept",
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


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
