"""Face analysis speed: frames/s of ``analyze_faces`` (detection + shot cuts + tracking + crop boxes) per detector
backend at 720p and 1080p.

    python bench/faces.py                 # mtcnn and s3fd+fan68, 720p and 1080p, auto device
    python bench/faces.py --quick         # a few frames each, for a smoke run
    python bench/faces.py --device cpu --backends mtcnn --frames 32 --json out.json

MTCNN uses its real weights (the facenet-pytorch wheel, the model folder, or a download). When the S3FD / FAN
weights are not installed, random weights with the released layout are written to a temporary folder
(``write_test_weights``): the networks cost the same, but random S3FD weights yield thousands of boxes, so the
benchmark then keeps the best box of each frame (one face per frame, as in a talking-head video) before FAN runs; the
result records ``"weights": "random"``. The MTCNN search size follows the Face Detect node (``min_face_size`` 50). The frames are a real photo with a face
(skimage's astronaut) panned slowly, so the detector does real work. Prints one JSON object and one markdown table row
per measurement.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK = "musetalk_enhanced"
RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}


def import_pack():
    """Import the pack as a package the way tests/conftest.py (and ComfyUI) do: relative imports inside."""
    if PACK in sys.modules:
        return sys.modules[PACK]
    spec = importlib.util.spec_from_file_location(PACK, os.path.join(ROOT, "__init__.py"),
                                                  submodule_search_locations=[ROOT])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = mod
    spec.loader.exec_module(mod)
    return mod


def make_frames(width: int, height: int, n: int, fps: float = 25.0):
    """``n`` frames of the astronaut photo scaled to cover ``width x height``, panning 2 px per frame."""
    import cv2
    import numpy as np
    import skimage.data

    from musetalk_enhanced.pipeline.frames import ArrayFrames

    img = skimage.data.astronaut()
    zoom = max(width, height) / 512.0 * 1.1
    out = np.empty((n, height, width, 3), np.uint8)
    for k in range(n):
        m = np.float32([[zoom, 0, width / 2 - zoom * (240 + 2 * k / zoom)], [0, zoom, height / 2 - zoom * 200]])
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

    if _S3FD_FAN_WEIGHTS:
        return _S3FD_FAN_WEIGHTS[0]
    if registry.find(s3fd.REGISTRY_KEY) and registry.find(landmarks68.REGISTRY_KEY):
        _S3FD_FAN_WEIGHTS.append("real")
    else:
        s3fd.write_test_weights(tmp)
        landmarks68.write_test_weights(tmp)
        os.environ[registry.ENV_MODELS_DIR] = tmp
        _keep_best_box_per_frame()
        _S3FD_FAN_WEIGHTS.append("random")
    return _S3FD_FAN_WEIGHTS[0]


def bench_one(backend: str, res: str, n: int, device: str, batch_size: int, tmp: str) -> dict:
    import torch

    from musetalk_enhanced.nodes.face_nodes import detector_options
    from musetalk_enhanced.pipeline.detectors import create_detector
    from musetalk_enhanced.pipeline.faces import analyze_faces
    from musetalk_enhanced.pipeline.runtime import Runtime

    width, height = RESOLUTIONS[res]
    weights = "real" if backend == "mtcnn" else s3fd_fan_weights(tmp)
    runtime = Runtime(device=device, show_progress=False)
    detector = create_detector(backend, runtime, auto_download=(backend == "mtcnn"),
                               **detector_options(backend, 50, width, height))
    frames = make_frames(width, height, n)
    warm = make_frames(width, height, 1)
    analyze_faces(warm, detector, runtime, batch_size=batch_size)       # model load, allocator, kernels
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    seq = analyze_faces(frames, detector, runtime, batch_size=batch_size)
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    dev_name = torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda" else \
        f"cpu ({torch.get_num_threads()} threads)"
    return {"backend": backend, "resolution": res, "width": width, "height": height, "frames": n,
            "batch_size": batch_size, "device": str(runtime.device), "device_name": dev_name, "weights": weights,
            "seconds": round(dt, 3), "fps": round(n / dt, 2), "face_frames": len(seq.face_indices())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 frames per measurement (smoke run)")
    ap.add_argument("--frames", type=int, default=0, help="frames per measurement (default 16, quick 2)")
    ap.add_argument("--backends", default="mtcnn,s3fd+fan68")
    ap.add_argument("--resolutions", default="720p,1080p")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", default="", help="also write the results to this file")
    args = ap.parse_args(argv)

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import_pack()
    n = args.frames or (2 if args.quick else 16)
    results = []
    with tempfile.TemporaryDirectory(prefix="musetalk_bench_faces_") as tmp:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            for res in [r.strip() for r in args.resolutions.split(",") if r.strip()]:
                try:
                    r = bench_one(backend, res, n, args.device, args.batch_size, tmp)
                except Exception as exc:  # noqa: BLE001 - report and continue with the other measurements
                    r = {"backend": backend, "resolution": res, "error": f"{type(exc).__name__}: {exc}"}
                results.append(r)
                print(json.dumps(r), flush=True)
    print("\n| backend | resolution | device | weights | frames | seconds | frames/s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['backend']} | {r['resolution']} | - | - | - | - | error: {r['error'][:60]} |")
        else:
            print(f"| {r['backend']} | {r['resolution']} | {r['device_name']} | {r['weights']} | {r['frames']} | "
                  f"{r['seconds']} | {r['fps']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "faces", "results": results}, f, indent=1)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
