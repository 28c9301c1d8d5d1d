"""Pretext methods behind one interface (``methods.base``); importing registers all of them."""
from methods import insdis, invp  # noqa: F401  (registration side effects)
