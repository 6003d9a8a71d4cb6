"""``python <pack> batch``: a folder of real clips (photos, espeak-ng speech) dubbed with one command on the small
random-weight models; failures recorded while the batch goes on; a rerun skips only what is really finished; a kill
mid-job (at a point set by a hook) loses nothing; ``--dry-run`` names the bad field of each bad row."""
import json
import os
import subprocess
import sys

import pytest

import mediakit as mk
from conftest import ROOT

FACE_OPTIONS = ["--min-face-size", "30", "--blend-mode", "feather"]
COMMON = ["--quiet", "--no-download"]


def voice(path, text):
    if mk.have_espeak():
        return mk.speech(path, text, speed=260)
    return mk.write_wav(path, mk.tone(220, 0.6, 16000), 16000)   # pragma: no cover


def face_clip(path, frames=8, cutaway=0):
    plan = (("astronaut", frames),) + ((("rocket", cutaway),) if cutaway else ())
    return mk.write_video(path, mk.edited_clip((256, 256), plan), 25, crf=14)


def batch(args, models_dir, monkeypatch, capsys):
    from musetalk_enhanced.__main__ import main
    from musetalk_enhanced.models import registry

    registry.set_folder_resolver(None)
    monkeypatch.setenv("MUSETALK_MODELS_DIR", models_dir)
    rc = main(["batch"] + args + COMMON)
    out = capsys.readouterr()
    return rc, out.out, out.err


def records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """6 pairs: four face clips (one with a cutaway), one clip without any face, one corrupt video."""
    d = tmp_path_factory.mktemp("batch_folder")
    for i, text in enumerate(("Hi there", "Good day", "Yes sir", "Come here")):
        face_clip(str(d / f"clip{i}.mp4"), cutaway=4 if i == 1 else 0)
        voice(str(d / f"clip{i}.wav"), text)
    mk.write_video(str(d / "landscape.mp4"), mk.edited_clip((256, 256), (("rocket", 6), ("coffee", 6))), 25, crf=14)
    voice(str(d / "landscape.wav"), "Nobody")
    (d / "zbroken.mp4").write_bytes(b"this is not a video file\n" * 120)
    voice(str(d / "zbroken.wav"), "Broken")
    return d


@pytest.fixture(scope="module")
def first_run(folder, small_models_dir):
    """The batch run once (module scope: the tests below share it); models counted as they load."""
    from musetalk_enhanced.__main__ import main
    from musetalk_enhanced.models import registry
    from musetalk_enhanced.pipeline import model_cache

    mp = pytest.MonkeyPatch()
    mp.setenv("MUSETALK_MODELS_DIR", small_models_dir)
    registry.set_folder_resolver(None)
    model_cache.clear()
    before = dict(model_cache.load_counts())
    import io
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["batch", str(folder)] + FACE_OPTIONS + COMMON)
    loads = {k: v - before.get(k, 0) for k, v in model_cache.load_counts().items()}
    mp.undo()
    dubbed = folder / "dubbed"
    stat = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in dubbed.iterdir() if p.suffix == ".mp4"}
    return rc, out.getvalue(), records(dubbed / "batch_results.jsonl"), loads, stat


