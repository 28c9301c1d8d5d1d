"""Checkpoint files: atomic writes, newest-valid lookup, refusal of another config's checkpoint;
what a kill leaves behind (temp files, a half-written log line, a cut encoder) on resume."""
from __future__ import annotations

from pathlib import Path

import engine_support as es
import pytest
import torch

from benchmark.core import identity
from benchmark.core.atomic import save_atomic
from benchmark.engine import checkpoint as ckpt
from benchmark.engine.pretrain import pretrain
from benchmark.harness.jobs import Paths, run_job
from benchmark.harness.plan import plan_run
from benchmark.harness.pretrain_cli import main


def _write(folder: Path, step: int, config: dict) -> Path:
    state = {"step": step, "config": config, "config_hash": identity.pretrain_hash(config)}
    return save_atomic(state, ckpt.checkpoint_path(folder, step))


@pytest.fixture
def config(tmp_path: Path) -> dict:
    return es.tiny_config(tmp_path).to_dict()


def test_atomic_save_leaves_only_the_final_file(tmp_path: Path, config: dict) -> None:
    path = _write(tmp_path / "checkpoints", 7, config)
    assert [p.name for p in path.parent.iterdir()] == ["ckpt-000000007.pt"] == [path.name]
    assert torch.load(path, weights_only=True)["step"] == 7


def test_newest_readable_checkpoint_wins_and_truncated_ones_are_skipped(tmp_path: Path, config: dict) -> None:
    for step in (2, 10, 4):
        _write(tmp_path, step, config)
    assert ckpt.load_latest(tmp_path, config)["step"] == 10
    newest = ckpt.checkpoint_path(tmp_path, 10)
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint .*ckpt-000000010.pt"):
        assert ckpt.load_latest(tmp_path, config)["step"] == 4
    assert ckpt.load_latest(tmp_path, config, mode="never") is None
    assert ckpt.load_latest(tmp_path / "absent", config) is None


def test_other_config_is_refused_naming_the_keys(tmp_path: Path, config: dict) -> None:
    _write(tmp_path, 3, config)
    other = es.tiny_config(tmp_path, ("pretrain.epochs=9", "method.negatives=4")).to_dict()
    with pytest.raises(ckpt.CheckpointMismatch, match=r"differing keys: method.negatives, pretrain.epochs.*--resume force"):
        ckpt.load_latest(tmp_path, other)
    with pytest.warns(UserWarning, match="resuming anyway"):
        assert ckpt.load_latest(tmp_path, other, mode="force")["step"] == 3
    with pytest.raises(ValueError, match="valid values: auto, never, force"):
        ckpt.load_latest(tmp_path, other, mode="sometimes")


def test_operational_keys_do_not_change_the_identity(tmp_path: Path, config: dict) -> None:
    other = es.tiny_config(tmp_path, ("pretrain.checkpoint_every_steps=50", "data.num_workers=2",
                                      "tasks={}", "device=cuda")).to_dict()
    assert identity.pretrain_hash(other) == identity.pretrain_hash(config)
    assert identity.pretrain_hash(es.tiny_config(tmp_path, ("seed=4",)).to_dict()) != identity.pretrain_hash(config)


def test_prune_keeps_the_newest(tmp_path: Path, config: dict) -> None:
    for step in range(1, 6):
        _write(tmp_path, step, config)
    ckpt.prune(tmp_path, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-000000005.pt", "ckpt-000000004.pt"]


def test_cli_refuses_to_resume_another_configs_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    profile = es.tiny_profile(tmp_path)
    run_dir = tmp_path / "run"
    pretrain(es.tiny_config(tmp_path, ("pretrain.epochs=2",)), run_dir)
    args = ["--profile", str(profile), "--method", "engine_double", "--run-dir", str(run_dir)]
    assert main(args + ["--set", "pretrain.epochs=1", "--set", "model.width=8"]) == 2
    err = capsys.readouterr().err
    assert "differing keys: model.width" in err and "--resume never" in err
    # The refused run wrote nothing: the finished run's log is intact.
    assert [r["epoch"] for r in es.read_log(run_dir)] == [1, 2]
    # --resume never starts afresh: the old run's checkpoints go, the log restarts.
    assert main(args + ["--set", "pretrain.epochs=1", "--set", "model.width=8", "--resume", "never"]) == 0
    kept = ckpt.list_checkpoints(run_dir / "checkpoints")
    assert [int(p.stem.split("-")[1]) for p in kept] == [6, 4]
    assert {torch.load(p, weights_only=True)["config"]["model"]["width"] for p in kept} == {8}
    assert [r["epoch"] for r in es.read_log(run_dir)] == [1]


def test_a_checkpoint_that_holds_no_dict_is_skipped(tmp_path: Path, config: dict) -> None:
    _write(tmp_path, 4, config)
    save_atomic([1, 2, 3], ckpt.checkpoint_path(tmp_path, 9))
    with pytest.warns(UserWarning, match=r"skipping checkpoint .*ckpt-000000009.pt: it holds a list"):
        assert ckpt.load_latest(tmp_path, config)["step"] == 4


def test_the_encoder_records_only_what_trained_it(tmp_path: Path) -> None:
    """Runs that differ only in tasks, launcher, profile name or progress bars train the same
    weights: their encoder.pt files are byte-identical (same checkpoint hash)."""
    first = pretrain(es.tiny_config(tmp_path, ("pretrain.epochs=1",)), tmp_path / "a")
    second = pretrain(es.tiny_config(tmp_path, ("pretrain.epochs=1", "tasks={knn: {k: 5}}", "profile=other",
                                                "launcher={name: slurm}", "pretrain.progress=true")),
                      tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    state = torch.load(first, weights_only=True)
    assert set(state["config"]) == set(identity.IDENTITY_SECTIONS)
    assert "progress" not in state["config"]["pretrain"]


def test_resume_removes_orphans_and_drops_a_half_written_log_line(tmp_path: Path) -> None:
    cfg = es.tiny_config(tmp_path, ("pretrain.epochs=2",))
    run_dir = tmp_path / "run"
    pretrain(cfg, run_dir)
    orphan = run_dir / "checkpoints" / ".ckpt-000000013.pt.k2j4x9.tmp"  # a kill mid-save
    orphan.write_bytes(b"half a checkpoint")
    with open(run_dir / "log.jsonl", "a") as fh:
        fh.write('{"epoch": 3, "lo')  # a kill mid-line
    with pytest.warns(UserWarning, match=r"log.jsonl, line 3: dropping .*half-written"):
        pretrain(cfg, run_dir)
    assert [r["epoch"] for r in es.read_log(run_dir)] == [1, 2]
    assert not orphan.exists()
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "checkpoints", "encoder.pt", "log.jsonl"]


def test_a_truncated_encoder_is_not_cached_but_named_with_the_fix(tmp_path: Path) -> None:
    job = plan_run(es.tiny_config(tmp_path, ("pretrain.epochs=1",)), [], tmp_path / "runs")[0]
    paths = Paths(tmp_path / "results", tmp_path / "runs", tmp_path / "data")
    assert run_job(job, paths).status == "done"
    encoder = Path(job.pretrain_dir) / "encoder.pt"
    encoder.write_bytes(encoder.read_bytes()[:1000])  # cut short: a full disk, a killed copy
    outcome = run_job(job, paths)
    assert outcome.status == "failed"
    assert outcome.message.startswith(f"{encoder} is unreadable (RuntimeError: ") and "--force" in outcome.message
    assert run_job(job, paths, force=True).status == "done"
    assert run_job(job, paths).status == "cached"
