"""Media nodes: load a video (streaming handle + IMAGE), load audio, mux frames + audio into an mp4.

Names carry the ``MuseTalk`` prefix: a pack node called ``LoadVideo``/``LoadAudio`` would be silently replaced by the
core one (ComfyUI comfy_extras/nodes_video.py).
"""
from __future__ import annotations

import os

from . import comfy
from ..pipeline.jobs.requests import DubRequest
from .common import FRAMES_TYPE, MISSING_AUDIO_KEY, frames_from_inputs, log_warning, widget

CATEGORY = "MuseTalk/media"
IMAGE_OUTPUTS = ("auto", "all_frames", "first_frame_only")
# "auto" decodes the IMAGE output only while it stays under this many bytes of float32 (the streaming handle is
# always complete); a 1080p minute is ~37 GB as float32.
AUTO_IMAGE_LIMIT_BYTES = int(float(os.environ.get("MUSETALK_MAX_IMAGE_GB", "4")) * (1 << 30))


def _file_stamp(name: str):
    """Re-run when the input file changes (path, size, mtime); always when it cannot be found."""
    path = comfy.resolve_input_path(name) if name else ""
    if path and os.path.isfile(path):
        st = os.stat(path)
        return f"{path}:{st.st_size}:{st.st_mtime_ns}"
    return float("nan")


def _silent_audio(duration: float, reason: str) -> dict:
    import torch

    rate = 16000
    n = max(1, int(round(duration * rate)))
    return {"waveform": torch.zeros((1, 1, n), dtype=torch.float32), "sample_rate": rate, MISSING_AUDIO_KEY: reason}


