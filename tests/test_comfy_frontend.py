"""The example workflows in the REAL ComfyUI web page (../shared/tools/comfy_frontend.sh: the real server and its
frontend in headless Chromium), loaded and run the way a user does it: no dialog, no red node, no invalid widget
value, no two nodes overlapping once the page has sized them (video previews included), and Run from the page.

On top of the harness's checks: every node's ``widgets_values`` as the page serializes it after the load equals
the saved one (the file holds exactly what the frontend produces), and no node grows past its saved size.

Skipped without a ComfyUI checkout from ../shared/tools/comfy_real_setup.sh with the frontend mode (playwright +
Debian's chromium).
The VideoHelperSuite example is checked when MUSETALK_TEST_VHS_DIR names a checkout of that pack. Running every
example to the end with full-size random weights takes minutes each on a CPU: MUSETALK_TEST_REAL_WORKFLOWS=1."""
import glob
import json
import os

import pytest

import comfyharness as ch
from conftest import ROOT
from test_comfy_real import SMOKE, check_smoke_outputs, smoke_clip

SLUGS = [s for s in ch.media.TEMPLATES if s != "vhs_lipsync" or os.path.isdir(ch.VHS_DIR)]


def placeholder_models(dest, workflows):
    """An empty file for every model the workflows list: the page only compares names with the server's listing."""
    for path in workflows:
        with open(path, encoding="utf-8") as f:
            for m in json.load(f).get("models") or []:
                p = os.path.join(dest, m["directory"], m["name"])
                os.makedirs(os.path.dirname(p), exist_ok=True)
                open(p, "wb").close()
    return str(dest)


def page_findings(run_dir):
    """Per node: saved widgets_values vs what the page serializes after the load, saved size vs the page's size."""
    with open(os.path.join(run_dir, "frontend", "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    problems = []
    for r in results:
        with open(r["path"], encoding="utf-8") as f:
            saved = {n["id"]: n for n in json.load(f)["nodes"]}
        for n in r["nodes"]:
            s = saved[n["id"]]
            where = f"{r['name']} node {n['id']} {n['type']}"
            sv, pv = s.get("widgets_values"), n["serialized"]
            if isinstance(sv, list) and sv != pv:
                problems.append(f"{where}: saved widgets_values {sv!r}, the page serializes {pv!r}")
            w, h = n["size"]
            if w > s["size"][0] + 2 or h > s["size"][1] + 2:
                problems.append(f"{where}: saved size {s['size']}, the page sizes it {[round(w), round(h)]}")
    return problems


@ch.needs_page
def test_examples_load_cleanly_in_the_page(tmp_path):
    paths = [ch.example(s) for s in SLUGS]
    models = placeholder_models(tmp_path / "models", paths)
    rc, out, run_dir = ch.run(ch.FRONTEND_SH, ["--load-only", ROOT, *paths], tmp_path, timeout=1200,
                              COMFY_REAL_MODELS_DIR=models, COMFY_REAL_EXTRA_NODES=ch.VHS_DIR, COMFY_REAL_ISOLATE=1)
    assert rc == 0 and f"{len(paths)} passed, 0 failed" in out, out[-8000:]
    problems = page_findings(run_dir)
    assert not problems, "\n".join(problems)


@ch.needs_page
def test_a_shifted_upload_value_fails_in_the_page(tmp_path):
    """The check can fail: the upload button's value saved right after the file (the frontend adds that widget
    last) shifts every later value, as in the workflows of the first release."""
    with open(ch.example("musetalk_basic"), encoding="utf-8") as f:
        wf = json.load(f)
    loader = next(n for n in wf["nodes"] if n["type"] == "MuseTalkLoadVideo")
    values = loader["widgets_values"]
    loader["widgets_values"] = [values[0], values[-1]] + values[1:-1]
    bad = tmp_path / "shifted.json"
    bad.write_text(json.dumps(wf))
    models = placeholder_models(tmp_path / "models", [str(bad)])
    rc, out, _ = ch.run(ch.FRONTEND_SH, ["--load-only", ROOT, str(bad)], tmp_path, timeout=900,
                        COMFY_REAL_MODELS_DIR=models, COMFY_REAL_ISOLATE=1)
    assert rc == 1 and "0 passed, 1 failed" in out, out[-4000:]
    assert "MuseTalkLoadVideo.force_rate = 'image'" in out


@ch.needs_page
def test_smoke_workflows_run_from_the_page(tmp_path):
    rc, out, run_dir = ch.run(ch.FRONTEND_SH, [ROOT, *SMOKE], tmp_path, timeout=1200,
                              COMFY_REAL_INPUTS=smoke_clip(tmp_path), COMFY_REAL_ISOLATE=1)
    assert rc == 0 and f"{len(SMOKE)} passed, 0 failed" in out, out[-8000:]
    check_smoke_outputs(run_dir, len(SMOKE))


@pytest.mark.skipif(not ch.REAL, reason="set MUSETALK_TEST_REAL_WORKFLOWS=1 to run every example to the end from "
                                        "the page (minutes each on a CPU)")
@ch.needs_page
@pytest.mark.parametrize("slug", SLUGS)
def test_example_runs_from_the_page(slug, tmp_path):
    """Queued from the page with full-size random weights, shortened (REAL_SET): each writes an mp4 with the voice;
    the LatentSync example, without LatentSync weights, falls back to MuseTalk and says so."""
    rc, out, run_dir = ch.run(ch.FRONTEND_SH, [ROOT, ch.example(slug)], tmp_path, timeout=3600,
                              COMFY_REAL_MODELS_DIR=ch.test_weights(), COMFY_REAL_EXTRA_NODES=ch.VHS_DIR,
                              COMFY_REAL_ISOLATE=1, COMFY_REAL_SET=ch.real_set([slug]),
                              COMFY_REAL_TIMEOUT=os.environ.get("COMFY_REAL_TIMEOUT", "2400"))
    assert rc == 0 and "1 passed, 0 failed" in out, out[-8000:]
    from musetalk_enhanced.pipeline.media.video import probe_video

    videos = glob.glob(os.path.join(run_dir, "output", "**", "*.mp4"), recursive=True)
    infos = {v: probe_video(v) for v in videos}
    assert infos and all(i.frame_count >= 12 for i in infos.values()), infos
    # every video has the dubbed audio, except VideoHelperSuite's silent copy beside its "-audio" file
    silent = [v for v, i in infos.items() if not i.has_audio]
    assert all(v.replace(".mp4", "-audio.mp4") in infos for v in silent), silent
    assert any(i.has_audio for i in infos.values())
