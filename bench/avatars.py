"""Real-time avatars: what preparing once saves each time a new voice is spoken.

    python bench/avatars.py              # 720p, 16 face + 2 cutaway frames, a voice twice as long, full-size networks
    python bench/avatars.py --quick      # CI smoke run: 360p, 6 + 2 frames, the small random configs
    python bench/avatars.py --json out.json
    python bench/avatars.py --device cuda --dtype fp16 --batch-sizes 8,16,32 --voice-frames 256 --live-trials 5
                                         # the GPU figures (bench/gpu_check.sh)

One clip (the astronaut photo panning, with two cutaway frames), one voice (espeak-ng speech, twice the clip, so
the ping-pong loop runs). Measured on the same clip and voice, MuseTalk v1.5, jaw blending with BiSeNet when its
weights exist (feather otherwise):

* **full path**: what a new voice costs without an avatar: face detection (MTCNN + landmarks), whisper features, and
  the lip-sync run (VAE encode of each source frame once, UNet, VAE decode, blend masks, paste) into memory;
* **prepare**: the avatar's one-time cost (face detection, frames written, VAE latents, blend masks);
* **speak**: what a new voice costs with the avatar: whisper features and the lip-sync run reading the cache, into
  an IMAGE like the full path, at the first of ``--batch-sizes``; **speak at batch N**: the same at each batch size
  with the frames dropped once composed (the generator's own speed, frames/s); each after an untimed warm-up speech
  of N frames (CUDA kernels chosen, caches filled);
* **first frame**: seconds from the start of speaking (features included) to the first output frames in the sink;
* **live**: the voice pushed in 200 ms chunks (:class:`LiveSpeech`): seconds from pushing the first chunk to the first
  frame (the median of ``--live-trials`` speeches after an untimed one), and the steady frames/s after it (the
  generator's own speed; real time needs at least the avatar's fps).

Reported per output frame (s/frame), the speed-up of speaking over the full path, and the peak RSS of each phase.
Targets (issue "Real-time avatars"): speaking >= 3x faster per frame than the full path on the CPU; on an H100-class
GPU >= 120 frames/s; live first frame <= 150 ms after the first 200 ms of audio.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

COLUMNS = [("stage", "stage"), ("frames", "frames"), ("seconds", "s"), ("s_per_frame", "s/frame"), ("fps", "frames/s"),
           ("speedup", "speed-up"), ("rss_peak_mb", "peak RSS MB"), ("note", "note")]
SPEEDUP_TARGET = 3.0


class Discard:
    """A sink that drops the composed frames: the generator's own speed (what live speech and a server get)."""

    def write(self, native) -> None:
        pass

    def close(self):
        return None

    def abort(self) -> None:
        pass


class FirstWrite:
    """A sink wrapper that records when the first frames arrive."""

    def __init__(self, sink):
        self.sink, self.first = sink, None

    def write(self, native) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.sink.write(native)

    def close(self):
        return self.sink.close()

    def abort(self) -> None:
        self.sink.abort()


def build_inputs(args, workdir: str):
    import numpy as np

    import lipsync as LB

    name, (w, h) = LB.parse_resolution(args.resolution)
    clip = np.concatenate([LB.photo_frames("astronaut", w, h, args.face_frames),
                           LB.photo_frames("rocket", w, h, args.cutaway_frames)])
    path = LB.write_clip(os.path.join(workdir, "avatar_src.mp4"), clip)
    voice = LB.speech_audio((args.voice_frames or 2 * len(clip)) / LB.FPS, workdir)
    return path, voice, name


def run_full_path(path, voice, models, runtime, mode, detector):
    """Detect, features, lip-sync: a new voice without an avatar. Returns (report, seconds, rss)."""
    from musetalk_enhanced.pipeline.audio_features import compute_audio_features
    from musetalk_enhanced.pipeline.backends.musetalk import MuseTalkBackend
    from musetalk_enhanced.pipeline.backends.selection import MUSETALK, BackendSpec
    from musetalk_enhanced.pipeline.faces.tracks import analyze_faces
    from musetalk_enhanced.pipeline.lipsync import LipSyncRun
    from musetalk_enhanced.pipeline.lipsync.sinks import ImageSink
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames

    with common.PeakMemory(runtime.device) as mem:
        t0 = time.perf_counter()
        frames = VideoFileFrames(path)
        faces = analyze_faces(frames, detector, runtime, min_face_size=30)
        feats = compute_audio_features(voice, frames.fps, "musetalk", models.whisper, runtime)
        run = LipSyncRun(frames, faces, feats, BackendSpec(choice=MUSETALK, auto_download=False), blend_mode=mode)
        sink = ImageSink(run.plan.num_frames, frames.height, frames.width)
        report = run.into(sink, runtime, engine_factory=lambda n: MuseTalkBackend(models.engine, mode, models.parser))
        common.sync(runtime.device)
        seconds = time.perf_counter() - t0
    return report, seconds, mem, faces


