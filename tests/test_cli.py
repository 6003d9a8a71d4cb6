"""The command line on the real pipeline: weights read from a models folder in the released layouts (small random
MuseTalk UNet/VAE, full-size random whisper-tiny), real MTCNN, a real edited clip and espeak-ng speech."""
import json
import os

import numpy as np
import pytest

import mediakit as mk
from conftest import ROOT


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    clip = mk.edited_clip((256, 256), (("astronaut", 8), ("rocket", 4), ("astronaut", 4)))
    video = mk.write_video(str(d / "in.mp4"), clip, 25, crf=14)
    if mk.have_espeak():
        voice = mk.speech(str(d / "voice.wav"), "Hello there friend", speed=200)
    else:  # pragma: no cover
        voice = mk.write_wav(str(d / "voice.wav"), mk.tone(200, 1.0, 16000), 16000)
    return d, video, voice


def run_cli(args, monkeypatch, models_dir):
    from musetalk_enhanced import cli
    from musetalk_enhanced.models import registry
    from musetalk_enhanced.pipeline.backends import musetalk_engine

    registry.set_folder_resolver(None)
    musetalk_engine.clear_cache()
    monkeypatch.setenv("MUSETALK_MODELS_DIR", models_dir)
    return cli.main(args + ["--quiet", "--no-download", "--min-face-size", "30"])


def test_cli_end_to_end(inputs, small_models_dir, monkeypatch, tmp_path):
    from musetalk_enhanced.pipeline.media.audio import load_audio_file
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames

    d, video, voice = inputs
    out = str(tmp_path / "out.mp4")
    report = str(tmp_path / "report.json")
    rc = run_cli(["--video", video, "--audio", voice, "--out", out, "--length-policy", "follow_audio",
                  "--report-json", report, "--blend-mode", "feather"], monkeypatch, small_models_dir)
    assert rc == 0
    r = json.load(open(report))
    src = VideoFileFrames(video)
    audio = load_audio_file(voice)
    n = int(np.ceil(audio.duration * 25 - 1e-6))
    assert r["frames"] == n and r["synced"]["musetalk-v1.5"] + len(r["passed_through"]) == n
    res = VideoFileFrames(out)
    assert len(res) == n and res.fps == 25.0
    back = load_audio_file(out)
    assert abs(back.duration - n / 25) < 0.06
    # cutaway frames (rocket, source frames 8-11) are the source frames (up to the H.264 re-encode)
    for k in r["passed_through"][:3]:
        s = k % 32 if k % 32 < 16 else 31 - k % 32
        assert 8 <= s <= 11
        assert np.abs(res.read([k]).astype(int) - src.read([s]).astype(int)).mean() < 3.0


def test_cli_refuses_to_overwrite_and_reports_missing_weights(inputs, monkeypatch, tmp_path, capsys):
    d, video, voice = inputs
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep me")
    assert run_cli(["--video", video, "--out", str(existing)], monkeypatch, str(tmp_path)) == 2
    assert existing.read_bytes() == b"keep me"
    assert "already exists" in capsys.readouterr().err
    out = tmp_path / "new.mp4"
    rc = run_cli(["--video", video, "--audio", voice, "--out", str(out), "--backend", "musetalk-v1.5"], monkeypatch,
                 str(tmp_path / "empty_models"))
    err = capsys.readouterr().err
    assert rc == 2 and "Missing model weights" in err
    for rel in ("musetalkV15/unet.pth", "musetalkV15/musetalk.json", "sd-vae/config.json", "whisper/config.json"):
        assert rel in err  # one message lists every missing file
    assert not out.exists() and not any(p.name.endswith(".partial.mp4") for p in tmp_path.iterdir())


