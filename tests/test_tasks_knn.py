"""The kNN protocol: the weighted vote's temperature, the embedding layer (the projection head's
output, as InvP's main.py::kNN, InsDis and AND classify) and the layer named in the report."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from report_support import record
from tasks_support import PixelBackbone, make_context
from torch import nn
from torch.utils.data import TensorDataset

from benchmark.core.config import resolve
from benchmark.core.safe_load import LoadError
from benchmark.engine.monitor import knn_monitor
from benchmark.models import build_backbone, build_head
from benchmark.models.encoders import load_encoder_head
from benchmark.report.frame import TaskInfo, records_frame
from tasks import knn as knn_task
from tasks import knn_classifier
from tasks.base import EncoderHandle, get_task
from tasks.knn_classifier import weighted_knn_scores


def test_sigma_sharpens_the_vote_towards_the_nearest_neighbour() -> None:
    # One class-0 neighbour at cosine 0.99 against two class-1 neighbours at cosine 0.9: with a
    # flat vote (large sigma) the two outvote the one, with sigma 0.07 the nearest one wins
    # (exp(0.99/0.07) > 2 exp(0.9/0.07)). A rule exp(s) without the sigma gives class 1 for both.
    train, labels, test = _nearest_versus_two()
    sharp = weighted_knn_scores(train, labels, test, 2, k=3, sigma=0.07)
    flat = weighted_knn_scores(train, labels, test, 2, k=3, sigma=10.0)
    assert sharp.argmax(1).item() == 0 and flat.argmax(1).item() == 1
    assert sharp[0, 0].item() == pytest.approx(torch.tensor(0.99 / 0.07).exp().item(), rel=1e-5)


def _nearest_versus_two() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One class-0 training row at cosine 0.99 to the test row (1, 0), two class-1 rows at 0.9."""
    train = torch.tensor([[0.99, (1 - 0.99**2) ** 0.5], [0.9, (1 - 0.81) ** 0.5], [0.9, -(1 - 0.81) ** 0.5]])
    return train, torch.tensor([0, 1, 1]), torch.tensor([[1.0, 0.0]])


def test_monitor_votes_with_its_sigma_on_the_embedding_and_on_backbone_features() -> None:
    train, labels, test = _nearest_versus_two()
    args = (TensorDataset(train, labels), labels, TensorDataset(test, torch.tensor([0])), torch.tensor([0]), 2)
    sharp = knn_monitor(nn.Identity(), nn.Identity(), *args, k=3, sigma=0.07, device=torch.device("cpu"),
                        autocast=nullcontext)
    flat = knn_monitor(nn.Identity(), nn.Identity(), *args, k=3, sigma=10.0, device=torch.device("cpu"),
                       autocast=nullcontext)
    assert sharp == {"knn_top1": 1.0, "knn_top1_backbone": 1.0}
    assert flat == {"knn_top1": 0.0, "knn_top1_backbone": 0.0}
    # A head that maps every image to one point: the embedding's vote is a tie (class 0 wins it),
    # so a class-1 test image is missed on the embedding and found on the backbone features.
    constant = nn.Linear(2, 2)
    nn.init.zeros_(constant.weight)
    nn.init.ones_(constant.bias)
    points = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    monitor_args = (TensorDataset(points, torch.tensor([0, 1])), torch.tensor([0, 1]),
                    TensorDataset(torch.tensor([[0.1, 1.0]]), torch.tensor([1])), torch.tensor([1]), 2)
    result = knn_monitor(nn.Identity(), constant, *monitor_args, k=2, sigma=0.07, device=torch.device("cpu"),
                         autocast=nullcontext)
    assert result == {"knn_top1": 0.0, "knn_top1_backbone": 1.0}


