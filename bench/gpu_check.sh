#!/usr/bin/env bash
# The GPU figures of the pack in one bounded run (within 5 minutes on an H100/H200), for a session lent a GPU.
#
#   bash bench/gpu_check.sh --pack-carry   # HERE, with network: wheels, MTCNN weights and the parity fixtures the GPU
#                                          # machine lacks -> .gpu_carry/
#   bash bench/gpu_check.sh                # THERE: device name, then each figure below, each step time-bounded
#   bash bench/gpu_check.sh --dry-run      # anywhere: the same steps and code paths, small sizes, on the CPU (~1 min;
#                                          # tests/test_bench.py runs it)
#
# On the device tool: run(command="bash bench/gpu_check.sh", carry=[".gpu_carry"], timeout_s=420).
#
# Steps, in this order (results in $OUT when set, else bench/results/gpu_check/; 8 files):
#   1. device_check.json  bench/device_check.py: CUDA correctness first (fp32, fp16 and bf16 against the original's
#                         outputs on the parity fixtures), frame_ops=torch equal to the OpenCV/Pillow path and its ms
#                         per face, the full-size networks at batch 8 and 16 (s per frame per stage, each stage's
#                         share, % of the matmul roofline, peak VRAM at batch 8 in fp16), libx264 against NVENC;
#                         last, with what is left of the budget, compile=cuda_graphs against the plain networks
#   2. avatars.json       bench/avatars.py, full size, fp16, 720p: speaking frames/s at batch 8, 16, 32 and the
#                         live first frame after the first 200 ms of voice
#   3. lipsync.json       bench/lipsync.py, full size, fp16, 720p: frames/s per stage and end to end (file -> mp4)
#   4. latentsync15.json, latentsync16.json   bench/latentsync.py, full-size UNet3D, fp16, a 16-frame chunk: frames/s
#                         at 20 steps with and without DeepCache (from the chunk and step times)
#   summary.txt           each figure against its target (issue "The GPU path"), one line each; gpu_check.log
#
# Every step has a time limit (the whole run GPU_CHECK_BUDGET_S, default 300 s; 900 s in a dry run); a step that fails or runs out of
# time stops the run with "GPU CHECK FAILED" and a non-zero exit, except the compile step, which runs only when time
# is left and is otherwise reported as not measured. Test weights are written when missing
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
  "$PY" - "$CARRY/fixtures" <<'EOF'   # the parity fixture's MuseTalk part, 4 frames (the carry holds 64 MiB)
import os, shutil, sys
from safetensors.torch import load_file, save_file
shared = os.environ.get("MUSETALK_SHARED_DIR") or os.path.join(os.path.dirname(os.getcwd()), "shared")
src = os.path.join(shared, "fixtures", "musetalk")
if not os.path.isdir(src):
    sys.exit(f"no parity fixtures at {src}: set MUSETALK_SHARED_DIR")
os.makedirs(sys.argv[1], exist_ok=True)
t = load_file(os.path.join(src, "parity_small.safetensors"))
keep = ("core.crops_bgr_u8", "core.out_bgr_u8", "core.eps", "core.audio_chunks", "core.latents")
core = {k: v for k, v in t.items() if k.startswith(("unet.", "vae."))}
core.update({k: t[k][:4].contiguous() for k in keep})
save_file(core, os.path.join(sys.argv[1], "parity_core.safetensors"))
shutil.copy(os.path.join(src, "parity_small_meta.json"), sys.argv[1])
EOF
  du -sh "$CARRY"
  echo "now: run(command=\"bash bench/gpu_check.sh\", carry=[\"$CARRY\"], timeout_s=420)"
}
if [ "$MODE" = pack ]; then pack_carry; exit 0; fi

RESULTS=${OUT:-$ROOT/bench/results/gpu_check}
mkdir -p "$RESULTS"
exec > >(tee -a "$RESULTS/gpu_check.log") 2>&1
BUDGET=${GPU_CHECK_BUDGET_S:-$([ "$MODE" = dry ] && echo 900 || echo 300)}   # a dry run shares a CI box
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
if [ "$MODE" = gpu ]; then
  step "test weights" 90 "$PY" tests/make_test_weights.py --out "$MUSETALK_MODELS_DIR" --only musetalk_unet,vae,whisper
fi

