"""Shared bits of the node adapters: custom type names and IMAGE/MUSETALK_FRAMES input handling."""
from __future__ import annotations

import logging
from typing import Optional, Tuple

FRAMES_TYPE = "MUSETALK_FRAMES"
FACES_TYPE = "MUSETALK_FACES"
AUDIO_FEATURES_TYPE = "MUSETALK_AUDIO_FEATURES"
BACKEND_TYPE = "MUSETALK_BACKEND"
# Extra key our loaders put in an AUDIO mapping that stands in for a missing track (other nodes ignore extra keys).
MISSING_AUDIO_KEY = "musetalk_missing_audio"

_log = logging.getLogger("musetalk_enhanced")


def log_warning(message: str) -> None:
    _log.warning(message)
    print(f"[MuseTalk] warning: {message}")


def frames_from_inputs(images=None, frames=None, fps: float = 0.0, node: str = "this node"):
    """A :class:`~..pipeline.media.frames.Frames` from either input: the streaming handle wins, IMAGE needs an fps."""
    from ..pipeline.media.frames import Frames, FramesError, ImageFrames

    if frames is not None:
        if not isinstance(frames, Frames):
            raise FramesError(f"frames: expected a {FRAMES_TYPE} handle, got {type(frames).__name__}.")
        if fps and fps > 0 and abs(fps - frames.fps) > 1e-6:
            log_warning(f"{node}: fps {fps} differs from the frames' own rate {frames.fps:.3f}; using {fps}.")
            return frames.with_fps(fps)
        return frames
    if images is None:
        raise FramesError(f"{node}: connect either 'images' (IMAGE) or 'frames' ({FRAMES_TYPE}).")
    if not fps or fps <= 0:
        raise FramesError(f"fps: {node} needs the frame rate of 'images' (connect the loader's fps output or type "
                          "it, e.g. 25).")
    return ImageFrames(images, fps)


def widget(settings_type, field: str, tooltip: str, as_type: Optional[str] = None, inverted: bool = False,
           **extra) -> Tuple:
    """A node input read from a request field (pipeline/jobs): its type, default and range or choices, so a node
    and the command line, server and batch share each default. ``as_type`` keeps a released widget's type (an INT
    widget for a float field); ``inverted`` is a switch that means the opposite of the field
    (``deterministic_latents`` = not ``sample_latents``)."""
    from ..pipeline.jobs.fields import spec_of

    s = spec_of(settings_type, field)
    options = {"default": (not s.default) if inverted else s.default, "tooltip": tooltip}
    if s.choices:
        return (list(s.choices), {**options, **extra})
    kind = as_type or {bool: "BOOLEAN", int: "INT", float: "FLOAT", str: "STRING"}[s.kind]
    if s.range:
        cast = int if kind == "INT" else float
        options.update(default=cast(options["default"]), min=cast(s.range[0]), max=cast(s.range[1]))
        if kind == "INT":
            options["step"] = 1
    return (kind, {**options, **extra})


def settings_from_widgets(settings_type, values: dict):
    """``settings_type`` (a request's field group) from a node's widget values, checked; a widget left out (a direct
    call) takes the field's default."""
    from ..pipeline.jobs.fields import build, checked

    return checked(build(settings_type, {k: v for k, v in values.items() if v is not None}))
