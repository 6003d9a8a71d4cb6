"""Face Detect with Cutaways: shots, face tracks, the speaker's face per frame, and which frames are cutaways."""
from __future__ import annotations

from . import comfy
from ..pipeline.faces.detectors import detector_options
from ..pipeline.jobs.requests import FaceSettings, MachineSettings
from .common import FACES_TYPE, FRAMES_TYPE, frames_from_inputs, settings_from_widgets, widget


class MuseTalkFaceDetect:
    DESCRIPTION = (
        "Finds the face to lip-sync in every frame and marks every other frame as a cutaway (passed through "
        "unchanged by the lip-sync nodes). Detects shot cuts, follows faces through each shot, ignores faces seen "
        "in fewer than 'debounce_frames' frames, bridges short detector dropouts, picks the speaker when several "
        "faces are visible, and computes the crop boxes MuseTalk and LatentSync need. Outputs the face data, a "
        "preview (boxes drawn, cutaways framed in red) and a text summary of shots, tracks and cutaway ranges.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "backend": widget(FaceSettings, "detector",
                    "Face detector. mtcnn: fast, works offline (weights ship with the facenet-pytorch package), "
                    "5 landmarks (the MuseTalk crop is approximated from them). s3fd+fan68: the original MuseTalk-"
                    "style S3FD boxes + 68 landmarks (exact MuseTalk crop rule); downloads its weights."),
                "fps": ("FLOAT", {"default": 25.0, "min": 0.001, "max": 240.0, "step": 0.001, "tooltip":
                    "Frame rate of 'images' (ignored when 'frames' is connected: it carries its own rate)."}),
                "min_score": widget(FaceSettings, "min_score", step=0.01, tooltip=
                    "Minimum detector confidence. 0 = the backend default (0.9 for mtcnn, 0.5 for s3fd+fan68)."),
                "min_face_size": widget(FaceSettings, "min_face_size", as_type="INT", tooltip=
                    "Smallest usable face box width in source pixels; the height must be at least 1.6x this (50 -> "
                    "50x80 px, LatentSync's limits). Smaller faces become cutaways. 0 disables the size check."),
                "shot_threshold": widget(FaceSettings, "shot_threshold", step=0.5, tooltip=
                    "Shot-cut sensitivity: mean HSV difference (0-255) between consecutive frames that counts as a "
                    "cut. Lower finds more cuts; 0 disables cut detection. Face tracks restart at every cut."),
                "debounce_frames": widget(FaceSettings, "debounce_frames", tooltip=
                    "A face must be detected in at least this many frames of a shot to be used (its first frames "
                    "are kept once it qualifies). Filters one-frame false detections. 1 = use every detection."),
                "bridge_gap": widget(FaceSettings, "bridge_gap", tooltip=
                    "Fill detector dropouts of up to this many frames inside a face track by interpolating the "
                    "box (same shot only). 0 = off: every missed frame is a cutaway."),
                "speaker": widget(FaceSettings, "speaker",
                    "Which face to lip-sync when several are visible. largest / most_central: ranked per shot, the "
                    "next face is used where the first is absent. track_index: the n-th face of each shot by first "
                    "appearance (left to right when simultaneous). user_box: the face inside 'user_box'."),
                "track_index": widget(FaceSettings, "track_index", tooltip=
                    "With speaker = track_index: which face of each shot, 0 = the first to appear."),
                "user_box": widget(FaceSettings, "user_box", multiline=False, tooltip=
                    "With speaker = user_box: 'x1,y1,x2,y2' in pixels, or as fractions of the frame when all "
                    "values are <= 1 (e.g. '0.5,0,1,1' = right half). The face overlapping it most is used."),
                "bbox_shift": widget(FaceSettings, "bbox_shift", tooltip=
                    "MuseTalk crop: moves the crop centre (nose-bridge point) down (+) or up (-) in pixels, giving "
                    "more (+) or less (-) mouth opening. MuseTalk v1.5 was made for 0."),
                "extra_margin": widget(FaceSettings, "extra_margin", tooltip=
                    "MuseTalk v1.5 crop: pixels added below the chin so the jaw can move (10 in the original)."),
                "smooth_boxes": widget(FaceSettings, "smooth_boxes",
                    "Smooth crop boxes over time within each face track (less jitter). Off = per-frame boxes "
                    "exactly as the original MuseTalk computes them."),
                "auto_download": widget(MachineSettings, "auto_download",
                    "Download missing detector weights from Hugging Face on first use. Off: a missing file stops "
                    "with a message saying which file and where to put it."),
                "landmarks": widget(FaceSettings, "landmarks",
                    "Where the 68 face points that frame the crop come from (mtcnn backend). auto: the first one "
                    "available of DWPose (the original MuseTalk's model; downloaded on first use when auto_download "
                    "is on), FAN, dlib; without any, the crop is estimated from the detector's 5 points "
                    "(approximate). The summary and the lip-sync report name the one used."),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Video frames as an IMAGE batch (give 'images' or 'frames')."}),
                "frames": (FRAMES_TYPE, {"tooltip":
                    "Frames streamed from a video file (from Load Video); preferred for long videos."}),
                "edge_faces": widget(FaceSettings, "edge_faces",
                    "Faces touching the frame's edge (tight close-ups, 9:16 video). pad: the crop follows the face "
                    "past the edge, filled with the frame's border pixels, so the network sees the face shaped as "
                    "in training; only pixels inside the frame change. original: the released rule (a face 1 px "
                    "past the left edge falls back to the detector box, a differently shaped crop)."),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = (FACES_TYPE, "IMAGE", "STRING")
    RETURN_NAMES = ("faces", "preview", "summary")
    OUTPUT_TOOLTIPS = ("Per-frame face decisions (chosen face, crop box, cutaways, shots, tracks) for the lip-sync "
                       "nodes.", "Up to 64 frames with boxes drawn; cutaways framed in red.",
                       "Shots, face tracks and cutaway frame ranges.")
    FUNCTION = "detect"
    CATEGORY = "MuseTalk/faces"

    def detect(self, backend=None, fps=25.0, min_score=None, min_face_size=None, shot_threshold=None,
               debounce_frames=None, bridge_gap=None, speaker=None, track_index=None, user_box=None, bbox_shift=None,
               extra_margin=None, smooth_boxes=None, auto_download=None, landmarks=None, images=None, frames=None,
               edge_faces=None, unique_id=None):
        from ..pipeline.faces.detectors import create_detector
        from ..pipeline.faces.preview import PreviewCollector, summarize
        from ..pipeline.faces.tracks import analyze_faces
        from ..pipeline.media.frames import uint8_to_image

        settings = settings_from_widgets(FaceSettings, dict(
            detector=backend, min_score=min_score, min_face_size=min_face_size, shot_threshold=shot_threshold,
            debounce_frames=debounce_frames, bridge_gap=bridge_gap, speaker=speaker, track_index=track_index,
            user_box=user_box, bbox_shift=bbox_shift, extra_margin=extra_margin, smooth_boxes=smooth_boxes,
            landmarks=landmarks, edge_faces=edge_faces))
        download = settings_from_widgets(MachineSettings, {"auto_download": auto_download}).auto_download
        src = frames_from_inputs(images, frames, fps if frames is None else 0.0, node="Face Detect")
        options = settings.face_options()
        runtime = comfy.make_runtime(unique_id)
        detector = create_detector(settings.detector, runtime, auto_download=download,
                                   **detector_options(settings.detector, settings.min_face_size, src.width,
                                                      src.height, settings.landmarks))
        preview = PreviewCollector(len(src), src.width, src.height)
        faces = analyze_faces(src, detector, runtime, options=options, frame_hook=preview.keep)
        return (faces, uint8_to_image(preview.draw(faces)), summarize(faces))


NODE_CLASS_MAPPINGS = {"MuseTalkFaceDetect": MuseTalkFaceDetect}
NODE_DISPLAY_NAME_MAPPINGS = {"MuseTalkFaceDetect": "Face Detect with Cutaways"}
