"""Audio as the pipeline sees it: ComfyUI AUDIO in any form -> float32 arrays; resampling; loading files with PyAV.

ComfyUI's AUDIO is a mapping ``{"waveform": [B, C, T], "sample_rate": int}`` (ComfyUI nodes_audio.py). VideoHelperSuite
passes a lazy ``Mapping`` (not a dict), core ``GetVideoComponents`` can hand over integer PCM tensors. We accept all of
them, never call the object, never require ``dict``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch


class AudioError(ValueError):
    """Bad audio input; the message names the input and the fix."""


@dataclass
class Audio:
    """Float32 samples ``[C, T]`` in -1..1 at ``sample_rate``."""

    samples: np.ndarray
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        return self.num_samples / float(self.sample_rate)

    def to_comfy(self) -> dict:
        """ComfyUI AUDIO: ``{"waveform": float32 [1, C, T], "sample_rate": int}``."""
        return {"waveform": torch.from_numpy(np.ascontiguousarray(self.samples, dtype=np.float32))[None],
                "sample_rate": int(self.sample_rate)}

    def mono(self) -> np.ndarray:
        """Channel mean (what librosa.load(mono=True) does in MuseTalk's audio_processor.py)."""
        if self.channels == 1:
            return self.samples[0]
        return self.samples.mean(axis=0, dtype=np.float32)

    def slice_seconds(self, start: float, duration: Optional[float] = None) -> "Audio":
        a = max(0, int(round(start * self.sample_rate)))
        b = self.num_samples if duration is None or duration <= 0 else min(
            self.num_samples, a + int(round(duration * self.sample_rate)))
        return Audio(self.samples[:, a:b], self.sample_rate)


def pcm_to_float(x: np.ndarray) -> np.ndarray:
    """Integer PCM -> float32 in -1..1 (int16 / 2**15, int32 / 2**31, uint8 centred), float passes through."""
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(x.dtype, np.integer):
        bits = np.iinfo(x.dtype).bits
        return (x.astype(np.float64) / float(2 ** (bits - 1))).astype(np.float32)
    raise AudioError(f"audio: unsupported sample type {x.dtype}")


def from_comfy(audio, name: str = "audio") -> Audio:
    """Accept ComfyUI AUDIO (any Mapping, lazy or not; int or float PCM; [B,C,T], [C,T] or [T]) -> :class:`Audio`.

    Only the first batch item is used (a lip-sync run has one voice track).
    """
    if audio is None:
        raise AudioError(f"{name}: no audio connected. Connect an AUDIO output (Load Audio, Load Video's audio, "
                         "Get Video Components) to this input.")
    if not isinstance(audio, Mapping):
        if callable(audio):
            raise AudioError(f"{name}: got a callable (the legacy VHS_AUDIO type). Convert it with VideoHelperSuite's "
                             "'VHS_VHSAudioToAudio' node or use a loader that outputs AUDIO.")
        raise AudioError(f"{name}: expected an AUDIO mapping with 'waveform' and 'sample_rate', got "
                         f"{type(audio).__name__}.")
    try:
        wave = audio["waveform"]
        rate = audio["sample_rate"]
    except KeyError as exc:
        raise AudioError(f"{name}: the AUDIO value has no {exc.args[0]!r} entry; it must hold 'waveform' "
                         "[batch, channels, samples] and 'sample_rate'.") from None
    if isinstance(wave, torch.Tensor):
        arr = wave.detach().cpu()
        if arr.dtype == torch.bfloat16:
            arr = arr.float()
        arr = arr.numpy()
    else:
        arr = np.asarray(wave)
    if arr.ndim == 3:
        if arr.shape[0] < 1:
            raise AudioError(f"{name}: the waveform batch is empty.")
        arr = arr[0]
    elif arr.ndim == 1:
        arr = arr[None]
    elif arr.ndim != 2:
        raise AudioError(f"{name}: waveform must be [batch, channels, samples]; got shape {tuple(arr.shape)}.")
    rate = int(rate)
    if rate <= 0:
        raise AudioError(f"{name}: sample_rate must be positive, got {rate}.")
    arr = pcm_to_float(np.ascontiguousarray(arr))
    if arr.shape[0] > arr.shape[1] and arr.shape[1] <= 8:  # [T, C] given by mistake (channels-last)
        arr = arr.T
    return Audio(np.ascontiguousarray(arr, dtype=np.float32), rate)


RESAMPLE_CHUNK = 1 << 20  # samples fed to libswresample at a time: its output is the same, its memory stays small


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited resampling of ``[C, T]`` (or ``[T]``) float32 with libswresample through PyAV.

    Identity (bit-exact) when the rates match. Output length is ``round(T * dst / src)``. The input is fed in
    chunks of :data:`RESAMPLE_CHUNK` samples (bit-identical to one call; one 10-minute call peaked at 7x its input
    in memory) and written straight into the output.
    """
    if src_rate == dst_rate:
        return x
    import av

    squeeze = x.ndim == 1
    xs = x[None] if squeeze else x
    out_len = int(round(xs.shape[1] * dst_rate / src_rate))
    out = np.zeros((xs.shape[0], out_len), dtype=np.float32)
    for ch, y in zip(xs, out):  # per channel keeps layouts simple (mono in, mono out)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=dst_rate)
        filled = 0

        def take(frames) -> None:
            nonlocal filled
            for f in frames:
                piece = f.to_ndarray().reshape(-1)[: out_len - filled]
                y[filled: filled + piece.shape[0]] = piece
                filled += piece.shape[0]

        for start in range(0, ch.shape[0], RESAMPLE_CHUNK):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(ch[None, start: start + RESAMPLE_CHUNK], dtype=np.float32), format="flt",
                layout="mono")
            frame.sample_rate = src_rate
            frame.pts = start
            take(resampler.resample(frame))
        take(resampler.resample(None))
    return out[0] if squeeze else out


def to_mono(audio: Audio, rate: int = 16000) -> np.ndarray:
    """Mono float32 at ``rate`` (16 kHz for whisper). Mixing happens before resampling, as librosa does."""
    return resample(audio.mono(), audio.sample_rate, rate)


def load_audio_file(path: str, start: float = 0.0, duration: Optional[float] = None, name: str = "audio") -> Audio:
    """Decode the first audio stream of any file PyAV reads (wav, mp3, flac, m4a, ogg, a video's track...)."""
    import os

    import av

    if not path or not os.path.isfile(path):
        raise AudioError(f"{name}: file not found: {path!r}. Put the file in ComfyUI's input folder or give a full "
                         "path.")
    try:
        container = av.open(path)
    except Exception as exc:
        raise AudioError(f"{name}: cannot open {os.path.basename(path)} ({exc}). Is it a real audio or video file?") \
            from exc
    with container:
        streams = container.streams.audio
        if not streams:
            raise AudioError(f"{name}: {os.path.basename(path)} has no audio track. Use a file with sound, or "
                             "connect a separate audio file.")
        stream = streams[0]
        rate = int(stream.codec_context.sample_rate or stream.sample_rate)
        chunks = []
        for frame in container.decode(stream):
            arr = frame.to_ndarray()
            if frame.format.is_planar:
                arr = arr.reshape(len(frame.layout.channels), -1)
            else:
                arr = arr.reshape(-1, len(frame.layout.channels)).T
            chunks.append(pcm_to_float(arr))
            rate = frame.sample_rate or rate
    if not chunks:
        raise AudioError(f"{name}: {os.path.basename(path)}'s audio track decoded to no samples.")
    samples = np.concatenate(chunks, axis=1)
    audio = Audio(np.ascontiguousarray(samples, dtype=np.float32), rate)
    if start or (duration and duration > 0):
        if start >= audio.duration:
            raise AudioError(f"{name}: start {start:.2f}s is past the end of the audio ({audio.duration:.2f}s).")
        audio = audio.slice_seconds(start, duration)
    return audio
