#!/usr/bin/env bash
# The GPU figures of the pack in one bounded run (about 8 minutes on an H200), for a session lent a GPU.
#
#   bash bench/gpu_check.sh --pack-carry   # HERE, with network: wheels + MTCNN weights the GPU image lacks -> .gpu_carry/
#   bash bench/gpu_check.sh                # THERE: device name, then each figure below, each step time-bounded
#   bash bench/gpu_check.sh --dry-run      # anywhere: the same steps and code paths, small sizes, on the CPU (~3 min)
#
# On the device tool: run(command="bash bench/gpu_check.sh", carry=[".gpu_carry"], timeout_s=560).
#
# Figures (results in $OUT when set, else bench/results/gpu_check/; the log is gpu_check.log there):
#   1. avatars.json   bench/avatars.py, full-size random weights, fp16, 720p: speaking frames/s at batch 8, 16 and
#                     32 (after a warm-up each), the live first frame after the first 200 ms of voice (median of 5),
#                     the full path and the preparation for comparison
#   2. lipsync.json   bench/lipsync.py, full size, fp16, 720p: frames/s per stage and end to end (file -> mp4)
#   3. run_all_quick.{json,md}   bench/run_all.py --quick on the GPU (every benchmark's smoke run, the roofline)
#   summary.txt       the numbers that matter, one line each
#
# Every step has a time limit (and the whole run GPU_CHECK_BUDGET_S, default 480 s); a step that fails or runs out of
# time stops the run with "GPU CHECK FAILED" and a non-zero exit. Test weights are written when missing
# (tests/make_test_weights.py into $MUSETALK_MODELS_DIR, default <pack>/test_weights; ~2 GB, idempotent).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
MODE=gpu
case "${1:-}" in
  --dry-run) MODE=dry ;;
  --pack-carry) MODE=pack ;;
  "") ;;
  *) echo "usage: bash bench/gpu_check.sh [--dry-run | --pack-carry]" >&2; exit 2 ;;
esac
CARRY=.gpu_carry
CARRY_PACKAGES="av diffusers importlib_metadata"   # what the GPU image lacks, as here
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

fail() { echo "GPU CHECK FAILED: $*" >&2; exit 1; }

pack_carry() {   # here, with network: the wheels for Python 3.12 on x86-64, and MTCNN's three weight files
  mkdir -p "$CARRY/mtcnn"
  grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/$CARRY/" >> .git/info/exclude; }
  local pins
  pins=$("$PY" -c "import importlib.metadata as m, sys; print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" \
    $CARRY_PACKAGES)                               # the versions the pack is tested with here
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$CARRY" $pins
  "$PY" - "$CARRY/mtcnn" <<'EOF'
import os, runpy, shutil, sys
runpy.run_path("bootstrap.py")["import_pack"]()
from musetalk_enhanced.pipeline.faces.detectors import mtcnn_weight_paths
for name, path in mtcnn_weight_paths(auto_download=True).items():
    shutil.copy(path, os.path.join(sys.argv[1], f"{name}.pt"))
EOF
  du -sh "$CARRY"
  echo "now: run(command=\"bash bench/gpu_check.sh\", carry=[\"$CARRY\"], timeout_s=560)"
}
if [ "$MODE" = pack ]; then pack_carry; exit 0; fi

RESULTS=${OUT:-$ROOT/bench/results/gpu_check}
mkdir -p "$RESULTS"
exec > >(tee -a "$RESULTS/gpu_check.log") 2>&1
BUDGET=${GPU_CHECK_BUDGET_S:-480}
START=$(date +%s)
STEP=start
trap 'echo "GPU CHECK FAILED at step \"$STEP\" (see the output above)" >&2' ERR

step() {   # step NAME LIMIT_S COMMAND...: run COMMAND within min(LIMIT_S, what is left of the budget)
  STEP=$1; local limit=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) ))
  [ "$left" -lt "$limit" ] && limit=$left
  [ "$limit" -ge 15 ] || fail "no time left for step \"$STEP\" (budget ${BUDGET}s)"
  echo "== $STEP (at most ${limit}s; $(( $(date +%s) - START ))s elapsed)"
  local rc=0
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  [ "$rc" -eq 124 ] && fail "step \"$STEP\" ran past ${limit}s"
  [ "$rc" -eq 0 ] || fail "step \"$STEP\" exited with $rc"
}

