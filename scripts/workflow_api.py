"""The API format of the pack's workflows: what ComfyUI's Workflow > Export (API) writes and ``POST /prompt`` takes.

    {"<node id>": {"inputs": {"<input>": <widget value> | ["<source node id>", <output slot>]},
                   "class_type": "<node class>", "_meta": {"title": "<node title>"}}}

The server only runs this format (it has no UI -> API conversion of its own), so every example workflow ships beside
its UI file as ``example_workflows/api/<slug>.json``. They are converted from the UI files with the widget layout the
builder writes them with (scripts/workflow_builder.py): the values of frontend-only widgets (upload buttons, the audio
player) and nodes that exist only in the page (notes) are left out, as the page leaves them out.

    .venv/bin/python scripts/make_workflows.py              # writes the UI files, then these exports
    .venv/bin/python scripts/workflow_api.py UI.json [-o API.json]   # one UI workflow of these nodes, offline
"""
from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, Optional

from workflow_builder import (CORE, CORE_OPTIONS, VIRTUAL_NODES, _our_spec, frontend_widget_slots)

API_DIR = "api"  # under example_workflows/
# node titles as /object_info's display_name gives them (ComfyUI 0.3.64, VideoHelperSuite 1.7.9): the page titles a
# node with its display name unless the workflow renamed it, and Export (API) writes that title to _meta
CORE_TITLES = {"LoadVideo": "Load Video", "GetVideoComponents": "Get Video Components", "CreateVideo": "Create Video",
               "SaveVideo": "Save Video", "LoadAudio": "Load Audio", "PreviewImage": "Preview Image",
               "PreviewAudio": "Preview Audio", "SaveAudio": "Save Audio (FLAC)", "PreviewAny": "Preview Any",
               "MaskToImage": "Convert Mask to Image"}
VHS_TITLES = {"VHS_LoadVideo": "Load Video (Upload) 🎥🅥🅗🅢", "VHS_LoadAudioUpload": "Load Audio (Upload)🎥🅥🅗🅢",
              "VHS_VideoInfoLoaded": "Video Info (Loaded) 🎥🅥🅗🅢", "VHS_VideoCombine": "Video Combine 🎥🅥🅗🅢"}
# the file input of each loader node: what a client sets to the name of an uploaded file
VIDEO_INPUTS = {"MuseTalkLoadVideo": "video", "LoadVideo": "file", "VHS_LoadVideo": "video"}
AUDIO_INPUTS = {"MuseTalkLoadAudio": "audio", "LoadAudio": "audio", "VHS_LoadAudioUpload": "audio"}


def widget_inputs(node: dict, mappings: dict) -> Dict[str, object]:
    """``{input name: value}`` of a UI node's widgets, in the page's widget order. A positional ``widgets_values``
    follows the builder's layout (control-after-generate slots and the upload widgets are no inputs); a dict one
    (VideoHelperSuite) is keyed by name already, its preview state (dict values) left out."""
    values = node.get("widgets_values")
    if isinstance(values, dict):
        return {k: v for k, v in values.items() if not isinstance(v, (dict, list))}
    ntype = node["type"]
    if ntype in mappings:
        inputs, _, opts = _our_spec(mappings[ntype])
    elif ntype in CORE:
        inputs, opts = CORE[ntype][0], CORE_OPTIONS.get(ntype, {})
    else:
        raise KeyError(f"node {node['id']}: unknown node type {ntype}")
    slots = frontend_widget_slots(inputs, opts)
    if len(values or []) != len(slots):
        raise ValueError(f"node {node['id']} {ntype}: {len(values or [])} widget values for {len(slots)} widgets "
                         "(a UI file older than the node: regenerate it with scripts/make_workflows.py)")
    return {name: value for (name, kind, _), value in zip(slots, values) if kind == "input"}


def linked_inputs(node: dict, links: Dict[int, list]) -> Dict[str, list]:
    """``{input name: [source node id, output slot]}`` for every connected input of a UI node."""
    out = {}
    for entry in node.get("inputs") or []:
        if entry.get("link") is not None:
            _, src, slot = links[entry["link"]][:3]
            out[(entry.get("widget") or {}).get("name") or entry["name"]] = [str(src), slot]
    return out


def node_title(node: dict, display_names: dict) -> str:
    t = node["type"]
    return node.get("title") or display_names.get(t) or CORE_TITLES.get(t) or VHS_TITLES.get(t) or t


