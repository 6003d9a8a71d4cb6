"""Audio nodes: whisper-tiny features and their per-frame windows (pipeline/audio_features.py)."""
from __future__ import annotations

from . import comfy
from ..pipeline.backends.selection import MUSETALK, layout_of
from ..pipeline.whisper_encoder import LAYOUTS
from ..pipeline.jobs.requests import DubRequest
from .common import AUDIO_FEATURES_TYPE, BACKEND_TYPE, widget

CATEGORY = "MuseTalk/audio"
FOLLOW_BACKEND = "follow backend"
LAYOUT_CHOICES = (FOLLOW_BACKEND,) + LAYOUTS


def backend_audio_layout(backend) -> str:
    """The audio layout the connected Backend Selector's choice reads (``BackendSpec.audio_layout``: its first
    backend's own declaration, pipeline/backends/selection.py ``layout_of``); MuseTalk's when none is connected."""
    if backend is None:
        return layout_of(MUSETALK)
    layout = getattr(backend, "audio_layout", None)
    if layout not in LAYOUTS:
        raise ValueError(f"backend: expected the Backend Selector's output, got {type(backend).__name__}; connect "
                         "a Backend Selector (MuseTalk) node, or pick the layout instead of 'follow backend'.")
    return layout


class MuseTalkWhisperFeatures:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": "The voice track (any sample rate and channel count; it is mixed to "
                                               "mono and resampled to 16 kHz for whisper)."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 0.001,
                                  "tooltip": "Frame rate of the video the mouth is synced to. Connect the video "
                                             "loader's fps output. Output frame k uses the audio at time k/fps, so "
                                             "29.97 or 23.976 do not drift."}),
                "layout": (list(LAYOUT_CHOICES), {"default": FOLLOW_BACKEND,
                                                  "tooltip": "Which model the features are for: MuseTalk (whisper "
                                                             "per 30 s segment, final LayerNorm) or LatentSync "
                                                             "(whole-file log-mel, no final LayerNorm). 'follow "
                                                             "backend' takes it from the backend input (MuseTalk "
                                                             "when none is connected)."}),
                "compat_int_fps": widget(DubRequest, "compat_int_fps",
                                         "Reproduce the original MuseTalk's int(fps) truncation (29.97 becomes 29, so "
                                         "audio and mouth drift apart by about 2 s per minute). Only for comparing "
                                         "with the original; leave off."),
                "auto_download": widget(DubRequest, "auto_download",
                                        "Download whisper-tiny (~150 MB for MuseTalk, ~75 MB for LatentSync) from "
                                        "Hugging Face on first use when it is not in the models folder. Either format "
                                        "is used if present."),
            },
            "optional": {
                "backend": (BACKEND_TYPE, {"tooltip": "The lip-sync backend these features will drive; used when "
                                                      "layout is 'follow backend'."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = (AUDIO_FEATURES_TYPE, "INT")
    RETURN_NAMES = ("audio_features", "frame_count")
    OUTPUT_TOOLTIPS = ("whisper-tiny states of the whole track and the rule that gives each video frame its audio "
                       "window", "Number of video frames the audio covers at this fps")
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Encode a voice track with whisper-tiny into the audio features the lip-sync backends consume: "
                   "one 50x384 window per video frame, placed by true time (no drift at 29.97 fps). Long audio is "
                   "encoded 30 s at a time with bounded memory.")

    def encode(self, audio, fps=25.0, layout=FOLLOW_BACKEND, compat_int_fps=DubRequest.compat_int_fps,
               auto_download=DubRequest.auto_download, backend=None,
               unique_id=None):
        from ..pipeline.media.audio import from_comfy
        from ..pipeline.audio_features import compute_audio_features

        if layout not in LAYOUT_CHOICES:
            raise ValueError(f"layout: unknown value {layout!r}; use one of {', '.join(LAYOUT_CHOICES)}.")
        if layout == FOLLOW_BACKEND:
            layout = backend_audio_layout(backend)
        runtime = comfy.make_runtime(unique_id)
        features = compute_audio_features(from_comfy(audio, "audio"), float(fps), layout, None, runtime,
                                          compat=bool(compat_int_fps), auto_download=bool(auto_download))
        return (features, int(features.num_frames))


NODE_CLASS_MAPPINGS = {"MuseTalkWhisperFeatures": MuseTalkWhisperFeatures}
NODE_DISPLAY_NAME_MAPPINGS = {"MuseTalkWhisperFeatures": "Whisper Audio Features"}
