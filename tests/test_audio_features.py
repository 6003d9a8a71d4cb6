"""Audio features: parity with the original MuseTalk / LatentSync audio paths (fixtures), frame timing at any fps,
resampling, edge cases (silence, one sample), bounded memory on 10 minutes, and the Whisper Audio Features node."""
import json
import math
import os
import shutil
import subprocess
import threading

import numpy as np
import pytest
import torch

from conftest import shared_path
from musetalk_enhanced.models import registry
from musetalk_enhanced.models import whisper as W
from musetalk_enhanced.models.positional_encoding import PositionalEncoding
from musetalk_enhanced.pipeline import audio_features as AF
from musetalk_enhanced.pipeline.media.audio import Audio, load_audio_file, resample
from musetalk_enhanced.pipeline.runtime import Cancelled, Runtime
from test_weights import whisper as tw_whisper

torch.set_num_threads(2)
WHISPER_ATOL = 1e-5  # ../shared/fixtures/musetalk/README.md "Suggested tolerances"
# float32 exp/sin/log and the FFT differ by an ulp or so between CPU vector units (AVX2 vs AVX-512 kernels): the
# fixtures are bit-exact on the machine that made them (verify_report_pinned_env.json), within these elsewhere.
PE_ATOL = 1e-3       # the 5000-row table: float32 rounding of angles up to 5000 rad is ~5e-4
PE_USED_ATOL = 1e-5  # the 50 rows MuseTalk adds to its audio windows
MEL_ATOL = 2e-4      # normalised log10-mel (range about -1.5..1.5): 0.2 % of a mel bin's power near the floor


def cpu_runtime(**kw):
    return Runtime(device="cpu", show_progress=False, **kw)


class CheapEncoder(torch.nn.Module):
    """Stands in for whisper where only shapes, timing and memory matter: row r of a window is a projection of mel
    frames 2r and 2r+1 (so it still depends on the audio), the five states are offsets of it."""

    def __init__(self, d=384):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Linear(160, d)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(d, 160, generator=g) / 13.0)
            self.proj.bias.zero_()
        self.d_model = d
        self.calls = []

    def forward(self, mel, final_norm=True):
        self.calls.append(int(mel.shape[0]))
        b = mel.shape[0]
        x = mel.float().reshape(b, 80, 1500, 2).permute(0, 2, 1, 3).reshape(b, 1500, 160)
        h = self.proj(x)
        return torch.stack([h + (layer if final_norm else -layer) for layer in range(5)], dim=2)


class NoEncoder(torch.nn.Module):
    def forward(self, mel, final_norm=True):
        raise AssertionError("the encoder must not run when no row is kept")


_SMALL = {}


def small_whisper():
    """A random whisper encoder with the real mel / position sizes and narrow layers (d_model 64)."""
    if "enc" not in _SMALL:
        cfg = dict(W.WHISPER_TINY_CONFIG, d_model=64, encoder_attention_heads=2, encoder_ffn_dim=256)
        enc = W.build_encoder(cfg)
        sd = tw_whisper.random_whisper_state_dict({k: tuple(v.shape) for k, v in enc.state_dict().items()}, seed=1,
                                                  dtype=torch.float32)
        sd["embed_positions.weight"] = W.sinusoids(1500, 64)
        enc.load_state_dict(sd)
        _SMALL["enc"] = W.WhisperStates(enc, "small random whisper")
    return _SMALL["enc"]


def test_signal(rate, seconds=2.0):
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
            + 0.2 * np.sin(2 * np.pi * (300 + 900 * t) * t)).astype(np.float32)


test_signal.__test__ = False


# ---- fixtures: MuseTalk ---------------------------------------------------------------------------------------------
_FIX = {}


