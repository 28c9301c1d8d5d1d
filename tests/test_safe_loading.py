"""Loading a file never executes code: every reader of torch files refuses a pickle whose
``__reduce__`` would create a marker file, naming the file, and the marker never appears. What
the engine writes (checkpoints with RNG states, ``encoder.pt``) loads with ``weights_only=True``.
The feature cache holds raw arrays and JSON, no pickle (tests/test_tasks_features.py plants one)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import engine_support as es
import numpy as np
import pytest
import torch
from payload_support import Payload

from benchmark.core.atomic import save_atomic
from benchmark.core.safe_load import CorruptFile, UnsafeFile, load_weights_only
from benchmark.engine import checkpoint as ckpt
from benchmark.engine.pretrain import pretrain_unless_done
from benchmark.harness.cli import main as cli_main
from benchmark.harness.jobs import Paths, run_job, run_pretrain_job
from benchmark.harness.plan import plan_run
from benchmark.harness.pretrain_cli import main as pretrain_main
from benchmark.models.encoders import load_encoder_backbone
from benchmark.report.figure_inputs import encoder_features
from tasks.base import EncoderHandle
from tasks.detection.export import export_detectron2


def plant(path: Path, marker: Path) -> Path:
    """A torch file at ``path`` shaped like an encoder checkpoint, with the payload inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"backbone": {"weight": Payload(marker)}, "head": {}, "config": {"model": {}}}, path)
    return path


LOADERS: dict[str, Callable[[Path, Path], Path]] = {}


def loader(name: str) -> Callable:
    def register(fn: Callable[[Path, Path], Path]) -> Callable:
        LOADERS[name] = fn
        return fn
    return register


@loader("training checkpoint")
def _checkpoint(tmp: Path, marker: Path) -> Path:
    config = es.tiny_config(tmp).to_dict()
    path = plant(ckpt.checkpoint_path(tmp / "checkpoints", 5), marker)
    ckpt.load_latest(tmp / "checkpoints", config)
    return path


@loader("encoder for a task")
def _encoder(tmp: Path, marker: Path) -> Path:
    path = plant(tmp / "run" / "encoder.pt", marker)
    load_encoder_backbone(EncoderHandle("pretrained", es.tiny_config(tmp), path))
    return path


@loader("encoder for the figures")
def _figures(tmp: Path, marker: Path) -> Path:
    path = plant(tmp / "run" / "encoder.pt", marker)
    encoder_features(path, tmp / "data")
    return path


@loader("encoder of a finished pretraining")
def _reused(tmp: Path, marker: Path) -> Path:
    path = plant(tmp / "run" / "encoder.pt", marker)
    pretrain_unless_done(es.tiny_config(tmp), tmp / "run")
    return path


@loader("export input")
def _export(tmp: Path, marker: Path) -> Path:
    path = plant(tmp / "encoder.pt", marker)
    export_detectron2(path, tmp / "out.pkl")
    return path


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_loader_refuses_a_payload_naming_the_file(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    with pytest.raises(UnsafeFile, match=r"was not loaded: it refers to .*open.*can run arbitrary code") as info:
        LOADERS[name](tmp_path, marker)
    assert info.value.path.name in str(info.value) and str(info.value).startswith(str(tmp_path))
    assert not marker.exists(), "loading the file ran its code"


def test_the_clis_refuse_a_payload_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "MARKER"
    encoder = plant(tmp_path / "encoder.pt", marker)
    assert cli_main(["export", "--format", "detectron2", str(encoder), str(tmp_path / "out.pkl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {encoder} was not loaded") and "Traceback" not in err
    run_dir = tmp_path / "run"
    checkpoint = plant(ckpt.checkpoint_path(run_dir / "checkpoints", 5), marker)
    args = ["--profile", str(es.tiny_profile(tmp_path)), "--method", "engine_double", "--run-dir", str(run_dir)]
    assert pretrain_main(args) == 2
    err = capsys.readouterr().err
    assert f"error: {checkpoint} was not loaded" in err and "--resume never" in err
    assert not marker.exists()


def test_a_run_names_a_refused_encoder_without_a_traceback(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    job = plan_run(es.tiny_config(tmp_path), [], tmp_path / "runs")[0]
    encoder = plant(Path(job.pretrain_dir) / "encoder.pt", marker)
    outcome = run_job(job, Paths(tmp_path / "results", tmp_path / "runs", tmp_path / "data"))
    assert outcome.status == "failed" and outcome.message.startswith(f"{encoder} was not loaded")
    assert "--force" in outcome.message and "Traceback" not in outcome.message
    assert not marker.exists()


def test_corrupt_files_are_named_too(tmp_path: Path) -> None:
    path = tmp_path / "cut.pt"
    torch.save({"a": torch.ones(3)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CorruptFile, match=rf"{path} is unreadable \(RuntimeError: .*\)\. Do this"):
        load_weights_only(path, "Do this")


def test_rng_states_survive_a_weights_only_round_trip(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.standard_normal()  # non-trivial cached Gaussians
    path = save_atomic({"rng": ckpt.rng_state()}, tmp_path / "rng.pt")

    def draws() -> tuple:
        return random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), \
            np.random.standard_normal(), torch.rand(3).tolist()

    expected = draws()
    draws()
    ckpt.set_rng_state(load_weights_only(path)["rng"])
    assert draws() == expected


def test_a_finished_run_writes_files_that_load_weights_only(tmp_path: Path) -> None:
    job = plan_run(es.tiny_config(tmp_path, ("pretrain.epochs=1",)), [], tmp_path / "runs")[0]
    outcome = run_pretrain_job(job, Paths(tmp_path / "results", tmp_path / "runs", tmp_path / "data"))
    assert outcome.status == "done"
    run_dir = Path(job.pretrain_dir)
    for path in [run_dir / "encoder.pt", *ckpt.list_checkpoints(run_dir / "checkpoints")]:
        assert isinstance(torch.load(path, weights_only=True), dict)
