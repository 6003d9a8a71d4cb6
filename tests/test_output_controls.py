"""Output controls: silence keeps the real mouth, masks users can shape, the mask of the changed pixels, faces at the
frame's edge.

Real media: espeak-ng speech with pauses of known length, the scikit-image astronaut (a face) with rocket and
chelsea cutaways (tests/test_lipsync.py), real MTCNN detection and the 68-point landmarks installed; small random
MuseTalk and LatentSync networks."""
import os

import numpy as np
import pytest
import torch

import mediakit as mk
from test_lipsync import (FPS, PLAN, clip, engine, faces, factory_for, features_for, ls_engine,  # noqa: F401
                          runtime, voice)
from musetalk_enhanced.pipeline.backends import blending
from musetalk_enhanced.pipeline.backends.blending import BlendOptions, expanded_crop_box, shaped_mask
from musetalk_enhanced.pipeline.backends.latentsync import LatentSyncBackend
from musetalk_enhanced.pipeline.backends.musetalk import MuseTalkBackend
from musetalk_enhanced.pipeline.backends.selection import MUSETALK, BackendSpec
from musetalk_enhanced.pipeline.faces import cropbox
from musetalk_enhanced.pipeline.lipsync import LipSyncRun
from musetalk_enhanced.pipeline.lipsync import silence as sil
from musetalk_enhanced.pipeline.lipsync.sinks import ImageSink, MaskImageSink
from musetalk_enhanced.pipeline.media.audio import Audio, load_audio_file, to_mono
from musetalk_enhanced.pipeline.media.frames import ArrayFrames, image_to_uint8
from musetalk_enhanced.pipeline.types import Patch

RATE = 16000
GAPS = (0.40, 0.60, 0.80)           # seconds of silence: before the first sentence, between, between
SENTENCES = ("Hello there.", "How are you today?", "Fine, thanks.")


# ---- a voice with known pauses ---------------------------------------------------------------------------------
def _trimmed(samples: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples) > 0.01 * np.abs(samples).max())
    return samples[loud[0]:loud[-1] + 1]


@pytest.fixture(scope="module")
def paused_voice(tmp_path_factory):
    """16 kHz speech: silence (GAPS[0]), sentence, silence, sentence, silence, sentence, 0.5 s silence; a faint noise
    floor (-70 dBFS) throughout. Returns (Audio, [(start, stop) sample ranges of speech])."""
    if not mk.have_espeak():
        pytest.skip("espeak-ng is not installed")
    folder = tmp_path_factory.mktemp("paused")
    parts, spans, pos = [], [], 0
    for gap, text in zip(GAPS, SENTENCES):
        parts.append(np.zeros(int(gap * RATE), np.float32))
        pos += len(parts[-1])
        said = _trimmed(to_mono(load_audio_file(mk.speech(str(folder / f"{len(spans)}.wav"), text)), RATE))
        parts.append(said.astype(np.float32))
        spans.append((pos, pos + len(said)))
        pos += len(said)
    parts.append(np.zeros(int(0.5 * RATE), np.float32))
    x = np.concatenate(parts)
    x += np.random.default_rng(0).normal(0, 10 ** (-70 / 20), len(x)).astype(np.float32)
    return Audio(x[None], RATE), spans


def _truth_voiced(spans, num_frames: int) -> np.ndarray:
    voiced = np.zeros(num_frames, bool)
    for a, b in spans:
        voiced[int(a * FPS / RATE):int(np.ceil(b * FPS / RATE))] = True
    return voiced


def test_silent_stretches_of_real_speech_are_found_within_one_frame(paused_voice):
    audio, spans = paused_voice
    n = int(np.ceil(audio.duration * FPS))
    options = sil.SilenceOptions("keep_original", 3, 0.3)
    found = sil.silent_runs(sil.voice_activity(audio, FPS, n), options.min_frames(FPS))
    truth = sil.silent_runs(_truth_voiced(spans, n), options.min_frames(FPS))
    assert len(truth) == 4 and len(found) == len(truth), (found, truth)
    for (a, b), (ta, tb) in zip(found, truth):
        assert abs(a - ta) <= 1 and abs(b - tb) <= 1, (found, truth)