def test_knn_task_votes_with_its_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def spy(*args, **kwargs):
        seen.append((kwargs["k"], kwargs["sigma"]))
        return weighted_knn_scores(*args, **kwargs)

    monkeypatch.setattr(knn_task, "weighted_knn_scores", spy)
    ctx = make_context(tmp_path, "knn", {"dataset": "digits", "k": 7, "sigma": 0.5})
    records = get_task("knn").run(ctx)
    assert seen == [(7, 0.5)] and {(m.extra["k"], m.extra["sigma"]) for m in records} == {(7, 0.5)}


def test_knn_task_defaults_to_the_embedding_with_sigma_007(tmp_path: Path) -> None:
    task = get_task("knn")
    assert (task.defaults["layer"], task.defaults["sigma"], task.defaults["k"]) == ("embedding", 0.07, 200)
    ctx = make_context(tmp_path, "knn", {"dataset": "digits", "k": 20})
    # A head that maps every image to the same embedding: kNN on it can only guess one class.
    constant = nn.Linear(ctx.encoder.backbone.feature_dim, 4)
    nn.init.zeros_(constant.weight)
    nn.init.ones_(constant.bias)
    ctx.encoder.head = constant
    on_embedding = {m.metric: m for m in task.run(ctx)}
    assert on_embedding["top1"].extra["layer"] == "embedding"
    assert on_embedding["top1"].value < 0.2  # 10 classes: one class's share
    assert [p.parent.parent.name.split("-")[0] for p in (tmp_path / "cache").rglob("index.json")] == ["embedding"] * 2

    pooled = make_context(tmp_path / "b", "knn", {"dataset": "digits", "k": 20, "layer": "pooled"})
    on_backbone = {m.metric: m for m in task.run(pooled)}
    assert on_backbone["top1"].extra["layer"] == "pooled" and on_backbone["top1"].value > 0.3


def test_raw_pixels_have_no_head_and_fall_back_to_the_image(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, "knn", {"dataset": "digits", "k": 20}, backbone=PixelBackbone(64), kind="pixels")
    assert {m.extra["layer"] for m in get_task("knn").run(ctx)} == {"pooled"}


def test_encoder_head_is_the_saved_one_or_the_runs_initial_one(tmp_path: Path) -> None:
    cfg = resolve("mini", "invp", ["model.width=4"])
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.model)
    initial = build_head(cfg.model, backbone.feature_dim)
    random = load_encoder_head(EncoderHandle("random", cfg), backbone)
    assert all(torch.equal(a, b) for a, b in zip(random.state_dict().values(), initial.state_dict().values()))

    trained = build_head(cfg.model, backbone.feature_dim)
    path = tmp_path / "encoder.pt"
    torch.save({"backbone": backbone.state_dict(), "head": trained.state_dict(), "config": cfg.to_dict(),
                "config_hash": "x", "epoch": 1}, path)
    loaded = EncoderHandle("pretrained", cfg, checkpoint=path).load_head(backbone)
    assert not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))
    assert load_encoder_head(EncoderHandle("pixels", cfg), backbone) is None

    torch.save({"backbone": backbone.state_dict(), "config": cfg.to_dict(), "epoch": 1}, path)
    with pytest.raises(LoadError, match=r"encoder\.pt.*holds no projection head.*tasks\.knn\.layer=pooled"):
        load_encoder_head(EncoderHandle("pretrained", cfg, checkpoint=path), backbone)


def test_report_column_names_the_knn_layer() -> None:
    tasks = {"knn": TaskInfo(None, None, ("top1", "top5"), "layer")}
    rows = [record(task="knn", dataset="cifar10", extra={"layer": "embedding"}),
            record(task="knn", dataset="cifar10", seed=1, extra={"layer": "pooled"})]
    skip = {"job": {"task": "knn", "job_id": "j", "config": {"tasks": {"knn": {"dataset": "cifar10",
                                                                              "layer": "embedding"}}}},
            "reason": "not applicable: x"}
    frame = records_frame(rows, [skip], tasks)
    assert sorted(set(frame["column"])) == ["knn: top1 (cifar10, layer embedding)", "knn: top1 (cifar10, layer pooled)",
                                            "knn: top5 (cifar10, layer embedding)"]


