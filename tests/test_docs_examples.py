"""The worked examples of docs/adding-a-method.md and docs/adding-a-task.md run as printed.

Both pages' examples are loaded and run by tests/docs_examples.py in one subprocess (each toy
registers itself; this process's registries must stay as shipped); the tests read what the real
engine and job runner wrote.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from docs_examples import METHOD_PAGE, TASK_PAGE, example_blocks, load_module, profile_entries

from benchmark.core.safe_load import load_weights_only
from benchmark.core.store import ResultStore
from benchmark.data import get_dataset, resolve_data_root
from benchmark.engine import checkpoint as ckpt
from methods.base import METHODS
from tasks.base import TASKS
from tasks.common import class_balanced_subset, dataset_targets
from tasks.transforms import eval_transform

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    """The folder ``python tests/docs_examples.py OUT`` filled (both pages' examples, one
    process)."""
    out = tmp_path_factory.mktemp("docs_examples")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(TESTS_DIR / "docs_examples.py"), str(out)],
                          check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    if done.returncode != 0:
        pytest.fail(f"tests/docs_examples.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return out


def example_output(examples: Path, kind: str) -> Path:
    """``examples/<kind>``; fails the test with the example's traceback when it failed."""
    failure = examples / kind / "failure.txt"
    if failure.exists():
        pytest.fail(f"the {kind} example of its page failed:\n{failure.read_text()[-3000:]}")
    return examples / kind


def test_example_fences_are_found_in_page_order_with_their_lines(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```python example\na = 1\n```\n```python\nnot = 'an example'\n```\n"
                    "```python example-test\ndef test_x(): pass\n```\n```python example\nb = 2\n```\n")
    assert example_blocks(page, "python", "example") == [(2, "a = 1\n"), (11, "b = 2\n")]
    assert example_blocks(page, "python", "example-test") == [(8, "def test_x(): pass\n")]
    with pytest.raises(ValueError, match="no ```yaml example block"):
        example_blocks(page, "yaml", "example")


def test_an_example_that_fails_names_its_line_of_the_page(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n```python example\nx = 1\n```\n\nprose\n\n```python example\n"
                    "raise RuntimeError(x)\n```\n")
    try:
        with pytest.raises(RuntimeError) as failure:
            load_module("docs_examples_probe", page, "example")
    finally:
        sys.modules.pop("docs_examples_probe", None)
    frame = failure.tb
    while frame.tb_next is not None:
        frame = frame.tb_next
    assert (frame.tb_frame.f_code.co_filename, frame.tb_lineno) == (str(page), 10)


def test_method_example_pretrains_through_the_engine(examples):
    out = example_output(examples, "method")
    assert json.loads((out / "example_tests.json").read_text()) == [
        "test_toy_alignment_loss_update_and_state_follow_the_formulas"]
    run = out / "run"
    (epoch,) = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert epoch["epoch"] == 1 and epoch["steps"] == 2
    assert 0 <= epoch["memory_distance"] <= 4 and epoch["loss"] == pytest.approx(epoch["memory_distance"])
    momentum = profile_entries(METHOD_PAGE)["methods"]["toy_alignment"]["memory_momentum"]
    encoder = load_weights_only(run / "encoder.pt")
    assert encoder["config"]["method"] == {"name": "toy_alignment", "memory_momentum": momentum}
    state = load_weights_only(ckpt.list_checkpoints(run / "checkpoints")[0])
    memory = state["method"]["memory"]  # 64 training images, embed_dim 16 (the tiny profile)
    assert memory.shape == (64, 16) and torch.allclose(memory.norm(dim=1), torch.ones(64))
    assert "toy_alignment" not in METHODS


def test_task_example_runs_through_the_planner_and_job_runner(examples):
    out = example_output(examples, "task")
    assert json.loads((out / "example_tests.json").read_text()) == [
        "test_toy_feature_norm_is_the_mean_norm_of_the_pooled_features"]
    outcomes = json.loads((out / "outcomes.json").read_text())
    assert [(o["encoder"], o["status"]) for o in outcomes] == [("random", "done"), ("pixels", "done")]
    store = ResultStore(out / "results" / "mini")
    records = {o["encoder"]: store.load_job(o["job_id"])["records"] for o in outcomes}
    settings = profile_entries(TASK_PAGE)["tasks"]["toy_feature_norm"]
    for encoder, (record,) in records.items():
        assert (record["task"], record["metric"], record["encoder"]) == ("toy_feature_norm", "mean_norm", encoder)
        assert (record["dataset"], record["split"]) == (settings["dataset"], settings["split"])
        assert record["extra"] == {"images": settings["limit"]} and record["value"] > 0
    images = get_dataset("digits").build(resolve_data_root(), "test", eval_transform("digits", {}))
    keep = class_balanced_subset(dataset_targets(images), settings["limit"] / len(images), seed=0)
    pixel_norms = torch.stack([images[i][0].flatten().norm() for i in keep.tolist()])
    assert records["pixels"][0]["value"] == pytest.approx(pixel_norms.mean().item(), rel=1e-5)
    assert "toy_feature_norm" not in TASKS