def musetalk_fixture():
    if "mt" not in _FIX:
        from safetensors.torch import load_file

        t = load_file(shared_path("fixtures", "musetalk", "parity_small.safetensors"))
        with open(shared_path("fixtures", "musetalk", "parity_small_meta.json")) as fh:
            cfg = json.load(fh)["configs"]["whisper_small"]
        enc = W.build_encoder(cfg)
        W.load_strict(enc, {k[16:]: v.float() for k, v in t.items() if k.startswith("whisper.encoder.")}, "fixture")
        _FIX["mt"] = (t, W.WhisperStates(enc, "fixture"))
    return _FIX["mt"]


def wav_int16(t, key):
    return Audio((t[key].numpy().astype(np.float32) / 32768.0)[None], 16000)


def test_positional_encoding_parity():
    t, _ = musetalk_fixture()
    pe = PositionalEncoding(384, 5000)
    assert torch.allclose(pe.pe, t["pe.pe"], atol=PE_ATOL, rtol=0)
    assert torch.allclose(pe.pe[:, :50], t["pe.pe"][:, :50], atol=PE_USED_ATOL, rtol=0)
    assert torch.allclose(pe(t["test_pe.x"]), t["test_pe.out"], atol=PE_USED_ATOL, rtol=0)
    assert "pe" not in pe.state_dict()  # a buffer built in code, never part of a checkpoint


def test_musetalk_parity_25_and_30_fps():
    t, enc = musetalk_fixture()
    audio = wav_int16(t, "audio.wav_int16")
    assert np.array_equal(audio.samples[0], t["audio.waveform"].numpy())
    seg = torch.zeros(1, AF.SEGMENT_SAMPLES)
    seg[0, :32000] = torch.from_numpy(audio.samples[0])
    assert torch.allclose(AF.musetalk_log_mel(seg), t["audio.mel"], atol=MEL_ATOL)

    f25 = AF.compute_audio_features(audio, 25, "musetalk", enc, cpu_runtime())
    assert f25.num_frames == 50 and f25.rows == 100 and f25.duration == 2.0
    assert torch.allclose(f25.hidden, t["audio.whisper_hidden"][0], atol=WHISPER_ATOL)
    assert torch.allclose(f25.all_windows(), t["audio.chunks_fps25"], atol=WHISPER_ATOL)

    f30 = AF.compute_audio_features(audio, 30, "musetalk", enc, cpu_runtime())
    assert f30.num_frames == int(t["audio.chunks_fps30_num"]) == 60
    assert torch.equal(f30.first_rows(range(60)) + 4, t["audio.chunks_fps30_start_index"])  # padded start indices
    sel = t["audio.chunks_fps30_sel_index"].tolist()
    assert torch.allclose(f30.windows(sel), t["audio.chunks_fps30_sel"], atol=WHISPER_ATOL)
    # the original's int(fps) changes nothing at integer rates
    c30 = AF.compute_audio_features(audio, 30, "musetalk", enc, cpu_runtime(), compat=True)
    assert c30.num_frames == 60 and torch.equal(c30.all_windows(), f30.all_windows())


def test_musetalk_parity_31s_seam():
    t, enc = musetalk_fixture()
    audio = wav_int16(t, "audio_long.wav_int16")
    f = AF.compute_audio_features(audio, 25, "musetalk", enc, cpu_runtime(), batch_size=2)
    assert f.num_frames == int(t["audio_long.num_chunks"]) == 775
    assert f.rows == 1550 and f.info["windows_30s"] == 2
    idx = t["audio_long.whisper_hidden_sel_index"]
    assert torch.allclose(f.hidden[idx], t["audio_long.whisper_hidden_sel"][0], atol=WHISPER_ATOL)
    sel = t["audio_long.chunks_fps25_sel_index"].tolist()
    assert torch.allclose(f.windows(sel), t["audio_long.chunks_fps25_sel"], atol=WHISPER_ATOL)
    segs = torch.zeros(2, AF.SEGMENT_SAMPLES)
    segs[0] = torch.from_numpy(audio.samples[0, :480000])
    segs[1, :16000] = torch.from_numpy(audio.samples[0, 480000:])
    assert torch.allclose(AF.musetalk_log_mel(segs), t["audio_long.mel"], atol=MEL_ATOL)


