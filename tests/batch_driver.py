"""Runs ``python <pack> batch ...`` in this process and sends itself a signal at a point chosen by a hook, not by
timing: ``batch_driver.py JOB STAGE SIGNAL -- <batch arguments>`` signals when job number JOB (from 0) first reports
progress of STAGE (e.g. ``lip-sync``). Used by tests/test_batch.py to kill a batch mid-job."""
import os
import runpy
import signal
import sys

runpy.run_path(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bootstrap.py"))[
    "import_pack"]()
from musetalk_enhanced.__main__ import main  # noqa: E402
from musetalk_enhanced.pipeline.jobs import batch  # noqa: E402

job, stage, signame = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sent = []
emit = batch.BatchRun._emit


def signalling_emit(self, event, i, batch_job, detail):
    emit(self, event, i, batch_job, detail)
    if event == "progress" and i == job and detail["stage"] == stage and not sent:
        sent.append(1)
        os.kill(os.getpid(), getattr(signal, signame))


batch.BatchRun._emit = signalling_emit
sys.exit(main(["batch"] + sys.argv[sys.argv.index("--") + 1:]))
