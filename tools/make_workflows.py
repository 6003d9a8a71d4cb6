"""Regenerate the workflow JSONs (smoke workflows under tests/workflows/; example workflows under
example_workflows/). Run from the repo root: ``.venv/bin/python tools/make_workflows.py``.

Widget values are laid out from the nodes' INPUT_TYPES (ours) and tools/workflow_builder.py's tables (core nodes,
VideoHelperSuite), so regenerating after a node gains an input keeps every workflow loadable. The example media and
thumbnails come from tools/make_example_media.py."""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))


def load_pack():
    if "musetalk_enhanced" in sys.modules:
        return sys.modules["musetalk_enhanced"]
    spec = importlib.util.spec_from_file_location("musetalk_enhanced", os.path.join(ROOT, "__init__.py"),
                                                  submodule_search_locations=[ROOT])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["musetalk_enhanced"] = mod
    spec.loader.exec_module(mod)
    return mod


def smoke_workflows(out_dir):
    from workflow_builder import Workflow

    m = load_pack().NODE_CLASS_MAPPINGS
    os.makedirs(out_dir, exist_ok=True)
    # 1. our loader (streaming handle + audio) -> our mux
    w = Workflow(m)
    lv = w.node("MuseTalkLoadVideo", {"video": "smoke_clip.mp4", "frame_load_cap": 40}, pos=(50, 100))
    mx = w.node("MuseTalkMuxVideo", {"filename_prefix": "smoke/load_mux"}, pos=(450, 100))
    w.link(lv, "frames", mx, "frames")
    w.link(lv, "audio", mx, "audio")
    w.link(lv, "fps", mx, "fps")
    w.save(os.path.join(out_dir, "smoke_load_mux.json"))
    # 2. core LoadVideo -> GetVideoComponents -> our mux (IMAGE + AUDIO + fps, the VideoHelperSuite style)
    w = Workflow(m)
    cv = w.node("LoadVideo", {"file": "smoke_clip.mp4"}, pos=(50, 100))
    gc = w.node("GetVideoComponents", pos=(350, 100))
    mx = w.node("MuseTalkMuxVideo", {"filename_prefix": "smoke/core_mux"}, pos=(650, 100))
    w.link(cv, "VIDEO", gc, "video")
    w.link(gc, "images", mx, "images")
    w.link(gc, "audio", mx, "audio")
    w.link(gc, "fps", mx, "fps")
    w.save(os.path.join(out_dir, "smoke_core_video_mux.json"))
    # 3. core LoadVideo's VIDEO straight into our loader (streamed, not decoded by the core) -> core SaveVideo
    w = Workflow(m)
    cv = w.node("LoadVideo", {"file": "smoke_clip.mp4"}, pos=(50, 100))
    lv = w.node("MuseTalkLoadVideo", {"video": "smoke_clip.mp4"}, pos=(350, 100))
    mx = w.node("MuseTalkMuxVideo", {"filename_prefix": "smoke/video_in"}, pos=(700, 100))
    sv = w.node("SaveVideo", {"filename_prefix": "smoke/core_save", "format": "auto", "codec": "auto"},
                pos=(1050, 100))
    w.link(cv, "VIDEO", lv, "video_input")
    w.link(lv, "frames", mx, "frames")
    w.link(lv, "audio", mx, "audio")
    w.link(mx, "video", sv, "video")
    w.save(os.path.join(out_dir, "smoke_core_video_in_out.json"))


# ---- example workflows (templates, spec comfyui.md §7) -------------------------------------------------------------
PACK_ID = "musetalk-enhanced"  # registry id (pyproject [project] name): lets ComfyUI-Manager install the pack
CORE_PROPS = {"cnr_id": "comfy-core", "ver": "0.3.64"}
VHS_PROPS = {"cnr_id": "comfyui-videohelpersuite", "ver": "1.7.9"}

# weights per bundle, as registry keys (models/registry.py, models/latentsync_unet3d.py)
MUSETALK_KEYS = ("musetalk.unet", "musetalk.unet_config", "sd_vae.config", "sd_vae.weights")
WHISPER_KEYS = ("whisper_tiny.config", "whisper_tiny.weights")
DETECTOR_KEYS = ("mtcnn.pnet", "mtcnn.rnet", "mtcnn.onet")
BLEND_KEYS = ("face_parse.bisenet",)
LATENTSYNC_KEYS = ("latentsync16.unet", "latentsync.whisper_tiny", "latentsync.mask")