def to_api(ui: dict, mappings: dict, display_names: Optional[dict] = None) -> dict:
    """The API format of a UI workflow made of this pack's nodes, the core nodes and the VideoHelperSuite nodes the
    builder knows; notes are left out. Node ids stay the UI ids (as strings), so the page's ids name the same
    nodes in both files."""
    links = {link[0]: link for link in ui.get("links") or []}
    prompt = {}
    for node in ui["nodes"]:
        if node["type"] in VIRTUAL_NODES or node.get("mode", 0) == 2:
            continue
        inputs = widget_inputs(node, mappings)
        inputs.update(linked_inputs(node, links))
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"],
                                   "_meta": {"title": node_title(node, display_names or {})}}
    return prompt


def save_api(prompt: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(prompt, f, indent=1, ensure_ascii=False)
        f.write("\n")


def write_api_exports(example_dir: str, pack) -> List[str]:
    """``example_dir/api/<slug>.json`` for every example workflow (make_example_media.TEMPLATES), plus the index
    ``README.md`` there naming each file's loader and output nodes. -> the paths written."""
    import make_example_media as media

    out_dir = os.path.join(example_dir, API_DIR)
    os.makedirs(out_dir, exist_ok=True)
    written, rows = [], []
    for slug, title in media.TEMPLATES.items():
        with open(os.path.join(example_dir, title + ".json"), encoding="utf-8") as f:
            prompt = to_api(json.load(f), pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS)
        path = os.path.join(out_dir, slug + ".json")
        save_api(prompt, path)
        written.append(path)
        rows.append(index_row(slug, title, prompt, pack.NODE_CLASS_MAPPINGS))
    path = os.path.join(out_dir, "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(INDEX_HEAD + "\n".join(rows) + "\n" + INDEX_TAIL)
    return written + [path]


INDEX_HEAD = """# Example workflows in API format

Each file here is the example workflow of the same name one folder up, in the format ComfyUI's **Workflow > Export
(API)** writes and `POST /prompt` runs: `{node id: {"inputs", "class_type", "_meta"}}`, node ids as in the page.
Run one with `clients/comfy_api_client.py` (see `docs/comfyui_api.md`); the client sets an uploaded video and voice on
the loader inputs listed below. Generated by `scripts/make_workflows.py`: edit the builder, not these files.

| file | example workflow | video input | voice input | writes the video |
| --- | --- | --- | --- | --- |
"""
INDEX_TAIL = """
A node id is the key of its entry in the file; `--set ID.input=value` (or `--set ClassName.input=value`, every node
of that class) changes any input before the workflow is queued, e.g. `--set 3.frame_load_cap=50`.
"""


def index_row(slug: str, title: str, prompt: dict, mappings: dict) -> str:
    def inputs_of(table):
        return ", ".join(f"`{nid}.{table[n['class_type']]}` ({n['class_type']})" for nid, n in prompt.items()
                         if n["class_type"] in table) or "- (the video's own sound)"

    writers = [f"`{nid}` ({n['class_type']})" for nid, n in prompt.items() if _writes_video(n["class_type"], mappings)]
    return (f"| `{slug}.json` | {title} | {inputs_of(VIDEO_INPUTS)} | {inputs_of(AUDIO_INPUTS)} | "
            f"{', '.join(writers)} |")


def _writes_video(ntype: str, mappings: dict) -> bool:
    cls = mappings.get(ntype)
    return ntype in ("SaveVideo", "VHS_VideoCombine") or bool(
        cls is not None and getattr(cls, "OUTPUT_NODE", False) and "VIDEO" in cls.RETURN_TYPES)


def main(argv=None) -> int:
    import argparse

    import runpy

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    import_pack = runpy.run_path(os.path.join(os.path.dirname(here), "bootstrap.py"))["import_pack"]

    ap = argparse.ArgumentParser(description="Convert a UI-format workflow of this pack's nodes to the API format.")
    ap.add_argument("workflow", help="UI-format workflow (.json, as the page saves it)")
    ap.add_argument("-o", "--out", help="API-format file to write (default: print it)")
    a = ap.parse_args(argv)
    pack = import_pack()
    with open(a.workflow, encoding="utf-8") as f:
        prompt = to_api(json.load(f), pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS)
    if a.out:
        save_api(prompt, a.out)
    else:
        print(json.dumps(prompt, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
