"""Limits on what a job's inputs hold, measured from the files' packets (pipeline/media/probe.py), never from their
headers: the server applies them to every upload (``--max-seconds``, ``--max-frames``, ``--max-pixels``) and batch
to every row when they are set. A limit of 0 is no limit."""
from __future__ import annotations

from dataclasses import dataclass

from ..media.probe import Measure, ProbeError, measure
from .fields import RequestError


@dataclass(frozen=True)
class MediaLimits:
    max_seconds: float = 0.0
    max_frames: int = 0
    max_pixels: int = 0

    def check_file(self, field: str, path: str, video: bool) -> Measure:
        """``path`` measured and held to the limits; a file that does not decode, or is over a limit, raises
        :class:`RequestError` naming ``field`` (the decoder's own words go to ``RequestError.detail``)."""
        try:
            m = measure(path, video)
        except ProbeError as exc:
            raise RequestError(field, exc.reason, "check that the file plays, then send it again",
                               detail=exc.detail) from None
        over = [(self.max_seconds, m.seconds, "max-seconds", f"{m.seconds:.1f} s long"),
                (self.max_frames, m.frames, "max-frames", f"{m.frames} frames"),
                (self.max_pixels, m.pixels, "max-pixels", f"{m.width}x{m.height} pixels")]
        for limit, value, flag, what in over:
            if limit and value > limit:
                raise RequestError(field, f"{what}: over the limit of {limit:g}",
                                   f"cut or scale the file down, or raise --{flag}")
        return m

    def check_request(self, request) -> None:
        """Every input file of a request (its video and its voice)."""
        if not (self.max_seconds or self.max_frames or self.max_pixels):
            return
        for field, video in (("video", True), ("audio", False)):
            path = getattr(request, field, None)
            if path:
                self.check_file(field, path, video)
