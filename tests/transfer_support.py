"""The transfer job of the kill -9 resume test (tests/test_task_resume.py), run as a script:

    python tests/transfer_support.py OUT.json [PROGRESS_DIR [SECONDS_PER_STEP]]

runs the mini-sized ``transfer`` task on digits (a seeded TinyBackbone, 2 x 2 grid points of 12
steps, then the retrain on train+val), checkpointing every step into PROGRESS_DIR (none without
it), pausing SECONDS_PER_STEP after each step (so that a test can kill it mid-grid), and writes
its measurements and the parts it fine-tuned to OUT.json.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from tasks_support import make_context

import tasks.transfer as transfer_module
from tasks.base import get_task
from tasks.progress import TaskProgress

SETTINGS = {"datasets": ["digits"], "lrs": [0.01, 0.1], "weight_decays": [0.0, 1e-4],
            "steps": 12, "batch_size": 32}


def main(out: str, progress_dir: str = "", pause_s: str = "0") -> None:
    torch.set_num_threads(1)
    root = Path(out).parent
    ctx = make_context(root / "work", "transfer", SETTINGS)
    if progress_dir:
        ctx = replace(ctx, progress_dir=Path(progress_dir), progress_every_s=0.0)
    fitted: list[str] = []
    fine_tune, step_done = transfer_module.fine_tune, TaskProgress.step_done

    def recording(*args, progress, **kwargs):
        fitted.append(progress.path.stem if progress.path else "")
        return fine_tune(*args, progress=progress, **kwargs)

    def pausing(self, state, where):
        step_done(self, state, where)
        time.sleep(float(pause_s))

    transfer_module.fine_tune = recording
    TaskProgress.step_done = pausing
    measurements = get_task("transfer").run(ctx)
    values = [[m.metric, m.split, m.dataset, m.value, dict(m.extra)] for m in measurements]
    Path(out).write_text(json.dumps({"values": values, "fitted": fitted}))


if __name__ == "__main__":
    main(*sys.argv[1:])
