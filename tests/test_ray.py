"""The batch on Ray (pipeline/jobs/cluster.py): a local Ray instance on this machine only
(``ray.init(num_cpus=2, include_dashboard=False)``), started once for the module, two actors. The same 6-job folder
as tests/test_batch.py gives the same outputs and results as the local runner; an actor killed mid-job (through a
hook, not by timing) costs a retry, not the job. Skipped when the ray extra is not installed."""
import os
import shutil
import signal

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from test_batch import COMMON, FACE_OPTIONS, folder, records  # noqa: E402,F401 (fixture)


@pytest.fixture(scope="module")
def cluster(small_models_dir):
    """Ray on this machine; its workers see the small test weights (the environment at ray.init)."""
    os.environ["MUSETALK_MODELS_DIR"] = small_models_dir
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()
    os.environ.pop("MUSETALK_MODELS_DIR", None)


def run_batch(source, out_dir, runner, hooks=(), **kw):
    from musetalk_enhanced.models import registry
    from musetalk_enhanced.pipeline.jobs.joblist import read_jobs

    registry.set_folder_resolver(None)
    options = {"min_face_size": 30, "blend_mode": "feather"}
    jobs = read_jobs(str(source), str(out_dir), options, {"auto_download": False})
    lines = []
    summary = runner(jobs, str(out_dir / "batch_results.jsonl"), show_progress=False, log=lines.append,
                     hooks=list(hooks), **kw).run()
    return summary, lines, records(out_dir / "batch_results.jsonl")


def frames_of(path):
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames

    v = VideoFileFrames(str(path))
    return v.read(list(range(len(v))))


@pytest.fixture(scope="module")
def local_run(folder, small_models_dir, tmp_path_factory):
    from musetalk_enhanced.pipeline.jobs.batch import BatchRun

    import torch

    os.environ["MUSETALK_MODELS_DIR"] = small_models_dir
    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)             # as each actor below (cpus_per_actor=1): the same float reductions
    try:
        return out, run_batch(folder, out, BatchRun)
    finally:
        torch.set_num_threads(threads)


def by_job(lines):
    return {r["job"]: r for r in lines}


def test_a_folder_on_two_actors_equals_the_local_runner(folder, cluster, local_run, tmp_path):
    from musetalk_enhanced.pipeline.jobs.cluster import RayBatchRun

    local_out, (local_summary, _, local_records) = local_run
    summary, lines, ray_records = run_batch(folder, tmp_path, RayBatchRun, address="auto", actors=2,
                                            cpus_per_actor=1)
    assert summary.counts == local_summary.counts == {"done": 5, "skipped": 0, "failed": 1, "cancelled": 0}
    assert "ray: 2 actor(s)" in lines[0]
    mine, theirs = by_job(ray_records), by_job(local_records)
    assert set(mine) == set(theirs)
    for job, rec in mine.items():
        assert rec["state"] == theirs[job]["state"]
        if rec["state"] == "done":
            assert rec["key"] == theirs[job]["key"]
            assert {k: rec["report"][k] for k in ("frames", "synced", "passed_through")} == \
                {k: theirs[job]["report"][k] for k in ("frames", "synced", "passed_through")}
            name = os.path.basename(rec["output"])
            assert np.array_equal(frames_of(tmp_path / name), frames_of(local_out / name))
        else:
            assert rec["error"] == theirs[job]["error"]
    # a rerun on Ray skips every finished job
    again, _, _ = run_batch(folder, tmp_path, RayBatchRun, address="auto", actors=2, cpus_per_actor=1)
    assert again.counts["skipped"] == 5 and again.counts["done"] == 0


def test_a_killed_actor_costs_a_retry_not_the_job(folder, cluster, tmp_path):
    from musetalk_enhanced.pipeline.jobs.cluster import RayBatchRun

    source = tmp_path / "two"
    source.mkdir()
    for name in ("clip0", "clip2"):
        for ext in (".mp4", ".wav"):
            shutil.copy(folder / (name + ext), source / (name + ext))
    killed = []

    def kill_first_dispatch(event, i, job, detail):
        if event == "dispatched" and job.label.startswith("clip2") and not killed:
            killed.append(detail["pid"])
            os.kill(detail["pid"], signal.SIGKILL)

    summary, lines, recs = run_batch(source, tmp_path / "out", RayBatchRun, hooks=[kill_first_dispatch],
                                     address="auto", actors=1, cpus_per_actor=1)
    assert killed and summary.counts["done"] == 2 and summary.counts["failed"] == 0, lines
    assert any("its actor was lost" in line and "sent to a new one" in line for line in lines)
    assert [r["state"] for r in recs] == ["done", "done"]
    assert not [p for p in os.listdir(tmp_path / "out") if "staging" in p]
    # an actor lost every time: the job fails with the reason, the batch goes on
    always = lambda event, i, job, detail: event == "dispatched" and os.kill(detail["pid"], signal.SIGKILL)  # noqa
    summary, lines, recs = run_batch(source, tmp_path / "out2", RayBatchRun, hooks=[always], address="auto",
                                     actors=1, cpus_per_actor=1, max_retries=1)
    assert summary.counts["failed"] == 2 and "lost 2 times" in recs[-1]["error"]