def dense_knn_scores(train_features, train_labels, test_features, num_classes, k=200, sigma=0.1, chunk_size=4096):
    """The kNN vote as it was before the streamed search (whole train matrix, dense product)."""
    k = min(k, train_features.shape[0])
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    labels = train_labels.to(train.device).long()
    scores = []
    for start in range(0, test.shape[0], chunk_size):
        sims, idx = (test[start : start + chunk_size] @ train.T).topk(k, dim=1)
        weights = (sims / sigma).exp()
        votes = torch.zeros(sims.shape[0], num_classes, device=train.device)
        votes.scatter_add_(1, labels[idx], weights)
        scores.append(votes)
    return torch.cat(scores) if scores else torch.zeros(0, num_classes)


def _tied_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """300 random rows each present three times with one label (exact ties in every top-k), and
    test rows that include scaled copies of training rows (ties at similarity 1)."""
    g = torch.Generator().manual_seed(0)
    base, base_labels = torch.randn(300, 16, generator=g), torch.randint(0, 7, (300,), generator=g)
    test = torch.cat([torch.randn(90, 16, generator=g), 2 * base[:30]])
    return base.repeat(3, 1), base_labels.repeat(3), test


@pytest.mark.parametrize("search", ["faiss", "torch"])
@pytest.mark.parametrize("train_chunk", [None, 1, 64, 250, 899, 900, 5000])
@pytest.mark.parametrize("k", [5, 200])
def test_streamed_search_gives_the_dense_scores(search, train_chunk, k, monkeypatch):
    calls = []
    if search == "faiss":
        pytest.importorskip("faiss")
        faiss_topk = knn_classifier._faiss_topk
        monkeypatch.setattr(knn_classifier, "_faiss_topk", lambda *a: calls.append(1) or faiss_topk(*a))
    else:
        monkeypatch.setattr(knn_classifier, "faiss", None)
    train, labels, test = _tied_data()
    expected = dense_knn_scores(train, labels, test, 7, k=k, sigma=0.07)
    scores = weighted_knn_scores(train, labels, test, 7, k=k, sigma=0.07, chunk_size=50, train_chunk=train_chunk)
    assert torch.allclose(scores, expected, rtol=1e-5, atol=0) and torch.equal(scores.argmax(1), expected.argmax(1))
    streamed = train_chunk is not None and train_chunk < len(train)
    assert bool(calls) == (search == "faiss" and streamed)  # faiss searches the chunks of a streamed search
    if not streamed:  # one chunk: today's computation, bit for bit
        assert torch.equal(scores, expected)


def test_knn_task_streams_memory_mapped_features_in_chunks_of_its_budget(tmp_path, monkeypatch):
    seen = []

    def spy(train, *args, **kwargs):
        seen.append((kwargs["train_chunk"], train.shape[0], str(train.device), Path("/proc/self/maps").read_text()))
        return weighted_knn_scores(train, *args, **kwargs)

    monkeypatch.setattr(knn_task, "weighted_knn_scores", spy)
    # the torch search, exact across chunkings; faiss rounds the products its own way (ulps, which
    # flip near-ties of this tiny encoder's embedding), its agreement is tested above
    monkeypatch.setattr(knn_classifier, "faiss", None)
    roomy = make_context(tmp_path, "knn", {"dataset": "digits", "k": 20})
    expected = {m.metric: m.value for m in get_task("knn").run(roomy)}
    small = make_context(tmp_path, "knn", {"dataset": "digits", "k": 20})
    small.memory_budget_gb = 1e-6  # 1 kB: chunks of k rows
    assert {m.metric: m.value for m in get_task("knn").run(small)} == expected
    (chunk_roomy, rows, _, _), (chunk_small, _, device, maps) = seen
    assert chunk_roomy >= rows and chunk_small == 20 < rows and device == "cpu"
    features = next((tmp_path / "cache").rglob("train/embedding-*/float32/features.bin"))
    assert str(features) in maps  # the search is handed a mapping of the cache, not a copy
