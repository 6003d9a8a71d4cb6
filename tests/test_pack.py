"""The pack loads the way ComfyUI loads it, declares well-formed V1 nodes, and its media nodes work standalone."""
import ast
import inspect
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import mediakit as mk
from conftest import ROOT

import musetalk_enhanced as pack


def test_imports_from_hyphenated_folder_next_to_comfy_modules(tmp_path):
    """ComfyUI: spec_from_file_location(<folder name>) with its own top-level `nodes`, `comfy`, `folder_paths`."""
    link = tmp_path / "custom_nodes" / "ComfyUI-MuseTalk-Enhanced"
    link.parent.mkdir()
    os.symlink(ROOT, link)
    fake = tmp_path / "fake_comfy"
    fake.mkdir()
    (fake / "nodes.py").write_text("NODE_CLASS_MAPPINGS = {'CoreThing': object}\n")
    (fake / "comfy").mkdir()
    (fake / "comfy" / "__init__.py").write_text("")
    code = textwrap.dedent(f"""
        import importlib.util, sys, json
        sys.path.insert(0, {str(fake)!r})
        import nodes  # ComfyUI's own top-level module
        name = "ComfyUI-MuseTalk-Enhanced"
        spec = importlib.util.spec_from_file_location(name, {str(link / '__init__.py')!r})
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        heavy = [m for m in ("diffusers", "transformers", "cv2", "av", "skimage", "huggingface_hub")
                 if m in sys.modules]
        import torch
        print(json.dumps({{"nodes": sorted(mod.NODE_CLASS_MAPPINGS), "core_nodes_intact":
                           nodes.NODE_CLASS_MAPPINGS == {{'CoreThing': object}},
                           "heavy": heavy, "cuda_init": torch.cuda.is_initialized()}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert "MuseTalkLoadVideo" in res["nodes"] and "MuseTalkMuxVideo" in res["nodes"]
    assert res["core_nodes_intact"]
    assert res["heavy"] == [], f"heavy modules imported at load time: {res['heavy']}"
    assert res["cuda_init"] is False


CORE_NAMES = {"LoadVideo", "LoadAudio", "SaveVideo", "CreateVideo", "GetVideoComponents", "LoadImage", "SaveImage",
              "SaveAudio", "PreviewImage", "PreviewAudio"}
CORE_TYPES = {"IMAGE", "MASK", "AUDIO", "VIDEO", "LATENT", "INT", "FLOAT", "STRING", "BOOLEAN", "*"}


@pytest.mark.parametrize("node_id", sorted(pack.NODE_CLASS_MAPPINGS))
def test_node_declarations_follow_comfy_conventions(node_id):
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    assert node_id.startswith("MuseTalk") and node_id not in CORE_NAMES
    assert node_id in pack.NODE_DISPLAY_NAME_MAPPINGS
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    for section in ("required", "optional"):
        for name, decl in spec.get(section, {}).items():
            assert isinstance(decl, tuple) and 1 <= len(decl) <= 2, (node_id, name)
            kind = decl[0]
            if isinstance(kind, str):
                assert kind in CORE_TYPES or kind.startswith("MUSETALK_"), (node_id, name, kind)
            else:
                assert isinstance(kind, list), (node_id, name)
            opts = decl[1] if len(decl) > 1 else {}
            assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"
            if isinstance(kind, list) and "default" in opts:
                assert opts["default"] in kind, (node_id, name)
    for t in cls.RETURN_TYPES:
        assert t in CORE_TYPES or t.startswith("MUSETALK_"), (node_id, t)
    names = getattr(cls, "RETURN_NAMES", None)
    assert names is None or len(names) == len(cls.RETURN_TYPES)
    assert callable(getattr(cls, cls.FUNCTION))
    assert cls.CATEGORY.startswith("MuseTalk") and getattr(cls, "DESCRIPTION", "")
    # the function accepts every declared input by name
    sig = inspect.signature(getattr(cls, cls.FUNCTION))
    declared = list(spec.get("required", {})) + list(spec.get("optional", {}))
    has_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    for name in declared:
        assert has_kwargs or name in sig.parameters, (node_id, name)


def test_frontend_extension_is_served_and_names_our_nodes():
    """WEB_DIRECTORY: ComfyUI serves its .js files at /extensions/<pack>/<file> and the page imports them; a file
    there imports the app two folders up (/scripts/app.js) and may only name nodes of this pack."""
    import re

    web = os.path.join(ROOT, pack.WEB_DIRECTORY)
    scripts = [f for f in os.listdir(web) if f.endswith(".js")]
    assert scripts and all(os.path.isfile(os.path.join(web, f)) for f in scripts)
    for f in scripts:
        text = open(os.path.join(web, f), encoding="utf-8").read()
        assert 'from "../../scripts/app.js"' in text
        for node in re.findall(r'"(MuseTalk[A-Za-z]+)"', text):
            assert node in pack.NODE_CLASS_MAPPINGS, f"{f} names unknown node {node}"
    audio = pack.NODE_CLASS_MAPPINGS["MuseTalkLoadAudio"].INPUT_TYPES()["required"]["audio"]
    assert audio[1].get("audio_upload") is True  # the upload button whose player the extension adds


def test_internal_imports_are_relative():
    """ComfyUI has its own `nodes` module: an absolute import of ours would pick up ComfyUI's."""
    bad = []
    for sub in ("nodes", "pipeline", "models"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, sub)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                tree = ast.parse(open(os.path.join(dirpath, f)).read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                            node.module.split(".")[0] in ("nodes", "pipeline", "models"):
                        bad.append(f"{f}: from {node.module}")
                    if isinstance(node, ast.Import):
                        for a in node.names:
                            if a.name.split(".")[0] in ("nodes", "pipeline", "models", "torchvision", "torchaudio"):
                                bad.append(f"{f}: import {a.name}")
    assert bad == []


def test_layers_only_import_downwards():
    """models never import pipeline/nodes; pipeline never imports nodes."""
    bad = []
    for sub, forbidden in (("models", ("pipeline", "nodes")), ("pipeline", ("nodes",))):
        for dirpath, _, files in os.walk(os.path.join(ROOT, sub)):
            for f in files:
                if f.endswith(".py"):
                    tree = ast.parse(open(os.path.join(dirpath, f)).read())
                    for node in ast.walk(tree):
                        if isinstance(node, ast.ImportFrom) and node.level >= 1 and node.module and \
                                node.module.split(".")[0] in forbidden:
                            bad.append(f"{sub}/{f}: from {'.' * node.level}{node.module}")
    assert bad == []


def test_requirements_never_list_torch():
    reqs = open(os.path.join(ROOT, "requirements.txt")).read().splitlines()
    names = [r.split("#")[0].strip().split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in reqs]
    assert not {"torch", "torchvision", "torchaudio"} & set(names)
    assert not any("==" in r for r in reqs if not r.strip().startswith("#"))


# ------------------------------------------------------------------------------------ media nodes, standalone ---
@pytest.fixture
def dirs(tmp_path, monkeypatch):
    for k in ("input", "output", "temp"):
        (tmp_path / k).mkdir()
        monkeypatch.setenv(f"MUSETALK_{k.upper()}_DIR", str(tmp_path / k))
    return tmp_path


def _node(node_id):
    return pack.NODE_CLASS_MAPPINGS[node_id]()


def test_load_video_then_mux_round_trip(dirs):
    frames = mk.animate(mk.photo("astronaut", (128, 96)), 30)
    mk.write_video(str(dirs / "input" / "clip.mp4"), frames, 25, crf=10,
                   audio=mk.tone(440, 1.2, 44100, channels=2), audio_rate=44100)
    load = _node("MuseTalkLoadVideo")
    assert "clip.mp4" in load.INPUT_TYPES()["required"]["video"][0]
    images, audio, fps, count, handle = load.load("clip.mp4")
    assert images.shape == (30, 96, 128, 3) and images.dtype == torch.float32 and count == 30 and fps == 25.0
    assert audio["waveform"].shape[:2] == (1, 2) and audio["sample_rate"] == 44100
    assert abs(audio["waveform"].shape[-1] / 44100 - 1.2) < 0.05
    mux = _node("MuseTalkMuxVideo")
    out = mux.mux(fps=0.0, filename_prefix="tests/run", frames=handle, audio=audio)
    path = out["result"][1]
    assert path.startswith(str(dirs / "output")) and os.path.basename(path) == "run_00001.mp4"
    assert out["ui"]["images"][0] == {"filename": "run_00001.mp4", "subfolder": "tests", "type": "output"}
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames
    back = VideoFileFrames(path)
    assert len(back) == 30 and back.fps == 25.0
    # IMAGE path too, with a second run never clobbering the first
    out2 = mux.mux(fps=25.0, filename_prefix="tests/run", images=images, audio=audio)
    assert os.path.basename(out2["result"][1]) == "run_00002.mp4"


def test_load_video_without_audio_flags_the_silence(dirs):
    mk.write_video(str(dirs / "input" / "mute.mp4"), mk.color_frames(10), 25)
    images, audio, fps, count, handle = _node("MuseTalkLoadVideo").load("mute.mp4")
    assert count == 10 and "no audio track" in audio["musetalk_missing_audio"]
    assert float(audio["waveform"].abs().max()) == 0.0


def test_load_video_streams_long_clips_instead_of_filling_ram(dirs, monkeypatch):
    from musetalk_enhanced.nodes import media_nodes
    monkeypatch.setattr(media_nodes, "AUTO_IMAGE_LIMIT_BYTES", 1000)
    mk.write_video(str(dirs / "input" / "long.mp4"), mk.color_frames(20), 25)
    images, _, _, count, handle = _node("MuseTalkLoadVideo").load("long.mp4")
    assert count == 20 and images.shape[0] == 1 and len(handle) == 20


def test_mux_requires_frames_and_fps(dirs):
    mux = _node("MuseTalkMuxVideo")
    with pytest.raises(ValueError, match="connect either"):
        mux.mux(fps=25)
    with pytest.raises(ValueError, match="fps"):
        mux.mux(fps=0, images=torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match="output folder"):
        mux.mux(fps=25, images=torch.zeros(2, 8, 8, 3), filename_prefix="../escape")
    assert os.listdir(dirs / "output") == []


def test_load_audio_node(dirs):
    mk.write_wav(str(dirs / "input" / "voice.wav"), mk.tone(300, 2.0, 22050, channels=2), 22050)
    audio, dur = _node("MuseTalkLoadAudio").load("voice.wav", start_time=0.5, duration=1.0)
    assert audio["waveform"].shape == (1, 2, 22050) and dur == pytest.approx(1.0)
    assert _node("MuseTalkLoadAudio").VALIDATE_INPUTS(audio="missing.wav").startswith("audio: file not found")
