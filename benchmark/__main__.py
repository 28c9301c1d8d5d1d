"""``python -m benchmark``: see benchmark/harness/cli.py."""
import sys

from benchmark.harness.cli import main

sys.exit(main())
