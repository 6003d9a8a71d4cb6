"""Command-line lip-sync on the same pipeline as the nodes, without ComfyUI.

    python <pack folder> --video in.mp4 --audio voice.wav --out out.mp4 [options]
    python <pack folder> avatar ...            (avatar_cli.py)
    python <pack folder> serve [--port 8288]   (the dubbing server, server/)
    python -m musetalk_enhanced ...            (when the folder is importable under that name)

Weights are looked up in ``$MUSETALK_MODELS_DIR/<folder>`` (default ``~/.cache/musetalk_enhanced/models``, or
``--models-dir``) and downloaded on first use unless ``--no-download``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "example_workflows")
DEMO_VIDEO = "musetalk_example_face.mp4"    # shipped in example_workflows/ (tools/make_example_media.py)
DEMO_VOICE = "musetalk_example_voice.wav"


def build_parser() -> argparse.ArgumentParser:
    from .pipeline.backends.blending import BLEND_CHOICES
    from .pipeline.backends.selection import BACKEND_CHOICES, BackendSpec
    from .pipeline.lipsync.plan import LENGTH_POLICIES

    p = argparse.ArgumentParser(prog="musetalk_enhanced",
                                description="Re-sync the lips of the person in a video to a new voice track. Frames "
                                            "without a usable face (cutaways) pass through untouched.")
    p.add_argument("--video", help="input video (any format FFmpeg reads)")
    p.add_argument("--audio", help="voice track (any format); default: the video's own audio")
    p.add_argument("--out", help="output .mp4 (must not exist: nothing is ever overwritten)")
    p.add_argument("--demo", action="store_true",
                   help=f"dub the example clip the pack ships ({DEMO_VIDEO}) with its example voice; the mp4 goes to "
                        "output/demo/ in the current folder unless --out is given")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES)
    p.add_argument("--length-policy", default="follow_audio", choices=LENGTH_POLICIES)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--blend-mode", default="auto", choices=BLEND_CHOICES)
    add_face_arguments(p)
    p.add_argument("--compat-int-fps", action="store_true", help="reproduce the original's int(fps) audio timing")
    p.add_argument("--crf", type=int, default=19)
    add_runtime_arguments(p)
    p.add_argument("--sample-latents", action="store_true", help="MuseTalk: sample the VAE posterior like the original")
    p.add_argument("--seed", type=int, default=BackendSpec.seed)
    p.add_argument("--steps", type=int, default=20, help="LatentSync DDIM steps")
    p.add_argument("--guidance", type=float, default=1.5, help="LatentSync guidance scale")
    p.add_argument("--deepcache", action="store_true", help="LatentSync: DeepCache (faster)")
    p.add_argument("--report-json", help="write the run report as JSON here")
    return p


def add_face_arguments(p: argparse.ArgumentParser) -> None:
    """Face Detect's options (the node's defaults, pipeline/faces)."""
    from .pipeline.faces.detectors import BACKENDS as DETECTORS
    from .pipeline.faces.landmarks import LANDMARK_CHOICES
    from .pipeline.faces.options import SPEAKER_POLICIES

    p.add_argument("--detector", default=DETECTORS[0], choices=DETECTORS)
    p.add_argument("--landmarks", default="auto", choices=LANDMARK_CHOICES,
                   help="68-point landmark source for the mtcnn boxes (auto: DWPose, FAN, then dlib, whichever is "
                        "installed; else the 5-point estimate)")
    p.add_argument("--min-face-size", type=float, default=50.0, help="minimum face width in pixels")
    p.add_argument("--min-score", type=float, default=0.0, help="minimum detector score (0 = backend default)")
    p.add_argument("--speaker", default="largest", choices=SPEAKER_POLICIES)
    p.add_argument("--track-index", type=int, default=0)
    p.add_argument("--user-box", default="", help="x1,y1,x2,y2 (pixels or fractions) for --speaker user_box")
    p.add_argument("--shot-threshold", type=float, default=27.0)
    p.add_argument("--bbox-shift", type=int, default=0)
    p.add_argument("--extra-margin", type=int, default=10)
    p.add_argument("--no-smooth-boxes", action="store_true")
    p.add_argument("--force-rate", type=float, default=0.0, help="resample the video to this fps first (0 = keep)")


def add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    """Device, precision, weights and progress."""
    from .pipeline.runtime import DTYPE_CHOICES

    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    p.add_argument("--models-dir", help="models root (default $MUSETALK_MODELS_DIR or ~/.cache/musetalk_enhanced/models)")
    p.add_argument("--no-download", action="store_true", help="never download weights; list what is missing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def make_runtime(args):
    """The run's Runtime: the one a caller put on ``args.runtime`` (the server's worker: progress and cancel), else
    one from --device/--dtype."""
    from .pipeline.runtime import Runtime, pick_device, pick_dtype

    if getattr(args, "runtime", None) is not None:
        return args.runtime
    device = pick_device(args.device)
    return Runtime(device=device, dtype=pick_dtype(device, args.dtype), show_progress=not args.quiet)


def resolve_demo(args, parser) -> None:
    """--demo fills in the example clip, its voice and a fresh output name; otherwise --video and --out are
    required."""
    if args.demo:
        from .pipeline.media.writer import unique_output_path

        args.video = args.video or os.path.join(EXAMPLES, DEMO_VIDEO)
        args.audio = args.audio or (os.path.join(EXAMPLES, DEMO_VOICE) if args.video.endswith(DEMO_VIDEO) else None)
        if not args.out:
            args.out = unique_output_path(os.path.abspath("output"), "demo/dubbed", ".mp4")
            os.remove(args.out)  # only the name is wanted here: the writer creates the file (or nothing on failure)
    missing = [flag for flag, v in (("--video", args.video), ("--out", args.out)) if not v]
    if missing:
        parser.error(f"{' and '.join(missing)} required (or --demo to dub the example clip the pack ships)")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["avatar"]:
        from .avatar_cli import main as avatar_main

        return avatar_main(argv[1:])
    if argv[:1] == ["serve"]:
        from .server.serve import main as serve_main

        return serve_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_demo(args, parser)
    if args.models_dir:
        os.environ["MUSETALK_MODELS_DIR"] = os.path.abspath(args.models_dir)

    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .models.registry import MissingWeightsError
    from .pipeline.lipsync import LipSyncError
    from .pipeline.media.audio import AudioError
    from .pipeline.media.video import VideoError
    from .pipeline.runtime import Cancelled

    out = os.path.abspath(args.out)
    if os.path.exists(out):
        print(f"error: --out {out} already exists; choose another name (nothing is overwritten).", file=sys.stderr)
        return 2
    if not out.lower().endswith(".mp4"):
        print("error: --out must be an .mp4 file", file=sys.stderr)
        return 2
    t0 = time.time()
    try:
        report = dub(args, out)
    except (MissingWeightsError, VideoError, AudioError, LipSyncError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Cancelled):
        print("cancelled; no output written", file=sys.stderr)
        return 130
    print(report.text())
    print(f"wrote {out} ({report.num_frames} frames, {time.time() - t0:.1f} s)")
    if args.report_json:
        with open(args.report_json, "w") as f:
            json.dump(report_dict(out, report), f, indent=1)
    return 0


def dub(args, out: str):
    """Open the inputs, check the weights, analyse the faces, compute the voice features and lip-sync into ``out``
    (one encode); returns the report."""
    from .pipeline.audio_features import compute_audio_features
    from .pipeline.backends.selection import BackendSpec, ensure_weights
    from .pipeline.lipsync import LipSyncRun
    from .pipeline.lipsync.sinks import WriterSink
    from .pipeline.media.audio import load_audio_file
    from .pipeline.media.video import VideoFileFrames
    from .pipeline.media.writer import VideoWriter
    runtime = make_runtime(args)
    frames = VideoFileFrames(args.video, force_rate=args.force_rate, name="--video")
    audio = load_audio_file(args.audio or args.video, name="--audio" if args.audio else "--video's audio")
    print(f"video: {frames.describe()}; audio: {audio.duration:.2f} s, {audio.sample_rate} Hz, "
          f"{audio.channels} ch; device {runtime.device}, {str(runtime.dtype).replace('torch.', '')}")
    spec = BackendSpec(choice=args.backend, device=args.device, dtype=args.dtype, auto_download=not args.no_download,
                       posterior="sample" if args.sample_latents else "mode", seed=args.seed,
                       latentsync_steps=args.steps, latentsync_guidance=args.guidance, deepcache=args.deepcache)
    ensure_weights(spec, args.detector, args.blend_mode, log=print)  # one error listing every missing file
    faces = analyse_faces(args, frames, runtime)
    features = compute_audio_features(audio, frames.fps, spec.audio_layout, None, runtime,
                                      compat=args.compat_int_fps, auto_download=not args.no_download)
    run = LipSyncRun(frames, faces, features, spec, length_policy=args.length_policy, batch_size=args.batch_size,
                     blend_mode=args.blend_mode)
    writer = VideoWriter(out, frames.fps, frames.width, frames.height, run.audio, crf=args.crf)
    report = run.into(WriterSink(writer), runtime)
    writer.close()
    return report


def analyse_faces(args, frames, runtime):
    """Face Detect with the node's options (pipeline.faces.detectors.detector_options), printing its summary."""
    from .pipeline.faces.detectors import create_detector, detector_options
    from .pipeline.faces.preview import summarize
    from .pipeline.faces.tracks import FaceOptions, analyze_faces

    detector = create_detector(args.detector, runtime, auto_download=not args.no_download,
                               **detector_options(args.detector, args.min_face_size, frames.width, frames.height,
                                                  args.landmarks))
    options = FaceOptions(min_score=args.min_score or None, min_face_size=args.min_face_size,
                          shot_threshold=args.shot_threshold, speaker=args.speaker, track_index=args.track_index,
                          user_box=args.user_box or None, bbox_shift=args.bbox_shift,
                          extra_margin=args.extra_margin, smooth_boxes=not args.no_smooth_boxes)
    options.validate()
    faces = analyze_faces(frames, detector, runtime, options=options)
    print(summarize(faces))
    return faces


def report_dict(out: str, report) -> dict:
    """The run report as JSON (--report-json, the server's job records)."""
    return {"output": out, "frames": report.num_frames, "synced": {k: len(v) for k, v in report.synced.items()},
            "passed_through": report.passed_through, "fallbacks": report.fallbacks, "notes": report.notes,
            "seconds": report.seconds, "text": report.text()}
