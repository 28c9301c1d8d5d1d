"""Datasets known to the suite; importing this package registers all of them."""
from benchmark.data import (  # noqa: F401
    caltech101,
    cifar,
    digits,
    fashion_mnist,
    fine_grained,
    imagenet,
    mini_det,
    places205,
    voc07_cls,
    voc_detection,
)
from benchmark.data.registry import (  # noqa: F401
    DatasetMissing,
    DatasetSpec,
    available_datasets,
    dataset_problems,
    get_dataset,
    resolve_data_root,
)
