"""Run workflows inside the REAL ComfyUI server (../shared/tools/comfy_real.sh) when a ComfyUI checkout built by
comfy_real_setup.sh is on this machine; skipped otherwise (a user's clone has neither)."""
import glob
import os
import subprocess

import pytest

import mediakit as mk
from conftest import ROOT, SHARED

HARNESS = os.path.join(SHARED, "tools", "comfy_real.sh")
COMFY_HOME = os.environ.get("COMFY_HOME", os.path.join(os.path.expanduser("~"), ".cache", "comfy_real"))
COMFY_DIR = os.environ.get("COMFY_DIR", os.path.join(COMFY_HOME, "ComfyUI"))

needs_comfy = pytest.mark.skipif(not (os.path.isfile(HARNESS) and os.path.isfile(os.path.join(COMFY_DIR, "main.py"))
                                      and os.path.isdir(os.path.join(COMFY_HOME, "venv"))),
                                 reason="no ComfyUI checkout from comfy_real_setup.sh on this machine")


def run_harness(workflows, tmp_path, extra_env=None, inputs=()):
    env = dict(os.environ, COMFY_REAL_INPUTS=" ".join(inputs), COMFY_REAL_RUN_DIR=str(tmp_path / "run"),
               COMFY_REAL_PIP=os.environ.get("COMFY_REAL_PIP", "1"), **(extra_env or {}))
    env.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.run(["bash", HARNESS, ROOT, *workflows], capture_output=True, text=True, env=env,
                          timeout=1800)
    return proc.returncode, proc.stdout + proc.stderr


@needs_comfy
def test_smoke_workflows_run_in_real_comfyui(tmp_path):
    clip = str(tmp_path / "smoke_clip.mp4")
    mk.write_video(clip, mk.animate(mk.photo("astronaut", (160, 120)), 50), 25, crf=18,
                   audio=mk.tone(440, 2.0, 44100, 2), audio_rate=44100)
    workflows = sorted(glob.glob(os.path.join(ROOT, "tests", "workflows", "smoke_*.json")))
    rc, out = run_harness(workflows, tmp_path, inputs=[clip])
    assert rc == 0, out[-6000:]
    assert f"{len(workflows)} passed, 0 failed" in out
    outputs = glob.glob(str(tmp_path / "run" / "output" / "smoke" / "*.mp4"))
    assert len(outputs) >= len(workflows)
    from musetalk_enhanced.pipeline.video import probe_video
    for p in outputs:
        info = probe_video(p)
        assert info.frame_count >= 40 and info.has_audio
