"""``python <pack> avatar ...``: prepare a face video once, then speak any voice through it (pipeline/avatars).

    avatar prepare --video v.mp4 --name NAME [face options] [--loop ping_pong|forward] [--loop-range A-B]
                                                              # reused when nothing changed, rebuilt otherwise
    avatar speak --name NAME --audio a.wav --out o.mp4 [--loop ...] [--loop-range A-B|all]
    avatar list
    avatar remove --name NAME

``prepare`` and ``speak`` take the flags of :class:`~pipeline.jobs.PrepareRequest` and
:class:`~pipeline.jobs.SpeakRequest` and run them (pipeline/jobs).
"""
from __future__ import annotations

import argparse

from .pipeline.jobs import PrepareRequest, SpeakRequest, make_runtime, run
from .pipeline.jobs.flags import add_command_flags, add_request_flags, given, run_command, use_models_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musetalk_enhanced avatar",
                                description="Real-time avatars: prepare a face video once, then speak any voice.")
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="prepare (or reuse) an avatar from a video")
    add_request_flags(prep, PrepareRequest, required=("video", "name"))
    add_command_flags(prep)
    speak = sub.add_parser("speak", help="speak a voice through an avatar into an mp4")
    add_request_flags(speak, SpeakRequest, required=("avatar", "audio", "out"))
    add_command_flags(speak)
    sub.add_parser("list", help="list the prepared avatars")
    rm = sub.add_parser("remove", help="delete an avatar")
    rm.add_argument("--name", required=True)
    return p


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    use_models_dir(args)
    if args.command == "list":
        return run_command(show_list)
    if args.command == "remove":
        return run_command(lambda: remove(args.name))
    request_type = PrepareRequest if args.command == "prepare" else SpeakRequest

    def job() -> int:
        request = request_type.from_mapping(given(args, request_type)).validate()
        result = run(request, make_runtime(request, show_progress=not args.quiet), log=print)
        if result.report is not None:
            print(result.report.text())
            print(f"wrote {result.output} ({result.report.num_frames} frames)")
        else:
            print(f"{result.message} in {result.seconds:.1f} s -> {result.output}")
        return 0

    return run_command(job, request_type)


def show_list() -> int:
    from .pipeline.avatars import list_avatars, read_manifest
    from .pipeline.avatars.avatar import describe

    names = list_avatars()
    print("\n".join(describe(read_manifest(n)) for n in names) if names else "no avatars prepared yet")
    return 0


def remove(name: str) -> int:
    from .pipeline.avatars import remove_avatar

    print(f"removed {remove_avatar(name)}")
    return 0
