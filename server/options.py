"""A job's options are the option fields of the pipeline's typed request (pipeline/jobs): ``{"batch_size": 4}`` is
``DubRequest.batch_size``; the older names the command line used (``steps``, ``no_smooth_boxes``) still work. The
request's own coercion and checks refuse a bad value, and their ``{field, message, fix}`` becomes the 400.

Inputs, the output, the device and downloads belong to the server, not to a job's options: naming them is refused.
"""
from __future__ import annotations

from typing import Dict

from ..pipeline.jobs import REQUESTS, Request, RequestError
from ..pipeline.jobs.fields import OPTION, as_sent
from .errors import bad_request


def build_request(kind: str, options, inputs: Dict[str, str], out: str) -> Request:
    """The request of a ``kind`` job ('dub' or 'avatar'), checked; a refusal names ``options.<name>`` for an
    option and the input's own field otherwise."""
    if not isinstance(options, dict):
        raise bad_request("options", "options must be a JSON object", 'e.g. {"batch_size": 4, "backend": "musetalk"}')
    request_type = REQUESTS[kind]
    try:
        request = request_type.from_mapping(options, roles=(OPTION,), prefix="options.")
        return request.replace(**inputs, out=out).validate()
    except RequestError as exc:
        exc = as_sent(exc, request_type, options, "options.")
        raise bad_request(exc.field, exc.message, exc.fix) from None