# ---- fixtures: LatentSync -------------------------------------------------------------------------------------------
def test_latentsync_parity(tmp_path):
    from safetensors.torch import load_file

    t = load_file(shared_path("fixtures", "latentsync", "parity_small.safetensors"))
    with open(shared_path("fixtures", "latentsync", "configs.json")) as fh:
        dims = json.load(fh)["whisper_dims"]
    oa = {k[len("whisper."):]: v for k, v in t.items() if k.startswith("whisper.")}
    torch.save({"dims": dims, "model_state_dict": oa}, str(tmp_path / "tiny.pt"))
    enc = W.load_openai_encoder(str(tmp_path / "tiny.pt"))

    audio = wav_int16(t, "audio.pcm_int16")
    assert np.array_equal(audio.samples[0], t["audio.waveform"].numpy())
    mel = AF.latentsync_log_mel(audio.samples[0], torch.device("cpu"))
    assert mel.shape == (80, 200)
    assert torch.allclose(mel, t["audio.mel"], atol=MEL_ATOL)

    f = AF.compute_audio_features(audio, 25, "latentsync", enc, cpu_runtime())
    assert f.rows == 100 and f.num_frames == 52
    assert torch.allclose(f.hidden, t["audio.whisper_feature"], atol=WHISPER_ATOL)
    assert torch.equal(f.row_indices(range(52)), t["audio.chunk_feature_indices"])
    expect = t["audio.whisper_feature"][t["audio.chunk_feature_indices"]].reshape(52, 50, 384)
    assert torch.allclose(f.all_windows(), expect, atol=WHISPER_ATOL)


# ---- timing at any fps ----------------------------------------------------------------------------------------------
def original_latentsync_count(rows, fps):
    """The original feature2chunks loop (appends, then stops once int(i*50/fps) > rows), run literally."""
    i = 0
    while True:
        start = int(i * (50.0 / fps))
        i += 1
        if start > rows:
            return i


@pytest.mark.parametrize("fps,expected", [(24.0, 1440), (25.0, 1500), (29.97, 1798), (30.0, 1800)])
def test_frame_counts_and_window_positions_without_drift(fps, expected):
    audio = Audio(np.zeros((1, 60 * 16000), np.float32), 16000)
    enc = CheapEncoder()
    f = AF.compute_audio_features(audio, fps, "musetalk", enc, cpu_runtime())
    assert f.num_frames == expected == math.floor(60 * fps + 1e-9)
    k = torch.arange(f.num_frames)
    err = f.window_centre_seconds(k) - k.double() / fps  # window centre vs the frame's true time
    if fps >= 25:
        assert err.min() > 0 and err.max() <= 0.02 + 1e-9  # within one 20 ms step, never drifting
    else:
        # m = ceil(50/24) = 3: the original pads 6 rows on the left, so its window sits 1-2 rows earlier
        assert err.min() >= -0.04 - 1e-9 and err.max() <= -0.02 + 1e-9
    last = f.window_centre_seconds([f.num_frames - 1])[0].item()
    assert abs(last - (f.num_frames - 1) / fps) <= 0.04 + 1e-9
    if fps == 29.97:
        assert abs(last - 1797 / 29.97) <= 0.02

    # compat: the original's int(fps) numbers (and its drift at 29.97)
    c = AF.compute_audio_features(audio, fps, "musetalk", enc, cpu_runtime(), compat=True)
    assert c.num_frames == math.floor(60 * int(fps))
    if fps == int(fps):
        assert c.num_frames == f.num_frames and torch.equal(c.row_indices(k), f.row_indices(k))
    else:
        drift = c.window_centre_seconds([c.num_frames - 1])[0].item() - (c.num_frames - 1) / fps
        assert drift > 1.5  # ~1.9 s after a minute: the bug compat mode reproduces on purpose

    # LatentSync: the original's count generalised by time (floor(T/2)+2 at 25 fps), windows centred on k/fps
    ls = AF.compute_audio_features(audio, fps, "latentsync", enc, cpu_runtime())
    assert ls.rows == 3000
    assert ls.num_frames == original_latentsync_count(3000, fps)
    if fps == 25:
        assert ls.num_frames == 3000 // 2 + 2
    kk = torch.arange(ls.num_frames - 2)  # the last two frames reuse the clamped last row, as in the original
    err = ls.window_centre_seconds(kk) - kk.double() / fps
    assert err.min() > 0 and err.max() <= 0.02 + 1e-9


