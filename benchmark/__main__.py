"""``python -m benchmark``: see benchmark/cli.py."""
import sys

from benchmark.cli import main

sys.exit(main())
