"""Feature-layer parsing, extraction and the on-disk cache."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from payload_support import Payload
from tasks_support import PixelBackbone, TinyBackbone
from torch.utils.data import TensorDataset
from torchvision import transforms as T

from benchmark.core.config import resolve
from benchmark.core.errors import explain_failure
from benchmark.models import build_backbone
from tasks import feature_cache
from tasks.features import (
    FeatureLayer,
    cached_features,
    feature_batches,
    gather_features,
    layer_vectors,
    resolve_layers,
)


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
    feats, labels = gather_features(feature_batches(backbone, data, layers, "cpu", batch_size=4))
    x = data.tensors[0]
    with torch.no_grad():
        blocks = backbone.forward_blocks(x)
        assert torch.allclose(feats[0], backbone(x), atol=1e-6)
        assert torch.allclose(feats[1], torch.nn.functional.adaptive_avg_pool2d(blocks[0], 2).flatten(1), atol=1e-6)
        assert feats[2].shape == (10, 8 * 2 * 2)  # 6x6 map, kernel 3 stride 3
    assert torch.equal(labels, data.tensors[1])


def test_unknown_block_names_the_valid_ones():
    with pytest.raises(ValueError, match="layer9.*stem"):
        gather_features(feature_batches(TinyBackbone(), _data(), [FeatureLayer("layer9")], "cpu"))


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
    assert sum(f.name == "index.json" for f in files) == 4
    assert not [f for f in files if f.name.startswith(".")]  # no temp files left behind


def test_sanity_encoder_cache_key_ignores_task_settings(tmp_path):
    from tasks_support import make_context

    from tasks.common import encoder_key

    one = make_context(tmp_path, "knn", {"k": 5}, kind="random").encoder
    other = make_context(tmp_path, "linear", {"epochs": 3}, kind="random").encoder
    pixels = make_context(tmp_path, "knn", {"k": 5}, kind="pixels").encoder
    assert encoder_key(one) == encoder_key(other) != encoder_key(pixels)
    assert encoder_key(make_context(tmp_path, "knn", {}).encoder) == "standin0001"


class _Counting(TensorDataset):
    """A TensorDataset that records the items read (and dies by SIGKILL at ``kill_at``)."""

    def __init__(self, *tensors: torch.Tensor, kill_at: int = -1):
        super().__init__(*tensors)
        self.read: list[int] = []
        self.kill_at = kill_at

    def __getitem__(self, i: int):
        if i == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.read.append(i)
        return super().__getitem__(i)


def _counting(n: int = 50, kill_at: int = -1) -> _Counting:
    g = torch.Generator().manual_seed(0)
    return _Counting(torch.randn(n, 1, 12, 12, generator=g), torch.arange(n) % 3, kill_at=kill_at)


def _features(cache: Path, data: TensorDataset, layers: list[FeatureLayer], dtype: torch.dtype = torch.float32):
    torch.manual_seed(0)
    backbone = TinyBackbone().eval()
    return cached_features(cache, "enc", "toy", "train", "t", layers, backbone=lambda: backbone,
                           build_dataset=lambda: data, device="cpu", batch_size=4, dtype=dtype)


SMALL_SHARDS = 7 * 16 * 4  # 7 rows of the 16-dim pooled layer in float32


def test_cache_is_written_in_shards_and_read_memory_mapped(tmp_path, monkeypatch):
    monkeypatch.setattr(feature_cache, "SHARD_BYTES", SMALL_SHARDS)
    data = _counting()
    layers = [FeatureLayer(None), FeatureLayer.parse("stem@2")]
    feats, labels = _features(tmp_path, data, layers)
    torch.manual_seed(0)
    expected, expected_labels = gather_features(feature_batches(TinyBackbone().eval(), data, layers, "cpu"))
    assert torch.equal(feats["pooled"], expected[0]) and torch.equal(feats["stem@2"], expected[1])
    assert torch.equal(labels, expected_labels)
    folder = next(tmp_path.rglob("pooled-*.shards")) / "float32"
    index = json.loads((folder / "index.json").read_text())
    assert (index["rows"], index["dim"], index["shard_rows"], index["complete"]) == (50, 16, 7, True)
    assert sorted(map(int, index["shards"])) == list(range(8))  # 7 x 7 rows + 1
    maps = Path("/proc/self/maps").read_text()
    assert str(folder / "features.bin") in maps  # the rows are a mapping of the file, not a copy


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_caches_round_trip(tmp_path, dtype):
    data = _counting(10)
    feats, _ = _features(tmp_path, data, [FeatureLayer(None)], dtype)
    again, _ = _features(tmp_path, _counting(10, kill_at=0), [FeatureLayer(None)], dtype)  # read, not run
    torch.manual_seed(0)
    (expected,), _ = gather_features(feature_batches(TinyBackbone().eval(), data, [FeatureLayer(None)], "cpu",
                                                     dtype=dtype))
    assert feats["pooled"].dtype == dtype and torch.equal(again["pooled"], expected)


KILLED = """
import sys, torch
sys.path[:0] = [{tests!r}]
from tasks import feature_cache
from test_tasks_features import _counting, _features
from tasks.features import FeatureLayer
feature_cache.SHARD_BYTES = {shard_bytes}
_features(__import__("pathlib").Path({cache!r}), _counting(kill_at=30), [FeatureLayer(None), FeatureLayer.parse("stem@2")])
"""


def test_killed_extraction_resumes_at_the_first_missing_shard(tmp_path, monkeypatch):
    script = KILLED.format(tests=str(Path(__file__).parent), shard_bytes=SMALL_SHARDS, cache=str(tmp_path / "cache"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    # killed reading row 30 of batch 28-31: rows 0-27 were extracted; pooled has 7-row shards
    # (16 dims), stem@2 3-row shards (32 dims): shards 0-3 and 0-8 are whole, row 27 is lost
    shards = {name: json.loads(next((tmp_path / "cache").rglob(f"{name}-*.shards/float32/index.json")).read_text())
              for name in ("pooled", "stem_at_2")}
    assert not any(index["complete"] for index in shards.values())
    assert sorted(map(int, shards["pooled"]["shards"])) == [0, 1, 2, 3]
    assert sorted(map(int, shards["stem_at_2"]["shards"])) == list(range(9))

    monkeypatch.setattr(feature_cache, "SHARD_BYTES", SMALL_SHARDS)
    layers = [FeatureLayer(None), FeatureLayer.parse("stem@2")]
    resumed_data = _counting()
    resumed, _ = _features(tmp_path / "cache", resumed_data, layers)
    assert min(resumed_data.read) == 27  # stem@2's first missing shard, the earliest of the two
    whole, _ = _features(tmp_path / "fresh", _counting(), layers)
    assert all(torch.equal(resumed[name], whole[name]) for name in whole)


def _flip_a_byte(folder: Path) -> Path:
    path = folder / "features.bin"
    raw = bytearray(path.read_bytes())
    raw[7 * 64 + 5] ^= 0xFF  # row 7: shard 1
    path.write_bytes(bytes(raw))
    return path


def _truncate(folder: Path) -> Path:
    path = folder / "features.bin"
    path.write_bytes(path.read_bytes()[:-64])
    return path


def _foreign_index(folder: Path) -> Path:
    path = folder / "index.json"
    other = next(p for p in folder.parents[1].rglob("index.json") if p != path)  # the stem@2 entry's
    path.write_bytes(other.read_bytes())
    return path


def _pickle_as_index(folder: Path) -> Path:
    path = folder / "index.json"
    torch.save({"payload": Payload(folder.parents[4] / "MARKER")}, path)
    return path


@pytest.mark.parametrize("damage, says", [
    (_flip_a_byte, r"features\.bin shard 1 \(rows 7-13\) does not match its checksum in .*index\.json"),
    (_truncate, r"features\.bin has 3136 bytes, its index .*index\.json says 3200"),
    (_foreign_index, r"index\.json belongs to another cache entry"),
    (_pickle_as_index, r"index\.json is unreadable"),
])
def test_a_corrupt_or_foreign_cache_file_is_named_with_the_fix(damage, says, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(feature_cache, "SHARD_BYTES", SMALL_SHARDS)
    layers = [FeatureLayer(None), FeatureLayer.parse("stem@2")]
    _features(tmp_path / "cache", _counting(), layers)
    folder = next((tmp_path / "cache").rglob("pooled-*.shards")) / "float32"
    path = damage(folder)
    with pytest.raises(feature_cache.FeatureCacheError, match=says) as info:
        _features(tmp_path / "cache", _counting(kill_at=0), layers)
    message = str(info.value)
    assert message.startswith(str(path)) and f"delete the folder {folder} and the features are extracted" in message
    assert explain_failure(info.value, debug=False) == 2 and "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "MARKER").exists()  # nothing in the cache is unpickled


def test_pooled_beside_block_taps_is_read_off_the_last_block_in_one_trunk_pass():
    """A Backbone's pooled vector is its last block averaged, so asking for it beside block taps
    must not run the trunk a second time, and must equal ``backbone(x)``."""
    torch.manual_seed(0)
    backbone = build_backbone(resolve("mini", "invp").model).eval()
    stem_calls = []
    backbone.stem.register_forward_hook(lambda *args: stem_calls.append(1))
    images = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        expected = backbone(images)
        stem_calls.clear()
        block, pooled = layer_vectors(backbone, images, [FeatureLayer("layer2.0", (2,)), FeatureLayer(None)])
    assert len(stem_calls) == 1
    assert torch.equal(pooled, expected) and block.shape[0] == 5
