"""Jobs: the one typed request every front end builds, and running it (docs/architecture.md, "A request's way").

* :mod:`.fields` — what a field is (default, range, choices, role, older names) and :class:`RequestError`;
* :mod:`.requests` — :class:`DubRequest`, :class:`SpeakRequest`, :class:`PrepareRequest`;
* :mod:`.run` — ``run(request, runtime, progress, cancel) -> JobResult``;
* :mod:`.flags` / :mod:`.schema` — command-line flags and JSON Schema read from the fields;
* :mod:`.joblist` / :mod:`.batch` — many requests from a CSV, JSONL or folder, run with the models loaded once,
  recorded, resumable.
"""
from .fields import RequestError
from .requests import REQUESTS, DubRequest, PrepareRequest, Request, SpeakRequest
from .run import JobResult, make_runtime, run

__all__ = ["RequestError", "Request", "DubRequest", "SpeakRequest", "PrepareRequest", "REQUESTS", "JobResult",
           "make_runtime", "run"]
