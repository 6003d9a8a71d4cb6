"""Real-time avatars (pipeline/avatars): preparation stored and reused, speaking through the cache equals the full
lip-sync path, cutaway frames of the loop bit-identical, fps and frame counts, bad avatars refused with the fix; the
idle loop (ping_pong / forward over a frame range) offline, live and from the CLI; live speech costs one open whisper
window per push; an avatar prepared again under a live reference is reloaded, a removed one refused.

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
from musetalk_enhanced.pipeline.avatars import (Avatar, AvatarError, LiveSpeech, frames_identity, is_current,
                                                list_avatars, prepare_avatar, read_manifest, remove_avatar)
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


@pytest.fixture(scope="module")
def avatar30(root, clip, faces, engine, runtime):
    return prepare_at(root, "thirty", clip, faces, engine, runtime, 30.0)


def prepare_at(root, name, clip, faces, engine, runtime, fps, **kw):
    frames = ArrayFrames(clip, fps)
    at_fps = type(faces)(frames=faces.frames, width=faces.width, height=faces.height, fps=fps,
                         shot_starts=faces.shot_starts, params=faces.params)
    return prepare_avatar(name, frames, at_fps, runtime, source=frames_identity(frames), settings=SETTINGS,
                          engine=engine, blend_mode="feather", root=root, **kw)


def speak_image(avatar, features, engine, runtime, batch_size=8, **loop):
    run = avatar.start(features, runtime, engine=engine, batch_size=batch_size, **loop)
    sink = ImageSink(run.plan.num_frames, avatar.frames.height, avatar.frames.width)
    report = run.into(sink)
    return image_to_uint8(sink.close()), report, run


def test_prepared_folder_holds_everything_and_no_pickle(avatar, root, clip, faces):
    m = read_manifest("presenter", root)
    assert m["num_frames"] == len(clip) == 28 and m["fps"] == FPS
    assert m["loop"] == "ping_pong" and m["loop_range"] is None and len(m["prepare_id"]) == 32
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


def test_other_fps_is_kept(avatar30, engine, runtime, voice):
    av = avatar30
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

    from musetalk_enhanced.__main__ import main
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
    assert main(prep) == 0 and "prepared" in capsys.readouterr().out
    assert main(prep) == 0 and "up to date" in capsys.readouterr().out
    assert main(prep + ["--loop", "forward", "--loop-range", "2-9"]) == 0       # no new preparation
    assert "up to date" in capsys.readouterr().out
    assert main(["avatar", "list"]) == 0 and "idle loop forward over frames 2-9" in capsys.readouterr().out
    assert main(prep + ["--loop-range", "2-16"]) == 2
    assert "loop_range '2-16' is not a range of its frames; give 'a-b' with 0 <= a <= b <= 15" in \
        capsys.readouterr().err
    assert main(prep[:-2] + ["--bbox-shift", "3"] + common) == 0 and "prepared" in capsys.readouterr().out
    out = str(tmp_path / "spoken.mp4")
    assert main(["avatar", "speak", "--name", "host", "--audio", voice, "--out", out] + common) == 0
    spoken = VideoFileFrames(out)
    duration = load_audio_file(voice).duration
    assert spoken.fps == pytest.approx(24.0) and len(spoken) == int(np.ceil(duration * 24 - 1e-6))
    assert main(["avatar", "list"]) == 0 and "host: 16 frames 256x256 @ 24 fps" in capsys.readouterr().out
    assert main(["avatar", "speak", "--name", "host", "--audio", voice, "--out", out] + common) == 2
    assert "already exists" in capsys.readouterr().err
    looped = str(tmp_path / "looped.mp4")
    assert main(["avatar", "speak", "--name", "host", "--audio", voice, "--out", looped, "--loop", "forward",
                     "--loop-range", "4-6"] + common) == 0
    assert "idle loop: forward over frames 4-6" in capsys.readouterr().out and len(VideoFileFrames(looped)) == \
        len(spoken)
    assert main(["avatar", "speak", "--name", "host", "--audio", voice, "--out", looped + "2.mp4",
                     "--loop-range", "7"] + common) == 2
    assert "--loop-range: '7' is not a frame range" in capsys.readouterr().err
    assert main(["avatar", "speak", "--name", "nobody", "--audio", voice, "--out", out + "2.mp4"] + common) == 2
    assert "Prepare it first" in capsys.readouterr().err
    assert main(["avatar", "remove", "--name", "host"]) == 0
    assert main(["avatar", "list"]) == 0 and "no avatars" in capsys.readouterr().out


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
    _, summary = MuseTalkPrepareAvatar().prepare("desk", faces, blend_mode="feather", images=images, fps=FPS,
                                                 loop="forward", loop_range="8-12")
    assert summary.startswith("reused (new idle loop)") and "idle loop forward over frames 8-12" in summary
    looped = image_to_uint8(MuseTalkAvatarSpeak().speak(voice, batch_size=4, avatar=avatar)["result"][0])
    for k in range(n):          # the held avatar follows its new default: 8..12 forward, 10-12 the rocket
        if 8 + k % 5 >= 10:
            assert np.array_equal(looped[k], clip[8 + k % 5])
    chosen = MuseTalkAvatarSpeak().speak(voice, batch_size=4, avatar_name="desk", loop="ping_pong",
                                         loop_range="all")["result"]
    assert np.array_equal(image_to_uint8(chosen[0]), spoken)
    with pytest.raises(AvatarError, match="loop_range '9-99'"):
        MuseTalkAvatarSpeak().speak(voice, avatar=avatar, loop_range="9-99")
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


# ---- the idle loop ---------------------------------------------------------------------------------------------------
def cycle(first, last, loop):
    """The loop as the original writes its cycle (MuseTalk scripts/inference.py: frames + frames[::-1], indexed k % len),
    over frames first..last; forward: the frames alone."""
    frames = list(range(first, last + 1))
    return frames + frames[::-1] if loop == "ping_pong" else frames


def long_voice(voice, times=3):
    return type(voice)(np.concatenate([voice.samples] * times, axis=1), voice.sample_rate)


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_idle_loop_frame_order_for_each_mode_and_range(fps, avatar, avatar30, voice, engine, runtime):
    av = avatar if fps == 25.0 else avatar30
    features = features_for(long_voice(voice), fps)
    n = int(np.ceil(long_voice(voice).duration * fps - 1e-6))
    for loop in ("ping_pong", "forward"):
        for text, (first, last) in (("", (0, 27)), ("all", (0, 27)), ("3-12", (3, 12)), ("20-20", (20, 20))):
            run = av.start(features, runtime, engine=engine, loop=loop, loop_range=text)
            c = cycle(first, last, loop)
            assert run.plan.num_frames == n > 28
            assert list(run.plan.source) == [c[k % len(c)] for k in range(n)], (fps, loop, text)
            assert run.audio.samples.shape[1] == int(round(n / fps * voice.sample_rate))
    default = av.start(features, runtime, engine=engine).plan.source       # the avatar's default: ping-pong
    assert list(default[26:32]) == [26, 27, 27, 26, 25, 24]


def test_a_forward_loop_over_a_range_keeps_its_cutaways_bit_identical(avatar, clip, voice, engine, runtime,
                                                                     monkeypatch):
    from musetalk_enhanced.pipeline.avatars.store import AvatarFrames

    decoded = []
    original = AvatarFrames._decode
    monkeypatch.setattr(AvatarFrames, "_decode", lambda self, k: decoded.append(k) or original(self, k))
    out, report, run = speak_image(avatar, features_for(voice), engine, runtime, loop="forward", loop_range="8-16")
    assert sorted(decoded) == list(range(8, 17))             # each frame of the loop decoded once per speech
    assert list(run.plan.source[:11]) == [8, 9, 10, 11, 12, 13, 14, 15, 16, 8, 9]
    for k, s in enumerate(run.plan.source):
        if 10 <= s <= 14:                                  # the rocket cutaway
            assert np.array_equal(out[k], clip[s]), k
        else:
            assert not np.array_equal(out[k], clip[s]), k  # a face frame is spoken
    assert "idle loop: forward over frames 8-16" in report.text()


def test_stored_frames_decode_only_what_is_asked_once_per_speech(avatar, clip, monkeypatch):
    from musetalk_enhanced.pipeline.avatars.store import AvatarFrames

    decoded = []
    original = AvatarFrames._decode
    monkeypatch.setattr(AvatarFrames, "_decode", lambda self, k: decoded.append(k) or original(self, k))
    view = avatar.frames.speech_view(8 * 256 * 256 * 3)      # room for 8 frames
    assert np.array_equal(view.read([27, 0, 1, 0]), clip[[27, 0, 1, 0]]) and sorted(decoded) == [0, 1, 27]
    assert np.array_equal(view.read([1, 27]), clip[[1, 27]]) and len(decoded) == 3       # from the cache
    view.read(range(2, 10))                                   # 8 more: the least recently used (0) is dropped
    view.read([0])
    assert len(decoded) == 3 + 8 + 1
    assert np.array_equal(avatar.frames.read([5]), clip[[5]]) and len(decoded) == 13    # the avatar's own: no cache
    with pytest.raises(IndexError, match="frame 28 out of range"):
        view.read([28])


def test_loop_choices_are_checked_with_the_fix(avatar, root, clip, faces, feats, engine, runtime):
    for bad in ("12-40", "5-3", "abc", "-1-4", "3"):
        with pytest.raises(AvatarError, match=r"avatar 'presenter': loop_range .* is not a range of its frames; "
                                              r"give 'a-b' with 0 <= a <= b <= 27 .*or leave it empty"):
            avatar.start(feats, runtime, engine=engine, loop_range=bad)
    with pytest.raises(AvatarError, match="loop 'backwards' is not an idle loop; use one of ping_pong, forward"):
        avatar.start(feats, runtime, engine=engine, loop="backwards")
    with pytest.raises(AvatarError, match="give 'a-b' with 0 <= a <= b <= 27"):
        LiveSpeech(avatar, runtime, engine=engine, loop_range="0-28")
    before = set(os.listdir(root))
    with pytest.raises(AvatarError, match="loop_range '30-31'"):          # refused before anything is written
        prepare_at(root, "never", clip, faces, engine, runtime, FPS, loop_range="30-31")
    assert set(os.listdir(root)) == before


def test_the_default_loop_is_stored_and_changed_without_preparing_again(root, clip, faces, feats, engine, runtime):
    av = prepare_at(root, "looper", clip, faces, engine, runtime, FPS, loop="forward", loop_range="2-9")
    m = read_manifest("looper", root)
    assert (m["loop"], m["loop_range"]) == ("forward", [2, 9])
    assert list(av.start(feats, runtime, engine=engine).plan.source[:10]) == [2, 3, 4, 5, 6, 7, 8, 9, 2, 3]
    held = Avatar("looper", root)                         # e.g. a cached node output
    latents = open(os.path.join(av.folder, "latents.safetensors"), "rb").read()
    calls = []
    original = engine.encode_reference
    engine.encode_reference = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        assert av.set_default_loop("ping_pong", "5-7") and not av.set_default_loop("ping_pong", "5-7")
    finally:
        del engine.encode_reference
    assert calls == [] and open(os.path.join(av.folder, "latents.safetensors"), "rb").read() == latents
    assert read_manifest("looper", root)["prepare_id"] == m["prepare_id"]
    run = held.start(feats, runtime, engine=engine)        # the held object sees the new default
    assert list(run.plan.source[:8]) == [5, 6, 7, 7, 6, 5, 5, 6]
    assert not [n for n in run.notes if "reloaded" in n]
    run = held.start(feats, runtime, engine=engine, loop="forward")             # the stored range, another loop
    assert list(run.plan.source[:4]) == [5, 6, 7, 5]
    run = held.start(feats, runtime, engine=engine, loop_range="all")           # the stored loop, every frame
    assert list(run.plan.source[25:29]) == [25, 26, 27, 27]
    remove_avatar("looper", root)


@pytest.mark.parametrize("loop, loop_range", [("ping_pong", "3-12"), ("forward", "3-12")])
def test_live_speech_follows_the_idle_loop_like_offline(loop, loop_range, avatar, clip, voice, engine, runtime):
    from musetalk_enhanced.pipeline.media.audio import to_mono
    from test_lipsync import small_encoder

    pcm = to_mono(voice, 16000).astype(np.float32)
    offline, _, run = speak_image(avatar, features_for(voice), engine, runtime, batch_size=1, loop=loop,
                                  loop_range=loop_range)     # batch 1 on both sides: the same arithmetic
    assert offline.shape[0] > 2 * 10                          # the 10-frame range loops
    whole = LiveSpeech(avatar, runtime, engine=engine, encoder=small_encoder(), batch_size=1, loop=loop,
                       loop_range=loop_range)
    got = whole.push(pcm) + whole.close()
    assert [k for k, _ in got] == list(range(offline.shape[0]))
    assert np.array_equal(np.stack([f for _, f in got]), offline)
    if loop == "ping_pong":
        return                                                # chunked ping-pong: test_live_speech_frames_as_...
    chunked = LiveSpeech(avatar, runtime, engine=engine, encoder=small_encoder(), batch_size=4, loop=loop,
                         loop_range=loop_range)
    made = []
    for i in range(0, len(pcm), 3200):
        made += chunked.push(pcm[i:i + 3200])
    made += chunked.close()
    assert [k for k, _ in made] == list(range(offline.shape[0]))
    for (k, frame), s in zip(made, run.plan.source):
        if 10 <= s <= 14:
            assert np.array_equal(frame, clip[s]), k


# ---- live speech: what a push costs ----------------------------------------------------------------------------------
def test_live_voice_encodes_only_the_open_window_per_push(voice):
    """A 35 s voice pushed in 4 s chunks: each push encodes one 30 s window (two when a window was just completed),
    not the whole voice again; the features after every push are exactly those of the voice received so far."""
    from musetalk_enhanced.models.whisper import WhisperStates, build_encoder
    from musetalk_enhanced.pipeline.audio_features import compute_audio_features
    from musetalk_enhanced.pipeline.avatars.live import LiveVoice
    from musetalk_enhanced.pipeline.media.audio import Audio, to_mono
    from musetalk_enhanced.pipeline.runtime import Runtime

    torch.manual_seed(2)          # a narrow encoder: this test is about which windows are encoded, not their size
    encoder = WhisperStates(build_encoder({"d_model": 64, "encoder_layers": 4, "encoder_attention_heads": 1,
                                           "encoder_ffn_dim": 16, "num_mel_bins": 80, "max_source_positions": 1500}))
    windows = []
    encoder.register_forward_hook(lambda module, args, out: windows.append(int(args[0].shape[0])))
    cpu = Runtime("cpu", torch.float32, show_progress=False)
    pcm = np.resize(to_mono(voice, 16000).astype(np.float32), 35 * 16000)
    live = LiveVoice(FPS, encoder, cpu)
    per_push = []
    for i in range(0, len(pcm), 4 * 16000):
        live.add(pcm[i:i + 4 * 16000])
        before = len(windows)
        got = live.features()
        per_push.append(sum(windows[before:]))
        ref = compute_audio_features(Audio(pcm[None, :i + 4 * 16000], 16000), FPS, "musetalk", encoder, cpu)
        assert torch.equal(got.hidden, ref.hidden) and got.num_frames == ref.num_frames, i
        assert torch.equal(got.windows(range(ref.num_frames)), ref.windows(range(ref.num_frames)))
    assert per_push == [1, 1, 1, 1, 1, 1, 1, 2, 1]           # the push at 32 s completes the first window
    assert live.windows_encoded == sum(per_push) == 10         # the whole voice each time would be 11, and growing
    before = len(windows)
    live.features()
    assert len(windows) == before                              # nothing new: nothing encoded


def test_live_speech_over_30_s_in_one_piece_equals_offline(root, clip, faces, voice, engine, runtime):
    """Across the 30 s seam (a kept window and an open one) the frames are exactly the offline ones. At 2 fps only
    to keep the CPU test short: frames 62 and 63 read the second window's rows and show faces (15, 16)."""
    from musetalk_enhanced.pipeline.media.audio import Audio, to_mono
    from test_lipsync import small_encoder

    av = prepare_at(root, "slow", clip, faces, engine, runtime, 2.0, loop="forward", loop_range="13-16")
    pcm = np.resize(to_mono(voice, 16000).astype(np.float32), 32 * 16000)
    features = features_for(Audio(pcm[None], 16000), 2.0)
    offline, _, run = speak_image(av, features, engine, runtime, batch_size=1)
    assert [int(features.first_rows([k])[0]) >= 1500 for k in (61, 62, 63)] == [False, True, True]
    assert list(run.plan.source[62:]) == [15, 16]
    live = LiveSpeech(av, runtime, engine=engine, encoder=small_encoder(), batch_size=1)
    got = live.push(pcm) + live.close()
    assert offline.shape[0] == 64 and [k for k, _ in got] == list(range(64))
    assert np.array_equal(np.stack([f for _, f in got]), offline)
    assert live.voice.windows_encoded == 2
    remove_avatar("slow", root)


