"""``python <pack folder> ...`` or ``python -m musetalk_enhanced ...``: the commands, each a thin front end that
builds a typed request (pipeline/jobs) and runs it.

    python <pack> --video in.mp4 --audio voice.wav --out out.mp4 [options]   one dub            (cli.py)
    python <pack> batch JOBS [options]                                        a folder or list   (batch_cli.py)
    python <pack> avatar prepare|speak|list|remove ...                        avatars            (avatar_cli.py)
    python <pack> serve [--port 8288]                                         the dubbing server (server/serve.py)

Run as a program, the process first keeps the memory its networks free for their next call
(pipeline/cpu_heap.py).
"""
import importlib
import os
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else ""
    if command == "avatar":
        from .avatar_cli import main as run_command
    elif command == "batch":
        from .batch_cli import main as run_command
    elif command == "serve":
        from .server.serve import main as run_command
    else:
        from .cli import main as dub

        return dub(argv)
    return run_command(argv[1:])


def _import_pack():
    """``python <pack folder>``: import the folder as the package ``musetalk_enhanced`` (bootstrap.py), never
    shadowing other modules with the pack's own folders (nodes, models...)."""
    import runpy

    root = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == root:
        sys.path.pop(0)
    runpy.run_path(os.path.join(root, "bootstrap.py"))["import_pack"]()
    return importlib.import_module("musetalk_enhanced.__main__")


if __name__ == "__main__":
    import runpy

    # before torch or the pack allocate anything (standard library only)
    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipeline", "cpu_heap.py"))[
        "keep_freed_memory"]()
    sys.exit((main if __package__ else _import_pack().main)())
