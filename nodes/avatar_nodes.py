"""Real-time avatar nodes: prepare a face video once, then speak any voice through it (pipeline/avatars)."""
from __future__ import annotations

from . import comfy
from ..pipeline.jobs.fields import spec_of
from ..pipeline.jobs.requests import PrepareRequest, SpeakRequest
from .common import FACES_TYPE, FRAMES_TYPE, frames_from_inputs, settings_from_widgets, widget
from .lipsync_nodes import node_outputs, output_sink

AVATAR_TYPE = "MUSETALK_AVATAR"
CATEGORY = "MuseTalk/avatars"
FROM_AVATAR = "avatar default"       # Avatar Speak's loop choice: the one stored with the avatar
LOOP_TOOLTIP = ("How the frames repeat while the avatar speaks: ping_pong plays them forward then backward (the "
                "original MuseTalk's cycle, no jump), forward starts over from the first frame of the range.")
RANGE_TOOLTIP = ("The source frames the idle loop uses, 'a-b' (frames a to b, inclusive, counted from 0), e.g. "
                 "'0-49' for the first two seconds at 25 fps; empty or 'all' = every frame.")


class MuseTalkPrepareAvatar:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "name": ("STRING", {"default": "my_avatar", "tooltip": "The avatar's name (letters, digits, _ . -). "
                                    "It is stored under models/musetalk/avatars/<name> and can be spoken later by "
                                    "name, also after a restart."}),
                "faces": (FACES_TYPE, {"tooltip": "Face Detect with Cutaways run on the same frames: frames without "
                                                  "a face are kept and stay untouched when the avatar speaks."}),
                "blend_mode": widget(PrepareRequest, "blend_mode", "How the new mouth will be pasted (as Batched "
                                                                   "Lip-Sync): jaw/raw/neck use the BiSeNet face "
                                                                   "parser, feather needs no weights; auto = jaw when "
                                                                   "the parser weights are present; box / mouth: "
                                                                   "shaped by feather_px and dilate_px."),
                "force": widget(PrepareRequest, "force", "Prepare again even when the frames, face settings and "
                                                         "weights are unchanged."),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "The avatar's frames as IMAGE (give 'images' or 'frames')."}),
                "frames": (FRAMES_TYPE, {"tooltip": "The avatar's frames streamed from a video file (Load Video)."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 0.001, "max": 240.0, "step": 0.001,
                                  "tooltip": "Frame rate of 'images' (ignored with 'frames': it carries its own)."}),
                "loop": widget(PrepareRequest, "loop", LOOP_TOOLTIP + " Stored as the avatar's default; changing "
                                                          "it does not prepare the avatar again."),
                "loop_range": widget(PrepareRequest, "loop_range", RANGE_TOOLTIP + " Stored as the avatar's "
                                                                  "default; changing it does not prepare the avatar "
                                                                  "again."),
                "feather_px": widget(PrepareRequest, "feather_px", "box / mouth masks: how wide the edge fades, in "
                                                                   "pixels of the 256 px face."),
                "dilate_px": widget(PrepareRequest, "dilate_px", "box / mouth masks: grow (+) or shrink (-) the "
                                                                 "pasted region, in pixels of the 256 px face."),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = (AVATAR_TYPE, "STRING")
    RETURN_NAMES = ("avatar", "summary")
    OUTPUT_TOOLTIPS = ("The prepared avatar, for Avatar Speak", "Frames, faces and cutaways stored, or 'reused'")
    FUNCTION = "prepare"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Prepare a face video once for real-time speaking: stores its frames, face decisions (cutaways "
                   "included), MuseTalk's VAE latents and the blend masks. Reused as long as the frames, the face "
                   "settings and the weights are the same.")

    def prepare(self, name, faces, blend_mode=PrepareRequest.blend_mode, force=PrepareRequest.force, images=None,
                frames=None, fps=25.0, loop=PrepareRequest.loop, loop_range=PrepareRequest.loop_range,
                feather_px=None, dilate_px=None, unique_id=None):
        from ..pipeline.avatars import Avatar, is_current, prepare_avatar
        from ..pipeline.avatars.avatar import describe
        from ..pipeline.jobs.requests import BlendSettings

        blend = settings_from_widgets(BlendSettings, dict(blend_mode=blend_mode, feather_px=feather_px,
                                                          dilate_px=dilate_px))
        seq = frames_from_inputs(images, frames, fps if frames is None else 0.0, node="Prepare Avatar")
        source, settings = _identity(seq), {"faces": _face_settings(faces), **blend.blend_identity()}
        loop = loop or PrepareRequest.loop
        if not force and is_current(name, source, settings):
            avatar = Avatar(name)
            changed = avatar.set_default_loop(loop, loop_range)
            return (avatar, f"reused{' (new idle loop)' if changed else ''}: {describe(avatar.manifest)}")
        runtime = comfy.make_runtime(unique_id)
        avatar = prepare_avatar(name, seq, faces, runtime, source=source, settings=settings,
                                blend_mode=blend.blend_options(),
                                loop=loop, loop_range=loop_range)
        return (avatar, f"prepared: {describe(avatar.manifest)}")


