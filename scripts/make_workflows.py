"""Regenerate the workflow JSONs (smoke workflows under tests/workflows/; example workflows under
example_workflows/, and their API-format exports under example_workflows/api/, scripts/workflow_api.py). Run from the
repo root: ``.venv/bin/python scripts/make_workflows.py``.

Widget values are laid out from the nodes' INPUT_TYPES (ours) and scripts/workflow_builder.py's tables (core nodes,
VideoHelperSuite), so regenerating after a node gains an input keeps every workflow loadable. The example media and
thumbnails come from scripts/make_example_media.py."""
import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
load_pack = runpy.run_path(os.path.join(ROOT, "bootstrap.py"))["import_pack"]      # the one import helper


def smoke_workflows(out_dir):
    from workflow_builder import Workflow

    m = load_pack().NODE_CLASS_MAPPINGS  # (nodes 400 px apart: none overlaps once the page has sized it)
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
    gc = w.node("GetVideoComponents", pos=(450, 100))
    mx = w.node("MuseTalkMuxVideo", {"filename_prefix": "smoke/core_mux"}, pos=(850, 100))
    w.link(cv, "VIDEO", gc, "video")
    w.link(gc, "images", mx, "images")
    w.link(gc, "audio", mx, "audio")
    w.link(gc, "fps", mx, "fps")
    w.save(os.path.join(out_dir, "smoke_core_video_mux.json"))
    # 3. core LoadVideo's VIDEO straight into our loader (streamed, not decoded by the core) -> core SaveVideo
    w = Workflow(m)
    cv = w.node("LoadVideo", {"file": "smoke_clip.mp4"}, pos=(50, 100))
    lv = w.node("MuseTalkLoadVideo", {"video": "smoke_clip.mp4"}, pos=(450, 100))
    mx = w.node("MuseTalkMuxVideo", {"filename_prefix": "smoke/video_in"}, pos=(850, 100))
    sv = w.node("SaveVideo", {"filename_prefix": "smoke/core_save", "format": "auto", "codec": "auto"},
                pos=(1250, 100))
    w.link(cv, "VIDEO", lv, "video_input")
    w.link(lv, "frames", mx, "frames")
    w.link(lv, "audio", mx, "audio")
    w.link(mx, "video", sv, "video")
    w.save(os.path.join(out_dir, "smoke_core_video_in_out.json"))


# ---- example workflows (templates) -------------------------------------------------------------
PACK_ID = "musetalk-enhanced"  # registry id (pyproject [project] name): lets ComfyUI-Manager install the pack
CORE_PROPS = {"cnr_id": "comfy-core", "ver": "0.3.64"}
VHS_PROPS = {"cnr_id": "comfyui-videohelpersuite", "ver": "1.7.9"}

# weights per bundle, as registry keys (models/registry.py, models/latentsync_unet3d.py). Only the files the
# frontend can offer to download end up in a workflow's `models` (workflow_builder.frontend_can_download); README and
# each workflow's note name the rest.
MUSETALK_KEYS = ("musetalk.unet", "musetalk.unet_config", "sd_vae.config", "sd_vae.weights")
WHISPER_KEYS = ("whisper_tiny.config", "whisper_tiny.weights")
DETECTOR_KEYS = ("mtcnn.pnet", "mtcnn.rnet", "mtcnn.onet")
BLEND_KEYS = ("face_parse.bisenet",)
LATENTSYNC_KEYS = ("latentsync16.unet", "latentsync.whisper_tiny", "latentsync.mask")


def model_entries(keys):
    """``[{"name", "url", "directory"}]`` for the registry keys whose file the frontend can download (its Missing
    Models dialog). ``directory`` is the model folder type registered with folder_paths and ``name`` the file's path
    inside it: the frontend looks ``directory`` up among the model folders and compares ``name`` with the (relative)
    file names the server lists there."""
    from musetalk_enhanced.models import registry
    import musetalk_enhanced.models.latentsync_unet3d  # noqa: F401  (registers the LatentSync mask)
    from workflow_builder import frontend_can_download

    out = []
    for k in keys:
        f = registry.REGISTRY[k]
        entry = {"name": f.relpath, "url": f.source, "directory": f.folder}
        if frontend_can_download(entry):
            out.append(entry)
    return out


def _pack_version():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["version"]