# ---- 3. correctness, frame ops, networks, encoders ----------------------------------------------------------------------
if [ "$MODE" = gpu ]; then
  step "device_check (precision, frame_ops, networks, encoder)" 100 "$PY" bench/device_check.py --device cuda \
    --dtype fp16 --parts precision,frame_ops,networks,encoder --json "$RESULTS/device_check.json"
else
  step "device_check (dry run)" 240 "$PY" bench/device_check.py --dry-run --parts precision,frame_ops,networks,encoder \
    --json "$RESULTS/device_check.json"
fi

# ---- 4. avatar speaking frames/s at batch 8/16/32, live first frame ---------------------------------------------------
if [ "$MODE" = gpu ]; then
  step "avatars (fp16, full size)" 70 "$PY" bench/avatars.py --device cuda --dtype fp16 --batch-sizes 8,16,32 \
    --voice-frames 128 --live-trials 3 --json "$RESULTS/avatars.json"
else
  step "avatars (dry run: small networks)" 240 "$PY" bench/avatars.py --quick --device cpu --dtype fp32 \
    --batch-sizes 2,4 --voice-frames 12 --live-trials 2 --json "$RESULTS/avatars.json"
fi

# ---- 5. lip-sync stages and end to end at 720p -------------------------------------------------------------------------
if [ "$MODE" = gpu ]; then
  step "lipsync (fp16, full size, 720p)" 70 "$PY" bench/lipsync.py --device cuda --dtype fp16 --resolution 720p \
    --batch-size 16 --frames 32 --e2e-frames 100 --e2e-cutaway 20 --audio-seconds 5 --no-compare --no-jaw \
    --json "$RESULTS/lipsync.json"
else
  step "lipsync (dry run)" 240 "$PY" bench/lipsync.py --quick --device cpu --dtype fp32 --no-compare \
    --json "$RESULTS/lipsync.json"
fi

# ---- 6. LatentSync 1.5 and 1.6: a 16-frame chunk, full-size UNet3D (random weights built in place) ----------------------
if [ "$MODE" = gpu ]; then
  for V in 1.5 1.6; do
    step "latentsync $V (fp16, full size)" 45 "$PY" bench/latentsync.py --device cuda --dtype fp16 --version "$V" \
      --frames 16 --steps 3 --vram-frames 0 --json "$RESULTS/latentsync${V/./}.json"
  done
else
  step "latentsync 1.5 (dry run)" 240 "$PY" bench/latentsync.py --quick --device cpu --dtype fp32 --vram-frames 0 \
    --json "$RESULTS/latentsync15.json"
fi

# ---- 7. compile=cuda_graphs, with what is left (never fails the check) ---------------------------------------------------
LEFT=$(( BUDGET - ($(date +%s) - START) - 10 ))
COMPILED="not measured: no time left in the budget (${LEFT}s)"
if [ "$MODE" = gpu ] && [ "$LEFT" -ge 45 ]; then
  echo "== compile (at most ${LEFT}s)"
  rc=0
  timeout --kill-after=5 "$LEFT" "$PY" bench/device_check.py --device cuda --dtype fp16 --parts compile \
    --json "$RESULTS/device_check.json" || rc=$?
  COMPILED=$([ "$rc" -eq 0 ] && echo measured || echo "not measured: exit $rc (124 = ran past ${LEFT}s)")
elif [ "$MODE" = dry ]; then
  COMPILED="not run in a dry run (tests/test_speedups.py compiles the small networks)"
fi

# ---- summary ---------------------------------------------------------------------------------------------------------------
STEP=summary
"$PY" - "$RESULTS" "$DTYPE" "$COMPILED" <<'EOF' | tee "$RESULTS/summary.txt"
import json, os, sys
out, dtype, compiled = sys.argv[1], sys.argv[2], sys.argv[3]
load = lambda name: json.load(open(os.path.join(out, name)))
def mark(ok): return "" if ok is None else (" [ok]" if ok else " [MISSED]")
dc = load("device_check.json")
m = dc["machine"]
print(f"device {m.get('gpu') or m.get('cpu')} | dtype {dtype} | torch {m.get('torch')} | CUDA {m.get('cuda')}")
parts = dc["parts"]
p = parts.get("precision", {})
for name, r in p.get("dtypes", {}).items():
    f = r["faces"]
    print(f"precision {name} vs the original's fp32 | latents {r['latents_rel']:.1e} | faces mean {f['mean']} p99 "
          f"{f['p99']} max {f['max']} grey levels{mark(r['ok'])}")
