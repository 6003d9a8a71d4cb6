"""Real-time avatars (pipeline/avatars): preparation stored and reused, speaking through the cache equals the full
lip-sync path, cutaway frames of the loop bit-identical, fps and frame counts, bad avatars refused with the fix.

Small random MuseTalk networks (tests/test_lipsync.py) on a real edited clip: the astronaut (a face) with rocket and
chelsea cutaways; the voice is espeak-ng speech."""
import json
import os

import numpy as np
import pytest
import torch

import mediakit as mk
from test_lipsync import (FPS, PLAN, clip, engine, faces, feats, features_for, runtime,  # noqa: F401 (fixtures)
                          voice)
from musetalk_enhanced.pipeline.avatars import (Avatar, AvatarError, frames_identity, is_current, list_avatars,
                                                prepare_avatar, read_manifest, remove_avatar)
from musetalk_enhanced.pipeline.backends.musetalk import MuseTalkBackend
from musetalk_enhanced.pipeline.backends.selection import BackendSpec
from musetalk_enhanced.pipeline.lipsync import run_lipsync
from musetalk_enhanced.pipeline.lipsync.sinks import ImageSink
from musetalk_enhanced.pipeline.media.frames import ArrayFrames, image_to_uint8

SETTINGS = {"detector": "mtcnn", "bbox_shift": 0, "extra_margin": 10, "blend_mode": "feather"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("avatars"))


@pytest.fixture(scope="module")
def avatar(root, clip, faces, engine, runtime):
    frames = ArrayFrames(clip, FPS)
    return prepare_avatar("presenter", frames, faces, runtime, source=frames_identity(frames), settings=SETTINGS,
                          engine=engine, blend_mode="feather", root=root)


def speak_image(avatar, features, engine, runtime, batch_size=8):
    run = avatar.start(features, runtime, engine=engine, batch_size=batch_size)
    sink = ImageSink(run.plan.num_frames, avatar.frames.height, avatar.frames.width)
    report = run.into(sink)
    return image_to_uint8(sink.close()), report, run


def test_prepared_folder_holds_everything_and_no_pickle(avatar, root, clip, faces):
    m = read_manifest("presenter", root)
    assert m["num_frames"] == len(clip) == 28 and m["fps"] == FPS and m["loop"] == "ping-pong"
    face_frames = [i for i, f in enumerate(m["frames"]) if "crop_box" in f]
    assert face_frames == faces.face_indices() and len(face_frames) < 28         # cutaways are kept
    assert all(m["frames"][i]["cutaway"] for i in range(28) if i not in face_frames)
    files = sorted(os.listdir(avatar.folder))
    assert files == ["avatar.json", "frames", "latents.safetensors", "masks.safetensors"]
    assert len(os.listdir(os.path.join(avatar.folder, "frames"))) == 28
    assert np.array_equal(avatar.frames.read(range(28)), clip)                   # lossless frames
    assert list_avatars(root) == ["presenter"]
    assert not [n for n in os.listdir(root) if n.startswith(".")]                 # no staging folder left


def test_speaking_equals_the_full_lipsync_path(avatar, clip, faces, feats, engine, runtime):
    """The cached latents and masks give exactly what the full path computes from the video, and speaking never
    encodes a face (the VAE encoder is the cost the cache removes)."""
    calls = []
    original = engine.encode_reference
    engine.encode_reference = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        out, report, run = speak_image(avatar, feats, engine, runtime)
    finally:
        del engine.encode_reference
    assert calls == []
    sink = ImageSink(run.plan.num_frames, 256, 256)
    full, _ = run_lipsync(ArrayFrames(clip, FPS), faces, feats, BackendSpec(), runtime, sink, batch_size=8,
                          blend_mode="feather",
                          engine_factory=lambda name: MuseTalkBackend(engine, "feather"))
    assert np.array_equal(out, image_to_uint8(sink.close()))
    assert report.backends_used == ["musetalk-v1.5"] and "avatar presenter" in report.text()


