"""invp-bench: core (config, settings, store) < data, models < engine, tasks < harness, report < api.

The Python API (:mod:`benchmark.api`): ``benchmark.load_encoder(path)`` and
``benchmark.evaluate(encoder, task=..., profile=...)``.
"""
from benchmark.api import evaluate, load_encoder

__all__ = ["evaluate", "load_encoder"]
