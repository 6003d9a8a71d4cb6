"""Build ComfyUI UI-format workflow JSON (as the frontend saves it) from a compact description.

Widget order for our nodes comes from their INPUT_TYPES (the same order ComfyUI uses to map ``widgets_values``);
core nodes are described in ``CORE`` below (ComfyUI v0.3.64). Used by ``tools/make_workflows.py`` and the tests.
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
}
UPLOAD_EXTRA = {"LoadVideo": ["image"], "LoadAudio": [None, None]}  # frontend upload-button widget values


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
            opts = {}
        else:
            raise KeyError(f"unknown node type {ntype}")
        nid = len(self.nodes) + 1
        values: List[Any] = []
        ui_inputs = []
        for name, t, is_widget in inputs:
            if is_widget:
                if name in widgets:
                    v = widgets.pop(name)
                else:
                    d = opts.get(name, {}).get("default")
                    if d is None and t == "COMBO" and ntype in self.mappings:
                        choices = self.mappings[ntype].INPUT_TYPES()
                        decl = choices.get("required", {}).get(name) or choices.get("optional", {}).get(name)
                        d = decl[0][0] if decl and decl[0] else ""
                    v = d
                values.append(v)
                if opts.get(name, {}).get("video_upload") or opts.get(name, {}).get("audio_upload"):
                    values.append("image" if opts[name].get("video_upload") else None)
            else:
                ui_inputs.append({"name": name, "type": t, "link": None})
        if ntype in UPLOAD_EXTRA:
            values += UPLOAD_EXTRA[ntype]
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

    def to_json(self, extra: Optional[dict] = None) -> dict:
        for n in self.nodes:
            for o in n["outputs"]:
                if not o["links"]:
                    o["links"] = None
        wf = {"id": "00000000-0000-4000-8000-%012d" % len(self.nodes), "revision": 0,
              "last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
              "links": self.links, "groups": [], "config": {},
              "extra": {"ds": {"scale": 1, "offset": [0, 0]}, "frontendVersion": "1.27.10", **(extra or {})},
              "version": 0.4}
        return wf

    def save(self, path: str, extra: Optional[dict] = None) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(extra), f, indent=1)
            f.write("\n")
