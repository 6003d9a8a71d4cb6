"""Face analysis speed: frames/s of ``analyze_faces`` (detection + shot cuts + tracking + crop boxes) per detector
backend at 720p and 1080p.

    python bench/faces.py                 # mtcnn and s3fd+fan68, 720p and 1080p, 16 frames each, auto device
    python bench/faces.py --quick         # smoke run (seconds): 2 frames (mtcnn) / 1 frame (s3fd+fan68), no warm-up
    python bench/faces.py --device cpu --backends mtcnn --frames 32 --json out.json

What is measured: ``analyze_faces`` over in-memory frames, with the detector built the way the Face Detect node builds
it (MTCNN searches faces down to the node's ``min_face_size`` 50 px; S3FD at full resolution). The frames are a real
photo with a face (skimage's astronaut) scaled to the resolution and panned 2 px per frame, so the detector does real
work. Outside ``--quick`` one frame is analysed first (model load, allocator, kernels) and not counted. S3FD runs its
VGG-16 on the full frame (about 50 s a 1080p frame on two loaded CPU cores), so ``--quick`` on a CPU measures
s3fd+fan68 at 360p only (``--resolutions`` given explicitly overrides this).

Weights: MTCNN uses its real weights (the facenet-pytorch wheel, the model folder, or a download). When the S3FD /
FAN weights are not installed, random weights with the released layout are written to a temporary folder
(``write_test_weights`` of tests/test_weights): the networks cost the same, but random S3FD weights yield thousands of
boxes, so the benchmark then keeps the best box of each frame (one face per frame, as in a talking-head video) before
FAN runs; rows record ``"weights": "random"``.

Prints one JSON line per measurement, then a markdown table; ``--json PATH`` writes everything (with the machine
description) to a file.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

RESOLUTIONS = {"360p": (640, 360), "480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080),
               "2160p": (3840, 2160)}
COLUMNS = [("backend", "backend"), ("resolution", "resolution"), ("device", "device"), ("weights", "weights"),
           ("frames", "frames"), ("seconds", "seconds"), ("fps", "frames/s"), ("face_frames", "face frames"),
           ("rss_peak_delta_mb", "RSS +MB"), ("vram_peak_mb", "VRAM MB"), ("error", "error")]


def parse_resolution(text: str):
    text = text.strip().lower()
    if text in RESOLUTIONS:
        return text, RESOLUTIONS[text]
    w, h = (int(v) for v in text.split("x"))
    return f"{w}x{h}", (w, h)


def make_frames(width: int, height: int, n: int, fps: float = 25.0):
    """``n`` frames of the astronaut photo scaled to cover ``width x height``, panning 2 px per frame."""
    import cv2
    import numpy as np
    import skimage.data

    from musetalk_enhanced.pipeline.media.frames import ArrayFrames

    img = skimage.data.astronaut()
    zoom = max(width, height) / 512.0 * 1.1
    out = np.empty((n, height, width, 3), np.uint8)
    for k in range(n):
        m = np.float32([[zoom, 0, width / 2 - zoom * 240 - 2 * k], [0, zoom, height / 2 - zoom * 200]])
        out[k] = cv2.warpAffine(img, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return ArrayFrames(out, fps)


def _keep_best_box_per_frame():
    """Random S3FD weights give thousands of boxes; keep the best of each frame so FAN runs once per frame."""
    from musetalk_enhanced.models import s3fd

    if getattr(s3fd.detect, "_bench_best_box", False):
        return
    original = s3fd.detect

    def detect(*args, **kwargs):
        out = original(*args, **kwargs)
        return [{k: v[:1] for k, v in r.items()} for r in out]

    detect._bench_best_box = True
    s3fd.detect = detect


_S3FD_FAN_WEIGHTS = []


def s3fd_fan_weights(tmp: str) -> str:
    """"real" when both files are installed, else write random ones under ``tmp`` and point the registry there."""
    from musetalk_enhanced.models import landmarks68, registry, s3fd
    from test_weights import landmarks68 as tw_fan, s3fd as tw_s3fd

    if _S3FD_FAN_WEIGHTS:
        return _S3FD_FAN_WEIGHTS[0]
    if registry.find(s3fd.REGISTRY_KEY) and registry.find(landmarks68.REGISTRY_KEY):
        _S3FD_FAN_WEIGHTS.append("real")
    else:
        tw_s3fd.write_test_weights(tmp)
        tw_fan.write_test_weights(tmp)
        os.environ[registry.ENV_MODELS_DIR] = tmp
        _keep_best_box_per_frame()
        _S3FD_FAN_WEIGHTS.append("random")
    return _S3FD_FAN_WEIGHTS[0]


def bench_one(backend: str, res: str, size, n: int, device, batch_size: int, warmup: bool, tmp: str) -> dict:
    from musetalk_enhanced.nodes.face_nodes import detector_options
    from musetalk_enhanced.pipeline.faces.detectors import create_detector
    from musetalk_enhanced.pipeline.faces.tracks import analyze_faces
    from musetalk_enhanced.pipeline.runtime import Runtime

    width, height = size
    weights = "real" if backend == "mtcnn" else s3fd_fan_weights(tmp)
    runtime = Runtime(device=device, show_progress=False)
    detector = create_detector(backend, runtime, auto_download=(backend == "mtcnn"),
                               **detector_options(backend, 50, width, height))
    frames = make_frames(width, height, n)
    warm = (lambda: analyze_faces(make_frames(width, height, 1), detector, runtime)) if warmup else None
    with common.PeakMemory(runtime.device) as mem:
        seconds, seq = common.timed(lambda: analyze_faces(frames, detector, runtime, batch_size=batch_size),
                                    runtime.device, warmup=warm)
    row = {"test": "analyze_faces", "backend": backend, "resolution": res, "width": width, "height": height,
           "frames": n, "batch_size": batch_size, "device": str(runtime.device), "weights": weights,
           "warmup": bool(warmup), "seconds": round(seconds, 3), "fps": round(n / seconds, 3),
           "face_frames": len(seq.face_indices())}
    row.update(mem.as_dict())
    return row


def main(argv=None) -> int:
    ap = common.bench_parser(__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="mtcnn,s3fd+fan68", help="comma list of detector backends")
    ap.add_argument("--resolutions", default="", help="comma list: 720p, 1080p, ... or WxH (default 720p,1080p)")
    ap.add_argument("--frames", type=int, default=0,
                    help="frames per measurement (16; quick: 2 for mtcnn, 1 for s3fd+fan68)")
    ap.add_argument("--batch-size", type=int, default=8, help="frames per analysis batch")
    args = ap.parse_args(argv)

    common.setup_torch(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    common.import_pack()
    device, _ = common.pick_device_dtype(args.device, args.dtype)
    machine = common.machine_info(device)
    print(f"# faces benchmark ({'quick' if args.quick else 'full'}) on {common.describe_machine(machine)}",
          flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="musetalk_bench_faces_") as tmp:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            res_list = args.resolutions or "720p,1080p"
            if not args.resolutions and args.quick and backend != "mtcnn" and device.type == "cpu":
                res_list = "360p"
            for res, size in [parse_resolution(r) for r in res_list.split(",") if r.strip()]:
                n = args.frames or ((2 if backend == "mtcnn" else 1) if args.quick else 16)
                try:
                    row = bench_one(backend, res, size, n, device, args.batch_size, not args.quick, tmp)
                except Exception as exc:  # noqa: BLE001 - report it and go on with the other measurements
                    row = {"test": "analyze_faces", "backend": backend, "resolution": res,
                           "error": f"{type(exc).__name__}: {exc}"}
                results.append(row)
                print(json.dumps(row), flush=True)
    payload = common.report("faces", args, machine, results)
    print()
    print(common.markdown_table(results, COLUMNS))
    print(f"\nmachine: {common.describe_machine(machine)}; load after: {payload['machine']['load_average_after']}")
    common.write_json(args.json, payload)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