class MuseTalkAvatarSpeak:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": "The voice to speak (any rate and channels)."}),
                "batch_size": widget(SpeakRequest, "batch_size", "Frames per model call; out of memory halves it "
                                                                 "automatically."),
            },
            "optional": {
                "avatar": (AVATAR_TYPE, {"tooltip": "From Prepare Avatar. Or leave it unconnected and type "
                                                    "'avatar_name'."}),
                "avatar_name": ("STRING", {"default": "", "tooltip": "Name of an avatar prepared earlier (used when "
                                                                     "'avatar' is not connected)."}),
                "loop": ([FROM_AVATAR] + list(spec_of(SpeakRequest, "loop").choices), {
                    "default": FROM_AVATAR, "tooltip": LOOP_TOOLTIP + f" '{FROM_AVATAR}': the loop stored with the "
                                                                      "avatar."}),
                "loop_range": ("STRING", {"default": "", "tooltip": RANGE_TOOLTIP.replace(
                    "empty or 'all' = every frame", "'all' = every frame; empty = the range stored with the avatar")}),
                "on_silence": widget(SpeakRequest, "on_silence", "sync: lip-sync every face frame. keep_original: "
                                                                 "while the voice is silent the avatar keeps its "
                                                                 "real mouth (frames untouched)."),
                "silence_fade": widget(SpeakRequest, "silence_fade", "keep_original: frames of cross-fade on the "
                                                                     "speech side of each silence."),
                "min_silence": widget(SpeakRequest, "min_silence", "keep_original: the shortest silence (seconds) "
                                                                   "that keeps the real mouth.", step=0.05),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("IMAGE", FRAMES_TYPE, "AUDIO", "FLOAT", "STRING")
    RETURN_NAMES = ("images", "frames", "audio", "fps", "report")
    OUTPUT_TOOLTIPS = ("The spoken frames as IMAGE (for long outputs only the first frame; use 'frames')",
                       "The spoken frames, streamed (for Mux Video)", "The voice cut/padded to the output",
                       "The avatar's frame rate", "Frames synced, cutaways passed through, time")
    FUNCTION = "speak"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Speak a voice through a prepared avatar: only whisper, the UNet and the VAE decoder run per "
                   "frame. Output at the avatar's fps, one frame per 1/fps of voice, the frames repeating in the "
                   "avatar's idle loop (or the one chosen here); cutaway frames untouched.")

    def speak(self, audio, batch_size=SpeakRequest.batch_size, avatar=None, avatar_name="", loop=FROM_AVATAR, loop_range="",
              on_silence=None, silence_fade=None, min_silence=None, unique_id=None):
        from ..pipeline.audio_features import compute_audio_features
        from ..pipeline.avatars import Avatar, AvatarError
        from ..pipeline.media.audio import from_comfy

        if avatar is None:
            if not (avatar_name or "").strip():
                raise AvatarError("avatar: connect Prepare Avatar or type the name of a prepared avatar.")
            avatar = Avatar(avatar_name.strip())
        runtime = comfy.make_runtime(unique_id)
        avatar.ensure_current(runtime)      # a cached avatar whose folder was prepared again: its fps may differ
        features = compute_audio_features(from_comfy(audio, "audio"), avatar.fps, "musetalk", None, runtime)
        from ..pipeline.jobs.requests import SilenceSettings

        silence = settings_from_widgets(SilenceSettings, dict(on_silence=on_silence, silence_fade=silence_fade,
                                                              min_silence=min_silence)).silence_options()
        run = avatar.start(features, runtime, batch_size=batch_size,
                           loop=None if loop in (None, FROM_AVATAR) else loop,
                           loop_range=(loop_range or "").strip() or None, silence=silence)
        sink, to_image = output_sink(avatar.frames, run.plan)
        report = run.into(sink)
        images_out, frames_out = node_outputs(sink.close(), avatar.frames, to_image)
        text = report.text()
        return {"ui": {"text": [text]}, "result": (images_out, frames_out, run.audio.to_comfy() if run.audio else None,
                                                   float(avatar.fps), text)}


def _identity(seq) -> dict:
    """What the frames are: a file and the frames chosen from it, or a digest of in-memory frames."""
    from ..pipeline.avatars import file_identity, frames_identity

    if isinstance(getattr(seq, "source", None), str) and hasattr(seq, "src_index"):
        chosen = [int(v) for v in seq.src_index]
        return {**file_identity(seq.source), "frames": chosen, "fps": float(seq.fps)}
    return frames_identity(seq)


def _face_settings(faces) -> dict:
    return {k: v for k, v in (faces.params or {}).items() if isinstance(v, (str, int, float, bool))}


NODE_CLASS_MAPPINGS = {"MuseTalkPrepareAvatar": MuseTalkPrepareAvatar, "MuseTalkAvatarSpeak": MuseTalkAvatarSpeak}
NODE_DISPLAY_NAME_MAPPINGS = {"MuseTalkPrepareAvatar": "Prepare Avatar (MuseTalk, real-time)",
                              "MuseTalkAvatarSpeak": "Avatar Speak (MuseTalk, real-time)"}
