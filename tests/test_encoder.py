"""The writer's encoder choice: libx264, NVIDIA h264_nvenc when it opens, and the fallback to libx264 (on a machine
without a GPU, h264_nvenc is listed by FFmpeg but does not open)."""
import av
import numpy as np
import pytest
import torch

import mediakit as mk
from musetalk_enhanced.pipeline.media import writer as W
from musetalk_enhanced.pipeline.media.video import VideoError
from musetalk_enhanced.pipeline.media.writer import ENCODERS, VideoWriter, pick_encoder

FPS = 25


def _nvenc_opens() -> bool:
    return W._nvenc_error(64, 48, W._rate(FPS)) == ""


needs_no_nvenc = pytest.mark.skipif(_nvenc_opens(), reason="h264_nvenc opens here; the fallback cannot be seen")


@pytest.fixture(scope="module")
def frames():
    return mk.color_frames(8, h=48, w=64)


def _write(path, frames, **kw):
    with VideoWriter(str(path), FPS, 64, 48, **kw) as w:
        w.write(frames)
    return w


def _decode(path):
    with av.open(str(path)) as c:
        codec = c.streams.video[0].codec_context.name
        got = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    return codec, got


@pytest.fixture(scope="module")
def reference(frames, tmp_path_factory):
    """The same frames through the default (libx264) writer, decoded."""
    w = _write(tmp_path_factory.mktemp("ref") / "ref.mp4", frames)
    assert (w.encoder, w.encoder_note) == ("libx264", "")
    return _decode(w.path)


@needs_no_nvenc
def test_nvenc_falls_back_to_libx264_and_says_so(frames, reference, tmp_path):
    w = _write(tmp_path / "nv.mp4", frames, encoder="nvenc")
    assert w.encoder == "libx264"
    assert "h264_nvenc" in w.encoder_note and "fell back to libx264" in w.encoder_note
    codec, got = _decode(w.path)
    assert codec == "h264" and got.shape == (8, 48, 64, 3)
    assert np.array_equal(got, reference[1])  # the same encoder and settings as the default writer


def test_auto_without_cuda_is_libx264(frames, reference, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    w = _write(tmp_path / "auto.mp4", frames, encoder="auto")
    assert w.encoder == "libx264" and "CUDA is not available" in w.encoder_note
    codec, got = _decode(w.path)
    assert codec == "h264" and np.array_equal(got, reference[1])


def test_unknown_encoder_is_refused_before_any_file(tmp_path):
    out = tmp_path / "bad.mp4"
    with pytest.raises(VideoError) as e:
        VideoWriter(str(out), FPS, 64, 48, encoder="bogus")
    msg = str(e.value)
    assert msg.startswith("encoder:") and "'bogus'" in msg and all(c in msg for c in ENCODERS)
    assert list(tmp_path.iterdir()) == []


def test_pick_encoder_when_nvenc_opens(monkeypatch):
    monkeypatch.setattr(W, "_nvenc_error", lambda width, height, rate: "")
    assert pick_encoder("libx264", 64, 48, FPS) == ("libx264", "")
    assert pick_encoder("nvenc", 64, 48, FPS) == ("h264_nvenc", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    codec, note = pick_encoder("auto", 64, 48, FPS)
    assert codec == "libx264" and note
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_encoder("auto", 64, 48, FPS) == ("h264_nvenc", "")
    codec, note = pick_encoder("nvenc", 64, 48, FPS, crf=0)        # lossless is libx264's
    assert codec == "libx264" and "crf 0" in note


def test_pick_encoder_when_nvenc_does_not_open(monkeypatch):
    monkeypatch.setattr(W, "_nvenc_error", lambda width, height, rate: "Cannot load libcuda.so.1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for choice in ("nvenc", "auto"):
        codec, note = pick_encoder(choice, 64, 48, FPS)
        assert codec == "libx264" and "Cannot load libcuda.so.1" in note and "fell back to libx264" in note


def test_write_video_passes_the_encoder_on(frames, reference, tmp_path, monkeypatch):
    from musetalk_enhanced.pipeline.media.frames import ArrayFrames

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = W.write_video(str(tmp_path / "wv.mp4"), ArrayFrames(frames, FPS), encoder="auto")
    codec, got = _decode(out)
    assert codec == "h264" and np.array_equal(got, reference[1])
    with pytest.raises(VideoError, match="encoder"):
        W.write_video(str(tmp_path / "wv2.mp4"), ArrayFrames(frames, FPS), encoder="x265")