if "skipped" in p or "error" in p:
    print(f"precision | {p.get('skipped') or p.get('error')}")
fo = parts.get("frame_ops", {})
print(f"frame_ops torch vs cv2 | crops equal {fo.get('crops_equal')} | patches equal {fo.get('patches_equal')} | "
      f"{fo.get('torch_ms_per_face')} vs {fo.get('cv2_ms_per_face')} ms per face{mark(fo.get('ok'))}")
nw = parts.get("networks", {})
for b, r in nw.get("batches", {}).items():
    shares = ", ".join(f"{k} {v:.0%}" for k, v in r["share"].items())
    roof = r["networks_pct_of_roofline"]
    print(f"networks batch {b} | full path {r['frames_per_s_full_path']} frames/s | avatar path "
          f"{r['frames_per_s_avatar_path']} frames/s | networks at {roof}% of roofline (target 35%)"
          f"{mark(roof >= 35 if dtype == 'fp16' else None)} | shares: {shares}")
if "vram_peak_mb_batch8" in nw:
    print(f"VRAM at batch 8 | {nw['vram_peak_mb_batch8']} MB peak (target <= 4096){mark(nw['vram_ok'])}")
for name in ("frame_ops", "networks", "encoder", "compile"):
    if "error" in parts.get(name, {}):
        print(f"{name} | ERROR {parts[name]['error']}")
enc = parts.get("encoder", {})
for c in ("libx264", "nvenc"):
    if c in enc:
        print(f"encoder {c} | {enc[c]['codec']} {enc[c]['frames_per_s']} frames/s at {enc['resolution']} "
              f"{enc[c]['note']}")
cp = parts.get("compile")
print(f"compile {cp['mode']} | first call {cp['first_call_s']} s | {cp['speedup']}x at batch {cp['batch']} | "
      f"largest difference {cp['largest_difference']:.1e}{mark(cp['ok'])}" if cp and "mode" in cp else
      f"compile | {compiled}")
av = load("avatars.json")
for r in av["results"]:
    if r["stage"].startswith("live"):
        print(f"avatars | {r['stage']} | {r.get('seconds')} s (target 0.15 s) | {r.get('note', '')}")
    elif r["stage"].startswith("speak"):
        extra = f", {r['fps']} frames/s (target 120)" if r.get("fps") else ""
        print(f"avatars | {r['stage']} | {r.get('seconds')} s for {r.get('frames')} frames{extra} | {r.get('note', '')}")
lip = load("lipsync.json")
for r in lip["results"]:
    if str(r.get("stage", "")).startswith(("e2e", "unet", "vae_decode", "per-frame")):
        target = " (target 250)" if str(r.get("stage")).startswith("e2e") else ""
        print(f"lipsync | {r['stage']} | {r.get('fps')} frames/s{target} | VRAM {r.get('vram_peak_mb')} MB")
for v, target in (("15", (30, 60)), ("16", (7, None))):
    path = os.path.join(out, f"latentsync{v}.json")
    if not os.path.isfile(path):
        continue
    rows = {r["stage"].split(" (")[0] + (" dc" if "(DeepCache" in r["stage"] else ""): r for r in load(path)["results"]}
    frames = rows["chunk"]["frames"]
    around = rows["align"]["s_per_frame"] + rows["restore"]["s_per_frame"]    # per frame, outside the chunk
    full = rows["unet step"]["seconds"]
    plain = rows["chunk"]["seconds"] + 17 * full                              # 20 DDIM steps, as the original
    cached = rows["chunk dc"]["seconds"] + 6 * full + 11 * rows["unet step dc"]["seconds"]   # 7 full + 13 shallow
    fps, fps_dc = 1 / (around + plain / frames), 1 / (around + cached / frames)
    goal = f" (target {target[0]}{', ' + str(target[1]) + ' with DeepCache' if target[1] else ''})"
    print(f"latentsync 1.{v[1]} | {fps:.1f} frames/s at 20 steps, {fps_dc:.1f} with DeepCache{goal}"
          f"{mark(fps >= target[0] and (target[1] is None or fps_dc >= target[1]) if dtype == 'fp16' else None)} | "
          f"UNet step {full:.3f} s per {frames}-frame chunk")
EOF
echo "GPU CHECK DONE in $(( $(date +%s) - START ))s; results in $RESULTS"