def test_frame_count_helpers_match_the_original_loops():
    for rows in (0, 1, 2, 99, 100, 101, 1500, 1501, 29999):
        for fps in (25.0, 24.0, 30.0, 29.97, 23.976, 50.0, 12.5):
            assert AF.latentsync_frame_count(rows, fps) == original_latentsync_count(rows, fps), (rows, fps)
    for n in (0, 1, 319, 320, 32000, 496000, 960000, 959999):
        assert AF.musetalk_hidden_rows(n) == math.floor((n / 16000) * 50 + 1e-9)
        assert AF.musetalk_hidden_rows(n, compat=True) == math.floor((n / 16000) * 50)
        assert AF.musetalk_frame_count(n, 29.97, compat=True) == math.floor((n / 16000) * 29)
    assert AF.musetalk_pad_unit(25) == 2 and AF.musetalk_pad_unit(30) == 2 and AF.musetalk_pad_unit(24) == 3
    assert AF.latentsync_hidden_rows(32000) == 100 and AF.latentsync_hidden_rows(496000) == 1550
    with pytest.raises(AF.AudioFeaturesError):
        AF.effective_fps(0)
    with pytest.raises(AF.AudioFeaturesError):
        AF.effective_fps(0.5, "musetalk", compat=True)


def test_windows_layout_and_indices_past_the_end():
    audio = Audio(test_signal(16000, 1.0)[None], 16000)
    enc = CheapEncoder()
    f = AF.compute_audio_features(audio, 25, "musetalk", enc, cpu_runtime())
    assert f.num_frames == 25 and f.rows == 50
    w = f.windows([10])[0].reshape(10, 5, 384)
    rows = f.row_indices([10])[0]
    assert rows.tolist() == list(range(16, 26))  # padded start 2k = 20, minus the 4 zero rows
    assert torch.equal(w, f.hidden[rows].float())  # token 5t + l = row t of state l (time-major)
    # first frame: 4 zero rows then rows 0..5
    w0 = f.windows([0])[0].reshape(10, 5, 384)
    assert torch.count_nonzero(w0[:4]) == 0 and torch.equal(w0[4:], f.hidden[:6].float())
    # any index works: past the end (and negative) read the same zero-padded sequence
    allw = f.windows(range(f.num_frames + 10))
    assert torch.equal(allw[:f.num_frames], f.all_windows())
    assert torch.count_nonzero(allw[f.num_frames + 3:]) == 0
    last_partial = f.windows([f.num_frames])[0].reshape(10, 5, 384)
    assert torch.count_nonzero(last_partial[:6]) > 0 and torch.count_nonzero(last_partial[6:]) == 0
    assert torch.count_nonzero(f.windows([-5])) == 0
    assert f.windows([]).shape == (0, 50, 384)

    ls = AF.compute_audio_features(audio, 25, "latentsync", enc, cpu_runtime())
    past = ls.windows([ls.num_frames + 7])[0].reshape(10, 5, 384)
    assert all(torch.equal(past[i], ls.hidden[-1].float()) for i in range(10))  # clamped to the last row
    first = ls.windows([0])[0].reshape(10, 5, 384)
    assert all(torch.equal(first[i], ls.hidden[0].float()) for i in range(4))