def test_loop_frame_counts_fps_and_cutaways(avatar, clip, voice, engine, runtime):
    """A voice longer than the clip: one output frame per 1/fps of voice (rounded up), ping-pong over the frames,
    cutaway frames bit-identical wherever the loop shows them; the voice is cut/padded to the output exactly."""
    long_voice = type(voice)(np.concatenate([voice.samples] * 3, axis=1), voice.sample_rate)
    features = features_for(long_voice)
    out, report, run = speak_image(avatar, features, engine, runtime, batch_size=5)
    expected = int(np.ceil(long_voice.duration * FPS - 1e-6))
    assert out.shape[0] == run.plan.num_frames == expected > 28
    cut = [i for i in range(28) if avatar.faces.frames[i].face is None]
    for k, s in enumerate(run.plan.source):
        if s in cut:
            assert np.array_equal(out[k], clip[s]), k
    assert list(run.plan.source[26:32]) == [26, 27, 27, 26, 25, 24]              # the original's cycle
    assert run.audio.samples.shape[1] == int(round(expected / FPS * voice.sample_rate))


def test_other_fps_is_kept(root, clip, faces, engine, runtime, voice):
    frames = ArrayFrames(clip, 30.0)
    faces30 = type(faces)(frames=faces.frames, width=faces.width, height=faces.height, fps=30.0,
                          shot_starts=faces.shot_starts, params=faces.params)
    av = prepare_avatar("thirty", frames, faces30, runtime, source=frames_identity(frames), settings=SETTINGS,
                        engine=engine, blend_mode="feather", root=root)
    out, _, run = speak_image(av, features_for(voice, 30.0), engine, runtime)
    assert av.fps == 30.0 and out.shape[0] == int(np.ceil(voice.duration * 30.0 - 1e-6))
    with pytest.raises(AvatarError, match="compute them at the avatar's fps"):
        av.start(features_for(voice, 25.0), runtime, engine=engine)


def test_reuse_and_invalidation(avatar, root, clip):
    frames = ArrayFrames(clip, FPS)
    source = frames_identity(frames)
    assert is_current("presenter", source, SETTINGS, root)
    assert not is_current("presenter", source, {**SETTINGS, "bbox_shift": 5}, root)     # settings changed
    other = frames_identity(ArrayFrames(clip[::-1].copy(), FPS))
    assert not is_current("presenter", other, SETTINGS, root)                            # other video
    assert not is_current("nobody", source, SETTINGS, root)


def test_bad_avatars_are_refused_with_the_fix(avatar, root, clip, faces, engine, runtime, feats, tmp_path):
    with pytest.raises(AvatarError, match="not found.*Prepare it first"):
        Avatar("nobody", root)
    with pytest.raises(AvatarError, match="letters, digits"):
        Avatar("../escape", root)
    frames = ArrayFrames(clip, FPS)

    def copy(name):
        return prepare_avatar(name, frames, faces, runtime, source=frames_identity(frames), settings=SETTINGS,
                              engine=engine, blend_mode="feather", root=root)

    broken = copy("broken")
    with open(os.path.join(broken.folder, "avatar.json")) as f:
        m = json.load(f)
    m["version"] = 99
    with open(os.path.join(broken.folder, "avatar.json"), "w") as f:
        json.dump(m, f)
    with pytest.raises(AvatarError, match="another version.*Prepare the avatar again"):
        Avatar("broken", root)
    corrupt = copy("corrupt")
    with open(os.path.join(corrupt.folder, "latents.safetensors"), "wb") as f:
        f.write(b"garbage")
    with pytest.raises(AvatarError, match="cannot be read.*Prepare the avatar again"):
        Avatar("corrupt", root).start(feats, runtime, engine=engine)
    other_weights = copy("other_weights")
    with open(os.path.join(other_weights.folder, "avatar.json")) as f:
        m = json.load(f)
    m["weights"] = {"sd_vae.weights": {"file": "diffusion_pytorch_model.safetensors", "size": 1}}
    with open(os.path.join(other_weights.folder, "avatar.json"), "w") as f:
        json.dump(m, f)
    with pytest.raises(AvatarError, match="other weight files.*Prepare the avatar again"):
        Avatar("other_weights", root).start(feats, runtime, engine=engine)
    gone = copy("gone")
    os.remove(os.path.join(gone.folder, "frames", "000003.png"))
    with pytest.raises(AvatarError, match="frame 3.*missing or damaged"):
        gone.frames.read([3])
    for name in ("broken", "corrupt", "other_weights", "gone"):
        remove_avatar(name, root)
    assert "broken" not in list_avatars(root)
    with pytest.raises(AvatarError, match="nothing removed"):
        remove_avatar("broken", root)


