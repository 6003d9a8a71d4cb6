"""Frames, video files and audio on real media generated at test time."""
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

import mediakit as mk
from musetalk_enhanced.pipeline.media import audio as A
from musetalk_enhanced.pipeline.media.frames import ArrayFrames, FramesError, ImageFrames
from musetalk_enhanced.pipeline.media.video import VideoError, VideoFileFrames, probe_video, select_frames
from musetalk_enhanced.pipeline.media.writer import VideoWriter, unique_output_path, write_video


@pytest.fixture(scope="module")
def astro_clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    frames = mk.animate(mk.photo("astronaut", (256, 256)), 40, dx=1.0)
    audio = mk.tone(440, 40 / 25, 44100, channels=2)
    path = mk.write_video(str(d / "astro.mp4"), frames, 25, crf=12, audio=audio, audio_rate=44100)
    return path, frames


def test_round_trip_count_fps_size_and_pixels(astro_clip, tmp_path):
    path, frames = astro_clip
    info = probe_video(path)
    assert info.frame_count == 40 and abs(info.avg_fps - 25) < 1e-6 and not info.is_vfr and info.has_audio
    vf = VideoFileFrames(path, block=8)
    assert (len(vf), vf.width, vf.height, vf.fps) == (40, 256, 256, 25.0)
    got = np.concatenate([b.rgb for b in vf.iter_batches(7)])
    assert got.shape == frames.shape
    assert np.abs(got.astype(int) - frames).mean() < 3.0  # H.264 crf 12
    # random and backward access returns the same pixels as sequential decoding
    idx = [39, 3, 3, 20, 0, 38]
    assert np.array_equal(vf.read(idx), got[idx])
    # our writer round trip
    out = unique_output_path(str(tmp_path), "rt")
    write_video(out, ArrayFrames(got, 25.0), crf=14)
    back = np.concatenate([b.rgb for b in VideoFileFrames(out).iter_batches(16)])
    assert back.shape == got.shape and np.abs(back.astype(int) - got).mean() < 3.0


def test_ntsc_rate_is_exact(tmp_path):
    p = mk.write_video(str(tmp_path / "ntsc.mp4"), mk.color_frames(30), fps=30000 / 1001)
    vf = VideoFileFrames(p)
    assert abs(vf.fps - 30000 / 1001) < 1e-9


def test_select_every_nth_skip_and_cap(tmp_path):
    frames = mk.color_frames(50)
    p = mk.write_video(str(tmp_path / "ids.mp4"), frames, 25, crf=0, pix_fmt="yuv444p")
    vf = VideoFileFrames(p, skip_first_frames=5, select_every_nth=3, frame_load_cap=6)
    assert mk.frame_ids(vf.read(range(len(vf)))) == [5, 8, 11, 14, 17, 20]
    assert vf.fps == pytest.approx(25 / 3)


def test_variable_frame_rate_respects_timestamps(tmp_path):
    # 20 frames whose display times (ms) are irregular: some frames stay on screen much longer than others
    times_ms = [0, 40, 80, 300, 340, 380, 420, 460, 900, 940, 980, 1020, 1060, 1100, 1140, 1180, 1220, 1260, 1300, 1340]
    frames = mk.color_frames(len(times_ms))
    p = mk.write_video(str(tmp_path / "vfr.mkv"), frames, fps=25, crf=0, pix_fmt="yuv444p",
                       pts=times_ms, time_base=Fraction(1, 1000))
    info = probe_video(p)
    assert info.is_vfr
    np.testing.assert_allclose(info.times, np.array(times_ms) / 1000.0, atol=1e-6)
    vf = VideoFileFrames(p, force_rate=25)
    ids = mk.frame_ids(vf.read(range(len(vf))))
    # output frame k shows the source frame on screen at k/25 s
    expect = [int(np.searchsorted(np.array(times_ms), k * 40 + 1e-6, side="right") - 1) for k in range(len(vf))]
    assert ids == expect
    assert len(vf) == int((1340 + 40) / 40)  # duration incl. the last frame's display time


