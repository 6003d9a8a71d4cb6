"""One worker per device: takes the oldest queued job, builds its typed request (server/options.py) and runs it
(pipeline/jobs) with the models loaded once (pipeline/model_cache.py keeps them between jobs), reports progress,
honours cancel, and moves the result into place before marking the job done."""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import traceback
from typing import Dict, Set

from .jobs import Job, JobStore
from ..pipeline.jobs.run import explain
from .errors import without_paths
from .options import build_request, mask_path

log = logging.getLogger("musetalk_enhanced.server")
PROGRESS_EVERY_S = 0.25        # how often a running job's progress is written to the store


class JobCancelled(Exception):
    pass


class Worker(threading.Thread):
    """Runs jobs one at a time on ``device`` until :meth:`stop`."""

    def __init__(self, store: JobStore, device: str, wake: threading.Event, auto_download: bool):
        from ..pipeline.runtime import pick_device

        device = str(pick_device(device))          # 'auto' shown as what it is: cpu, cuda, cuda:1, mps
        super().__init__(name=f"job-worker-{device}", daemon=True)
        self.store, self.device, self.wake, self.auto_download = store, device, wake, auto_download
        self.cancel_requests: Set[str] = set()
        self.current: str = ""
        self.progress = {"stage": None, "done": 0, "total": 0}   # the running job's, unthrottled
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True
        if self.current:
            self.cancel_requests.add(self.current)
        self.wake.set()

    def run(self) -> None:
        while not self._stopping:
            job = self.store.claim(self.device)
            if job is None:
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            self.current = job.id
            try:
                self.run_job(job)
            finally:
                self.current = ""
                self.cancel_requests.discard(job.id)

    def run_job(self, job: Job) -> None:
        """Run ``job`` in its ``work/`` folder; the folder is gone before the job's final state is written."""
        work = self.store.folder(job.id, "work")
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        state, report, error = "done", None, None
        self.progress = {"stage": None, "done": 0, "total": 0}
        try:
            out = os.path.join(work, "result.mp4")
            report = self.execute(job, out)
            if os.path.isfile(mask_path(out)):
                os.replace(mask_path(out), self.store.mask_path(job.id))
            os.replace(out, self.store.result_path(job.id))
        except JobCancelled:
            state, error = "cancelled", "cancelled while running"
        except Exception as exc:   # any failure is this job's alone: the worker goes on with the next
            log.info("job %s failed: %s", job.id, traceback.format_exc(limit=4))
            state, error = "failed", without_paths(explain(exc))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if self.progress["stage"]:                       # the last progress, not only the last throttled write
            self.store.progress(job.id, self.progress["stage"], self.progress["done"], self.progress["total"],
                                self.progress.get("fraction"))
        asked = (self.store.get(job.id) or job).cancel_requested
        if state == "cancelled" and self._stopping and not asked:   # shutting down: it waits for the next start
            self.store.requeue(job.id, "re-queued: the server was stopped while this job ran", False)
        else:
            self.store.finish(job.id, state, report=report, error=error)

    def execute(self, job: Job, out: str) -> Dict:
        """Run the job into ``out``; returns the report as JSON."""
        from ..pipeline.jobs import make_runtime, run
        from ..pipeline.jobs.run import job_fraction
        from ..pipeline.runtime import Cancelled

        last = [0.0]

        def on_progress(stage: str, done: int, total: int) -> None:
            fraction = job_fraction(job.kind, stage, done, total)
            self.progress = {"stage": stage, "done": done, "total": total,
                             "fraction": self.progress.get("fraction") if fraction is None else fraction}
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S or done >= total or done == 0:     # a new stage shows at once
                last[0] = now
                self.store.progress(job.id, stage, done, total, fraction)

        request = build_request(job.kind, job.options, job.inputs, out).replace(
            device=self.device, auto_download=self.auto_download)
        runtime = make_runtime(request, on_progress, lambda: job.id in self.cancel_requests, show_progress=False)
        try:
            result = run(request, runtime)
        except (Cancelled, KeyboardInterrupt):
            raise JobCancelled() from None
        return result.as_dict(os.path.basename(self.store.result_path(job.id)))
