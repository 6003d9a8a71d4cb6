"""``python <pack folder> --video in.mp4 --audio voice.wav --out out.mp4 [options]``: one dub from the command line.

A thin command: its flags are read from :class:`~pipeline.jobs.DubRequest`'s fields (``--batch-size`` is
``batch_size``), it builds the request and runs it (pipeline/jobs). Weights are looked up in
``$MUSETALK_MODELS_DIR/<folder>`` (default ``~/.cache/musetalk_enhanced/models``, or ``--models-dir``) and downloaded
on first use unless ``--no-auto-download`` (or ``--no-download``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os

from .pipeline.jobs import DubRequest, make_runtime, run
from .pipeline.jobs.flags import add_command_flags, add_request_flags, given, run_command, use_models_dir

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "example_workflows")
DEMO_VIDEO = "musetalk_example_face.mp4"    # shipped in example_workflows/ (scripts/make_example_media.py)
DEMO_VOICE = "musetalk_example_voice.wav"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musetalk_enhanced",
                                description="Re-sync the lips of the person in a video to a new voice track. Frames "
                                            "without a usable face (cutaways) pass through untouched. Other "
                                            "commands: avatar, batch, serve (python <pack> COMMAND --help).")
    add_request_flags(p, DubRequest)
    p.add_argument("--demo", action="store_true",
                   help=f"dub the example clip the pack ships ({DEMO_VIDEO}) with its example voice; the mp4 goes to "
                        "output/demo/ in the current folder unless --out is given")
    p.add_argument("--report-json", help="write the run report as JSON here")
    add_command_flags(p)
    return p


def resolve_demo(values: dict, parser: argparse.ArgumentParser, demo: bool) -> None:
    """--demo fills in the example clip, its voice and a fresh output name; otherwise --video and --out are
    required."""
    if demo:
        from .pipeline.media.writer import unique_output_path

        values["video"] = values.get("video") or os.path.join(EXAMPLES, DEMO_VIDEO)
        if not values.get("audio") and values["video"].endswith(DEMO_VIDEO):
            values["audio"] = os.path.join(EXAMPLES, DEMO_VOICE)
        if not values.get("out"):
            values["out"] = unique_output_path(os.path.abspath("output"), "demo/dubbed", ".mp4")
            os.remove(values["out"])  # only the name is wanted here: the writer creates the file (or nothing)
    missing = [flag for flag in ("--video", "--out") if not values.get(flag[2:])]
    if missing:
        parser.error(f"{' and '.join(missing)} required (or --demo to dub the example clip the pack ships)")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    values = given(args, DubRequest)
    resolve_demo(values, parser, args.demo)
    use_models_dir(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def dub() -> int:
        request = DubRequest.from_mapping(values).validate()       # every option checked before any work
        result = run(request, make_runtime(request, show_progress=not args.quiet), log=print)
        print(result.report.text())
        print(f"wrote {result.output} ({result.report.num_frames} frames, {result.seconds:.1f} s)")
        if args.report_json:
            with open(args.report_json, "w") as f:
                json.dump(result.as_dict(), f, indent=1)
        return 0

    return run_command(dub, DubRequest)