# ---- layout: columns of groups that read left to right; node heights as the page sizes them -----------------------
NODE_WIDTH = 380          # wide enough for every title of ours (the page widens a node to fit its title)
TITLE_H = 30              # LiteGraph's node title bar, drawn above pos
GROUP_TITLE_H = 50        # room for a group's title above its first node
GAP = 40                  # between nodes, between columns
MEDIA = os.path.join(ROOT, "example_workflows")
# Heights the frontend (1.27.10) gives these nodes at NODE_WIDTH once their previews have loaded, without the media
# preview itself (measured in the real page, tests/comfyharness.py; tests/test_comfy_frontend.py fails when a node
# outgrows its saved size). A video preview adds width * height / width of the clip.
PAGE_HEIGHTS = {"MuseTalkLoadVideo": 274, "MuseTalkLoadAudio": 220, "LoadVideo": 74, "LoadAudio": 136,
                "VHS_LoadVideo": 304, "VHS_LoadAudioUpload": 204, "VHS_VideoCombine": 334}
MIN_HEIGHTS = {"PreviewImage": 340, "PreviewAny": 200}


def video_aspect(name):
    from musetalk_enhanced.pipeline.media.video import probe_video

    info = probe_video(os.path.join(MEDIA, name))
    return info.height / info.width


class _Example:
    """A Workflow plus the conventions of the example templates: node properties with the registry id, groups laid
    out as columns (left to right: load -> faces -> backend and audio -> lip-sync -> output), sizes that hold every
    widget and preview, a note, and the models the workflow needs."""

    def __init__(self, mappings):
        from workflow_builder import VHS_NODES, Workflow

        self.w = Workflow(mappings)
        self.mappings = mappings
        self.vhs_nodes = VHS_NODES
        self.ours = {"cnr_id": PACK_ID, "ver": _pack_version()}
        self.all_models = []
        self.groups = []
        self.x = 40
        self.col = None

    def column(self, title, width=NODE_WIDTH, color="#3f789e"):
        """Start a new column (a titled group) right of the previous one."""
        self._close_column()
        self.col = {"title": title, "x": self.x, "y": 40 + GROUP_TITLE_H, "width": width, "color": color}

    def _close_column(self):
        c = self.col
        if c is None:
            return
        pad = 10
        self.groups.append({"id": len(self.groups) + 1, "title": c["title"],
                            "bounding": [c["x"] - pad, 40, c["width"] + 2 * pad, c["y"] - 40 - GAP + pad],
                            "color": c["color"], "font_size": 24, "flags": {}})
        self.x += c["width"] + 2 * pad + GAP
        self.col = None

    def node(self, ntype, widgets=None, title=None, models=None, video=None):
        """Add a node at the bottom of the current column. ``video``: the clip a video loader previews."""
        props = dict(self.ours if ntype in self.mappings else VHS_PROPS if ntype in self.vhs_nodes else CORE_PROPS)
        if models:
            props["models"] = models
            self.all_models += [m for m in models if m not in self.all_models]
        c = self.col
        nid = self.w.node(ntype, widgets, pos=(c["x"], c["y"] + TITLE_H), size="auto", title=title, properties=props)
        size = self.w.nodes[nid - 1]["size"]
        size[0] = c["width"]
        size[1] = PAGE_HEIGHTS.get(ntype) or max(size[1], MIN_HEIGHTS.get(ntype, 0))
        if video:
            size[1] += round(c["width"] * video_aspect(video))
        c["y"] += TITLE_H + size[1] + GAP
        return nid

    def link(self, *a):
        self.w.link(*a)

    def note(self, text, height):
        """The note explaining the workflow: its own column at the left."""
        self.col = {"title": None, "x": self.x, "y": 40, "width": 420}
        nid = self.w.note(text, pos=(self.x, 40 + TITLE_H), size=(420, height), title="About this workflow")
        self.x += 420 + 2 * GAP
        self.col = None
        return nid

    def save(self, path, name, extra=None):
        import uuid

        self._close_column()
        wf_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://github.com/musetalk-enhanced/{name}"))
        self.w.save(path, extra=extra, models=self.all_models, wf_id=wf_id, groups=self.groups)


def _faces(ex, frames_src, face_widgets=None, preview_title="Face preview", summary=False):
    ex.column("2. Find the face in every frame")
    fd = ex.node("MuseTalkFaceDetect", face_widgets, models=model_entries(DETECTOR_KEYS))
    ex.link(frames_src, "frames", fd, "frames")
    pv = ex.node("PreviewImage", title=preview_title)
    ex.link(fd, "preview", pv, "images")
    if summary:
        sm = ex.node("PreviewAny", title="Face summary (shots, tracks, cutaways)")
        ex.link(fd, "summary", sm, "source")
    return fd


