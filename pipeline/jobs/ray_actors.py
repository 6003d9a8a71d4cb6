"""Actors on a Ray cluster (:class:`RayActors`): each an :class:`.actor.JobActor` that loads its models once, fed by
one driver thread, so work goes to idle actors; a lost actor is replaced and its item sent again. A batch's jobs run
on them (pipeline/jobs/cluster.py :class:`~.cluster.RayBatchRun`), and so do one long video's shards
(:class:`RayShards`, for pipeline/jobs/shards.py).

* **Actors**: one per GPU of the cluster, or one per ``cpus_per_actor`` CPUs when it has none.
* **Lost actors**: an actor whose process dies (killed, out of memory, its node lost) takes its item down with it;
  the item goes to a new actor, at most ``max_retries`` times, then it fails with :class:`ActorLost`.
* **Files**: the actors read and write at the paths they are given, so every node must see the same folders (a
  shared file system: NFS, a mounted bucket); a sharded video's shards are written to its scratch folder beside the
  output.

A local instance (``address="local"``) starts Ray on this machine; ``"auto"`` joins the cluster this machine is
part of (``ray start``); any other value is a cluster address (``ray://head:10001``).
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Dict, Optional, Sequence

MAX_RETRIES = 2


class ActorLost(RuntimeError):
    """The actor running an item died more than the allowed number of times."""


class RayActors:
    """Actors of :class:`.actor.JobActor` and the driver threads that feed them (see the module docstring).

    ``on_dispatch(item, detail)`` sees every send (``detail["pid"]``: the actor's process, ``detail["attempt"]``);
    tests kill an actor there. ``log`` gets a line for every lost actor."""

    def __init__(self, address: str = "auto", actors: Optional[int] = None, cpus_per_actor: int = 2,
                 max_retries: int = MAX_RETRIES, log: Callable[[str], None] = print,
                 on_dispatch: Optional[Callable[[Any, Dict[str, Any]], None]] = None):
        self.address, self.actors, self.cpus_per_actor = address, actors, max(1, int(cpus_per_actor))
        self.max_retries, self.log, self.on_dispatch = int(max_retries), log, on_dispatch
        self._local = threading.local()

    def connect(self):
        import ray

        if not ray.is_initialized():
            if self.address == "local":
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=self.address, log_to_driver=False)
        self.ray = ray
        self.shape = self._shape(ray)
        return self.shape

    def _shape(self, ray) -> Dict[str, Any]:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus:
            return {"count": self.actors or gpus, "num_gpus": 1, "num_cpus": 1, "threads": self.cpus_per_actor}
        cpus = int(ray.cluster_resources().get("CPU", 1))
        per = max(1, min(self.cpus_per_actor, cpus))
        return {"count": self.actors or max(1, cpus // per), "num_gpus": 0, "num_cpus": per, "threads": per}

    def describe(self) -> str:
        return (f"ray: {self.shape['count']} actor(s), each {self.shape['num_gpus']} GPU / {self.shape['num_cpus']} "
                "CPU")

    def _new_actor(self):
        from . import actor as actor_module

        ray, shape = self.ray, self.shape
        ray.cloudpickle.register_pickle_by_value(actor_module)
        pack = __name__.rsplit(".pipeline.", 1)[0]
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        remote = ray.remote(num_cpus=shape["num_cpus"], num_gpus=shape["num_gpus"], max_restarts=0)(
            actor_module.JobActor)
        return remote.remote(pack, root, shape["threads"])

    def serve(self, work: Callable[[Any], None], items: Sequence[Any], stop: threading.Event) -> bool:
        """``work(item)`` for every item, on ``shape["count"]`` driver threads (each with its own actor, which
        :meth:`call` uses), until the items run out or ``stop`` is set; True when every item was taken."""
        todo: "queue.Queue" = queue.Queue()
        for item in items:
            todo.put(item)

        def thread() -> None:
            self._local.actor = None
            while not stop.is_set():
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                work(item)

        threads = [threading.Thread(target=thread, name=f"ray-actor-{n}") for n in range(self.shape["count"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return todo.empty()

    def call(self, item: Any, label: str, method: str, *args):
        """``method(*args)`` on this thread's actor; a lost actor is replaced and the call sent again, at most
        ``max_retries`` times, then :class:`ActorLost`. An error raised by the item itself is raised here, as on one
        machine."""
        ray, local = self.ray, self._local
        for attempt in range(self.max_retries + 1):
            if local.actor is None:
                local.actor = self._new_actor()
                local.pid = ray.get(local.actor.pid.remote())
            pending = getattr(local.actor, method).remote(*args)
            if self.on_dispatch is not None:
                self.on_dispatch(item, {"pid": local.pid, "attempt": attempt})
            try:
                return ray.get(pending)
            except ray.exceptions.RayActorError as exc:
                local.actor = None
                self.log(f"{label}: its actor was lost ({type(exc).__name__}); "
                         + ("sent to a new one" if attempt < self.max_retries else "giving up"))
            except ray.exceptions.RayTaskError as exc:     # the item's own failure: as on one machine
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, BaseException) else exc) from None
        raise ActorLost(f"the actor running it was lost {self.max_retries + 1} times (killed, out of memory or its "
                        "node lost); see the Ray logs, then run again to retry it")


class RayShards:
    """Makes a long video's shards (pipeline/jobs/shards.py) on Ray actors: what every shard shares (the faces, the
    voice's features, the plan's options) is put in the object store once, and each actor is sent only its range.
    A shard whose actor is lost goes to a new one (``max_retries``); the shards finished stay for a rerun."""

    def __init__(self, address: str = "auto", actors: Optional[int] = None, cpus_per_actor: int = 2,
                 max_retries: int = MAX_RETRIES, log: Callable[[str], None] = print,
                 on_dispatch: Optional[Callable[[Any, Dict[str, Any]], None]] = None):
        self.pool = RayActors(address, actors, cpus_per_actor, max_retries, log, on_dispatch)
        self.log = log

    def describe(self) -> str:
        return "ray" if self.pool.actors is None else f"{self.pool.actors} ray actor(s)"

    def make(self, shards: Sequence[Any], made: Callable[[int, Any], None]) -> None:
        """``made(index, (path, report))`` for each shard as it finishes; the first failure is raised once every
        thread has stopped."""
        if not shards:
            return
        self.pool.connect()
        self.log(self.pool.describe())
        template = self.pool.ray.put(shards[0])
        stop, errors, lock = threading.Event(), [], threading.Lock()

        def work(item) -> None:
            index, shard = item
            try:
                result = self.pool.call(shard, f"shard {shard.start}-{shard.stop}", "make_shard", template,
                                        shard.start, shard.stop)
            except BaseException as exc:  # noqa: BLE001 - raised below, after the other threads stop
                with lock:
                    errors.append(exc)
                stop.set()
                return
            made(index, result)

        self.pool.serve(work, list(enumerate(shards)), stop)
        if errors:
            raise errors[0]


__all__ = ["RayActors", "RayShards", "ActorLost", "MAX_RETRIES"]