def test_odd_size_source_and_output(tmp_path):
    frames = mk.animate(mk.photo("coffee", (321, 241)), 6)
    p = mk.write_video(str(tmp_path / "odd.mkv"), frames, 25, crf=0, pix_fmt="yuv444p")
    vf = VideoFileFrames(p)
    assert (vf.width, vf.height) == (321, 241)
    got = vf.read(range(6))
    assert np.abs(got.astype(int) - frames).max() <= 2  # lossless 4:4:4 (colour conversion rounding only)
    out = unique_output_path(str(tmp_path), "odd")
    write_video(out, vf, crf=10)
    back = VideoFileFrames(out)
    assert (back.width, back.height) == (322, 242)  # 4:2:0 needs even sizes: one replicated row/column added
    assert np.abs(back.read([2])[0, :241, :321].astype(int) - frames[2]).mean() < 4


def test_rotation_metadata_is_applied(tmp_path):
    img = np.zeros((48, 64, 3), np.uint8)
    img[:10, :20] = 255
    p = mk.write_video(str(tmp_path / "rot.mp4"), np.stack([img] * 3), 25, crf=0, pix_fmt="yuv444p", rotation=90)
    vf = VideoFileFrames(p)
    assert (vf.width, vf.height) == (48, 64)
    got = vf.read([0])[0]
    assert np.abs(got.astype(int) - np.rot90(img, 1)).mean() < 2


def test_ten_bit_source(tmp_path):
    frames = mk.animate(mk.photo("astronaut", (128, 128)), 5)
    p = str(tmp_path / "tenbit.mkv")
    try:
        mk.write_video(p, frames, 25, codec="ffv1", pix_fmt="yuv420p10le")
    except Exception as exc:  # pragma: no cover - depends on the FFmpeg build
        pytest.skip(f"no 10-bit encoder: {exc}")
    info = probe_video(p)
    assert "10" in info.pix_fmt
    got = VideoFileFrames(p).read(range(5))
    assert got.dtype == np.uint8 and np.abs(got.astype(int) - frames).mean() < 3


