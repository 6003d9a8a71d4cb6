"""LatentSync benchmark: seconds per frame per stage (align, VAE encode, UNet per DDIM step, VAE decode, restore) with
and without DeepCache, on the CPU or a GPU.

Full mode builds the full-size UNet3D (1.27 B parameters; random weights — speed does not depend on the values) at the
resolution of ``--version`` (1.5: 256 px, 1.6: 512 px) and the sd-vae-ft-mse VAE; ``--quick`` uses a tiny UNet/VAE at
64 px so it finishes in seconds. Each stage is timed on one chunk of ``--frames`` frames (the original uses 16) with
classifier-free guidance (batch 2) as the original; per-frame = chunk time / frames. The UNet is timed per denoising
step; ``steps x unet_step`` is what a chunk costs, DeepCache runs 1 full step in 3 and two shallow ones.

VRAM estimate (``--vram-frames``, default 16 = the original's chunk; 0 skips it): one chunk of that many frames at one
DDIM step with classifier-free guidance (UNet batch 2), VAE in batches of 8, traced op by op
(``common.LiveTensorPeak``): peak live activations in the engine's dtype scaled to fp16's 2 bytes, plus the UNet3D,
VAE and whisper-tiny weights in fp16 — the memory a GPU run in fp16 needs, without cuDNN workspaces and allocator
slack. Targets (issue "LatentSync"): 8 GB for 1.5 (256 px), 12 GB for 1.6 (512 px). ``--no-timing`` runs only this.
"""
from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402


VRAM_TARGET_MB = {"1.5": 8192, "1.6": 12288}
WHISPER_TINY_PARAMS = 39_000_000  # whisper-tiny, ~75 MB in fp16


