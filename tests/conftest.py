"""Test setup: import the pack as a package (the way ComfyUI does, relative imports inside) under the name
``musetalk_enhanced`` (bootstrap.py), put ``scripts/`` and ``clients/`` on ``sys.path`` (the workflow builder, the
API client; the random test-weight writers ``test_weights`` and ``make_test_weights`` sit here beside the tests), and
expose paths to ../shared fixtures (tests using them skip when it is absent)."""
import os
import runpy
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("MUSETALK_SHARED_DIR") or os.path.join(os.path.dirname(ROOT), "shared")
PACK = "musetalk_enhanced"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at test time


for folder in ("scripts", "clients"):
    if os.path.join(ROOT, folder) not in sys.path:
        sys.path.insert(0, os.path.join(ROOT, folder))
import_pack = runpy.run_path(os.path.join(ROOT, "bootstrap.py"))["import_pack"]   # the pack as ComfyUI imports it
import_pack()


def shared_path(*parts):
    """Path under ../shared, or skip the test when ../shared (or the file) is absent (a user's fresh clone)."""
    p = os.path.join(SHARED, *parts)
    if not os.path.exists(p):
        pytest.skip(f"shared fixtures not available: {p}")
    return p


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture(scope="session")
def small_models_dir(tmp_path_factory):
    """A models folder in the released layouts: small random MuseTalk UNet and VAE, full-size random whisper-tiny
    (the command line and the server read weights from such a folder)."""
    from test_lipsync import UNET_SMALL, VAE_SMALL
    from test_weights import musetalk_unet as tw_unet, vae as tw_vae, whisper as tw_whisper

    root = str(tmp_path_factory.mktemp("models"))
    tw_unet.write_test_weights(root, config=UNET_SMALL)
    tw_vae.write_test_weights(root, config=VAE_SMALL)
    tw_whisper.write_test_weights(root)
    return root