def test_cross_fades_are_monotonic_and_silence_is_zero():
    w = sil.fade_weights(40, [(10, 18), (30, 34)], 3)
    assert (w[10:18] == 0).all() and (w[30:34] == 0).all()
    assert list(w[6:10]) == [1.0, 0.75, 0.5, 0.25] and list(w[18:22]) == [0.25, 0.5, 0.75, 1.0]
    for a, b in [(10, 18), (30, 34)]:           # rising with the distance from the silence, on both sides
        before, after = w[max(0, a - 4):a][::-1], w[b:b + 4]
        assert (np.diff(before) > 0).all() and (np.diff(after) > 0).all()
    assert (sil.fade_weights(12, [(0, 12)], 3) == 0).all()
    # a faded patch moves monotonically from the source (w=0) to the generated pixels (w=1), and keeps its mask > 0
    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    gen = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    patch = Patch(5, 15, 5, 15, gen, np.full((10, 10), 200, np.uint8))
    dist = [np.abs(sil.fade_patch(patch, src, w).pixels.astype(int) - src[5:15, 5:15]).sum()
            for w in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert dist[0] == 0 and all(a < b for a, b in zip(dist, dist[1:]))
    faded = sil.fade_patch(patch, src, 0.25)
    changed = (faded.pixels != src[5:15, 5:15]).any(-1)
    assert (faded.alpha[changed] > 0).all()


def test_silence_options_are_checked():
    with pytest.raises(ValueError, match="on_silence"):
        sil.SilenceOptions("mute")
    with pytest.raises(ValueError, match="silence_fade"):
        sil.SilenceOptions("keep_original", 99)


@pytest.fixture(scope="module")
def face_clip():
    """The astronaut, moving slightly, 28 frames (every frame a face)."""
    return mk.animate(mk.photo("astronaut", (256, 256)), 28, dx=0.5)


@pytest.fixture(scope="module")
def face_clip_faces(face_clip, runtime):
    from musetalk_enhanced.pipeline.faces.detectors import create_detector
    from musetalk_enhanced.pipeline.faces.tracks import analyze_faces

    return analyze_faces(ArrayFrames(face_clip, FPS), create_detector("mtcnn", runtime), runtime, min_face_size=30)


def _run(frames, faces, features, engine, runtime, blend="feather", silence=None, factory=None, batch_size=4):
    run = LipSyncRun(frames, faces, features, BackendSpec(choice=MUSETALK), batch_size=batch_size,
                     blend_mode=blend, silence=silence)
    sink = ImageSink(run.plan.num_frames, frames.height, frames.width)
    masks = MaskImageSink(run.plan.num_frames, frames.height, frames.width)
    report = run.into(sink, runtime, engine_factory=factory or factory_for(engine), mask_sink=masks)
    return run, report, image_to_uint8(sink.close()), (masks.close().numpy() * 255).round().astype(np.uint8)


def test_keep_original_passes_silence_through_bit_identical(face_clip, face_clip_faces, paused_voice, engine,
                                                            runtime):
    audio, _ = paused_voice
    frames = ArrayFrames(face_clip, FPS)
    options = sil.SilenceOptions("keep_original", 3, 0.3)
    run, report, out, masks = _run(frames, face_clip_faces, features_for(audio), engine, runtime, silence=options)
    kept = np.flatnonzero(run.weights <= 0)
    assert len(kept) > 40 and sorted(report.kept_silent) == kept.tolist()
    assert set(kept) <= set(report.passed_through)
    assert "silence:" in report.text() and "kept the original mouth" in report.text()
    for k in kept:
        assert np.array_equal(out[k], face_clip[run.plan.source[k]]), f"kept-silent frame {k} changed"
        assert not masks[k].any()
    # the faded frames change less than fully synced ones, and their masks shrink with the weight
    fading = [k for k in range(len(out)) if 0 < run.weights[k] < 1]
    full = [k for k in range(len(out)) if run.weights[k] == 1]
    assert fading and full
    assert max(masks[k].max() for k in fading) < masks[full].max(axis=(1, 2)).min()
    # sync (the default) lip-syncs those same frames
    _, synced, out_sync, _ = _run(frames, face_clip_faces, features_for(audio), engine, runtime)
    assert not synced.kept_silent and any(not np.array_equal(out_sync[k], out[k]) for k in kept)


def test_keep_original_needs_the_voice_samples(face_clip, face_clip_faces, paused_voice):
    from dataclasses import replace

    from musetalk_enhanced.pipeline.types import LipSyncError

    feats = replace(features_for(paused_voice[0]), audio=None)
    with pytest.raises(LipSyncError, match="on_silence"):
        LipSyncRun(ArrayFrames(face_clip, FPS), face_clip_faces, feats,
                   silence=sil.SilenceOptions("keep_original"))


# ---- masks ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def astronaut_face(runtime):
    """The astronaut photo, its detection with 68 landmarks and its crop box."""
    from musetalk_enhanced.pipeline.faces.detectors import create_detector

    img = mk.photo("astronaut")
    dets = create_detector("mtcnn", runtime, landmarks="auto").detect(img[None])[0]
    det = max(dets, key=lambda d: d.area)
    if det.landmarks is None or len(det.landmarks) != 68:
        pytest.skip("no 68-point landmark model installed")
    box, _ = cropbox.face_crop_geometry(det, img.shape[1], img.shape[0])
    return img, det, box


@pytest.mark.parametrize("dilate", [0, 8])
def test_mouth_mask_covers_the_mouth_and_never_the_eyes(astronaut_face, dilate):
    img, det, box = astronaut_face
    (x1, y1, x2, y2), alpha = shaped_mask(box, BlendOptions("mouth", 16, dilate), det.landmarks)
    lm = np.asarray(det.landmarks)

    def at(points):
        return np.array([alpha[int(round(y)) - y1, int(round(x)) - x1] for x, y in points])

    assert (at(lm[48:68]) > 128).all(), at(lm[48:68])     # every mouth point well inside
    assert (at(lm[36:48]) == 0).all()                     # eyes untouched
    assert (at(lm[17:27]) == 0).all()                     # brows untouched
    assert alpha[0].max() == 0 and alpha[:, 0].max() == 0 and alpha[-1].max() == 0   # fades out at the crop box


def test_shaped_masks_grow_with_dilation_and_soften_with_feather(astronaut_face):
    img, det, box = astronaut_face
    areas = [int((shaped_mask(box, BlendOptions("mouth", 16, d), det.landmarks)[1] > 0).sum()) for d in (-8, 0, 8)]
    assert areas[0] < areas[1] < areas[2]
    soft = [int(((a := shaped_mask(box, BlendOptions("box", f, 0), det.landmarks)[1]) > 0).sum() - (a == 255).sum())
            for f in (4, 16, 32)]
    assert soft[0] < soft[1] < soft[2]
    _, boxed = shaped_mask(box, BlendOptions("box"), det.landmarks)
    centre = (box[1] + box[3]) // 2 - box[1]
    assert boxed[:centre].max() == 0 and boxed.max() == 255      # the lower half of the crop box, no higher


def test_mouth_mask_from_the_five_point_estimate_is_close(astronaut_face):
    img, det, box = astronaut_face
    five = np.asarray(det.landmarks)[[36, 45, 30, 48, 54]]  # eye corners stand in for eye centres: close enough
    five[0] = np.asarray(det.landmarks)[36:42].mean(0)
    five[1] = np.asarray(det.landmarks)[42:48].mean(0)
    _, full = shaped_mask(box, BlendOptions("mouth"), det.landmarks)
    _, approx = shaped_mask(box, BlendOptions("mouth"), five)
    inter = ((full > 0) & (approx > 0)).sum()
    assert inter / ((full > 0) | (approx > 0)).sum() > 0.6


@pytest.mark.parametrize("mode", ["feather", "box", "mouth"])
def test_mask_is_above_zero_on_every_changed_pixel_and_zero_elsewhere(clip, faces, voice, engine, runtime, mode):
    frames = ArrayFrames(clip, FPS)
    run, report, out, masks = _run(frames, faces, features_for(voice), engine, runtime, blend=mode)
    assert masks.shape == out.shape[:3]
    for k in range(len(out)):
        s = int(run.plan.source[k])
        changed = (out[k] != clip[s]).any(-1)
        assert (masks[k][changed] > 0).all(), f"frame {k}: a changed pixel has mask 0"
        if faces.frames[s].face is None:
            assert not masks[k].any() and not changed.any()
            continue
        x0, y0, x1, y1 = expanded_crop_box(faces.frames[s].face.crop_box)
        outside = np.ones(changed.shape, bool)
        outside[max(0, y0):y1, max(0, x0):x1] = False
        assert not masks[k][outside].any()
    assert masks.any()


def test_latentsync_takes_the_shaped_masks(clip, faces, voice, engine, ls_engine, runtime):
    def factory(blend):
        def make(backend):
            return LatentSyncBackend(ls_engine, backend, blend=blend) if backend != MUSETALK else \
                MuseTalkBackend(engine, "feather")
        return make

    frames = ArrayFrames(clip, FPS)
    feats = features_for(voice, layout="latentsync")
    outs = {}
    for blend in ("auto", "box"):
        run = LipSyncRun(frames, faces, feats, BackendSpec(choice="latentsync-1.5"), blend_mode=blend)
        sink = ImageSink(run.plan.num_frames, frames.height, frames.width)
        masks = MaskImageSink(run.plan.num_frames, frames.height, frames.width)
        report = run.into(sink, runtime, engine_factory=factory(BlendOptions(blend)), mask_sink=masks)
        assert report.backends_used == ["latentsync-1.5"]
        outs[blend] = (run, image_to_uint8(sink.close()), (masks.close().numpy() * 255).round())
    run, out, masks = outs["box"]
    for k in range(len(out)):
        s = int(run.plan.source[k])
        changed = (out[k] != clip[s]).any(-1)
        assert (masks[k][changed] > 0).all()
        if faces.frames[s].face is not None:
            x1, y1, x2, y2 = faces.frames[s].face.crop_box
            centre = (y1 + y2) // 2
            assert not changed[:centre].any(), "box mask: nothing above the crop box's centre row changes"
            assert not changed[:, :x1].any() and not changed[:, x2:].any()
    assert not np.array_equal(outs["auto"][1], out)      # the own mask by default, the box when asked


# ---- faces at the frame's edge -----------------------------------------------------------------------------------
def _iou(a, b) -> float:
    from musetalk_enhanced.pipeline.faces.tracks import box_iou

    return box_iou(a, b)


@pytest.mark.parametrize("side", ["left", "top", "right", "bottom"])
def test_edge_faces_pad_keeps_the_crop_of_the_same_face_away_from_the_edge(astronaut_face, runtime, side):
    """A tight close-up: the frame's border cuts the face so that its outermost landmarks lie 2 px outside (the
    landmark model guesses them). ``pad`` gives the crop box of the uncut photo (IoU >= 0.95); ``original`` (left:
    the detector box fallback) does not. Deeper cuts: bench/geometry.py."""
    from musetalk_enhanced.pipeline.faces.detectors import create_detector

    img, det, ref = astronaut_face
    lm = np.asarray(det.landmarks)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = 0, 0, w, h
    if side == "left":
        x0 = int(lm[:, 0].min()) + 2
    elif side == "right":
        x1 = int(np.ceil(lm[:, 0].max())) - 2
    elif side == "top":
        y0 = ref[1] + 6              # the crop box's top (mirrored chin) leaves the frame
    else:
        y1 = ref[3] - 6              # the extra margin under the chin leaves the frame
    cut = np.ascontiguousarray(img[y0:y1, x0:x1])
    found = max(create_detector("mtcnn", runtime, landmarks="auto").detect(cut[None])[0], key=lambda d: d.area)
    boxes = {}
    for mode in cropbox.EDGE_FACES:
        box, _ = cropbox.face_crop_geometry(found, cut.shape[1], cut.shape[0], edge_faces=mode)
        boxes[mode] = (box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0)
    assert _iou(boxes["pad"], ref) >= 0.95, (side, boxes, ref)
    if side == "left":
        assert _iou(boxes["original"], ref) < 0.9
    # the pad crop is the shape of the box, cut from the frame padded with its border pixels
    from musetalk_enhanced.pipeline.backends.musetalk_engine import crop_face

    box = cropbox.face_crop_geometry(found, cut.shape[1], cut.shape[0], edge_faces="pad")[0]
    assert crop_face(cut, box).shape == (256, 256, 3)


def test_edge_boxes_paste_only_pixels_inside_the_frame():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    box = (-20, 30, 60, 130)                        # past the left and the bottom edge
    for mode in ("feather", "box", "mouth"):
        patch = blending.paste_face(frame, face, box, BlendOptions(mode))
        assert 0 <= patch.x0 < patch.x1 <= 100 and 0 <= patch.y0 < patch.y1 <= 120
        assert patch.pixels.shape[:2] == patch.alpha.shape == (patch.y1 - patch.y0, patch.x1 - patch.x0)
        assert (patch.pixels != frame[patch.y0:patch.y1, patch.x0:patch.x1]).any()
    from musetalk_enhanced.pipeline.backends.musetalk_engine import crop_face

    padded = crop_face(frame, box, size=100)        # 80x100 box -> columns left of the frame repeat column 0
    assert padded.shape == (100, 100, 3)
    inner = crop_face(frame, (0, 30, 60, 120), size=100)
    assert inner.shape == (100, 100, 3)


def test_latentsync_warp_replicates_the_border_with_pad():
    from musetalk_enhanced.pipeline.backends.latentsync_align import FaceAligner

    frame = np.full((64, 64, 3), 200, np.uint8)
    aligner = FaceAligner(64)
    pts = np.array([[2.0, 20.0], [30.0, 20.0], [16.0, 34.0]])     # a face at the left edge
    m = aligner.affine(pts, smooth=False)
    assert (aligner.warp(frame, m) == 127).any()                   # the original fills with grey
    assert (aligner.warp(frame, m, replicate=True) >= 199).all()   # pad: the frame's border pixels (truncated)


def test_original_rule_is_unchanged_away_from_the_edge(astronaut_face):
    img, det, box = astronaut_face
    for mode in cropbox.EDGE_FACES:
        assert cropbox.face_crop_geometry(det, img.shape[1], img.shape[0], edge_faces=mode)[0] == box
    with pytest.raises(ValueError, match="edge_faces"):
        cropbox.face_crop_geometry(det, img.shape[1], img.shape[0], edge_faces="crop")


# ---- the front ends ----------------------------------------------------------------------------------------------
def test_nodes_take_the_controls_last_and_give_the_mask_last(clip, faces, voice, small_models_dir, monkeypatch):
    """New inputs and outputs go last (saved workflows keep loading); the MASK output is 0 on cutaways and above 0
    on every changed pixel."""
    from musetalk_enhanced.models import registry
    from musetalk_enhanced.nodes.face_nodes import MuseTalkFaceDetect
    from musetalk_enhanced.nodes.lipsync_nodes import MuseTalkBatchedLipSync
    from musetalk_enhanced.pipeline.backends import musetalk_engine
    from musetalk_enhanced.pipeline.media.frames import uint8_to_image

    node = MuseTalkBatchedLipSync
    assert list(node.INPUT_TYPES()["optional"])[-5:] == ["on_silence", "silence_fade", "min_silence", "feather_px",
                                                         "dilate_px"]
    assert node.RETURN_TYPES[:5] == ("IMAGE", "MUSETALK_FRAMES", "AUDIO", "FLOAT", "STRING")
    assert node.RETURN_TYPES[-1] == "MASK" and node.RETURN_NAMES[-1] == "mask"
    assert list(MuseTalkFaceDetect.INPUT_TYPES()["optional"])[-1] == "edge_faces"
    registry.set_folder_resolver(None)
    musetalk_engine.clear_cache()
    monkeypatch.setenv("MUSETALK_MODELS_DIR", small_models_dir)
    result = node().lipsync(faces, features_for(voice), batch_size=4, blend_mode="box", images=uint8_to_image(clip),
                            fps=FPS, backend=BackendSpec(choice=MUSETALK, auto_download=False))["result"]
    images, mask = image_to_uint8(result[0]), result[-1]
    assert mask.shape == images.shape[:3] and mask.dtype == torch.float32
    n = len(clip)
    for k in range(images.shape[0]):
        s = k % (2 * n) if k % (2 * n) < n else 2 * n - 1 - k % (2 * n)
        changed = (images[k] != clip[s]).any(-1)
        assert (mask[k].numpy()[changed] > 0).all()
        if faces.frames[s].face is None:
            assert not mask[k].any()
    assert mask.max() > 0.99


@pytest.fixture(scope="module")
def presenter(tmp_path_factory, clip, faces, engine, runtime):
    from musetalk_enhanced.pipeline.avatars import frames_identity, prepare_avatar

    frames = ArrayFrames(clip, FPS)
    return prepare_avatar("silent_host", frames, faces, runtime, source=frames_identity(frames), settings={},
                          engine=engine, blend_mode=BlendOptions("mouth", 12, 4),
                          root=str(tmp_path_factory.mktemp("avatars")))


def test_avatar_speech_keeps_silence_offline_and_live_alike(presenter, clip, paused_voice, engine, runtime):
    """The avatar's speech with keep_original: kept frames bit-identical; live, pushed whole or in 200 ms chunks,
    gives exactly the offline frames (it waits ``silence_fade + min_silence`` frames of voice for each)."""
    from musetalk_enhanced.pipeline.avatars.live import LiveSpeech
    from test_lipsync import small_encoder

    audio, _ = paused_voice
    options = sil.SilenceOptions("keep_original", 2, 0.3)
    run = presenter.start(features_for(audio), runtime, engine=engine, batch_size=1, silence=options)
    sink = ImageSink(run.plan.num_frames, presenter.frames.height, presenter.frames.width)
    report = run.into(sink)
    offline = image_to_uint8(sink.close())
    assert report.kept_silent
    for k in report.kept_silent:
        assert np.array_equal(offline[k], clip[run.plan.source[k]])
    pcm = audio.samples[0]
    whole = LiveSpeech(presenter, runtime, engine=engine, encoder=small_encoder(), batch_size=1, silence=options)
    got = whole.push(pcm) + whole.close()
    assert [k for k, _ in got] == list(range(len(offline)))
    assert np.array_equal(np.stack([f for _, f in got]), offline)
    assert whole.kept_silent == report.kept_silent
    chunked = LiveSpeech(presenter, runtime, engine=engine, encoder=small_encoder(), batch_size=2, silence=options)
    made = []
    for i in range(0, len(pcm), 3200):
        out = chunked.push(pcm[i:i + 3200])
        for k, _ in out:          # never before the voice that decides its weight
            assert (k + options.lookahead(FPS)) * RATE / FPS <= i + 3200
        made += out
    made += chunked.close()
    assert [k for k, _ in made] == list(range(len(offline)))
    for k, frame in made:
        if k in report.kept_silent:
            assert np.array_equal(frame, clip[run.plan.source[k]])


def test_request_fields_reach_every_front_end():
    from musetalk_enhanced.pipeline.jobs import DubRequest, PrepareRequest, SpeakRequest
    from musetalk_enhanced.pipeline.jobs.fields import RequestError, specs

    dub = {s.name for s in specs(DubRequest)}
    assert {"on_silence", "silence_fade", "min_silence", "blend_mode", "feather_px", "dilate_px", "edge_faces",
            "mask_out"} <= dub
    assert {"on_silence", "silence_fade", "min_silence"} <= {s.name for s in specs(SpeakRequest)}
    assert {"feather_px", "dilate_px", "edge_faces"} <= {s.name for s in specs(PrepareRequest)}
    base = dict(video="v.mp4", name="host")
    # edge_faces and a shaped mask's sizes are part of an avatar's preparation; sizes of other modes are not
    assert PrepareRequest(**base, edge_faces="original").settings() != PrepareRequest(**base).settings()
    assert PrepareRequest(**base, feather_px=4).settings() == PrepareRequest(**base).settings()
    assert PrepareRequest(**base, blend_mode="mouth", feather_px=4).settings() != \
        PrepareRequest(**base, blend_mode="mouth").settings()
    with pytest.raises(RequestError, match="mask_out"):
        DubRequest(video="v.mp4", out="o.mp4", mask_out="o.mp4").validate()
    with pytest.raises(RequestError, match="on_silence"):
        DubRequest.from_mapping({"video": "v.mp4", "out": "o.mp4", "on_silence": "mute"}).validate()