def vram_estimate(eng, faces, n, args, torch, np) -> dict:
    """One chunk of ``n`` frames at 1 DDIM step with CFG, traced: fp16 weights + peak live activations (fp16 bytes)."""
    eng.deepcache = False
    eng.steps = 1
    eng.scheduler.set_timesteps(1)
    reps = -(-n // len(faces))
    chunk = np.concatenate([faces] * reps)[:n]
    audio = torch.randn(n, 50, 384)
    params, weights_mb, scale = common.fp16_footprint(eng.unet, eng.vae, dtype=eng.unet_dtype,
                                                      extra_params=WHISPER_TINY_PARAMS)
    t0 = time.perf_counter()
    with torch.inference_mode(), common.LiveTensorPeak(exclude=params) as live:
        eng.sync_chunk(chunk, audio, frame_start=0)
    act_mb = live.peak_bytes * scale / common.MB
    est = weights_mb + act_mb
    target = VRAM_TARGET_MB.get(args.version) if not args.quick else None
    return {"stage": f"VRAM estimate (fp16, chunk {n}, CFG)", "frames": n,
            "seconds": round(time.perf_counter() - t0, 1),
            "weights_mb": round(weights_mb, 1), "activations_mb": round(act_mb, 1), "vram_estimate_mb": round(est, 1),
            "target_mb": target, "met": (est <= target) if target else None,
            "measured_dtype": common.dtype_name(eng.unet_dtype),
            "note": f"estimate {est / 1024:.2f} GB = fp16 weights (UNet3D, VAE, whisper) + peak live activations"}


def main(argv=None) -> int:
    ap = common.bench_parser(__doc__.split("\n\n")[0])
    ap.add_argument("--version", default="1.5", choices=["1.5", "1.6"])
    ap.add_argument("--frames", type=int, default=0, help="frames per chunk (default 4 on CPU, 16 on GPU; quick 4)")
    ap.add_argument("--steps", type=int, default=3, help="DDIM steps timed (default 3: one full + two cached)")
    ap.add_argument("--guidance", type=float, default=1.5)
    ap.add_argument("--vram-frames", type=int, default=-1, help="frames of the VRAM-estimate chunk (default 16; "
                                                                "quick 4; 0 skips it)")
    ap.add_argument("--no-timing", action="store_true", help="only the VRAM estimate")
    args = ap.parse_args(argv)
    torch = common.setup_torch(args.threads)
    common.import_pack()
    import numpy as np

    from musetalk_enhanced.models import latentsync_unet3d as U
    from musetalk_enhanced.models.vae import build_vae
    from musetalk_enhanced.pipeline.backends.latentsync_align import FaceAligner
    from musetalk_enhanced.pipeline.backends.latentsync_engine import LatentSyncEngine
    from musetalk_enhanced.pipeline.runtime import Runtime

    device, dtype = common.pick_device_dtype(args.device, args.dtype)
    machine = common.machine_info(device)
    res = 64 if args.quick else U.RESOLUTIONS[args.version]
    frames = args.frames or (4 if (args.quick or device.type == "cpu") else 16)
    print(f"# latentsync benchmark ({'quick' if args.quick else 'full'}, {res} px, {frames} frames/chunk) on "
          f"{common.describe_machine(machine)}", flush=True)
    torch.manual_seed(0)
    if args.quick:
        unet = U.UNet3DConditionModel({"block_out_channels": [32, 32, 32, 32]})
        vae = build_vae({"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1,
                         "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
                         "latent_channels": 4, "norm_num_groups": 32})
    else:
        unet = U.build_unet(device="meta")
        unet = unet.to_empty(device="cpu")
        for p in unet.parameters():
            torch.nn.init.normal_(p, 0.0, 0.02)
        vae = build_vae()
    unet.eval()
    vae.eval()
    rt = Runtime(device=device, dtype=dtype, show_progress=False)
    mask = np.ones((3, res, res))
    mask[:, int(res * 0.37):int(res * 0.95), int(res * 0.04):int(res * 0.96)] = 0.0
    results = []

    def emit(row):
        results.append(row)
        print({k: v for k, v in row.items()}, flush=True)

    # alignment + restore on 1080p frames (independent of the networks)
    rng = np.random.default_rng(0)
    frame = (rng.random((1080, 1920, 3)) * 255).astype(np.uint8)
    pts = np.array([[860.0, 420.0], [1060.0, 420.0], [960.0, 560.0]])
    aligner = FaceAligner(res)
    with common.Stopwatch() as sw:
        aligned = [aligner.align(frame, pts + i) for i in range(frames)]
    emit({"stage": "align (3-point warp + Lanczos)", "frames": frames, "seconds": round(sw.seconds, 4),
          "s_per_frame": round(sw.seconds / frames, 4), "resolution": "1080p"})
    faces = np.stack([a.face for a in aligned])
    audio = torch.randn(frames, 50, 384)
    with common.PeakMemory(device) as mem_load:
        eng = LatentSyncEngine(unet, vae, rt, resolution=res, steps=args.steps, guidance=args.guidance, mask=mask)
        eng.unet = rt.prepare_model(eng.unet)
        eng.vae = rt.prepare_model(eng.vae)
    out = None
    for deepcache in ((False, True) if not args.no_timing else ()):
        eng.deepcache = deepcache
        eng.sync_chunk(faces[:1], audio[:1], frame_start=0) if not args.quick else None  # warm-up
        trace = {}
        t_steps = []
        orig_step = eng.scheduler.step

        def step(*a, **kw):
            common.sync(device)
            t_steps.append(time.perf_counter())
            return orig_step(*a, **kw)

        eng.scheduler.step = step
        with common.PeakMemory(device) as mem, common.Stopwatch(device) as sw:
            out = eng.sync_chunk(faces, audio, frame_start=0, output="float", trace=trace)
        eng.scheduler.step = orig_step
        label = "DeepCache" if deepcache else "no DeepCache"
        emit({"stage": f"chunk ({label})", "frames": frames, "seconds": round(sw.seconds, 3),
              "s_per_frame": round(sw.seconds / frames, 3), "steps": args.steps, "rss_peak_mb": round(mem.peak_mb, 1),
              "vram_peak_mb": mem.vram_peak_mb, "note": f"{args.steps} steps, guidance {args.guidance}"})
        if len(t_steps) >= 2:
            d = np.diff(t_steps)  # between the ends of consecutive steps: one UNet step each
            emit({"stage": f"unet step ({label}, mean of steps 2..)", "frames": frames,
                  "seconds": round(float(d.mean()), 3), "s_per_frame": round(float(d.mean()) / frames, 4)})
    if out is not None:
        with common.Stopwatch(device) as sw:
            for i in range(frames):
                eng.restore(frame, out[i], aligned[i].affine, better_paste=True)
        emit({"stage": "restore (better paste)", "frames": frames, "seconds": round(sw.seconds, 4),
              "s_per_frame": round(sw.seconds / frames, 4), "resolution": "1080p"})
    vram_frames = args.vram_frames if args.vram_frames >= 0 else (4 if args.quick else 16)
    if vram_frames > 0:
        emit(vram_estimate(eng, faces, vram_frames, args, torch, np))
    payload = common.report("latentsync", args, machine, results,
                            {"device": str(device), "dtype": common.dtype_name(dtype), "resolution": res,
                             "weights": "random", "load_rss_peak_mb": round(mem_load.peak_mb, 1)})
    common.write_json(args.json, payload)
    print(common.markdown_table(results, [("stage", "stage"), ("frames", "frames"), ("seconds", "seconds"),
                                          ("s_per_frame", "s/frame"), ("rss_peak_mb", "peak RSS MB"),
                                          ("vram_peak_mb", "peak VRAM MB"), ("note", "note")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
