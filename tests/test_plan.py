"""Run planning: stable job ids, shared sanity jobs, task selection errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmark.core.config import ConfigError, RunConfig, resolve
from benchmark.harness.plan import plan_run, pretrain_id, select_tasks, task_job_id
from tasks.base import get_task


def test_plan_has_pretrain_then_tasks_with_dependencies(tmp_path: Path):
    cfg = resolve("mini", "invp")
    jobs = plan_run(cfg, ["knn"], tmp_path)
    assert [j.kind for j in jobs] == ["pretrain", "task", "task", "task"]
    assert [j.encoder for j in jobs[1:]] == ["pretrained", "random", "pixels"]
    assert jobs[1].depends_on == (jobs[0].job_id,)
    assert jobs[2].depends_on == () and jobs[3].depends_on == ()
    assert jobs[0].pretrain_dir.startswith(str(tmp_path / "mini" / "invp-"))


def test_ids_are_stable_and_depend_on_what_matters():
    a, b = resolve("mini", "invp"), resolve("mini", "invp")
    assert pretrain_id(a) == pretrain_id(b)
    assert pretrain_id(a) != pretrain_id(resolve("mini", "invp", ["method.k=5"]))
    assert pretrain_id(a) != pretrain_id(resolve("mini", "invp", seed=1))
    # the device does not change what is trained
    assert pretrain_id(a) == pretrain_id(resolve("mini", "invp", ["device=cpu"]))
    # sanity encoders do not depend on the method; pretrained ones do
    insdis = resolve("mini", "insdis")
    assert task_job_id(a, "knn", "random") == task_job_id(insdis, "knn", "random")
    assert task_job_id(a, "knn", "pretrained") != task_job_id(insdis, "knn", "pretrained")


def test_a_changed_task_default_is_another_job(monkeypatch):
    """A task's defaults are part of its job id: a recipe change in code that the profile does not
    spell out must not reuse the records of the old recipe."""
    cfg = resolve("mini", "invp")
    before = task_job_id(cfg, "voc07_bce", "pretrained")
    assert "crop_scale" not in cfg.tasks["voc07_bce"]  # a key only the task's defaults hold
    task = get_task("voc07_bce")
    monkeypatch.setattr(type(task), "defaults", {**task.defaults, "crop_scale": (0.5, 1.0)})
    assert task_job_id(cfg, "voc07_bce", "pretrained") != before


def test_select_tasks():
    cfg = resolve("mini", "invp")
    assert select_tasks(cfg, "none") == []
    assert "knn" in select_tasks(cfg, "all")
    assert select_tasks(cfg, "knn") == ["knn"]
    with pytest.raises(ConfigError, match="unknown task 'nosuch'"):
        select_tasks(cfg, "knn,nosuch")


@pytest.mark.parametrize("override, option", [("method.temperature=abc", "method.temperature must be a number"),
                                              ("method.temperature=0", "method.temperature must be a number > 0"),
                                              ("method.queue_size=0", "method.queue_size must be a positive integer")])
def test_plan_checks_the_method_settings_before_any_job(tmp_path: Path, override: str, option: str):
    method = "mocov2" if "queue_size" in override else "invp"
    with pytest.raises(ConfigError, match=option):
        plan_run(resolve("mini", method, [override]), [], tmp_path)
    assert not list(tmp_path.iterdir())


def _with_task_settings(cfg: RunConfig, task: str, **settings: Any) -> RunConfig:
    tree = cfg.to_dict()
    tree["tasks"][task] = {**tree["tasks"][task], **settings}
    return RunConfig.from_dict(tree)


def test_transfer_is_one_job_per_dataset_with_its_own_settings(tmp_path: Path):
    cfg = resolve("imagenet", "invp")
    jobs = [j for j in plan_run(cfg, ["transfer"], tmp_path) if j.kind == "task" and j.encoder == "pretrained"]
    datasets = list(get_task("transfer").defaults["datasets"])
    assert [j.label for j in jobs] == [f"transfer:{d} [invp]" for d in datasets]
    assert [j.config["tasks"]["transfer"]["datasets"] for j in jobs] == [[d] for d in datasets]
    # a unit's id is the id of the task configured with that one dataset
    one = _with_task_settings(cfg, "transfer", datasets=["flowers102"])
    assert jobs[datasets.index("flowers102")].job_id == task_job_id(one, "transfer", "pretrained")
    assert len({j.job_id for j in jobs}) == len(datasets)


def test_detection_trials_are_jobs_and_trial_0_keeps_the_single_trial_id(tmp_path: Path):
    single = resolve("mini", "invp")
    five = resolve("mini", "invp", ["tasks.detection.trials=5"])  # mini.yaml spells trials: 1
    jobs = [j for j in plan_run(five, ["detection"], tmp_path) if j.kind == "task" and j.encoder == "pretrained"]
    assert [j.label for j in jobs] == [f"detection#{t} [invp]" for t in range(5)]
    assert jobs[0].job_id == task_job_id(single, "detection", "pretrained")
    assert len({j.job_id for j in jobs}) == 5
    assert [j.config["tasks"]["detection"].get("trial") for j in jobs] == [None, 1, 2, 3, 4]
    # trial 2 of 5 is trial 2 of 3: the count does not enter a trial's id
    three = resolve("mini", "invp", ["tasks.detection.trials=3"])
    assert jobs[2].job_id == plan_run(three, ["detection"], tmp_path)[3].job_id
