"""Command-line flags from a request's fields: ``--batch-size`` is ``batch_size``, with its type, choices and help
read from the field; switches take ``--x`` / ``--no-x``; the older flags (``--steps``, ``--no-smooth-boxes``,
``--no-download``) still work. Flags the user did not give are left out of the parsed namespace, so the request's
own defaults apply (and ``batch`` can tell a folder-wide option from a default).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Dict, Iterable, Optional

from .fields import INPUT, FieldSpec, RequestError, spec_of, specs


def add_request_flags(parser: argparse.ArgumentParser, request_type, skip: Iterable[str] = (),
                      required: Iterable[str] = (), title: Optional[str] = None) -> None:
    """One flag per field of ``request_type`` (inputs first), except ``skip``; ``required`` inputs must be given.
    Values stay text: the request coerces and checks them, naming the field."""
    skip, required = set(skip), set(required)
    fields = [s for s in specs(request_type) if s.name not in skip]
    fields.sort(key=lambda s: s.role != INPUT)
    group = parser.add_argument_group(title) if title else parser
    for s in fields:
        _add(group, s, s.name in required)


def _add(group, s: FieldSpec, required: bool) -> None:
    main = s.cli_flag
    extra = [f"--{n.replace('_', '-')}" for n in s.old_names]
    help_text = s.help + _default_text(s)
    if s.kind is bool:
        flags = [main] + [f for f in extra if f != main]
        group.add_argument(*flags, dest=s.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=help_text)
        negatives = {"--no-" + f[2:] for f in flags}
        for n in s.inverted_names:
            flag = f"--{n.replace('_', '-')}"
            if flag not in negatives:
                group.add_argument(flag, dest=s.name, action="store_false", default=argparse.SUPPRESS,
                                   help=f"same as --no-{main[2:]}")
        return
    flags = [main] + [f for f in [f"--{s.name.replace('_', '-')}"] + extra if f != main]
    group.add_argument(*dict.fromkeys(flags), dest=s.name, type=str, choices=s.choices,
                       default=argparse.SUPPRESS, required=required, help=help_text,
                       metavar=None if s.choices else s.name.upper())


def _default_text(s: FieldSpec) -> str:
    if s.role == INPUT or s.default in (None, ""):
        return ""
    if s.kind is bool:
        return f" (default: {'on' if s.default else 'off'})"
    rng = f"; {s.describe_range()}" if s.range else ""
    return f" (default: {s.default}{rng})"


def given(args: argparse.Namespace, request_type) -> Dict[str, Any]:
    """The fields of ``request_type`` the user gave on the command line (as parsed text or switches)."""
    names = {s.name for s in specs(request_type)}
    return {k: v for k, v in vars(args).items() if k in names}


def add_command_flags(parser: argparse.ArgumentParser) -> None:
    """What every command takes besides a request: the weights folder and quiet progress."""
    parser.add_argument("--models-dir", help="models root (default $MUSETALK_MODELS_DIR or "
                                             "~/.cache/musetalk_enhanced/models)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def use_models_dir(args: argparse.Namespace) -> None:
    if getattr(args, "models_dir", None):
        os.environ["MUSETALK_MODELS_DIR"] = os.path.abspath(args.models_dir)


def flag_error(exc: RequestError, request_type) -> str:
    """A request error as the command line says it: the flag instead of the field name."""
    name = exc.field
    try:
        name = spec_of(request_type, exc.field).cli_flag
    except KeyError:
        pass
    return f"{name}: {exc.message}" + (f" ({exc.fix})" if exc.fix else "")


def run_command(body: Callable[[], int], request_type=None) -> int:
    """``body()``'s exit status; a refused request or a failed job prints one line (``error: ...``) and gives 2, a
    cancel gives 130 with nothing written."""
    from ...models.registry import MissingWeightsError
    from ..runtime import Cancelled
    from ..types import LipSyncError

    try:
        return body()
    except RequestError as exc:
        print(f"error: {flag_error(exc, request_type) if request_type else exc}", file=sys.stderr)
        return 2
    except (MissingWeightsError, LipSyncError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Cancelled):
        print("cancelled; no output written", file=sys.stderr)
        return 130
