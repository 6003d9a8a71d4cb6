"""Our MuseTalk networks against the original's, side by side, on the same weights, inputs, torch and threads.

    python bench/networks.py --original-python /path/to/venv/bin/python [--rounds 7] [--frames 8] [--threads 2]
    python bench/networks.py --original-python ... --profile encode      # also the top ops of each side
    python bench/networks.py --original-python ... --same-allocator      # both with one heap setting from the start

The original runs diffusers 0.30.x (MuseTalk ``requirements.txt``); the pack runs whatever diffusers it is installed
with. One process cannot hold two diffusers, so each side is a worker process started by this script: ``ours`` with
this interpreter (the pack's loaders and its engine, pipeline/backends/musetalk_engine.py), ``original`` with
``--original-python`` (a venv with ``torch`` of the same version, ``diffusers==0.30.3`` and the pack's other
requirements: ``python -m venv V && V/bin/pip install torch==<ours> diffusers==0.30.3 transformers==4.44.2
-r requirements.txt``). Both load the same random full-size weights in the released layouts (written once by
tests/test_weights into ``--models``), build the same inputs from the same seeds, and run one stage when told to.

The original side follows MuseTalk step by step:

* ``encode``: MuseTalk ``musetalk/models/vae.py`` ``get_latents_for_unet``, per frame: the masked crop (lower half
  zeroed) and the reference crop, each through ``vae.encode(x).latent_dist.sample()`` times the scaling factor, one
  image per call; ours: ``MuseTalkEngine.encode_reference`` on the same crops.
* ``unet``: MuseTalk ``musetalk/models/unet.py`` (``UNet2DConditionModel(**musetalk.json)`` with ``unet.pth`` loaded
  by ``load_state_dict``; the positional encoding added to the whisper windows) at timestep 0 on a batch of
  ``--frames``; ours: ``MuseTalkEngine.denoise``.
* ``decode``: MuseTalk ``musetalk/models/vae.py`` ``decode_latents`` (``vae.decode(z / scaling)``, then to uint8
  BGR) on the same batch; ours: ``MuseTalkEngine.decode`` + ``postprocess_decoded``.

Each side runs in the process state its users get: ours keeps the memory its networks free
(pipeline/cpu_heap.py, as ``python <pack>`` and the pack's workers do; ``MUSETALK_KEEP_FREED_MEMORY=0`` in the
environment turns it off), the original keeps glibc's defaults, as MuseTalk's scripts do. ``--same-allocator``
starts both workers with those heap settings as environment variables (glibc reads them before the first
allocation), which compares the networks alone.

Rounds are interleaved (ours then the original's, the order swapped every round), after one untimed warm-up call of
each stage; the table gives the minimum and median seconds per output frame of each side, and ``ours / original``
of the medians, of the minimums, of the rounds (``paired``: the median over rounds of the two calls made seconds
apart, which a machine whose speed drifts over minutes disturbs least) and of the CPU seconds each worker process
spent (``cpu``: what other tenants of a shared machine take is not counted); <= 1.00: ours is no slower. Each stage
row also gives each side's median minor page faults per output frame (fresh memory the kernel had to zero and map:
the heap's share of the time). ``check``
rows compare the two sides' outputs for the same inputs (the UNet prediction and the decoded faces;
the encoder's mean latents), so both ran the same computation.
"""
from __future__ import annotations

import json
import os
import resource
import runpy
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STAGES = ("encode", "unet", "decode")
CPU_HEAP = os.path.join(ROOT, "pipeline", "cpu_heap.py")   # standard library only: loaded by path on both sides
SIZE, LATENT, TOKENS, WIDTH = 256, 32, 50, 384


# ---- the inputs both sides build from the same seeds ----------------------------------------------------------------
def inputs(frames: int):
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (frames, SIZE, SIZE, 3), dtype=np.uint8)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(frames, 8, LATENT, LATENT, generator=g)
    windows = torch.randn(frames, TOKENS, WIDTH, generator=g)
    pred = torch.randn(frames, 4, LATENT, LATENT, generator=g) * 0.5
    return crops, latents, windows, pred