# ---- prepared again under a live reference ---------------------------------------------------------------------------
def test_an_avatar_prepared_again_is_reloaded_and_a_removed_one_refused(root, clip, faces, feats, engine, runtime):
    held = prepare_at(root, "anchor", clip, faces, engine, runtime, FPS)
    first_id = held.prepare_id
    reversed_clip = np.ascontiguousarray(clip[::-1])
    reversed_faces = type(faces)(frames=[type(f)(index=i, shot=f.shot, face=f.face, reason=f.reason)
                                         for i, f in enumerate(faces.frames[::-1])],
                                 width=faces.width, height=faces.height, fps=30.0, shot_starts=[0],
                                 params=faces.params)
    prepare_at(root, "anchor", reversed_clip, reversed_faces, engine, runtime, 30.0)   # e.g. by the CLI, forced
    short = type(feats.audio)(feats.audio.samples[:, :feats.audio.sample_rate * 2 // 5], feats.audio.sample_rate)
    out, report, run = speak_image(held, features_for(short, 30.0), engine, runtime)
    assert held.prepare_id != first_id and held.fps == 30.0 and out.shape[0] == 12
    assert "prepared again after it was loaded; reloaded" in report.text()
    fresh, _, _ = speak_image(Avatar("anchor", root), features_for(short, 30.0), engine, runtime)
    assert np.array_equal(out, fresh)                        # frames and latents of the new preparation
    assert np.array_equal(held.frames.read([0])[0], clip[-1])
    prepare_at(root, "anchor", clip, faces, engine, runtime, FPS)
    live = LiveSpeech(held, runtime, engine=engine)
    assert held.fps == FPS and [n for n in live.notes if "reloaded" in n]
    remove_avatar("anchor", root)
    with pytest.raises(AvatarError, match="avatar 'anchor': its folder .* was removed after the avatar was loaded. "
                                          "Prepare it again"):
        held.start(feats, runtime, engine=engine)
    with pytest.raises(AvatarError, match="was removed"):
        LiveSpeech(held, runtime, engine=engine)


def test_an_avatar_prepared_again_during_a_speech_stops_it_instead_of_mixing(root, clip, faces, feats, engine,
                                                                             runtime):
    held = prepare_at(root, "midway", clip, faces, engine, runtime, FPS)
    run = held.start(feats, runtime, engine=engine, batch_size=4)
    assert held.set_default_loop("forward")                 # a new default loop is no new preparation
    sink = ImageSink(run.plan.num_frames, held.frames.height, held.frames.width)
    run.into(sink)
    run = held.start(feats, runtime, engine=engine, batch_size=4)
    prepare_at(root, "midway", np.ascontiguousarray(clip[::-1]), faces, engine, runtime, FPS)   # forced, mid-speech
    with pytest.raises(AvatarError, match="avatar 'midway' was prepared again or removed while it was speaking"):
        run.into(ImageSink(run.plan.num_frames, held.frames.height, held.frames.width))
