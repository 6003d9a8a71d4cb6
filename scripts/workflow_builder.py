"""Build ComfyUI UI-format workflow JSON (as the frontend saves it) from a compact description.

Widget order for our nodes comes from their INPUT_TYPES (the same order ComfyUI uses to map ``widgets_values``);
core nodes are described in ``CORE`` below (ComfyUI v0.3.64). Used by ``scripts/make_workflows.py`` and the tests.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}

# core nodes: (inputs [(name, type, is_widget)], outputs [(name, type)], extra widget values appended after inputs)
CORE: Dict[str, Tuple[List[Tuple[str, str, bool]], List[Tuple[str, str]]]] = {
    "LoadVideo": ([("file", "COMBO", True)], [("VIDEO", "VIDEO")]),
    "GetVideoComponents": ([("video", "VIDEO", False)], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "CreateVideo": ([("images", "IMAGE", False), ("audio", "AUDIO", False), ("fps", "FLOAT", True)],
                    [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO", False), ("filename_prefix", "STRING", True), ("format", "COMBO", True),
                   ("codec", "COMBO", True)], []),
    "LoadAudio": ([("audio", "COMBO", True)], [("AUDIO", "AUDIO")]),
    "PreviewImage": ([("images", "IMAGE", False)], []),
    "PreviewAudio": ([("audio", "AUDIO", False)], []),
    "SaveAudio": ([("audio", "AUDIO", False), ("filename_prefix", "STRING", True)], []),
    "PreviewAny": ([("source", "*", False)], []),
    "ImageSharpen": ([("image", "IMAGE", False), ("sharpen_radius", "INT", True), ("sigma", "FLOAT", True),
                      ("alpha", "FLOAT", True)], [("IMAGE", "IMAGE")]),
    "ImageCompositeMasked": ([("destination", "IMAGE", False), ("source", "IMAGE", False), ("x", "INT", True),
                              ("y", "INT", True), ("resize_source", "BOOLEAN", True), ("mask", "MASK", False)],
                             [("IMAGE", "IMAGE")]),
    "MaskToImage": ([("mask", "MASK", False)], [("IMAGE", "IMAGE")]),
}

# Widget/input options of the core nodes above, as /object_info of ComfyUI v0.3.64 reports them:
# "choices" (combo list), "file" (a combo listing the input folder: any file name is accepted, the file must exist),
# "default", "min", "max", "optional" (an optional socket).
CORE_OPTIONS: Dict[str, Dict[str, dict]] = {
    "LoadVideo": {"file": {"file": True, "video_upload": True}},
    "LoadAudio": {"audio": {"file": True, "audio_upload": True}},
    "CreateVideo": {"fps": {"default": 30.0, "min": 1.0, "max": 120.0}, "audio": {"optional": True}},
    "SaveVideo": {"filename_prefix": {"default": "video/ComfyUI"},
                  "format": {"choices": ["auto", "mp4"], "default": "auto"},
                  "codec": {"choices": ["auto", "h264"], "default": "auto"}},
    "SaveAudio": {"filename_prefix": {"default": "audio/ComfyUI"}},
    "ImageSharpen": {"sharpen_radius": {"default": 1, "min": 1, "max": 31},
                     "sigma": {"default": 1.0, "min": 0.1, "max": 10.0},
                     "alpha": {"default": 1.0, "min": 0.0, "max": 5.0}},
    "ImageCompositeMasked": {"x": {"default": 0, "min": 0, "max": 16384}, "y": {"default": 0, "min": 0, "max": 16384},
                             "resize_source": {"default": False}, "mask": {"optional": True}},
}
# What the frontend's Missing Models dialog can download (1.27 MissingModelsWarning): files from these hosts with
# these suffixes. Anything else it lists as an error, and a file the server's model API never lists (.json, .png)
# is reported missing even when installed: a workflow's `models` names only downloadable files.
FRONTEND_MODEL_SOURCES = ("https://huggingface.co/", "https://civitai.com/")
FRONTEND_MODEL_SUFFIXES = (".safetensors", ".sft")


def frontend_can_download(entry: dict) -> bool:
    """Whether the frontend can offer this ``{"name", "url", "directory"}`` model entry for download."""
    return str(entry.get("url", "")).startswith(FRONTEND_MODEL_SOURCES) and \
        str(entry.get("name", "")).endswith(FRONTEND_MODEL_SUFFIXES)


CORE_OUTPUT_NODES = {"SaveVideo", "PreviewImage", "PreviewAudio", "SaveAudio", "PreviewAny"}
# nodes that exist only in the frontend (no server class): skipped when a workflow is queued
VIRTUAL_NODES = {"Note", "MarkdownNote"}

# ComfyUI-VideoHelperSuite (v1.7.9), used only by example workflows documented as needing it.
# Its saved workflows keep widgets_values as a dict keyed by widget name. Socket types as its /object_info reports
# them (its IMAGE/FLOAT sockets also accept LATENT/INT).
VHS_PACK = "ComfyUI-VideoHelperSuite"
VHS_NODES: Dict[str, Tuple[List[Tuple[str, str, bool]], List[Tuple[str, str]]]] = {
    "VHS_LoadVideo": ([("video", "COMBO", True), ("force_rate", "FLOAT", True), ("custom_width", "INT", True),
                       ("custom_height", "INT", True), ("frame_load_cap", "INT", True),
                       ("skip_first_frames", "INT", True), ("select_every_nth", "INT", True),
                       ("meta_batch", "VHS_BatchManager", False), ("vae", "VAE", False), ("format", "COMBO", True)],
                      [("IMAGE", "IMAGE"), ("frame_count", "INT"), ("audio", "AUDIO"),
                       ("video_info", "VHS_VIDEOINFO")]),
    "VHS_LoadAudioUpload": ([("audio", "COMBO", True), ("start_time", "FLOAT", True), ("duration", "FLOAT", True)],
                            [("audio", "AUDIO"), ("duration", "FLOAT")]),
    "VHS_VideoInfoLoaded": ([("video_info", "VHS_VIDEOINFO", False)],
                            [("fps🟦", "FLOAT"), ("frame_count🟦", "INT"), ("duration🟦", "FLOAT"),
                             ("width🟦", "INT"), ("height🟦", "INT")]),
    "VHS_VideoCombine": ([("images", "IMAGE", False), ("frame_rate", "FLOAT", True),
                          ("loop_count", "INT", True), ("filename_prefix", "STRING", True), ("format", "COMBO", True),
                          ("pingpong", "BOOLEAN", True), ("save_output", "BOOLEAN", True),
                          ("audio", "AUDIO", False), ("meta_batch", "VHS_BatchManager", False),
                          ("vae", "VAE", False)],
                         [("Filenames", "VHS_FILENAMES")]),
}
VHS_OPTIONS: Dict[str, Dict[str, dict]] = {
    "VHS_LoadVideo": {"video": {"file": True},
                      "force_rate": {"default": 0, "min": 0, "max": 60},
                      "custom_width": {"default": 0, "min": 0, "max": 8192},
                      "custom_height": {"default": 0, "min": 0, "max": 8192},
                      "frame_load_cap": {"default": 0, "min": 0},
                      "skip_first_frames": {"default": 0, "min": 0},
                      "select_every_nth": {"default": 1, "min": 1},
                      "meta_batch": {"optional": True}, "vae": {"optional": True},
                      "format": {"optional": True, "default": "AnimateDiff",
                                 "choices": ["None", "AnimateDiff", "Mochi", "LTXV", "Hunyuan", "Cosmos", "Wan"]}},
    "VHS_LoadAudioUpload": {"audio": {"file": True},
                            "start_time": {"optional": True, "default": 0, "min": 0, "max": 10000000},
                            "duration": {"optional": True, "default": 0, "min": 0, "max": 10000000}},
    "VHS_VideoCombine": {"frame_rate": {"default": 8, "min": 1},
                         "loop_count": {"default": 0, "min": 0, "max": 100},
                         "filename_prefix": {"default": "AnimateDiff"},
                         "format": {"default": "image/gif",
                                    "choices": ["image/gif", "image/webp", "video/ProRes", "video/webm",
                                                "video/ffv1-mkv", "video/nvenc_av1-mp4", "video/h265-mp4",
                                                "video/8bit-png", "video/h264-mp4", "video/nvenc_hevc-mp4",
                                                "video/nvenc_h264-mp4", "video/ffmpeg-gif", "video/av1-webm",
                                                "video/16bit-png"]},
                         "pingpong": {"default": False}, "save_output": {"default": True},
                         "audio": {"optional": True}, "meta_batch": {"optional": True}, "vae": {"optional": True}},
}
# widgets a VHS_VideoCombine format adds after 'format' (video_formats/<format>.json)
VHS_FORMAT_WIDGETS = {
    "video/h264-mp4": [("pix_fmt", "COMBO", {"choices": ["yuv420p", "yuv420p10le"], "default": "yuv420p"}),
                       ("crf", "INT", {"default": 19, "min": 0, "max": 100}),
                       ("save_metadata", "BOOLEAN", {"default": True}),
                       ("trim_to_audio", "BOOLEAN", {"default": False})],
}
VHS_OUTPUT_NODES = {"VHS_VideoCombine"}


def _our_spec(cls) -> Tuple[List[Tuple[str, str, bool]], List[Tuple[str, str]], Dict[str, dict]]:
    spec = cls.INPUT_TYPES()
    inputs, opts = [], {}
    for section in ("required", "optional"):
        for name, decl in spec.get(section, {}).items():
            kind = decl[0]
            o = decl[1] if len(decl) > 1 else {}
            opts[name] = o
            is_widget = (isinstance(kind, list) or kind in WIDGET_TYPES) and not o.get("forceInput")
            inputs.append((name, "COMBO" if isinstance(kind, list) else kind, is_widget))
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    outputs = list(zip(names, cls.RETURN_TYPES))
    return inputs, outputs, opts


def types_connect(out_type: str, in_type: str) -> bool:
    """Whether an output of ``out_type`` may feed an input of ``in_type``: equal, ``*`` on either side, or one of the
    comma-separated alternatives (the frontend's rule)."""
    if out_type == in_type or "*" in (out_type, in_type):
        return True
    return bool(set(str(out_type).split(",")) & set(str(in_type).split(",")))


CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
# widgets the frontend adds itself, LAST (after every input, optional ones too), and the value each saves
# (frontend 1.27 uploadWidget/useAudioWidget, checked in the page by tests/test_comfy_frontend.py)
UPLOAD_WIDGETS = {"image_upload": [("upload", "image")], "video_upload": [("upload", "image")],
                  "animated_image_upload": [("upload", "image")],
                  "audio_upload": [("audioUI", None), ("upload", None)]}


def has_control_widget(name: str, kind: str, opts: dict) -> bool:
    """Whether the frontend adds a "control after generate" widget (saved as one more value) after this input: an
    INT with ``control_after_generate``, or, unless that option is False, an INT named seed / noise_seed (frontend
    1.27 useIntWidget)."""
    if kind != "INT":
        return False
    flag = opts.get("control_after_generate")
    return bool(flag) if flag is not None else name in ("seed", "noise_seed")


def frontend_widget_slots(inputs, opts) -> List[Tuple[str, str, Any]]:
    """The saved ``widgets_values`` layout of a node, in the order the frontend builds its widgets: ``[(name, kind,
    value)]`` where kind is ``"input"`` (the input's own value; ``value`` unused), ``"control"`` (the control after
    a seed) or ``"extra"`` (a widget the frontend adds, with the value it saves: upload buttons and the audio player
    come after every input)."""
    slots, extras = [], []
    for name, kind, is_widget in inputs:
        if not is_widget:
            continue
        o = opts.get(name, {})
        slots.append((name, "input", None))
        if has_control_widget(name, kind, o):
            slots.append((name + ".control", "control", "fixed"))
        for key, widgets in UPLOAD_WIDGETS.items():
            if o.get(key):
                extras += [(w, "extra", v) for w, v in widgets]
    return slots + extras


def node_size(n_widgets: int, n_sockets: int, width: int = 320) -> List[int]:
    """A node size that shows all its sockets and widgets (about what the frontend computes)."""
    return [width, 30 + 22 * n_sockets + 24 * n_widgets + 10]


class Workflow:
    def __init__(self, mappings: Optional[dict] = None):
        self.mappings = mappings or {}
        self.nodes: List[dict] = []
        self.links: List[list] = []
        self._specs: Dict[int, tuple] = {}

    def node(self, ntype: str, widgets: Optional[Dict[str, Any]] = None, pos=(0, 0), size=(320, 200),
             title: Optional[str] = None, properties: Optional[dict] = None) -> int:
        widgets = dict(widgets or {})
        if ntype in self.mappings:
            inputs, outputs, opts = _our_spec(self.mappings[ntype])
        elif ntype in CORE:
            inputs, outputs = CORE[ntype]
            opts = CORE_OPTIONS.get(ntype, {})
        elif ntype in VHS_NODES:
            return self._dict_widget_node(ntype, widgets, pos, size, title, properties)
        else:
            raise KeyError(f"unknown node type {ntype}")
        if size == "auto":
            n_w = sum(1 for _, _, w in inputs if w)
            size = node_size(n_w, max(len(inputs) - n_w, len(outputs)))
        nid = len(self.nodes) + 1
        values: List[Any] = []
        for name, kind, value in frontend_widget_slots(inputs, opts):
            if kind != "input":
                values.append(value)  # (a seed's control is saved "fixed": the seed stays as saved)
            elif name in widgets:
                values.append(widgets.pop(name))
            else:
                values.append(self._default(ntype, name, opts))
        ui_inputs = [{"name": name, "type": t, "link": None} for name, t, is_widget in inputs if not is_widget]
        if widgets:
            raise KeyError(f"{ntype}: unknown widget(s) {sorted(widgets)}")
        node = {"id": nid, "type": ntype, "pos": list(pos), "size": list(size), "flags": {}, "order": nid - 1,
                "mode": 0, "inputs": ui_inputs,
                "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
                "properties": {"Node name for S&R": ntype, **(properties or {})},
                "widgets_values": values}
        if title:
            node["title"] = title
        self.nodes.append(node)
        self._specs[nid] = (inputs, outputs)
        return nid

    def _default(self, ntype, name, opts):
        d = opts.get(name, {}).get("default")
        if d is None and ntype in self.mappings:
            spec = self.mappings[ntype].INPUT_TYPES()
            decl = spec.get("required", {}).get(name) or spec.get("optional", {}).get(name)
            if decl and isinstance(decl[0], list):
                d = decl[0][0] if decl[0] else ""
        return d

    def _dict_widget_node(self, ntype, widgets, pos, size, title, properties) -> int:
        """A VideoHelperSuite node: widgets_values is a dict keyed by widget name (its frontend saves it so)."""
        inputs, outputs = VHS_NODES[ntype]
        opts = VHS_OPTIONS.get(ntype, {})
        widgets = dict(widgets or {})
        values: Dict[str, Any] = {}
        ui_inputs = []
        for name, t, is_widget in inputs:
            if is_widget:
                values[name] = widgets.pop(name) if name in widgets else opts.get(name, {}).get("default")
                if name == "format" and values[name] in VHS_FORMAT_WIDGETS:
                    for extra, _, o in VHS_FORMAT_WIDGETS[values[name]]:
                        values[extra] = widgets.pop(extra) if extra in widgets else o.get("default")
            else:
                entry = {"name": name, "type": t, "link": None}
                if opts.get(name, {}).get("optional"):
                    entry["shape"] = 7
                ui_inputs.append(entry)
        if widgets:
            raise KeyError(f"{ntype}: unknown widget(s) {sorted(widgets)}")
        if size == "auto":
            size = node_size(len(values), max(len(ui_inputs), len(outputs)))
        nid = len(self.nodes) + 1
        node = {"id": nid, "type": ntype, "pos": list(pos), "size": list(size), "flags": {}, "order": nid - 1,
                "mode": 0, "inputs": ui_inputs,
                "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
                "properties": {"Node name for S&R": ntype, **(properties or {})},
                "widgets_values": values}
        if title:
            node["title"] = title
        self.nodes.append(node)
        self._specs[nid] = (inputs, outputs)
        return nid

    def note(self, text: str, pos=(0, 0), size=(400, 200), title: Optional[str] = None,
             ntype: str = "MarkdownNote") -> int:
        """A frontend-only note (Note / MarkdownNote); it is not sent to the server."""
        nid = len(self.nodes) + 1
        node = {"id": nid, "type": ntype, "pos": list(pos), "size": list(size), "flags": {}, "order": nid - 1,
                "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [text],
                "color": "#432", "bgcolor": "#653"}
        if title:
            node["title"] = title
        self.nodes.append(node)
        self._specs[nid] = ([], [])
        return nid

    def link(self, src: int, out: str, dst: int, inp: str) -> None:
        s_inputs, s_outputs = self._specs[src]
        d_inputs, _ = self._specs[dst]
        slot = [n for n, _ in s_outputs].index(out)
        t = s_outputs[slot][1]
        dnode = self.nodes[dst - 1]
        entry = next((i for i in dnode["inputs"] if i["name"] == inp), None)
        if entry is None:  # a widget converted to a socket
            decl = next(x for x in d_inputs if x[0] == inp)
            entry = {"name": inp, "type": decl[1], "link": None, "widget": {"name": inp}}
            dnode["inputs"].append(entry)
        lid = len(self.links) + 1
        entry["link"] = lid
        self.nodes[src - 1]["outputs"][slot]["links"].append(lid)
        dslot = dnode["inputs"].index(entry)
        self.links.append([lid, src, slot, dst, dslot, t])

    def to_json(self, extra: Optional[dict] = None, models: Optional[list] = None, groups: Optional[list] = None,
                wf_id: Optional[str] = None) -> dict:
        """The UI-format workflow. ``models`` ([{"name", "url", "directory"}]) becomes the top-level ``models`` list
        the frontend checks against the model folders when the workflow is opened."""
        for n in self.nodes:
            for o in n["outputs"]:
                if not o["links"]:
                    o["links"] = None
        wf = {"id": wf_id or "00000000-0000-4000-8000-%012d" % len(self.nodes), "revision": 0,
              "last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
              "links": self.links, "groups": groups or [], "config": {},
              "extra": {"ds": {"scale": 1, "offset": [0, 0]}, "frontendVersion": "1.27.10", **(extra or {})},
              "version": 0.4}
        if models:
            wf["models"] = models
        return wf

    def save(self, path: str, extra: Optional[dict] = None, **kwargs) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(extra, **kwargs), f, indent=1, ensure_ascii=False)
            f.write("\n")
