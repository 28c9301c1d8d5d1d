"""``python -m benchmark.pretrain``: the pretraining entry point (see benchmark/harness/pretrain_cli.py)."""
import sys

from benchmark.harness.pretrain_cli import main

if __name__ == "__main__":
    sys.exit(main())
