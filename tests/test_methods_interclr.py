"""InterCLR (docs/methods/interclr.md, §Conformance checks): the inter loss with its margin against
slow loops, positives inside and negatives outside the anchor's cluster, the semi-hard pool,
bank update and relabel, centroid refresh, small-cluster repair, warm-up weights, state
round-trip, profiles, and bad options that name the option."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from method_configs import method_config
from methods_reference import unit_rows

from benchmark.core.config import ConfigError, resolve
from methods.base import build_method
from methods.parts.pseudo_labels import PseudoLabels

N, D = 120, 8
CONFIG = method_config("interclr", queue_size=16, num_clusters=6, min_cluster=5, negatives=12, pool_size=30,
                       kmeans_backend="torch", centroid_interval=3)


def started(features: torch.Tensor | None = None, n: int = N, **options) -> torch.nn.Module:
    method = build_method({**CONFIG, **options}, n, D)
    torch.manual_seed(0)
    method.on_train_start(lambda: unit_rows(n, D, 1) if features is None else features)
    return method


def batch(seed: int, size: int = 8) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    idx = torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:size]
    return {"query": unit_rows(size, D, 100 + seed), "key": unit_rows(size, D, 200 + seed)}, idx


def test_full_softmax_limit_and_margin_match_a_slow_loop():
    """docs/methods/interclr.md §Conformance checks, checks 5 and 2: one cluster per sample, hard negatives = every other row, weights (0, 1):
    the inter loss is a full-softmax instance loss whose positive (the own row) gains -m/tau."""
    n, tau, m = 10, 0.2, -0.5
    method = started(n=n, num_clusters=n, min_cluster=0, neg_sampling="hard", negatives=n - 1, queue_size=4,
                     intra_weight=0.0, inter_weight=1.0, margin=m)
    bank = method.bank.weight.clone()
    assert sorted(method.pseudo.labels.tolist()) == list(range(n))
    q = unit_rows(4, D, 7).requires_grad_(True)
    idx = torch.tensor([0, 3, 3, 9])
    out = method.loss({"query": q, "key": unit_rows(4, D, 8)}, idx, epoch=1)
    out.loss.backward()
    q_ref = q.detach().clone().requires_grad_(True)
    terms = []
    for row, i in enumerate(idx.tolist()):
        positive = torch.exp((torch.dot(q_ref[row], bank[i]) - m) / tau)
        others = sum(torch.exp(torch.dot(q_ref[row], bank[j]) / tau) for j in range(n) if j != i)
        terms.append(-torch.log(positive / (positive + others)))
    reference = torch.stack(terms).mean()
    reference.backward()
    assert out.loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert torch.allclose(q.grad, q_ref.grad, atol=1e-6)
    assert out.logs["self_positive_rate"] == 1.0 and out.logs["valid_negatives"] == n - 1


def test_zero_margin_with_both_weights_is_the_sum_of_two_info_nce_terms():
    plain = started(margin=0.0, intra_weight=1.0, inter_weight=1.0, neg_sampling="hard")
    views, idx = batch(1)
    out = plain.loss(views, idx, epoch=1)
    assert out.loss.item() == pytest.approx(out.logs["loss_intra"] + out.logs["loss_inter"], rel=1e-6)
    shifted = started(margin=-0.5, intra_weight=0.0, inter_weight=1.0, neg_sampling="hard")
    assert shifted.loss(views, idx, epoch=1).loss.item() < out.logs["loss_inter"]  # +2.5 nats on the positive


def test_arc_margin_matches_the_formula_with_its_fallbacks():
    from methods.interclr import margin_logit

    cosines = torch.tensor([0.99, 0.5, 0.0, -0.7, -0.999])
    for m in (-0.5, 0.4):
        got = margin_logit(cosines, m, "arc")
        for c, value in zip(cosines.tolist(), got.tolist()):
            theta = math.acos(c)
            if m < 0 and theta <= -m:
                expected = c - m * math.sin(-m)
            elif m >= 0 and theta >= math.pi - m:
                expected = c - m * math.sin(m)
            else:
                expected = math.cos(theta + m)
            assert value == pytest.approx(expected, abs=1e-5)


def test_warmup_epochs_use_the_intra_loss_only():
    method = started(warmup_epochs=1)
    views, idx = batch(2)
    warm, after = method.loss(views, idx, epoch=1), method.loss(views, idx, epoch=2)
    assert warm.loss.item() == pytest.approx(warm.logs["loss_intra"], rel=1e-6)
    assert after.loss.item() == pytest.approx(0.75 * after.logs["loss_intra"] + 0.25 * after.logs["loss_inter"],
                                              rel=1e-5)


def test_positives_share_the_label_and_cover_the_cluster():
    method = started()
    labels = method.pseudo.labels
    anchors = torch.arange(N).repeat(40)
    drawn = method.pseudo.sample_members(labels[anchors], torch.Generator().manual_seed(3))
    assert torch.equal(labels[drawn], labels[anchors])
    for cluster in labels.unique().tolist():
        members = set((labels == cluster).nonzero().flatten().tolist())
        assert set(drawn[labels[anchors] == cluster].tolist()) == members  # every member is drawn


@pytest.mark.parametrize("strategy", ["semihard", "semieasy", "random", "hard"])
def test_exclusive_negatives_lie_outside_the_cluster_and_in_their_pool(strategy):
    method = started(neg_sampling=strategy, neg_draw="exclusive")
    labels, bank = method.pseudo.labels, method.bank.weight
    views, idx = batch(4)
    sims = views["query"] @ bank.T
    negatives, valid = method.sample_negatives(sims, labels[idx], torch.Generator().manual_seed(5))
    assert negatives.shape == (8, 12)
    for row, anchor in enumerate(idx.tolist()):
        order = sorted(range(N), key=lambda j: -float(sims[row, j]))
        outside = [j for j in order if labels[j] != labels[anchor]]
        picked = negatives[row][valid[row]].tolist()
        assert valid[row].sum() == min(12, len(outside))
        assert all(labels[j] != labels[anchor] for j in picked) and len(set(picked)) == len(picked)
        if strategy == "semihard":
            assert set(picked) <= set(order[:30])
        elif strategy == "semieasy":
            assert set(picked) <= set(order[-30:])
        elif strategy == "hard":
            assert picked == outside[:12]


@pytest.mark.parametrize("draw", ["redraw", "exclusive"])
def test_negatives_are_masked_when_the_pool_holds_too_few_outsiders(draw):
    features = torch.cat([unit_rows(1, D, 3).repeat(60, 1), -unit_rows(1, D, 3).repeat(60, 1)])
    features = F.normalize(features + 1e-3 * unit_rows(N, D, 4), dim=1)
    method = started(features, num_clusters=2, min_cluster=5, negatives=40, pool_size=60, neg_draw=draw)
    anchor = torch.tensor([0])
    sims = features[anchor] @ method.bank.weight.T
    _, valid = method.sample_negatives(sims, method.pseudo.labels[anchor], torch.Generator().manual_seed(0))
    assert not valid.any()  # the 60 most similar rows are all in the anchor's own cluster
    out = method.loss({"query": features[:1], "key": features[:1]}, anchor, epoch=1)
    assert math.isfinite(out.loss.item()) and out.logs["loss_inter"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("strategy", ["semihard", "semieasy", "random"])
def test_official_redraw_keeps_no_cluster_member_and_may_repeat_a_negative(strategy):
    # mmselfsup 0.x interclr_moco.py: a first draw of K_n slots, then each slot holding a member
    # of the anchor's cluster takes the same slot of a fresh draw, until none is left; a fresh
    # slot may repeat one the row already holds. Two clusters of 60 and K_n = 25 of a 70-row pool
    # (semihard: 10 outsiders at most) make repeats certain; the exclusive variant never repeats.
    features = torch.cat([unit_rows(1, D, 3).repeat(60, 1), -unit_rows(1, D, 3).repeat(60, 1)])
    features = F.normalize(features + 0.3 * unit_rows(N, D, 4), dim=1)
    method = started(features, num_clusters=2, min_cluster=5, negatives=25, pool_size=70, neg_sampling=strategy)
    assert method.settings.neg_draw == "redraw"  # the official draw is the default
    labels = method.pseudo.labels
    anchors = torch.arange(0, N, 3)
    sims = features[anchors] @ method.bank.weight.T
    negatives, valid = method.sample_negatives(sims, labels[anchors], torch.Generator().manual_seed(1))
    fillable = [bool((labels[p] != labels[a]).any()) for p, a in zip(method._pool(sims), anchors)]
    assert valid.all(dim=1).tolist() == fillable and all(fillable)
    rows = [row for row, ok in enumerate(fillable) if ok]
    assert all((labels[negatives[r]] != labels[anchors[r]]).all() for r in rows)
    assert any(len(set(negatives[r].tolist())) < 25 for r in rows)  # a repeated negative
    if strategy != "random":
        pools = method._pool(sims)
        assert all(set(negatives[r].tolist()) <= set(pools[r].tolist()) for r in rows)
    exclusive = started(features, num_clusters=2, min_cluster=5, negatives=25, pool_size=70,
                        neg_sampling=strategy, neg_draw="exclusive")
    picked, ok = exclusive.sample_negatives(sims, labels[anchors], torch.Generator().manual_seed(1))
    assert all(len(set(picked[r][ok[r]].tolist())) == int(ok[r].sum()) for r in range(len(anchors)))


def test_training_images_are_drawn_with_replacement_by_default():
    assert started().samples_with_replacement  # official data config: replace=True
    assert not started(sample_with_replacement=False).samples_with_replacement
    assert not build_method(method_config("mocov2", queue_size=16), N, D).samples_with_replacement


def test_update_writes_keys_relabels_by_dot_product_and_refreshes_centroids_on_schedule():
    method = started(min_cluster=0)
    centroids = method.pseudo.centroids.clone()
    for step in range(3):
        views, idx = batch(10 + step)
        method.loss(views, idx, epoch=1)
        method.update()
        bank, labels = method.bank.weight, method.pseudo.labels
        assert torch.allclose(bank[idx], views["key"], atol=1e-6)  # beta = 1: the row is the key
        for i in idx.tolist():  # relabelled against the centroids as they stood before the refresh
            scores = [float(torch.dot(bank[i], c)) for c in centroids]
            assert labels[i] == max(range(len(scores)), key=lambda c: scores[c])
        if step < 2:
            assert torch.equal(method.pseudo.centroids, centroids)
    for cluster in range(6):  # centroid_interval 3: refreshed after the third step
        members = [bank[i] for i in range(N) if labels[i] == cluster]
        assert torch.allclose(method.pseudo.centroids[cluster], torch.stack(members).mean(0), atol=1e-6)


@pytest.mark.parametrize("assign", ["dot", "l2"])
def test_keys_equal_to_their_bank_rows_keep_every_label(assign):
    """Relabel churn comes from the keys, not the bookkeeping: on separated clusters, steps whose
    keys are the visited samples' own bank rows write those rows back and change no label (change
    ratio 0), through centroid refreshes and repairs; a key written to another sample's row would."""
    centres = unit_rows(6, D, 3) * 4.0
    features = F.normalize(centres.repeat_interleave(N // 6, dim=0) + 0.05 * unit_rows(N, D, 4), dim=1)
    method = started(features, assign=assign)
    labels = method.pseudo.labels.clone()
    for step in range(6):
        idx = torch.randperm(N, generator=torch.Generator().manual_seed(step))[:16]
        rows = method.bank.weight[idx].clone()
        method.loss({"query": rows, "key": rows}, idx, epoch=1)
        method.update()
        assert float(method.change_ratio) == 0.0
        assert torch.equal(method.bank.weight[idx], rows)
    assert torch.equal(method.pseudo.labels, labels)
    assert float(method.repaired) == 0.0


def test_l2_assignment_is_the_nearest_centroid():
    pseudo = PseudoLabels(torch.zeros(5, dtype=torch.long), torch.tensor([[0.1, 0.0], [2.0, 0.0]]), assign="l2")
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert pseudo.assign(rows).tolist() == [0, 0]
    assert PseudoLabels(pseudo.labels, pseudo.centroids, "dot").assign(rows).tolist() == [1, 0]


def test_repair_moves_small_clusters_and_leaves_none_empty():
    bank = unit_rows(N, D, 6)
    labels = torch.arange(N) % 4
    labels[:6] = 4  # a small cluster (6 < 10); cluster 5 is empty
    centroids = torch.stack([bank[labels == c].mean(0) if (labels == c).any() else torch.zeros(D) for c in range(6)])
    pseudo = PseudoLabels(labels.clone(), centroids.clone())
    expected = {i: max(range(4), key=lambda c: float(torch.dot(bank[i], centroids[c]))) for i in range(6)}
    assert pseudo.repair(bank, min_size=10, split_iterations=5) == 2
    counts = pseudo.counts()
    assert counts.min() > 0
    for i, target in expected.items():
        assert pseudo.labels[i] in (target, 4, 5)  # moved to a non-small cluster, unless a split took it
    for cluster in (4, 5):
        assert torch.allclose(pseudo.centroids[cluster], bank[pseudo.labels == cluster].mean(0), atol=1e-6)
    assert pseudo.repair(bank, min_size=1, split_iterations=5) == 0


def test_state_round_trip_resumes_identically():
    method = started()
    for step in range(2):
        views, idx = batch(20 + step)
        method.loss(views, idx, epoch=1)
        method.update()
    restored = build_method({**CONFIG}, N, D)
    restored.load_state_dict(method.state_dict())
    views, idx = batch(30)
    a, b = method.loss(views, idx, 1), restored.loss(views, idx, 1)
    assert a.loss.item() == b.loss.item() and a.logs == b.logs
    method.update()
    restored.update()
    sa, sb = method.state_dict(), restored.state_dict()
    assert torch.equal(sa["bank"]["weight"], sb["bank"]["weight"]) and torch.equal(sa["queue"]["keys"], sb["queue"]["keys"])
    assert all(torch.equal(sa["pseudo"][k], sb["pseudo"][k]) for k in ("labels", "centroids"))
    with pytest.raises(ValueError, match="num_clusters"):
        build_method({**CONFIG, "num_clusters": 5}, N, D).load_state_dict(sa)


def offline_epoch(method, epoch: int, seed: int) -> None:
    """on_epoch_start(epoch), then three steps of fresh keys."""
    method.on_epoch_start(epoch)
    for step in range(3):
        views, idx = batch(seed + step, size=16)
        method.loss(views, idx, epoch)
        method.update()


def test_offline_labels_stay_fixed_within_an_epoch_and_are_reclustered_from_the_bank():
    from methods.parts.kmeans import cluster_means, kmeans

    method = started(online_labels=False, offline_interval=2, centroid_interval=1, repair_interval=1)
    labels, centroids = method.pseudo.labels.clone(), method.pseudo.centroids.clone()
    method.on_epoch_start(1)  # the initial clustering serves epoch 1
    for step in range(4):
        views, idx = batch(50 + step, size=16)
        method.loss(views, idx, 1)
        method.update()
        assert torch.allclose(method.bank.weight[idx], views["key"], atol=1e-6)  # the bank is still written
        assert torch.equal(method.pseudo.labels, labels) and torch.equal(method.pseudo.centroids, centroids)
        assert float(method.change_ratio) == 0.0 and float(method.repaired) == 0.0
    method.on_epoch_start(2)  # offline_interval 2: not due after one epoch
    assert torch.equal(method.pseudo.labels, labels)
    offline_epoch(method, 2, 60)
    assert torch.equal(method.pseudo.labels, labels)
    bank = method.bank.weight.clone()
    assert method.kmeans_seed(3) == (method.seed + 7919 * 3) % (2**31 - 1) != method.kmeans_seed(5)
    method.on_epoch_start(3)  # due: k-means of the bank as it stands, with the epoch's seed
    expected = kmeans(bank, 6, 20, seed=method.kmeans_seed(3), backend="torch")
    assert torch.equal(method.pseudo.labels, expected.labels)
    assert not torch.equal(method.pseudo.labels, labels)
    assert torch.allclose(method.pseudo.centroids, cluster_means(bank, expected.labels, 6, expected.centroids))
    assert torch.equal(method.bank.weight, bank)  # clustering leaves the bank alone
    relabelled = method.pseudo.labels.clone()
    offline_epoch(method, 3, 70)
    assert torch.equal(method.pseudo.labels, relabelled)


def test_offline_labels_resume_identically_across_an_epoch_boundary():
    method = started(online_labels=False)
    offline_epoch(method, 1, 80)
    restored = build_method({**CONFIG, "online_labels": False}, N, D)
    restored.load_state_dict(method.state_dict())
    for run in (method, restored):
        offline_epoch(run, 2, 90)
    sa, sb = method.state_dict(), restored.state_dict()
    assert torch.equal(sa["bank"]["weight"], sb["bank"]["weight"]) and torch.equal(sa["queue"]["keys"], sb["queue"]["keys"])
    assert all(torch.equal(sa["pseudo"][k], sb["pseudo"][k]) for k in ("labels", "centroids"))
    views, idx = batch(99)
    a, b = method.loss(views, idx, 2), restored.loss(views, idx, 2)
    assert a.loss.item() == b.loss.item() and a.logs == b.logs


def test_online_labels_ignore_epoch_starts():
    method = started()
    labels = method.pseudo.labels.clone()
    method.on_epoch_start(2)
    assert torch.equal(method.pseudo.labels, labels)


def _offline_ddp_worker(rank, port, out_dir):
    import os

    import torch.distributed as dist
    from gloo_support import join_gloo

    import methods.interclr

    join_gloo(rank, 2, port)
    method = started(online_labels=False)  # every rank: identical bank (same features)
    if rank == 1:  # only rank 0 clusters; rank 1 takes its labels from the broadcast
        def refuse(*args, **kwargs):
            raise AssertionError("k-means ran on rank 1")
        methods.interclr.kmeans = refuse
    method.on_epoch_start(2)
    torch.save(method.pseudo.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_offline_reclustering_under_ddp_comes_from_rank_0(tmp_path):
    import torch.multiprocessing as mp
    from gloo_support import free_port

    mp.spawn(_offline_ddp_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    single = started(online_labels=False)
    single.on_epoch_start(2)
    for rank in range(2):
        state = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(state["labels"], single.pseudo.labels)
        assert torch.allclose(state["centroids"], single.pseudo.centroids, atol=1e-6)


def test_loss_before_the_initial_clustering_is_refused():
    views, idx = batch(0)
    with pytest.raises(RuntimeError, match="on_train_start"):
        build_method(CONFIG, N, D).loss(views, idx, 1)


def test_diagnostics_with_known_labels():
    method = started()
    truth = torch.arange(N) % 3
    method.set_diagnostic_labels(truth)
    views, idx = batch(40)
    logs = method.loss(views, idx, 1).logs
    for key in ("pos_precision", "neg_same_class", "label_purity", "clusters_nonempty", "change_ratio"):
        assert key in logs
    joint = torch.zeros(6, 3)
    for label, cls in zip(method.pseudo.labels.tolist(), truth.tolist()):
        joint[label, cls] += 1
    assert logs["label_purity"] == pytest.approx(joint.max(1).values.sum().item() / N)
    assert logs["clusters_nonempty"] == 6


def test_profiles_set_the_mlp_head_and_mocov2_recipe():
    mini = resolve("mini", "interclr")
    assert (mini.model.head, mini.data.augment) == ("mlp", "mini_mocov2")
    build_method(mini.method, 10000, mini.model.embed_dim)


@pytest.mark.parametrize("option, value", [
    ("num_clusters", 0), ("num_clusters", 30), ("min_cluster", -1), ("kmeans_backend", "sklearn"),
    ("assign", "cosine"), ("neg_sampling", "easy"), ("negatives", N), ("pool_size", 5), ("margin_type", "sphere"),
    ("margin", 2.0), ("inter_weight", -1.0), ("warmup_epochs", -1), ("bank_momentum", 0.0),
    ("centroid_interval", 0), ("repair_interval", 0), ("kmeans_iterations", 0), ("split_iterations", 0),
    ("online_labels", "false"), ("online_labels", 0), ("offline_interval", 0), ("neg_draw", "unique"),
    ("sample_with_replacement", "yes"),
])
def test_bad_options_name_the_option(option, value):
    with pytest.raises(ConfigError, match=option):
        build_method({**CONFIG, option: value}, N, D)
