"""The shared harness that runs the REAL ComfyUI (../shared/tools/comfy_real.sh, ../shared/tools/comfy_frontend.sh; see
../shared/tools/COMFY_REAL.md), as the tests use it: where it is, whether this machine has it, the shortened example
runs and the random test weights. Tests using it skip cleanly on a user's clone (no ../shared, no ComfyUI checkout)."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_example_media as media  # noqa: E402  (template titles = example workflow file names)

TOOLS = os.path.join(SHARED, "tools")
REAL_SH = os.path.join(TOOLS, "comfy_real.sh")
FRONTEND_SH = os.path.join(TOOLS, "comfy_frontend.sh")
COMFY_HOME = os.environ.get("COMFY_HOME", os.path.join(os.path.expanduser("~"), ".cache", "comfy_real"))
COMFY_DIR = os.environ.get("COMFY_DIR", os.path.join(COMFY_HOME, "ComfyUI"))
EXAMPLE_DIR = os.path.join(ROOT, "example_workflows")
# opt-in: every example workflow run to the end with full-size random weights (minutes each on a CPU)
REAL = os.environ.get("MUSETALK_TEST_REAL_WORKFLOWS") == "1"
VHS_DIR = os.environ.get("MUSETALK_TEST_VHS_DIR", "")  # a ComfyUI-VideoHelperSuite checkout, for its example

HAS_COMFY = os.path.isfile(REAL_SH) and os.path.isfile(os.path.join(COMFY_DIR, "main.py")) and \
    os.path.isdir(os.path.join(COMFY_HOME, "venv"))
HAS_BROWSER = bool(os.environ.get("COMFY_FRONTEND_CHROMIUM") or shutil.which("chromium")) and \
    os.path.isfile(FRONTEND_SH) and bool(
        [p for p in (os.path.join(COMFY_HOME, "venv", "lib"),) if os.path.isdir(p) and any(
            os.path.isdir(os.path.join(p, d, "site-packages", "playwright")) for d in os.listdir(p))])
needs_comfy = pytest.mark.skipif(not HAS_COMFY, reason="no ComfyUI checkout from comfy_real_setup.sh here")
needs_page = pytest.mark.skipif(not (HAS_COMFY and HAS_BROWSER),
                                reason="no ComfyUI checkout with the frontend mode (playwright + chromium) here")

# shortened runs: the full-size MuseTalk UNet costs seconds per synced frame on a 2-core CPU
REAL_SET = ("MuseTalkLoadVideo.frame_load_cap=12;MuseTalkLoadAudio.duration=0.48;"
            "MuseTalkBatchedLipSync.length_policy=follow_video;VHS_LoadVideo.frame_load_cap=12;"
            "VHS_LoadAudioUpload.duration=0.48")
# the edited clip: start just before its first cutaway so both kinds of frames are synced
REAL_SET_EXTRA = {"cutaway_dubbing": "MuseTalkLoadVideo.skip_first_frames=28",
                  "vhs_lipsync": "VHS_LoadVideo.skip_first_frames=28"}


def example(slug):
    """Path of an example workflow by its slug (make_example_media.TEMPLATES)."""
    return os.path.join(EXAMPLE_DIR, media.TEMPLATES[slug] + ".json")


def real_set(slugs):
    return ";".join([REAL_SET] + [REAL_SET_EXTRA[s] for s in slugs if s in REAL_SET_EXTRA])


def shims_overlay(dest):
    """The harness's torchvision/torchaudio stand-ins plus empty ``torchvision.io`` / ``torchvision.transforms.v2``
    modules: transformers >= 5 imports them whenever a ``torchvision`` package is importable (whisper and the
    diffusers VAE/UNet imports go through that). Files the shared shims already have are kept."""
    shutil.copytree(os.path.join(TOOLS, "comfy_real_support", "shims"), dest)
    stub = ('"""Empty stand-in (test overlay of the harness shims)."""\n\n\n'
            'def __getattr__(name):\n'
            '    if name.startswith("__"):\n'
            '        raise AttributeError(name)\n'
            '    return type(name, (), {"__init__": lambda self, *a, **k: (_ for _ in ()).throw(\n'
            '        NotImplementedError(f"torchvision {name} is not available in the harness shim"))})\n')
    for rel in ("torchvision/io.py", "torchvision/transforms/v2/__init__.py", "torchvision/transforms/v2/functional.py"):
        path = os.path.join(dest, rel)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(stub)
    return dest


def test_weights():
    """Full-size random MuseTalk weights (UNet + VAE, whisper in both layouts, BiSeNet, MTCNN), made once and cached
    in MUSETALK_TEST_WEIGHTS_DIR (default ~/.cache/musetalk_enhanced/test_weights); never the 5 GB LatentSync UNet
    (the LatentSync example then shows its fallback)."""
    models = os.environ.get("MUSETALK_TEST_WEIGHTS_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "musetalk_enhanced", "test_weights")
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "make_test_weights.py"), "--out", models,
                    "--only", "musetalk_unet,vae,whisper,bisenet,mtcnn"], check=True, capture_output=True,
                   timeout=1800)
    return models


def run(script, args, tmp_path, timeout=3600, **env_vars):
    """Run ``script`` (REAL_SH or FRONTEND_SH, in ../shared/tools/) on this pack; -> (exit status, output, run dir)."""
    run_dir = str(tmp_path / "run")
    env = dict(os.environ, COMFY_REAL_RUN_DIR=run_dir, COMFY_SHIMS=shims_overlay(str(tmp_path / "shims")),
               COMFY_REAL_PIP=os.environ.get("COMFY_REAL_PIP", "1"), COMFY_FRONTEND_INSTALL="0",
               **{k: str(v) for k, v in env_vars.items()})
    env.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.run(["bash", script, *args], capture_output=True, text=True, env=env, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr, run_dir