def test_a_cancelled_preparation_leaves_nothing(root, clip, faces, engine, runtime):
    class Cancel(Exception):
        pass

    class Stopping(ArrayFrames):
        def _read_range(self, start, stop):
            if start >= 16:
                raise Cancel()
            return super()._read_range(start, stop)

    frames = Stopping(clip, FPS)
    before = set(os.listdir(root))
    with pytest.raises(Cancel):
        prepare_avatar("halfway", frames, faces, runtime, source={"x": 1}, settings=SETTINGS, engine=engine,
                       blend_mode="feather", root=root)
    assert set(os.listdir(root)) == before and "halfway" not in list_avatars(root)


def test_cli_prepare_reuse_speak_list_remove(tmp_path, monkeypatch, capsys):
    """``avatar prepare`` (then reused when nothing changed, rebuilt when a setting changes), ``speak`` to an mp4 at
    the avatar's fps with every frame, ``list``, ``remove``; a bad name is a clear error."""
    from test_weights import musetalk_unet as tw_unet, vae as tw_vae, whisper as tw_whisper

    from musetalk_enhanced import cli
    from musetalk_enhanced.models import registry
    from musetalk_enhanced.pipeline.media.audio import load_audio_file
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames
    from test_lipsync import UNET_SMALL, VAE_SMALL

    models = str(tmp_path / "models")
    tw_unet.write_test_weights(models, config=UNET_SMALL)
    tw_vae.write_test_weights(models, config=VAE_SMALL)
    tw_whisper.write_test_weights(models)
    registry.set_folder_resolver(None)
    monkeypatch.setenv("MUSETALK_MODELS_DIR", models)
    monkeypatch.setenv("MUSETALK_AVATARS_DIR", str(tmp_path / "avatars"))
    clip = mk.edited_clip((256, 256), (("astronaut", 8), ("rocket", 4), ("astronaut", 4)))
    video = mk.write_video(str(tmp_path / "face.mp4"), clip, 24, crf=14)
    voice = mk.speech(str(tmp_path / "voice.wav"), "Hello there friend", speed=200) if mk.have_espeak() else \
        mk.write_wav(str(tmp_path / "voice.wav"), mk.tone(200, 1.0, 16000), 16000)
    common = ["--quiet", "--no-download"]
    prep = ["avatar", "prepare", "--video", video, "--name", "host", "--min-face-size", "30", "--blend-mode",
            "feather"] + common
    assert cli.main(prep) == 0 and "prepared" in capsys.readouterr().out
    assert cli.main(prep) == 0 and "up to date" in capsys.readouterr().out
    assert cli.main(prep[:-2] + ["--bbox-shift", "3"] + common) == 0 and "prepared" in capsys.readouterr().out
    out = str(tmp_path / "spoken.mp4")
    assert cli.main(["avatar", "speak", "--name", "host", "--audio", voice, "--out", out] + common) == 0
    spoken = VideoFileFrames(out)
    duration = load_audio_file(voice).duration
    assert spoken.fps == pytest.approx(24.0) and len(spoken) == int(np.ceil(duration * 24 - 1e-6))
    assert cli.main(["avatar", "list"]) == 0 and "host: 16 frames 256x256 @ 24 fps" in capsys.readouterr().out
    assert cli.main(["avatar", "speak", "--name", "host", "--audio", voice, "--out", out] + common) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["avatar", "speak", "--name", "nobody", "--audio", voice, "--out", out + "2.mp4"] + common) == 2
    assert "Prepare it first" in capsys.readouterr().err
    assert cli.main(["avatar", "remove", "--name", "host"]) == 0
    assert cli.main(["avatar", "list"]) == 0 and "no avatars" in capsys.readouterr().out


