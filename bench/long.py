"""A long clip through the streaming path: peak host RSS of a 10-minute 1080p dub, measured (not extrapolated).

    python bench/long.py                         # 10 min, 1080p, 25 fps, full-size networks (random test weights)
    python bench/long.py --quick                 # CI smoke run: 12 s at 360p with the small random configs
    python bench/long.py --minutes 10 --resolution 1080p --face-every 60 --face-frames 8 --json out.json

What runs is what a user's run does when the input is a file (README "What it does" says why cutaways matter):
``VideoFileFrames`` (decoded in blocks, never the whole clip) -> ``analyze_faces`` (MTCNN, shot cuts, tracks) ->
``compute_audio_features`` (whisper-tiny, 30 s windows) -> ``run_lipsync`` (MuseTalkRunner: VAE encode once per
source frame, UNet + VAE decode in batches of ``--batch-size``, jaw blending with BiSeNet when its weights exist,
cutaway frames passed through) -> ``WriterSink`` -> ``VideoWriter`` (libx264 crf 19 medium + AAC, written as frames
arrive). One process; a thread samples the RSS every 20 ms the whole time, and every progress report of the
pipeline records (stage, frames done, RSS), which gives RSS against the frame index.

The clip. ``--minutes`` of ``--resolution`` video at 25 fps with speech (espeak-ng, looped) on the audio track: every
``--face-every`` seconds a shot of ``--face-frames`` frames of the astronaut photo (a face: synced), the rest shots
of the rocket / coffee / chelsea photos panning (cutaways: passed through). Every frame is decoded, analysed by the
face detector, and encoded again; only the face frames go through the networks (on a 2-core CPU a synced frame costs
seconds, so a clip that is all face would take a day; the networks' working set is the same for every batch, and
``--face-every`` puts a full batch at regular points of the clip, so the peak includes it). The source clip is written
once with libx264 ``ultrafast`` into ``--workdir`` (kept with ``--keep-clip``); writing it is not measured.

Face detection runs at ``--detect-short-side`` (default 360: MTCNN's pyramid on the 1080p frame downscaled to 640x360;
the pack's default is 720, 4x the pixels, the same memory pattern and 4x the minutes).

Reported: peak RSS of the whole run and up to the end of each phase (a running high-water mark), RSS after loading
the models, the RSS slope in MB per 1000 frames over the lip-sync pass (least squares against the frame index, first
10 % skipped: the decoder's block cache and x264's look-ahead filling), seconds and frames/s of each phase, and a check
of the output (as many frames as the source, synced / passed-through counts). ``--target-gb`` (default 6, issue
"Speed and scale") is compared with the peak.
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FPS = 25.0
CUTAWAYS = ("rocket", "coffee", "chelsea")


def build_schedule(total: int, fps: float, face_every: float, face_frames: int):
    """``[(start, length, photo)]`` shots covering ``total`` frames: a face shot of ``face_frames`` frames every
    ``face_every`` seconds (the first one second in), cutaway shots in between, cycling the cutaway photos."""
    period = max(face_frames + 1, int(round(face_every * fps)))
    faces = list(range(min(int(round(fps)), max(0, total - face_frames)), total, period))
    shots, pos, k = [], 0, 0
    for f in faces + [total]:
        if f > pos:
            shots.append((pos, f - pos, CUTAWAYS[k % len(CUTAWAYS)]))
            k += 1
        if f < total:
            n = min(face_frames, total - f)
            shots.append((f, n, "astronaut"))
            pos = f + n
    return shots


def write_long_clip(path: str, width: int, height: int, shots, audio) -> None:
    """The clip of :func:`build_schedule`, encoded with libx264 ultrafast (fast to write; not what is measured)."""
    import numpy as np

    import lipsync as LB
    from musetalk_enhanced.pipeline.media.writer import VideoWriter

    with VideoWriter(path, FPS, width, height, audio, crf=23, preset="ultrafast") as w:
        for start, n, photo in shots:
            for a in range(0, n, 25):
                k = min(25, n - a)
                # pan within the shot; wrap the offset so a long shot stays inside the photo
                w.write(np.ascontiguousarray(LB.photo_frames(photo, width, height, k, start=(a % 500))))


class RecordingRuntime:
    """Wraps a Runtime: every progress report also records ``(seconds, stage, done, total, rss MB)``."""

    def __init__(self, runtime, mem):
        self._rt, self._mem = runtime, mem
        self.t0 = time.perf_counter()
        self.records = []

    def __getattr__(self, name):
        return getattr(self._rt, name)

    def progress(self, stage, done, total):
        self.records.append((round(time.perf_counter() - self.t0, 3), stage, int(done), int(total),
                             round(self._mem.poll(), 1)))
        return self._rt.progress(stage, done, total)


def slope_mb_per_1000(points):
    """Least-squares slope of RSS (MB) against frames, per 1000 frames, of ``[(frame, rss)]``."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx <= 0:
        return None
    return round(1000 * sum((p[0] - mx) * (p[1] - my) for p in points) / sxx, 2)


