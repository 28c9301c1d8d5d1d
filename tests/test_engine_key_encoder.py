"""The engine's multi-view path: MoCo v2 under 2 gloo ranks matches one process (same weights,
one queue on every rank), and the hooks InterCLR/CLIM build on (on_train_start, prepare_batch
with fetch, after_step) see what they promise."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import engine_support as es
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
import yaml
from gloo_support import free_port, set_rank_environment

from benchmark.core.config import resolve
from benchmark.core.distributed import shutdown
from benchmark.core.runtime import seed_everything
from benchmark.engine.monitor import evaluating, extract
from benchmark.engine.pretrain import prepare_run
from benchmark.engine.wiring import build_encoder
from methods.base import register
from methods.mocov2 import MoCoV2

pytestmark = pytest.mark.slow

OVERRIDES = ["model.backbone=engine_plain_cnn", "pretrain.epochs=2", "pretrain.checkpoint_every_steps=0"]


@register
class HookRecorder(MoCoV2):
    """MoCo v2 that records what the engine passes to its hooks."""

    name = "engine_hooks"
    summary = "test double: MoCo v2 recording its hooks"

    def __init__(self, config: Any, num_samples: int, embed_dim: int):
        super().__init__(config, num_samples, embed_dim)
        self.clean: torch.Tensor | None = None
        self.fetch_matches: list[bool] = []
        self.keys_seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.after: list[tuple[torch.Tensor, torch.Tensor, int]] = []

    def on_train_start(self, extract_embeddings: Any) -> None:
        self.clean = extract_embeddings()

    def prepare_batch(self, views: dict, indices: torch.Tensor, fetch: Any) -> dict:
        fetched = fetch(indices)
        self.fetch_matches.append(all(torch.equal(fetched[name], views[name]) for name in views))
        return views

    def loss(self, embeddings: Any, indices: torch.Tensor, epoch: int) -> Any:
        self.keys_seen.append((indices.clone(), embeddings["key"].clone()))
        assert embeddings["query"].requires_grad and not embeddings["key"].requires_grad
        return super().loss(embeddings, indices, epoch)

    def after_step(self, indices: torch.Tensor, keys: torch.Tensor, step: int) -> None:
        self.after.append((indices.clone(), keys.clone(), step))


def _config(tmp: Path, method: str, overrides: list[str]) -> Any:
    profile = es.tiny_profile(tmp)
    tree = yaml.safe_load(profile.read_text())
    tree["methods"]["engine_hooks"] = es.MOCOV2_TINY
    profile.write_text(yaml.safe_dump(tree))
    return resolve(str(profile), method, overrides)


def test_hooks_get_clean_embeddings_fetched_views_and_gathered_keys(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "engine_hooks", ["pretrain.epochs=1", "pretrain.monitor.every=0"])
    run = prepare_run(cfg, tmp_path / "run", resume="never")
    run.run()
    method = run.parts.method
    seed_everything(int(cfg.seed))
    initial = build_encoder(cfg.model)
    with evaluating(initial):
        _, expected = extract(initial.backbone, initial.head, run.data.monitor_train, torch.device("cpu"),
                              torch.no_grad)
    assert method.clean is not None and torch.allclose(method.clean, F.normalize(expected, dim=1), atol=1e-5)
    assert method.fetch_matches == [True] * 6
    assert [step for _, _, step in method.after] == list(range(6))
    for (indices, keys), (after_indices, after_keys, _) in zip(method.keys_seen, method.after):
        assert torch.equal(indices, after_indices) and torch.equal(keys, after_keys)
    assert torch.allclose(method.after[0][1].norm(dim=1), torch.ones(32))

    resumed = prepare_run(cfg, tmp_path / "run", resume="auto")
    resumed.run()
    assert resumed.parts.method.clean is None, "on_train_start ran again on resume"


def _train(tmp: Path, run_dir: Path) -> dict:
    run = prepare_run(_config(tmp, "mocov2", OVERRIDES), run_dir, resume="never")
    run.run()
    return {"method": run.parts.method.state_dict(), "key_encoder": run.parts.key_encoder.module.state_dict()}


def _worker(rank: int, world: int, port: int, tmp: Path) -> None:
    set_rank_environment(rank, world, port)
    try:
        torch.save(_train(tmp, tmp / "ddp"), tmp / f"state-rank{rank}.pt")
    finally:
        shutdown()


def _rows_sorted(keys: torch.Tensor) -> torch.Tensor:
    return keys[keys[:, 0].argsort()]


def test_mocov2_on_two_gloo_ranks_matches_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, free_port(), tmp_path), nprocs=2, join=True)
    single = _train(tmp_path, tmp_path / "single")
    ranks = [torch.load(tmp_path / f"state-rank{r}.pt") for r in range(2)]
    queues = [r["method"]["queue"] for r in ranks]
    assert torch.equal(queues[0]["keys"], queues[1]["keys"]), "ranks hold different queues"
    assert queues[0]["pointer"] == single["method"]["queue"]["pointer"]
    # the same keys (a DDP batch orders its samples rank by rank)
    assert torch.allclose(_rows_sorted(queues[0]["keys"]), _rows_sorted(single["method"]["queue"]["keys"]),
                          atol=1e-5)
    for key, value in single["key_encoder"].items():
        assert torch.equal(ranks[0]["key_encoder"][key], ranks[1]["key_encoder"][key])
        assert torch.allclose(ranks[0]["key_encoder"][key], value, atol=1e-5), f"key encoder {key} differs"
    ddp = torch.load(tmp_path / "ddp" / "encoder.pt", weights_only=True)
    ref = torch.load(tmp_path / "single" / "encoder.pt", weights_only=True)
    for part in ("backbone", "head"):
        for key, value in ref[part].items():
            assert torch.allclose(ddp[part][key], value, atol=1e-5), f"{part}.{key} differs"
    for a, b in zip(es.read_log(tmp_path / "ddp"), es.read_log(tmp_path / "single")):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