def test_a_folder_dubs_with_one_command(folder, first_run):
    from musetalk_enhanced.pipeline.media.audio import load_audio_file
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames

    rc, out, recs, loads, _ = first_run
    assert rc == 1, out                                   # one job failed: the exit status says so
    assert "batch: 5 done, 0 skipped, 1 failed" in out, out
    by_job = {r["job"]: r for r in recs}
    assert len(recs) == 6 and {r["state"] for r in recs} == {"done", "failed"}
    broken = by_job["zbroken.mp4"]
    assert broken["state"] == "failed" and "video: cannot open zbroken.mp4" in broken["error"]
    assert not (folder / "dubbed" / "zbroken.mp4").exists()
    for i in range(4):                                    # every face clip lip-synced at the voice's length
        rec = by_job[f"clip{i}.mp4"]
        out_path = folder / "dubbed" / f"clip{i}.mp4"
        n = int(-(-load_audio_file(str(folder / f"clip{i}.wav")).duration * 25 // 1))
        assert rec["state"] == "done" and rec["output"] == str(out_path) and rec["bytes"] == out_path.stat().st_size
        assert rec["report"]["frames"] == n == len(VideoFileFrames(str(out_path)))
        assert rec["report"]["synced"]["musetalk-v1.5"] > 0 and rec["seconds"] > 0
    assert by_job["clip1.mp4"]["report"]["passed_through"]          # its rocket cutaway passed through
    landscape = by_job["landscape.mp4"]                              # no face anywhere: not a failure
    assert landscape["state"] == "done" and landscape["report"]["synced"] == {}
    assert any("no frame has a face" in n for n in landscape["report"]["notes"])
    assert "no frame had a face" in out
    assert not [p for p in os.listdir(folder / "dubbed") if "staging" in p or "partial" in p]
    assert loads["backends.musetalk"] == 1 and loads["audio.whisper"] == 1, loads      # models loaded once


def test_a_rerun_skips_what_is_finished_and_touches_nothing(folder, first_run, small_models_dir, monkeypatch,
                                                           capsys):
    *_, stat = first_run
    rc, out, _ = batch([str(folder)] + FACE_OPTIONS, small_models_dir, monkeypatch, capsys)
    assert rc == 1 and "batch: 0 done, 5 skipped, 1 failed" in out, out
    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in (folder / "dubbed").iterdir()
             if p.suffix == ".mp4"}
    assert after == stat and len(stat) == 5
    # another option is another job: nothing is skipped, and nothing made before is overwritten without --overwrite
    rc, out, _ = batch([str(folder), "--bbox-shift", "2"] + FACE_OPTIONS, small_models_dir, monkeypatch, capsys)
    assert rc == 1 and "batch: 0 done, 0 skipped, 6 failed" in out and "--overwrite" in out, out
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in (folder / "dubbed").iterdir()
            if p.suffix == ".mp4"} == stat


