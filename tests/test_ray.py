"""Ray (pipeline/jobs/cluster.py): a local Ray instance on this machine only
(``ray.init(num_cpus=2, include_dashboard=False)``), started once for the module, two actors. The same 6-job folder
as tests/test_batch.py gives the same outputs and results as the local runner; an actor killed mid-job (through a
hook, not by timing) costs a retry, not the job. The 3-shot clip of tests/test_shards.py made in shards on the
actors equals the unsharded run frame for frame, and a run that lost an actor for good resumes with only the
unfinished shard. Skipped when the ray extra is not installed."""
import os
import shutil
import signal

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from test_batch import COMMON, FACE_OPTIONS, folder, records  # noqa: E402,F401 (fixture)
from test_lipsync import features_for, voice  # noqa: E402,F401 (fixture)
from test_shards import faces, models, video, whole_run  # noqa: E402,F401 (fixture)
from test_cli import inputs, run_cli  # noqa: E402,F401 (fixture)


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


def unsharded_frames(video, faces, feats):
    import torch

    from musetalk_enhanced.pipeline.lipsync.sinks import ImageSink
    from musetalk_enhanced.pipeline.media.frames import image_to_uint8
    from musetalk_enhanced.pipeline.runtime import Runtime

    run = whole_run(video, faces, feats)
    sink = ImageSink(run.plan.num_frames, run.frames.height, run.frames.width)
    run.into(sink, Runtime("cpu", torch.float32, show_progress=False))
    return image_to_uint8(sink.close())


def test_shards_on_two_actors_equal_the_unsharded_run_and_resume(video, faces, voice, models, cluster, tmp_path):
    """The 3-shot clip (a cutaway shot in the middle) in shards on Ray: an actor lost for good on the last shard
    fails the run and keeps the two finished shards; the rerun sends only the last one, and the joined frames equal
    the unsharded run's at batch size 1."""
    from musetalk_enhanced.pipeline.jobs import shards as sh
    from musetalk_enhanced.pipeline.jobs.ray_actors import ActorLost, RayShards

    feats = features_for(voice)
    expected = unsharded_frames(video, faces, feats)
    scratch = str(tmp_path / ".out.mp4.shards")
    sent, lines = [], []

    def kill_the_last_shard(shard, detail):
        sent.append((shard.start, shard.stop))
        if shard.start == 15:
            os.kill(detail["pid"], signal.SIGKILL)

    maker = RayShards("auto", actors=2, cpus_per_actor=1, max_retries=1, log=lines.append,
                      on_dispatch=kill_the_last_shard)
    with pytest.raises(ActorLost, match="lost 2 times"):
        sh.sharded_lipsync(whole_run(video, faces, feats), video, 0.0, "cpu", "fp32", 0.1, maker, scratch, "run-1")
    assert sorted(set(sent)) == [(0, 9), (9, 15), (15, 24)] and sent.count((15, 24)) == 2
    assert sum("its actor was lost" in line for line in lines) == 2
    assert sorted(f for f in os.listdir(scratch) if f.endswith(".json")) == \
        ["shard_00000000_00000009.patches.json", "shard_00000009_00000015.patches.json"]

    sent.clear()
    maker = RayShards("auto", actors=2, cpus_per_actor=1, log=lines.append,
                      on_dispatch=lambda shard, detail: sent.append((shard.start, shard.stop)))
    frames, report, _ = sh.sharded_lipsync(whole_run(video, faces, feats), video, 0.0, "cpu", "fp32", 0.1, maker,
                                           scratch, "run-1")
    try:
        assert sent == [(15, 24)]                                        # only the unfinished shard
        assert np.array_equal(frames.read(list(range(len(frames)))), expected)
        text = report.text()
        assert "made in 3 shards at shot cuts (2 ray actor(s))" in text
        assert "2 finished by an earlier run, reused" in text
        assert sorted(report.passed_through) == list(range(9, 15)) and report.num_frames == 24
    finally:
        frames.patches.close()


def test_dub_shard_ray_through_the_cli(inputs, cluster, small_models_dir, monkeypatch, tmp_path):
    """``--shard shots --shard-ray auto --workers 2``: the same video as the unsharded dub, the report says where
    the shards were made; a shard_ray without --shard is refused naming the fix."""
    import json

    from musetalk_enhanced.pipeline.media.video import VideoFileFrames

    _, video, voice = inputs
    common = ["--video", video, "--audio", voice, "--batch-size", "1", "--blend-mode", "feather",
              "--length-policy", "follow_video"]
    whole, sharded, report = (str(tmp_path / n) for n in ("whole.mp4", "sharded.mp4", "r.json"))
    assert run_cli(common + ["--out", whole], monkeypatch, small_models_dir) == 0
    assert run_cli(common + ["--out", sharded, "--shard", "shots", "--shard-seconds", "0.1", "--shard-ray", "auto",
                             "--workers", "2", "--report-json", report], monkeypatch, small_models_dir) == 0
    a, b = VideoFileFrames(whole), VideoFileFrames(sharded)
    assert len(a) == len(b) == 16 and np.array_equal(a.read(list(range(16))), b.read(list(range(16))))
    assert any("made in 3 shards at shot cuts (2 ray actor(s))" in n for n in json.load(open(report))["notes"])
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".shards")]
    assert run_cli(common + ["--out", str(tmp_path / "x.mp4"), "--shard-ray", "auto"], monkeypatch,
                   small_models_dir) == 2
