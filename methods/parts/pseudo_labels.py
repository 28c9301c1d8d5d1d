"""Online pseudo-labels over a memory bank: ODC's mechanism as InterCLR reuses it
(docs/methods/interclr.md §Pseudo-labels). Labels y (N,) and centroids mu (C, D) start from a k-means of the bank;
visited rows are relabelled every step, centroids are refreshed as per-cluster means, and small
clusters are repaired (members moved to the best non-small cluster, then every emptied cluster
re-seeded with one half of a 2-means split of the current largest cluster).
"""
from __future__ import annotations

import torch

from methods.parts.kmeans import cluster_means, kmeans
from methods.state import Stateful

ASSIGN_RULES = ("dot", "l2")  # dot: argmax mu·v with unnormalised mu (official, docs/methods/interclr.md §Pitfalls, item 1); l2: nearest mu


class PseudoLabels(Stateful):
    """Cluster labels (N,) int64 and centroids (C, D) float32 of a bank's rows."""

    state_names = ("labels", "centroids")
    state_shapes = ("pseudo-labels cover the training samples; centroids are method.num_clusters x "
                    "model.embed_dim")

    def __init__(self, labels: torch.Tensor, centroids: torch.Tensor, assign: str = "dot"):
        if assign not in ASSIGN_RULES:
            raise ValueError(f"assign must be one of {', '.join(ASSIGN_RULES)}, got {assign!r}")
        self.labels = labels
        self.centroids = centroids
        self.assign_rule = assign

    @classmethod
    def empty(cls, num_samples: int, num_clusters: int, dim: int, assign: str = "dot") -> "PseudoLabels":
        """Zero labels (num_samples,) and centroids (num_clusters, dim): the shapes a state must fit."""
        return cls(torch.zeros(num_samples, dtype=torch.long), torch.zeros(num_clusters, dim), assign)

    @classmethod
    def clustered(cls, bank: torch.Tensor, num_clusters: int, iterations: int, seed: int, backend: str,
                  assign: str = "dot") -> "PseudoLabels":
        """k-means labels of ``bank`` (N, D) (nearest centroid), centroids = per-cluster means."""
        result = kmeans(bank, num_clusters, iterations, seed, backend=backend)
        return cls(result.labels, cluster_means(bank, result.labels, num_clusters, result.centroids), assign)

    @property
    def num_clusters(self) -> int:
        return self.centroids.shape[0]

    def counts(self) -> torch.Tensor:
        """Members per cluster (C,)."""
        return torch.bincount(self.labels, minlength=self.num_clusters)

    def assign(self, rows: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """The cluster of each of ``rows`` (n, D) by the assign rule, among ``allowed`` (C,) bool."""
        scores = rows @ self.centroids.T
        if self.assign_rule == "l2":
            scores = scores - 0.5 * self.centroids.pow(2).sum(dim=1)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        return scores.argmax(dim=1)

    def relabel(self, indices: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Relabel samples ``indices`` from their bank ``rows``; returns the changed fraction."""
        new = self.assign(rows)
        changed = (new != self.labels[indices]).float().mean()
        self.labels[indices] = new
        return changed

    def refresh_centroids(self, bank: torch.Tensor) -> None:
        """Centroids = per-cluster means of ``bank``; an empty cluster keeps its centroid."""
        self.centroids = cluster_means(bank, self.labels, self.num_clusters, fallback=self.centroids)

    def sample_members(self, clusters: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One uniformly drawn member of each of ``clusters`` (B,) (each must be non-empty)."""
        order = torch.argsort(self.labels, stable=True)
        counts = self.counts()
        starts = counts.cumsum(0) - counts
        size = counts[clusters]
        draw = torch.rand(clusters.shape[0], generator=generator, device=self.labels.device)
        offset = (draw * size).long().minimum(size - 1)
        return order[starts[clusters] + offset]

    def repair(self, bank: torch.Tensor, min_size: int, split_iterations: int) -> int:
        """Empty every cluster under ``min_size`` members into the best non-small cluster, then
        re-seed each with half of the largest cluster (2-means); returns how many were re-seeded."""
        small = self.counts() < min_size
        small_ids = small.nonzero().flatten().tolist()
        if not small_ids:
            return 0
        members = small[self.labels]
        self.labels[members] = self.assign(bank[members], allowed=~small)
        for cluster in small_ids:
            self._split_largest_into(cluster, bank, split_iterations)
        return len(small_ids)

    def _split_largest_into(self, empty: int, bank: torch.Tensor, iterations: int) -> None:
        largest = int(self.counts().argmax())
        members = (self.labels == largest).nonzero().flatten()
        # 2-means with a fixed seed (the official scikit-learn split uses random_state=0)
        side = kmeans(bank[members], 2, iterations, seed=0, backend="torch").labels == 1
        if side.all() or not side.any():  # degenerate split: halves of a seeded permutation
            order = torch.randperm(len(members), generator=torch.Generator().manual_seed(0))
            side = torch.zeros_like(side)
            side[order[len(members) // 2:].to(side.device)] = True
        self.labels[members[side]] = empty
        for cluster in (largest, empty):
            self.centroids[cluster] = bank[self.labels == cluster].mean(dim=0)

    def purity(self, true_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Fraction of samples whose true class is their cluster's majority class."""
        joint = torch.bincount(self.labels * num_classes + true_labels, minlength=self.num_clusters * num_classes)
        return joint.view(self.num_clusters, num_classes).max(dim=1).values.sum() / self.labels.numel()
