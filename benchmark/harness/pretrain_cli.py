"""``python -m benchmark.pretrain``: pretrain one method under one profile (also the command
torchrun and the Slurm launcher start on every rank)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.core.distributed import shutdown
from benchmark.core.errors import USAGE_ERROR, debug_requested, explain_failure
from benchmark.engine.checkpoint import RESUME_MODES
from benchmark.engine.guard import NonFiniteLoss
from benchmark.engine.pretrain import pretrain
from benchmark.harness.schema import resolve_run


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmark.pretrain``: pretrain one method under one profile."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.pretrain", description=main.__doc__)
    parser.add_argument("--profile", default="mini", help="profile name or YAML path (default: mini)")
    parser.add_argument("--method", required=True, help="method name, e.g. invp, insdis, knn")
    parser.add_argument("--seed", type=int, default=None, help="run seed (default: the profile's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set pretrain.epochs=3 (repeatable)")
    parser.add_argument("--run-dir", required=True, type=Path, help="folder for checkpoints, log and encoder")
    parser.add_argument("--resume", default="auto", choices=RESUME_MODES)
    parser.add_argument("--data-root", default=None, help="data root (default: $BENCHMARK_DATA or ./data)")
    args = parser.parse_args(argv)
    try:
        cfg = resolve_run(args.profile, args.method, args.overrides, args.seed)
        path = pretrain(cfg, args.run_dir, resume=args.resume, data_root=args.data_root)
    except NonFiniteLoss as exc:  # the engine saved the state before the step and says where
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except Exception as exc:  # user errors and preemption as `python -m benchmark` reports them
        code = explain_failure(exc, debug_requested())
        if code is None:
            raise
        return code
    finally:
        shutdown()
    print(path)
    return 0
