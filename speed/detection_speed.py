"""Time the mini detection task and compare a pretrained encoder with random init (issue 6 "Speed").

Runs the registered ``detection`` task twice on ``mini_det`` (prepared when absent): once from
an encoder checkpoint and once from the random-init encoder of the same run config, and prints
training iterations/s, eval images/s, wall time per run and AP / AP50 / AP75 of both. The task
settings are the mini profile's ``tasks.detection`` block, or the block below while the profile
has none.

    python speed/detection_speed.py --checkpoint RUN_DIR/encoder.pt [--threads 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.core.config import RunConfig, resolve  # noqa: E402
from benchmark.core.runtime import configure_threads, resolve_device  # noqa: E402
from benchmark.data import get_dataset, resolve_data_root  # noqa: E402
from tasks.base import EncoderHandle, TaskContext  # noqa: E402
from tasks.detection.task import DetectionTask  # noqa: E402

MINI_DETECTION = yaml.safe_load(
    """
dataset: mini_det
batch_size: 2
schedule: {batch_size: 2, lr: 0.02, iterations: 400, steps: [300, 370], warmup_iters: 10}
detector:
  min_size_train: [80, 96, 112, 128]
  min_size_test: 128
  max_size: 213
  pixel_mean: [0.2860]
  pixel_std: [0.3530]
  anchor_sizes: [16, 32, 64]
  rpn_pre_nms_train: 500
  rpn_post_nms_train: 150
  rpn_pre_nms_test: 600
  rpn_post_nms_test: 100
  roi_size: 7
  box_batch_per_image: 32
precise_bn_iters: 20
eval_batch_size: 8
"""
)


def run_config(profile: str, method: str, seed: int | None) -> RunConfig:
    """The profile's run config, with the detection block above when the profile has none."""
    tree = resolve(profile, method, seed=seed).to_dict()
    tree.setdefault("tasks", {}).setdefault("detection", MINI_DETECTION)
    return RunConfig.from_dict(tree)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="encoder.pt of a mini pretraining run")
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--method", default="invp")
    parser.add_argument("--seed", type=int, default=None, help="run seed (default: the profile's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    configure_threads(args.threads)
    config = run_config(args.profile, args.method, args.seed)
    settings = config.tasks["detection"]
    root = resolve_data_root(args.data_root)
    spec = get_dataset(settings["dataset"])
    if spec.check(root) and spec.prepare is not None:
        spec.prepare(root)
    device = resolve_device(args.device)
    results = {}
    for kind in ("pretrained", "random"):
        handle = EncoderHandle(kind, config, args.checkpoint if kind == "pretrained" else None)
        ctx = TaskContext(config, handle, root, device, int(config.seed), root / "cache", task_name="detection")
        start = time.perf_counter()
        measurements = DetectionTask().run(ctx)
        extra = measurements[0].extra
        results[kind] = {
            "wall_s": time.perf_counter() - start,
            "train_iterations_per_s": extra["train_iterations_per_s"],
            "eval_images_per_s": extra["eval_images_per_s"],
            "iterations": extra["iterations"],
            **{m.metric: m.value for m in measurements},
        }
        row = results[kind]
        print(
            f"{kind:>10}: {row['wall_s']:6.1f} s  train {row['train_iterations_per_s']:5.2f} it/s "
            f"({row['iterations']} it, batch {settings['batch_size']})  eval {row['eval_images_per_s']:5.1f} img/s  "
            f"AP {row['AP']:5.2f}  AP50 {row['AP50']:5.2f}  AP75 {row['AP75']:5.2f}",
            flush=True,
        )
    print(f"device {device}, {torch.get_num_threads()} threads; pretrained - random AP50: "
          f"{results['pretrained']['AP50'] - results['random']['AP50']:+.2f}")
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "threads": args.threads, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
