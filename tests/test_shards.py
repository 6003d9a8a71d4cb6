"""A long video lip-synced in shards at its shot cuts (pipeline/jobs/shards.py): the joined frames equal the
unsharded run's, bit for bit at batch size 1, in this process and in spawned worker processes; a shard of cutaways
loads no model; the reports add up. Real media (the astronaut in two shots around a rocket cutaway, espeak-ng
speech), small random MuseTalk weights read from a models folder as a user's run reads them."""
import os

import numpy as np
import pytest
import torch

import mediakit as mk
from test_lipsync import FPS, features_for, voice  # noqa: F401 (fixture)
from musetalk_enhanced.pipeline.backends.selection import MUSETALK, BackendSpec
from musetalk_enhanced.pipeline.jobs import shards as sh
from musetalk_enhanced.pipeline.lipsync import LipSyncRun
from musetalk_enhanced.pipeline.lipsync.sinks import ImageSink
from musetalk_enhanced.pipeline.media.frames import image_to_uint8
from musetalk_enhanced.pipeline.media.video import VideoFileFrames
from musetalk_enhanced.pipeline.runtime import Runtime

PLAN = (("astronaut", 9), ("rocket", 6), ("astronaut", 9))      # 3 shots; the middle one a cutaway


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return mk.write_video(str(tmp_path_factory.mktemp("shards") / "three_shots.mp4"),
                          mk.edited_clip((256, 256), PLAN), FPS, crf=16)


@pytest.fixture(scope="module")
def faces(video):
    from musetalk_enhanced.pipeline.faces.detectors import create_detector
    from musetalk_enhanced.pipeline.faces.tracks import analyze_faces

    runtime = Runtime("cpu", torch.float32, show_progress=False)
    return analyze_faces(VideoFileFrames(video), create_detector("mtcnn", runtime), runtime, min_face_size=30)


@pytest.fixture
def models(small_models_dir, monkeypatch):
    from musetalk_enhanced.models import registry
    from musetalk_enhanced.pipeline.backends import musetalk_engine

    registry.set_folder_resolver(None)
    musetalk_engine.clear_cache()
    monkeypatch.setenv("MUSETALK_MODELS_DIR", small_models_dir)
    return small_models_dir


def whole_run(video, faces, feats):
    return LipSyncRun(VideoFileFrames(video), faces, feats, BackendSpec(choice=MUSETALK, dtype="fp32",
                                                                        auto_download=False),
                      length_policy="follow_video", batch_size=1, blend_mode="feather")


def test_shard_ranges_cut_at_shots_and_merge_short_ones(faces):
    source = np.arange(len(faces))
    assert faces.shot_starts == [0, 9, 15]
    assert sh.shard_ranges(source, faces, FPS, 0.1) == [(0, 9), (9, 15), (15, 24)]
    assert sh.shard_ranges(source, faces, FPS, 0.3) == [(0, 9), (9, 24)]       # the 6-frame shot joins the next
    assert sh.shard_ranges(source, faces, FPS, 100) == [(0, 24)]
    assert sh.shard_ranges(np.array([0, 1, 2, 9, 10, 20, 21]), faces, FPS, 0.01) == [(0, 3), (3, 5), (5, 7)]


@pytest.mark.parametrize("workers", [1, 2])
def test_sharded_frames_equal_the_unsharded_run(video, faces, voice, models, tmp_path, workers):
    feats = features_for(voice)
    run = whole_run(video, faces, feats)
    sink = ImageSink(run.plan.num_frames, run.frames.height, run.frames.width)
    whole = run.into(sink, Runtime("cpu", torch.float32, show_progress=False))
    expected = image_to_uint8(sink.close())
    frames, report, scratch = sh.sharded_lipsync(whole_run(video, faces, feats), video, 0.0, "cpu", "fp32", 0.1,
                                                 sh.LocalWorkers(workers), str(tmp_path))
    try:
        got = frames.read(list(range(len(frames))))
        assert got.shape == expected.shape and np.array_equal(got, expected)
        assert report.num_frames == whole.num_frames == 24
        assert sorted(report.synced[MUSETALK]) == sorted(whole.synced[MUSETALK])
        assert sorted(report.passed_through) == sorted(whole.passed_through) == list(range(9, 15))
        text = report.text()
        assert "made in 3 shards at shot cuts" in text
        assert "frames 9-14: no face, no model loaded" in text          # the cutaway shard
        assert len(os.listdir(scratch)) == 2 * 3                         # each shard: its patches + their index
    finally:
        frames.patches.close()
    assert os.listdir(scratch) == []


