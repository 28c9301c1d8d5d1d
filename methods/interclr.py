"""InterCLR (Xie et al., IJCV 2022; official code mmselfsup 0.x, docs/methods/interclr.md): MoCo v2's
intra-image InfoNCE plus an inter-image InfoNCE whose positive is a random member of the anchor's
online pseudo-label cluster and whose negatives are sampled from a pool of bank rows outside it
(semi-hard by default), with a cosine margin on the positive: L = 0.75 L_intra + 0.25 L_inter.

Bank rows, labels and centroids live in a MemoryBank and PseudoLabels, built by k-means over the
clean embeddings in ``on_train_start`` and maintained in ``after_step`` (bank row <- key, relabel,
centroids every ``centroid_interval`` steps, small-cluster repair every ``repair_interval``).
``online_labels=False``: offline-label ablation (docs/methods/interclr.md §Pseudo-labels, item 4), no per-step relabel, k-means of the bank at epoch starts.
The inter logits are gathered from S = q·Vᵀ (docs/methods/interclr.md §Cost per step: the cheaper, identical formulation). The
sampling randomness of a step comes from a generator seeded by (run's draw, step), so an exact
resume needs no RNG state beyond that seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F

from benchmark.core.fields import Bool, Choice, Float, Int
from benchmark.core.settings import require, setting
from methods.base import LossOutput, no_autocast, pack_output, register
from methods.mocov2 import MoCoV2
from methods.parts.diagnostics import label_precision
from methods.parts.dist_utils import broadcast_from_rank0, is_distributed
from methods.parts.kmeans import BACKENDS, KMeansResult, cluster_means, kmeans
from methods.parts.losses import info_nce
from methods.parts.memory_bank import MemoryBank
from methods.parts.momentum_method import MomentumSettings
from methods.parts.pseudo_labels import ASSIGN_RULES, PseudoLabels

NEGATIVE_SAMPLING = ("semihard", "hard", "random", "semieasy")
NEGATIVE_DRAWS = ("redraw", "exclusive")
MARGIN_TYPES = ("cosine", "arc")


@dataclass(frozen=True)
class InterCLRSettings(MomentumSettings):
    """InterCLR's options, all set by the profile (release values: mmselfsup
    interclr-moco_resnet50_8xb32-coslr-200e_in1k, docs/methods/interclr.md §Hyperparameters)."""

    num_clusters: int = setting(spec=Int(ge=1))
    kmeans_iterations: int = setting(spec=Int(ge=1))  # initial k-means (faiss, no PCA)
    kmeans_backend: str = setting(spec=Choice(BACKENDS))  # auto (faiss if importable) | faiss | torch
    assign: str = setting(spec=Choice(ASSIGN_RULES))  # relabel rule: dot (official, unnormalised mu) | l2 (docs/methods/interclr.md §Pitfalls, item 1)
    min_cluster: int = setting(spec=Int(ge=0))  # small-cluster repair threshold (0 = no repair)
    centroid_interval: int = setting(spec=Int(ge=1))  # steps between centroid refreshes
    repair_interval: int = setting(spec=Int(ge=1))  # steps between small-cluster repairs
    split_iterations: int = setting(spec=Int(ge=1))  # 2-means iterations of a re-seeding split
    negatives: int = setting(spec=Int(ge=1))  # K_n inter negatives per anchor
    pool_size: int = setting(spec=Int(ge=1))  # M_s semi-hard (semi-easy) pool
    neg_sampling: str = setting(spec=Choice(NEGATIVE_SAMPLING))  # semihard | hard | random | semieasy (docs/methods/interclr.md §Sampling)
    neg_draw: str = setting(spec=Choice(NEGATIVE_DRAWS))  # redraw (official: redraw same-cluster slots, repeats possible) | exclusive
    sample_with_replacement: bool = setting(spec=Bool())  # each epoch draws N images with replacement (official replace=True)
    margin: float = setting(spec=Float(ge=-1, le=1))  # m: the positive logit is cos - m (cosine) or cos(theta + m) (arc)
    margin_type: str = setting(spec=Choice(MARGIN_TYPES))  # cosine | arc
    intra_weight: float = setting(spec=Float(ge=0))
    inter_weight: float = setting(spec=Float(ge=0))
    warmup_epochs: int = setting(spec=Int(ge=0))  # first epochs with weights (1, 0) (official hook option, off)
    bank_momentum: float = setting(spec=Float(gt=0, le=1))  # beta: row <- normalise((1 - beta) row + beta key); 1 = replace
    # Pseudo-label maintenance (docs/methods/interclr.md §Pseudo-labels). True: online labels (official default). False: the offline
    # ablation (official hook ``online_labels=False``): labels fixed within an epoch, re-clustered
    # at the start of every epoch e > 1 with (e - 1) % offline_interval == 0, i.e. after every
    # ``offline_interval`` finished epochs, as the official ``after_train_epoch`` does. Deviation:
    # the official hook clusters a fresh eval-transform extraction; here k-means runs on the
    # memory bank (the latest key of every sample), since on_epoch_start has no extraction pass.
    # Offline mode also follows the official hook in skipping the per-step centroid refresh and
    # small-cluster repair (they would move labels); the initial clustering is shared with online.
    online_labels: bool = setting(spec=Bool())
    offline_interval: int = setting(spec=Int(ge=1))  # epochs between offline re-clusterings (official ``interval``: 1)


def margin_logit(cosine: torch.Tensor, margin: float, kind: str) -> torch.Tensor:
    """The positive's similarity after the margin: cos - m, or ArcFace's cos(theta + m) with the
    official fallbacks near the ends of the angle range (docs/methods/interclr.md §Margin)."""
    if kind == "cosine":
        return cosine - margin
    theta = torch.acos(cosine.clamp(-1 + 1e-7, 1 - 1e-7))
    arc = torch.cos(theta + margin)
    if margin < 0:
        return torch.where(theta <= -margin, cosine - margin * math.sin(-margin), arc)
    return torch.where(theta >= math.pi - margin, cosine - margin * math.sin(margin), arc)


@register
class InterCLR(MoCoV2):
    name = "interclr"
    summary = ("InterCLR: MoCo v2 + inter-image InfoNCE (positives from online k-means pseudo-labels, "
               "semi-hard negatives, cosine margin)")
    settings_class = InterCLRSettings
    state_names = ("bank", "pseudo", "seed", "change_ratio", "repaired")

    def __init__(self, config: Mapping[str, Any], num_samples: int, embed_dim: int):
        super().__init__(config, num_samples, embed_dim)
        s: InterCLRSettings = self.settings  # type: ignore[assignment]
        self._check_sizes(s, num_samples)
        self.bank = MemoryBank.empty(num_samples, embed_dim, 1.0 - s.bank_momentum)  # filled by on_train_start
        self.pseudo = PseudoLabels.empty(num_samples, s.num_clusters, embed_dim, s.assign)
        self.seed = 0
        self.num_classes = 0
        self.change_ratio = torch.zeros(())
        self.repaired = torch.zeros(())

    def _check_sizes(self, s: InterCLRSettings, n: int) -> None:
        """The options bounded by the training set's size ``n``."""
        require(s.num_clusters <= n, self.name, "num_clusters", f"in [1, {n}]", s.num_clusters)
        require(s.min_cluster == 0 or s.num_clusters * max(s.min_cluster, 2) <= n, self.name, "min_cluster",
                f"0 (no repair) or have num_clusters * max(min_cluster, 2) <= {n} (so that a repair always "
                f"finds a cluster to split)", s.min_cluster)
        require(s.negatives < n, self.name, "negatives", f"in [1, {n})", s.negatives)
        if s.neg_sampling in ("semihard", "semieasy"):
            require(s.pool_size <= n, self.name, "pool_size",
                    f"in [negatives={s.negatives}, {n}] for neg_sampling {s.neg_sampling}", s.pool_size)

    @classmethod
    def validate_settings(cls, s: InterCLRSettings) -> None:
        if s.neg_sampling in ("semihard", "semieasy"):
            require(s.negatives <= s.pool_size, cls.name, "pool_size",
                    f">= negatives={s.negatives} for neg_sampling {s.neg_sampling}", s.pool_size)

    def set_diagnostic_labels(self, labels: torch.Tensor | None) -> None:
        super().set_diagnostic_labels(labels)
        self.num_classes = 0 if labels is None or not len(labels) else int(labels.max()) + 1

    def on_train_start(self, extract: Callable[[], torch.Tensor]) -> None:
        """Bank = clean embeddings of the initial network; labels = their k-means (docs/methods/interclr.md §Pseudo-labels, item 1), then
        one repair (the official code asserts no empty cluster instead); rank 0's state wins."""
        s: InterCLRSettings = self.settings  # type: ignore[assignment]
        features = F.normalize(extract().float().to(self.device), dim=1)
        seed = torch.randint(2**31 - 1, (1,), dtype=torch.long)  # the run's seeded global RNG
        broadcast_from_rank0(seed)
        self.seed = int(seed)
        self.bank.fill(features)
        self.pseudo = PseudoLabels.clustered(features, s.num_clusters, s.kmeans_iterations, self.seed,
                                             s.kmeans_backend, s.assign)
        if s.min_cluster:
            self.pseudo.repair(self.bank.weight, s.min_cluster, s.split_iterations)
        for tensor in (self.bank.weight, self.pseudo.labels, self.pseudo.centroids):
            broadcast_from_rank0(tensor)

    def kmeans_seed(self, epoch: int) -> int:
        """Seed of the offline re-clustering at the start of ``epoch``: a function of the run's
        seed and the epoch only (the official one comes from numpy's unseeded RNG, docs/methods/interclr.md §Pitfalls, item 4), so a
        resume at an epoch boundary re-clusters identically."""
        return (self.seed + 7919 * epoch) % (2**31 - 1)

    def on_epoch_start(self, epoch: int) -> None:
        """Offline labels only: every ``offline_interval`` finished epochs, labels <- k-means of the
        bank (``kmeans_iterations`` Lloyd steps, seed ``kmeans_seed(epoch)``), centroids <- their
        per-cluster means. Rank 0 clusters and broadcasts; the banks are identical on every rank.
        No repair: an empty cluster cannot hurt sampling, as every anchor is in its own cluster."""
        s: InterCLRSettings = self.settings  # type: ignore[assignment]
        if s.online_labels or epoch <= 1 or (epoch - 1) % s.offline_interval:
            return
        bank, pseudo = self._state()
        features = bank.weight
        if not is_distributed() or dist.get_rank() == 0:
            result = kmeans(features, s.num_clusters, s.kmeans_iterations, self.kmeans_seed(epoch),
                            backend=s.kmeans_backend)
        else:
            result = KMeansResult(torch.zeros_like(pseudo.centroids), torch.zeros_like(pseudo.labels))
        labels, centroids = result.labels.to(pseudo.labels), result.centroids.to(pseudo.centroids)
        broadcast_from_rank0(labels)
        broadcast_from_rank0(centroids)
        pseudo.labels = labels
        pseudo.centroids = cluster_means(features, labels, s.num_clusters, centroids)

    def _state(self) -> tuple[MemoryBank, PseudoLabels]:
        if not self.bank.filled:
            raise RuntimeError(f"method {self.name!r}: no bank and pseudo-labels; on_train_start(extract) must "
                               f"run before the first step (or load a checkpoint)")
        return self.bank, self.pseudo

    def _generator(self) -> torch.Generator:
        """This step's sampling generator: a function of (seed, step) only."""
        return torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + self.steps)

    @property
    def samples_with_replacement(self) -> bool:
        """Option ``sample_with_replacement`` (official: True, the release's ``replace=True``)."""
        return bool(self.settings.sample_with_replacement)

    def _pool(self, sims: torch.Tensor) -> torch.Tensor:
        """(B, P) bank indices the negatives come from: the ``pool_size`` most (semihard) or least
        (semieasy) similar rows, else every row."""
        s: InterCLRSettings = self.settings  # type: ignore[assignment]
        if s.neg_sampling in ("semihard", "semieasy"):
            return sims.topk(s.pool_size, dim=1, largest=s.neg_sampling == "semihard", sorted=False).indices
        return torch.arange(self.num_samples, device=self.device).expand(sims.shape[0], -1)

    def sample_negatives(self, sims: torch.Tensor, anchor_labels: torch.Tensor,
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K_n) bank indices outside each anchor's cluster and a validity mask (False where a
        row cannot be filled): ``hard`` takes the most similar outsiders; the others follow
        ``neg_draw`` (:meth:`redrawn_negatives`, official, or :meth:`exclusive_negatives`)."""
        s: InterCLRSettings = self.settings  # type: ignore[assignment]
        if s.neg_sampling == "hard" or s.neg_draw == "exclusive":
            return self.exclusive_negatives(sims, anchor_labels, generator)
        return self.redrawn_negatives(sims, anchor_labels, generator)

    def redrawn_negatives(self, sims: torch.Tensor, anchor_labels: torch.Tensor,
                          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The official draw (mmselfsup 0.x ``interclr_moco.py``, docs/methods/interclr.md §Sampling):
        ``negatives`` slots drawn from the pool (semihard/semieasy: uniformly without replacement;
        random: every row, with replacement, as its alias sampler), then, until no slot holds a
        member of the anchor's cluster, each such slot takes the same slot of a fresh draw, so a
        row may repeat a negative. Rows whose pool holds no outsider are masked invalid."""
        s: InterCLRSettings = self.settings  # type: ignore[assignment]
        pool = self._pool(sims)
        anchors = anchor_labels.view(-1, 1)
        fillable = (self.pseudo.labels[pool] != anchors).any(dim=1, keepdim=True)

        def draw() -> torch.Tensor:
            if s.neg_sampling == "random":
                return torch.randint(self.num_samples, (pool.shape[0], s.negatives), generator=generator,
                                     device=self.device)
            keys = torch.rand(pool.shape, generator=generator, device=self.device)
            return pool.gather(1, keys.topk(s.negatives, dim=1).indices)

        chosen = draw()
        inside = (self.pseudo.labels[chosen] == anchors) & fillable
        while inside.any():
            chosen = torch.where(inside, draw(), chosen)
            inside = (self.pseudo.labels[chosen] == anchors) & fillable
        return chosen, fillable.expand_as(chosen)

    def exclusive_negatives(self, sims: torch.Tensor, anchor_labels: torch.Tensor,
                            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``negatives`` distinct pool members outside the anchor's cluster, uniformly without
        replacement (random keys, top-K_n) or the most similar ones (hard); slots beyond the
        outsiders a pool holds are masked invalid (``neg_draw: exclusive``, the suite's variant)."""
        s: InterCLRSettings = self.settings  # type: ignore[assignment]
        pool = self._pool(sims)
        outside = self.pseudo.labels[pool] != anchor_labels.view(-1, 1)
        score = sims.gather(1, pool) if s.neg_sampling == "hard" else \
            torch.rand(pool.shape, generator=generator, device=self.device)
        top = score.masked_fill(~outside, float("-inf")).topk(s.negatives, dim=1)
        return pool.gather(1, top.indices), top.values > float("-inf")

    def loss(self, embeddings: Any, indices: torch.Tensor, epoch: int) -> LossOutput:
        q, k, idx = self._prepare(embeddings, indices)
        bank, pseudo = self._state()
        s: InterCLRSettings = self.settings  # type: ignore[assignment]
        intra, intra_logs = self.intra_loss(q, k)
        with no_autocast(self.device):
            sims = q @ bank.weight.T
            generator = self._generator()
            anchor_labels = pseudo.labels[idx]
            positives = pseudo.sample_members(anchor_labels, generator)
            negatives, valid = self.sample_negatives(sims.detach(), anchor_labels, generator)
            positive = sims.gather(1, positives.view(-1, 1)).squeeze(1)
            negative_logits = sims.gather(1, negatives).masked_fill(~valid, float("-inf"))
            inter = info_nce(margin_logit(positive, s.margin, s.margin_type) / s.temperature,
                             negative_logits / s.temperature).mean()
        weights = (1.0, 0.0) if epoch <= s.warmup_epochs else (s.intra_weight, s.inter_weight)
        counts = pseudo.counts()
        intra_logs.pop("loss_moco")
        logs = {"loss_intra": intra, "loss_inter": inter, **intra_logs,
                "inter_positive_similarity": positive.mean(), "self_positive_rate": (positives == idx).float().mean(),
                "valid_negatives": valid.float().sum(dim=1).mean(), "change_ratio": self.change_ratio,
                "clusters_repaired": self.repaired, "clusters_nonempty": (counts > 0).sum(),
                "cluster_size_min": counts.min(), "cluster_size_max": counts.max()}
        if self.diagnostic_labels is not None:
            truth = self.diagnostic_labels
            logs["pos_precision"] = label_precision(truth, idx, positives.view(-1, 1))
            logs["neg_same_class"] = label_precision(truth, idx, negatives, valid)
            logs["label_purity"] = pseudo.purity(truth, self.num_classes)
        return pack_output(weights[0] * intra + weights[1] * inter, logs)[0]

    def after_step(self, indices: torch.Tensor, keys: torch.Tensor, step: int) -> None:
        """Bank rows <- keys, relabel them; refresh centroids and repair small clusters when due.
        Offline labels: the bank write only (change_ratio stays 0)."""
        bank, pseudo = self._state()
        s: InterCLRSettings = self.settings  # type: ignore[assignment]
        bank.update(indices, keys)
        if not s.online_labels:
            return
        self.change_ratio = pseudo.relabel(indices, bank.weight[indices])
        if (step + 1) % s.centroid_interval == 0:
            pseudo.refresh_centroids(bank.weight)
        if s.min_cluster and (step + 1) % s.repair_interval == 0:
            self.repaired = torch.tensor(float(pseudo.repair(bank.weight, s.min_cluster, s.split_iterations)))