class MuseTalkLoadVideo:
    INPUT_FILE_WIDGETS = ("video",)  # combo of ComfyUI's input folder (for workflow validation)

    @classmethod
    def INPUT_TYPES(cls):
        files = comfy.list_input_files(("video",))
        return {
            "required": {
                "video": (files or [""], {"video_upload": True,
                                          "tooltip": "Video file in ComfyUI's input folder (upload with the button). "
                                                     "Ignored when video_input is connected."}),
                "force_rate": widget(DubRequest, "force_rate", "Resample to this frame rate by timestamps (0 = keep "
                                                               "the source rate). Variable-frame-rate sources stay "
                                                               "in sync.", step=0.001),
                "frame_load_cap": ("INT", {"default": 0, "min": 0, "max": 10_000_000,
                                           "tooltip": "Load at most this many frames (0 = all)."}),
                "skip_first_frames": ("INT", {"default": 0, "min": 0, "max": 10_000_000,
                                              "tooltip": "Skip this many frames at the start (after force_rate)."}),
                "select_every_nth": ("INT", {"default": 1, "min": 1, "max": 1000,
                                             "tooltip": "Keep every n-th frame (1 = all); the output fps is divided "
                                                        "accordingly."}),
                "images_output": (list(IMAGE_OUTPUTS), {"default": "auto",
                                                       "tooltip": "What the IMAGE output holds. 'auto' decodes every "
                                                                  "frame while the clip fits in "
                                                                  f"{AUTO_IMAGE_LIMIT_BYTES >> 30} GB of RAM as "
                                                                  "float32, otherwise only the first frame (use the "
                                                                  "'frames' output to stream long videos)."}),
            },
            "optional": {
                "video_input": ("VIDEO", {"tooltip": "A core VIDEO (e.g. from Load Video) to use instead of the "
                                                     "file widget; it is streamed, not decoded into RAM."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT", "INT", FRAMES_TYPE)
    RETURN_NAMES = ("images", "audio", "fps", "frame_count", "frames")
    OUTPUT_TOOLTIPS = ("Decoded frames (see images_output)", "The file's audio track (silent, and flagged, when the "
                       "file has none)", "Frame rate of the output frames", "Number of output frames",
                       "Streaming handle: decodes the file in chunks as later nodes need it (bounded memory)")
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Load a video as frames + audio + fps. The 'frames' output streams from the file, so long videos "
                   "never sit in RAM; rotation metadata, variable frame rate, odd sizes and 10-bit sources are handled.")

    @classmethod
    def VALIDATE_INPUTS(cls, video="", **kwargs):
        if video and not os.path.isfile(comfy.resolve_input_path(video)):
            return f"video: file not found: {video}"
        return True

    @classmethod
    def IS_CHANGED(cls, video="", **kwargs):
        return _file_stamp(video)

    def load(self, video="", force_rate=DubRequest.force_rate, frame_load_cap=0, skip_first_frames=0, select_every_nth=1,
             images_output="auto", video_input=None):
        from ..pipeline.media.video import VideoFileFrames

        if images_output not in IMAGE_OUTPUTS:
            raise ValueError(f"images_output: unknown value {images_output!r}; use one of {', '.join(IMAGE_OUTPUTS)}.")
        source, label = _video_source(video, video_input)
        frames = VideoFileFrames(source, force_rate=force_rate, skip_first_frames=skip_first_frames,
                                 select_every_nth=select_every_nth, frame_load_cap=frame_load_cap, name=label)
        images = _images_output(frames, images_output, label)
        return (images, _audio_of_frames(frames, source, label), float(frames.fps), int(len(frames)), frames)


def _video_source(video: str, video_input):
    """(file path or stream, the input's name) from the file widget or a core VIDEO input."""
    from ..pipeline.media.video import VideoError

    if video_input is not None:
        source = comfy.video_stream_source(video_input)
        if source is None:
            raise VideoError("video_input: this VIDEO object cannot be streamed (no get_stream_source); save it "
                             "to a file first or use the file widget.")
        return source, "video_input"
    if not video:
        raise VideoError("video: no file selected. Upload a video or connect video_input.")
    return comfy.resolve_input_path(video), "video"


def _audio_of_frames(frames, source, label: str) -> dict:
    """The part of the file's audio track under the selected frames, as AUDIO; silence (with a warning and the
    reason attached) when there is no track or it cannot be decoded."""
    from ..pipeline.media.audio import AudioError, load_audio_file

    t0 = frames.info.times[int(frames.src_index[0])]
    duration = len(frames) / frames.fps
    if not frames.info.has_audio:
        where = os.path.basename(source) if isinstance(source, str) else "the VIDEO input"
        log_warning(f"{label}: {where} has no audio track; the audio output is silence.")
        return _silent_audio(duration, f"{where} has no audio track")
    try:
        return load_audio_file(source, start=t0, duration=duration, name=label).to_comfy()
    except AudioError as exc:
        log_warning(f"{label}: audio track unreadable ({exc}); giving silence.")
        return _silent_audio(duration, f"{label}: the audio track could not be decoded ({exc})")


def _images_output(frames, images_output: str, label: str):
    """Every frame as IMAGE, or (too big for memory, or asked) only the first frame."""
    from ..pipeline.media.frames import uint8_to_image

    n = len(frames)
    nbytes = n * frames.width * frames.height * 3 * 4
    if images_output == "all_frames" or (images_output == "auto" and nbytes <= AUTO_IMAGE_LIMIT_BYTES):
        return frames.to_image()
    if images_output == "auto":
        log_warning(f"{label}: {n} frames at {frames.width}x{frames.height} would need {nbytes / (1 << 30):.1f} GB "
                    "as IMAGE; the IMAGE output holds only the first frame. Connect the 'frames' output to stream "
                    "the whole video, or set images_output to all_frames.")
    return uint8_to_image(frames.read([0]))


class MuseTalkLoadAudio:
    INPUT_FILE_WIDGETS = ("audio",)  # combo of ComfyUI's input folder (for workflow validation)

    @classmethod
    def INPUT_TYPES(cls):
        files = comfy.list_input_files(("audio", "video"))
        return {
            "required": {
                "audio": (files or [""], {"audio_upload": True,
                                          "tooltip": "Audio (or video) file in ComfyUI's input folder: wav, mp3, "
                                                     "flac, ogg, m4a, mp4... anything FFmpeg reads (upload one with "
                                                     "the button below)."}),
                "start_time": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1e6, "step": 0.01,
                                         "tooltip": "Start reading at this time, in seconds."}),
                "duration": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1e6, "step": 0.01,
                                       "tooltip": "Seconds to read (0 = to the end)."}),
            },
        }

    RETURN_TYPES = ("AUDIO", "FLOAT")
    RETURN_NAMES = ("audio", "duration")
    OUTPUT_TOOLTIPS = ("float32 [1, channels, samples] at the file's own rate and channel count",
                       "Length in seconds")
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Load any audio format PyAV/FFmpeg reads, optionally a slice of it; keeps rate and channels."

    @classmethod
    def VALIDATE_INPUTS(cls, audio="", **kwargs):
        if not audio:
            return "audio: no file selected. Upload an audio file."
        if not os.path.isfile(comfy.resolve_input_path(audio)):
            return f"audio: file not found: {audio}"
        return True

    @classmethod
    def IS_CHANGED(cls, audio="", **kwargs):
        return _file_stamp(audio)

    def load(self, audio, start_time=0.0, duration=0.0):
        from ..pipeline.media.audio import load_audio_file

        if start_time < 0 or duration < 0:
            raise ValueError("start_time and duration must be >= 0 (duration 0 = to the end).")
        a = load_audio_file(comfy.resolve_input_path(audio), start=start_time, duration=duration or None,
                            name="audio")
        return (a.to_comfy(), float(a.duration))


