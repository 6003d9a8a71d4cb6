"""Lip-sync nodes: choose the backend (UNet), run the batched lip-sync."""
from __future__ import annotations

import os

from . import comfy
from ..pipeline.jobs.fields import spec_of
from ..pipeline.jobs.requests import GeneratorSettings, LipSyncSettings
from .common import (AUDIO_FEATURES_TYPE, BACKEND_TYPE, FACES_TYPE, FRAMES_TYPE, frames_from_inputs, log_warning,
                     settings_from_widgets, widget)

CATEGORY = "MuseTalk/lipsync"
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")   # the node's list; any torch device string works elsewhere
OUTPUT_IMAGE_LIMIT_BYTES = int(float(os.environ.get("MUSETALK_MAX_IMAGE_GB", "4")) * (1 << 30))


class MuseTalkUNetSelector:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "backend": widget(GeneratorSettings, "backend",
                                  "auto: LatentSync 1.6 (or 1.5) when its weights are in models/latentsync, else "
                                  "MuseTalk v1.5. A chosen LatentSync falls back to MuseTalk (reported) when its "
                                  "weights are missing, it runs out of memory or fails."),
                "dtype": widget(GeneratorSettings, "dtype",
                                "Compute precision: auto = fp16 on a GPU (as the originals), bf16 on a CPU with "
                                "native bf16 (AVX512-BF16/AMX: twice as fast), else fp32. fp32 = the original's exact "
                                "numbers."),
                "device": (list(DEVICE_CHOICES), {"default": spec_of(GeneratorSettings, "device").default,
                                                  "tooltip": "auto = ComfyUI's device (the GPU when there is one)."}),
                "auto_download": widget(GeneratorSettings, "auto_download",
                                        "Download missing weights from Hugging Face on first use. Off: a missing "
                                        "file is an error that lists where to put it."),
                "deterministic_latents": widget(GeneratorSettings, "sample_latents",
                                                "MuseTalk: encode faces with the VAE mean (deterministic, what "
                                                "training used). Off = sample the posterior like the original "
                                                "inference script (slight flicker, seeded).", inverted=True),
                "seed": widget(GeneratorSettings, "seed", "Seed for LatentSync's initial noise and posterior "
                                                          "sampling.", control_after_generate=False),
                "latentsync_steps": widget(GeneratorSettings, "latentsync_steps",
                                           "LatentSync DDIM steps (the original uses 20)."),
                "latentsync_guidance": widget(GeneratorSettings, "latentsync_guidance",
                                              "LatentSync classifier-free guidance on the audio (1.0 = off; 1.5 as "
                                              "the original; 2-3 stronger lips).", step=0.1),
                "deepcache": widget(GeneratorSettings, "deepcache",
                                    "LatentSync: reuse deep UNet features on 2 of every 3 steps (about 2x faster, "
                                    "slightly softer)."),
            },
            "optional": {
                "frame_ops": widget(GeneratorSettings, "frame_ops",
                                    "MuseTalk's face crop and paste-back: cv2 = OpenCV and Pillow on the CPU; torch = "
                                    "the same arithmetic on the GPU (equal pixel for pixel, frames stay on the "
                                    "device); auto = torch on CUDA."),
                "compile": widget(GeneratorSettings, "compile",
                                  "MuseTalk networks: compile = torch.compile at one batch shape (the first batch "
                                  "takes minutes); cuda_graphs = the same replayed as CUDA graphs. off = as the "
                                  "original."),
            },
        }

    RETURN_TYPES = (BACKEND_TYPE,)
    RETURN_NAMES = ("backend",)
    OUTPUT_TOOLTIPS = ("The backend choice and its settings; models load lazily in the lip-sync node",)
    FUNCTION = "select"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Choose the lip-sync generator (MuseTalk v1.5, LatentSync 1.5/1.6 or auto) and its precision. "
                   "Nothing loads here: the lip-sync node loads the models once and reports which backend ran.")

    def select(self, backend=None, dtype=None, device=None, auto_download=None, deterministic_latents=None,
               seed=None, latentsync_steps=None, latentsync_guidance=None, deepcache=None, frame_ops=None,
               compile=None):
        settings = settings_from_widgets(GeneratorSettings, dict(
            backend=backend, dtype=dtype, device=device, auto_download=auto_download,
            deterministic_latents=deterministic_latents, seed=seed, latentsync_steps=latentsync_steps,
            latentsync_guidance=latentsync_guidance, deepcache=deepcache, frame_ops=frame_ops, compile=compile))
        return (settings.backend_spec(),)


