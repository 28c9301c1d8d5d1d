"""Datasets known to the suite; importing this package registers all of them."""
from benchmark.datasets import digits, fashion_mnist, voc07_cls  # noqa: F401
from benchmark.datasets.registry import (  # noqa: F401
    DatasetMissing,
    DatasetSpec,
    available_datasets,
    get_dataset,
    resolve_data_root,
)
