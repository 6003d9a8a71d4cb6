"""A batch on Ray (:class:`RayBatchRun`): the same jobs, checks, results file and placing of outputs as
:class:`.batch.BatchRun`, each job's request run by an actor of pipeline/jobs/ray_actors.py (one per GPU, or per
``cpus_per_actor`` CPUs; a lost actor's job goes to a new one, at most ``max_retries`` times, then it is recorded as
failed with the reason). Results are recorded by the driver into the batch's results file, in the order jobs finish.
Inputs are read and outputs written by the actors at the paths of the job list, so every node must see the same
folders; each output is written under its staging name and placed by the driver after its line is recorded, as on
one machine.
"""
from __future__ import annotations

import threading
from typing import Optional

from .batch import DONE, FAILED, SKIPPED, CANCELLED, BatchRun, BatchSummary, _bar
from .ray_actors import MAX_RETRIES, ActorLost, RayActors


class RayBatchRun(BatchRun):
    """:class:`.batch.BatchRun` on Ray actors. ``actors``: how many (default: the GPUs, else the CPUs over
    ``cpus_per_actor``); hooks also see ``dispatched`` (the job is on an actor, ``detail["pid"]`` its process) - tests
    kill an actor there. A sharded job makes its shards on the actor that runs it (its ``shard_ray`` is not used)."""

    def __init__(self, *args, address: str = "auto", actors: Optional[int] = None, cpus_per_actor: int = 2,
                 max_retries: int = MAX_RETRIES, **kwargs):
        super().__init__(*args, **kwargs)
        self.pool = RayActors(address, actors, cpus_per_actor, max_retries, self.log,
                              lambda item, detail: self._emit("dispatched", item[0], item[1], detail))
        self._count_lock = threading.Lock()

    def run(self) -> BatchSummary:
        import time

        self.pool.connect()
        self.log(self.pool.describe())
        summary, started = BatchSummary(), time.time()
        bar = _bar(len(self.jobs), self.show_progress)

        def work(item) -> None:
            i, job = item
            state = self.run_one(i, job)
            with self._count_lock:
                summary.counts[state] += 1
                if bar is not None:
                    bar.update(1)
            if state == CANCELLED:
                self.stop.set()

        taken = self.pool.serve(work, list(enumerate(self.jobs)), self.stop)
        if bar is not None:
            bar.close()
        summary.stopped = self.stop.is_set() or not taken
        summary.seconds = time.time() - started
        return summary

    def run_request(self, i, job, staged):
        """The request on this thread's actor (a lost actor is replaced and the job sent again)."""
        if getattr(staged, "shard_ray", None):
            staged = staged.replace(shard_ray=None)
        return self.pool.call((i, job), f"[{i + 1}/{len(self.jobs)}] {job.label}", "run", staged)


__all__ = ["RayBatchRun", "ActorLost", "MAX_RETRIES", "DONE", "FAILED", "SKIPPED"]