def run_driver(job, stage, signame, args, models_dir):
    env = {**os.environ, "MUSETALK_MODELS_DIR": models_dir, "PYTHONPATH": os.path.join(ROOT, "tests")}
    return subprocess.run([sys.executable, os.path.join(ROOT, "tests", "batch_driver.py"), str(job), stage, signame,
                           "--"] + args + COMMON, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("signame", ["SIGKILL", "SIGTERM"])
def test_a_killed_batch_resumes_with_nothing_redone_or_lost(tmp_path, small_models_dir, monkeypatch, capsys,
                                                            signame):
    """Killed while the second of 3 jobs is lip-syncing (SIGKILL: no clean-up at all; SIGTERM: a clean stop): no
    partial file under a final name; the rerun does only the missing jobs; the finished file is untouched."""
    for i, text in enumerate(("One", "Two", "Six")):
        face_clip(str(tmp_path / f"c{i}.mp4"), frames=6)
        voice(str(tmp_path / f"c{i}.wav"), text)
    args = [str(tmp_path), "--batch-size", "2"] + FACE_OPTIONS
    killed = run_driver(1, "lip-sync", signame, args, small_models_dir)
    dubbed = tmp_path / "dubbed"
    finals = sorted(p.name for p in dubbed.iterdir() if p.suffix == ".mp4" and not p.name.startswith("."))
    assert finals == ["c0.mp4"], (finals, killed.stdout, killed.stderr)
    first = (dubbed / "c0.mp4").stat()
    if signame == "SIGTERM":
        assert killed.returncode == 130 and "stopped" in killed.stdout, killed.stdout + killed.stderr
        assert not [p for p in os.listdir(dubbed) if p.startswith(".")]          # the staging file is gone
        assert [r["state"] for r in records(dubbed / "batch_results.jsonl")] == ["done", "cancelled"]
    else:
        assert killed.returncode == -9
    rc, out, _ = batch(args, small_models_dir, monkeypatch, capsys)
    assert rc == 0 and "batch: 2 done, 1 skipped, 0 failed" in out, out
    again = (dubbed / "c0.mp4").stat()
    assert (again.st_mtime_ns, again.st_size, again.st_ino) == (first.st_mtime_ns, first.st_size, first.st_ino)
    assert sorted(p.name for p in dubbed.iterdir() if p.suffix == ".mp4" and not p.name.startswith(".")) == \
        ["c0.mp4", "c1.mp4", "c2.mp4"]
    assert not [p for p in os.listdir(dubbed) if p.startswith(".")]


def test_an_existing_output_is_kept_unless_overwrite(tmp_path, small_models_dir, monkeypatch, capsys):
    face_clip(str(tmp_path / "talk.mp4"), frames=6)
    voice(str(tmp_path / "talk.wav"), "Hello")
    (tmp_path / "dubbed").mkdir()
    mine = tmp_path / "dubbed" / "talk.mp4"
    mine.write_bytes(b"the user's own file")
    rc, out, _ = batch([str(tmp_path)] + FACE_OPTIONS, small_models_dir, monkeypatch, capsys)
    assert rc == 1 and "exists and was not made by this batch" in out and mine.read_bytes() == b"the user's own file"
    rc, out, _ = batch([str(tmp_path), "--overwrite"] + FACE_OPTIONS, small_models_dir, monkeypatch, capsys)
    assert rc == 0 and "batch: 1 done" in out and mine.read_bytes()[4:8] == b"ftyp"


def test_dry_run_names_the_bad_field_of_each_row_and_runs_nothing(tmp_path, small_models_dir, monkeypatch, capsys):
    face_clip(str(tmp_path / "talk.mp4"), frames=4)
    voice(str(tmp_path / "talk.wav"), "Hello")
    (tmp_path / "jobs.csv").write_text(
        "video,audio,out,batch_size,backend,steps\n"
        "talk.mp4,talk.wav,a.mp4,4,,\n"
        "talk.mp4,talk.wav,b.mp4,0,,\n"
        "talk.mp4,talk.wav,c.mp4,,magic,\n"
        "talk.mp4,talk.wav,d.mp4,,,500\n"
        "nothere.mp4,talk.wav,e.mp4,,,\n"
        "talk.mp4,talk.wav,a.mp4,2,,\n")
    (tmp_path / "jobs.jsonl").write_text(
        json.dumps({"video": "talk.mp4", "audio": "talk.wav", "colour": "red"}) + "\n"
        + json.dumps({"video": "talk.mp4", "audio": "talk.wav", "smooth_boxes": "maybe"}) + "\n"
        + json.dumps({"avatar": "nobody", "audio": "talk.wav"}) + "\n")
    rc, out, _ = batch([str(tmp_path / "jobs.csv"), "--dry-run"], small_models_dir, monkeypatch, capsys)
    lines = out.strip().splitlines()
    assert rc == 1 and lines[-1].startswith("dry run: 1 of 6 jobs valid, 5 refused")
    assert lines[0].startswith("row 3: batch_size: 0 is out of range")
    assert lines[1].startswith("row 4: backend: 'magic' is not a choice")
    assert lines[2].startswith("row 5: steps: 500 is out of range")
    assert lines[3].startswith("row 6: video:") and "does not exist" in lines[3]
    assert lines[4].startswith("row 7: out: a.mp4 is also the output of row 2")
    rc, out, _ = batch([str(tmp_path / "jobs.csv"), "--dry-run", "--max-frames", "3"], small_models_dir, monkeypatch,
                       capsys)                     # the server's limits, measured from the packets, when set
    assert rc == 1 and "row 2: video: 4 frames: over the limit of 3 (cut or scale the file down, or raise " \
                       "--max-frames)" in out, out
    rc, out, _ = batch([str(tmp_path / "jobs.jsonl"), "--dry-run"], small_models_dir, monkeypatch, capsys)
    lines = out.strip().splitlines()
    assert rc == 1 and lines[0].startswith("line 1: colour: 'colour' is not an option of a dub job"), out
    assert lines[1].startswith("line 2: smooth_boxes: is a switch")
    assert lines[2].startswith("line 3: avatar:") and "nobody" in lines[2]
    assert not (tmp_path / "dubbed").exists()                  # nothing ran, nothing was written


def test_progress_names_every_stage_and_a_cancel_stops_between_network_calls(tmp_path, small_models_dir,
                                                                            monkeypatch):
    """A job's stages in order, "lip-sync" shown from its first frame even when one batch holds every frame, each
    stage's share of the bar only growing; a cancel asked at that point stops before the UNet and the VAE decoder
    run, not at the end of the batch."""
    from musetalk_enhanced.models import registry
    from musetalk_enhanced.pipeline.backends import musetalk_engine
    from musetalk_enhanced.pipeline.jobs import DubRequest, run
    from musetalk_enhanced.pipeline.jobs.run import job_fraction
    from musetalk_enhanced.pipeline.runtime import Cancelled

    registry.set_folder_resolver(None)
    monkeypatch.setenv("MUSETALK_MODELS_DIR", small_models_dir)
    video, audio = face_clip(str(tmp_path / "v.mp4"), frames=6), voice(str(tmp_path / "v.wav"), "Hello")
    request = DubRequest(video=video, audio=audio, out=str(tmp_path / "o.mp4"), batch_size=256, min_face_size=30,
                         blend_mode="feather", backend="musetalk-v1.5", auto_download=False)
    seen = []
    run(request, progress=lambda *step: seen.append(step))
    assert list(dict.fromkeys(s for s, _, _ in seen)) == ["face detection", "whisper audio features",
                                                          "loading models", "lip-sync", "encoding"], seen
    lipsync = [(d, t) for s, d, t in seen if s == "lip-sync"]
    assert lipsync[0][0] == 0 and lipsync[-1][0] == lipsync[-1][1] and len(lipsync) >= 2
    fractions = [f for f in (job_fraction("dub", *step) for step in seen) if f is not None]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)

    calls = []
    for name in ("denoise", "decode"):
        original = getattr(musetalk_engine.MuseTalkEngine, name)
        monkeypatch.setattr(musetalk_engine.MuseTalkEngine, name,
                            lambda self, *a, _name=name, _f=original: calls.append(_name) or _f(self, *a))
    asked = []
    with pytest.raises(Cancelled):
        run(request.replace(out=str(tmp_path / "cancelled.mp4")),
            progress=lambda stage, done, total: asked.append(stage) if stage == "lip-sync" else None,
            cancel=lambda: bool(asked))
    assert calls == [] and not (tmp_path / "cancelled.mp4").exists()
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]