def positional_encoding(windows):
    """MuseTalk ``musetalk/models/unet.py`` ``PositionalEncoding`` added to the windows: the pack's table
    (models/positional_encoding.py, standard library and torch only, so it loads in the original's venv too)."""
    table = runpy.run_path(os.path.join(ROOT, "models", "positional_encoding.py"))["sinusoid_table"](WIDTH, 5000)
    return windows + table[:, : windows.shape[1]]


# ---- the two sides --------------------------------------------------------------------------------------------------
class Ours:
    """The pack's loaders and engine (pipeline/backends/musetalk_engine.py) in float32 on the CPU."""

    def __init__(self, models: str):
        import torch

        os.environ["MUSETALK_MODELS_DIR"] = models
        runpy.run_path(os.path.join(ROOT, "bootstrap.py"))["import_pack"]()
        from musetalk_enhanced.pipeline.backends import musetalk_engine as me
        from musetalk_enhanced.pipeline.runtime import Runtime

        self.me = me
        runtime = Runtime(device="cpu", dtype=torch.float32, show_progress=False)
        self.engine = me._build_engine(me.weight_paths(auto_download=False), runtime, posterior="sample")

    def encode(self, crops, latents, windows, pred):
        return self.engine.encode_reference(crops)

    def encode_mean(self, crops):
        return self.engine.encode_reference(crops, posterior="mode")

    def unet(self, crops, latents, windows, pred):
        return self.engine.denoise(latents, windows)

    def decode(self, crops, latents, windows, pred):
        return self.me.postprocess_decoded(self.engine.decode(pred))


