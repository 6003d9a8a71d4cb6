"""Run workflows inside the REAL ComfyUI server (../shared/tools/comfy_real.sh) when a ComfyUI checkout built by
../shared/tools/comfy_real_setup.sh is on this machine; skipped otherwise (a user's clone has neither)."""
import glob
import os

import comfyharness as ch
import mediakit as mk
from conftest import ROOT

SMOKE = sorted(glob.glob(os.path.join(ROOT, "tests", "workflows", "smoke_*.json")))


def smoke_clip(tmp_path):
    clip = str(tmp_path / "smoke_clip.mp4")
    mk.write_video(clip, mk.animate(mk.photo("astronaut", (160, 120)), 50), 25, crf=18,
                   audio=mk.tone(440, 2.0, 44100, 2), audio_rate=44100)
    return clip


def check_smoke_outputs(run_dir, n_workflows):
    from musetalk_enhanced.pipeline.media.video import probe_video

    outputs = glob.glob(os.path.join(run_dir, "output", "smoke", "*.mp4"))
    assert len(outputs) >= n_workflows
    for p in outputs:
        info = probe_video(p)
        assert info.frame_count >= 40 and info.has_audio


@ch.needs_comfy
def test_smoke_workflows_run_in_real_comfyui(tmp_path):
    rc, out, run_dir = ch.run(ch.REAL_SH, [ROOT, *SMOKE], tmp_path, COMFY_REAL_INPUTS=smoke_clip(tmp_path))
    assert rc == 0, out[-6000:]
    assert f"{len(SMOKE)} passed, 0 failed" in out
    check_smoke_outputs(run_dir, len(SMOKE))
