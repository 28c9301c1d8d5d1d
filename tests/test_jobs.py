"""When a stored task result counts as done: pretrained results belong to one encoder."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from test_store import make_record

from benchmark.core import provenance
from benchmark.core.config import resolve
from benchmark.core.store import ResultStore
from benchmark.harness.completion import result_is_current
from benchmark.harness.jobs import OutcomeStatus, Paths, run_task_job
from benchmark.harness.plan import plan_run


def test_result_is_current_only_for_the_encoder_it_was_computed_from(tmp_path: Path):
    _, pretrained, random, _ = plan_run(resolve("mini", "invp"), ["knn"], tmp_path / "runs")
    store = ResultStore(tmp_path / "results")
    encoder = Path(pretrained.pretrain_dir) / "encoder.pt"
    assert not result_is_current(pretrained, store)

    encoder.parent.mkdir(parents=True)
    encoder.write_bytes(b"weights A")
    store.save({"job_id": pretrained.job_id},
               [make_record(job_id=pretrained.job_id, checkpoint_hash=provenance.file_hash(encoder))])
    assert result_is_current(pretrained, store)

    encoder.write_bytes(b"weights B, retrained")  # e.g. a fresh clone beside committed results
    assert not result_is_current(pretrained, store)
    encoder.unlink()
    assert not result_is_current(pretrained, store)

    store.save({"job_id": random.job_id},
               [make_record(job_id=random.job_id, encoder="random", checkpoint_hash=None)])
    assert result_is_current(random, store)
    assert not result_is_current(replace(random, job_id="other"), store)


def test_a_task_whose_dataset_is_missing_records_a_skip_naming_where_and_how_to_get_it(tmp_path: Path):
    _, _, random, _ = plan_run(resolve("mini", "invp"), ["knn"], tmp_path / "runs")
    paths = Paths(results=tmp_path / "results", runs=tmp_path / "runs", data_root=tmp_path / "no-data")
    outcome = run_task_job(random, paths)
    assert outcome.status == OutcomeStatus.SKIPPED
    (skip,) = paths.store("mini").skips()
    assert skip["reason"].startswith("dataset missing: fashion_mnist: ")
    assert str(tmp_path / "no-data") in skip["reason"] and "(get it: " in skip["reason"]