def test_a_source_is_never_an_output_and_names_do_not_collide(tmp_path, small_models_dir, monkeypatch, capsys):
    """``--out-dir`` pointing at the inputs, even with ``--overwrite``, refuses the rows whose output is a source;
    ``clip.mov`` and ``clip.mp4`` get outputs of their own; ``CLIP.WAV`` pairs with ``CLIP.mp4``."""
    from musetalk_enhanced.pipeline.jobs.joblist import read_jobs

    for name in ("clip.mp4", "clip.mov", "LOUD.mp4"):
        face_clip(str(tmp_path / name), frames=4)
    voice(str(tmp_path / "clip.wav"), "Hello")
    voice(str(tmp_path / "LOUD.WAV"), "Hello")
    source = (tmp_path / "clip.mp4").read_bytes()
    jobs = {j.label: j for j in read_jobs(str(tmp_path))}
    assert jobs["LOUD.mp4"].request.audio == str(tmp_path / "LOUD.WAV")
    assert {os.path.basename(jobs[n].request.out) for n in ("clip.mov", "clip.mp4")} == {"clip_mov.mp4",
                                                                                         "clip_mp4.mp4"}
    rc, out, _ = batch([str(tmp_path), "--out-dir", str(tmp_path), "--overwrite"] + FACE_OPTIONS, small_models_dir,
                       monkeypatch, capsys)
    assert "LOUD.mp4: failed: out: LOUD.mp4 is the input of LOUD.mp4" in out, out
    assert (tmp_path / "clip.mp4").read_bytes() == source and (tmp_path / "LOUD.mp4").stat().st_size > 0


def test_masks_beside_every_output_and_a_rows_own_mask_out(tmp_path, small_models_dir, monkeypatch, capsys):
    """``--masks`` writes ``<out>.mask.mp4`` beside each dub (staged and recorded like the output); a CSV row's
    ``mask_out`` names its own."""
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames

    face_clip(str(tmp_path / "talk.mp4"), frames=6)
    voice(str(tmp_path / "talk.wav"), "Hello")
    rc, out, _ = batch([str(tmp_path), "--masks", "--on-silence", "keep_original"] + FACE_OPTIONS, small_models_dir,
                       monkeypatch, capsys)
    assert rc == 0, out
    mask = tmp_path / "dubbed" / "talk.mask.mp4"
    assert len(VideoFileFrames(str(mask))) == len(VideoFileFrames(str(tmp_path / "dubbed" / "talk.mp4")))
    line = records(str(tmp_path / "dubbed" / "batch_results.jsonl"))[-1]
    assert line["state"] == "done" and line["mask"] == str(mask)
    assert not [p for p in os.listdir(tmp_path / "dubbed") if "staging" in p]
    rows = tmp_path / "jobs.csv"
    rows.write_text("video,audio,out,mask_out\ntalk.mp4,talk.wav,second.mp4,second_matte.mp4\n")
    rc, out, _ = batch([str(rows), "--out-dir", str(tmp_path / "rows")] + FACE_OPTIONS, small_models_dir,
                       monkeypatch, capsys)
    assert rc == 0, out
    assert (tmp_path / "rows" / "second_matte.mp4").stat().st_size > 0