def run_prepare(path, faces, models, runtime, mode, root):
    from musetalk_enhanced.pipeline.avatars import file_identity, prepare_avatar
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames

    with common.PeakMemory(runtime.device) as mem:
        t0 = time.perf_counter()
        frames = VideoFileFrames(path)
        avatar = prepare_avatar("bench", frames, faces, runtime, source=file_identity(path), settings={},
                                engine=models.engine, parser=models.parser, blend_mode=mode, root=root)
        seconds = time.perf_counter() - t0
    return avatar, seconds, mem


def run_speak(avatar, voice, models, runtime, batch_size: int = 8, keep: bool = True):
    """Features + speaking into an IMAGE (``keep``) or into :class:`Discard`: (report, seconds, memory, seconds to
    the first frames)."""
    from musetalk_enhanced.pipeline.audio_features import compute_audio_features
    from musetalk_enhanced.pipeline.lipsync.sinks import ImageSink

    with common.PeakMemory(runtime.device) as mem:
        t0 = time.perf_counter()
        feats = compute_audio_features(voice, avatar.fps, "musetalk", models.whisper, runtime)
        run = avatar.start(feats, runtime, engine=models.engine, batch_size=batch_size)
        sink = FirstWrite(ImageSink(run.plan.num_frames, avatar.frames.height, avatar.frames.width) if keep
                          else Discard())
        report = run.into(sink)
        common.sync(runtime.device)
        seconds = time.perf_counter() - t0
    return report, seconds, mem, sink.first - t0


def warm_up(avatar, voice, models, runtime, frames: int, batch_size: int) -> None:
    """An untimed speech of ``frames`` frames at ``batch_size`` (CUDA picks its kernels, lazy state is built)."""
    from musetalk_enhanced.pipeline.media.audio import Audio

    n = int(round(frames / avatar.fps * voice.sample_rate))
    run_speak(avatar, Audio(voice.samples[:, :n], voice.sample_rate), models, runtime, batch_size)


def run_live(avatar, voice, models, runtime, chunk_s: float = 0.2):
    """Push the voice in ``chunk_s`` chunks as fast as frames come out: (seconds from pushing the first chunk to the
    first frame, steady frames/s over the rest, frames). Time spent waiting for audio is not simulated: this is the
    generator's own cost (real time needs frames/s >= fps)."""
    from musetalk_enhanced.pipeline.avatars import LiveSpeech
    from musetalk_enhanced.pipeline.media.audio import to_mono

    pcm = to_mono(voice, 16000).astype("float32")
    step = int(chunk_s * 16000)
    live = LiveSpeech(avatar, runtime, engine=models.engine, encoder=models.whisper)
    first, made, made_first, t_first = None, 0, 0, None
    t0 = time.perf_counter()
    for i in range(0, len(pcm), step):
        out = live.push(pcm[i:i + step])
        if out and first is None:
            common.sync(runtime.device)
            t_first = time.perf_counter()
            first, made_first = t_first - t0, len(out)
        made += len(out)
    made += len(live.close())
    common.sync(runtime.device)
    rest = time.perf_counter() - (t_first or t0)
    fps = (made - made_first) / rest if first is not None and made > made_first and rest > 0 else None
    return first, fps, made


def live_trials(avatar, voice, models, runtime, trials: int):
    """One untimed live speech, then ``trials`` timed: (median first-frame seconds, max, steady fps, frames)."""
    import statistics

    run_live(avatar, voice, models, runtime)
    runs = [run_live(avatar, voice, models, runtime) for _ in range(max(1, trials))]
    firsts = [r[0] for r in runs if r[0] is not None]
    fps = [r[1] for r in runs if r[1]]
    return (statistics.median(firsts) if firsts else None, max(firsts) if firsts else None,
            statistics.median(fps) if fps else None, runs[0][2])


def speak_rows(avatar, voice, models, runtime, batch_sizes, full_s_per_frame: float, n: int) -> list:
    """The speak row (into an IMAGE, as the full path; at the first batch size, with the speed-up over the full
    path), then frames/s at each batch size with the frames dropped once composed (the generator's own speed)."""
    b = batch_sizes[0]
    warm_up(avatar, voice, models, runtime, b, b)
    spoken, speak_s, speak_mem, first_s = run_speak(avatar, voice, models, runtime, b)
    assert spoken.num_frames == n, (spoken.num_frames, n)
    speedup = full_s_per_frame / (speak_s / n)
    rows = [dict(stage="speak (features + lip-sync from the cache)", frames=n, seconds=round(speak_s, 2),
                 s_per_frame=round(speak_s / n, 4), fps=round(n / speak_s, 2), batch=b, speedup=round(speedup, 2),
                 rss_peak_mb=speak_mem.as_dict().get("rss_peak_mb"),
                 note=f"batch {b}, into an IMAGE; target >= {SPEEDUP_TARGET:g}x on CPU: "
                      f"{'met' if speedup >= SPEEDUP_TARGET else 'not met'}"),
            dict(stage="first frame (speaking)", frames=1, seconds=round(first_s, 3),
                 note="whole-voice features, then the first batch")]
    for b in batch_sizes:
        warm_up(avatar, voice, models, runtime, b, b)
        spoken, speak_s, speak_mem, _ = run_speak(avatar, voice, models, runtime, b, keep=False)
        assert spoken.num_frames == n, (spoken.num_frames, n)
        rows.append(dict(stage=f"speak at batch {b}", frames=n, seconds=round(speak_s, 2), batch=b,
                         s_per_frame=round(speak_s / n, 4), fps=round(n / speak_s, 2),
                         vram_peak_mb=speak_mem.as_dict().get("vram_peak_mb"),
                         rss_peak_mb=speak_mem.as_dict().get("rss_peak_mb"),
                         note="features + lip-sync, frames dropped once composed"))
    return rows


