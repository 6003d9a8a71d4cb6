"""A job's options are the option fields of the pipeline's typed request (pipeline/jobs): ``{"batch_size": 4}`` is
``DubRequest.batch_size``; the older names the command line used (``steps``, ``no_smooth_boxes``) still work. The
request's own coercion and checks refuse a bad value, and their ``{field, message, fix}`` becomes the 400.

Inputs, the output, the device and downloads belong to the server, not to a job's options: naming them is refused.
One option is the server's own: ``{"mask": true}`` makes a dub also write the mask of the pixels it changed (the
request's ``mask_out``, beside the result), served by ``GET /v1/jobs/{id}/mask``.
"""
from __future__ import annotations

import os
from typing import Dict

from ..pipeline.jobs import REQUESTS, Request, RequestError
from ..pipeline.jobs.fields import OPTION, as_sent
from .errors import bad_request


MASK_OPTION = "mask"          # the server's own option: a dub also writes its mask (GET /v1/jobs/{id}/mask)
MASK_OPTION_SCHEMA = {"type": "boolean", "default": False,
                      "description": "dub: also write the mask of the changed pixels as a grey mp4 "
                                     "(GET /v1/jobs/{id}/mask)"}


def mask_path(out: str) -> str:
    """Where a job's mask is written beside its output ``out``."""
    return os.path.splitext(out)[0] + ".mask.mp4"


def build_request(kind: str, options, inputs: Dict[str, str], out: str) -> Request:
    """The request of a ``kind`` job ('dub' or 'avatar'), checked; a refusal names ``options.<name>`` for an
    option and the input's own field otherwise."""
    if not isinstance(options, dict):
        raise bad_request("options", "options must be a JSON object", 'e.g. {"batch_size": 4, "backend": "musetalk"}')
    request_type = REQUESTS[kind]
    options = dict(options)
    mask = wants_mask(kind, options.pop(MASK_OPTION, False))
    try:
        request = request_type.from_mapping(options, roles=(OPTION,), prefix="options.")
        masked = {"mask_out": mask_path(out)} if mask else {}
        return request.replace(**inputs, out=out, **masked).validate()
    except RequestError as exc:
        exc = as_sent(exc, request_type, options, "options.")
        raise bad_request(exc.field, exc.message, exc.fix) from None


def wants_mask(kind: str, value) -> bool:
    """The ``mask`` option, checked: a boolean, for a dub."""
    if not isinstance(value, bool):
        raise bad_request("options.mask", f"{value!r} is not true or false", 'e.g. {"mask": true}')
    if value and kind != "dub":
        raise bad_request("options.mask", "only a dub writes a mask", "leave it out for an avatar's speech")
    return value