def model_entries(keys):
    """``[{"name", "url", "directory"}]`` for registry keys. ``directory`` is the model folder type registered with
    folder_paths and ``name`` the file's path inside it: the frontend looks ``directory`` up among the model folders
    and compares ``name`` with the (relative) file names it lists there."""
    from musetalk_enhanced.models import registry
    import musetalk_enhanced.models.latentsync_unet3d  # noqa: F401  (registers the LatentSync mask)

    out = []
    for k in keys:
        f = registry.REGISTRY[k]
        out.append({"name": f.relpath, "url": f.source, "directory": f.folder})
    return out


def _pack_version():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["version"]


class _Example:
    """A Workflow plus the conventions of the example templates: node properties with the registry id, sizes that
    show every widget, a note, and the models the workflow needs."""

    def __init__(self, mappings):
        from workflow_builder import VHS_NODES, Workflow

        self.w = Workflow(mappings)
        self.mappings = mappings
        self.vhs_nodes = VHS_NODES
        self.ours = {"cnr_id": PACK_ID, "ver": _pack_version()}
        self.all_models = []

    # room for what these nodes draw (image/video previews, text)
    MIN_HEIGHT = {"PreviewImage": 340, "PreviewAny": 200, "LoadVideo": 320, "MuseTalkLoadVideo": 320}

    def node(self, ntype, widgets=None, pos=(0, 0), title=None, models=None, width=None):
        props = dict(self.ours if ntype in self.mappings else VHS_PROPS if ntype in self.vhs_nodes else CORE_PROPS)
        if models:
            props["models"] = models
            self.all_models += [m for m in models if m not in self.all_models]
        nid = self.w.node(ntype, widgets, pos=pos, size="auto", title=title, properties=props)
        size = self.w.nodes[nid - 1]["size"]
        if width:
            size[0] = width
        size[1] = max(size[1], self.MIN_HEIGHT.get(ntype, 0))
        return nid

    def link(self, *a):
        self.w.link(*a)

    def note(self, text, pos, size=(400, 260), title="About this workflow"):
        return self.w.note(text, pos=pos, size=size, title=title)

    def save(self, path, name, extra=None):
        import uuid

        wf_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://github.com/musetalk-enhanced/{name}"))
        self.w.save(path, extra=extra, models=self.all_models, wf_id=wf_id)


def _voice_chain(ex, frames_src, audio_src, audio_out, fps_src, fps_out, x, y, backend="musetalk-v1.5",
                 face_widgets=None, lipsync_widgets=None, backend_widgets=None, layout=None):
    """Face Detect + Backend + Whisper Features + Batched Lip-Sync fed by a loader with a 'frames' output.
    Returns (face detect id, selector id, features id, lipsync id)."""
    models_mt = model_entries(MUSETALK_KEYS)
    fd = ex.node("MuseTalkFaceDetect", face_widgets, pos=(x, y), models=model_entries(DETECTOR_KEYS))
    ex.link(frames_src, "frames", fd, "frames")
    sel_models = models_mt + (model_entries(LATENTSYNC_KEYS) if backend.startswith("latentsync") else [])
    sel = ex.node("MuseTalkUNetSelector", {"backend": backend, **(backend_widgets or {})}, pos=(x + 380, y),
                  models=sel_models)
    wf = ex.node("MuseTalkWhisperFeatures", {"layout": layout} if layout else None, pos=(x + 380, y + 340),
                 models=model_entries(WHISPER_KEYS))
    ex.link(audio_src, audio_out, wf, "audio")
    ex.link(fps_src, fps_out, wf, "fps")
    ex.link(sel, "backend", wf, "backend")
    ls = ex.node("MuseTalkBatchedLipSync", lipsync_widgets, pos=(x + 760, y), models=model_entries(BLEND_KEYS))
    ex.link(fd, "faces", ls, "faces")
    ex.link(wf, "audio_features", ls, "audio_features")
    ex.link(frames_src, "frames", ls, "frames")
    ex.link(sel, "backend", ls, "backend")
    return fd, sel, wf, ls