def main(argv=None) -> int:
    ap = common.bench_parser(__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=None, help="clip length in minutes (default 10; quick 0.2)")
    ap.add_argument("--resolution", default="", help="720p, 1080p, ... or WxH (default 1080p; quick 360p)")
    ap.add_argument("--face-every", type=float, default=None, help="seconds between face shots (default 60; quick 4)")
    ap.add_argument("--face-frames", type=int, default=None, help="frames per face shot (default 8; quick 4)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--detect-short-side", type=int, default=360)
    ap.add_argument("--blend", default="auto", help="auto (jaw when BiSeNet is present), jaw or feather")
    ap.add_argument("--target-gb", type=float, default=6.0)
    ap.add_argument("--workdir", default="", help="where the clips go (default: a temporary folder)")
    ap.add_argument("--keep-clip", action="store_true", help="keep (and reuse) the source clip in --workdir")
    ap.add_argument("--weights-dir", default="", help="full-size weights (default $MUSETALK_MODELS_DIR, else "
                                                      "<pack>/test_weights, written when missing)")
    args = ap.parse_args(argv)
    quick = args.quick
    minutes = args.minutes or (0.2 if quick else 10.0)
    res = args.resolution or ("360p" if quick else "1080p")
    face_every = args.face_every or (4.0 if quick else 60.0)
    face_frames = args.face_frames or (4 if quick else 8)

    torch = common.setup_torch(args.threads)
    common.import_pack()
    import lipsync as LB
    from musetalk_enhanced.pipeline.media.audio import load_audio_file
    from musetalk_enhanced.pipeline.audio_features import compute_audio_features
    from musetalk_enhanced.pipeline.backends.blending import resolve_blend_mode
    from musetalk_enhanced.pipeline.faces.detectors import create_detector
    from musetalk_enhanced.pipeline.faces.tracks import analyze_faces
    from musetalk_enhanced.pipeline.runtime import Runtime
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames

    machine = common.machine_info()
    device, dtype = common.pick_device_dtype(args.device, args.dtype)
    name, (w, h) = LB.parse_resolution(res)
    total = int(round(minutes * 60 * FPS))
    shots = build_schedule(total, FPS, face_every, face_frames)
    face_total = sum(n for _, n, p in shots if p == "astronaut")
    print(f"# long clip: {minutes} min {name} = {total} frames, {face_total} face frames in "
          f"{sum(1 for s in shots if s[2] == 'astronaut')} shots; device {device} {common.dtype_name(dtype)}",
          flush=True)

    workdir = args.workdir or tempfile.mkdtemp(prefix="musetalk_long_")
    os.makedirs(workdir, exist_ok=True)
    src = os.path.join(workdir, f"long_{name}_{total}_{int(face_every)}_{face_frames}.mp4")
    out = os.path.join(workdir, "long_out.mp4")
    results = []

    def emit(row):
        results.append(row)
        print(json.dumps(row), flush=True)

    speech = LB.speech_audio(total / FPS, workdir)
    if not (args.keep_clip and os.path.exists(src)):
        t0 = time.perf_counter()
        write_long_clip(src + ".part.mp4", w, h, shots, speech)
        os.replace(src + ".part.mp4", src)
        emit({"stage": "write source clip (ultrafast, not measured)", "frames": total,
              "seconds": round(time.perf_counter() - t0, 1)})
    if os.path.exists(out):
        os.remove(out)

    rt = Runtime(device=device, dtype=dtype, show_progress=False)
    gc.collect()
    with common.PeakMemory(device, interval=0.02, keep_samples=True) as mem:
        rec = RecordingRuntime(rt, mem)
        start_mb = mem.start_mb
        t0 = time.perf_counter()
        if quick:
            models = LB.build_small_models(rt, with_parser=True)
        else:
            LB.ensure_test_weights(args.weights_dir or os.environ.get("MUSETALK_MODELS_DIR")
                                   or os.path.join(common.ROOT, "test_weights"))
            models = LB.load_full_models(rt, with_parser=True)
        detector = create_detector("mtcnn", rt, auto_download=False, detect_short_side=args.detect_short_side)
        t_load = time.perf_counter()
        after_load_mb = mem.poll()
        phase_peak = {"load": mem.peak_mb}

        frames = VideoFileFrames(src)
        faces = analyze_faces(frames, detector, rec)
        t_faces = time.perf_counter()
        phase_peak["faces"] = mem.peak_mb
        feats = compute_audio_features(load_audio_file(src), frames.fps, "musetalk", models.whisper, rec)
        t_audio = time.perf_counter()
        phase_peak["audio"] = mem.peak_mb
        mode = resolve_blend_mode(args.blend) if args.blend != "auto" else ("jaw" if models.parser else "feather")
        mark = len(rec.records)
        report = LB.ours_lipsync(src, faces, feats, models, rec, out, args.batch_size, mode)
        t_sync = time.perf_counter()
        phase_peak["lipsync"] = mem.peak_mb
    out_frames = len(VideoFileFrames(out))
    synced = sum(len(v) for v in report.synced.values())
    sync_points = [(done, rss) for _, stage, done, tot, rss in rec.records[mark:] if tot == total]
    steady = [p for p in sync_points if p[0] >= total // 10]
    face_points = [(done, rss) for _, stage, done, tot, rss in rec.records[:mark] if stage == "face detection"]

    def row(stage, frames_n, seconds, peak, **extra):
        r = {"stage": stage, "frames": frames_n, "seconds": round(seconds, 2),
             "fps": round(frames_n / seconds, 2) if seconds and frames_n else None, "rss_peak_mb": round(peak, 1)}
        r.update(extra)
        return r

    emit(row("load models (UNet, VAE, whisper, BiSeNet, MTCNN)", 0, t_load - t0, phase_peak["load"],
             rss_after_mb=round(after_load_mb, 1), rss_before_mb=round(start_mb, 1)))
    emit(row(f"faces (MTCNN at short side {args.detect_short_side}, streamed)", total, t_faces - t_load,
             phase_peak["faces"], rss_slope_mb_per_1000=slope_mb_per_1000(
                 [p for p in face_points if p[0] >= total // 10])))
    emit(row("audio features (whisper-tiny)", total, t_audio - t_faces, phase_peak["audio"]))
    emit(row(f"run_lipsync -> mp4 ({mode}, batch {args.batch_size})", total, t_sync - t_audio, phase_peak["lipsync"],
             synced=synced, passed_through=len(report.passed_through), output_frames_in_file=out_frames,
             rss_slope_mb_per_1000=slope_mb_per_1000(steady),
             rss_at_10pct_mb=steady[0][1] if steady else None,
             rss_at_end_mb=sync_points[-1][1] if sync_points else None))
    peak_gb = mem.peak_mb / 1024
    emit({"stage": "whole run", "frames": total, "seconds": round(t_sync - t0, 1), "rss_peak_mb": round(mem.peak_mb, 1),
          "peak_gb": round(peak_gb, 2), "target_gb": args.target_gb, "met": peak_gb <= args.target_gb,
          "minutes": minutes, "resolution": name, "face_frames": face_total, "output_ok": out_frames == total,
          "note": f"{total} frames in, {out_frames} out; {synced} synced, {len(report.passed_through)} passed through"})
    if out_frames != total or synced != face_total:
        print(f"# WARNING: expected {total} frames out and {face_total} synced", flush=True)

    columns = [("stage", "stage"), ("frames", "frames"), ("seconds", "seconds"), ("fps", "frames/s"),
               ("rss_peak_mb", "peak RSS MB"), ("rss_slope_mb_per_1000", "RSS MB / 1000 frames"), ("note", "note")]
    extra = {"device": str(device), "dtype": common.dtype_name(dtype), "weights": models.weights,
             "rss_curve_lipsync": sync_points[:: max(1, len(sync_points) // 400)],
             "rss_samples": mem.samples[:: max(1, len(mem.samples) // 2000)], "records": len(rec.records)}
    payload = common.report("long", args, machine, results, extra)
    print()
    print(common.markdown_table(results, columns))
    print(f"\nmachine: {common.describe_machine(machine)}; load after: {payload['machine']['load_average_after']}; "
          f"device {device} {common.dtype_name(dtype)}; weights {models.weights}; peak RSS {mem.peak_mb:.0f} MB "
          f"(target {args.target_gb} GB)")
    common.write_json(args.json, payload)
    if not args.keep_clip and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