class MuseTalkMuxVideo:
    @classmethod
    def INPUT_TYPES(cls):
        from ..pipeline.media.writer import AUDIO_FIT

        return {
            "required": {
                "fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 0.001,
                                  "tooltip": "Frame rate of the output. 0 = the rate of the 'frames' input (needed "
                                             "when only 'images' is connected)."}),
                "filename_prefix": ("STRING", {"default": "MuseTalk/lipsync",
                                               "tooltip": "Output name under ComfyUI's output folder; a counter is "
                                                          "added and existing files are never overwritten."}),
                "crf": widget(DubRequest, "crf", "H.264 quality: lower is better and bigger (0 = lossless, 17-23 "
                                                 "typical)."),
                "audio_fit": (list(AUDIO_FIT), {"default": "pad_or_trim_audio",
                                                "tooltip": "When audio and video lengths differ: pad_or_trim_audio "
                                                           "(default) makes the audio exactly as long as the video; "
                                                           "hold_last_frame extends the video with its last frame to "
                                                           "the end of the audio; keep_both writes both untouched."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Frames to encode (IMAGE batch)."}),
                "frames": (FRAMES_TYPE, {"tooltip": "Frames to encode, streamed (used instead of images)."}),
                "audio": ("AUDIO", {"tooltip": "Sound track to mux in (any rate, channels, int PCM or lazy)."}),
                "encoder": widget(DubRequest, "encoder", "libx264 (software); nvenc = NVIDIA's hardware encoder, "
                                                         "crf becomes its constant quality, libx264 when it does not "
                                                         "open; auto = nvenc when CUDA is there."),
            },
        }

    RETURN_TYPES = ("VIDEO", "STRING")
    RETURN_NAMES = ("video", "path")
    OUTPUT_TOOLTIPS = ("Core VIDEO of the written file (for Save Video, Get Video Components...)",
                       "Full path of the written mp4")
    FUNCTION = "mux"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = ("Encode frames (IMAGE or streamed) to H.264 and mux the audio as AAC into an mp4 in the output "
                   "folder, frame by frame (bounded memory). Never overwrites an existing file.")

    def mux(self, fps=0.0, filename_prefix="MuseTalk/lipsync", crf=DubRequest.crf, audio_fit="pad_or_trim_audio", images=None,
            frames=None, audio=None, encoder=DubRequest.encoder):
        from ..pipeline.media.audio import from_comfy
        from ..pipeline.media.writer import pick_encoder, unique_output_path, write_video

        seq = frames_from_inputs(images, frames, fps, node="Mux Video")
        a = None
        if audio is not None:
            if hasattr(audio, "get") and audio.get(MISSING_AUDIO_KEY):
                log_warning(f"audio: {audio.get(MISSING_AUDIO_KEY)}; writing the video without sound.")
            else:
                a = from_comfy(audio, "audio")
        prefix = (filename_prefix or "MuseTalk/lipsync").strip().lstrip("/\\")
        if ".." in prefix.replace("\\", "/").split("/"):
            raise ValueError("filename_prefix: must stay inside the output folder (no '..').")
        runtime = comfy.make_runtime()
        note = pick_encoder(encoder, seq.width, seq.height, seq.fps, crf)[1]
        if note:
            log_warning(note)
        path = unique_output_path(comfy.output_dir(), prefix, ".mp4")
        try:
            write_video(path, seq, a, crf=crf, audio_fit=audio_fit, progress=runtime.progress, encoder=encoder)
        except BaseException:
            if os.path.exists(path) and os.path.getsize(path) == 0:
                os.remove(path)
            raise
        video = comfy.video_from_file(path)
        ui = {"images": [{"filename": os.path.basename(path), "subfolder": comfy.output_subfolder(path),
                          "type": "output"}], "animated": (True,)}
        return {"ui": ui, "result": (video, path)}


NODE_CLASS_MAPPINGS = {
    "MuseTalkLoadVideo": MuseTalkLoadVideo,
    "MuseTalkLoadAudio": MuseTalkLoadAudio,
    "MuseTalkMuxVideo": MuseTalkMuxVideo,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MuseTalkLoadVideo": "Load Video (MuseTalk, streaming)",
    "MuseTalkLoadAudio": "Load Audio (MuseTalk)",
    "MuseTalkMuxVideo": "Mux Video + Audio (MuseTalk)",
}