def test_streaming_memory_does_not_grow_with_length(tmp_path):
    """Peak RSS of decoding a clip 10x longer stays within a generous bound of the short one."""
    def make(n):
        p = str(tmp_path / f"long{n}.mp4")
        rng = np.random.default_rng(0)
        base = (rng.random((360, 640, 3)) * 255).astype(np.uint8)
        frames = np.stack([np.roll(base, i, axis=1) for i in range(50)])
        import av
        c = av.open(p, "w")
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "30"}
        for i in range(n):
            for pkt in s.encode(av.VideoFrame.from_ndarray(frames[i % 50], format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
        c.close()
        return p

    code = ("import sys, resource; sys.path.insert(0, {tests!r}); import conftest\n"
            "from musetalk_enhanced.pipeline.media.video import VideoFileFrames\n"
            "v = VideoFileFrames(sys.argv[1])\n"
            "n = sum(len(b) for b in v.iter_batches(16))\n"
            "print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    tests = os.path.dirname(os.path.abspath(__file__))
    peaks = {}
    for n in (100, 1000):
        p = make(n)
        out = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code.format(tests=tests), p], capture_output=True, text=True,
                             check=True).stdout.split()
        assert int(out[0]) == n
        peaks[n] = int(out[1]) / 1024  # MB
    # 900 extra frames at 640x360 would be ~620 MB if held; allow 120 MB of noise
    assert peaks[1000] - peaks[100] < 120, peaks


def test_writer_muxes_audio_and_fits_length(tmp_path):
    frames = mk.color_frames(50, 64, 64)
    long_audio = A.Audio(mk.tone(1000, 3.0, 44100, channels=2), 44100)
    out = unique_output_path(str(tmp_path), "mux")
    write_video(out, ArrayFrames(frames, 25.0), long_audio, audio_fit="pad_or_trim_audio")
    a = A.load_audio_file(out)
    assert abs(a.duration - 2.0) < 0.05 and a.channels == 2
    assert mk.dominant_frequency(a.samples[0, 2000:80000], a.sample_rate) == pytest.approx(1000, abs=2)
    out2 = unique_output_path(str(tmp_path), "mux")
    write_video(out2, ArrayFrames(frames, 25.0), long_audio, audio_fit="hold_last_frame")
    assert len(VideoFileFrames(out2)) == 75
    short = A.Audio(mk.tone(500, 1.0, 16000), 16000)
    out3 = unique_output_path(str(tmp_path), "mux")
    write_video(out3, ArrayFrames(frames, 25.0), short, audio_fit="pad_or_trim_audio")
    a3 = A.load_audio_file(out3)
    assert abs(a3.duration - 2.0) < 0.05
    assert np.abs(a3.samples[0, int(1.3 * a3.sample_rate):]).max() < 0.01  # padded with silence


def test_output_names_never_clobber_and_abort_leaves_nothing(tmp_path):
    keep = tmp_path / "MuseTalk_00001.mp4"
    keep.write_bytes(b"precious")
    p = unique_output_path(str(tmp_path), "MuseTalk")
    assert p.endswith("MuseTalk_00002.mp4")
    with pytest.raises(VideoError):
        VideoWriter(str(keep), 25, 64, 64)
    with pytest.raises(RuntimeError):
        with VideoWriter(p, 25, 64, 64) as w:
            w.write(mk.color_frames(3, 64, 64))
            raise RuntimeError("cancelled")
    assert keep.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["MuseTalk_00001.mp4"]


@pytest.mark.parametrize("bad,match", [
    ("missing.mp4", "not found"),
    ("empty.mp4", "empty"),
    ("garbage.mp4", "cannot open"),
    ("audio_only.wav", "no video stream"),
])
def test_bad_video_inputs_have_clear_errors(tmp_path, bad, match):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(os.urandom(5000))
    mk.write_wav(str(tmp_path / "audio_only.wav"), mk.tone(440, 0.5, 16000), 16000)
    with pytest.raises(VideoError, match=match):
        VideoFileFrames(str(tmp_path / bad))


def test_nonsense_options_rejected(astro_clip):
    path, _ = astro_clip
    with pytest.raises(VideoError, match="select_every_nth"):
        VideoFileFrames(path, select_every_nth=0)
    with pytest.raises(VideoError, match="frame_load_cap"):
        VideoFileFrames(path, frame_load_cap=-1)
    with pytest.raises(VideoError, match="skip_first_frames"):
        VideoFileFrames(path, skip_first_frames=1000)
    with pytest.raises(FramesError, match="zero frames"):
        ImageFrames(torch.zeros(0, 8, 8, 3), 25)
    with pytest.raises(FramesError, match="fps"):
        ImageFrames(torch.zeros(2, 8, 8, 3), 0)


def test_select_frames_force_rate_by_time():
    times = np.arange(10) / 10.0  # 10 fps, 1 s
    assert select_frames(times, force_rate=20).tolist() == [i // 2 for i in range(20)]
    assert select_frames(times, force_rate=5).tolist() == [0, 2, 4, 6, 8]


# --------------------------------------------------------------------------------------------------------- audio ---
def test_audio_resampling_keeps_a_1khz_tone_at_1khz():
    for rate in (8000, 22050, 44100, 48000, 96000):
        a = A.Audio(mk.tone(1000, 1.0, rate, channels=2), rate)
        y = A.to_mono(a, 16000)
        assert y.shape[0] == 16000
        assert mk.dominant_frequency(y, 16000) == pytest.approx(1000, abs=1.5)
        assert np.abs(y[200:-200]).max() == pytest.approx(0.5, abs=0.02)  # amplitude preserved


def test_audio_identity_at_16k_is_bit_exact():
    x = (np.random.default_rng(0).standard_normal(1600) * 0.1).astype(np.float32)
    assert np.array_equal(A.resample(x, 16000, 16000), x)


def test_chunked_resampling_equals_one_call(monkeypatch):
    """Feeding libswresample in chunks (small memory on long audio) gives the samples of one whole-signal call."""
    import av

    def one_call(x, src, dst):
        r = av.AudioResampler(format="flt", layout="mono", rate=dst)
        frame = av.AudioFrame.from_ndarray(x[None].copy(), format="flt", layout="mono")
        frame.sample_rate, frame.pts = src, 0
        y = np.concatenate([f.to_ndarray().reshape(-1) for f in list(r.resample(frame)) + list(r.resample(None))])
        return y[: int(round(x.shape[0] * dst / src))]

    monkeypatch.setattr(A, "RESAMPLE_CHUNK", 4096)
    rng = np.random.default_rng(3)
    for src, length in ((44100, 44100 * 2 + 17), (48000, 48000 + 5), (8000, 8000 * 3 + 1)):
        x = (0.1 * rng.standard_normal((2, length))).astype(np.float32)
        y = A.resample(x, src, 16000)
        assert y.shape == (2, int(round(length * 16000 / src))) and y.dtype == np.float32
        for ch in range(2):
            ref = one_call(x[ch], src, 16000)
            assert np.array_equal(y[ch, : ref.shape[0]], ref) and not y[ch, ref.shape[0]:].any()


def test_from_comfy_accepts_int_pcm_lazy_mapping_and_shapes():
    from collections.abc import Mapping

    class Lazy(Mapping):  # like VideoHelperSuite's LazyAudioMap: a Mapping, not a dict
        def __init__(self):
            self.loaded = False

        def __getitem__(self, k):
            self.loaded = True
            return {"waveform": torch.tensor([[[16384, -32768, 0]]], dtype=torch.int16), "sample_rate": 8000}[k]

        def __iter__(self):
            return iter(("waveform", "sample_rate"))

        def __len__(self):
            return 2

    a = A.from_comfy(Lazy())
    assert a.sample_rate == 8000 and a.samples.dtype == np.float32
    np.testing.assert_array_equal(a.samples[0], [0.5, -1.0, 0.0])
    b = A.from_comfy({"waveform": torch.zeros(1, 6, 100, dtype=torch.int32), "sample_rate": 48000})
    assert b.channels == 6
    with pytest.raises(A.AudioError, match="VHS_AUDIO"):
        A.from_comfy(lambda: b"")
    with pytest.raises(A.AudioError, match="sample_rate"):
        A.from_comfy({"waveform": torch.zeros(1, 1, 10)})
    with pytest.raises(A.AudioError, match="no audio connected"):
        A.from_comfy(None)


def test_load_audio_formats_rates_and_channels(tmp_path):
    p16 = mk.write_wav(str(tmp_path / "s16.wav"), mk.tone(1000, 0.5, 44100, channels=2), 44100, 2)
    p32 = mk.write_wav(str(tmp_path / "s32.wav"), mk.tone(1000, 0.5, 8000, channels=1), 8000, 4)
    a = A.load_audio_file(p16)
    assert (a.sample_rate, a.channels, a.num_samples) == (44100, 2, 22050)
    assert np.abs(a.samples).max() == pytest.approx(0.5, abs=1e-3)
    b = A.load_audio_file(p32)
    assert (b.sample_rate, b.channels) == (8000, 1) and np.abs(b.samples).max() == pytest.approx(0.5, abs=1e-3)
    part = A.load_audio_file(p16, start=0.1, duration=0.2)
    assert part.num_samples == 8820
    with pytest.raises(A.AudioError, match="past the end"):
        A.load_audio_file(p16, start=5)
    with pytest.raises(A.AudioError, match="not found"):
        A.load_audio_file(str(tmp_path / "nope.wav"))
    silent_video = mk.write_video(str(tmp_path / "silent.mp4"), mk.color_frames(5), 25)
    with pytest.raises(A.AudioError, match="no audio track"):
        A.load_audio_file(silent_video)


@pytest.mark.skipif(not mk.have_espeak(), reason="espeak-ng not installed")
def test_espeak_speech_loads_and_resamples(tmp_path):
    p = mk.speech(str(tmp_path / "voice.wav"))
    a = A.load_audio_file(p)
    assert a.sample_rate == 22050 and a.duration > 1.0
    y = A.to_mono(a, 16000)
    assert abs(len(y) - a.duration * 16000) <= 1
    assert np.sqrt(np.mean(y ** 2)) > 0.01  # it is speech, not silence