def test_an_interrupted_sharded_run_redoes_only_the_unfinished_shards(video, faces, voice, models, tmp_path,
                                                                      monkeypatch):
    feats = features_for(voice)
    scratch = str(tmp_path / ".out.mp4.shards")
    made = []
    real = sh.make_shard

    def failing_on_the_last(shard):
        made.append((shard.start, shard.stop))
        if shard.start == 15 and len(made) <= 3:
            raise KeyboardInterrupt("stopped")
        return real(shard)

    monkeypatch.setattr(sh, "make_shard", failing_on_the_last)
    with pytest.raises(KeyboardInterrupt):
        sh.sharded_lipsync(whole_run(video, faces, feats), video, 0.0, "cpu", "fp32", 0.1, None, scratch, "run-1")
    assert made == [(0, 9), (9, 15), (15, 24)]
    assert sorted(f for f in os.listdir(scratch) if f.endswith(".json")) == \
        ["shard_00000000_00000009.patches.json", "shard_00000009_00000015.patches.json"]
    frames, report, _ = sh.sharded_lipsync(whole_run(video, faces, feats), video, 0.0, "cpu", "fp32", 0.1, None,
                                           scratch, "run-1")
    try:
        assert made[3:] == [(15, 24)]                                    # only the unfinished shard
        assert "2 finished by an earlier run, reused" in report.text()
        assert sorted(report.passed_through) == list(range(9, 15)) and report.num_frames == 24
        run = whole_run(video, faces, feats)
        sink = ImageSink(run.plan.num_frames, run.frames.height, run.frames.width)
        run.into(sink, Runtime("cpu", torch.float32, show_progress=False))
        assert np.array_equal(frames.read(list(range(24))), image_to_uint8(sink.close()))
    finally:
        frames.patches.close()
    # another identity (other inputs, options or weights) never reuses them
    frames, report, _ = sh.sharded_lipsync(whole_run(video, faces, feats), video, 0.0, "cpu", "fp32", 0.1, None,
                                           scratch, "run-2")
    frames.patches.close()
    assert made[4:] == [(0, 9), (9, 15), (15, 24)] and "reused" not in report.text()


def test_each_local_worker_sees_its_own_gpu():
    """On a machine with several GPUs each worker process takes one (CUDA_VISIBLE_DEVICES, set by
    pipeline/jobs/boot.py before torch touches CUDA); a CPU or a GPU named by number is shared."""
    assert sh.worker_gpus("cuda", 4, visible=["0", "1"]) == ["0", "1", "0", "1"]
    assert sh.worker_gpus("auto", 2, visible=["2", "5", "7"]) == ["2", "5"]
    assert sh.worker_gpus("cuda:1", 2, visible=["0", "1"]) == []
    assert sh.worker_gpus("cpu", 2, visible=["0", "1"]) == []
    assert sh.worker_gpus("cuda", 2, visible=["0"]) == []
    import multiprocessing
    import runpy
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    gpus = context.Queue()
    for gpu in ("3", "4"):
        gpus.put(gpu)
    boot = os.path.join(os.path.dirname(sh.__file__), "boot.py")
    with ProcessPoolExecutor(2, mp_context=context, initializer=runpy.run_path,
                             initargs=(boot, {"PACK_NAME": "musetalk_enhanced", "PACK_DIR": os.path.dirname(
                                 os.path.dirname(os.path.dirname(sh.__file__))), "THREADS": 1,
                                 "GPU_QUEUE": gpus})) as pool:
        seen = list(pool.map(_visible_gpu, range(8)))
    by_worker = dict(seen)
    assert len(set(seen)) == len(by_worker)                  # one GPU per worker, kept for all its shards
    assert set(by_worker.values()) <= {"3", "4"} and len(set(by_worker.values())) == len(by_worker)


def _visible_gpu(_):
    import time

    time.sleep(0.05)
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")