def test_nodes_prepare_reuse_and_speak(tmp_path, monkeypatch, clip, faces):
    """Prepare Avatar from an IMAGE batch (reused on a second run), Avatar Speak by connection and by name: IMAGE,
    streamed frames, the voice cut to the output, the avatar's fps; a missing avatar is a clear error."""
    from test_weights import musetalk_unet as tw_unet, vae as tw_vae, whisper as tw_whisper

    from musetalk_enhanced.models import registry
    from musetalk_enhanced.nodes.avatar_nodes import MuseTalkAvatarSpeak, MuseTalkPrepareAvatar
    from musetalk_enhanced.pipeline.backends import musetalk_engine
    from musetalk_enhanced.pipeline.media.frames import uint8_to_image
    from test_lipsync import UNET_SMALL, VAE_SMALL

    models = str(tmp_path / "models")
    tw_unet.write_test_weights(models, config=UNET_SMALL)
    tw_vae.write_test_weights(models, config=VAE_SMALL)
    tw_whisper.write_test_weights(models)
    registry.set_folder_resolver(None)
    musetalk_engine.clear_cache()
    monkeypatch.setenv("MUSETALK_MODELS_DIR", models)
    monkeypatch.setenv("MUSETALK_AVATARS_DIR", str(tmp_path / "avatars"))
    images = uint8_to_image(clip)
    avatar, summary = MuseTalkPrepareAvatar().prepare("desk", faces, blend_mode="feather", images=images, fps=FPS)
    assert summary.startswith("prepared: desk: 28 frames")
    again, summary = MuseTalkPrepareAvatar().prepare("desk", faces, blend_mode="feather", images=images, fps=FPS)
    assert summary.startswith("reused") and again.folder == avatar.folder
    tone = torch.from_numpy(mk.tone(180, 1.3, 16000)).float()
    voice = {"waveform": tone.reshape(1, 1, -1), "sample_rate": 16000}
    out = MuseTalkAvatarSpeak().speak(voice, batch_size=4, avatar=avatar)["result"]
    n = int(np.ceil(1.3 * FPS - 1e-6))
    assert out[0].shape == (n, 256, 256, 3) and len(out[1]) == n and out[3] == FPS
    assert out[2]["waveform"].shape[-1] == int(round(n / FPS * 16000))
    spoken = image_to_uint8(out[0])
    for k in range(n):          # cutaway frames of the loop untouched (frames 10-14 are the rocket)
        if 10 <= k <= 14:
            assert np.array_equal(spoken[k], clip[k])
    by_name = MuseTalkAvatarSpeak().speak(voice, batch_size=4, avatar_name="desk")["result"]
    assert np.array_equal(image_to_uint8(by_name[0]), spoken)
    with pytest.raises(AvatarError, match="not found"):
        MuseTalkAvatarSpeak().speak(voice, avatar_name="nobody")
    with pytest.raises(AvatarError, match="connect Prepare Avatar"):
        MuseTalkAvatarSpeak().speak(voice)


def test_live_speech_frames_as_the_voice_arrives(avatar, clip, voice, engine, runtime):
    """Pushed in one piece the voice gives exactly the offline frames; pushed in 200 ms chunks every frame comes
    out once, in order, as soon as its audio window is complete (the first after the first chunk), cutaway frames
    untouched, and the same count as offline."""
    from musetalk_enhanced.pipeline.avatars.live import LiveSpeech
    from musetalk_enhanced.pipeline.media.audio import to_mono
    from test_lipsync import small_encoder

    pcm = to_mono(voice, 16000).astype(np.float32)
    offline, _, run = speak_image(avatar, features_for(voice), engine, runtime, batch_size=1)
    whole = LiveSpeech(avatar, runtime, engine=engine, encoder=small_encoder(), batch_size=1)
    got = whole.push(pcm) + whole.close()
    assert [k for k, _ in got] == list(range(offline.shape[0]))
    assert np.array_equal(np.stack([f for _, f in got]), offline)

    live = LiveSpeech(avatar, runtime, engine=engine, encoder=small_encoder(), batch_size=2)
    chunk = 3200                                    # 200 ms
    made, first_after = [], None
    for i in range(0, len(pcm), chunk):
        out = live.push(pcm[i:i + chunk])
        if out and first_after is None:
            first_after = i + chunk
        made += out
        for k, _ in out:                            # never ahead of its audio: window end <= samples received
            assert (int(k * 50 / FPS) + 10 - 4) * 320 <= i + chunk
    made += live.close()
    assert first_after == chunk                     # 200 ms of voice already give the first frames
    assert [k for k, _ in made] == list(range(offline.shape[0]))
    cut = {i for i in range(28) if avatar.faces.frames[i].face is None}
    for (k, frame), s in zip(made, run.plan.source):
        if s in cut:
            assert np.array_equal(frame, clip[s])
    with pytest.raises(AvatarError, match="closed"):
        live.push(pcm[:100])
    with pytest.raises(AvatarError, match="16000 Hz"):
        LiveSpeech(avatar, runtime, engine=engine, sample_rate=44100)
