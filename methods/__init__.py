"""Pretext methods behind one interface (``methods.base``); importing registers all of them."""
from methods import clim, insdis, interclr, invp, knn_positive, mocov2  # noqa: F401  (registration side effects)  # noqa: F401  (registration side effects)