class MuseTalkBatchedLipSync:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "faces": (FACES_TYPE, {"tooltip": "Per-frame faces and cutaways from Face Detect with Cutaways (run "
                                                  "on the same frames)."}),
                "audio_features": (AUDIO_FEATURES_TYPE, {"tooltip": "Whisper Audio Features of the voice track."}),
                "batch_size": widget(LipSyncSettings, "batch_size", "Frames per model call. Higher is faster on a big "
                                                               "GPU; out of memory halves it automatically."),
                "length_policy": widget(LipSyncSettings, "length_policy",
                                        "follow_audio: output as long as the audio (the video ping-pongs if shorter, "
                                        "like the original); follow_video: as long as the video (frames after the "
                                        "audio are synced to silence); shortest: the shorter of the two."),
                "blend_mode": widget(LipSyncSettings, "blend_mode",
                                     "How the new mouth is pasted: jaw/raw/neck use the BiSeNet face parser (the "
                                     "original v1.5 uses jaw); feather needs no extra weights; auto = jaw when the "
                                     "parser weights are present, else feather. box: a feathered box over the lower "
                                     "face; mouth: the lower face drawn from the landmarks (both shaped by "
                                     "feather_px and dilate_px; LatentSync uses them instead of its own mask)."),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "The video frames (IMAGE batch). Use either this or 'frames'."}),
                "frames": (FRAMES_TYPE, {"tooltip": "The video frames, streamed from a file (long videos)."}),
                "fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 0.001,
                                  "tooltip": "Frame rate of 'images' (0 = take it from 'frames' or the audio "
                                             "features)."}),
                "backend": (BACKEND_TYPE, {"tooltip": "From UNet / Backend Selector (default: auto)."}),
                "on_silence": widget(LipSyncSettings, "on_silence",
                                     "sync: lip-sync every face frame. keep_original: while the voice is silent the "
                                     "frames keep the real mouth (bit-identical, reported like cutaways), so lips "
                                     "do not quiver or hang open."),
                "silence_fade": widget(LipSyncSettings, "silence_fade",
                                       "keep_original: frames over which the lip-synced mouth fades into the real "
                                       "one before a silence and back after it."),
                "min_silence": widget(LipSyncSettings, "min_silence",
                                      "keep_original: the shortest silence (seconds) that keeps the real mouth; "
                                      "shorter pauses stay lip-synced.", step=0.05),
                "feather_px": widget(LipSyncSettings, "feather_px",
                                     "box / mouth masks: how wide the edge fades, in pixels of the 256 px face."),
                "dilate_px": widget(LipSyncSettings, "dilate_px",
                                    "box / mouth masks: grow (+) or shrink (-) the pasted region, in pixels of the "
                                    "256 px face."),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("IMAGE", FRAMES_TYPE, "AUDIO", "FLOAT", "STRING", "MASK")
    RETURN_NAMES = ("images", "frames", "audio", "fps", "report", "mask")
    OUTPUT_TOOLTIPS = ("Lip-synced frames as IMAGE (for long outputs only the first frame; use 'frames')",
                       "Lip-synced frames, streamed (for Mux Video)", "The voice track cut/padded to the output",
                       "Frame rate of the output", "Which backend ran on which frames, fallbacks and why, frames "
                       "synced vs passed through",
                       "Per frame, the soft mask of the pixels the lip-sync changed (0 on cutaways and kept "
                       "silence): restore or sharpen only the new mouth (e.g. ImageCompositeMasked). Like 'images', "
                       "only the first frame for long outputs")
    FUNCTION = "lipsync"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Lip-sync the frames to the audio in batches. Cutaway frames (no usable face) pass through "
                   "bit-identical; face frames change only inside the pasted mouth region; output frame k uses the "
                   "audio at k/fps. Progress and Cancel work per batch.")

    def lipsync(self, faces, audio_features, batch_size=None, length_policy=None, blend_mode=None,
                images=None, frames=None, fps=0.0, backend=None, on_silence=None, silence_fade=None,
                min_silence=None, feather_px=None, dilate_px=None, unique_id=None):
        from ..pipeline.lipsync import LipSyncRun
        from ..pipeline.lipsync.sinks import MaskImageSink

        settings = settings_from_widgets(LipSyncSettings, dict(
            batch_size=batch_size, length_policy=length_policy, blend_mode=blend_mode, on_silence=on_silence,
            silence_fade=silence_fade, min_silence=min_silence, feather_px=feather_px, dilate_px=dilate_px))
        if not fps and frames is None and images is not None:
            fps = float(audio_features.fps)
        seq = frames_from_inputs(images, frames, fps, node="Batched Lip-Sync")
        run = LipSyncRun(seq, faces, audio_features, backend, settings.length_policy, settings.batch_size,
                         settings.blend_options(), settings.silence_options())
        runtime = comfy.make_runtime(unique_id, run.spec.device, run.spec.dtype, frame_ops=run.spec.frame_ops,
                                     compile=run.spec.compile)
        sink, to_image = output_sink(seq, run.plan)
        mask_sink = MaskImageSink(run.plan.num_frames, seq.height, seq.width,
                                  first_only=_image_bytes(seq, run.plan.num_frames) > OUTPUT_IMAGE_LIMIT_BYTES)
        report = run.into(sink, runtime, mask_sink=mask_sink)
        images_out, frames_out = node_outputs(sink.close(), seq, to_image)
        text = report.text()
        runtime.log(text)
        audio_out = run.audio.to_comfy() if run.audio is not None else None
        return {"ui": {"text": [text]}, "result": (images_out, frames_out, audio_out, float(seq.fps), text,
                                                   mask_sink.close())}