def test_cli_bad_video(monkeypatch, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video file\n" * 120)   # fixed bytes: random ones can probe as an audio format
    rc = run_cli(["--video", str(bad), "--out", str(tmp_path / "o.mp4")], monkeypatch, str(tmp_path))
    err = capsys.readouterr().err
    assert rc == 2 and "video: cannot open" in err, err


def test_demo_dubs_the_example_clip(small_models_dir, monkeypatch, tmp_path, capsys):
    """README's first command ends with ``python . --demo``: the example clip the pack ships, dubbed with its example
    voice, written to output/demo/ under the current folder (a new name each run) and named at the end."""
    from musetalk_enhanced.pipeline.media.audio import load_audio_file
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames

    monkeypatch.chdir(tmp_path)
    outs = []
    for _ in range(2):
        assert run_cli(["--demo", "--backend", "musetalk-v1.5"], monkeypatch, small_models_dir) == 0
        last = capsys.readouterr().out.strip().splitlines()[-1]
        assert last.startswith("wrote ")
        outs.append(last.split()[1])
    assert outs[0] != outs[1] and all(os.path.dirname(p) == str(tmp_path / "output" / "demo") for p in outs)
    voice = load_audio_file(os.path.join(ROOT, "example_workflows", "musetalk_example_voice.wav"))
    res = VideoFileFrames(outs[0])
    assert len(res) == int(np.ceil(voice.duration * 25 - 1e-6)) and (res.width, res.height) == (384, 384)


def test_demo_without_weights_names_every_missing_file(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli(["--demo", "--backend", "musetalk-v1.5"], monkeypatch, str(tmp_path / "no_models")) == 2
    captured = capsys.readouterr()
    assert "video: 100 frames" in captured.out  # the shipped clip was found and opened
    assert "Missing model weights" in captured.err and "musetalkV15/unet.pth" in captured.err
    assert not os.path.exists(tmp_path / "output" / "demo") or not os.listdir(tmp_path / "output" / "demo")


def test_video_and_out_are_required_without_demo(capsys):
    from musetalk_enhanced import cli

    with pytest.raises(SystemExit):
        cli.main(["--video", "x.mp4"])
    assert "--out required" in capsys.readouterr().err


def test_cli_builds_the_detector_like_the_face_detect_node(inputs, small_models_dir, monkeypatch, tmp_path):
    """One rule for the detector's options (pipeline.faces.detectors.detector_options): the CLI searches faces at the
    same sizes as the node, so a clip gets the same face decisions (and speed) in both."""
    from musetalk_enhanced.nodes import face_nodes
    from musetalk_enhanced.pipeline.faces import detectors

    d, video, voice = inputs
    seen = {}

    def capture(backend, runtime=None, auto_download=True, **options):
        seen.update(options)
        raise ValueError("stop here")
    monkeypatch.setattr(detectors, "create_detector", capture)
    rc = run_cli(["--video", video, "--audio", voice, "--out", str(tmp_path / "o.mp4"), "--landmarks", "dlib"],
                 monkeypatch, small_models_dir)   # (run_cli adds --min-face-size 30)
    assert rc == 2
    assert seen == face_nodes.detector_options("mtcnn", 30, 256, 256, "dlib") == {"min_face_size": 24.0,
                                                                                "landmarks": "dlib"}


@pytest.mark.parametrize("extra, words", [
    (["--out", "/nonexistent-folder/sub/o.mp4"], "--out: the folder /nonexistent-folder/sub does not exist"),
    (["--batch-size", "0"], "--batch-size: 0 is out of range (use a value from 1 to 256)"),
    (["--bbox-shift", "1000000000"], "--bbox-shift: 1000000000 is out of range"),
    (["--out", "o.mov"], "--out: 'o.mov' is not an .mp4 name"),
])
def test_a_bad_command_line_is_one_line_before_any_work(inputs, small_models_dir, monkeypatch, tmp_path, capsys,
                                                       extra, words):
    """Every option and the output folder are checked before a file is opened or a model loads."""
    from musetalk_enhanced.pipeline.faces import detectors
    from musetalk_enhanced.pipeline.media import video as video_mod

    d, video, voice = inputs
    touched = []
    monkeypatch.setattr(detectors, "create_detector", lambda *a, **k: touched.append("detector"))
    monkeypatch.setattr(video_mod, "VideoFileFrames", lambda *a, **k: touched.append("video"))
    argv = ["--video", video, "--audio", voice, "--out", str(tmp_path / "o.mp4")] + extra
    assert run_cli(argv, monkeypatch, small_models_dir) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and len(err.splitlines()) == 1, err
    assert touched == []


def test_mask_out_writes_the_changed_pixels_and_silence_keeps_the_source(inputs, small_models_dir, monkeypatch,
                                                                        tmp_path):
    """``--mask-out``: a grey mp4 as long as the output, black on cutaway frames, bright where the mouth changed;
    ``--on-silence keep_original`` reports kept frames (the voice ends before the clip: follow_video)."""
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames

    d, video, voice = inputs
    out, mask, report = (str(tmp_path / n) for n in ("out.mp4", "out.mask.mp4", "report.json"))
    rc = run_cli(["--video", video, "--audio", voice, "--out", out, "--mask-out", mask, "--blend-mode", "mouth",
                  "--on-silence", "keep_original", "--length-policy", "follow_video", "--report-json", report],
                 monkeypatch, small_models_dir)
    assert rc == 0
    r = json.load(open(report))
    grey = VideoFileFrames(mask)
    assert len(grey) == len(VideoFileFrames(out)) == r["frames"]
    frames = grey.read(list(range(len(grey)))).astype(int)
    synced = sorted(set(range(r["frames"])) - set(r["passed_through"]))
    assert synced and frames[synced].max() > 200                           # the new mouth: mask near 1
    assert frames[r["passed_through"]].max() <= 20                         # cutaways and kept silence: 0 (+ H.264)
    assert np.abs(frames[..., 0] - frames[..., 2]).max() <= 8              # grey
    assert "kept_silent" in r and all(k in r["passed_through"] for k in r["kept_silent"])
    # the mask is checked like the output: never overwritten, never the output itself
    assert run_cli(["--video", video, "--audio", voice, "--out", str(tmp_path / "o2.mp4"), "--mask-out", mask],
                   monkeypatch, small_models_dir) == 2
    assert not os.path.exists(tmp_path / "o2.mp4")


def test_shard_shots_makes_the_same_video_in_shards(inputs, small_models_dir, monkeypatch, tmp_path):
    """``--shard shots``: the clip's three shots made as shards, joined and encoded once: the frames equal the
    unsharded output's decode (the same encoder input, so the same file content), the report adds the shards up."""
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames

    d, video, voice = inputs
    common = ["--video", video, "--audio", voice, "--batch-size", "1", "--blend-mode", "feather",
              "--length-policy", "follow_video"]
    whole, sharded = str(tmp_path / "whole.mp4"), str(tmp_path / "sharded.mp4")
    assert run_cli(common + ["--out", whole], monkeypatch, small_models_dir) == 0
    report = str(tmp_path / "r.json")
    assert run_cli(common + ["--out", sharded, "--shard", "shots", "--shard-seconds", "0.1", "--report-json",
                             report], monkeypatch, small_models_dir) == 0
    a, b = VideoFileFrames(whole), VideoFileFrames(sharded)
    assert len(a) == len(b) == 16
    assert np.array_equal(a.read(list(range(16))), b.read(list(range(16))))
    r = json.load(open(report))
    assert any("made in 3 shards" in n for n in r["notes"]) and r["frames"] == 16
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".shards")]     # the shards go once it is written
    assert run_cli(common + ["--out", str(tmp_path / "m.mp4"), "--shard", "shots", "--mask-out",
                             str(tmp_path / "m.mask.mp4")], monkeypatch, small_models_dir) == 2
