"""Face Detect with Cutaways: shots, face tracks, the speaker's face per frame, and which frames are cutaways."""
from __future__ import annotations

from . import comfy
from ..pipeline.faces.detectors import BACKENDS, detector_options
from ..pipeline.faces.landmarks import LANDMARK_CHOICES
from ..pipeline.faces.options import SPEAKER_POLICIES
from .common import FACES_TYPE, FRAMES_TYPE, frames_from_inputs


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
                "backend": (list(BACKENDS), {"default": "mtcnn", "tooltip":
                    "Face detector. mtcnn: fast, works offline (weights ship with the facenet-pytorch package), "
                    "5 landmarks (the MuseTalk crop is approximated from them). s3fd+fan68: the original MuseTalk-"
                    "style S3FD boxes + 68 landmarks (exact MuseTalk crop rule); downloads its weights."}),
                "fps": ("FLOAT", {"default": 25.0, "min": 0.001, "max": 240.0, "step": 0.001, "tooltip":
                    "Frame rate of 'images' (ignored when 'frames' is connected: it carries its own rate)."}),
                "min_score": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                    "Minimum detector confidence. 0 = the backend default (0.9 for mtcnn, 0.5 for s3fd+fan68)."}),
                "min_face_size": ("INT", {"default": 50, "min": 0, "max": 2048, "step": 1, "tooltip":
                    "Smallest usable face box width in source pixels; the height must be at least 1.6x this (50 -> "
                    "50x80 px, LatentSync's limits). Smaller faces become cutaways. 0 disables the size check."}),
                "shot_threshold": ("FLOAT", {"default": 27.0, "min": 0.0, "max": 255.0, "step": 0.5, "tooltip":
                    "Shot-cut sensitivity: mean HSV difference (0-255) between consecutive frames that counts as a "
                    "cut. Lower finds more cuts; 0 disables cut detection. Face tracks restart at every cut."}),
                "debounce_frames": ("INT", {"default": 3, "min": 1, "max": 100, "step": 1, "tooltip":
                    "A face must be detected in at least this many frames of a shot to be used (its first frames "
                    "are kept once it qualifies). Filters one-frame false detections. 1 = use every detection."}),
                "bridge_gap": ("INT", {"default": 2, "min": 0, "max": 50, "step": 1, "tooltip":
                    "Fill detector dropouts of up to this many frames inside a face track by interpolating the "
                    "box (same shot only). 0 = off: every missed frame is a cutaway."}),
                "speaker": (list(SPEAKER_POLICIES), {"default": "largest", "tooltip":
                    "Which face to lip-sync when several are visible. largest / most_central: ranked per shot, the "
                    "next face is used where the first is absent. track_index: the n-th face of each shot by first "
                    "appearance (left to right when simultaneous). user_box: the face inside 'user_box'."}),
                "track_index": ("INT", {"default": 0, "min": 0, "max": 64, "step": 1, "tooltip":
                    "With speaker = track_index: which face of each shot, 0 = the first to appear."}),
                "user_box": ("STRING", {"default": "", "multiline": False, "tooltip":
                    "With speaker = user_box: 'x1,y1,x2,y2' in pixels, or as fractions of the frame when all "
                    "values are <= 1 (e.g. '0.5,0,1,1' = right half). The face overlapping it most is used."}),
                "bbox_shift": ("INT", {"default": 0, "min": -100, "max": 100, "step": 1, "tooltip":
                    "MuseTalk crop: moves the crop centre (nose-bridge point) down (+) or up (-) in pixels, giving "
                    "more (+) or less (-) mouth opening. MuseTalk v1.5 was made for 0."}),
                "extra_margin": ("INT", {"default": 10, "min": 0, "max": 200, "step": 1, "tooltip":
                    "MuseTalk v1.5 crop: pixels added below the chin so the jaw can move (10 in the original)."}),
                "smooth_boxes": ("BOOLEAN", {"default": True, "tooltip":
                    "Smooth crop boxes over time within each face track (less jitter). Off = per-frame boxes "
                    "exactly as the original MuseTalk computes them."}),
                "auto_download": ("BOOLEAN", {"default": True, "tooltip":
                    "Download missing detector weights from Hugging Face on first use. Off: a missing file stops "
                    "with a message saying which file and where to put it."}),
                "landmarks": (list(LANDMARK_CHOICES), {"default": "auto", "tooltip":
                    "Where the 68 face points that frame the crop come from (mtcnn backend). auto: the first one "
                    "available of DWPose (the original MuseTalk's model; downloaded on first use when auto_download "
                    "is on), FAN, dlib; without any, the crop is estimated from the detector's 5 points "
                    "(approximate). The summary and the lip-sync report name the one used."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Video frames as an IMAGE batch (give 'images' or 'frames')."}),
                "frames": (FRAMES_TYPE, {"tooltip":
                    "Frames streamed from a video file (from Load Video); preferred for long videos."}),
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

    def detect(self, backend="mtcnn", fps=25.0, min_score=0.0, min_face_size=50, shot_threshold=27.0,
               debounce_frames=3, bridge_gap=2, speaker="largest", track_index=0, user_box="", bbox_shift=0,
               extra_margin=10, smooth_boxes=True, auto_download=True, landmarks="auto", images=None, frames=None,
               unique_id=None):
        from ..pipeline.faces.detectors import create_detector
        from ..pipeline.faces.preview import PreviewCollector
        from ..pipeline.faces.preview import summarize
        from ..pipeline.faces.tracks import FaceOptions, analyze_faces
        from ..pipeline.media.frames import uint8_to_image

        src = frames_from_inputs(images, frames, fps if frames is None else 0.0, node="Face Detect")
        options = FaceOptions(
            min_score=float(min_score) if min_score and min_score > 0 else None, min_face_size=float(min_face_size),
            shot_threshold=float(shot_threshold), debounce_frames=int(debounce_frames), bridge_gap=int(bridge_gap),
            speaker=speaker, track_index=int(track_index), user_box=user_box or None, bbox_shift=int(bbox_shift),
            extra_margin=int(extra_margin), smooth_boxes=bool(smooth_boxes))
        options.validate()
        runtime = comfy.make_runtime(unique_id)
        detector = create_detector(backend, runtime, auto_download=bool(auto_download),
                                   **detector_options(backend, min_face_size, src.width, src.height, landmarks))
        preview = PreviewCollector(len(src), src.width, src.height)
        faces = analyze_faces(src, detector, runtime, options=options, frame_hook=preview.keep)
        return (faces, uint8_to_image(preview.draw(faces)), summarize(faces))


NODE_CLASS_MAPPINGS = {"MuseTalkFaceDetect": MuseTalkFaceDetect}
NODE_DISPLAY_NAME_MAPPINGS = {"MuseTalkFaceDetect": "Face Detect with Cutaways"}
