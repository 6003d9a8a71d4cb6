"""Audio feature speed: seconds of audio turned into whisper-tiny features per second of wall time.

    python bench/audio.py                  # 120 s of audio on the CPU, 600 s on a GPU when there is one
    python bench/audio.py --quick          # 30 s, for a smoke run
    python bench/audio.py --device cpu --seconds 60 --layouts musetalk --json out.json

The encoder is full-size whisper-tiny (4 layers, 384 wide, 6 heads) with random weights built in memory: the speed of
the network does not depend on the weight values. Each measurement covers the whole ``compute_audio_features`` call
(mono/16 kHz conversion of a 44.1 kHz stereo track, log-mel, encoder in 30 s windows, states copied to the CPU) after
one warm-up call; model building is not timed. Prints one JSON object and one markdown table row per measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time



sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import import_pack  # noqa: E402  (the pack imported the way ComfyUI does)


def random_whisper_tiny():
    import torch

    from musetalk_enhanced.models import whisper as W
    from test_weights import whisper as tw_whisper

    enc = W.build_encoder()
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    sd = tw_whisper.random_whisper_state_dict({"encoder." + k: v for k, v in shapes.items()}, seed=0,
                                              dtype=torch.float32)
    enc.load_state_dict({k[len("encoder."):]: v for k, v in sd.items()})
    return W.WhisperStates(enc, "random whisper-tiny")


def make_audio(seconds: float, rate: int = 44100):
    """A 44.1 kHz stereo speech-like signal (harmonic voice with a moving pitch, syllable envelope, a little noise)."""
    import numpy as np

    from musetalk_enhanced.pipeline.media.audio import Audio

    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(h * phase) / h for h in range(1, 12))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    x = (0.15 * voice * env + 0.005 * np.random.default_rng(0).standard_normal(t.shape)).astype(np.float32)
    return Audio(np.stack([x, 0.9 * x]), rate)


def measure(encoder, audio, layout: str, device: str, batch: int, repeats: int) -> dict:
    import torch

    from musetalk_enhanced.pipeline.audio_features import compute_audio_features
    from musetalk_enhanced.pipeline.runtime import Runtime

    runtime = Runtime(device=device, show_progress=False)
    warm = type(audio)(audio.samples[:, : audio.sample_rate * 5], audio.sample_rate)
    compute_audio_features(warm, 25.0, layout, encoder, runtime, batch_size=batch)
    times = []
    feats = None
    for _ in range(repeats):
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        feats = compute_audio_features(audio, 25.0, layout, encoder, runtime, batch_size=batch)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    best = min(times)
    out = {"layout": layout, "device": str(runtime.device), "encoder_dtype": feats.info["dtype"],
           "batch_windows": batch, "audio_seconds": round(audio.duration, 2), "wall_seconds": round(best, 3),
           "audio_seconds_per_second": round(audio.duration / best, 1), "frames": feats.num_frames,
           "threads": torch.get_num_threads(), "weights": "random"}
    if runtime.device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(runtime.device)
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(runtime.device) / 2 ** 20)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="30 s of audio, one repeat")
    ap.add_argument("--device", default="auto", help="cpu, cuda, or auto (cpu, plus cuda when available)")
    ap.add_argument("--seconds", type=float, default=0, help="audio length (default 120 CPU / 600 GPU)")
    ap.add_argument("--layouts", default="musetalk,latentsync")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--json", default="", help="also write the results to this file")
    args = ap.parse_args(argv)

    import_pack()
    import torch

    machine = common.machine_info()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [args.device] if args.device != "auto" else (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    encoder = random_whisper_tiny()
    results = []
    print("| layout | device | dtype | batch | audio s | wall s | audio s / s |")
    print("|---|---|---|---|---|---|---|")
    for device in devices:
        seconds = args.seconds or (30 if args.quick else (600 if device.startswith("cuda") else 120))
        audio = make_audio(seconds)
        batches = [1] if not device.startswith("cuda") else ([8] if args.quick else [1, 8])
        for layout in [x for x in args.layouts.split(",") if x]:
            for batch in batches:
                r = measure(encoder, audio, layout, device, batch, 1 if args.quick else 2)
                results.append(r)
                print(json.dumps(r))
                print(f"| {r['layout']} | {r['device']} | {r['encoder_dtype']} | {batch} | {r['audio_seconds']} | "
                      f"{r['wall_seconds']} | {r['audio_seconds_per_second']} |")
    for r in results:  # the common row keys (run_all's tables): one "frame" = one second of audio here
        r.setdefault("stage", f"whisper-tiny {r['layout']} ({r['device']}, batch {r['batch_windows']})")
        r.setdefault("note", f"{r['audio_seconds_per_second']} s of audio per s")
    common.write_json(args.json, common.report("audio", args, machine, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
