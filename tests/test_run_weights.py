"""``run --weights``: a checkpoint evaluated as it is (no pretraining, no sanity rows), its records
carrying the file's sha256, format and name, its report row named, a re-run cached; bad files and
flags are one-line errors with exit code 2."""
from __future__ import annotations

import pickle
import re
import shlex
import shutil
from pathlib import Path

import pytest
from docs_examples import example_blocks
from external_support import torchvision_file
from payload_support import Payload

from benchmark.core.config import resolve
from benchmark.core.store import ResultStore
from benchmark.harness.cli import main
from benchmark.harness.plan import plan_external, select_tasks
from benchmark.models.external_encoder import ExternalWeights
from benchmark.models.external_weights import file_sha256

README = Path(__file__).resolve().parent.parent / "README.md"
POOLED_KNN = ["--tasks", "knn", "--set", "tasks.knn.layer=pooled", "--set", "tasks.knn.train_limit=300"]


@pytest.fixture(scope="module")
def mini_file(tmp_path_factory) -> Path:
    return torchvision_file(tmp_path_factory.mktemp("weights") / "mini_tv.pth", resolve("mini").model)


def folders(tmp_path: Path) -> list[str]:
    return ["--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
            "--reports", str(tmp_path / "reports"), "--sweeps", str(tmp_path / "sweeps")]


