"""Regenerate the workflow JSONs (smoke workflows under tests/workflows/; example workflows under
example_workflows/). Run from the repo root: ``.venv/bin/python tools/make_workflows.py``."""
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


if __name__ == "__main__":
    smoke_workflows(os.path.join(ROOT, "tests", "workflows"))
    print("wrote tests/workflows/*.json")
