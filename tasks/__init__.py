"""Evaluation tasks; importing this package registers every task family."""
from tasks import knn, linear, semisup, transfer  # noqa: F401
