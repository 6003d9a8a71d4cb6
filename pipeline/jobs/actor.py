"""The Ray actor that runs a batch's jobs, or a long video's shards, on one device (pipeline/jobs/ray_actors.py).
Ray sends this class by value (``register_pickle_by_value``): a Ray worker cannot import the pack by its name until
the actor has registered it, so nothing here imports the pack at module level; the constructor runs
pipeline/jobs/boot.py first."""
import importlib
import os
import runpy


class JobActor:
    """Loads the models once (the pack's model cache lives as long as the actor) and runs one request at a time."""

    def __init__(self, pack: str, root: str, threads: int):
        runpy.run_path(os.path.join(root, "pipeline", "jobs", "boot.py"),
                       {"PACK_NAME": pack, "PACK_DIR": root, "THREADS": threads})
        self.jobs = importlib.import_module(pack + ".pipeline.jobs")
        self.shards = importlib.import_module(pack + ".pipeline.jobs.shards")

    def pid(self) -> int:
        return os.getpid()

    def run(self, request):
        """``request`` (its outputs already under their staging names) run here; returns its JobResult."""
        return self.jobs.run(request, log=lambda _text: None)

    def make_shard(self, template, start: int, stop: int):
        """The shard ``[start, stop)`` of the video ``template`` (a Shard holding what every shard shares) made
        here; returns ``(its patch store's path, its report)``."""
        import dataclasses

        return self.shards.make_shard(dataclasses.replace(template, start=start, stop=stop))