def load_models(args, runtime):
    import lipsync as LB

    if args.quick:
        return LB.build_small_models(runtime, with_parser=False)
    from musetalk_enhanced.models import registry

    LB.ensure_test_weights(args.weights_dir or os.environ.get(registry.ENV_MODELS_DIR)
                           or os.path.join(common.ROOT, "test_weights"), with_parser=True)
    return LB.load_full_models(runtime, with_parser=True)


def measure(args, models, runtime, workdir: str) -> list:
    """Every row: full path, preparation, speaking at each batch size, live."""
    from musetalk_enhanced.pipeline.faces.detectors import create_detector

    mode = "jaw" if models.parser is not None else "feather"
    detector = create_detector("mtcnn", runtime, auto_download=False)
    path, voice, res = build_inputs(args, workdir)
    full, full_s, full_mem, faces = run_full_path(path, voice, models, runtime, mode, detector)
    avatar, prep_s, prep_mem = run_prepare(path, faces, models, runtime, mode, os.path.join(workdir, "av"))
    n = full.num_frames
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    speaking = speak_rows(avatar, voice, models, runtime, batch_sizes, full_s / n, n)
    live_first, live_max, live_fps, live_frames = live_trials(avatar, voice, models, runtime, args.live_trials)
    note = f"{res}, {args.face_frames} face + {args.cutaway_frames} cutaway frames, {mode} blending"
    return [
        dict(stage="full path (detect + features + lip-sync)", frames=n, seconds=round(full_s, 2),
             s_per_frame=round(full_s / n, 4), rss_peak_mb=full_mem.as_dict().get("rss_peak_mb"), note=note),
        dict(stage="prepare avatar (once)", frames=len(avatar.frames), seconds=round(prep_s, 2),
             s_per_frame=round(prep_s / len(avatar.frames), 4), rss_peak_mb=prep_mem.as_dict().get("rss_peak_mb"),
             note="faces reused from the full path; frames, latents, masks written"),
    ] + speaking + [
        dict(stage="live: first frame after the first 200 ms of voice", frames=live_frames,
             seconds=round(live_first, 3), max_seconds=round(live_max, 3), trials=max(1, args.live_trials),
             s_per_frame=round(1 / live_fps, 4) if live_fps else None, fps=round(live_fps, 2) if live_fps else None,
             note=(f"median of {max(1, args.live_trials)}, max {live_max:.3f} s; " if args.live_trials > 1 else "")
             + (f"steady {live_fps:.2f} frames/s after it" if live_fps else "one chunk held everything")),
    ]


def main(argv=None) -> int:
    ap = common.bench_parser(__doc__.split("\n\n")[0])
    ap.add_argument("--resolution", default="", help="720p, 1080p, ... or WxH (default 720p; quick 360p)")
    ap.add_argument("--face-frames", type=int, default=0, help="face frames of the clip (default 16; quick 6)")
    ap.add_argument("--cutaway-frames", type=int, default=2)
    ap.add_argument("--voice-frames", type=int, default=0, help="output frames the voice lasts (default: twice "
                                                                "the clip)")
    ap.add_argument("--batch-sizes", default="8", help="speaking batch sizes, comma-separated (the first one is "
                                                       "compared with the full path)")
    ap.add_argument("--live-trials", type=int, default=1, help="timed live speeches (the median is reported)")
    ap.add_argument("--weights-dir", default="", help="random full-size test weights (default $MUSETALK_MODELS_DIR "
                                                      "or <pack>/test_weights)")
    args = ap.parse_args(argv)
    args.resolution = args.resolution or ("360p" if args.quick else "720p")
    args.face_frames = args.face_frames or (6 if args.quick else 16)
    common.setup_torch(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    common.import_pack()
    from musetalk_enhanced.pipeline.runtime import Runtime

    device, dtype = common.pick_device_dtype(args.device, args.dtype)
    runtime = Runtime(device=device, dtype=dtype, show_progress=False)
    machine = common.machine_info(device)
    models = load_models(args, runtime)
    workdir = tempfile.mkdtemp(prefix="musetalk_bench_avatars_")
    try:
        results = measure(args, models, runtime, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for row in results:
        print(json.dumps(row), flush=True)
    print(common.markdown_table(results, COLUMNS))
    common.write_json(args.json, common.report("avatars", args, machine, results,
                                               {"device": str(device), "dtype": common.dtype_name(dtype),
                                                "weights": models.weights}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
