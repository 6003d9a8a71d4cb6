"""pipeline/cpu_heap.py: the pack's own processes keep the memory they free, so a network's next call reuses
mapped pages instead of faulting in fresh zeroed ones; each case runs in a fresh interpreter (the setting is per
process and cannot be undone)."""
import os
import platform
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAP = os.path.join(ROOT, "pipeline", "cpu_heap.py")

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the heap setting is glibc's")

# A network's call as the VAE makes them (convolution, SiLU, GroupNorm: fresh 36 MB activations, past the
# largest mmap threshold glibc sets on its own, 32 MB; freed at its end),
# called three times to warm up; the median page faults of the next five calls are printed last (glibc's bins now
# and then leave one call a block short).
CALL = """
import resource
import torch
torch.set_num_threads(1)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(8, 64, 3, padding=1), torch.nn.SiLU(), torch.nn.GroupNorm(8, 64),
                          torch.nn.Conv2d(64, 8, 3, padding=1))
x = torch.randn(1, 8, 384, 384)
with torch.inference_mode():
    for _ in range(3):
        net(x)
    faults = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults)[2])
"""
ACTIVATION_PAGES = (64 * 384 * 384 * 4) // 4096      # one activation of the call (36 MB), in 4 KB pages
# 4 KB pages whatever the host's transparent huge pages setting (prctl PR_SET_THP_DISABLE), so a fresh block faults
# once per 4 KB page and the counts compare across machines
SMALL_PAGES = "import ctypes; ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)\n"


def faults_after(setup: str, env=None) -> tuple:
    """(what the setup printed, the page faults of a warm network call) in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", SMALL_PAGES + setup + CALL], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, **(env or {})), cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    return "\n".join(lines[:-2]), int(lines[-2])


def test_kept_memory_is_reused_without_faults():
    said, faults = faults_after(f"import runpy; h = runpy.run_path({HEAP!r}); print(h['keep_freed_memory']()); "
                                "print(h['keep_freed_memory']())")
    assert said.split() == ["kept", "kept"]                      # once; a second call gives the first answer
    assert faults < ACTIVATION_PAGES // 8, faults


def test_glibc_defaults_fault_every_page_and_the_opt_out_keeps_them():
    _, plain = faults_after("")
    assert plain > ACTIVATION_PAGES, plain              # fresh pages for the call's activations
    said, opted_out = faults_after(f"import runpy; print(runpy.run_path({HEAP!r})['keep_freed_memory']())",
                                   env={"MUSETALK_KEEP_FREED_MEMORY": "0"})
    assert said == "glibc defaults (MUSETALK_KEEP_FREED_MEMORY=0)"
    assert opted_out > ACTIVATION_PAGES, opted_out


def test_the_environment_form_matches_the_call():
    from musetalk_enhanced.pipeline import cpu_heap

    _, faults = faults_after("", env=cpu_heap.environment())       # e.g. how ComfyUI can be started
    assert faults < ACTIVATION_PAGES // 8, faults


def test_the_pack_command_and_the_worker_boot_keep_freed_memory():
    # ``python <pack folder> --help``: __main__.py run as a program, as the command line does
    command = (f"import runpy, sys; sys.argv = ['musetalk_enhanced', '--help']\n"
               f"try:\n    runpy.run_path({ROOT!r}, run_name='__main__')\nexcept SystemExit as e:\n"
               f"    assert e.code == 0\n")
    _, faults = faults_after(command)
    assert faults < ACTIVATION_PAGES // 8, faults
    # a shard worker or Ray actor (pipeline/jobs/boot.py)
    boot = os.path.join(ROOT, "pipeline", "jobs", "boot.py")
    _, faults = faults_after(f"import runpy; runpy.run_path({boot!r}, {{'PACK_NAME': 'musetalk_enhanced', "
                             f"'PACK_DIR': {ROOT!r}, 'THREADS': 1}})\n")
    assert faults < ACTIVATION_PAGES // 8, faults
