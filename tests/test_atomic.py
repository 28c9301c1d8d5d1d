"""Atomic writes: the permissions of a plain write, the folder fsynced after the rename, and every
writer of the suite (results, reports, figures, checkpoints, sweep state, logs, exports) going
through them."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from benchmark.core import atomic
from benchmark.core.atomic import atomic_open, make_temp_dir, save_atomic
from benchmark.core.store import write_json_atomic, write_text_atomic
from benchmark.engine.epoch_log import EpochLog
from benchmark.harness.sweep_state import STATE_FILE, SweepState
from benchmark.report.figures import curves_figure, save_figure
from tasks.detection import export

OLD = b'{"epoch": 0}\n'  # what a file held before it is rewritten (also a valid one-epoch log)


def export_tiny(path: Path) -> None:
    """The detectron2 export of a stand-in checkpoint (the ResNet-50 key check stubbed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"backbone": {"conv1.weight": torch.zeros(1)}}, path.parent / "encoder.pt")
    export.export_detectron2(path.parent / "encoder.pt", path)


def trim_log(path: Path) -> None:
    """A resumed pretraining rewriting its log (one line per epoch) to the epochs before the
    resume point."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(OLD.decode() + '{"epoch": 1}\n')
    EpochLog(path, path.parent / "tensorboard").trim(next_epoch=1)


WRITERS = {  # what is written -> a function writing it at a path
    "result record": lambda path: write_json_atomic(path, {"v": 1}),
    "report": lambda path: write_text_atomic(path, "| a |\n"),
    "checkpoint": lambda path: save_atomic({"w": torch.zeros(2)}, path),
    "figure": lambda path: save_figure(curves_figure({"m": [[{"epoch": 1, "loss": 1.0}]]}), path),
    "sweep state": lambda path: SweepState(path, {}, {}).save(),
    "pretraining log": trim_log,
    "detectron2 export": export_tiny,
}
NAMES = {"figure": "fig.png", "sweep state": STATE_FILE, "pretraining log": "log.jsonl"}


@pytest.fixture
def umask(request):
    """Run the test under the umask it is parametrised with (restored afterwards)."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


@pytest.fixture(autouse=True)
def tiny_export(monkeypatch):
    monkeypatch.setattr(export, "torchvision_resnet_keys", lambda state, source: dict(state))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o027], indirect=True, ids=oct)
@pytest.mark.parametrize("writer", WRITERS)
def test_written_files_get_the_permissions_of_a_plain_write(tmp_path, umask, writer):
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert mode(plain) == 0o666 & ~umask
    target = tmp_path / "out" / NAMES.get(writer, "file")
    WRITERS[writer](target)
    assert mode(target) == mode(plain), f"{writer}: {oct(mode(target))}"


@pytest.mark.parametrize("umask", [0o022, 0o077], indirect=True, ids=oct)
def test_temp_folders_get_the_permissions_of_a_plain_mkdir(tmp_path, umask):
    plain = tmp_path / "plain"
    plain.mkdir()
    made = make_temp_dir(tmp_path / "root", ".work.")
    assert made.parent == tmp_path / "root" and made.name.startswith(".work.")
    assert mode(made) == mode(plain) == 0o777 & ~umask


@pytest.mark.parametrize("writer", WRITERS)
def test_a_crash_at_the_rename_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, writer):
    target = tmp_path / "out" / NAMES.get(writer, "file")
    target.parent.mkdir()
    target.write_bytes(OLD)

    def exploding_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic.os, "replace", exploding_replace)
    with pytest.raises(OSError, match="disk gone"):
        WRITERS[writer](target)
    assert target.read_bytes() == OLD
    assert not [p.name for p in target.parent.iterdir() if p.suffix == ".tmp"]


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        info = os.fstat(fd)
        events.append(("fsync folder" if stat.S_ISDIR(info.st_mode) else "fsync file", info.st_ino))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", None))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    target = tmp_path / "out" / "r.json"
    with atomic_open(target) as fh:
        fh.write("{}")
    folder = (tmp_path / "out").stat().st_ino
    assert [kind for kind, _ in events] == ["fsync file", "replace", "fsync folder"]
    assert events[0][1] == target.stat().st_ino and events[2][1] == folder