class Original:
    """MuseTalk's own calls (MuseTalk ``musetalk/models/vae.py`` and ``musetalk/models/unet.py``), on the diffusers
    classes of its venv."""

    def __init__(self, models: str):
        import torch
        from diffusers import AutoencoderKL, UNet2DConditionModel

        folder = os.path.join(models, "musetalk")
        self.vae = AutoencoderKL.from_pretrained(os.path.join(folder, "sd-vae")).eval()
        with open(os.path.join(folder, "musetalkV15", "musetalk.json")) as f:
            config = json.load(f)
        self.net = UNet2DConditionModel(**config)
        self.net.load_state_dict(torch.load(os.path.join(folder, "musetalkV15", "unet.pth"), map_location="cpu"))
        self.net.eval()
        self.scaling = self.vae.config.scaling_factor
        self.mask = torch.zeros((SIZE, SIZE))                       # MuseTalk VAE.get_mask_tensor: the upper half
        self.mask[:SIZE // 2, :] = 1

    def _image(self, rgb, half_mask: bool):
        """MuseTalk ``musetalk/models/vae.py`` ``preprocess_img`` for one RGB crop, step by step: ``/ 255.`` in
        float64, the (C, 1, H, W) transpose turned into a float32 tensor (its strides kept), the half mask, then
        torchvision's ``Normalize([0.5] * 3, [0.5] * 3)`` (a clone, ``sub_``, ``div_``). The layout matters for the
        speed: a whole batch permuted from (N, H, W, C) would run the encoder in channels_last, which MuseTalk's
        one-image tensors do not (their results equal the contiguous ones bit for bit)."""
        import numpy as np
        import torch

        x = np.transpose(np.asarray([rgb]) / 255.0, (3, 0, 1, 2))
        x = torch.squeeze(torch.FloatTensor(x))
        if half_mask:
            x = x * (self.mask > 0.5)
        x = x.clone()
        x.sub_(0.5).div_(0.5)
        return x.unsqueeze(0)

    def encode(self, crops, latents, windows, pred):
        import torch

        with torch.no_grad():
            out = []
            for crop in crops:                                     # frame by frame, masked then reference
                m = self.vae.encode(self._image(crop, True)).latent_dist.sample() * self.scaling
                r = self.vae.encode(self._image(crop, False)).latent_dist.sample() * self.scaling
                out.append(torch.cat([m, r], dim=1))
            return torch.cat(out)

    def encode_mean(self, crops):
        import torch

        with torch.no_grad():
            z = [self.vae.encode(self._image(crop, half)).latent_dist.mean for crop in crops for half in (True, False)]
            return (torch.cat(z) * self.scaling).reshape(-1, 8, LATENT, LATENT)

    def unet(self, crops, latents, windows, pred):
        import torch

        with torch.no_grad():
            cond = positional_encoding(windows)
            return self.net(latents, torch.tensor([0]), encoder_hidden_states=cond).sample

    def decode(self, crops, latents, windows, pred):
        import torch

        with torch.no_grad():
            image = self.vae.decode(pred / self.scaling).sample
            image = (image / 2 + 0.5).clamp(0, 1)
            image = (image.detach().cpu().permute(0, 2, 3, 1).float().numpy() * 255).round().astype("uint8")
            return image[..., ::-1]


# ---- a worker: one side, stages on command --------------------------------------------------------------------------
def worker(side: str, models: str, frames: int, threads: int) -> None:
    cpu_heap = runpy.run_path(CPU_HEAP)
    if side == "ours":      # as python <pack> does, before anything is allocated
        heap = cpu_heap["keep_freed_memory"]()
    else:
        heap = ("kept (environment)" if cpu_heap["environment"]().items() <= os.environ.items()
                else "glibc defaults")
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Ours(models) if side == "ours" else Original(models)
    data = inputs(frames)
    print(json.dumps({"ready": side, "torch": torch.__version__, "diffusers": _diffusers_version(),
                      "heap": heap}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        stage = command["stage"]
        fn = getattr(model, stage)
        if command.get("check"):
            out = model.encode_mean(data[0]) if stage == "encode" else fn(*data)
            out = np.ascontiguousarray(np.asarray(out.float() if hasattr(out, "float") else out, dtype=np.float32))
            if stage == "decode" and side == "original":
                out = out[..., ::-1]                        # BGR -> RGB, as ours
            np.save(command["check"], out)
            print(json.dumps({"saved": command["check"]}), flush=True)
            continue
        profile = command.get("profile")
        started, cpu = time.perf_counter(), time.process_time()
        if profile:
            from torch.profiler import ProfilerActivity, profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                fn(*data)
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
            print(json.dumps({"seconds": time.perf_counter() - started, "profile": table}), flush=True)
            continue
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn(*data)
        print(json.dumps({"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
                          "page_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}), flush=True)


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


# ---- the driver ------------------------------------------------------------------------------------------------------
class Side:
    def __init__(self, name: str, python: str, args):
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        if args.same_allocator:   # both workers with the heap settings of ours (pipeline/cpu_heap.py) from the start
            env.update(runpy.run_path(CPU_HEAP)["environment"]())
        self.name = name
        self.proc = subprocess.Popen([python, os.path.abspath(__file__), "--worker", name, "--models", args.models,
                                      "--frames", str(args.frames), "--threads", str(args.threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self.read()

    def read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the {self.name} worker stopped (see its messages above)")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def ensure_weights(models: str) -> None:
    """Full-size random MuseTalk UNet and VAE weights in the released layouts (tests/test_weights), once."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from test_weights import musetalk_unet, vae

    for writer in (vae, musetalk_unet):
        if not all(os.path.isfile(p) for p in writer.test_weight_files(models)):
            writer.write_test_weights(models)


def compare(args) -> list:
    import numpy as np

    import shutil
    import tempfile

    ensure_weights(args.models)
    sides = [Side("ours", sys.executable, args), Side("original", args.original_python, args)]
    rows, scratch = [], tempfile.mkdtemp(prefix="networks_check_")
    try:
        stages = [s for s in STAGES if s in args.stages.split(",")]
        for stage in stages:                                   # warm-up and the outputs' check
            files = []
            for side in sides:
                path = os.path.join(scratch, f"{side.name}_{stage}.npy")
                side.ask(stage=stage, check=path)
                files.append(path)
            a, b = (np.load(f) for f in files)
            rows.append({"stage": f"check {stage}", "shape": list(a.shape),
                         "max_abs_diff": float(np.abs(a.astype(np.float64) - b).max())})
        seconds = {(s.name, stage): [] for s in sides for stage in stages}
        cpu = {(s.name, stage): [] for s in sides for stage in stages}
        faults = {(s.name, stage): [] for s in sides for stage in stages}
        for r in range(args.rounds):
            for stage in stages:
                for side in (sides if r % 2 == 0 else sides[::-1]):
                    answer = side.ask(stage=stage)
                    seconds[(side.name, stage)].append(answer["seconds"] / args.frames)
                    cpu[(side.name, stage)].append(answer["cpu_seconds"] / args.frames)
                    faults[(side.name, stage)].append(answer["page_faults"] / args.frames)
        for stage in stages:
            ours, orig = seconds[("ours", stage)], seconds[("original", stage)]
            paired = [a / b for a, b in zip(ours, orig)]          # the two calls of one round, seconds apart
            rows.append({"stage": stage, "ours_min_s": min(ours), "ours_median_s": statistics.median(ours),
                         "original_min_s": min(orig), "original_median_s": statistics.median(orig),
                         "ours_over_original": statistics.median(ours) / statistics.median(orig),
                         "ours_over_original_min": min(ours) / min(orig),
                         "ours_over_original_paired": statistics.median(paired),
                         "ours_cpu_median_s": statistics.median(cpu[("ours", stage)]),
                         "original_cpu_median_s": statistics.median(cpu[("original", stage)]),
                         "ours_over_original_cpu": statistics.median(cpu[("ours", stage)])
                         / statistics.median(cpu[("original", stage)]),
                         "ours_page_faults": statistics.median(faults[("ours", stage)]),
                         "original_page_faults": statistics.median(faults[("original", stage)])})
        timed = [r for r in rows if r["stage"] in STAGES]
        total = {k: sum(r[k] for r in timed) for k in ("ours_min_s", "ours_median_s", "original_min_s",
                                                       "original_median_s")}
        per_round = [sum(seconds[("ours", s)][r] for s in stages) / sum(seconds[("original", s)][r] for s in stages)
                     for r in range(args.rounds)]
        cpu_total = {side: sum(statistics.median(cpu[(side, s)]) for s in stages) for side in ("ours", "original")}
        rows.append({"stage": "per output frame", **total,
                     "ours_over_original": total["ours_median_s"] / total["original_median_s"],
                     "ours_over_original_min": total["ours_min_s"] / total["original_min_s"],
                     "ours_over_original_paired": statistics.median(per_round),
                     "ours_over_original_cpu": cpu_total["ours"] / cpu_total["original"]})
        if args.profile:
            for side in sides:
                print(f"== {side.name}: {args.profile}\n" + side.ask(stage=args.profile, profile=True)["profile"])
        rows.insert(0, {"stage": "versions", "ours": sides[0].info, "original": sides[1].info,
                        "threads": args.threads, "frames": args.frames, "rounds": args.rounds})
    finally:
        for side in sides:
            side.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--original-python", help="the interpreter of a venv with diffusers 0.30.x (see above)")
    ap.add_argument("--models", default=os.path.join(ROOT, "test_weights"),
                    help="where the random full-size weights are written (once)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--frames", type=int, default=8, help="output frames per call (the original's batch)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--stages", default=",".join(STAGES), help="which stages (default: all)")
    ap.add_argument("--profile", choices=STAGES, help="also print the top ops of each side for this stage")
    ap.add_argument("--quick", action="store_true", help="1 frame, 1 round (a smoke run; without --original-python "
                                                         "both sides run this interpreter's diffusers)")
    ap.add_argument("--same-allocator", action="store_true",
                    help="start both workers with the heap settings of ours (pipeline/cpu_heap.py) as environment "
                         "variables: the networks compared without the processes' allocators (bench/README.md)")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--worker", choices=("ours", "original"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.models, args.frames, args.threads)
        return 0
    if args.quick:
        args.rounds, args.frames = 1, 1
        args.original_python = args.original_python or sys.executable
    if not args.original_python:
        ap.error("--original-python is required (a venv with diffusers 0.30.x; see the module docstring)")
    rows = compare(args)
    for row in rows:
        print(json.dumps(row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"script": "networks", "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