# ---- resampling, speech ----------------------------------------------------------------------------------------------
def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_44k_stereo_matches_16k_mono():
    enc = small_whisper()
    mono16 = Audio(test_signal(16000)[None], 16000)
    s = test_signal(44100)
    stereo44 = Audio(np.stack([1.2 * s, 0.8 * s]), 44100)  # channel mean = the signal
    other = Audio((0.5 * test_signal(16000) + 0.01 * np.random.default_rng(0).standard_normal(32000))
                  .astype(np.float32)[None], 16000)
    for layout in ("musetalk", "latentsync"):
        a = AF.compute_audio_features(mono16, 25, layout, enc, cpu_runtime())
        b = AF.compute_audio_features(stereo44, 25, layout, enc, cpu_runtime())
        assert a.num_frames == b.num_frames
        assert b.audio is stereo44 and b.audio.channels == 2 and b.audio.sample_rate == 44100  # kept for muxing
        wa, wb = a.all_windows(), b.all_windows()
        assert _rel(wb, wa) < 0.02
        if layout == "musetalk":  # ... while a different signal is far away (the check can fail)
            assert _rel(AF.compute_audio_features(other, 25, layout, enc, cpu_runtime()).all_windows(), wa) > 0.1


def test_espeak_speech_resampled_and_stereo(tmp_path):
    exe = shutil.which("espeak-ng")
    if not exe:
        pytest.skip("espeak-ng not installed")
    path = str(tmp_path / "speech.wav")
    subprocess.run([exe, "-w", path, "The quick brown fox jumps over the lazy dog."], check=True,
                   capture_output=True)
    speech = load_audio_file(path)
    assert speech.sample_rate != 16000  # espeak writes 22.05 kHz: the resampler is exercised
    x44 = resample(speech.samples, speech.sample_rate, 44100)
    stereo44 = Audio(np.concatenate([x44, x44]), 44100)
    enc = small_whisper()
    a = AF.compute_audio_features(speech, 25, "musetalk", enc, cpu_runtime())
    b = AF.compute_audio_features(stereo44, 25, "musetalk", enc, cpu_runtime())
    assert a.num_samples_16k == round(speech.num_samples * 16000 / speech.sample_rate)
    assert a.num_frames == a.num_samples_16k * 25 // 16000
    assert abs(a.num_frames - b.num_frames) <= 1
    n = min(a.num_frames, b.num_frames)
    assert _rel(b.windows(range(n)), a.windows(range(n))) < 0.03
    # speech is not silence: the windows over the voice differ from the padded start
    assert _rel(a.windows([n // 2]), a.windows([0])) > 0.05


# ---- edge cases ------------------------------------------------------------------------------------------------------
def test_silence():
    audio = Audio(np.zeros((2, 32000), np.float32), 16000)
    seg = torch.zeros(1, AF.SEGMENT_SAMPLES)
    assert torch.equal(AF.musetalk_log_mel(seg), torch.full((1, 80, 3000), -1.5))  # (log10(1e-10) + 4) / 4
    assert torch.equal(AF.latentsync_log_mel(np.zeros(32000, np.float32), torch.device("cpu")),
                       torch.full((80, 200), -1.5))
    enc = CheapEncoder()
    for layout, frames in (("musetalk", 50), ("latentsync", 52)):
        f = AF.compute_audio_features(audio, 25, layout, enc, cpu_runtime())
        assert f.num_frames == frames
        w = f.all_windows()
        assert w.shape == (frames, 50, 384) and torch.isfinite(w).all()


@pytest.mark.parametrize("n", [0, 1])
def test_one_sample_and_empty_clips(n):
    audio = Audio(np.full((1, n), 0.5, np.float32), 44100)
    m = AF.compute_audio_features(audio, 25, "musetalk", NoEncoder(), cpu_runtime())
    assert m.num_frames == 0 and m.rows == 0
    assert torch.count_nonzero(m.windows([0, 1, 5])) == 0 and m.windows([0, 1, 5]).shape == (3, 50, 384)
    assert m.all_windows().shape == (0, 50, 384)
    ls = AF.compute_audio_features(audio, 25, "latentsync", NoEncoder(), cpu_runtime())
    assert ls.rows == 0 and ls.num_frames == 2  # floor(0/2) + 2, as the original counts
    assert torch.count_nonzero(ls.all_windows()) == 0 and ls.all_windows().shape == (2, 50, 384)


def test_bad_inputs():
    audio = Audio(np.zeros((1, 16000), np.float32), 16000)
    with pytest.raises(AF.AudioFeaturesError, match="layout"):
        AF.compute_audio_features(audio, 25, "wav2lip", CheapEncoder(), cpu_runtime())
    with pytest.raises(AF.AudioFeaturesError, match="fps"):
        AF.compute_audio_features(audio, 0, "musetalk", CheapEncoder(), cpu_runtime())
    with pytest.raises(AF.AudioFeaturesError, match="Audio"):
        AF.compute_audio_features({"waveform": None}, 25, "musetalk", CheapEncoder(), cpu_runtime())


# ---- batching, out of memory, cancel ---------------------------------------------------------------------------------
def test_batching_oom_retry_and_cancel():
    audio = Audio(test_signal(16000, 95.0)[None], 16000)  # 4 windows of 30 s
    one = CheapEncoder()
    a = AF.compute_audio_features(audio, 25, "musetalk", one, cpu_runtime(), batch_size=1)
    assert one.calls == [1, 1, 1, 1]
    three = CheapEncoder()
    b = AF.compute_audio_features(audio, 25, "musetalk", three, cpu_runtime(), batch_size=3)
    assert three.calls == [3, 1] and torch.equal(a.hidden, b.hidden)

    class OomAbove1(CheapEncoder):
        def forward(self, mel, final_norm=True):
            if mel.shape[0] > 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().forward(mel, final_norm)

    c = AF.compute_audio_features(audio, 25, "musetalk", OomAbove1(), cpu_runtime(), batch_size=4)
    assert c.info["batch"] == 1 and torch.equal(c.hidden, a.hidden)

    calls = {"n": 0}

    def cancel_after_first():
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(Cancelled):
        AF.compute_audio_features(audio, 25, "latentsync", CheapEncoder(), cpu_runtime(cancel_flag=cancel_after_first))


# ---- memory on 10 minutes --------------------------------------------------------------------------------------------
def test_ten_minutes_bounded_memory():
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    rng = np.random.default_rng(0)
    audio = Audio((0.1 * rng.standard_normal(600 * 44100)).astype(np.float32)[None], 44100)  # 10 min, 44.1 kHz
    peak = {"rss": proc.memory_info().rss}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], proc.memory_info().rss)
            stop.wait(0.01)

    base = proc.memory_info().rss
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        enc = CheapEncoder()
        feats = []
        for layout in ("musetalk", "latentsync"):
            f = AF.compute_audio_features(audio, 29.97, layout, enc, cpu_runtime(), batch_size=2)
            assert f.rows == 30000 and f.hidden.shape == (30000, 5, 384) and f.info["windows_30s"] == 20
            feats.append(f)
            del f
        assert feats[0].num_frames == math.floor(600 * 29.97 + 1e-9) == 17982
        w = feats[0].windows(range(17900, 17982))
        assert w.shape == (82, 50, 384) and torch.isfinite(w).all()
    finally:
        stop.set()
        thread.join()
    growth = peak["rss"] - base
    assert growth < 1.5 * (1 << 30), f"peak RSS grew by {growth / 2**20:.0f} MB"


# ---- the node --------------------------------------------------------------------------------------------------------
def _write_small_hf_whisper(folder):
    from safetensors.torch import save_file

    enc = small_whisper().encoder
    os.makedirs(folder, exist_ok=True)
    cfg = dict(W.WHISPER_TINY_CONFIG, d_model=64, encoder_attention_heads=2, encoder_ffn_dim=256)
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    save_file({"model.encoder." + k: v.contiguous() for k, v in enc.state_dict().items()},
              os.path.join(folder, "model.safetensors"))


def test_node_declares_and_delegates(tmp_path, monkeypatch):
    from musetalk_enhanced.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from musetalk_enhanced.nodes.audio_nodes import MuseTalkWhisperFeatures, backend_audio_layout

    assert NODE_CLASS_MAPPINGS["MuseTalkWhisperFeatures"] is MuseTalkWhisperFeatures
    assert NODE_DISPLAY_NAME_MAPPINGS["MuseTalkWhisperFeatures"] == "Whisper Audio Features"
    spec = MuseTalkWhisperFeatures.INPUT_TYPES()
    for group in ("required", "optional"):
        for name, (typ, opts) in spec[group].items():
            assert opts.get("tooltip"), name
    assert spec["required"]["fps"][1]["default"] == 25.0
    assert spec["required"]["compat_int_fps"][1]["default"] is False
    assert spec["required"]["auto_download"][1]["default"] is True
    assert spec["optional"]["backend"][0] == "MUSETALK_BACKEND"
    assert MuseTalkWhisperFeatures.RETURN_TYPES == ("MUSETALK_AUDIO_FEATURES", "INT")
    assert MuseTalkWhisperFeatures.CATEGORY == "MuseTalk/audio" and MuseTalkWhisperFeatures.DESCRIPTION

    from musetalk_enhanced.pipeline.backends.selection import BackendSpec, backend_class, layout_of

    assert backend_audio_layout(None) == "musetalk"
    assert backend_audio_layout(BackendSpec(choice="latentsync-1.6")) == "latentsync"
    assert backend_audio_layout(BackendSpec(choice="musetalk-v1.5")) == "musetalk"
    with pytest.raises(ValueError, match="Backend Selector"):
        backend_audio_layout({"name": "LatentSync 1.6"})          # no guessing from names
    # one answer: each backend's own class declares it, and the selection reads nothing else
    for name in ("musetalk-v1.5", "latentsync-1.5", "latentsync-1.6"):
        assert layout_of(name) == backend_class(name).audio_layout
    with pytest.raises(Exception, match="unknown backend"):
        layout_of("wav2lip")

    monkeypatch.setattr(registry, "_resolver", None)
    monkeypatch.setenv(registry.ENV_MODELS_DIR, str(tmp_path))
    node = MuseTalkWhisperFeatures()
    audio = {"waveform": torch.from_numpy((test_signal(22050, 1.0) * 32767).astype(np.int16))[None, None],
             "sample_rate": 22050}
    with pytest.raises(registry.MissingWeightsError):
        node.encode(audio, 25.0, "musetalk", False, False)
    _write_small_hf_whisper(str(tmp_path / "musetalk" / "whisper"))
    feats, count = node.encode(audio, 29.97, "follow backend", False, False)
    assert isinstance(feats, AF.AudioFeatures) and feats.layout == "musetalk"
    assert count == feats.num_frames == 29 and feats.fps == 29.97
    assert feats.windows([0, 28]).shape == (2, 50, 64)
    from musetalk_enhanced.pipeline.backends.selection import BackendSpec

    feats, count = node.encode(audio, 25.0, "follow backend", True, False,
                               backend=BackendSpec(choice="latentsync-1.6"))
    assert feats.layout == "latentsync" and count == 27 and feats.compat is True


def test_half_precision_path_keeps_the_callers_module(monkeypatch):
    """On an accelerator whisper runs in fp16 (as both originals do on CUDA) and the states are stored in fp16; the
    caller's cached float32 module is never converted in place. Forced here on the CPU."""
    from musetalk_enhanced.pipeline import whisper_encoder

    enc = small_whisper()
    audio = Audio(test_signal(16000)[None], 16000)
    ref = AF.compute_audio_features(audio, 25, "musetalk", enc, cpu_runtime())
    monkeypatch.setattr(whisper_encoder, "_encoder_dtype", lambda runtime: torch.float16)
    half = AF.compute_audio_features(audio, 25, "musetalk", enc, cpu_runtime())
    assert half.hidden.dtype == torch.float16 and half.info["dtype"] == "float16"
    assert enc.dtype == torch.float32
    w = half.all_windows()
    assert w.dtype == torch.float32 and _rel(w, ref.all_windows()) < 0.01