def _backend_and_voice(ex, audio_src, audio_out, fps_src, fps_out, backend="musetalk-v1.5", layout=None):
    ex.column("3. Backend and voice features")
    sel_models = model_entries(MUSETALK_KEYS) + (model_entries(LATENTSYNC_KEYS) if backend.startswith("latentsync")
                                                 else [])
    sel = ex.node("MuseTalkUNetSelector", {"backend": backend}, models=sel_models)
    wf = ex.node("MuseTalkWhisperFeatures", {"layout": layout} if layout else None, models=model_entries(WHISPER_KEYS))
    ex.link(audio_src, audio_out, wf, "audio")
    ex.link(fps_src, fps_out, wf, "fps")
    ex.link(sel, "backend", wf, "backend")
    return sel, wf


def _lipsync(ex, fd, sel, wf, frames_src, frames_out="frames", report_title=None, fps_src=None):
    ex.column("4. Lip-sync")
    ls = ex.node("MuseTalkBatchedLipSync", models=model_entries(BLEND_KEYS))
    ex.link(fd, "faces", ls, "faces")
    ex.link(wf, "audio_features", ls, "audio_features")
    ex.link(frames_src, frames_out, ls, "frames" if frames_out == "frames" else "images")
    if fps_src:
        ex.link(*fps_src, ls, "fps")
    ex.link(sel, "backend", ls, "backend")
    if report_title:
        rp = ex.node("PreviewAny", title=report_title)
        ex.link(ls, "report", rp, "source")
    return ls


def _mux(ex, ls, prefix):
    ex.column("5. Write the mp4")
    mx = ex.node("MuseTalkMuxVideo", {"filename_prefix": prefix})
    ex.link(ls, "frames", mx, "frames")
    ex.link(ls, "audio", mx, "audio")
    return mx


def _core_video_out(ex, title, images, ls, prefix):
    """Core Create Video (``images``, the lip-sync's audio and fps) -> core Save Video."""
    ex.column(title)
    mk = ex.node("CreateVideo")
    ex.link(*images, mk, "images")
    ex.link(ls, "audio", mk, "audio")
    ex.link(ls, "fps", mk, "fps")
    sv = ex.node("SaveVideo", {"filename_prefix": prefix, "format": "auto", "codec": "auto"})
    ex.link(mk, "VIDEO", sv, "video")


def _musetalk_loaders(ex, clip, voice=None):
    ex.column("1. Load the video" + (" and the voice" if voice else ""))
    lv = ex.node("MuseTalkLoadVideo", {"video": clip}, video=clip)
    la = ex.node("MuseTalkLoadAudio", {"audio": voice}) if voice else None
    return lv, la


