"""End to end: a real edited clip (astronaut shots + rocket/chelsea cutaways), espeak-ng or tone audio, real MTCNN
face detection, small random-weight MuseTalk models -> lip-synced frames. Asserts the behaviour users rely on."""
import os

import numpy as np
import pytest
import torch

import mediakit as mk
from musetalk_enhanced.models import registry
from musetalk_enhanced.pipeline.backends.latentsync import LatentSyncBackend
from musetalk_enhanced.pipeline.backends.musetalk import MuseTalkBackend
from musetalk_enhanced.pipeline.backends.selection import MUSETALK, BackendSpec
from musetalk_enhanced.pipeline.lipsync import LipSyncError, run_lipsync
from musetalk_enhanced.pipeline.lipsync.plan import make_plan, ping_pong
from musetalk_enhanced.pipeline.lipsync.sinks import ImageSink, WriterSink
from musetalk_enhanced.pipeline.media.audio import Audio, load_audio_file
from musetalk_enhanced.pipeline.backends.blending import expanded_crop_box
from musetalk_enhanced.pipeline.media.frames import ArrayFrames, ImageFrames, uint8_to_image
from musetalk_enhanced.pipeline.runtime import Cancelled, Runtime

UNET_SMALL = {"act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [16, 32, 32, 32],
              "center_input_sample": False, "cross_attention_dim": 384,
              "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "DownBlock2D"], "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
              "in_channels": 8, "layers_per_block": 1, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
              "norm_num_groups": 8, "out_channels": 4, "sample_size": 32,
              "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
VAE_SMALL = {"act_fn": "silu", "block_out_channels": [8, 16, 16, 16], "down_block_types": ["DownEncoderBlock2D"] * 4,
             "in_channels": 3, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4, "out_channels": 3,
             "sample_size": 256, "up_block_types": ["UpDecoderBlock2D"] * 4, "scaling_factor": 0.18215}
WHISPER_SMALL = {"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                 "num_mel_bins": 80, "max_source_positions": 1500}

FPS = 25.0
PLAN = (("astronaut", 10), ("rocket", 5), ("astronaut", 8), ("chelsea", 5))   # 28 frames, cutaways 10-14, 23-27


@pytest.fixture(scope="module")
def runtime():
    return Runtime(device="cpu", dtype=torch.float32, show_progress=False)


@pytest.fixture(scope="module")
def engine(runtime):
    from musetalk_enhanced.models.musetalk_unet import build_unet
    from musetalk_enhanced.models.vae import build_vae
    from musetalk_enhanced.pipeline.backends.musetalk_engine import MuseTalkEngine

    torch.manual_seed(0)
    return MuseTalkEngine(build_unet(UNET_SMALL), build_vae(VAE_SMALL), None, runtime, posterior="mode")


@pytest.fixture(scope="module")
def clip():
    return mk.edited_clip((256, 256), PLAN)


@pytest.fixture(scope="module")
def faces(clip, runtime):
    from musetalk_enhanced.pipeline.faces.detectors import create_detector
    from musetalk_enhanced.pipeline.faces.tracks import analyze_faces

    return analyze_faces(ArrayFrames(clip, FPS), create_detector("mtcnn", runtime), runtime, min_face_size=30)


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    if mk.have_espeak():
        p = mk.speech(str(tmp_path_factory.mktemp("voice") / "voice.wav"), "Hello, lip sync.", speed=220)
        a = load_audio_file(p)
    else:  # pragma: no cover
        a = Audio(mk.tone(220, 1.5, 22050), 22050)
    return a


_ENCODER = []


def small_encoder():
    from musetalk_enhanced.models.whisper import WhisperStates, build_encoder

    if not _ENCODER:
        torch.manual_seed(1)
        _ENCODER.append(WhisperStates(build_encoder(WHISPER_SMALL)))
    return _ENCODER[0]


def features_for(audio, fps=FPS, layout="musetalk"):
    from musetalk_enhanced.pipeline.audio_features import compute_audio_features

    return compute_audio_features(audio, fps, layout, small_encoder(),
                                  Runtime("cpu", torch.float32, show_progress=False))


@pytest.fixture(scope="module")
def feats(voice):
    return features_for(voice)


def factory_for(engine, record=None):
    def make(backend):
        if backend != MUSETALK:
            raise registry.MissingWeightsError([registry.REGISTRY["latentsync16.unet"]], {}, "test")
        runner = MuseTalkBackend(engine, "feather")
        if record is not None:
            orig = runner.patches

            def patches(ks, srcs, src_u8, faces, windows):
                record.append((list(ks), list(srcs), windows.clone()))
                return orig(ks, srcs, src_u8, faces, windows)

            runner.patches = patches
        return runner
    return make


def test_detected_cutaways_match_the_edit(faces):
    cut = [f.index for f in faces.frames if f.face is None]
    assert cut == list(range(10, 15)) + list(range(23, 28))


@pytest.mark.parametrize("policy", ["follow_audio", "follow_video", "shortest"])
def test_cutaways_bit_identical_faces_change_only_in_region(clip, faces, feats, engine, runtime, policy):
    image = uint8_to_image(clip) + 0.0013  # not on the uint8 grid: pass-through must still be exact
    frames = ImageFrames(image, FPS)
    plan = make_plan(len(frames), feats.duration, FPS, policy)
    sink = ImageSink(plan.num_frames, frames.height, frames.width)
    report, audio = run_lipsync(frames, faces, feats, BackendSpec(), runtime, sink, batch_size=5,
                                  length_policy=policy, engine_factory=factory_for(engine))
    out = sink.close()
    n_audio = int(np.ceil(feats.duration * FPS - 1e-6))
    expect_n = {"follow_audio": n_audio, "follow_video": 28, "shortest": min(28, n_audio)}[policy]
    assert out.shape[0] == expect_n == report.num_frames
    assert audio.num_samples == round(expect_n / FPS * feats.audio.sample_rate)
    changed_any = 0
    for k in range(expect_n):
        s = int(plan.source[k])
        diff = (out[k] != image[s]).any(-1).numpy()
        if faces.frames[s].face is None:
            assert not diff.any(), f"cutaway output frame {k} (source {s}) was modified"
            assert k in report.passed_through
        else:
            x0, y0, x1, y1 = expanded_crop_box(faces.frames[s].face.crop_box)
            inside = np.zeros_like(diff)
            inside[max(0, y0):y1, max(0, x0):x1] = True
            assert not (diff & ~inside).any(), f"output frame {k} changed outside its paste region"
            # the feather mask covers the lower half of the crop box (its blur reaches k//2 rows above)
            cx0, cy0, cx1, cy1 = faces.frames[s].face.crop_box
            k_blur = int(0.1 * (x1 - x0) // 2 * 2) + 1
            assert not diff[:(cy0 + cy1) // 2 - k_blur // 2].any()
            changed_any += int(diff.any())
    assert changed_any > 0
    assert sorted(report.synced[MUSETALK] + report.passed_through) == list(range(expect_n))


@pytest.mark.parametrize("blend", ["feather", "mouth"])
def test_frame_ops_torch_makes_the_same_frames(clip, faces, feats, engine, runtime, blend, monkeypatch):
    """frame_ops=torch (crop, resize and paste as torch ops, pipeline/backends/frame_ops.py) on the CPU: the same
    output frames and masks as the OpenCV/Pillow path, cutaways untouched."""
    from dataclasses import replace

    from musetalk_enhanced.pipeline.lipsync.sinks import MaskImageSink

    outs = {}
    for ops in ("cv2", "torch"):
        monkeypatch.setattr(engine, "runtime", replace(runtime, frame_ops=ops))
        made = []

        def make(backend, ops=ops):
            made.append(MuseTalkBackend(engine, blend))
            return made[-1]

        frames = ArrayFrames(clip, FPS)
        sink, masks = ImageSink(28, frames.height, frames.width), MaskImageSink(28, frames.height, frames.width)
        report, _ = run_lipsync(frames, faces, feats, BackendSpec(), runtime, sink, batch_size=4,
                                length_policy="follow_video", engine_factory=make, blend_mode=blend, mask_sink=masks)
        assert made[0]._on_device() == (ops == "torch")
        outs[ops] = (sink.close().numpy(), masks.close().numpy(), report.passed_through)
    assert np.array_equal(outs["torch"][0], outs["cv2"][0])
    assert np.array_equal(outs["torch"][1], outs["cv2"][1])
    assert outs["torch"][2] == outs["cv2"][2] == list(range(10, 15)) + list(range(23, 28))
    assert (outs["torch"][0] != uint8_to_image(clip).numpy()).any()


def test_follow_audio_ping_pongs_and_uses_absolute_audio_time(clip, faces, voice, engine, runtime):
    long_audio = Audio(np.concatenate([voice.samples] * 2, axis=1), voice.sample_rate)  # longer than the video
    assert long_audio.duration * FPS > 2 * 28 - 8  # the loop comes back over most frames
    feats = features_for(long_audio)
    frames = ArrayFrames(clip, FPS)
    record, encoded = [], []
    orig_encode = engine.encode_reference
    engine.encode_reference = lambda crops, *a, **kw: encoded.append(len(crops)) or orig_encode(crops, *a, **kw)
    plan = make_plan(len(frames), feats.duration, FPS, "follow_audio")
    assert plan.num_frames > 28
    assert [ping_pong(k, 28) for k in (0, 27, 28, 29, 55, 56)] == [0, 27, 27, 26, 0, 0]
    sink = ImageSink(plan.num_frames, frames.height, frames.width)
    try:
        report, _ = run_lipsync(frames, faces, feats, BackendSpec(), runtime, sink, batch_size=8,
                                  engine_factory=factory_for(engine, record))
    finally:
        del engine.encode_reference
    out = sink.close()
    # latents are computed once per source frame, even though the loop shows most frames twice
    assert sum(encoded) == len({s for _, srcs, _ in record for s in srcs}) == len(faces.face_indices())
    seen = {}
    for ks, srcs, windows in record:
        for j, k in enumerate(ks):
            assert srcs[j] == ping_pong(k, 28)
            torch.testing.assert_close(windows[j], feats.windows([k])[0])   # absolute time k/fps
            seen[k] = srcs[j]
    cut_ks = [k for k in range(plan.num_frames) if faces.frames[ping_pong(k, 28)].face is None]
    assert set(cut_ks).isdisjoint(seen)
    for k in cut_ks:
        assert torch.equal(out[k], uint8_to_image(clip[ping_pong(k, 28)]))
    assert "ping-pong" in report.text()


def test_fps_29_97_windows_follow_true_time(clip, faces, voice, engine, runtime):
    fps = 30000 / 1001
    feats = features_for(voice, fps)
    frames = ArrayFrames(clip, fps)
    record = []
    plan = make_plan(len(frames), feats.duration, fps, "follow_video")
    run_lipsync(frames, faces, feats, BackendSpec(), runtime, ImageSink(plan.num_frames, 256, 256),
                  length_policy="follow_video", engine_factory=factory_for(engine, record))
    centres = feats.window_centre_seconds([ks[-1] for ks, _, _ in record])
    for (ks, _, _), c in zip(record, centres):
        assert abs(float(c) - ks[-1] / fps) <= 0.03  # within one 20 ms feature step (+ window centring)


def test_runs_under_comfyui_inference_mode(clip, faces, feats, engine, runtime):
    """ComfyUI executes nodes under torch.inference_mode: the IMAGE output is an inference tensor that the writer
    thread must be allowed to fill."""
    frames = ImageFrames(uint8_to_image(clip), FPS)
    with torch.inference_mode():
        plan = make_plan(28, feats.duration, FPS, "shortest")
        sink = ImageSink(plan.num_frames, 256, 256)
        run_lipsync(frames, faces, feats, BackendSpec(), runtime, sink, length_policy="shortest",
                      engine_factory=factory_for(engine))
        out = sink.close()
    assert out.shape[0] == plan.num_frames and torch.equal(out[12], frames.image[12])


def test_fallback_is_reported(clip, faces, feats, engine, runtime):
    frames = ArrayFrames(clip, FPS)
    plan = make_plan(28, feats.duration, FPS, "shortest")
    report, _ = run_lipsync(frames, faces, feats, BackendSpec(choice="latentsync-1.6"), runtime,
                              ImageSink(plan.num_frames, 256, 256), length_policy="shortest",
                              engine_factory=factory_for(engine))
    assert report.backends_used == [MUSETALK]
    assert any("latentsync-1.6 unavailable -> musetalk-v1.5" in f for f in report.fallbacks)
    assert "fallback" in report.text()


def test_out_of_memory_halves_the_batch(clip, faces, feats, engine, runtime):
    frames = ArrayFrames(clip, FPS)
    state = {"failed": False}

    def make(backend):
        runner = MuseTalkBackend(engine, "feather")
        orig = runner.patches

        def patches(ks, *a):
            if len(ks) > 3 and not state["failed"]:
                state["failed"] = True
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return orig(ks, *a)
        runner.patches = patches
        return runner

    plan = make_plan(28, feats.duration, FPS, "shortest")
    sink = ImageSink(plan.num_frames, 256, 256)
    report, _ = run_lipsync(frames, faces, feats, BackendSpec(), runtime, sink, batch_size=8,
                              length_policy="shortest", engine_factory=make)
    assert report.batch_sizes == [8, 4]
    assert sink.close().shape[0] == plan.num_frames
    assert "lowered to 4" in report.text()


def test_cancel_mid_run_leaves_no_partial_file(clip, faces, feats, engine, tmp_path):
    from musetalk_enhanced.pipeline.media.writer import VideoWriter, unique_output_path

    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 2

    rt = Runtime("cpu", torch.float32, show_progress=False, cancel_flag=cancel)
    path = unique_output_path(str(tmp_path), "cancel")
    sink = WriterSink(VideoWriter(path, FPS, 256, 256, feats.audio))
    with pytest.raises(Cancelled):
        run_lipsync(ArrayFrames(clip, FPS), faces, feats, BackendSpec(), rt, sink, batch_size=4,
                      engine_factory=factory_for(engine))
    assert os.listdir(tmp_path) == []


def test_missing_weights_error_lists_every_file(clip, faces, feats, runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("MUSETALK_MODELS_DIR", str(tmp_path / "models"))
    registry.set_folder_resolver(None)
    frames = ArrayFrames(clip, FPS)
    with pytest.raises(registry.MissingWeightsError) as err:
        run_lipsync(frames, faces, feats, BackendSpec(choice="musetalk-v1.5", auto_download=False), runtime,
                      ImageSink(40, 256, 256), blend_mode="feather")
    msg = str(err.value)
    for rel in ("musetalkV15/unet.pth", "musetalkV15/musetalk.json", "sd-vae/config.json"):
        assert rel in msg
    assert "auto_download is off" in msg and str(tmp_path / "models") in msg


def test_all_cutaways_pass_through_without_loading_models(runtime):
    from musetalk_enhanced.pipeline.types import FaceSequence, FrameFaces

    clip = np.stack([mk.photo("rocket", (64, 64))] * 6)
    faces = FaceSequence([FrameFaces(i, 0, None, reason="no face") for i in range(6)], 64, 64, FPS)
    feats = features_for(Audio(mk.tone(300, 0.2, 16000), 16000))

    def boom(backend):
        raise AssertionError("no model should load when no frame has a face")

    sink = ImageSink(6, 64, 64)
    report, _ = run_lipsync(ArrayFrames(clip, FPS), faces, feats, BackendSpec(), runtime, sink,
                              length_policy="follow_video", engine_factory=boom)
    assert torch.equal(sink.close(), uint8_to_image(clip))
    assert "no frame has a face" in report.text()


def test_streamed_hand_off_is_lossless(clip, faces, feats, engine, runtime, tmp_path, monkeypatch):
    """Streamed input: the lip-sync output handed to Mux Video is the source frames plus the patches (no
    intermediate encode). The frames Mux Video receives are exactly the frames the lip-sync loop produced, and
    cutaway frames are bit-identical to what the loader decoded."""
    from musetalk_enhanced.pipeline.lipsync.patched_frames import PatchSink, PatchedFrames
    from musetalk_enhanced.pipeline.media import video as V
    from musetalk_enhanced.pipeline.media import writer as W

    src_path = mk.write_video(str(tmp_path / "in.mp4"), clip, FPS, crf=20)
    source = V.VideoFileFrames(src_path)
    plan = make_plan(len(source), feats.duration, FPS, "follow_audio")
    produced = ImageSink(plan.num_frames, 256, 256)
    sink = PatchSink(source, plan.source, str(tmp_path / "temp"))
    both = type("Both", (), {"write": lambda self, b: (produced.write(b), sink.write(b)),
                             "close": lambda self: sink.close(), "abort": lambda self: sink.abort()})()
    report, _ = run_lipsync(source, faces, feats, BackendSpec(), runtime, both, batch_size=4,
                              engine_factory=factory_for(engine))
    out = both.close()
    assert isinstance(out, PatchedFrames) and len(out) == plan.num_frames
    from musetalk_enhanced.pipeline.media.frames import image_to_uint8

    expect = image_to_uint8(produced.close())
    received = []
    monkeypatch.setattr(W.VideoWriter, "write", lambda self, rgb: received.append(np.array(rgb)))
    monkeypatch.setattr(W.VideoWriter, "close", lambda self: self.path)
    W.write_video(str(tmp_path / "out.mp4"), out)
    received = np.concatenate(received)
    assert np.array_equal(received, expect)
    for k in report.passed_through:
        assert np.array_equal(received[k], source.read([plan.source[k]])[0])
    assert len(out.patches) == len(report.synced[MUSETALK]) > 0
    assert len(os.listdir(tmp_path / "temp")) == 1  # one patch file, face-sized PNGs
    assert os.path.getsize(os.path.join(tmp_path / "temp", os.listdir(tmp_path / "temp")[0])) < \
        0.5 * len(out.patches) * 256 * 256 * 3


def test_all_cutaway_video_muxes_like_one_direct_encode(runtime, tmp_path):
    """No face anywhere: the lip-sync node's streamed output, muxed, is one encode of the input."""
    from musetalk_enhanced.pipeline.lipsync.patched_frames import PatchSink
    from musetalk_enhanced.pipeline.media import video as V
    from musetalk_enhanced.pipeline.media import writer as W
    from musetalk_enhanced.pipeline.types import FaceSequence, FrameFaces

    clip = np.stack([mk.photo("rocket", (64, 64))] * 4 + [mk.photo("coffee", (64, 64))] * 4)
    source = V.VideoFileFrames(mk.write_video(str(tmp_path / "in.mp4"), clip, FPS, crf=25))
    faces = FaceSequence([FrameFaces(i, 0, None, reason="no face") for i in range(8)], 64, 64, FPS)
    feats = features_for(Audio(mk.tone(300, 8 / FPS, 16000), 16000))
    plan = make_plan(8, feats.duration, FPS, "follow_video")
    sink = PatchSink(source, plan.source, str(tmp_path))
    run_lipsync(source, faces, feats, BackendSpec(), runtime, sink, length_policy="follow_video",
                  engine_factory=lambda b: (_ for _ in ()).throw(AssertionError("no model for cutaways")))
    out = sink.close()
    a = W.write_video(str(tmp_path / "direct.mp4"), source)
    b = W.write_video(str(tmp_path / "through_lipsync.mp4"), out)
    da, db = V.VideoFileFrames(a), V.VideoFileFrames(b)
    assert len(da) == len(db) == 8 and np.array_equal(da.read(range(8)), db.read(range(8)))


def test_bad_inputs(clip, faces, feats, runtime):
    with pytest.raises(LipSyncError, match="length_policy"):
        make_plan(10, 1.0, 25, "longest")
    with pytest.raises(ValueError, match="Face Detect"):
        run_lipsync(ArrayFrames(clip[:5], FPS), faces, feats, BackendSpec(), runtime, ImageSink(5, 256, 256))
    with pytest.raises(LipSyncError, match="backend"):
        BackendSpec(choice="wav2lip")


# ---------------------------------------------------------------------------------------------- LatentSync path ---
@pytest.fixture(scope="module")
def ls_engine():
    from diffusers import AutoencoderKL

    from musetalk_enhanced.models.latentsync_unet3d import UNet3DConditionModel
    from musetalk_enhanced.pipeline.backends.latentsync_engine import LatentSyncEngine

    torch.manual_seed(0)
    unet = UNet3DConditionModel({"block_out_channels": [32, 32, 32, 32]}).eval()
    vae = AutoencoderKL(block_out_channels=[32, 32, 32, 32], layers_per_block=1,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        latent_channels=4, norm_num_groups=32).eval()
    mask = np.ones((3, 64, 64))
    mask[:, 36:60, 8:56] = 0.0
    return LatentSyncEngine(unet, vae, Runtime("cpu", torch.float32, show_progress=False), resolution=64, steps=2,
                            mask=mask)


def ls_factory(ls_engine, engine, calls, fail_on=None):
    def make(backend):
        if backend == MUSETALK:
            return MuseTalkBackend(engine, "feather")
        runner = LatentSyncBackend(ls_engine, backend)
        orig = runner.patches

        def patches(ks, srcs, src_u8, faces, windows):
            calls.append((list(ks), list(srcs), windows.clone()))
            if fail_on is not None:
                fail_on(ks)
            return orig(ks, srcs, src_u8, faces, windows)

        runner.patches = patches
        return runner
    return make


def test_latentsync_chunks_never_span_cuts_or_cutaways(clip, faces, engine, ls_engine, voice, runtime):
    from dataclasses import replace as dc_replace

    feats_ls = features_for(voice, layout="latentsync")
    # make a cut inside the first face run (frame 5) as if the camera angle changed
    seq = dc_replace(faces, frames=[dc_replace(f, shot=f.shot + (1 if f.index >= 5 else 0) if f.index < 10 else
                                               f.shot + 1) for f in faces.frames])
    frames = ImageFrames(uint8_to_image(clip), FPS)
    calls = []
    plan = make_plan(28, feats_ls.duration, FPS, "follow_video")
    sink = ImageSink(plan.num_frames, 256, 256)
    report, _ = run_lipsync(frames, seq, feats_ls, BackendSpec(choice="latentsync-1.6"), runtime, sink,
                              length_policy="follow_video", engine_factory=ls_factory(ls_engine, engine, calls))
    out = sink.close()
    chunks = [ks for ks, _, _ in calls]
    assert chunks == [list(range(0, 5)), list(range(5, 10)), list(range(15, 23))]
    for ks, srcs, windows in calls:
        torch.testing.assert_close(windows, feats_ls.windows(ks))  # absolute frame time, not index in the run
    for k in list(range(10, 15)) + list(range(23, 28)):
        assert torch.equal(out[k], frames.image[k])
    assert report.backends_used == ["latentsync-1.6"] and not report.fallbacks
    assert (out[:10] != frames.image[:10]).any()


def test_latentsync_failure_falls_back_per_chunk(clip, faces, engine, ls_engine, voice, runtime):
    feats_ls = features_for(voice, layout="latentsync")
    calls = []

    def fail(ks):
        if ks[0] == 15:
            raise RuntimeError("boom in the UNet")

    frames = ArrayFrames(clip, FPS)
    plan = make_plan(28, feats_ls.duration, FPS, "follow_video")
    report, _ = run_lipsync(frames, faces, feats_ls, BackendSpec(choice="latentsync-1.6"), runtime,
                              ImageSink(plan.num_frames, 256, 256), length_policy="follow_video",
                              engine_factory=ls_factory(ls_engine, engine, calls, fail),
                              whisper_encoder=small_encoder())
    assert sorted(report.synced["latentsync-1.6"]) == list(range(10))
    assert sorted(report.synced[MUSETALK]) == list(range(15, 23))
    assert any("frames 15-22: latentsync-1.6 failed (RuntimeError: boom" in f for f in report.fallbacks)


def test_latentsync_out_of_memory_shortens_chunks(clip, faces, engine, ls_engine, voice, runtime):
    feats_ls = features_for(voice, layout="latentsync")
    calls = []

    def oom(ks):
        if len(ks) > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    frames = ArrayFrames(clip, FPS)
    plan = make_plan(28, feats_ls.duration, FPS, "follow_video")
    report, _ = run_lipsync(frames, faces, feats_ls, BackendSpec(choice="latentsync-1.6"), runtime,
                              ImageSink(plan.num_frames, 256, 256), length_policy="follow_video",
                              engine_factory=ls_factory(ls_engine, engine, calls, oom))
    ok = [ks for ks, _, _ in calls if len(ks) <= 4]
    assert ok and all(len(ks) <= 4 for ks in ok)
    assert sorted(report.synced["latentsync-1.6"]) == list(range(10)) + list(range(15, 23))
    assert "chunk length lowered to 4" in report.text()
