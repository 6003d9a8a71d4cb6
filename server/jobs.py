"""The job store: one SQLite file (the schema lives here), jobs' folders, and what a restart does to them.

A job is ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``. Its folder (``<data>/jobs/<id>/``)
holds ``inputs/`` (uploads), ``work/`` (the output being written) and, once done, ``result.mp4``. A result is moved
into place before the job is marked done, so a job is never ``done`` with a half-written file; when a job ends its
uploads are removed (unless the store keeps inputs; files in the media folder are never the store's). A cancel of a
running job is written down at once (``cancelling``), so a restart ends it as ``cancelled`` instead of running it
again. On opening, other jobs a stopped server left ``running`` are re-queued with their partial output removed, or
failed with the reason after :data:`.config.MAX_ATTEMPTS` interruptions.

Schema versions: 1 (first release), 2 (``fraction``: the job's share of its progress bar; ``cancel_requested``).
A version-1 database is migrated when it is opened.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional

from .config import MAX_ATTEMPTS

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,            -- 'dub' (video + voice) or 'avatar' (a prepared avatar + voice)
    state      TEXT NOT NULL,            -- queued | running | done | failed | cancelled
    created    REAL NOT NULL,
    started    REAL,
    finished   REAL,
    inputs     TEXT NOT NULL,            -- JSON: {"video": path, "audio": path, "avatar": name}
    options    TEXT NOT NULL,            -- JSON: the request's options, checked at submission
    device     TEXT,                     -- the worker's device while running / when finished
    stage      TEXT,                     -- the pipeline stage being run ('faces', 'lip-sync', ...)
    done       INTEGER NOT NULL DEFAULT 0,
    total      INTEGER NOT NULL DEFAULT 0,
    report     TEXT,                     -- JSON: the lip-sync report, once done
    error      TEXT,                     -- why it failed / was re-queued
    attempts   INTEGER NOT NULL DEFAULT 0,
    fraction   REAL NOT NULL DEFAULT 0,  -- v2: how much of the whole job is done (0..1), stages weighted
    cancel_requested REAL                -- v2: when a cancel of the running job was asked (it ends 'cancelled')
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created);
"""
MIGRATIONS = {2: ("ALTER TABLE jobs ADD COLUMN fraction REAL NOT NULL DEFAULT 0",
                  "ALTER TABLE jobs ADD COLUMN cancel_requested REAL")}   # to version N from N-1
STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
COLUMNS = ("id", "kind", "state", "created", "started", "finished", "inputs", "options", "device", "stage", "done",
           "total", "report", "error", "attempts", "fraction", "cancel_requested")


@dataclass
class Job:
    id: str
    kind: str
    state: str
    created: float
    started: Optional[float]
    finished: Optional[float]
    inputs: Dict
    options: Dict
    device: Optional[str]
    stage: Optional[str]
    done: int
    total: int
    report: Optional[Dict]
    error: Optional[str]
    attempts: int
    fraction: float = 0.0
    cancel_requested: Optional[float] = None

    @property
    def shown_state(self) -> str:
        """The state a client sees: a running job whose cancel was asked is ``cancelling``."""
        return "cancelling" if self.state == "running" and self.cancel_requested else self.state

    def public(self) -> Dict:
        """What ``GET /v1/jobs/{id}`` shows (server paths of uploads stay private)."""
        return {"id": self.id, "kind": self.kind, "state": self.shown_state, "created": self.created,
                "started": self.started, "finished": self.finished, "device": self.device,
                "progress": {"stage": self.stage, "done": self.done, "total": self.total,
                             "fraction": round(1.0 if self.state == "done" else self.fraction, 4)},
                "inputs": {k: os.path.basename(v) if k != "avatar" else v for k, v in self.inputs.items()},
                "options": self.options, "report": self.report, "error": self.error, "attempts": self.attempts,
                "result": f"/v1/jobs/{self.id}/result" if self.state == "done" else None}


