"""The GPU path's checks and figures, part by part (bench/gpu_check.sh runs each part as a time-bounded step):

    python bench/device_check.py --parts precision,frame_ops,networks,encoder --json OUT.json [--dry-run]
    python bench/device_check.py --parts compile --json OUT.json [--dry-run]

Each part adds its section to ``OUT.json`` (one file for all parts, read by gpu_check.sh's summary); a part that fails
records its error there, the others still run, and the script exits 1.

* ``precision`` — CUDA correctness first: the MuseTalk engine in fp32, fp16 and bf16 on the device against the
  original's fp32 outputs of the parity fixtures (MuseTalk scripts/inference.py on small random weights:
  ``core.latents`` and ``core.out_bgr_u8``): the latents' largest difference relative to their scale, and the faces'
  mean, 99th percentile and largest grey-level difference, each with its bound (fp32 and fp16 as in the original's
  own GPU modes; bf16 the bound the CPU tests hold, tests/test_musetalk_core.py). The fixtures come from
  ``--fixtures`` (a folder with ``parity_small.safetensors`` and ``parity_small_meta.json``, or the reduced
  ``parity_core.safetensors`` that ``gpu_check.sh --pack-carry`` writes).
* ``frame_ops`` — ``frame_ops=torch`` (pipeline/backends/frame_ops.py) on the device against the OpenCV/Pillow path:
  every crop and every pasted patch equal, and the milliseconds per face of each (the torch side includes sending
  the frame up and the patch back).
* ``networks`` — the full-size networks (random weights in the released layouts; ``--dry-run``: the tests' small
  configs) at batch 8 and 16: seconds per output frame of the VAE encode (once per source frame), the UNet and the
  VAE decode, the paste-back on the device and the H.264 encode; each stage's share of a frame; GFLOP per frame
  (FlopCounterMode) against a measured matmul roofline in the same dtype (% of roofline); and the peak device memory
  of a batch of 8 (the target: at most 4 GB in fp16).
* ``encoder`` — H.264 frames/s at 720p with libx264 and with NVENC (or why NVENC did not open).
* ``compile`` — ``compile=cuda_graphs`` (``compile`` on a CPU; pipeline/backends/musetalk_engine.py
  ``FixedShapeCall``): the first call (the compile), then seconds per frame of the UNet and decode against the
  plain networks at batch 16, and the largest difference between them.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402

PARTS = ("precision", "frame_ops", "networks", "encoder", "compile")
# (latents: largest difference / their largest magnitude, faces: mean, 99th percentile grey levels)
BOUNDS = {"fp32": (1e-3, 0.5, 2), "fp16": (1e-2, 1.0, 4), "bf16": (5e-2, 3.0, 16)}
VRAM_TARGET_MB = 4096


def _fixtures(folder: str):
    """``(tensors, unet config, vae config)`` from the full parity fixture or the reduced one."""
    from safetensors.torch import load_file

    for name in ("parity_small.safetensors", "parity_core.safetensors"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(os.path.join(folder, "parity_small_meta.json")) as fh:
                configs = json.load(fh)["configs"]
            return load_file(path), configs["unet_small"], configs["vae_small"]
    raise FileNotFoundError(f"no parity fixtures in {folder} (parity_small.safetensors or parity_core.safetensors)")


def _grey_levels(a, b) -> dict:
    import numpy as np

    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"mean": round(float(d.mean()), 3), "p99": float(np.percentile(d, 99)), "max": int(d.max())}


# ---- the parts -------------------------------------------------------------------------------------------------------
def precision(args, device) -> dict:
    import numpy as np
    import torch

    from musetalk_enhanced.models import musetalk_unet, vae
    from musetalk_enhanced.pipeline.backends.musetalk_engine import MuseTalkEngine
    from musetalk_enhanced.pipeline.runtime import Runtime

    t, unet_cfg, vae_cfg = _fixtures(args.fixtures)
    crops = np.ascontiguousarray(t["core.crops_bgr_u8"].numpy()[:4, ..., ::-1])
    want = np.ascontiguousarray(t["core.out_bgr_u8"].numpy()[:4, ..., ::-1])
    eps, chunks, latents = t["core.eps"][:4], t["core.audio_chunks"][:4], t["core.latents"][:4]
    dtypes = ["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]   # fp16 on a CPU: ~45x slower
    rows = {}
    for name in dtypes:
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
        unet = musetalk_unet.load_unet({k[5:]: v.float() for k, v in t.items() if k.startswith("unet.")}, unet_cfg)
        model_vae = vae.load_vae({k[4:]: v.float() for k, v in t.items() if k.startswith("vae.")}, vae_cfg)
        engine = MuseTalkEngine(unet, model_vae, None, Runtime(device, dtype, show_progress=False))
        got = engine.encode_reference(crops, eps=eps)
        lat_rel = float((got - latents).abs().max()) / float(latents.abs().max())
        faces = _grey_levels(engine.generate(got, chunks), want)
        bound = BOUNDS[name]
        rows[name] = {"latents_rel": round(lat_rel, 6), "faces": faces, "bound": bound,
                      "ok": lat_rel <= bound[0] and faces["mean"] <= bound[1] and faces["p99"] <= bound[2]}
        print(f"precision {name}: latents {lat_rel:.2e} (<= {bound[0]}), faces {faces} -> "
              f"{'ok' if rows[name]['ok'] else 'OUT OF BOUNDS'}", flush=True)
    return {"dtypes": rows, "ok": all(r["ok"] for r in rows.values()),
            "tf32": bool(device.type == "cuda" and torch.backends.cudnn.allow_tf32)}


def _test_frames(n: int, width: int, height: int):
    """Smooth random frames (H.264-like content) and face boxes of many sizes, two of them past the frame's edge."""
    import numpy as np

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (n, height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    frames = np.ascontiguousarray(small.repeat(16, 1).repeat(16, 2)[:, :height, :width])
    boxes = []
    for i in range(n):
        side = int(rng.integers(height // 6, height // 2))
        x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
        boxes.append((x, y, x + side, y + int(side * 1.1)))
    boxes[0] = (-side // 4, 10, side - side // 4, 10 + side)
    boxes[-1] = (width - side // 2, height - side // 2, width - side // 2 + side, height - side // 2 + side)
    return frames, boxes


def frame_ops(args, device) -> dict:
    import numpy as np
    import torch

    from musetalk_enhanced.pipeline.backends import blending, frame_ops as fo
    from musetalk_enhanced.pipeline.backends import musetalk_engine as me

    width, height = (640, 360) if args.dry_run else (1280, 720)
    frames, boxes = _test_frames(4 if args.dry_run else 16, width, height)
    rng = np.random.default_rng(1)
    faces = rng.integers(0, 256, (len(boxes), 256, 256, 3), dtype=np.uint8)
    masks = [blending.prepare_blend_mask(f, b, "feather") for f, b in zip(frames, boxes)]

    def cv2_path():
        return [(me.crop_face(f, b), blending.blend_face(f, face, b, m))
                for f, b, face, m in zip(frames, boxes, faces, masks)]

    up = fo.DeviceFrames(device)
    faces_t = torch.from_numpy(faces).to(device)

    def torch_path():
        on = up.upload(dict(enumerate(frames)), range(len(frames)))
        crops = fo.crop_faces([on[i] for i in range(len(frames))], boxes).cpu().numpy()
        return [(c, fo.blend_face(on[i], faces_t[i], b, m.crop_box, m.mask))
                for i, (c, b, m) in enumerate(zip(crops, boxes, masks))]

    want, got = cv2_path(), torch_path()
    crops_equal = all(np.array_equal(a[0], b[0]) for a, b in zip(want, got))
    patches_equal = all(np.array_equal(a[1].pixels, b[1].pixels) and (a[1].y0, a[1].x0) == (b[1].y0, b[1].x0)
                        for a, b in zip(want, got))
    worst = max(int(np.abs(a[1].pixels.astype(np.int16) - b[1].pixels.astype(np.int16)).max())
                for a, b in zip(want, got))
    cv2_s, _ = common.timed(cv2_path, repeats=3)
    torch_s, _ = common.timed(torch_path, device, warmup=torch_path, repeats=3)
    out = {"resolution": f"{width}x{height}", "faces": len(boxes), "crops_equal": crops_equal,
           "patches_equal": patches_equal, "largest_difference": worst,
           "cv2_ms_per_face": round(1000 * cv2_s / len(boxes), 3),
           "torch_ms_per_face": round(1000 * torch_s / len(boxes), 3), "ok": crops_equal and patches_equal}
    print(f"frame_ops: {out}", flush=True)
    return out


def networks(args, device, dtype) -> dict:
    import numpy as np
    import torch

    import lipsync as lb
    from musetalk_enhanced.pipeline.backends import frame_ops as fo
    from musetalk_enhanced.pipeline.media.writer import VideoWriter
    from musetalk_enhanced.pipeline.runtime import Runtime
    from run_all import matmul_roofline

    runtime = Runtime(device, dtype, show_progress=False, frame_ops="torch")
    if args.dry_run:
        models = lb.build_small_models(runtime, with_parser=False)
    else:
        lb.ensure_test_weights(args.weights_dir, with_parser=False)
        models = lb.load_full_models(runtime, with_parser=False)
    engine = models.engine
    gflop = lb.count_gflop(engine)
    short = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    roof = matmul_roofline(str(device), short, sizes=(1024,) if args.dry_run else (4096, 8192),
                           seconds=0.2 if args.dry_run else 0.5, rounds=2)
    width, height = (640, 360) if args.dry_run else (1280, 720)
    out = {"weights": models.weights, "dtype": common.dtype_name(dtype), "gflop_per_frame": gflop,
           "roofline_gflops": roof["gflops"], "batches": {}}
    for batch in ((2,) if args.dry_run else (8, 16)):
        frames, boxes = _test_frames(batch, width, height)
        g = torch.Generator().manual_seed(0)
        windows = torch.randn(batch, 50, 384, generator=g)
        on = fo.DeviceFrames(device).upload(dict(enumerate(frames)), range(batch))
        crops = fo.crop_faces([on[i] for i in range(batch)], boxes)
        latents = engine.encode_reference(crops)
        pred = engine.denoise(latents, windows)
        decoded = engine.decode(pred)
        mask = [np.full((b[3] - b[1] + 64, b[2] - b[0] + 64), 200, dtype=np.uint8) for b in boxes]

        def paste():
            faces = fo.postprocess_decoded(decoded)
            return [fo.blend_face(on[i], faces[i], b, (b[0] - 32, b[1] - 32, b[2] + 32, b[3] + 32), mask[i])
                    for i, b in enumerate(boxes)]

        stages = {}
        for name, fn in (("vae_encode", lambda: engine.encode_reference(crops)),
                         ("unet", lambda: engine.denoise(latents, windows)),
                         ("vae_decode", lambda: engine.decode(pred)),
                         ("paste_on_device", paste)):
            sec, _ = common.timed(fn, device, warmup=fn, repeats=3)
            stages[name] = sec / batch
        path = os.path.join(args.scratch, f"encode_{batch}.mp4")
        with VideoWriter(path, 25.0, width, height) as w:
            t0 = time.perf_counter()
            w.write(frames)
        stages["h264_encode"] = (time.perf_counter() - t0) / batch
        os.remove(path)
        torch_total = sum(stages.values())
        nets = stages["vae_encode"] + stages["unet"] + stages["vae_decode"]
        net_gflop = gflop["vae_encode"] + gflop["unet"] + gflop["vae_decode"]
        row = {"s_per_frame": {k: round(v, 5) for k, v in stages.items()},
               "share": {k: round(v / torch_total, 3) for k, v in stages.items()},
               "frames_per_s_full_path": round(1 / torch_total, 1),
               "frames_per_s_avatar_path": round(1 / (stages["unet"] + stages["vae_decode"]
                                                      + stages["paste_on_device"] + stages["h264_encode"]), 1),
               "networks_pct_of_roofline": round(100 * net_gflop / nets / roof["gflops"], 1)}
        out["batches"][str(batch)] = row
        print(f"networks batch {batch}: {row}", flush=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        frames, boxes = _test_frames(8, width, height)
        on = fo.DeviceFrames(device).upload(dict(enumerate(frames)), range(8))
        lat = engine.encode_reference(fo.crop_faces([on[i] for i in range(8)], boxes))
        engine.decode(engine.denoise(lat, torch.zeros(8, 50, 384)))
        torch.cuda.synchronize(device)
        out["vram_peak_mb_batch8"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
        out["vram_weights_mb"] = round(base / 2 ** 20, 1)
        out["vram_ok"] = out["vram_peak_mb_batch8"] <= VRAM_TARGET_MB
        print(f"VRAM at batch 8: {out['vram_peak_mb_batch8']} MB (weights {out['vram_weights_mb']} MB)", flush=True)
    return out


def encoder(args, device) -> dict:
    from musetalk_enhanced.pipeline.media.writer import VideoWriter

    width, height = (640, 360) if args.dry_run else (1280, 720)
    frames, _ = _test_frames(24 if args.dry_run else 120, width, height)
    out = {"resolution": f"{width}x{height}", "frames": len(frames)}
    for choice in ("libx264", "nvenc"):
        path = os.path.join(args.scratch, f"enc_{choice}.mp4")
        t0 = time.perf_counter()
        with VideoWriter(path, 25.0, width, height, encoder=choice) as w:
            w.write(frames)
        sec = time.perf_counter() - t0
        out[choice] = {"codec": w.encoder, "frames_per_s": round(len(frames) / sec, 1), "note": w.encoder_note,
                       "bytes": os.path.getsize(path)}
        os.remove(path)
    print(f"encoder: {out}", flush=True)
    return out


def compile_part(args, device, dtype) -> dict:
    import torch

    import lipsync as lb
    from musetalk_enhanced.pipeline.runtime import Runtime

    mode = "cuda_graphs" if device.type == "cuda" else "compile"
    runtime = Runtime(device, dtype, show_progress=False)
    if args.dry_run:
        from musetalk_enhanced.models.musetalk_unet import build_unet
        from musetalk_enhanced.models.vae import build_vae
        from musetalk_enhanced.pipeline.backends.musetalk_engine import MuseTalkEngine

        two_blocks = dict(lb.UNET_SMALL, block_out_channels=[16, 32],
                          down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                          up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"])   # tests/test_speedups.py's
        torch.manual_seed(0)
        engine = MuseTalkEngine(build_unet(two_blocks), build_vae(lb.VAE_SMALL), None, runtime, posterior="mode")
    else:
        lb.ensure_test_weights(args.weights_dir, with_parser=False)
        engine = lb.load_full_models(runtime, with_parser=False).engine
    batch = 2 if args.dry_run else 16
    g = torch.Generator().manual_seed(0)
    latents, windows = torch.randn(batch, 8, 32, 32, generator=g), torch.randn(batch, 50, 384, generator=g)
    step = lambda: engine.decode(engine.denoise(latents, windows))   # noqa: E731
    plain_s, plain = common.timed(step, device, warmup=step, repeats=3)
    runtime.compile = mode
    t0 = time.perf_counter()
    step()
    common.sync(device)
    first = time.perf_counter() - t0
    fast_s, fast = common.timed(step, device, warmup=step, repeats=3)
    diff = float((fast.float() - plain.float()).abs().max())
    calls = {f"{k[0]}": {"batch": v.batch, "failed": v.failed} for k, v in engine._compiled.items()}
    out = {"mode": mode, "batch": batch, "first_call_s": round(first, 1),
           "plain_s_per_frame": round(plain_s / batch, 5), "compiled_s_per_frame": round(fast_s / batch, 5),
           "speedup": round(plain_s / fast_s, 2), "largest_difference": diff, "calls": calls,
           "ok": not any(c["failed"] for c in calls.values()) and diff <= 2e-2 * max(1.0, float(plain.abs().max()))}
    print(f"compile: {out}", flush=True)
    return out


# ---- the script ------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = common.bench_parser(__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="precision,frame_ops,networks,encoder", help=f"any of {', '.join(PARTS)}")
    ap.add_argument("--dry-run", action="store_true", help="small networks and frames, on the CPU (about a minute)")
    ap.add_argument("--fixtures", default=os.environ.get("MUSETALK_FIXTURES", ""),
                    help="the parity fixtures' folder (default: ../shared/fixtures/musetalk, else .gpu_carry/fixtures)")
    ap.add_argument("--weights-dir", default=os.environ.get("MUSETALK_MODELS_DIR", os.path.join(common.ROOT,
                                                                                               "test_weights")))
    args = ap.parse_args(argv)
    if not args.fixtures:
        shared = os.environ.get("MUSETALK_SHARED_DIR") or os.path.join(os.path.dirname(common.ROOT), "shared")
        args.fixtures = next((p for p in (os.path.join(shared, "fixtures", "musetalk"),
                                          os.path.join(common.ROOT, ".gpu_carry", "fixtures")) if os.path.isdir(p)),
                             "")
    common.setup_torch(args.threads)
    common.import_pack()
    device, dtype = common.pick_device_dtype("cpu" if args.dry_run else args.device,
                                             "fp32" if args.dry_run else args.dtype)
    import tempfile

    args.scratch = tempfile.mkdtemp(prefix="device_check_")
    result = json.load(open(args.json)) if args.json and os.path.isfile(args.json) else \
        {"machine": common.machine_info(device), "dry_run": args.dry_run, "parts": {}}
    failed = []
    for part in [p.strip() for p in args.parts.split(",") if p.strip()]:
        if part not in PARTS:
            ap.error(f"--parts: unknown part {part!r}; use {', '.join(PARTS)}")
        t0 = time.perf_counter()
        try:
            if part == "precision" and not args.fixtures:
                section = {"skipped": "no parity fixtures (give --fixtures, or carry them: gpu_check.sh --pack-carry)"}
            elif part in ("networks", "compile"):
                section = (networks if part == "networks" else compile_part)(args, device, dtype)
            else:
                section = {"precision": precision, "frame_ops": frame_ops, "encoder": encoder}[part](args, device)
        except Exception as exc:  # noqa: BLE001 - recorded; the other parts still run
            import traceback

            traceback.print_exc()
            section = {"error": f"{type(exc).__name__}: {exc}"}
        section["seconds"] = round(time.perf_counter() - t0, 1)
        if "error" in section or section.get("ok") is False:
            failed.append(part)
        result["parts"][part] = section
        if args.json:
            common.write_json(args.json, result)
    print(f"device_check: {', '.join(failed) + ' FAILED' if failed else 'all parts ok'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
