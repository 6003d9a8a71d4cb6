"""What a media file really holds, measured from its packets rather than taken from its header: how long it plays,
how many video frames it has, its picture size, and proof that it decodes.

A container's duration field is written by the muxer and can be missing or wrong (a Matroska file written to a pipe
has none): limits on uploads and batch inputs are checked against :func:`measure`, which demuxes every packet of the
stream (no decoding past the first frame, so an hour of video is read at disk speed).
"""
from __future__ import annotations

import os
from dataclasses import dataclass


class ProbeError(ValueError):
    """The file is not media this pack can read; ``reason`` is for the user, ``detail`` for the log."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Measure:
    """What :func:`measure` found in one stream."""

    seconds: float          # from the first packet's start to the last packet's end
    frames: int             # video packets (one frame each); 0 for sound
    width: int = 0
    height: int = 0

    @property
    def pixels(self) -> int:
        return self.width * self.height


def measure(path: str, video: bool) -> Measure:
    """The first video (``video``) or audio stream of ``path``: its first frame decoded (a corrupt or wrong file is
    refused now), then every packet's timestamps counted. Raises :class:`ProbeError`."""
    import av

    name = os.path.basename(path)
    kind = "picture (video)" if video else "sound (audio)"
    try:
        with av.open(path) as container:
            streams = container.streams.video if video else container.streams.audio
            if not streams:
                raise ProbeError(f"{name} has no {kind} track")
            stream = streams[0]
            first = next(iter(container.decode(stream)), None)
            if first is None:
                raise ProbeError(f"{name}: no decodable {'frame' if video else 'sound'}")
            width, height = (int(first.width), int(first.height)) if video else (0, 0)
            container.seek(0)
            start, end, frames = None, None, 0
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                t0 = float(packet.pts * stream.time_base)
                t1 = t0 + float((packet.duration or 0) * stream.time_base)
                start = t0 if start is None else min(start, t0)
                end = t1 if end is None else max(end, t1)
                frames += 1
    except ProbeError:
        raise
    except Exception as exc:   # PyAV's own errors carry errno text and paths: for the log only
        raise ProbeError(f"{name} is not a readable media file", f"{type(exc).__name__}: {exc}") from None
    seconds = max(0.0, (end or 0.0) - (start or 0.0))
    return Measure(seconds=seconds, frames=frames if video else 0, width=width, height=height)
