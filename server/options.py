"""A job's options are the CLI's flags (``{"batch_size": 4}`` is ``--batch-size 4``), checked by the CLI's own
parser so the server, the CLI and the nodes share every default and choice list.

Options that belong to the server, not to a job (inputs, output, device, weights folder, downloads) are refused.
"""
from __future__ import annotations

import argparse
from typing import Dict, List

from .errors import bad_request

# Set by the server or the job's inputs, never by a job's options.
SERVER_OWNED = {"help", "video", "audio", "out", "demo", "report_json", "models_dir", "no_download", "quiet",
                "device", "name", "command"}


class _Refused(Exception):
    pass


class _CheckingParser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print and exit the process
        raise _Refused(message)


def _parser(kind: str) -> argparse.ArgumentParser:
    """The CLI parser whose options a ``kind`` job takes ('dub': the lip-sync CLI; 'avatar': ``avatar speak``)."""
    if kind == "dub":
        from ..cli import build_parser
        parser = build_parser()
    else:
        from ..avatar_cli import build_parser
        parser = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["speak"]
    parser.__class__ = _CheckingParser
    return parser


def allowed_options(kind: str) -> Dict[str, argparse.Action]:
    return {a.dest: a for a in _parser(kind)._actions if a.dest not in SERVER_OWNED and a.option_strings}


def option_argv(kind: str, options: Dict) -> List[str]:
    """``options`` as command-line flags, each checked (unknown names, wrong types, values outside the choices)."""
    if not isinstance(options, dict):
        raise bad_request("options", "options must be a JSON object", 'e.g. {"batch_size": 4, "backend": "musetalk"}')
    allowed = allowed_options(kind)
    argv: List[str] = []
    for key, value in options.items():
        action = allowed.get(key.replace("-", "_"))
        if action is None:
            raise bad_request(f"options.{key}", f"{key!r} is not an option of a {kind} job",
                              f"use one of: {', '.join(sorted(allowed))}")
        flag = action.option_strings[-1]
        if action.nargs == 0:               # a switch: true turns it on
            if not isinstance(value, bool):
                raise bad_request(f"options.{key}", f"{key} is a switch; got {value!r}", "send true or false")
            argv += [flag] if value else []
        elif isinstance(value, (dict, list)) or value is None:
            raise bad_request(f"options.{key}", f"{key} takes one value; got {value!r}", "send a number or a string")
        else:
            argv += [flag, str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


def check_options(kind: str, options: Dict, required: List[str]) -> None:
    """Parse ``required`` (the inputs' flags, placeholders) + the options exactly as the job will."""
    argv = option_argv(kind, options)
    try:
        _parser(kind).parse_args(required + argv)
    except _Refused as exc:
        field = next((f"options.{k}" for k in options if f"--{k.replace('_', '-')}" in str(exc)), "options")
        raise bad_request(field, str(exc), "see GET /openapi.json or the CLI's --help for the accepted values")


def parse_job_args(kind: str, options: Dict, required: List[str]) -> argparse.Namespace:
    """The Namespace the CLI would build for this job."""
    return _parser(kind).parse_args(required + option_argv(kind, options))
