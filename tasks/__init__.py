"""Evaluation tasks; importing this package registers every task family."""
from tasks import detection, diagnostics, knn, linear, semisup, transfer, voc07, voc07_bce  # noqa: F401
