"""Every per-method default block shipped with the profiles builds its method."""
from pathlib import Path

import pytest
import yaml

from benchmark.core.config import resolve
from methods.base import available_methods, build_method

PROFILES = Path(__file__).resolve().parents[1] / "benchmark" / "profiles"


@pytest.mark.parametrize("name", ["imagenet", "imagenet-mlp", "cifar"])
def test_method_default_files_build_every_method(name):
    blocks = yaml.safe_load((PROFILES / "methods" / f"{name}.yaml").read_text())
    # every shipped method has defaults (test doubles registered by other tests do not count)
    assert set(blocks) == {"invp", "insdis", "knn", "mocov2", "interclr", "clim"} and set(blocks) <= set(available_methods())
    for method, block in blocks.items():
        block.pop("set", None)  # shared-section values (resolve applies them), not method options
        built = build_method({"name": method, **block}, 1_281_167, 128)  # ImageNet's N (InterCLR's pool needs it)
        assert built.settings.temperature == block["temperature"]


@pytest.mark.parametrize("method", ["invp", "insdis", "knn", "mocov2", "interclr", "clim"])
def test_mini_profile_method_blocks_build(method):
    cfg = resolve("mini", method)
    built = build_method(cfg.method, 6000, cfg.model.embed_dim)
    assert built.num_samples == 6000