def test_run_weights_records_name_the_file_the_report_shows_the_row_and_a_rerun_is_cached(
        mini_file, tmp_path, capsys, data_root):
    argv = ["run", "--weights", str(mini_file), "--name", "my-mini", *POOLED_KNN, *folders(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("format torchvision (auto-detected)") == 1  # the summary, once per run
    assert "knn [my-mini]" in out and "pretrain" not in out and "[random]" not in out
    records = list(ResultStore(tmp_path / "results" / "mini").records())
    sha = file_sha256(mini_file)
    assert records and {(r["encoder"], r["method"], r["checkpoint_hash"]) for r in records} == {
        ("external", "external", sha)}
    assert records[0]["extra"]["weights"] == {"name": "my-mini", "format": "torchvision",
                                              "sha256": sha, "file": "mini_tv.pth"}
    assert "| my-mini " in (tmp_path / "reports" / "mini.md").read_text()

    assert main(argv) == 0  # the same file again: nothing runs
    assert "[ cached] knn [my-mini]" in capsys.readouterr().out
    moved = shutil.copy(mini_file, tmp_path / "elsewhere.pth")  # the same bytes, another path and name
    assert main(["run", "--weights", str(moved), *POOLED_KNN, *folders(tmp_path)]) == 0
    assert "[ cached] knn [elsewhere]" in capsys.readouterr().out


def test_the_readme_mini_commands_run_as_printed_and_the_report_shows_the_named_row(
        tmp_path, monkeypatch, capsys, data_root):
    ((_, commands),) = example_blocks(README, "bash", "example")
    monkeypatch.chdir(tmp_path)  # the commands' default runs/, results/, reports/, sweeps/
    monkeypatch.setenv("BENCHMARK_DATA", str(data_root))
    torchvision_file(tmp_path / "mini_tv.pth", resolve("mini").model)
    for line in commands.splitlines():
        argv = shlex.split(line)
        assert argv[:3] == ["python", "-m", "benchmark"]
        assert main(argv[3:]) == 0, capsys.readouterr().err
    report = (tmp_path / "reports" / "mini.md").read_text()
    measured = measurements_row(report, "my-mini")
    for column in ("knn: top1 (fashion_mnist, layer pooled) test", "linear_multilayer: top1 (digits) test"):
        assert re.fullmatch(r"\d+\.\d+", measured[column]), (column, measured)
    assert re.search(r"^\| my-mini \| \d+\.\d+ \(n=1\)", report, re.MULTILINE)  # the paper tables' row


def measurements_row(report: str, name: str) -> dict[str, str]:
    """Row ``name`` of the report's "All measurements" table: column header -> cell."""
    table = report.split("## All measurements\n\n")[1].split("\n\n")[0].splitlines()
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table]
    (row,) = [line for line in cells if line[0] == name]
    return dict(zip(cells[0], row))


def test_knn_on_the_embedding_of_external_weights_is_a_recorded_skip_naming_the_fix(
        mini_file, tmp_path, capsys, data_root):
    assert main(["run", "--weights", str(mini_file), "--tasks", "knn", "--no-report",
                 *folders(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[skipped] knn [mini_tv]: not applicable: external weights" in out
    assert "--set tasks.knn.layer=pooled" in out
    (skip,) = list(ResultStore(tmp_path / "results" / "mini").skips())
    assert skip["job"]["weights"]["name"] == "mini_tv"


def test_external_job_ids_hash_the_bytes_and_format_not_the_path_or_name():
    cfg = resolve("mini")
    tasks = select_tasks(cfg, "knn,linear")

    def ids(**changes):
        weights = ExternalWeights(**{"path": "/a/x.pth", "format": "torchvision", "name": "x",
                                     "sha256": "ab" * 32, **changes})
        return [job.job_id for job in plan_external(cfg, tasks, weights)]

    assert ids() == ids(path="/b/y.pth", name="y")
    assert ids() != ids(sha256="cd" * 32) and ids() != ids(format="moco")
    assert all(job.depends_on == () and job.encoder == "external"
               for job in plan_external(cfg, tasks, ExternalWeights("/a", "torchvision", "x", "ab")))


def test_a_suite_file_is_planned_on_the_trunk_it_carries_not_the_profiles(tmp_path):
    pytest.importorskip("timm")
    import torch

    from benchmark.harness.external import WeightsOptions, external_weights, plan_weights
    from benchmark.models import build_backbone

    model = {"backbone": "timm:test_convnext", "in_channels": 1}  # no C4 split: no detection
    path = tmp_path / "encoder.pt"
    torch.save({"backbone": build_backbone(model).state_dict(), "head": {}, "config": {"model": model},
                "epoch": 1}, path)
    cfg = resolve("mini")  # its mini ResNet would fit every task
    weights, _ = external_weights(path, "convnext", cfg, WeightsOptions())
    assert weights.format == "suite" and weights.model_json is not None
    _, jobs = plan_weights([cfg], "all", [weights])
    planned = {job.task for job in jobs}
    assert "detection" not in planned and {"knn", "linear"} <= planned
    assert "detection" in select_tasks(cfg, "all")  # the profile's own trunk runs it


def test_a_pickle_payload_under_weights_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pth"
    crafted.write_bytes(pickle.dumps(Payload(marker)))
    assert main(["run", "--weights", str(crafted), "--tasks", "none", *folders(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert err.startswith(f"error: {crafted}") and "re-save its tensors yourself" in err and "Traceback" not in err


def test_a_missing_trunk_key_exits_2_naming_it_and_allow_missing_keys_loads_the_rest(tmp_path, capsys):
    broken = torchvision_file(tmp_path / "broken.pth", resolve("mini").model, drop="layer2.0.conv1.weight")
    assert main(["run", "--weights", str(broken), "--tasks", "none", *folders(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "stages.1.0.conv1.weight" in err and "--allow-missing-keys" in err and "Traceback" not in err
    assert main(["run", "--weights", str(broken), "--allow-missing-keys", "--tasks", "none",
                 *folders(tmp_path)]) == 0
    assert "1 trunk keys MISSING" in capsys.readouterr().out


@pytest.mark.parametrize(("extra", "message"), [
    (["--method", "invp"], "--method and --weights exclude each other"),
    (["--name", "a/b"], "--name (the weights' row name)"),
])
def test_bad_weights_flags_exit_2_naming_the_flag(mini_file, tmp_path, capsys, extra, message):
    assert main(["run", "--weights", str(mini_file), "--tasks", "none", *extra, *folders(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_an_unknown_weights_format_is_refused_by_the_parser_listing_the_formats(mini_file, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", "--weights", str(mini_file), "--weights-format", "nonsense"])
    assert stop.value.code == 2 and "torchvision" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--tasks", "none"], "run needs --method METHOD (pretrain it) or --weights PATH"),
    (["run", "--method", "invp", "--name", "x"], "--name only applies with --weights PATH"),
    (["run", "--weights", "/nowhere/w.pth"], "/nowhere/w.pth is not a file"),
])
def test_run_without_method_or_weights_or_with_weights_flags_alone_exits_2(argv, message, tmp_path, capsys):
    assert main([*argv, *folders(tmp_path)]) == 2
    assert message in capsys.readouterr().err
