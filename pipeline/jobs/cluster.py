"""A batch on Ray: the same jobs, checks, results file and placing of outputs as :class:`.batch.BatchRun`, with each
job's request run by a Ray actor (:class:`.actor.JobActor`) that loads its models once.

* **Actors**: one per GPU of the cluster, or one per ``cpus_per_actor`` CPUs when it has none. One driver thread
  per actor takes the next job from the list, so jobs go to idle actors; results are recorded by the driver into
  the batch's results file, in the order jobs finish.
* **Lost actors**: an actor whose process dies (killed, out of memory, its node lost) takes its job down with it;
  the job goes to a new actor, at most ``max_retries`` times, then it is recorded as failed with the reason.
* **Files**: inputs are read and outputs written by the actors at the paths of the job list, so every node must
  see the same folders (a shared file system: NFS, a mounted bucket); each output is written under its staging
  name and placed by the driver after its line is recorded, as on one machine.

A local instance (``address="local"``) starts Ray on this machine; ``"auto"`` joins the cluster this machine is
part of (``ray start``); any other value is a cluster address (``ray://head:10001``).
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Any, Dict, Optional

from .batch import DONE, FAILED, SKIPPED, CANCELLED, BatchRun, BatchSummary, _bar

MAX_RETRIES = 2


class ActorLost(RuntimeError):
    """The actor running a job died more than the allowed number of times."""


class RayBatchRun(BatchRun):
    """:class:`.batch.BatchRun` on Ray actors (see the module docstring). ``actors``: how many (default: the GPUs,
    else the CPUs over ``cpus_per_actor``); hooks also see ``dispatched`` (the job is on an actor, ``detail["pid"]``
    its process) - tests kill an actor there."""

    def __init__(self, *args, address: str = "auto", actors: Optional[int] = None, cpus_per_actor: int = 2,
                 max_retries: int = MAX_RETRIES, **kwargs):
        super().__init__(*args, **kwargs)
        self.address, self.actors, self.cpus_per_actor = address, actors, max(1, int(cpus_per_actor))
        self.max_retries = int(max_retries)
        self._local = threading.local()
        self._count_lock = threading.Lock()

    # -- the cluster ----------------------------------------------------------------------------------------------
    def _connect(self):
        import ray

        if not ray.is_initialized():
            if self.address == "local":
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=self.address, log_to_driver=False)
        return ray

    def _actor_shape(self, ray) -> Dict[str, Any]:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus:
            return {"count": self.actors or gpus, "num_gpus": 1, "num_cpus": 1, "threads": self.cpus_per_actor}
        cpus = int(ray.cluster_resources().get("CPU", 1))
        per = max(1, min(self.cpus_per_actor, cpus))
        return {"count": self.actors or max(1, cpus // per), "num_gpus": 0, "num_cpus": per, "threads": per}

    def _new_actor(self, ray, shape):
        from . import actor as actor_module

        ray.cloudpickle.register_pickle_by_value(actor_module)
        pack = __name__.rsplit(".pipeline.", 1)[0]
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        remote = ray.remote(num_cpus=shape["num_cpus"], num_gpus=shape["num_gpus"], max_restarts=0)(
            actor_module.JobActor)
        return remote.remote(pack, root, shape["threads"])

    # -- running --------------------------------------------------------------------------------------------------
    def run(self) -> BatchSummary:
        import time

        ray = self._connect()
        shape = self._actor_shape(ray)
        self.log(f"ray: {shape['count']} actor(s), each {shape['num_gpus']} GPU / {shape['num_cpus']} CPU")
        summary, started = BatchSummary(), time.time()
        todo: "queue.Queue" = queue.Queue()
        for item in enumerate(self.jobs):
            todo.put(item)
        bar = _bar(len(self.jobs), self.show_progress)

        def serve() -> None:
            self._local.ray, self._local.shape, self._local.actor = ray, shape, None
            while not self.stop.is_set():
                try:
                    i, job = todo.get_nowait()
                except queue.Empty:
                    return
                state = self.run_one(i, job)
                with self._count_lock:
                    summary.counts[state] += 1
                    if bar is not None:
                        bar.update(1)
                if state == CANCELLED:
                    self.stop.set()

        threads = [threading.Thread(target=serve, name=f"ray-actor-{n}") for n in range(shape["count"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if bar is not None:
            bar.close()
        summary.stopped = self.stop.is_set() or not todo.empty()
        summary.seconds = time.time() - started
        return summary

    def run_request(self, i, job, staged):
        """The request on this thread's actor; a lost actor is replaced and the job sent again."""
        ray, local = self._local.ray, self._local
        for attempt in range(self.max_retries + 1):
            if local.actor is None:
                local.actor = self._new_actor(ray, local.shape)
                local.pid = ray.get(local.actor.pid.remote())
            pending = local.actor.run.remote(staged)
            self._emit("dispatched", i, job, {"pid": local.pid, "attempt": attempt})
            try:
                return ray.get(pending)
            except ray.exceptions.RayActorError as exc:
                local.actor = None
                self.log(f"[{i + 1}/{len(self.jobs)}] {job.label}: its actor was lost ({type(exc).__name__}); "
                         + ("sent to a new one" if attempt < self.max_retries else "giving up"))
            except ray.exceptions.RayTaskError as exc:     # the job's own failure: as on one machine
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, BaseException) else exc) from None
        raise ActorLost(f"the actor running it was lost {self.max_retries + 1} times (killed, out of memory or its "
                        "node lost); see the Ray logs, then run the batch again to retry it")


__all__ = ["RayBatchRun", "ActorLost", "MAX_RETRIES", "DONE", "FAILED", "SKIPPED"]
