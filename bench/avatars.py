"""Real-time avatars: what preparing once saves each time a new voice is spoken.

    python bench/avatars.py              # 720p, 16 face + 2 cutaway frames, a voice twice as long, full-size networks
    python bench/avatars.py --quick      # CI smoke run: 360p, 6 + 2 frames, the small random configs
    python bench/avatars.py --json out.json

One clip (the astronaut photo panning, with two cutaway frames), one voice (espeak-ng speech, twice the clip, so
the ping-pong loop runs). Measured on the same clip and voice, MuseTalk v1.5, jaw blending with BiSeNet when its
weights exist (feather otherwise):

* **full path**: what a new voice costs without an avatar: face detection (MTCNN + landmarks), whisper features, and
  the lip-sync run (VAE encode of each source frame once, UNet, VAE decode, blend masks, paste) into memory;
* **prepare**: the avatar's one-time cost (face detection, frames written, VAE latents, blend masks);
* **speak**: what a new voice costs with the avatar: whisper features and the lip-sync run reading the cache;
* **first frame**: seconds from the start of speaking (features included) to the first output frames in the sink;
* **live**: the voice pushed in 200 ms chunks (:class:`LiveSpeech`): seconds from the first chunk to the first frame,
  and the steady frames/s after it (the generator's own speed; real time needs at least the avatar's fps).

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

COLUMNS = [("stage", "stage"), ("frames", "frames"), ("seconds", "s"), ("s_per_frame", "s/frame"),
           ("speedup", "speed-up"), ("rss_peak_mb", "peak RSS MB"), ("note", "note")]
SPEEDUP_TARGET = 3.0


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
    voice = LB.speech_audio(2 * len(clip) / LB.FPS, workdir)
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


def run_speak(avatar, voice, models, runtime):
    from musetalk_enhanced.pipeline.audio_features import compute_audio_features
    from musetalk_enhanced.pipeline.lipsync.sinks import ImageSink

    with common.PeakMemory(runtime.device) as mem:
        t0 = time.perf_counter()
        feats = compute_audio_features(voice, avatar.fps, "musetalk", models.whisper, runtime)
        run = avatar.start(feats, runtime, engine=models.engine)
        sink = FirstWrite(ImageSink(run.plan.num_frames, avatar.frames.height, avatar.frames.width))
        report = run.into(sink)
        common.sync(runtime.device)
        seconds = time.perf_counter() - t0
    return report, seconds, mem, sink.first - t0


def run_live(avatar, voice, models, runtime, chunk_s: float = 0.2):
    """Push the voice in ``chunk_s`` chunks as fast as frames come out: (seconds to the first frame after the first
    chunk, steady frames/s over the rest, frames). Time spent waiting for audio is not simulated: this is the
    generator's own cost (real time needs frames/s >= fps)."""
    from musetalk_enhanced.pipeline.avatars import LiveSpeech
    from musetalk_enhanced.pipeline.media.audio import to_mono

    pcm = to_mono(voice, 16000).astype("float32")
    step = int(chunk_s * 16000)
    live = LiveSpeech(avatar, runtime, engine=models.engine, encoder=models.whisper)
    t0 = time.perf_counter()
    first, made, t_first = None, 0, None
    for i in range(0, len(pcm), step):
        out = live.push(pcm[i:i + step])
        if out and first is None:
            first, t_first = time.perf_counter() - t0, time.perf_counter()
            made_first = len(out)
        made += len(out)
    made += len(live.close())
    common.sync(runtime.device)
    rest = time.perf_counter() - (t_first or t0)
    fps = (made - made_first) / rest if first is not None and made > made_first and rest > 0 else None
    return first, fps, made


def main(argv=None) -> int:
    ap = common.bench_parser(__doc__.split("\n\n")[0])
    ap.add_argument("--resolution", default="", help="720p, 1080p, ... or WxH (default 720p; quick 360p)")
    ap.add_argument("--face-frames", type=int, default=0, help="face frames of the clip (default 16; quick 6)")
    ap.add_argument("--cutaway-frames", type=int, default=2)
    ap.add_argument("--weights-dir", default="", help="random full-size test weights (default $MUSETALK_MODELS_DIR "
                                                      "or <pack>/test_weights)")
    args = ap.parse_args(argv)
    args.resolution = args.resolution or ("360p" if args.quick else "720p")
    args.face_frames = args.face_frames or (6 if args.quick else 16)
    common.setup_torch(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    common.import_pack()
    import lipsync as LB
    from musetalk_enhanced.pipeline.faces.detectors import create_detector
    from musetalk_enhanced.pipeline.runtime import Runtime

    device, dtype = common.pick_device_dtype(args.device, args.dtype)
    runtime = Runtime(device=device, dtype=dtype, show_progress=False)
    machine = common.machine_info(device)
    if args.quick:
        models = LB.build_small_models(runtime, with_parser=False)
    else:
        from musetalk_enhanced.models import registry

        LB.ensure_test_weights(args.weights_dir or os.environ.get(registry.ENV_MODELS_DIR)
                               or os.path.join(common.ROOT, "test_weights"), with_parser=True)
        models = LB.load_full_models(runtime, with_parser=True)
    mode = "jaw" if models.parser is not None else "feather"
    detector = create_detector("mtcnn", runtime, auto_download=False)
    workdir = tempfile.mkdtemp(prefix="musetalk_bench_avatars_")
    results = []
    try:
        path, voice, res = build_inputs(args, workdir)
        full, full_s, full_mem, faces = run_full_path(path, voice, models, runtime, mode, detector)
        avatar, prep_s, prep_mem = run_prepare(path, faces, models, runtime, mode, os.path.join(workdir, "av"))
        spoken, speak_s, speak_mem, first_s = run_speak(avatar, voice, models, runtime)
        live_first, live_fps, live_frames = run_live(avatar, voice, models, runtime)
        n = full.num_frames
        assert spoken.num_frames == n, (spoken.num_frames, n)
        speedup = (full_s / n) / (speak_s / n)
        note = f"{res}, {args.face_frames} face + {args.cutaway_frames} cutaway frames, {mode} blending"
        results = [
            dict(stage="full path (detect + features + lip-sync)", frames=n, seconds=round(full_s, 2),
                 s_per_frame=round(full_s / n, 4), rss_peak_mb=full_mem.as_dict().get("rss_peak_mb"), note=note),
            dict(stage="prepare avatar (once)", frames=len(avatar.frames), seconds=round(prep_s, 2),
                 s_per_frame=round(prep_s / len(avatar.frames), 4), rss_peak_mb=prep_mem.as_dict().get("rss_peak_mb"),
                 note="faces reused from the full path; frames, latents, masks written"),
            dict(stage="speak (features + lip-sync from the cache)", frames=n, seconds=round(speak_s, 2),
                 s_per_frame=round(speak_s / n, 4), speedup=round(speedup, 2),
                 rss_peak_mb=speak_mem.as_dict().get("rss_peak_mb"),
                 note=f"target >= {SPEEDUP_TARGET:g}x on CPU: {'met' if speedup >= SPEEDUP_TARGET else 'not met'}"),
            dict(stage="first frame (speaking)", frames=1, seconds=round(first_s, 3),
                 note="whole-voice features, then the first batch"),
            dict(stage="live: first frame after the first 200 ms of voice", frames=live_frames,
                 seconds=round(live_first, 3), s_per_frame=round(1 / live_fps, 4) if live_fps else None,
                 note=f"steady {live_fps:.2f} frames/s after it" if live_fps else "one chunk held everything"),
        ]
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
