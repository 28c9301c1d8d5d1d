"""Feature-layer parsing, extraction and the on-disk cache."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset
from torchvision import transforms as T

from tasks.features import FeatureLayer, cached_features, extract_features, resolve_layers
from tasks_support import PixelBackbone, TinyBackbone


def _data(n: int = 10) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 1, 12, 12, generator=g), torch.arange(n) % 3)


@pytest.mark.parametrize(
    "text, block, pool",
    [("pooled", None, ()), ("layer1.0", "layer1.0", ()), ("stem@3", "stem", (3,)),
     ("layer4.2@6/1/0", "layer4.2", (6, 1, 0))],
)
def test_parse_round_trips(text, block, pool):
    layer = FeatureLayer.parse(text)
    assert (layer.block, layer.pool, layer.name) == (block, pool, text)


@pytest.mark.parametrize("text", ["", "@2", "stem@a", "stem@1/2", "stem@-1"])
def test_parse_rejects_bad_names(text):
    with pytest.raises(ValueError, match="bad feature layer"):
        FeatureLayer.parse(text)


def test_blocks_expand_with_longest_prefix_grid():
    layers = resolve_layers("blocks", TinyBackbone(), {"": 1, "layer": 2, "layer2": 3})
    assert [l.name for l in layers] == ["stem@1", "layer1.0@2", "layer2.0@3"]
    for spec in ("blocks", ["layer3.0@2", "pooled"]):  # raw pixels: the flattened image
        assert [l.name for l in resolve_layers(spec, PixelBackbone(144), {}, "pixels")] == ["pooled"]


def test_extraction_shapes_and_pooling_match_torch():
    backbone = TinyBackbone().eval()
    data = _data()
    layers = [FeatureLayer.parse(t) for t in ("pooled", "stem@2", "layer1.0@3/3/0")]
    feats, labels = extract_features(backbone, data, layers, "cpu", batch_size=4)
    x = data.tensors[0]
    with torch.no_grad():
        blocks = backbone.forward_blocks(x)
        assert torch.allclose(feats[0], backbone(x), atol=1e-6)
        assert torch.allclose(feats[1], torch.nn.functional.adaptive_avg_pool2d(blocks[0], 2).flatten(1), atol=1e-6)
        assert feats[2].shape == (10, 8 * 2 * 2)  # 6x6 map, kernel 3 stride 3
    assert torch.equal(labels, data.tensors[1])


def test_unknown_block_names_the_valid_ones():
    with pytest.raises(ValueError, match="layer9.*stem"):
        extract_features(TinyBackbone(), _data(), [FeatureLayer("layer9")], "cpu")


def test_cache_reuses_files_and_keys_on_transform_layer_encoder(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return _data()

    backbone = TinyBackbone().eval()
    layer = FeatureLayer.parse("stem@2")
    args = dict(backbone=lambda: backbone, build_dataset=build, device="cpu")
    first, _ = cached_features(tmp_path, "enc1", "toy", "train", T.ToTensor(), [layer], **args)
    again, _ = cached_features(tmp_path, "enc1", "toy", "train", T.ToTensor(), [layer], **args)
    assert len(calls) == 1 and torch.equal(first["stem@2"], again["stem@2"])
    cached_features(tmp_path, "enc1", "toy", "train", T.Normalize((0.5,), (0.5,)), [layer], **args)
    cached_features(tmp_path, "enc2", "toy", "train", T.ToTensor(), [layer], **args)
    cached_features(tmp_path, "enc1", "toy", "train", T.ToTensor(), [FeatureLayer(None)], **args)
    assert len(calls) == 4
    files = list(tmp_path.rglob("*"))
    assert sum(f.suffix == ".pt" for f in files) == 4
    assert not [f for f in files if f.name.startswith(".")]  # no temp files left behind


def test_sanity_encoder_cache_key_ignores_task_settings(tmp_path):
    from tasks.common import encoder_key
    from tasks_support import make_context

    one = make_context(tmp_path, "knn", {"k": 5}, kind="random").encoder
    other = make_context(tmp_path, "linear", {"epochs": 3}, kind="random").encoder
    pixels = make_context(tmp_path, "knn", {"k": 5}, kind="pixels").encoder
    assert encoder_key(one) == encoder_key(other) != encoder_key(pixels)
    assert encoder_key(make_context(tmp_path, "knn", {}).encoder) == "standin0001"
