"""Shared k-means (methods/parts/kmeans.py): the assignment and mean steps against slow loops, a torch
Lloyd step against a loop, both backends on separated blobs, determinism, spherical centroids,
no empty cluster, and bad arguments."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from methods_reference import unit_rows

from methods.parts.kmeans import cluster_means, faiss_available, kmeans, nearest_centroid

BACKENDS = ["torch", pytest.param("faiss", marks=pytest.mark.skipif(not faiss_available(), reason="no faiss"))]


def slow_nearest(x: torch.Tensor, c: torch.Tensor) -> list[int]:
    out = []
    for row in x:
        distances = [float(((row - centre) ** 2).sum()) for centre in c]
        out.append(min(range(len(distances)), key=lambda j: (distances[j], j)))
    return out


def slow_means(x: torch.Tensor, labels: list[int], k: int) -> list[torch.Tensor | None]:
    out = []
    for c in range(k):
        members = [x[i] for i in range(len(labels)) if labels[i] == c]
        out.append(torch.stack(members).mean(0) if members else None)
    return out


def blobs(per_cluster: int = 30, k: int = 4, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.eye(d)[:k] * 4
    g = torch.Generator().manual_seed(seed)
    x = centres.repeat_interleave(per_cluster, 0) + 0.1 * torch.randn(per_cluster * k, d, generator=g)
    return F.normalize(x, dim=1), torch.arange(k).repeat_interleave(per_cluster)


def test_nearest_centroid_matches_a_loop():
    x, c = unit_rows(50, 6, 1), torch.randn(7, 6)
    assert nearest_centroid(x, c, chunk_size=8).tolist() == slow_nearest(x, c)


def test_cluster_means_match_a_loop_and_empty_clusters_keep_the_fallback():
    x = unit_rows(20, 5, 2)
    labels = torch.tensor([0, 2, 2, 0, 4] * 4)
    fallback = torch.randn(5, 5)
    means = cluster_means(x, labels, 5, fallback=fallback)
    for c, ref in enumerate(slow_means(x, labels.tolist(), 5)):
        assert torch.allclose(means[c], fallback[c] if ref is None else ref, atol=1e-6)
    assert torch.equal(cluster_means(x, labels, 5)[1], torch.zeros(5))


def test_torch_backend_one_iteration_is_one_lloyd_step_from_seeded_points():
    x, k, seed = unit_rows(40, 4, 3), 5, 11
    init = x[torch.randperm(40, generator=torch.Generator().manual_seed(seed))[:k]]
    assignment = slow_nearest(x, init)
    expected = torch.stack([m if m is not None else init[c] for c, m in enumerate(slow_means(x, assignment, k))])
    result = kmeans(x, k, iterations=1, seed=seed, backend="torch")
    assert torch.allclose(result.centroids, expected, atol=1e-6)
    assert result.labels.tolist() == slow_nearest(x, result.centroids)


@pytest.mark.parametrize("backend", BACKENDS)
def test_separated_blobs_are_recovered_deterministically(backend):
    x, truth = blobs()
    first = kmeans(x, 4, iterations=10, seed=3, backend=backend)
    again = kmeans(x, 4, iterations=10, seed=3, backend=backend)
    assert torch.equal(first.labels, again.labels) and torch.equal(first.centroids, again.centroids)
    assert first.labels.dtype == torch.long and first.centroids.shape == (4, 8)
    pairs = set(zip(truth.tolist(), first.labels.tolist()))
    assert len(pairs) == 4 and len({p for _, p in pairs}) == 4  # a bijection between blobs and clusters
    assert first.labels.tolist() == slow_nearest(x, first.centroids)


@pytest.mark.parametrize("backend", BACKENDS)
def test_spherical_centroids_are_unit_vectors(backend):
    result = kmeans(blobs()[0], 4, iterations=5, seed=0, spherical=True, backend=backend)
    assert torch.allclose(result.centroids.norm(dim=1), torch.ones(4), atol=1e-5)


def test_torch_backend_reseeds_empty_clusters():
    x = torch.cat([torch.zeros(10, 3), torch.eye(3)[:1].repeat(10, 1), torch.eye(3)[1:2]])  # 3 distinct points
    x[:10, 2] = 1.0
    for seed in range(5):
        labels = kmeans(x, 3, iterations=5, seed=seed, backend="torch").labels
        assert torch.bincount(labels, minlength=3).min() > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"num_clusters": 0}, "num_clusters"), ({"num_clusters": 11}, "num_clusters"),
    ({"num_clusters": 2, "iterations": 0}, "iterations"), ({"num_clusters": 2, "backend": "sklearn"}, "backend"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kmeans(unit_rows(10, 3, 0), **kwargs)
