"""Shared bits of the node adapters: custom type names and IMAGE/MUSETALK_FRAMES input handling."""
from __future__ import annotations

import logging

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
