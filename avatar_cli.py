"""``python <pack> avatar ...``: prepare a face video once, then speak any voice through it (pipeline/avatars).

    avatar prepare --video v.mp4 --name NAME [face options] [--loop ping_pong|forward] [--loop-range A-B]
                                                              # reused when nothing changed, rebuilt otherwise
    avatar speak --name NAME --audio a.wav --out o.mp4 [--loop ...] [--loop-range A-B|all]
    avatar list
    avatar remove --name NAME
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    from .cli import add_face_arguments, add_runtime_arguments
    from .pipeline.avatars import DEFAULT_LOOP
    from .pipeline.backends.blending import BLEND_CHOICES
    from .pipeline.lipsync.plan import LOOP_CHOICES

    p = argparse.ArgumentParser(prog="musetalk_enhanced avatar",
                                description="Real-time avatars: prepare a face video once, then speak any voice.")
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="prepare (or reuse) an avatar from a video")
    prep.add_argument("--video", required=True, help="the face video (any format FFmpeg reads)")
    prep.add_argument("--name", required=True, help="the avatar's name (letters, digits, _ . -)")
    prep.add_argument("--blend-mode", default="auto", choices=BLEND_CHOICES)
    prep.add_argument("--force", action="store_true", help="prepare again even when nothing changed")
    prep.add_argument("--loop", default=DEFAULT_LOOP, choices=LOOP_CHOICES,
                      help="the avatar's default idle loop: ping_pong (forward then backward, the original's cycle) "
                           "or forward (start over); changing it later does not prepare the avatar again")
    prep.add_argument("--loop-range", default="", metavar="A-B",
                      help="the source frames the idle loop uses, A to B inclusive from 0 (default: every frame)")
    add_face_arguments(prep)
    add_runtime_arguments(prep)
    speak = sub.add_parser("speak", help="speak a voice through an avatar into an mp4")
    speak.add_argument("--name", required=True)
    speak.add_argument("--audio", required=True, help="the voice (any format FFmpeg reads)")
    speak.add_argument("--out", required=True, help="output .mp4 (must not exist: nothing is overwritten)")
    speak.add_argument("--batch-size", type=int, default=8)
    speak.add_argument("--crf", type=int, default=19)
    speak.add_argument("--loop", default=None, choices=LOOP_CHOICES, help="idle loop (default: the avatar's)")
    speak.add_argument("--loop-range", default=None, metavar="A-B|all",
                       help="the source frames the idle loop uses, A to B inclusive, or 'all' (default: the "
                            "avatar's)")
    add_runtime_arguments(speak)
    sub.add_parser("list", help="list the prepared avatars")
    rm = sub.add_parser("remove", help="delete an avatar")
    rm.add_argument("--name", required=True)
    return p


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "models_dir", None):
        os.environ["MUSETALK_MODELS_DIR"] = os.path.abspath(args.models_dir)
    from .models.registry import MissingWeightsError
    from .pipeline.avatars import AvatarError, list_avatars, read_manifest, remove_avatar
    from .pipeline.avatars.avatar import describe
    from .pipeline.media.audio import AudioError
    from .pipeline.media.video import VideoError
    from .pipeline.types import LipSyncError

    try:
        if args.command == "list":
            names = list_avatars()
            print("\n".join(describe(read_manifest(n)) for n in names) if names else "no avatars prepared yet")
        elif args.command == "remove":
            print(f"removed {remove_avatar(args.name)}")
        elif args.command == "prepare":
            prepare(args)
        else:
            speak(args)
    except (AvatarError, MissingWeightsError, VideoError, AudioError, LipSyncError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled; nothing written", file=sys.stderr)
        return 130
    return 0


def face_settings(args) -> dict:
    """The settings an avatar depends on (a change means preparing it again)."""
    keys = ("detector", "landmarks", "min_face_size", "min_score", "speaker", "track_index", "user_box",
            "shot_threshold", "bbox_shift", "extra_margin", "no_smooth_boxes", "force_rate", "blend_mode")
    return {k: getattr(args, k) for k in keys}


def prepare(args) -> None:
    from .cli import analyse_faces, make_runtime
    from .pipeline.avatars import Avatar, check_loop, file_identity, is_current, prepare_avatar
    from .pipeline.media.video import VideoFileFrames

    source, settings = file_identity(args.video), face_settings(args)
    if is_current(args.name, source, settings) and not args.force:
        changed = Avatar(args.name).set_default_loop(args.loop, args.loop_range)
        print(f"avatar {args.name}: up to date (same video, settings and weights); reused"
              + (f"; idle loop now {args.loop} over {args.loop_range or 'every frame'}" if changed else ""))
        return
    t0 = time.time()
    runtime = make_runtime(args)
    frames = VideoFileFrames(args.video, force_rate=args.force_rate, name="--video")
    check_loop(args.loop, args.loop_range, len(frames), args.name)      # before the long face analysis
    faces = analyse_faces(args, frames, runtime)
    avatar = prepare_avatar(args.name, frames, faces, runtime, source=source, settings=settings,
                            blend_mode=args.blend_mode, auto_download=not args.no_download, loop=args.loop,
                            loop_range=args.loop_range)
    print(f"avatar {args.name}: prepared in {time.time() - t0:.1f} s -> {avatar.folder}")


def speak(args):
    """Speak --audio through the avatar into --out; returns the report (the server keeps it with the job)."""
    from .cli import make_runtime
    from .pipeline.audio_features import compute_audio_features
    from .pipeline.avatars import Avatar
    from .pipeline.lipsync.sinks import WriterSink
    from .pipeline.media.audio import load_audio_file
    from .pipeline.media.writer import VideoWriter

    out = os.path.abspath(args.out)
    if os.path.exists(out):
        raise ValueError(f"--out {out} already exists; choose another name (nothing is overwritten).")
    if not out.lower().endswith(".mp4"):
        raise ValueError("--out must be an .mp4 file")
    avatar = Avatar(args.name)
    runtime = make_runtime(args)
    voice = load_audio_file(args.audio, name="--audio")
    features = compute_audio_features(voice, avatar.fps, "musetalk", None, runtime,
                                      auto_download=not args.no_download)
    run = avatar.start(features, runtime, batch_size=args.batch_size, auto_download=not args.no_download,
                       loop=args.loop, loop_range=args.loop_range)
    writer = VideoWriter(out, avatar.fps, avatar.frames.width, avatar.frames.height, run.audio, crf=args.crf)
    report = run.into(WriterSink(writer))
    writer.close()
    print(report.text())
    print(f"wrote {out} ({report.num_frames} frames)")
    return report
