"""Atomic result store: records round-trip, a crash mid-write leaves no partial file."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmark.core import atomic
from benchmark.core.errors import BadFileError
from benchmark.core.store import ResultRecord, ResultStore, write_json_atomic


def make_record(**over) -> ResultRecord:
    fields = dict(
        method="invp", method_config={"name": "invp"}, encoder="pretrained", backbone="mini_resnet",
        pretrain_epochs=2, task="knn", dataset="fashion_mnist", split="test", metric="top1",
        value=0.8, seed=0, profile="mini", job_id="abc", config_hash="h", checkpoint_hash="c",
        git_commit="deadbeef", git_dirty=False, versions={"torch": "x"}, host="vm", device="cpu",
        wall_time_s=1.0, started_at="2026-01-01T00:00:00+00:00",
    )
    fields.update(over)
    return ResultRecord(**fields)


def test_save_and_read_back(tmp_path: Path):
    store = ResultStore(tmp_path / "mini")
    assert not store.is_done("abc")
    path = store.save({"job_id": "abc"}, [make_record(), make_record(metric="top5", value=0.9)])
    assert path == tmp_path / "mini" / "abc.json"
    assert store.is_done("abc")
    records = list(store.records())
    assert [r["metric"] for r in records] == ["top1", "top5"]
    assert records[0] == asdict(make_record())


def test_crash_during_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch):
    target = tmp_path / "r.json"
    write_json_atomic(target, {"v": 1})

    def exploding_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic.os, "replace", exploding_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_json_atomic(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def test_half_written_file_is_not_done_and_is_reported(tmp_path: Path):
    store = ResultStore(tmp_path)
    (tmp_path / "bad.json").write_text('{"job": {"job_id": "bad"}, "records": [')
    assert not store.is_done("bad")
    with pytest.raises(ValueError, match=r"bad\.json is not valid JSON"):
        list(store.records())


def test_skips_are_listed_until_the_job_succeeds(tmp_path: Path):
    store = ResultStore(tmp_path)
    store.save_skip({"job_id": "j1", "task": "knn"}, "dataset missing: x")
    assert [s["reason"] for s in store.skips()] == ["dataset missing: x"]
    store.save({"job_id": "j1"}, [make_record(job_id="j1")])
    assert list(store.skips()) == []
    assert len(list(store.records())) == 1


@pytest.mark.parametrize("payload, problem", [
    ([], r"holds \[\] instead of"),
    ({"records": []}, "holds .* instead of"),
    ({"job": {"job_id": "bad"}}, "has no 'records' list"),
    ({"job": {"job_id": "bad"}, "records": [1]}, "record 0 is not an object"),
    ({"job": {"job_id": "bad"}, "records": [{"metric": "top1"}]}, "record 0 lacks field"),
])
def test_damaged_result_file_is_not_done_and_is_named(tmp_path: Path, payload, problem: str):
    store = ResultStore(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps(payload))
    assert not store.is_done("bad")
    with pytest.raises(BadFileError, match=rf"result file .*bad\.json {problem}.*delete it and re-run"):
        list(store.records())


def test_damaged_skip_file_is_named(tmp_path: Path):
    store = ResultStore(tmp_path)
    (tmp_path / "skipped").mkdir()
    (tmp_path / "skipped" / "j1.json").write_text('{"job": {"task": "knn"}}')
    with pytest.raises(BadFileError, match=r"skip file .*j1\.json lacks 'reason'"):
        list(store.skips())


def test_disk_error_during_an_atomic_write_names_the_file(tmp_path: Path, monkeypatch):
    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(OSError) as info:
        write_json_atomic(tmp_path / "r.json", {"v": 1})
    assert info.value.errno == 28 and info.value.filename == str(tmp_path / "r.json")
    assert os.listdir(tmp_path) == []
