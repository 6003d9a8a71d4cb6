"""Audio -> whisper-tiny hidden states -> one 50x384 audio window per output video frame.

Two layouts, each reproducing its original exactly at its native settings:

``musetalk`` (TMElyralab/MuseTalk musetalk/utils/audio_processor.py)
    16 kHz mono; 30 s segments, each zero-padded to 30 s *before* the log-mel (max over the padded segment); the five
    encoder states with the final LayerNorm on the last; trimmed to ``floor(L/16000*50)`` rows (50 Hz); ``2m`` zero rows
    before and ``6m`` after, ``m = ceil(50/fps)``; frame ``k`` takes padded rows ``[s, s+10)`` with
    ``s = floor(k*50/fps)``; ``T = floor(L/16000*fps)`` frames.
``latentsync`` (bytedance/LatentSync latentsync/whisper/audio2feature.py)
    16 kHz mono; log-mel of the whole file (max over the whole file); 3000-frame windows zero-padded in the normalised
    log-mel domain; five states *without* ``ln_post``; ``floor(n/2)`` rows kept per window of ``n`` real mel frames;
    frame ``k`` takes rows ``c-4 .. c+5`` clamped to the rows that exist, ``c = floor(k*50/fps)``.

Frame timing (README "What it does"): the window of output frame ``k`` is placed by its true time
``k/fps`` for any fps, integer or not (29.97, 23.976...), so nothing drifts. ``compat=True`` reproduces MuseTalk's
``int(fps)`` truncation (MuseTalk get_whisper_chunk BUG: 29.97 -> 29, about 2 s of lag per minute) for byte-for-byte
comparisons with the original; it is off by default. The LatentSync original always runs at 25 fps (it re-encodes the
video, LatentSync audio2feature.py), so ``compat`` does not change that layout.

Non-25 fps, documented choices:
* MuseTalk keeps its padding rule at every fps: ``m = ceil(50/fps)`` (2 for fps >= 25, 3 for 16.7 <= fps < 25), as the
  original does. The window therefore starts ``2m`` rows before ``floor(k*50/fps)``: at 24 fps it is centred 40 ms
  earlier than at 25 fps, exactly as in the original at 24 fps.
* LatentSync: ``c = floor(k*50/fps)`` (the original's ``int(k*50/fps)``; ``2k`` at 25 fps) and the frame count is the
  original's loop generalised by time: ``C = 1 + min{i : floor(i*50/fps) > T}`` (``floor(T/2) + 2`` at 25 fps). The
  last couple of frames reuse the clamped last row, as in the original.
* Float rounding: ``floor`` of a value within 1e-9 below an integer counts as that integer (29.97 * 1000 / 29.97 is
  1000, not 999.9999); compat mode uses the original float expressions unchanged.

Memory: the waveform is encoded 30 s window by window (several windows per encoder batch on an accelerator); only the
``[rows, 5, 384]`` states are kept, on the CPU: float32 when the encoder runs in float32 (CPU; 10 minutes = 30000 rows
= 230 MB), float16 when it runs in half precision on a GPU (115 MB; nothing is lost, the states were computed in fp16).
:meth:`AudioFeatures.windows` always returns float32.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .media.audio import Audio, to_mono
from .runtime import Runtime, is_oom
from .whisper_encoder import LAYOUTS, AudioFeaturesError, EncoderLike, prepare_encoder
from .whisper_encoder import load_whisper  # noqa: F401  (part of this stage's API: AF.load_whisper)

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
ROWS_PER_SECOND = 50                        # whisper encoder frames (20 ms)
SEGMENT_SAMPLES = 30 * SAMPLE_RATE          # one encoder window: 30 s
MEL_FRAMES = SEGMENT_SAMPLES // HOP         # 3000
ROWS_PER_SEGMENT = MEL_FRAMES // 2          # 1500
PAD_LEFT = 2                                # video frames of context (audio_padding_length_left/right, feat length [2,2])
PAD_RIGHT = 2
WINDOW_ROWS = 2 * (PAD_LEFT + PAD_RIGHT + 1)  # 10 rows = 200 ms
NUM_STATES = 5
_EPS = 1e-9


def _floor(x: float) -> int:
    return int(math.floor(x + _EPS))


# ---- frame arithmetic -----------------------------------------------------------------------------------------------
def effective_fps(fps: float, layout: str = "musetalk", compat: bool = False) -> float:
    """The rate the windows are timed with: ``int(fps)`` in MuseTalk compat mode (the original's truncation)."""
    if not fps or fps <= 0 or not math.isfinite(fps):
        raise AudioFeaturesError(f"fps must be a positive number, got {fps!r}.")
    if compat and layout == "musetalk":
        f = int(fps)
        if f < 1:
            raise AudioFeaturesError(f"compat mode truncates fps {fps} to {f}; use fps >= 1 or turn compat off.")
        return float(f)
    return float(fps)


def musetalk_hidden_rows(num_samples: int, compat: bool = False) -> int:
    """Rows kept after trimming: ``floor(L/16000*50)`` (compat: the original float expression)."""
    if compat:
        return int(math.floor((num_samples / SAMPLE_RATE) * ROWS_PER_SECOND))
    return num_samples * ROWS_PER_SECOND // SAMPLE_RATE


def musetalk_frame_count(num_samples: int, fps: float, compat: bool = False) -> int:
    """``T = floor(L/16000*fps)`` output frames (compat: ``fps`` truncated with ``int``), MuseTalk get_whisper_chunk."""
    f = effective_fps(fps, "musetalk", compat)
    if compat:
        return int(math.floor((num_samples / SAMPLE_RATE) * f))
    return _floor(num_samples * f / SAMPLE_RATE)


def musetalk_pad_unit(fps: float, compat: bool = False) -> int:
    """``m = ceil(50/fps)``: 2 m zero rows go before the states and 6 m after (MuseTalk get_whisper_chunk)."""
    return int(math.ceil(ROWS_PER_SECOND / effective_fps(fps, "musetalk", compat)))


def latentsync_hidden_rows(num_samples: int) -> int:
    """``floor(M/2)`` rows for ``M = N // 160`` mel frames (per 3000-frame window, LatentSync audio2feature.py)."""
    mel = num_samples // HOP
    full, rest = divmod(mel, MEL_FRAMES)
    return full * ROWS_PER_SEGMENT + rest // 2


def latentsync_frame_count(rows: int, fps: float) -> int:
    """The original's chunk count generalised by time: ``1 + min{i : floor(i*50/fps) > rows}``
    (``floor(rows/2) + 2`` at 25 fps, LatentSync audio2feature.py)."""
    f = effective_fps(fps, "latentsync")
    i = max(0, int(math.ceil((rows + 1) * f / ROWS_PER_SECOND)) - 2)
    while _floor(i * ROWS_PER_SECOND / f) <= rows:
        i += 1
    return i + 1


# ---- log-mel (WhisperFeatureExtractor / whisper.log_mel_spectrogram semantics) --------------------------------------
_FILTERS: Dict[str, torch.Tensor] = {}
_FILTERS_LOCK = threading.Lock()


def mel_filters() -> torch.Tensor:
    """``[201, 80]`` float32 Slaney mel filterbank over 0-8 kHz (what both originals use)."""
    with _FILTERS_LOCK:
        if "fb" not in _FILTERS:
            from transformers.audio_utils import mel_filter_bank

            fb = mel_filter_bank(num_frequency_bins=1 + N_FFT // 2, num_mel_filters=N_MELS, min_frequency=0.0,
                                 max_frequency=8000.0, sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney")
            _FILTERS["fb"] = torch.from_numpy(np.asarray(fb, dtype=np.float32))
        return _FILTERS["fb"]


def _log10_mel(frames_wave: torch.Tensor, center: bool) -> torch.Tensor:
    """``log10(max(mel power, 1e-10))`` ``[..., 80, F]``; the last STFT frame is dropped when ``center``."""
    window = torch.hann_window(N_FFT, device=frames_wave.device)
    stft = torch.stft(frames_wave, N_FFT, HOP, window=window, center=center, return_complex=True)
    if center:
        stft = stft[..., :-1]
    power = (stft.abs() ** 2).contiguous()
    fb = mel_filters().to(frames_wave.device)
    mel = fb.T @ power
    return torch.clamp(mel, min=1e-10).log10()


def musetalk_log_mel(segments: torch.Tensor) -> torch.Tensor:
    """``[B, 480000]`` zero-padded 30 s segments -> ``[B, 80, 3000]`` normalised log-mel, max per segment
    (WhisperFeatureExtractor, MuseTalk get_audio_feature)."""
    log_spec = _log10_mel(segments.float(), center=True)
    peak = log_spec.amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0


def latentsync_log_mel(wave: np.ndarray, device: torch.device, block_frames: int = MEL_FRAMES) -> torch.Tensor:
    """Whole-file normalised log-mel ``[80, N // 160]`` on the CPU (max over the file, LatentSync audio.py).

    Computed ``block_frames`` frames at a time from one reflect-padded copy of the waveform, so memory stays bounded
    for long files; each frame sees exactly the samples ``torch.stft(center=True)`` would give it.
    """
    n = wave.shape[0]
    frames = n // HOP
    out = torch.empty((N_MELS, frames), dtype=torch.float32)
    if frames == 0:
        return out
    padded = np.pad(wave.astype(np.float32, copy=False), (N_FFT // 2, N_FFT // 2), mode="reflect")
    for j0 in range(0, frames, block_frames):
        j1 = min(frames, j0 + block_frames)
        seg = torch.from_numpy(padded[HOP * j0: HOP * (j1 - 1) + N_FFT]).to(device)
        out[:, j0:j1] = _log10_mel(seg, center=False).cpu()
    torch.maximum(out, out.max() - 8.0, out=out)
    out.add_(4.0).div_(4.0)
    return out


# ---- the payload ----------------------------------------------------------------------------------------------------
@dataclass
class AudioFeatures:
    """The ``MUSETALK_AUDIO_FEATURES`` payload: whisper states at 50 Hz and the per-frame window rule of one layout.

    ``hidden`` is ``[rows, 5, 384]`` on the CPU (float32, or float16 when encoded in half precision). ``num_frames`` is
    how many output frames the audio covers at ``fps``. ``audio`` is the source track at its own rate and channels
    (for muxing). :meth:`windows` gives the ``[k, 50, 384]`` float32 window of any absolute output frame index.
    """

    layout: str
    fps: float
    num_frames: int
    hidden: torch.Tensor
    audio: Optional[Audio]
    compat: bool = False
    num_samples_16k: int = 0
    encoder_source: str = ""
    info: Dict[str, object] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds of source audio."""
        if self.audio is not None:
            return self.audio.duration
        return self.num_samples_16k / SAMPLE_RATE

    @property
    def rows(self) -> int:
        return int(self.hidden.shape[0])

    @property
    def timing_fps(self) -> float:
        """The fps the windows are placed with (``int(fps)`` in MuseTalk compat mode)."""
        return effective_fps(self.fps, self.layout, self.compat)

    def first_rows(self, indices: Sequence[int]) -> torch.Tensor:
        """``[k]`` int64 un-padded row index where each frame's 10-row window starts (may be negative or past the
        rows). MuseTalk: the original's padded start ``floor(k*50/fps)`` minus the ``2m`` left padding; LatentSync:
        ``floor(k*50/fps) - 4`` before clamping."""
        idx = torch.as_tensor(list(indices), dtype=torch.float64).reshape(-1)
        f = self.timing_fps
        if self.layout == "musetalk":
            if self.compat:  # the original's float expression, bit for bit
                start = torch.floor(idx * (ROWS_PER_SECOND / f)).long()
            else:
                start = torch.floor(idx * ROWS_PER_SECOND / f + _EPS).long()
            return start - 2 * musetalk_pad_unit(self.fps, self.compat)
        return torch.floor(idx * ROWS_PER_SECOND / f + _EPS).long() - 2 * PAD_LEFT

    def row_indices(self, indices: Sequence[int]) -> torch.Tensor:
        """``[k, 10]`` int64 rows of ``hidden`` that make frame ``indices[i]``'s window.

        MuseTalk: ``-1`` marks a zero row (the original's zero padding, and beyond it: any index, even past
        ``num_frames`` or negative, reads the same infinite zero-padded sequence, so frames past the audio get the
        silence-padding windows the original gives its last frames). LatentSync: indices are clamped to the existing
        rows like the original (frames past the end repeat the last row); ``-1`` everywhere only when there are no rows.
        """
        rows = self.first_rows(indices)[:, None] + torch.arange(WINDOW_ROWS)[None, :]
        if self.layout == "musetalk":
            rows[(rows < 0) | (rows >= self.rows)] = -1
            return rows
        if self.rows == 0:
            return torch.full_like(rows, -1)
        return rows.clamp_(0, self.rows - 1)

    def window_centre_seconds(self, indices: Sequence[int]) -> torch.Tensor:
        """Centre time of each frame's 10-row (200 ms) window in seconds (row r spans ``[r, r+1) * 20 ms``)."""
        return (self.first_rows(indices).double() + WINDOW_ROWS / 2) / ROWS_PER_SECOND

    def windows(self, indices: Sequence[int]) -> torch.Tensor:
        """``[k, 50, 384]`` float32: frame ``indices[i]``'s 10 rows x 5 states, time-major (token ``5t + l`` is row t
        of state l), exactly the originals' ``rearrange('b c h w -> b (c h) w')`` / ``reshape(50, 384)``."""
        rows = self.row_indices(indices)
        k = rows.shape[0]
        d = int(self.hidden.shape[-1]) if self.hidden.dim() == 3 else 384
        if k == 0:
            return torch.zeros((0, WINDOW_ROWS * NUM_STATES, d), dtype=torch.float32)
        valid = rows >= 0
        if self.rows == 0:
            out = torch.zeros((k, WINDOW_ROWS, NUM_STATES, d), dtype=torch.float32)
        else:
            out = self.hidden[rows.clamp(min=0)].float()
            out[~valid] = 0.0
        return out.reshape(k, WINDOW_ROWS * NUM_STATES, d)

    def all_windows(self) -> torch.Tensor:
        """Windows of frames ``0 .. num_frames-1`` (small clips and tests; long runs should batch :meth:`windows`)."""
        return self.windows(range(self.num_frames))


def _default_batch(runtime: Runtime) -> int:
    return 8 if runtime.device.type != "cpu" else 1


def _run_batches(items: List[int], make_mel: Callable[[List[int]], torch.Tensor], encoder, final_norm: bool,
                 store: Callable[[int, torch.Tensor], None], batch: int, runtime: Runtime, stage: str) -> int:
    """Encode the windows ``items`` ``batch`` at a time; halve the batch on out-of-memory. Returns the batch used."""
    done = 0
    runtime.progress(stage, 0, len(items))
    while done < len(items):
        chunk = items[done: done + batch]
        try:
            mel = make_mel(chunk)
            with torch.no_grad():
                states = encoder(mel, final_norm=final_norm)
        except Exception as exc:  # noqa: BLE001 - only OOM is handled
            if is_oom(exc) and batch > 1:
                batch = max(1, batch // 2)
                runtime.empty_cache()
                continue
            raise
        states = states.detach().cpu()
        for j, w in enumerate(chunk):
            store(w, states[j])
        del states, mel
        done += len(chunk)
        runtime.progress(stage, done, len(items))
    return batch


def compute_audio_features(audio: Audio, fps: float, layout: str = "musetalk", encoder: EncoderLike = None,
                           runtime: Optional[Runtime] = None, compat: bool = False, auto_download: bool = True,
                           batch_size: Optional[int] = None) -> AudioFeatures:
    """Whisper states and window rule for ``audio`` at ``fps`` (``layout`` ``"musetalk"`` or ``"latentsync"``).

    ``audio``: any rate and channel count (mixed to mono, then resampled to 16 kHz, as librosa.load does).
    ``encoder``: a :class:`..models.whisper.WhisperStates` (or any module ``f(mel[B,80,3000], final_norm) ->
    [B,1500,5,d]``), a zero-argument function returning one, or ``None`` to load whisper-tiny through the registry
    (:func:`load_whisper`, downloading when ``auto_download``). ``runtime`` gives device, dtype, progress and
    cancellation. ``batch_size``: 30 s windows per encoder call (default 8 on an accelerator, 1 on the CPU).
    """
    if layout not in LAYOUTS:
        raise AudioFeaturesError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    if not isinstance(audio, Audio):
        raise AudioFeaturesError(f"audio: expected pipeline.media.audio.Audio, got {type(audio).__name__}.")
    effective_fps(fps, layout, compat)  # validates
    runtime = runtime or Runtime()
    if audio.num_samples == 0:
        wave = np.zeros(0, dtype=np.float32)
    else:
        wave = np.ascontiguousarray(to_mono(audio, SAMPLE_RATE), dtype=np.float32)
    n = int(wave.shape[0])
    if layout == "musetalk":
        rows = musetalk_hidden_rows(n, compat)
        frames = musetalk_frame_count(n, fps, compat)
    else:
        rows = latentsync_hidden_rows(n)
        frames = latentsync_frame_count(rows, fps)
    segments = list(range(-(-rows // ROWS_PER_SEGMENT)))  # only the 30 s windows that hold kept rows
    hidden = torch.zeros((rows, NUM_STATES, 384), dtype=torch.float32)
    source, used_batch = "", 0
    if segments:
        enc, enc_dtype = prepare_encoder(encoder, layout, auto_download, runtime)
        source = getattr(enc, "source", "") or type(enc).__name__
        hidden = torch.empty((rows, NUM_STATES, getattr(enc, "d_model", None) or 384),
                             dtype=torch.float16 if enc_dtype == torch.float16 else torch.float32)
        used_batch = _encode_windows(wave, layout, segments, enc, enc_dtype, hidden, runtime,
                                     max(1, int(batch_size or _default_batch(runtime))))
        del enc
        runtime.empty_cache()
    return AudioFeatures(layout=layout, fps=float(fps), num_frames=int(frames), hidden=hidden, audio=audio,
                         compat=bool(compat), num_samples_16k=n, encoder_source=source,
                         info={"windows_30s": len(segments), "batch": used_batch,
                               "dtype": str(hidden.dtype).replace("torch.", "")})


def _encode_windows(wave: np.ndarray, layout: str, segments: List[int], enc, enc_dtype: torch.dtype,
                    hidden: torch.Tensor, runtime: Runtime, batch: int) -> int:
    """Encode the 30 s windows of ``wave`` into ``hidden`` (rows beyond it dropped) in the layout's own log-mel;
    returns the batch size that ran."""
    device, rows = runtime.device, hidden.shape[0]
    if layout == "musetalk":
        def make_mel(chunk: List[int]) -> torch.Tensor:
            seg = np.zeros((len(chunk), SEGMENT_SAMPLES), dtype=np.float32)
            for j, i in enumerate(chunk):
                piece = wave[i * SEGMENT_SAMPLES:(i + 1) * SEGMENT_SAMPLES]
                seg[j, :piece.shape[0]] = piece
            return musetalk_log_mel(torch.from_numpy(seg).to(device)).to(enc_dtype)
    else:
        mel_all = latentsync_log_mel(wave, device)

        def make_mel(chunk: List[int]) -> torch.Tensor:
            out = torch.zeros((len(chunk), N_MELS, MEL_FRAMES), dtype=torch.float32)
            for j, i in enumerate(chunk):
                piece = mel_all[:, i * MEL_FRAMES:(i + 1) * MEL_FRAMES]
                out[j, :, :piece.shape[1]] = piece
            return out.to(device=device, dtype=enc_dtype)

    def store(i: int, states: torch.Tensor) -> None:
        a = i * ROWS_PER_SEGMENT
        b = min(rows, a + ROWS_PER_SEGMENT)
        hidden[a:b] = states[: b - a].to(hidden.dtype)

    return _run_batches(segments, make_mel, enc, layout == "musetalk", store, batch, runtime,
                        "whisper audio features")


def features_in_layout(features: "AudioFeatures", fps: float, layout: str, runtime: Runtime, auto_download: bool,
                       encoder: EncoderLike = None) -> "AudioFeatures":
    """``features`` in ``layout`` timed at ``fps``: re-timed when only the frame rate differs, recomputed from the
    attached source audio when the layout differs (a backend fallback), else as they are."""
    if features.layout != layout:
        if features.audio is None:
            raise AudioFeaturesError(f"audio_features: computed for {features.layout} but the backend needs {layout}, "
                                     "and the source audio is not attached; set the features node's layout to "
                                     "'follow backend'.")
        return compute_audio_features(features.audio, fps, layout, encoder, runtime, features.compat, auto_download)
    if abs(features.fps - fps) > 1e-6:
        if layout == "musetalk":
            n = musetalk_frame_count(features.num_samples_16k, fps, features.compat)
        else:
            n = latentsync_frame_count(features.rows, fps)
        return replace(features, fps=float(fps), num_frames=int(n))
    return features