class JobStore:
    """Thread-safe access to the jobs table and the jobs' folders."""

    def __init__(self, db_path: str, jobs_dir: str, keep_inputs: bool = False):
        os.makedirs(jobs_dir, exist_ok=True)
        self.jobs_dir, self.keep_inputs = jobs_dir, keep_inputs
        self._lock = threading.Lock()
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._open_schema()

    def _open_schema(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"the job database was written by a newer server (schema {version}, this one reads "
                               f"up to {SCHEMA_VERSION}); update the pack or start with another --data-dir.")
        has_jobs = self._db.execute("SELECT name FROM sqlite_master WHERE name='jobs'").fetchone()
        if has_jobs and version >= 1:
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {step}")
        self._db.executescript(SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- folders -----------------------------------------------------------------------------------------------------
    def folder(self, job_id: str, *parts: str) -> str:
        return os.path.join(self.jobs_dir, job_id, *parts)

    def result_path(self, job_id: str) -> str:
        return self.folder(job_id, "result.mp4")

    def mask_path(self, job_id: str) -> str:
        """The mask of the changed pixels, for a dub submitted with ``{"mask": true}`` (server/options.py)."""
        return self.folder(job_id, "result.mask.mp4")

    def new_folder(self) -> str:
        job_id = uuid.uuid4().hex
        os.makedirs(self.folder(job_id, "inputs"))
        return job_id

    # -- rows --------------------------------------------------------------------------------------------------------
    def create(self, job_id: str, kind: str, inputs: Dict, options: Dict) -> Job:
        with self._lock:
            self._db.execute("INSERT INTO jobs (id, kind, state, created, inputs, options) VALUES (?,?,?,?,?,?)",
                             (job_id, kind, "queued", time.time(), json.dumps(inputs), json.dumps(options)))
        return self.get(job_id)

    def get(self, job_id: str) -> Optional[Job]:
        with self._lock:
            row = self._db.execute(f"SELECT {','.join(COLUMNS)} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list(self, state: Optional[str] = None, limit: int = 100) -> List[Job]:
        sql, args = f"SELECT {','.join(COLUMNS)} FROM jobs", ()
        if state:
            sql, args = sql + " WHERE state=?", (state,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created DESC LIMIT ?", (*args, limit)).fetchall()
        return [_job(r) for r in rows]

    def count(self, state: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE state=?", (state,)).fetchone()[0]

    def claim(self, device: str) -> Optional[Job]:
        """The oldest queued job, now running on ``device`` (None when the queue is empty)."""
        with self._lock:
            row = self._db.execute("SELECT id FROM jobs WHERE state='queued' ORDER BY created, rowid "
                                   "LIMIT 1").fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE jobs SET state='running', started=?, device=?, attempts=attempts+1, stage=NULL,"
                             " done=0, total=0, fraction=0 WHERE id=? AND state='queued'",
                             (time.time(), device, row[0]))
        return self.get(row[0])

    def progress(self, job_id: str, stage: str, done: int, total: int, fraction: Optional[float] = None) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET stage=?, done=?, total=?, fraction=COALESCE(?, fraction) WHERE id=? "
                             "AND state='running'", (stage, done, total, fraction, job_id))

    def finish(self, job_id: str, state: str, report: Optional[Dict] = None, error: Optional[str] = None) -> None:
        """The job's end; its uploads go with it unless the store keeps inputs."""
        assert state in FINISHED
        with self._lock:
            self._db.execute("UPDATE jobs SET state=?, finished=?, report=?, error=? WHERE id=?",
                             (state, time.time(), json.dumps(report) if report is not None else None, error, job_id))
        self._drop_inputs(job_id)

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job that has not started; False when it is no longer queued."""
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET state='cancelled', finished=?, error=? WHERE id=? AND "
                                   "state='queued'", (time.time(), "cancelled before it started", job_id))
        if cur.rowcount == 1:
            self._drop_inputs(job_id)
        return cur.rowcount == 1

    def request_cancel(self, job_id: str) -> bool:
        """Write down that the running job is to stop (it ends ``cancelled``, also across a restart); False when it
        is not running."""
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET cancel_requested=COALESCE(cancel_requested, ?) WHERE id=? AND "
                                   "state='running'", (time.time(), job_id))
        return cur.rowcount == 1

    def _drop_inputs(self, job_id: str) -> None:
        if not self.keep_inputs:
            shutil.rmtree(self.folder(job_id, "inputs"), ignore_errors=True)

    def requeue(self, job_id: str, reason: str, count_attempt: bool = True) -> None:
        """Back to the queue (its partial output is the caller's to remove)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET state='queued', stage=NULL, done=0, total=0, fraction=0, error=?, "
                             "attempts=attempts-? WHERE id=?", (reason, 0 if count_attempt else 1, job_id))

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    # -- after a restart ---------------------------------------------------------------------------------------------
    def recover(self) -> List[str]:
        """Make every record consistent with the files after a stop (even SIGKILL); returns what was done."""
        notes = []
        for job in self.list("running", limit=1_000_000):
            shutil.rmtree(self.folder(job.id, "work"), ignore_errors=True)
            _remove(self.result_path(job.id))
            if job.cancel_requested:
                self.finish(job.id, "cancelled", error="cancelled while running (the server stopped before it ended)")
                notes.append(f"job {job.id}: cancelled (its cancel was asked before the server stopped)")
            elif job.attempts >= MAX_ATTEMPTS:
                self.finish(job.id, "failed", error=f"the server stopped during this job {job.attempts} times; "
                                                    "submit it again (with a smaller batch_size if memory ran out)")
                notes.append(f"job {job.id}: failed after {job.attempts} interrupted attempts")
            else:
                self.requeue(job.id, "re-queued: the server stopped while this job ran")
                notes.append(f"job {job.id}: re-queued (the server stopped while it ran)")
        for job in self.list("done", limit=1_000_000):
            if not os.path.isfile(self.result_path(job.id)):
                self.finish(job.id, "failed", report=job.report, error="the result file is missing; submit again")
                notes.append(f"job {job.id}: result missing, marked failed")
        for job in self.list(limit=1_000_000):
            if job.state != "done":
                _remove(self.result_path(job.id))
        return notes


    def prune(self, keep_days: float) -> List[str]:
        """Delete finished jobs older than ``keep_days`` with their files (0: keep everything)."""
        if keep_days <= 0:
            return []
        cutoff = time.time() - keep_days * 86400
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE state IN ('done','failed','cancelled') AND "
                                    "finished < ?", (cutoff,)).fetchall()
        for (job_id,) in rows:
            self.delete(job_id)
        return [f"job {job_id}: finished more than {keep_days:g} days ago, removed" for (job_id,) in rows]


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


def _job(row) -> Job:
    d = dict(zip(COLUMNS, row))
    for k in ("inputs", "options", "report"):
        d[k] = json.loads(d[k]) if d[k] else ({} if k != "report" else None)
    return Job(**d)
