"""Video I/O speed and memory: H.264 encode and decode frames/s at 720p and 1080p, and the memory of streaming a long
clip through decode -> encode.

    python bench/media.py                 # full: 150 frames per measurement at 720p and 1080p; 3000-frame 1080p stream
    python bench/media.py --quick         # CI smoke run (seconds): 12 frames each; 300-frame 720p stream
    python bench/media.py --long-frames 15000 --long-resolution 1080p --json out.json    # the real 10 minutes

What is measured (all through the pack's own classes, pipeline/media/video.py):

* ``encode``: ``VideoWriter`` (libx264 yuv420p, crf 19 by default) with preset ``medium`` (the pack's default) and
  ``fast``, fed ``--batch`` frames per ``write`` from RAM. Frames/s covers opening, every ``write`` and ``close``
  (flush of the encoder's look-ahead, mp4 finalisation). The frames are synthetic footage: scikit-image photos as
  shots that pan and zoom, with light film grain (a still or noise-free picture would encode unrealistically fast).
* ``decode``: ``VideoFileFrames(path).iter_batches(--batch)`` over the file the ``medium`` encode wrote (a typical
  H.264 input). ``probe s`` is the constructor's packet scan (exact frame count and timestamps, no decoding);
  frames/s is the decode loop alone, ``frames/s incl. probe`` both.
* ``stream``: a long clip (``--long-frames``, default 3000 frames of 1080p = 2 minutes at 25 fps; ``--quick`` 300 of
  720p) is first written with preset ultrafast (not timed as a benchmark, listed as ``make source``), then streamed
  ``VideoFileFrames -> VideoWriter(crf 19, medium)`` batch by batch while a thread samples the process RSS. Reported:
  RSS before, peak, at every 1000 frames and at the end, and the growth per 1000 frames (least-squares slope of RSS
  against frames done, skipping the warm-up: the first 20 % of the frames and at least the decoder's block cache
  (3 x 32 frames) + 64 frames of x264 look-ahead). A 10-minute 1080p clip at 25 fps
  is 15000 frames; generating that takes too long on a small CPU, so ``extrapolated RSS at 15000 frames`` =
  RSS at the end + slope x the missing frames (a negative slope counts as 0). That is an extrapolation, not a measurement: run
  ``--long-frames 15000`` to measure it.

Prints one JSON line per measurement, then a markdown table; ``--json PATH`` writes everything (with the machine
description) to a file.
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

RESOLUTIONS = {"360p": (640, 360), "480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080),
               "1440p": (2560, 1440), "2160p": (3840, 2160)}
PHOTOS = ("astronaut", "coffee", "rocket", "chelsea")
LONG_TARGET_FRAMES = 15000   # 10 minutes at 25 fps


def parse_resolution(text: str):
    text = text.strip().lower()
    if text in RESOLUTIONS:
        return text, RESOLUTIONS[text]
    w, h = (int(v) for v in text.split("x"))
    return f"{w}x{h}", (w, h)


class Footage:
    """Synthetic footage at ``width x height``: skimage photos as shots of ``shot_len`` frames, each panning and
    slowly zooming, plus light film grain (one of a few precomputed patterns per frame). ``frame(k)`` -> uint8 RGB."""

    def __init__(self, width: int, height: int, shot_len: int = 75, grain: float = 2.0, seed: int = 0):
        import cv2
        import numpy as np
        from skimage import data

        self.width, self.height, self.shot_len = width, height, shot_len
        self.bases = []
        for name in PHOTOS:
            img = getattr(data, name)()
            if img.ndim == 2:
                img = np.stack([img] * 3, -1)
            img = np.ascontiguousarray(img[..., :3])
            s = max(width / img.shape[1], height / img.shape[0]) * 1.3
            self.bases.append(cv2.resize(img, (int(img.shape[1] * s) + 1, int(img.shape[0] * s) + 1),
                                         interpolation=cv2.INTER_CUBIC))
        rng = np.random.default_rng(seed)
        self.grain = []
        for _ in range(4):
            g = rng.normal(0.0, grain, (height, width, 3))
            self.grain.append((np.clip(g, 0, 255).astype(np.uint8), np.clip(-g, 0, 255).astype(np.uint8)))

    def frame(self, k: int):
        import cv2
        import numpy as np

        shot, t = divmod(int(k), self.shot_len)
        base = self.bases[shot % len(self.bases)]
        bh, bw = base.shape[:2]
        z = 1.0 + 0.0008 * t
        speed = 1.2 * self.width / 1280.0                      # px per frame: a slow camera pan
        direction = 1.0 if shot % 2 == 0 else -1.0
        cx = bw / 2 + direction * (t - self.shot_len / 2) * speed
        cy = bh / 2 + 0.3 * (t - self.shot_len / 2) * speed
        m = np.array([[z, 0.0, self.width / 2 - z * cx], [0.0, z, self.height / 2 - z * cy]], np.float64)
        out = cv2.warpAffine(base, m, (self.width, self.height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        plus, minus = self.grain[k % len(self.grain)]
        cv2.add(out, plus, dst=out)
        cv2.subtract(out, minus, dst=out)
        return out

    def frames(self, n: int, start: int = 0):
        import numpy as np

        out = np.empty((n, self.height, self.width, 3), np.uint8)
        for i in range(n):
            out[i] = self.frame(start + i)
        return out


# ---- measurements ----------------------------------------------------------------------------------------------------
def bench_encode(frames, fps: float, res: str, preset: str, crf: int, batch: int, path: str) -> dict:
    from musetalk_enhanced.pipeline.media.writer import VideoWriter

    n, h, w = frames.shape[:3]
    with common.PeakMemory() as mem, common.Stopwatch() as sw:
        writer = VideoWriter(path, fps, w, h, crf=crf, preset=preset)
        for a in range(0, n, batch):
            writer.write(frames[a:a + batch])
        writer.close()
    dt = sw.seconds
    size = os.path.getsize(path)
    out = {"test": "encode", "resolution": res, "width": w, "height": h, "frames": n, "preset": preset, "crf": crf,
           "batch": batch, "seconds": round(dt, 3), "fps": round(n / dt, 2),
           "file_mb": round(size / 1e6, 2), "mbit_s": round(size * 8 / (n / fps) / 1e6, 2)}
    out.update(sw.as_dict())
    out.update(mem.as_dict())
    return out


def bench_decode(path: str, res: str, batch: int) -> dict:
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames

    with common.PeakMemory() as mem:
        t0 = time.perf_counter()
        frames = VideoFileFrames(path)
        t_probe = time.perf_counter() - t0
        count = 0
        with common.Stopwatch() as sw:
            for b in frames.iter_batches(batch):
                count += len(b)
        dt = sw.seconds
    out = {"test": "decode", "resolution": res, "width": frames.width, "height": frames.height, "frames": count,
           "batch": batch, "probe_s": round(t_probe, 3), "seconds": round(dt, 3), "fps": round(count / dt, 2),
           "fps_incl_probe": round(count / (dt + t_probe), 2)}
    out.update(sw.as_dict())
    out.update(mem.as_dict())
    return out


def make_long_source(path: str, footage: Footage, n: int, fps: float, batch: int = 25) -> dict:
    """Write the long input clip (ultrafast, crf 23) from generated frames; returns its timing row."""
    from musetalk_enhanced.pipeline.media.writer import VideoWriter

    t0 = time.perf_counter()
    with VideoWriter(path, fps, footage.width, footage.height, crf=23, preset="ultrafast") as writer:
        for a in range(0, n, batch):
            writer.write(footage.frames(min(batch, n - a), a))
    dt = time.perf_counter() - t0
    return {"test": "make source", "resolution": f"{footage.width}x{footage.height}", "frames": n,
            "preset": "ultrafast", "crf": 23, "seconds": round(dt, 2), "fps": round(n / dt, 2),
            "file_mb": round(os.path.getsize(path) / 1e6, 1), "note": "input for the stream test (generate+encode)"}


def growth_per_1000(points, skip_frames: int = 0, skip_fraction: float = 0.2):
    """Least-squares slope (MiB per 1000 frames) of ``[(frames_done, rss_mb)]`` over the points after the first
    ``max(skip_frames, skip_fraction * frames)`` frames (the warm-up: decoder block cache and x264 look-ahead
    filling)."""
    import numpy as np

    if len(points) < 3:
        return 0.0
    arr = np.asarray(points, np.float64)
    last = arr[-1, 0]
    keep = arr[arr[:, 0] >= max(skip_frames, skip_fraction * last)]
    if keep.shape[0] < 3:
        keep = arr
    x, y = keep[:, 0], keep[:, 1]
    if float(x.max() - x.min()) <= 0:
        return 0.0
    slope = np.polyfit(x, y, 1)[0]
    return float(slope * 1000.0)


def bench_stream(src: str, dst: str, res: str, batch: int, crf: int, preset: str) -> dict:
    from musetalk_enhanced.pipeline.media.video import VideoFileFrames
    from musetalk_enhanced.pipeline.media.writer import VideoWriter

    gc.collect()
    frames = VideoFileFrames(src)
    n = len(frames)
    points = []
    with common.PeakMemory(interval=0.02) as mem, common.Stopwatch() as sw:
        writer = VideoWriter(dst, frames.fps, frames.width, frames.height, crf=crf, preset=preset)
        for b in frames.iter_batches(batch):
            writer.write(b.rgb)
            points.append((b.stop, mem.poll()))
        writer.close()
    dt = sw.seconds
    warm = frames.block * frames.cache_blocks + 64   # decoder cache + x264 look-ahead / frame threads
    slope = growth_per_1000(points, warm)
    at = {}
    for done, r in points:
        mark = (done // 1000) * 1000
        if mark and mark not in at:
            at[mark] = round(r, 1)
    if points:
        at[points[-1][0]] = round(points[-1][1], 1)
    end = points[-1][1] if points else mem.end_mb
    out = {"test": "stream", "resolution": res, "width": frames.width, "height": frames.height, "frames": n,
           "preset": preset, "crf": crf, "batch": batch, "seconds": round(dt, 2), "fps": round(n / dt, 2),
           "rss_before_mb": round(mem.start_mb, 1), "rss_end_mb": round(end, 1),
           "rss_at_frames_mb": {str(k): v for k, v in sorted(at.items())},
           "rss_growth_mb_per_1000_frames": round(slope, 2),
           "extrapolated_rss_mb_at_15000_frames": round(end + max(0.0, slope) * max(0, LONG_TARGET_FRAMES - n)
                                                         / 1000.0, 1),
           "note": (f"RSS at {LONG_TARGET_FRAMES} frames (10 min at 25 fps) is extrapolated from {n} frames"
                    if n < LONG_TARGET_FRAMES else "measured over the full length")}
    out.update(sw.as_dict())
    out.update(mem.as_dict())
    return out


# ---- main ----------------------------------------------------------------------------------------------------------
COLUMNS = [("test", "test"), ("resolution", "resolution"), ("preset", "preset"), ("frames", "frames"),
           ("seconds", "seconds"), ("fps", "frames/s"), ("cores_busy", "cores busy"), ("probe_s", "probe s"),
           ("mbit_s", "Mbit/s"),
           ("rss_peak_delta_mb", "peak RSS +MB"), ("rss_peak_mb", "peak RSS MB"),
           ("rss_growth_mb_per_1000_frames", "RSS MB / 1000 frames"),
           ("extrapolated_rss_mb_at_15000_frames", "RSS MB @15000 (extrapolated)")]


def main(argv=None) -> int:
    ap = common.bench_parser(__doc__.split("\n\n")[0])
    ap.add_argument("--resolutions", default="720p,1080p", help="comma list: 720p, 1080p, ... or WxH")
    ap.add_argument("--frames", type=int, default=0, help="frames per encode/decode measurement (150; quick 12)")
    ap.add_argument("--presets", default="medium,fast", help="x264 presets for the encode measurement")
    ap.add_argument("--crf", type=int, default=19)
    ap.add_argument("--batch", type=int, default=16, help="frames per write / per decoded batch")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--long-frames", type=int, default=-1,
                    help="frames of the streamed long clip (3000; quick 300; 0 skips it)")
    ap.add_argument("--long-resolution", default="", help="resolution of the long clip (1080p; quick 720p)")
    ap.add_argument("--tmpdir", default="", help="where the clips are written (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the written clips")
    args = ap.parse_args(argv)

    common.setup_torch(args.threads)
    common.import_pack()
    machine = common.machine_info()
    n = args.frames or (12 if args.quick else 150)
    long_n = args.long_frames if args.long_frames >= 0 else (300 if args.quick else 3000)
    long_res = args.long_resolution or ("720p" if args.quick else "1080p")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    resolutions = [parse_resolution(r) for r in args.resolutions.split(",") if r.strip()]
    print(f"# media benchmark ({'quick' if args.quick else 'full'}) on {common.describe_machine(machine)}",
          flush=True)

    tmp = args.tmpdir or tempfile.mkdtemp(prefix="musetalk_bench_media_")
    os.makedirs(tmp, exist_ok=True)
    results = []

    def emit(row):
        label = row["test"] + (f" {row['preset']}" if row["test"] == "encode" else "")
        row = {"stage": label, **row}
        results.append(row)
        print(json.dumps(row), flush=True)

    try:
        # 1. the long stream first, so its RSS baseline is not inflated by the other tests' frame arrays
        if long_n > 0:
            name, (w, h) = parse_resolution(long_res)
            src = os.path.join(tmp, f"long_{name}_{long_n}.mp4")
            if not os.path.exists(src):
                emit(make_long_source(src, Footage(w, h), long_n, args.fps))
            dst = os.path.join(tmp, f"long_{name}_{long_n}_reencoded.mp4")
            if os.path.exists(dst):
                os.remove(dst)
            emit(bench_stream(src, dst, name, args.batch, args.crf, "medium"))
            if not args.keep:
                for p in (src, dst):
                    os.remove(p)
        # 2. encode / decode per resolution
        for name, (w, h) in resolutions:
            frames = Footage(w, h).frames(n)
            decoded_from = None
            for preset in presets:
                path = os.path.join(tmp, f"enc_{name}_{preset}.mp4")
                if os.path.exists(path):
                    os.remove(path)
                emit(bench_encode(frames, args.fps, name, preset, args.crf, args.batch, path))
                decoded_from = decoded_from or path
            del frames
            gc.collect()
            if decoded_from:
                row = bench_decode(decoded_from, name, args.batch)
                row["preset"] = f"(file: {presets[0]})"
                emit(row)
    finally:
        if not args.keep and not args.tmpdir:
            shutil.rmtree(tmp, ignore_errors=True)

    payload = common.report("media", args, machine, results)
    print()
    print(common.markdown_table(results, COLUMNS))
    print(f"\nmachine: {common.describe_machine(machine)}; load after: {payload['machine']['load_average_after']}")
    common.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