def output_sink(seq, plan):
    """An IMAGE batch when the input was one and the output fits OUTPUT_IMAGE_LIMIT_BYTES; otherwise the source
    frames + the lip-sync patches, composed when read (no lossy intermediate). Returns (sink, is an IMAGE sink)."""
    from ..pipeline.lipsync.patched_frames import PatchSink
    from ..pipeline.lipsync.sinks import ImageSink
    from ..pipeline.media.frames import ImageFrames

    if isinstance(seq, ImageFrames) and _image_bytes(seq, plan.num_frames) <= OUTPUT_IMAGE_LIMIT_BYTES:
        return ImageSink(plan.num_frames, seq.height, seq.width), True
    return PatchSink(seq, plan.source, comfy.temp_dir()), False


def node_outputs(result, seq, to_image: bool):
    """``(IMAGE, MUSETALK_FRAMES)`` from the sink's result; an IMAGE too big for memory holds the first frame."""
    from ..pipeline.media.frames import ImageFrames, uint8_to_image

    if to_image:
        return result, ImageFrames(result, seq.fps)
    if _image_bytes(seq, len(result)) <= OUTPUT_IMAGE_LIMIT_BYTES:
        return result.to_image(), result
    log_warning("the lip-synced video is too long for an IMAGE batch; the 'images' output holds the first frame "
                "only. Use the 'frames' output (e.g. into Mux Video).")
    return uint8_to_image(result.read([0])), result


def _image_bytes(seq, num_frames: int) -> int:
    return num_frames * seq.width * seq.height * 3 * 4


NODE_CLASS_MAPPINGS = {
    "MuseTalkUNetSelector": MuseTalkUNetSelector,
    "MuseTalkBatchedLipSync": MuseTalkBatchedLipSync,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MuseTalkUNetSelector": "UNet / Backend Selector (MuseTalk, LatentSync)",
    "MuseTalkBatchedLipSync": "Batched Lip-Sync (cutaway-safe)",
}
