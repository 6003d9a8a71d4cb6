"""Run every benchmark and collect one report: ``bench/results/<mode>-<device>.json`` (each script's own JSON in
``bench/results/<mode>-<device>/<name>.json``), ``bench/RESULTS.md`` with a table of the targets of issue "Speed and
scale" and every stage, and with ``--update-readme`` the same tables between the README's bench markers.

    python bench/run_all.py --quick          # CI-sized smoke run (about a minute on 2 CPU cores)
    python bench/run_all.py                  # full size (random full-size test weights; long on a CPU)
    python bench/run_all.py --only lipsync   # a subset: media, faces, geometry, audio, lipsync, latentsync,
                                             # latentsync-1.6, long, avatars, batch, scale
    python bench/run_all.py --update-readme  # also put the tables between the README's bench markers
    python bench/run_all.py --reuse          # keep the scripts' JSON already in the results folder, run the rest

Each script runs in its own process (so peak RSS is per benchmark) with ``--json``. The roofline is the device's
measured dense matrix-multiply rate in the compute dtype (a large ``torch.matmul``), so "% of roofline" says how well
the neural stages use the machine; MuseTalk costs per output frame: UNet 178 GFLOP, VAE decode 622 GFLOP, plus two VAE
encodes of 273 GFLOP per *source* frame (about 1.35 TFLOP per frame in a 1:1 dub).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPTS = ("media", "faces", "geometry", "audio", "lipsync", "latentsync", "latentsync-1.6", "long", "avatars",
           "batch", "scale")
# benchmark name -> (script, extra arguments); LatentSync 1.6 (512 px) only for its VRAM estimate in full mode: its
# timings at 512 px take long on a CPU, and quick mode runs the same tiny networks as "latentsync"
VARIANTS = {"latentsync-1.6": ("latentsync", ["--version", "1.6", "--no-timing"])}
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


def matmul_roofline(device: str = "auto", dtype: str = "auto", sizes=(2048, 4096), seconds: float = 1.0,
                    rounds: int = 3) -> dict:
    """Measured dense matmul rate (GFLOP/s) on the device in the compute dtype: the best of ``rounds`` windows of
    ``seconds`` for each size (the best, so a moment of load on a shared machine does not lower the roof)."""
    import torch

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if dtype == "auto":
        sys.path.insert(0, HERE)
        import common

        dt = common.pick_device_dtype(str(dev), "auto")[1]
    else:
        dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    if dev.type == "cuda":
        sizes = tuple(max(s, 8192) for s in sizes)
    best, best_n = 0.0, sizes[0]
    for n in sizes:
        a = torch.randn(n, n, device=dev, dtype=dt)
        b = torch.randn(n, n, device=dev, dtype=dt)
        for _ in range(2):
            a @ b
        for _ in range(rounds):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0, reps = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                a @ b
                reps += 1
            if dev.type == "cuda":
                torch.cuda.synchronize()
            rate = 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9
            if rate > best:
                best, best_n = rate, n
        del a, b
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return {"device": str(dev), "device_name": name, "dtype": str(dt).replace("torch.", ""),
            "gflops": round(best, 1), "n": best_n}


FULL_EXTRA = {"faces": ["--frames", "4"]}  # S3FD runs its VGG-16 on whole frames: ~50 s a 1080p frame on 2 CPU cores


def run_script(name: str, quick: bool, extra: list, out_dir: str, reuse: bool = False) -> dict:
    """Run ``bench/<name>.py --json <out_dir>/<name>.json``; with ``reuse`` an existing JSON there is taken as is."""
    path = os.path.join(out_dir, f"{name}.json")
    script, variant = VARIANTS.get(name, (name, []))
    cmd = [sys.executable, os.path.join(HERE, f"{script}.py"), "--json", path] + (["--quick"] if quick else []) + \
        extra + variant
    if not quick:
        cmd += FULL_EXTRA.get(name, [])
    res = {"benchmark": name, "command": " ".join(cmd[1:])}
    if reuse and os.path.isfile(path):
        res.update({"returncode": 0, "wall_s": None, "reused": True})
    else:
        if os.path.isfile(path):
            os.remove(path)
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        res.update({"returncode": proc.returncode, "wall_s": round(time.time() - t0, 1)})
        if proc.returncode != 0 or not os.path.isfile(path):
            res["error"] = (proc.stderr or proc.stdout or f"exit {proc.returncode}")[-3000:]
            return res
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        res["error"] = f"unreadable {path}: {exc}"
        return res
    res.update(doc if isinstance(doc, dict) else {"results": doc})
    res["script"], res["benchmark"] = script, name  # a variant's JSON names its script; the report names the variant
    return res


def fmt(v, d=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{d}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _rows(report: dict, benchmark: str):
    for b in report["benchmarks"]:
        if b.get("benchmark") == benchmark and not b.get("error"):
            yield from b.get("results", [])


def targets(report: dict) -> list:
    """``[(target, measured, verdict)]`` for the goals of issues "Speed and scale" and "Past one machine" that this run
    measured."""
    roof = report["roofline"]
    on_gpu = roof["device"].startswith("cuda")
    out = []
    lip = {r.get("stage"): r for r in _rows(report, "lipsync")}
    ratio = lip.get("speed ratio original/ours")
    if ratio:
        out.append(("CPU: >= 1.5x the original MuseTalk per output frame, same weights" if not on_gpu else
                    "speed vs the original's offline path, same weights",
                    f"{ratio['ratio']}x wall, {ratio['ratio_cpu']}x CPU time (original {ratio.get('dtype_original')}, "
                    f"ours {ratio.get('dtype_ours')})",
                    ("met" if ratio["ratio"] >= 1.5 else f"{1.5 - ratio['ratio']:.2f}x short") if not on_gpu else "-"))
    neural = [lip[k] for k in ("vae_encode (x2 per source frame)", "unet", "vae_decode") if k in lip]
    if neural and roof.get("gflops"):
        pct = [f"{k['stage'].split(' ')[0]} {100 * k['gflops'] / roof['gflops']:.0f} %"
               for k in neural if k.get("gflops")]
        out.append((">= 35 % of the roofline in the neural stages", ", ".join(pct),
                    "met" if all(100 * k["gflops"] / roof["gflops"] >= 35 for k in neural if k.get("gflops"))
                    else "not met"))
    e2e = next((r for k, r in lip.items() if k and k.startswith("e2e")), None)
    if e2e:
        out.append((">= 250 frames/s end to end at 720p on an H100-class GPU",
                    f"{e2e['fps']} frames/s at {e2e.get('resolution')} on {roof['device_name']}",
                    ("met" if e2e["fps"] >= 250 else "not met") if on_gpu else "needs a GPU (not measured here)"))
    vram = next((r for k, r in lip.items() if k and k.startswith("VRAM estimate")), None)
    if vram:
        measured = [r["vram_peak_mb"] for r in neural if r.get("vram_peak_mb")]
        if measured:
            out.append(("MuseTalk VRAM <= 4 GB at batch 8 in fp16 (measured)", f"{max(measured) / 1024:.2f} GB "
                        "max_memory_allocated", "met" if max(measured) <= 4096 else "not met"))
        out.append(("MuseTalk VRAM <= 4 GB at batch 8 in fp16",
                    f"{vram['vram_estimate_mb'] / 1024:.2f} GB estimated (weights {vram['weights_mb']:.0f} MB + "
                    f"activations {max(vram['activations_encode_mb'], vram['activations_unet_decode_mb']):.0f} MB)",
                    "met (estimate)" if vram["vram_estimate_mb"] <= 4096 else "not met (estimate)"))
    for name, version in (("latentsync", "1.5"), ("latentsync-1.6", "1.6")):
        for r in _rows(report, name):
            if str(r.get("stage", "")).startswith("VRAM estimate") and r.get("target_mb"):
                out.append((f"LatentSync {version} VRAM <= {r['target_mb'] / 1024:g} GB (16-frame chunk, fp16)",
                            f"{r['vram_estimate_mb'] / 1024:.2f} GB estimated (weights {r['weights_mb']:.0f} MB + "
                            f"activations {r['activations_mb']:.0f} MB)",
                            "met (estimate)" if r["met"] else "not met (estimate)"))
    for r in _rows(report, "geometry"):
        if str(r.get("source", "")).startswith("default") and r.get("iou_mean") is not None:
            out.append(("face geometry, default path with a 68-point model: crop IoU mean >= 0.95 (min >= 0.90), "
                        "alignment error <= 3 % of the eye distance",
                        f"{r['source']}: IoU {r['iou_mean']} (min {r['iou_min']}), alignment {r['align_mean_pct']} % "
                        f"over {r['faces']} faces", "met" if r["iou_mean"] >= 0.95 and r["iou_min"] >= 0.90 and
                        r["align_mean_pct"] <= 3.0 else "not met"))
        elif str(r.get("source", "")).startswith("5-point") and r.get("iou_mean") is not None:
            out.append(("face geometry, 5-point estimate alone: crop IoU mean >= 0.90",
                        f"IoU {r['iou_mean']} (min {r['iou_min']}) over {r['faces']} faces",
                        "met" if r["iou_mean"] >= 0.90 else f"not met ({0.90 - r['iou_mean']:.3f} short)"))
    edge = next((b.get("edge_faces") for b in report["benchmarks"]
                 if b.get("benchmark") == "geometry" and b.get("edge_faces")), None)
    if edge:
        pad = {r["side"]: r for r in edge if r["edge_faces"] == "pad" and r.get("iou_mean") is not None}
        orig = {r["side"]: r for r in edge if r["edge_faces"] == "original" and r.get("iou_mean") is not None}
        short = [f"{side} {r['iou_mean']}" for side, r in pad.items() if r["iou_mean"] < 0.95]
        out.append(("faces at the frame's edge (edge_faces pad, outermost landmark 2-8 px outside): crop IoU mean "
                    ">= 0.95 on each side",
                    "pad " + ", ".join(f"{side} {r['iou_mean']}" for side, r in pad.items()) + "; original " +
                    ", ".join(f"{side} {r['iou_mean']}" for side, r in orig.items()),
                    "met" if not short else f"not met ({', '.join(short)}: the landmark model's guess of the "
                                            "hidden jaw)"))
    speak = next((r for r in _rows(report, "avatars") if r.get("speedup") is not None), None)
    if speak:
        out.append(("avatar speaking >= 3x faster per frame than the full lip-sync path (CPU)",
                    f"{speak['speedup']}x ({speak['s_per_frame']} s/frame)",
                    "met" if speak["speedup"] >= 3.0 else "not met"))
    rows = {r.get("stage"): r for r in _rows(report, "batch")}
    batch, cli = rows.get("batch (one process)"), rows.get("separate CLI calls")
    if batch and cli:
        fixed = rows.get("fixed cost of a CLI call (derived)") or {}
        load = rows.get("model loading in a CLI call (measured)") or {}
        out.append((f"batch command: >= 1.0x the jobs/hour of {batch['jobs']} separate CLI calls on the same clips",
                    f"{batch['speedup']}x ({batch['jobs_per_hour']} vs {cli['jobs_per_hour']} jobs/hour, "
                    f"{batch['s_per_job']} vs {cli['s_per_job']} s/job); model loading {load.get('share_pct')} % "
                    f"of a CLI call, all fixed costs {fixed.get('share_pct')} %",
                    "met" if batch["speedup"] >= 1.0 else "not met"))
    scale = list(_rows(report, "scale"))
    ray_runs = [r for r in scale if r.get("actors") and r.get("jobs_per_hour") is not None]
    init = next((r for r in scale if str(r.get("stage", "")).startswith("ray.init")), {})
    if len(ray_runs) >= 2:
        one, two = ray_runs[0], ray_runs[1]
        loads = "; ".join(f"{r['actors']} actor{'s' if r['actors'] > 1 else ''}: start {r.get('actor_start_s')} s + "
                          f"model load {r.get('model_load_s')} s per actor" for r in (one, two))
        out.append((f"batch on Ray: 2 actors vs 1 on the same {one['jobs']} jobs (one machine; on N GPUs jobs/hour ~ "
                    "N x 3600 / s per job, less Ray's start and one model load per actor)",
                    f"{two['speedup']}x ({two['jobs_per_hour']} vs {one['jobs_per_hour']} jobs/hour); ray.init "
                    f"{init.get('seconds')} s; {loads}",
                    "- (2 actors share 2 CPU cores: bounded by the cores)" if not on_gpu else "-"))
    sharded = [r for r in scale if str(r.get("stage", "")).startswith("long clip sharded,")]
    bit = next((r for r in scale if str(r.get("stage", "")).startswith("long clip sharded vs unsharded at batch 1")),
               None)
    if sharded and bit:
        full = next((r for r in scale if str(r.get("stage", "")).startswith("full-size networks")), None)
        diffs = ", ".join(f"{r['stage'].split(', ', 1)[1]} {r['max_abs_diff']}" for r in sharded)
        out.append(("long clip in shards at its shot cuts: frames equal to the unsharded run at batch 1 (larger "
                    "batches: the measured difference)",
                    f"max abs pixel difference {bit['max_abs_diff']} at batch 1; {diffs}"
                    + (f"; full-size networks at batch {full['batch_size']}: {full['max_abs_diff']}" if full else "")
                    + f"; speed-up vs unsharded ({sharded[0].get('networks', '')} networks) "
                    + ", ".join(f"{r['stage'].split(', ', 1)[1].split(' (')[0]} {r['speedup']}x" for r in sharded)
                    + (f", full-size networks 1 worker {full['speedup']}x" if full else ""),
                    "met" if bit["max_abs_diff"] == 0 and bit["frames_differing"] == 0 else "not met"))
    nets = {r.get("stage"): r for r in report.get("networks", {}).get("rows", [])}
    frame = nets.get("per output frame")
    if frame:
        setup = nets.get("versions", {})
        out.append(("fp32 networks (VAE encode, UNet, VAE decode) <= 1.00x the original MuseTalk's time per output "
                    "frame, same weights and threads (bench/networks.py)",
                    f"{frame['ours_over_original']:.2f}x by the median, {frame['ours_over_original_min']:.2f}x by the "
                    f"minimum, {frame['ours_over_original_paired']:.2f}x paired, {frame['ours_over_original_cpu']:.2f}x"
                    f" CPU time ({setup.get('rounds')} rounds; heap: ours {setup.get('ours', {}).get('heap', '?')}, "
                    f"original {setup.get('original', {}).get('heap', '?')})",
                    "met" if max(frame["ours_over_original"], frame["ours_over_original_min"]) <= 1.0 else "not met"))
    whole = next((r for r in _rows(report, "long") if r.get("stage") == "whole run"), None)
    if whole:
        out.append((f"{whole['minutes']:g}-minute {whole['resolution']} clip streamed with peak RSS <= "
                    f"{whole['target_gb']:g} GB",
                    f"{whole['peak_gb']} GB peak ({whole['frames']} frames, {whole['face_frames']} synced)",
                    "met" if whole["met"] else "not met"))
    return out


def markdown(report: dict) -> str:
    roof = report["roofline"]
    lines = [f"Device: **{roof['device_name']}** ({report['machine'].get('cpu', '')}, "
             f"{report['machine'].get('cores', '?')} cores, torch {report['machine'].get('torch', '')}); "
             f"mode: {report['mode']}; measured matmul roofline {roof['gflops']} GFLOP/s ({roof['dtype']}).", ""]
    fresh = [b["benchmark"] for b in report["benchmarks"] if not b.get("reused") and not b.get("error")]
    if report.get("machine_now") and fresh:
        now = report["machine_now"]
        lines[0] += (f" Reused figures; {', '.join(fresh)} measured on {now.get('cpu', '')} ({now.get('cores', '?')} "
                     "cores) in this run.")
    goals = targets(report)
    if goals:
        lines += ["| target | measured | verdict |", "| --- | --- | --- |"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in goals]
        lines.append("")
    lines += ["| benchmark | stage | frames/s | s/frame | GFLOP/s | % roofline | peak RSS MB | note |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for b in report["benchmarks"]:
        if b.get("error"):
            lines.append(f"| {b['benchmark']} | (failed) | | | | | | {b['error'].splitlines()[-1][:80]} |")
            continue
        for r in b.get("results", []):
            g = r.get("gflops")
            pct = f"{100 * g / roof['gflops']:.0f}" if g and roof["gflops"] else "-"
            label = r.get("stage") or r.get("name") or r.get("what") or r.get("backend") or r.get("source") or ""
            if r.get("resolution") and str(r.get("resolution")) not in label:
                label = f"{label} {r['resolution']}"
            note = r.get("note", "")
            if r.get("ratio") is not None:
                note = f"ratio {r['ratio']} (CPU s {r.get('ratio_cpu')})"
            if r.get("iou_mean") is not None:
                note = f"crop IoU {r['iou_mean']} (min {r['iou_min']}), align {r['align_mean_pct']} %"
            if r.get("jobs_per_hour") is not None:
                note = f"{r['jobs']} jobs: {r['jobs_per_hour']} jobs/hour, {r['s_per_job']} s/job, x{r['speedup']}"
            elif b.get("benchmark") == "batch" and r.get("share_pct") is not None:
                note = f"{r['seconds']} s, {r['share_pct']} % of a CLI call"
            lines.append(f"| {b['benchmark']} | {label} | {fmt(r.get('fps'))} | {fmt(r.get('s_per_frame'))} | "
                         f"{fmt(g)} | {pct} | {fmt(r.get('rss_peak_mb'))} | {str(note)[:70]} |")
    return "\n".join(lines) + "\n"


def update_readme(path: str, md: str, header: str) -> bool:
    """Replace the text between the README's bench markers with ``md``; False when the markers are missing."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    a, b = text.find(README_START), text.find(README_END)
    if a < 0 or b < a:
        return False
    new = text[:a + len(README_START)] + "\n" + header + "\n\n" + md + text[b:]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(new)
    os.replace(tmp, path)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(SCRIPTS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--markdown", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--reuse", action="store_true", help="take a benchmark's JSON from an earlier run in the same "
                                                         "results folder instead of running it again")
    ap.add_argument("--readme", default=os.path.join(ROOT, "README.md"), help=argparse.SUPPRESS)
    ap.add_argument("--update-readme", action="store_true", help="write the tables between the README's "
                                                                 f"{README_START} / {README_END} markers")
    args = ap.parse_args(argv)
    sys.path.insert(0, HERE)
    import common  # noqa: E402

    names = [n.strip() for n in args.only.split(",") if n.strip()]
    bad = [n for n in names if n not in SCRIPTS]
    if bad:
        ap.error(f"unknown benchmark(s) {bad}; choose from {', '.join(SCRIPTS)}")
    report = {"mode": "quick" if args.quick else "full", "machine": common.machine_info(),
              "roofline": matmul_roofline(args.device), "benchmarks": []}
    dev = report["roofline"]["device_name"].replace(" ", "_")
    path = os.path.join(args.out, f"{report['mode']}-{dev}.json")
    if args.reuse and os.path.isfile(path):
        # reused figures keep the roofline and the machine they were measured on (their % of roofline stays
        # theirs); what runs now is named with this machine in the header
        with open(path) as f:
            before = json.load(f)
        report["roofline"] = before.get("roofline", report["roofline"])
        report["machine_now"] = report["machine"]
        report["machine"] = before.get("machine", report["machine"])
    per_script = os.path.join(args.out, f"{report['mode']}-{dev}")
    os.makedirs(per_script, exist_ok=True)
    for name in names:
        print(f"== {name}", flush=True)
        extra = ["--device", args.device] if args.device != "auto" else []
        report["benchmarks"].append(run_script(name, args.quick, extra, per_script, args.reuse))
    networks = os.path.join(per_script, "networks.json")   # bench/networks.py's, run beside the original's venv
    if os.path.isfile(networks):
        with open(networks) as f:
            report["networks"] = json.load(f)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    md = markdown(report)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"# Benchmark results ({report['mode']})\n\nGenerated by `python bench/run_all.py"
                    f"{' --quick' if args.quick else ''}`.\n\n{md}")
    if args.update_readme:
        header = (f"Generated by `python bench/run_all.py{' --quick' if args.quick else ''} --update-readme` on "
                  f"{time.strftime('%Y-%m-%d')} ({report['mode']} size); details and every column in "
                  "[bench/README.md](bench/README.md).")
        if not update_readme(args.readme, md, header):
            print(f"README.md has no {README_START} / {README_END} markers; not updated", file=sys.stderr)
    print(md)
    failed = [b["benchmark"] for b in report["benchmarks"] if b.get("error")]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