def example_workflows(out_dir):
    """Write the example workflows (UI format) to ``out_dir`` (the pack's ``example_workflows/``), named by their
    template titles (make_example_media.TEMPLATES)."""
    import make_example_media as media

    m = load_pack().NODE_CLASS_MAPPINGS
    os.makedirs(out_dir, exist_ok=True)
    written = []

    def save(ex, slug, extra=None):
        path = os.path.join(out_dir, media.TEMPLATES[slug] + ".json")
        ex.save(path, slug, extra)
        written.append(path)

    inputs = "Inputs: copy `{}` from this folder to ComfyUI/input/ (or upload your own with the loaders' buttons)."
    weights = ("\n\nWeights (~3.9 GB) download on the first run into ComfyUI/models/musetalk/ (turn auto_download "
               "off to get the list of files and where to put them instead).")

    # 1. musetalk_basic: our loaders -> face detect -> whisper -> MuseTalk v1.5 -> mux
    ex = _Example(m)
    ex.note("**MuseTalk lip-sync, the basic chain.** Read the groups left to right.\n\n1. Load Video streams the "
            "clip (long videos never sit in RAM); Load Audio reads the new voice.\n2. Face Detect finds the face in "
            "every frame.\n3. The backend selector picks MuseTalk v1.5; Whisper Audio Features encodes the voice "
            "for it.\n4. Batched Lip-Sync redraws the mouth, batch by batch.\n5. Mux Video writes an H.264 + AAC "
            "mp4 to ComfyUI/output/MuseTalk/.\n\n" + inputs.format(media.FACE_CLIP + "` and `" + media.VOICE) +
            weights, height=420)
    lv, la = _musetalk_loaders(ex, media.FACE_CLIP, media.VOICE)
    fd = _faces(ex, lv, preview_title="Face preview (boxes; cutaways framed in red)")
    sel, wf = _backend_and_voice(ex, la, "audio", lv, "fps")
    ls = _lipsync(ex, fd, sel, wf, lv)
    _mux(ex, ls, "MuseTalk/basic")
    save(ex, "musetalk_basic")

    # 2. cutaway_dubbing: an edited clip (face shots + B-roll) dubbed with a new voice
    ex = _Example(m)
    ex.note("**Dubbing an edited clip with cutaways.**\n\nThe clip alternates face shots with B-roll (a rocket, a "
            "coffee cup, a cat). Face Detect splits it into shots, follows the face through each shot and marks "
            "every frame without a usable face as a cutaway; Batched Lip-Sync returns cutaway frames bit-identical "
            "and only redraws the mouth in face frames, while the audio stays in place (frame k uses the audio at "
            "k/fps).\n\nThe face summary lists shots, face tracks and cutaway ranges; the lip-sync report says "
            "which backend ran on which frames.\n\n" + inputs.format(media.CUTAWAY_CLIP + "` and `" +
                                                                     media.DUB_VOICE) + weights, height=420)
    lv, la = _musetalk_loaders(ex, media.CUTAWAY_CLIP, media.DUB_VOICE)
    fd = _faces(ex, lv, preview_title="Face preview (cutaways framed in red)", summary=True)
    sel, wf = _backend_and_voice(ex, la, "audio", lv, "fps")
    ls = _lipsync(ex, fd, sel, wf, lv, report_title="Lip-sync report")
    _mux(ex, ls, "MuseTalk/dubbed")
    save(ex, "cutaway_dubbing")

    # 3. latentsync_with_fallback: LatentSync 1.6, whisper layout following the backend
    ex = _Example(m)
    ex.note("**LatentSync 1.6 with a MuseTalk fallback.**\n\nThe backend selector asks for LatentSync 1.6 (512 px). "
            "Whisper Audio Features is set to 'follow backend', so it computes the LatentSync audio layout from "
            "the connected backend. When the LatentSync weights are missing (and auto_download is off or offline), "
            "run out of memory or fail, Batched Lip-Sync falls back to MuseTalk v1.5 and says so in its report.\n\n"
            "LatentSync weights (~5 GB) go to ComfyUI/models/latentsync/: 1.6/latentsync_unet.pt, whisper/tiny.pt "
            "and mask.png (see the pack's README). LatentSync chunks never span a cut or a cutaway.\n\n" +
            inputs.format(media.FACE_CLIP + "` and `" + media.VOICE), height=420)
    lv, la = _musetalk_loaders(ex, media.FACE_CLIP, media.VOICE)
    fd = _faces(ex, lv)
    sel, wf = _backend_and_voice(ex, la, "audio", lv, "fps", backend="latentsync-1.6", layout="follow backend")
    ls = _lipsync(ex, fd, sel, wf, lv, report_title="Lip-sync report (which backend ran, fallbacks)")
    _mux(ex, ls, "MuseTalk/latentsync")
    save(ex, "latentsync_with_fallback")

    # 4. multi_face_speaker_select: two faces, the right one is chosen with a box; the clip's own audio drives it
    ex = _Example(m)
    ex.note("**Two faces: choose who speaks.**\n\nFace Detect's speaker = user_box picks the face overlapping the "
            "box '0.5,0,1,1' (fractions of the frame: the right half). Other choices: largest, most_central, "
            "track_index (n-th face of each shot). Only the chosen face is lip-synced; the other one is left "
            "untouched. Here the clip's own sound track drives the mouth (re-syncing a take).\n\n" +
            inputs.format(media.TWO_FACES_CLIP) + weights, height=360)
    lv, _ = _musetalk_loaders(ex, media.TWO_FACES_CLIP)
    fd = _faces(ex, lv, face_widgets={"speaker": "user_box", "user_box": "0.5,0,1,1"},
                preview_title="Face preview (chosen face in green)")
    sel, wf = _backend_and_voice(ex, lv, "audio", lv, "fps")
    ls = _lipsync(ex, fd, sel, wf, lv)
    _mux(ex, ls, "MuseTalk/speaker")
    save(ex, "multi_face_speaker_select")

    # 5. chain_with_core_video: core LoadVideo/LoadAudio in, core CreateVideo/SaveVideo out
    ex = _Example(m)
    ex.note("**With ComfyUI's own video nodes.**\n\nCore Load Video's VIDEO goes into our loader's video_input, "
            "which streams it instead of decoding every frame into RAM. The voice comes from core Load Audio. "
            "Batched Lip-Sync's IMAGE, AUDIO and fps outputs feed core Create Video, and Save Video writes the mp4 "
            "(any node taking IMAGE + AUDIO + fps works the same way).\n\n" +
            inputs.format(media.FACE_CLIP + "` and `" + media.VOICE) + weights, height=360)
    ex.column("1. Load the video and the voice")
    cv = ex.node("LoadVideo", {"file": media.FACE_CLIP}, video=media.FACE_CLIP)
    lv = ex.node("MuseTalkLoadVideo", {"video": media.FACE_CLIP}, video=media.FACE_CLIP)
    ex.link(cv, "VIDEO", lv, "video_input")
    ca = ex.node("LoadAudio", {"audio": media.VOICE})
    fd = _faces(ex, lv)
    sel, wf = _backend_and_voice(ex, ca, "AUDIO", lv, "fps")
    ls = _lipsync(ex, fd, sel, wf, lv)
    _core_video_out(ex, "5. Make and save the video", (ls, "images"), ls, "video/MuseTalk_core")
    save(ex, "chain_with_core_video")

    # 6. vhs_lipsync: VideoHelperSuite in and out (IMAGE + AUDIO + fps)
    ex = _Example(m)
    ex.note("**With ComfyUI-VideoHelperSuite** (needs that node pack: install it with ComfyUI-Manager, "
            "https://github.com/Kosinkadink/ComfyUI-VideoHelperSuite).\n\nVHS Load Video gives an IMAGE batch, "
            "the audio and the video info (fps); our nodes take IMAGE + fps, and Batched Lip-Sync's IMAGE + AUDIO "
            "+ fps go to VHS Video Combine, which muxes the voice (h264-mp4). VHS decodes the whole clip into RAM: "
            "for long videos use our Load Video's streaming 'frames' instead.\n\n" +
            inputs.format(media.CUTAWAY_CLIP + "` and `" + media.DUB_VOICE) + weights, height=420)
    ex.column("1. Load the video and the voice")
    vl = ex.node("VHS_LoadVideo", {"video": media.CUTAWAY_CLIP}, video=media.CUTAWAY_CLIP)
    vi = ex.node("VHS_VideoInfoLoaded")
    ex.link(vl, "video_info", vi, "video_info")
    va = ex.node("VHS_LoadAudioUpload", {"audio": media.DUB_VOICE})
    ex.column("2. Find the face in every frame")
    fd = ex.node("MuseTalkFaceDetect", models=model_entries(DETECTOR_KEYS))
    ex.link(vl, "IMAGE", fd, "images")
    ex.link(vi, "fps🟦", fd, "fps")
    pv = ex.node("PreviewImage", title="Face preview (cutaways framed in red)")
    ex.link(fd, "preview", pv, "images")
    sel, wf = _backend_and_voice(ex, va, "audio", vi, "fps🟦")
    ls = _lipsync(ex, fd, sel, wf, vl, frames_out="IMAGE", fps_src=(vi, "fps🟦"))
    ex.column("5. Combine into an mp4")
    vc = ex.node("VHS_VideoCombine", {"frame_rate": 25, "filename_prefix": "MuseTalk/vhs", "format": "video/h264-mp4",
                                      "pingpong": False, "save_output": True})
    ex.link(ls, "images", vc, "images")
    ex.link(ls, "audio", vc, "audio")
    ex.link(ls, "fps", vc, "frame_rate")
    save(ex, "vhs_lipsync", extra={"requires": [{"pack": "ComfyUI-VideoHelperSuite", "cnr_id": VHS_PROPS["cnr_id"],
                                                 "url": "https://github.com/Kosinkadink/ComfyUI-VideoHelperSuite"}]})

    # 7. real_time_avatar: prepare the face clip once, speak a voice through it
    ex = _Example(m)
    ex.note("**Real-time avatar: prepare once, speak any voice.**\n\n1-2. Load the face clip and find its faces.\n"
            "3. Prepare Avatar stores the frames, the faces (cutaways included), MuseTalk's VAE latents and the "
            "blend masks in ComfyUI/models/musetalk/avatars/example_host/. It is reused on later runs as long as "
            "the clip, the face settings and the weights are the same.\n4. Avatar Speak speaks the voice: only "
            "whisper, the UNet and the VAE decoder run per frame. Change the voice and run again: the avatar is "
            "not prepared again. Avatar Speak can also take just the name of an avatar prepared earlier.\n"
            "5. Mux Video writes the mp4.\n\n" + inputs.format(media.FACE_CLIP + "` and `" + media.VOICE) + weights,
            height=420)
    lv, la = _musetalk_loaders(ex, media.FACE_CLIP, media.VOICE)
    fd = _faces(ex, lv)
    ex.column("3. Prepare the avatar (once)")
    pa = ex.node("MuseTalkPrepareAvatar", {"name": "example_host"},
                 models=model_entries(MUSETALK_KEYS + BLEND_KEYS))
    ex.link(fd, "faces", pa, "faces")
    ex.link(lv, "frames", pa, "frames")
    sm = ex.node("PreviewAny", title="Avatar (prepared or reused)")
    ex.link(pa, "summary", sm, "source")
    ex.column("4. Speak the voice")
    sp = ex.node("MuseTalkAvatarSpeak", models=model_entries(MUSETALK_KEYS + WHISPER_KEYS))
    ex.link(la, "audio", sp, "audio")
    ex.link(pa, "avatar", sp, "avatar")
    rp = ex.node("PreviewAny", title="Speaking report")
    ex.link(sp, "report", rp, "source")
    _mux(ex, sp, "MuseTalk/avatar")
    save(ex, "real_time_avatar")

    # 8. restore_mouth_only: the MASK output into core compositing (a face-restore pack drops in for ImageSharpen)
    ex = _Example(m)
    ex.note("**Sharpen or restore only the new mouth.**\n\nBatched Lip-Sync's last output, mask, is the soft mask "
            "of the pixels it changed in each frame (0 on cutaways and on frames that kept their real mouth). "
            "Here Image Sharpen works on a copy of the lip-synced frames and Image Composite Masked takes it back "
            "only under that mask, so the rest of the face keeps its original detail. Replace Image Sharpen by a "
            "face-restore node (GFPGAN, CodeFormer, an upscaler) to restore the mouth alone.\n\nThe lip-sync "
            "node uses blend_mode 'mouth' (the lower face drawn from the landmarks) and keeps the real mouth "
            "during silence (on_silence keep_original). Mask to Image shows the mask.\n\n" +
            inputs.format(media.FACE_CLIP + "` and `" + media.VOICE) + weights, height=460)
    lv, la = _musetalk_loaders(ex, media.FACE_CLIP, media.VOICE)
    fd = _faces(ex, lv)
    sel, wf = _backend_and_voice(ex, la, "audio", lv, "fps")
    ex.column("4. Lip-sync")
    ls = ex.node("MuseTalkBatchedLipSync", {"blend_mode": "mouth", "on_silence": "keep_original"},
                 models=model_entries(BLEND_KEYS))
    ex.link(fd, "faces", ls, "faces")
    ex.link(wf, "audio_features", ls, "audio_features")
    ex.link(lv, "frames", ls, "frames")
    ex.link(sel, "backend", ls, "backend")
    ex.column("5. Sharpen the new mouth only")
    sh = ex.node("ImageSharpen", {"sharpen_radius": 2, "sigma": 1.0, "alpha": 1.0})
    ex.link(ls, "images", sh, "image")
    cm = ex.node("ImageCompositeMasked", {"x": 0, "y": 0, "resize_source": False})
    ex.link(ls, "images", cm, "destination")
    ex.link(sh, "IMAGE", cm, "source")
    ex.link(ls, "mask", cm, "mask")
    mi = ex.node("MaskToImage")
    ex.link(ls, "mask", mi, "mask")
    pv = ex.node("PreviewImage", title="The mask of the changed pixels")
    ex.link(mi, "IMAGE", pv, "images")
    _core_video_out(ex, "6. Make and save the video", (cm, "IMAGE"), ls, "video/MuseTalk_mouth")
    save(ex, "restore_mouth_only")
    return written


if __name__ == "__main__":
    smoke_workflows(os.path.join(ROOT, "tests", "workflows"))
    print("wrote tests/workflows/*.json")
    for p in example_workflows(os.path.join(ROOT, "example_workflows")):
        print("wrote", os.path.relpath(p, ROOT))
    from workflow_api import write_api_exports  # the same workflows in API format (Export (API), POST /prompt)

    for p in write_api_exports(os.path.join(ROOT, "example_workflows"), load_pack()):
        print("wrote", os.path.relpath(p, ROOT))
