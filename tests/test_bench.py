"""The benchmark scripts run (``--quick``, as subprocesses) and write JSON with the expected keys and positive numbers.

No speed is asserted: only that every measurement happened and is a sane, positive quantity.
"""
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600  # generous: the shared CI box may be loaded; a quiet machine needs well under a minute per script


def run_bench(script, tmp_path, *extra):
    out = tmp_path / (script.replace(".py", "") + ".json")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), "--quick", "--json", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "| " in proc.stdout, "no markdown table printed"
    with open(out) as fh:
        return json.load(fh), proc.stdout


def positive(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_common(doc, name):
    assert doc["benchmark"] == name
    assert doc["mode"] == "quick"
    m = doc["machine"]
    for key in ("cpu", "cores", "torch_threads", "torch", "load_average_after"):
        assert key in m
    assert positive(m["cores"]) and positive(m["torch_threads"])
    assert positive(doc["process_peak_rss_mb"])
    assert isinstance(doc["results"], list) and doc["results"]


def test_media_quick(tmp_path):
    doc, stdout = run_bench("media.py", tmp_path)
    check_common(doc, "media")
    rows = doc["results"]
    enc = [r for r in rows if r["test"] == "encode"]
    dec = [r for r in rows if r["test"] == "decode"]
    stream = [r for r in rows if r["test"] == "stream"]
    assert {(r["resolution"], r["preset"]) for r in enc} == {(res, p) for res in ("720p", "1080p")
                                                             for p in ("medium", "fast")}
    assert {r["resolution"] for r in dec} == {"720p", "1080p"}
    for r in enc + dec:
        for key in ("frames", "seconds", "fps", "rss_peak_mb"):
            assert positive(r[key]), (r, key)
        assert r["frames"] == 12
    for r in enc:
        assert positive(r["file_mb"]) and positive(r["mbit_s"]) and r["crf"] == 19
    for r in dec:
        assert positive(r["probe_s"]) and positive(r["fps_incl_probe"])
    assert len(stream) == 1
    s = stream[0]
    assert s["frames"] == 300 and s["resolution"] == "720p"
    for key in ("seconds", "fps", "rss_before_mb", "rss_peak_mb", "rss_end_mb", "extrapolated_rss_mb_at_15000_frames"):
        assert positive(s[key]), key
    assert s["rss_peak_mb"] >= s["rss_before_mb"]
    assert isinstance(s["rss_growth_mb_per_1000_frames"], (int, float))   # may be ~0 or slightly negative
    assert s["rss_at_frames_mb"] and "300" in s["rss_at_frames_mb"]
    assert "extrapolated" in s["note"]


def test_lipsync_quick(tmp_path):
    doc, stdout = run_bench("lipsync.py", tmp_path)
    check_common(doc, "lipsync")
    assert doc["weights"].startswith("random")
    assert doc["device"] and doc["dtype"]
    by_stage = {r["stage"]: r for r in doc["results"]}
    expected = ["encode video", "decode video", "detect faces (mtcnn)", "audio features (whisper)",
                "crop (LANCZOS4 256)", "vae_encode (x2 per source frame)", "unet", "vae_decode", "blend feather",
                "blend jaw", "per-frame sum", "e2e (file -> faces -> audio -> run_lipsync -> mp4)",
                "original offline path (jaw, PNGs)", "ours run_lipsync (jaw, streamed)"]
    for name in expected:
        assert name in by_stage, f"missing stage {name!r}"
        r = by_stage[name]
        for key in ("frames", "seconds", "s_per_frame", "fps"):
            assert positive(r[key]), (name, key, r.get(key))
    for name in ("vae_encode (x2 per source frame)", "unet", "vae_decode"):
        r = by_stage[name]
        assert positive(r["gflop_per_frame"]) and positive(r["gflops"]), name
        assert r["batch"] == 8
    # FLOPs were counted on the small quick configs: far below the full-size networks
    assert by_stage["unet"]["gflop_per_frame"] < 178
    assert positive(by_stage["audio features (whisper)"]["audio_s_per_s"])
    vram = by_stage["VRAM estimate (fp16, batch 8)"]
    assert positive(vram["weights_mb"]) and positive(vram["activations_unet_decode_mb"])
    assert positive(vram["activations_encode_mb"])
    assert math.isclose(vram["vram_estimate_mb"], vram["weights_mb"] + max(vram["activations_encode_mb"],
                                                                           vram["activations_unet_decode_mb"]),
                        abs_tol=0.2)
    e2e = by_stage["e2e (file -> faces -> audio -> run_lipsync -> mp4)"]
    assert e2e["synced"] == 4 and e2e["passed_through"] == 2 and e2e["output_frames_in_file"] == 6
    orig = by_stage["original offline path (jaw, PNGs)"]
    assert set(orig["steps"]) == {"read_frames_png", "vae_encode_per_frame", "unet_vae_decode_batched",
                                  "blend_jaw_png_per_frame", "encode_png_then_mux_reencode"}
    assert all(positive(v) for v in orig["steps"].values())
    ratio = by_stage["speed ratio original/ours"]
    assert positive(ratio["ratio"])
    assert math.isclose(ratio["ratio"], orig["seconds"] / by_stage["ours run_lipsync (jaw, streamed)"]["seconds"],
                        rel_tol=0.01)
    assert "speed ratio" in stdout


def test_networks_side_by_side_quick(small_models_dir, tmp_path):
    """bench/networks.py with both sides on this interpreter's diffusers: the original's steps (MuseTalk's VAE and
    UNet calls) compute what our engine computes, so the check rows agree and every stage is timed."""
    out = tmp_path / "networks.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "networks.py"), "--quick", "--models",
                           small_models_dir, "--threads", "1", "--json", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["stage"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["versions"]["ours"]["diffusers"] == rows["versions"]["original"]["diffusers"]
    assert rows["check unet"]["max_abs_diff"] == 0.0 and rows["check unet"]["shape"] == [1, 4, 32, 32]
    assert rows["check encode"]["max_abs_diff"] < 1e-5 and rows["check encode"]["shape"] == [1, 8, 32, 32]
    assert rows["check decode"]["max_abs_diff"] <= 1.0 and rows["check decode"]["shape"] == [1, 256, 256, 3]
    for stage in ("encode", "unet", "decode", "per output frame"):
        assert positive(rows[stage]["ours_median_s"]) and positive(rows[stage]["original_median_s"])
        assert math.isclose(rows[stage]["ours_over_original"],
                            rows[stage]["ours_median_s"] / rows[stage]["original_median_s"])


@pytest.mark.parametrize("script", ["media.py", "lipsync.py", "long.py", "batch.py"])
def test_help_documents_quick_and_json(script):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "--quick" in proc.stdout and "--json" in proc.stdout


def test_latentsync_quick(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "ls.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "latentsync.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(out.read_text())
    stages = {r["stage"]: r for r in d["results"]}
    for key in ("align (3-point warp + Lanczos)", "chunk (no DeepCache)", "chunk (DeepCache)", "restore (better paste)"):
        assert stages[key]["seconds"] > 0, key
    assert d["resolution"] == 64 and d["benchmark"] == "latentsync"
    vram = stages["VRAM estimate (fp16, chunk 4, CFG)"]
    assert vram["activations_mb"] > 0 and vram["weights_mb"] > 75  # whisper-tiny alone is ~75 MB in fp16
    assert math.isclose(vram["vram_estimate_mb"], vram["weights_mb"] + vram["activations_mb"], abs_tol=0.2)


def test_long_quick(tmp_path):
    """The long-clip streaming benchmark: every frame out, face shots synced, cutaways passed through, the RSS
    measured per phase with a slope, and the verdict against the target computed from the measured peak."""
    doc, stdout = run_bench("long.py", tmp_path)
    check_common(doc, "long")
    rows = {r["stage"].split(" (")[0]: r for r in doc["results"]}
    whole = rows["whole run"]
    assert whole["frames"] == 300 and whole["output_ok"] is True  # 0.2 min at 25 fps
    sync = next(r for r in doc["results"] if r["stage"].startswith("run_lipsync"))
    assert sync["output_frames_in_file"] == 300 and sync["synced"] == whole["face_frames"] == 12
    assert sync["passed_through"] == 300 - 12
    assert isinstance(sync["rss_slope_mb_per_1000"], float)
    for key in ("load models", "faces", "audio features"):
        assert positive(rows[key]["seconds"]) and positive(rows[key]["rss_peak_mb"])
    assert whole["met"] == (whole["rss_peak_mb"] / 1024 <= whole["target_gb"])
    assert len(doc["rss_curve_lipsync"]) >= 3 and "peak RSS" in stdout


def test_live_tensor_peak_counts_activations_not_weights():
    """The op tracer behind the VRAM estimate: new storages counted while alive, views not twice, weights never."""
    import torch

    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import common

    w = torch.ones(10_000)
    with common.LiveTensorPeak(exclude=[w]) as live:
        a = torch.ones(1000)          # 4000 B
        b = a * 2                     # 8000 B alive
        del a                         # 4000
        c = (b + 1).view(10, 100)     # 8000: the view shares its storage
        v = w.view(100, 100)          # a view of a weight: not counted
        c.add_(1)                     # in place: no new storage
        d = torch.cat([b, b])         # 16000
    assert live.peak_bytes == 16000 and live.current == 16000
    del b, c, d
    assert live.current == 0 and v.shape == (100, 100)


def test_run_all_collects_targets_and_updates_readme_markers(tmp_path):
    """run_all: each script's JSON kept per benchmark (reused with --reuse), a targets table computed from the
    measurements, and only the text between the README markers replaced."""
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nbefore\n<!-- bench:start -->\nold table\n<!-- bench:end -->\nafter\n")
    out, md = tmp_path / "results", tmp_path / "RESULTS.md"
    cmd = [sys.executable, os.path.join(ROOT, "bench", "run_all.py"), "--quick", "--only", "audio,long",
           "--out", str(out), "--markdown", str(md), "--update-readme", "--readme", str(readme)]
    assert cmd[-3:] == ["--update-readme", "--readme", str(readme)]  # the --reuse run below drops all three
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(next(out.glob("quick-*.json")).read_text())
    assert [b["benchmark"] for b in report["benchmarks"]] == ["audio", "long"]
    assert all(b["returncode"] == 0 and b["results"] for b in report["benchmarks"])
    assert positive(report["roofline"]["gflops"])
    per_script = next(p for p in out.iterdir() if p.is_dir())
    assert {p.name for p in per_script.iterdir()} == {"audio.json", "long.json"}
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n<!-- bench:start -->\n") and text.endswith("<!-- bench:end -->\nafter\n")
    assert "old table" not in text and "| target | measured | verdict |" in text and "peak RSS" in text
    assert "whisper-tiny musetalk" in md.read_text()
    # --reuse takes the JSON already there instead of running the script again
    stamp = (per_script / "long.json").stat().st_mtime_ns
    proc = subprocess.run(cmd[:-3] + ["--reuse"], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0 and (per_script / "long.json").stat().st_mtime_ns == stamp


def test_geometry_quick(tmp_path):
    """bench/geometry.py: a row per landmark source; the default path and the 5-point estimate are measured on the
    astronaut (dlib installed), sources without real weights say why they were not measured."""
    pytest.importorskip("dlib")
    doc, stdout = run_bench("geometry.py", tmp_path)
    check_common(doc, "geometry")
    rows = {r["source"].split(" (")[0]: r for r in doc["results"]}
    assert {"default", "dwpose", "fan", "dlib", "5-point estimate"} <= set(rows)
    for name in ("default", "5-point estimate"):
        r = rows[name]
        assert r["faces"] >= 2 and 0 < r["iou_min"] <= r["iou_mean"] <= 1 and r["align_mean_pct"] >= 0
        assert 0 < r["clip_iou"] <= 1 and r["jitter_px"] >= 0
    assert rows["default"]["iou_mean"] > rows["5-point estimate"]["iou_mean"]
    assert positive(rows["default"]["ms_per_face"]) and rows["5-point estimate"]["ms_per_face"] >= 0
    assert rows["dwpose"].get("note", "").startswith("not measured")


def test_avatars_quick(tmp_path):
    """The avatar benchmark: the full path, the one-time preparation and speaking measured on the same clip and voice,
    the same number of output frames, a speed-up and a first-frame time computed from the measurements."""
    doc, stdout = run_bench("avatars.py", tmp_path)
    check_common(doc, "avatars")
    rows = {r["stage"].split(" (")[0]: r for r in doc["results"]}
    full, prep, speak = rows["full path"], rows["prepare avatar"], rows["speak"]
    assert full["frames"] == speak["frames"] == 16 and prep["frames"] == 8
    for r in (full, prep, speak):
        assert positive(r["seconds"]) and positive(r["s_per_frame"]) and positive(r["rss_peak_mb"])
    assert speak["speedup"] == pytest.approx(full["s_per_frame"] / speak["s_per_frame"], rel=0.02)
    assert 0 < rows["first frame"]["seconds"] <= speak["seconds"]
    live = rows["live: first frame after the first 200 ms of voice"]
    assert live["frames"] == 16 and positive(live["seconds"]) and positive(live["s_per_frame"])


def test_batch_quick(tmp_path):
    """bench/batch.py: the batch command once and a CLI call per clip on the same 2 clips, each a fresh process;
    jobs/hour and the speed-up computed from the measured seconds, the fixed cost of a CLI call derived from the
    batch's own per-job seconds, and the model loading measured inside a CLI dub."""
    doc, stdout = run_bench("batch.py", tmp_path)
    check_common(doc, "batch")
    rows = {r["stage"]: r for r in doc["results"]}
    batch, cli = rows["batch (one process)"], rows["separate CLI calls"]
    for r in (batch, cli):
        assert r["jobs"] == 2
        for key in ("seconds", "s_per_job", "jobs_per_hour", "speedup", "rss_peak_mb"):
            assert positive(r[key]), (r["stage"], key)
        assert r["s_per_job"] == pytest.approx(r["seconds"] / 2, abs=0.01)
        assert r["jobs_per_hour"] == pytest.approx(3600 / r["s_per_job"], rel=0.01)
    assert batch["speedup"] == pytest.approx(cli["seconds"] / batch["seconds"], rel=0.01)
    assert len(batch["job_seconds"]) == 2 and all(positive(s) for s in batch["job_seconds"])
    assert batch["steady_s_per_job"] == pytest.approx(batch["job_seconds"][1], abs=0.01)
    assert all(positive(n) for n in batch["synced_frames"]) and batch["output_frames"] == [6, 6]
    assert len(cli["call_seconds"]) == 2 and all(positive(s) for s in cli["call_seconds"])
    fixed = rows["fixed cost of a CLI call (derived)"]
    assert fixed["seconds"] == pytest.approx(cli["s_per_job"] - batch["steady_s_per_job"], abs=0.02)
    assert fixed["share_pct"] == pytest.approx(100 * fixed["seconds"] / cli["s_per_job"], abs=0.2)
    load = rows["model loading in a CLI call (measured)"]
    assert positive(load["seconds"]) and 0 < load["share_pct"] < 100 and positive(load["probe_wall_s"])
    assert {"backends.musetalk", "audio.whisper", "faces.mtcnn"} <= set(load["loads"])
    assert load["seconds"] == pytest.approx(sum(load["loads"].values()), abs=0.05)
    start = rows["start-up and exit of a CLI call (measured)"]
    assert positive(start["seconds"]) and positive(start["import_s"]) and 0 < start["share_pct"] < 100
    assert "jobs/hour" in stdout


def test_gpu_check_dry_run(tmp_path):
    """bench/gpu_check.sh --dry-run: every step of the GPU check on the CPU with small networks, within its budget;
    at most 8 result files; the summary has a line for each figure, the device frame ops equal the OpenCV/Pillow
    path, and (with the parity fixtures) fp32 and bf16 stay within their bounds of the original's outputs."""
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, HF_HUB_OFFLINE="1")
    proc = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"gpu_check --dry-run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    files = sorted(os.listdir(tmp_path))
    assert len(files) <= 8 and {"summary.txt", "device_check.json", "gpu_check.log"} <= set(files), files
    summary = (tmp_path / "summary.txt").read_text()
    for line in ("frame_ops torch vs cv2 | crops equal True | patches equal True", "networks batch 2 | full path",
                 "encoder libx264 | libx264", "encoder nvenc |", "compile |", "avatars | live", "lipsync | e2e",
                 "latentsync 1.5 |"):
        assert line in summary, f"{line!r} missing from:\n{summary}"
    parts = json.loads((tmp_path / "device_check.json").read_text())["parts"]
    shares = parts["networks"]["batches"]["2"]["share"]
    assert sum(shares.values()) == pytest.approx(1.0, abs=0.01) and all(positive(v) for v in shares.values())
    assert positive(parts["networks"]["batches"]["2"]["networks_pct_of_roofline"])
    if "skipped" not in parts["precision"]:
        assert parts["precision"]["ok"] and set(parts["precision"]["dtypes"]) == {"fp32", "bf16"}
        assert "precision fp32 vs the original's fp32" in summary
