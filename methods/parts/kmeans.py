"""k-means for the clustering methods (InterCLR, CLIM): Lloyd's algorithm on embeddings.

``kmeans`` uses faiss (``faiss.Clustering``, the InterCLR code's tool, docs/methods/interclr.md §Pseudo-labels)
when it is importable and a vectorised torch implementation otherwise; both start from ``k``
distinct random points drawn from ``seed`` and are deterministic for a given backend and input.
The distance is L2, as the InterCLR code runs it on L2-normalised features with plain (not
renormalised) centroids; ``spherical=True`` renormalises the centroids after every update
(cosine k-means). ``nearest_centroid`` and ``cluster_means`` are the assignment and update
steps, shared with the methods' online label maintenance.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "faiss", "torch")


@dataclass
class KMeansResult:
    """Centroids (k, D) float32 and each point's L2-nearest centroid (N,) int64."""

    centroids: torch.Tensor
    labels: torch.Tensor


def faiss_available() -> bool:
    """True when faiss can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def nearest_centroid(features: torch.Tensor, centroids: torch.Tensor, chunk_size: int = 65536) -> torch.Tensor:
    """Index of the L2-nearest centroid of each row of ``features`` (N, D), ties to the lowest
    index: argmax over c of x·mu_c - ||mu_c||^2 / 2, in chunks of ``chunk_size`` rows."""
    bias = 0.5 * centroids.pow(2).sum(dim=1)
    parts = [(chunk @ centroids.T - bias).argmax(dim=1) for chunk in features.split(chunk_size)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=features.device)


def cluster_means(features: torch.Tensor, labels: torch.Tensor, num_clusters: int,
                  fallback: torch.Tensor | None = None) -> torch.Tensor:
    """Per-cluster means (num_clusters, D) of ``features`` (N, D) under ``labels`` (N,); an empty
    cluster gets its ``fallback`` row (e.g. its old centroid), or zeros without one."""
    sums = torch.zeros(num_clusters, features.shape[1], device=features.device, dtype=features.dtype)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_clusters).unsqueeze(1)
    means = sums / counts.clamp_min(1).to(features.dtype)
    if fallback is not None:
        means = torch.where(counts > 0, means, fallback.to(means))
    return means


def _torch_centroids(x: torch.Tensor, k: int, iterations: int, seed: int, spherical: bool) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centroids = x[torch.randperm(x.shape[0], generator=generator)[:k].to(x.device)].clone()
    for _ in range(iterations):
        labels = nearest_centroid(x, centroids)
        means = cluster_means(x, labels, k, fallback=centroids)
        empty = (torch.bincount(labels, minlength=k) == 0).nonzero().flatten()
        if len(empty):  # re-seed empty clusters at the points farthest from their centroid
            far = (x - centroids[labels]).pow(2).sum(dim=1).topk(len(empty)).indices
            means[empty] = x[far]
        centroids = F.normalize(means, dim=1) if spherical else means
    return centroids


def _faiss_centroids(x: torch.Tensor, k: int, iterations: int, seed: int, spherical: bool) -> torch.Tensor:
    import faiss

    clustering = faiss.Clustering(x.shape[1], k)
    clustering.niter = iterations
    clustering.seed = seed
    clustering.spherical = spherical
    clustering.max_points_per_centroid = 10_000_000  # use every point (InterCLR code, docs/methods/interclr.md §Pseudo-labels)
    clustering.min_points_per_centroid = 1
    clustering.verbose = False
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(torch.get_num_threads())  # the run's thread budget
    try:
        clustering.train(x.cpu().numpy(), faiss.IndexFlatL2(x.shape[1]))
    finally:
        faiss.omp_set_num_threads(threads)
    return torch.from_numpy(faiss.vector_to_array(clustering.centroids).reshape(k, x.shape[1]).copy())


def kmeans(features: torch.Tensor, num_clusters: int, iterations: int = 20, seed: int = 0,
           spherical: bool = False, backend: str = "auto") -> KMeansResult:
    """Cluster ``features`` (N, D) into ``num_clusters`` with ``iterations`` Lloyd steps; the
    labels are the L2-nearest final centroids. ``backend``: auto (faiss if importable) | faiss |
    torch. Results are on the features' device."""
    if backend not in BACKENDS:
        raise ValueError(f"k-means backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if features.dim() != 2 or not 1 <= num_clusters <= features.shape[0]:
        raise ValueError(f"k-means needs features (N, D) with 1 <= num_clusters <= N, got "
                         f"{tuple(features.shape)} and num_clusters={num_clusters}")
    if iterations < 1:
        raise ValueError(f"k-means iterations must be >= 1, got {iterations}")
    x = features.detach().float().contiguous()
    use_faiss = backend == "faiss" or (backend == "auto" and faiss_available())
    run = _faiss_centroids if use_faiss else _torch_centroids
    centroids = run(x, num_clusters, iterations, seed, spherical).to(x.device)
    return KMeansResult(centroids, nearest_centroid(x, centroids))