# ---- 0. what the GPU image lacks, carried as wheels (bench/gpu_check.sh --pack-carry) ----------------------------------
if [ -d "$CARRY" ] && ls "$CARRY"/*.whl >/dev/null 2>&1; then
  STEP="install carried wheels"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site \
    "$CARRY"/*.whl
  export PYTHONPATH=/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}
fi
export MUSETALK_MODELS_DIR=${MUSETALK_MODELS_DIR:-$ROOT/test_weights}
if [ -d "$CARRY/mtcnn" ]; then mkdir -p "$MUSETALK_MODELS_DIR/musetalk/mtcnn"; cp -n "$CARRY"/mtcnn/*.pt "$MUSETALK_MODELS_DIR/musetalk/mtcnn/"; fi
STEP="check the Python packages and MTCNN weights"
"$PY" - <<'EOF' || fail "missing packages or weights (above). Here, with network: bash bench/gpu_check.sh --pack-carry; then carry .gpu_carry"
import importlib, runpy, sys
missing = []
for name in ("torch", "numpy", "cv2", "av", "PIL", "safetensors", "diffusers", "transformers", "skimage"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
if not missing:
    runpy.run_path("bootstrap.py")["import_pack"]()
    from musetalk_enhanced.pipeline.faces.detectors import detector_requirements
    if detector_requirements("mtcnn"):
        missing.append("MTCNN weights (facenet-pytorch, or musetalk/mtcnn/{pnet,rnet,onet}.pt in the model folder)")
print("missing: " + "; ".join(missing) if missing else "packages and MTCNN weights: ok")
sys.exit(1 if missing else 0)
EOF

# ---- 1. the device ------------------------------------------------------------------------------------------------------
STEP=device
if [ "$MODE" = gpu ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  DEVICE=cuda DTYPE=fp16
else
  DEVICE=cpu DTYPE=fp32
fi
"$PY" -c "
import torch, sys
cuda = torch.cuda.is_available()
print('device:', torch.cuda.get_device_name(0) if cuda else 'cpu', '| torch', torch.__version__, '| CUDA', torch.version.cuda)
sys.exit(0 if cuda or '$MODE' == 'dry' else 3)
" || fail "no CUDA device visible to torch; on a CPU use --dry-run"

# ---- 2. full-size random weights (idempotent) ------------------------------------------------------------------------
step "test weights" 150 "$PY" tests/make_test_weights.py --out "$MUSETALK_MODELS_DIR" \
  --only musetalk_unet,vae,whisper,bisenet

# ---- 3. avatar speaking frames/s at batch 8/16/32, live first frame ---------------------------------------------------
if [ "$MODE" = gpu ]; then
  step "avatars (fp16, full size)" 200 "$PY" bench/avatars.py --device cuda --dtype fp16 --batch-sizes 8,16,32 \
    --voice-frames 256 --live-trials 5 --json "$RESULTS/avatars.json"
else
  step "avatars (dry run: small networks)" 150 "$PY" bench/avatars.py --quick --device cpu --dtype fp32 \
    --batch-sizes 2,4 --voice-frames 12 --live-trials 2 --json "$RESULTS/avatars.json"
fi

# ---- 4. lip-sync stages and end to end at 720p -------------------------------------------------------------------------
if [ "$MODE" = gpu ]; then
  step "lipsync (fp16, full size, 720p)" 120 "$PY" bench/lipsync.py --device cuda --dtype fp16 --resolution 720p \
    --batch-size 16 --frames 64 --e2e-frames 100 --e2e-cutaway 20 --audio-seconds 10 --no-compare \
    --json "$RESULTS/lipsync.json"
else
  step "lipsync (dry run)" 120 "$PY" bench/lipsync.py --quick --device cpu --dtype fp32 --no-compare \
    --json "$RESULTS/lipsync.json"
fi

# ---- 5. every benchmark's smoke run on the device ------------------------------------------------------------------------
SCRATCH=$(mktemp -d)
ONLY=$([ "$MODE" = gpu ] && echo "media,faces,geometry,audio,lipsync,latentsync,latentsync-1.6,long,avatars" || echo audio)
step "run_all --quick" 150 "$PY" bench/run_all.py --quick --device "$DEVICE" --only "$ONLY" --out "$SCRATCH" \
  --markdown "$RESULTS/run_all_quick.md"
cp "$SCRATCH"/quick-*.json "$RESULTS/run_all_quick.json"

# ---- summary ---------------------------------------------------------------------------------------------------------------
STEP=summary
"$PY" - "$RESULTS" "$DTYPE" <<'EOF' | tee "$RESULTS/summary.txt"
import json, os, sys
out, dtype = sys.argv[1], sys.argv[2]
av = json.load(open(os.path.join(out, "avatars.json")))
print(f"device {av['machine'].get('gpu') or av['machine'].get('cpu')} dtype {dtype} weights {av.get('weights')}")
for r in av["results"]:
    if r["stage"].startswith(("speak", "live", "full path")):
        extra = f", {r['fps']} frames/s" if r.get("fps") else ""
        print(f"avatars | {r['stage']} | {r.get('seconds')} s for {r.get('frames')} frames{extra} | {r.get('note', '')}")
lip = json.load(open(os.path.join(out, "lipsync.json")))
for r in lip["results"]:
    if str(r.get("stage", "")).startswith(("e2e", "unet", "vae_decode", "per-frame")):
        print(f"lipsync | {r['stage']} | {r.get('fps')} frames/s | VRAM {r.get('vram_peak_mb')} MB")
runs = json.load(open(os.path.join(out, "run_all_quick.json")))
bad = [b["benchmark"] for b in runs["benchmarks"] if b.get("error")]
print(f"run_all --quick | {len(runs['benchmarks'])} benchmarks | failed: {', '.join(bad) or 'none'}")
EOF
echo "GPU CHECK DONE in $(( $(date +%s) - START ))s; results in $RESULTS"