def example_workflows(out_dir):
    """Write the example workflows (UI format) to ``out_dir`` (the pack's ``example_workflows/``)."""
    import make_example_media as media

    m = load_pack().NODE_CLASS_MAPPINGS
    os.makedirs(out_dir, exist_ok=True)
    written = []

    def save(ex, name, extra=None):
        path = os.path.join(out_dir, name + ".json")
        ex.save(path, name, extra)
        written.append(path)

    # 1. musetalk_basic: our loaders -> face detect -> whisper -> MuseTalk v1.5 -> mux
    ex = _Example(m)
    ex.note("**MuseTalk lip-sync, the basic chain.**\n\nLoad Video streams the clip (long videos never sit in RAM), "
            "Face Detect finds the face in every frame, Whisper Audio Features encodes the new voice, and Batched "
            "Lip-Sync redraws the mouth with MuseTalk v1.5, batch by batch. Mux Video writes an H.264 + AAC mp4 to "
            "ComfyUI/output/MuseTalk/.\n\nInputs: copy `" + media.FACE_CLIP + "` and `" + media.VOICE +
            "` from this folder to ComfyUI/input/ (or upload your own).\n\nWeights (~3.9 GB) download on the first "
            "run into ComfyUI/models/musetalk/ (turn auto_download off to get a list of files instead).",
            pos=(40, 40), size=(420, 300))
    lv = ex.node("MuseTalkLoadVideo", {"video": media.FACE_CLIP}, pos=(40, 380))
    la = ex.node("MuseTalkLoadAudio", {"audio": media.VOICE}, pos=(40, 720))
    fd, sel, wf, ls = _voice_chain(ex, lv, la, "audio", lv, "fps", 500, 40)
    pv = ex.node("PreviewImage", pos=(500, 560), title="Face preview (boxes; cutaways framed in red)")
    ex.link(fd, "preview", pv, "images")
    mx = ex.node("MuseTalkMuxVideo", {"filename_prefix": "MuseTalk/basic"}, pos=(1640, 40))
    ex.link(ls, "frames", mx, "frames")
    ex.link(ls, "audio", mx, "audio")
    save(ex, "musetalk_basic")

    # 2. cutaway_dubbing: an edited clip (face shots + B-roll) dubbed with a new voice
    ex = _Example(m)
    ex.note("**Dubbing an edited clip with cutaways.**\n\nThe clip alternates face shots with B-roll (a rocket, a "
            "coffee cup, a cat). Face Detect splits it into shots, follows the face through each shot and marks "
            "every frame without a usable face as a cutaway; Batched Lip-Sync returns cutaway frames bit-identical "
            "and only redraws the mouth in face frames, while the audio stays in place (frame k uses the audio at "
            "k/fps).\n\nThe face summary lists shots, face tracks and cutaway ranges; the lip-sync report says "
            "which backend ran on which frames. Inputs: `" + media.CUTAWAY_CLIP + "`, `" + media.DUB_VOICE + "`.",
            pos=(40, 40), size=(420, 320))
    lv = ex.node("MuseTalkLoadVideo", {"video": media.CUTAWAY_CLIP}, pos=(40, 400))
    la = ex.node("MuseTalkLoadAudio", {"audio": media.DUB_VOICE}, pos=(40, 740))
    fd, sel, wf, ls = _voice_chain(ex, lv, la, "audio", lv, "fps", 500, 40)
    pv = ex.node("PreviewImage", pos=(500, 560), title="Face preview (cutaways framed in red)")
    ex.link(fd, "preview", pv, "images")
    sm = ex.node("PreviewAny", pos=(880, 760), title="Face summary (shots, tracks, cutaways)", width=360)
    ex.link(fd, "summary", sm, "source")
    rp = ex.node("PreviewAny", pos=(1260, 560), title="Lip-sync report", width=360)
    ex.link(ls, "report", rp, "source")
    mx = ex.node("MuseTalkMuxVideo", {"filename_prefix": "MuseTalk/dubbed"}, pos=(1640, 40))
    ex.link(ls, "frames", mx, "frames")
    ex.link(ls, "audio", mx, "audio")
    save(ex, "cutaway_dubbing")

    # 3. latentsync_with_fallback: LatentSync 1.6, whisper layout following the backend
    ex = _Example(m)
    ex.note("**LatentSync 1.6 with a MuseTalk fallback.**\n\nThe backend selector asks for LatentSync 1.6 (512 px, "
            "~5 GB UNet in ComfyUI/models/latentsync/1.6/). Whisper Audio Features is set to 'follow backend', so "
            "it computes the LatentSync audio layout from the connected backend. When the LatentSync weights are "
            "missing (and auto_download is off or offline), it runs out of memory or fails, Batched Lip-Sync falls "
            "back to MuseTalk v1.5 and says so in its report (shown on the right).\n\nLatentSync chunks never span "
            "a cut or a cutaway. Inputs: `" + media.FACE_CLIP + "`, `" + media.VOICE + "`.",
            pos=(40, 40), size=(420, 320))
    lv = ex.node("MuseTalkLoadVideo", {"video": media.FACE_CLIP}, pos=(40, 400))
    la = ex.node("MuseTalkLoadAudio", {"audio": media.VOICE}, pos=(40, 740))
    fd, sel, wf, ls = _voice_chain(ex, lv, la, "audio", lv, "fps", 500, 40, backend="latentsync-1.6",
                                   layout="follow backend")
    rp = ex.node("PreviewAny", pos=(1260, 560), title="Lip-sync report (which backend ran, fallbacks)", width=360)
    ex.link(ls, "report", rp, "source")
    mx = ex.node("MuseTalkMuxVideo", {"filename_prefix": "MuseTalk/latentsync"}, pos=(1640, 40))
    ex.link(ls, "frames", mx, "frames")
    ex.link(ls, "audio", mx, "audio")
    save(ex, "latentsync_with_fallback")

    # 4. multi_face_speaker_select: two faces, the right one is chosen with a box; the clip's own audio drives it
    ex = _Example(m)
    ex.note("**Two faces: choose who speaks.**\n\nFace Detect's speaker = user_box picks the face overlapping the "
            "box '0.5,0,1,1' (fractions of the frame: the right half). Other choices: largest, most_central, "
            "track_index (n-th face of each shot). Only the chosen face is lip-synced; the other one is left "
            "untouched. Here the clip's own sound track drives the mouth (re-syncing a take).\n\nInput: `" +
            media.TWO_FACES_CLIP + "`.", pos=(40, 40), size=(420, 280))
    lv = ex.node("MuseTalkLoadVideo", {"video": media.TWO_FACES_CLIP}, pos=(40, 360))
    fd, sel, wf, ls = _voice_chain(ex, lv, lv, "audio", lv, "fps", 500, 40,
                                   face_widgets={"speaker": "user_box", "user_box": "0.5,0,1,1"})
    pv = ex.node("PreviewImage", pos=(500, 560), title="Face preview (chosen face in green)")
    ex.link(fd, "preview", pv, "images")
    mx = ex.node("MuseTalkMuxVideo", {"filename_prefix": "MuseTalk/speaker"}, pos=(1640, 40))
    ex.link(ls, "frames", mx, "frames")
    ex.link(ls, "audio", mx, "audio")
    save(ex, "multi_face_speaker_select")

    # 5. chain_with_core_video: core LoadVideo/LoadAudio in, core CreateVideo/SaveVideo out
    ex = _Example(m)
    ex.note("**With ComfyUI's own video nodes.**\n\nCore Load Video's VIDEO goes into our loader's video_input, "
            "which streams it instead of decoding every frame into RAM. The voice comes from core Load Audio. "
            "Batched Lip-Sync's IMAGE, AUDIO and fps outputs feed core Create Video, and Save Video writes the mp4 "
            "(any node taking IMAGE + AUDIO + fps works the same way).\n\nInputs: `" + media.FACE_CLIP + "`, `" +
            media.VOICE + "`.", pos=(40, 40), size=(420, 260))
    cv = ex.node("LoadVideo", {"file": media.FACE_CLIP}, pos=(40, 340), width=300)
    lv = ex.node("MuseTalkLoadVideo", {"video": media.FACE_CLIP}, pos=(40, 720))
    ex.link(cv, "VIDEO", lv, "video_input")
    ca = ex.node("LoadAudio", {"audio": media.VOICE}, pos=(40, 1060), width=300)
    fd, sel, wf, ls = _voice_chain(ex, lv, ca, "AUDIO", lv, "fps", 500, 40)
    pv = ex.node("PreviewImage", pos=(500, 560), title="Face preview")
    ex.link(fd, "preview", pv, "images")
    mk = ex.node("CreateVideo", pos=(1640, 40), width=280)
    ex.link(ls, "images", mk, "images")
    ex.link(ls, "audio", mk, "audio")
    ex.link(ls, "fps", mk, "fps")
    sv = ex.node("SaveVideo", {"filename_prefix": "video/MuseTalk_core", "format": "auto", "codec": "auto"},
                 pos=(1640, 260))
    ex.link(mk, "VIDEO", sv, "video")
    save(ex, "chain_with_core_video")

    # 6. vhs_lipsync: VideoHelperSuite in and out (IMAGE + AUDIO + fps)
    ex = _Example(m)
    ex.note("**With ComfyUI-VideoHelperSuite** (needs that node pack: install it with ComfyUI-Manager, "
            "https://github.com/Kosinkadink/ComfyUI-VideoHelperSuite).\n\nVHS Load Video gives an IMAGE batch, "
            "the audio and the video info (fps); our nodes take IMAGE + fps, and Batched Lip-Sync's IMAGE + AUDIO "
            "+ fps go to VHS Video Combine, which muxes the voice (h264-mp4). VHS decodes the whole clip into RAM: "
            "for long videos use our Load Video's streaming 'frames' instead.\n\nInputs: `" + media.CUTAWAY_CLIP +
            "`, `" + media.DUB_VOICE + "`.", pos=(40, 40), size=(420, 320))
    vl = ex.node("VHS_LoadVideo", {"video": media.CUTAWAY_CLIP}, pos=(40, 400))
    vi = ex.node("VHS_VideoInfoLoaded", pos=(40, 760), width=260)
    ex.link(vl, "video_info", vi, "video_info")
    va = ex.node("VHS_LoadAudioUpload", {"audio": media.DUB_VOICE}, pos=(40, 940))
    fd = ex.node("MuseTalkFaceDetect", pos=(500, 40), models=model_entries(DETECTOR_KEYS))
    ex.link(vl, "IMAGE", fd, "images")
    ex.link(vi, "fps🟦", fd, "fps")
    sel = ex.node("MuseTalkUNetSelector", {"backend": "musetalk-v1.5"}, pos=(880, 40),
                  models=model_entries(MUSETALK_KEYS))
    wf = ex.node("MuseTalkWhisperFeatures", pos=(880, 380), models=model_entries(WHISPER_KEYS))
    ex.link(va, "audio", wf, "audio")
    ex.link(vi, "fps🟦", wf, "fps")
    ex.link(sel, "backend", wf, "backend")
    ls = ex.node("MuseTalkBatchedLipSync", pos=(1260, 40), models=model_entries(BLEND_KEYS))
    ex.link(fd, "faces", ls, "faces")
    ex.link(wf, "audio_features", ls, "audio_features")
    ex.link(vl, "IMAGE", ls, "images")
    ex.link(vi, "fps🟦", ls, "fps")
    ex.link(sel, "backend", ls, "backend")
    pv = ex.node("PreviewImage", pos=(500, 560), title="Face preview (cutaways framed in red)")
    ex.link(fd, "preview", pv, "images")
    vc = ex.node("VHS_VideoCombine", {"frame_rate": 25, "filename_prefix": "MuseTalk/vhs", "format": "video/h264-mp4",
                                      "pingpong": False, "save_output": True}, pos=(1640, 40))
    ex.link(ls, "images", vc, "images")
    ex.link(ls, "audio", vc, "audio")
    ex.link(ls, "fps", vc, "frame_rate")
    save(ex, "vhs_lipsync", extra={"requires": [{"pack": "ComfyUI-VideoHelperSuite", "cnr_id": VHS_PROPS["cnr_id"],
                                                 "url": "https://github.com/Kosinkadink/ComfyUI-VideoHelperSuite"}]})
    return written


if __name__ == "__main__":
    smoke_workflows(os.path.join(ROOT, "tests", "workflows"))
    print("wrote tests/workflows/*.json")
    for p in example_workflows(os.path.join(ROOT, "example_workflows")):
        print("wrote", os.path.relpath(p, ROOT))
