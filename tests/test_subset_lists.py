"""SimCLR's semi-supervised subset lists: ``data prepare imagenet_subsets``, ``data check``, and a
semisup job lacking its inputs failing at planning (the dry run marks it instead)."""
from __future__ import annotations

import pytest

from benchmark.data.imagenet import SUBSET_LISTS, prepare_subset_lists
from benchmark.data.registry import DatasetMissing
from benchmark.harness.cli import main


def _lists(lines: dict[str, int]):
    return lambda url: "\n".join(f"n0_{i}.JPEG" for i in range(lines[url.rsplit("/", 1)[1]])).encode()


SIMCLR = {"1percent.txt": 12_811, "10percent.txt": 128_116}


def test_prepare_names_the_files_and_url_without_download_or_network(tmp_path):
    with pytest.raises(DatasetMissing, match="1percent.txt \\(12811 lines\\), .*10percent.txt "
                       "\\(128116 lines\\) \\(give --download.*simclr/master/imagenet_subsets/ and "
                       f"put them in {tmp_path}/imagenet_subsets"):
        prepare_subset_lists(tmp_path, download=False)

    def offline(url):
        raise OSError("Name or service not known")

    with pytest.raises(DatasetMissing, match="downloading https://raw.githubusercontent.com/.*failed"):
        prepare_subset_lists(tmp_path, download=True, fetch=offline)
    assert not (tmp_path / "imagenet_subsets").exists()


def test_prepare_downloads_checks_line_counts_and_data_check_reports(tmp_path, capsys):
    with pytest.raises(DatasetMissing, match="holds 5 lines, not SimCLR's 12811"):
        prepare_subset_lists(tmp_path, True, _lists({"1percent.txt": 5, "10percent.txt": 5}))
    folder = prepare_subset_lists(tmp_path, True, _lists(SIMCLR))
    for path, lines in SUBSET_LISTS.values():
        assert len((tmp_path / path).read_text().splitlines()) == lines
    assert main(["data", "check", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"imagenet_subsets found    {folder}/1percent.txt (12,811 of 12,811 lines)" in out
    (folder / "10percent.txt").write_text("n0_1.JPEG\n")
    assert main(["data", "check", "--data-root", str(tmp_path)]) == 1
    assert "CORRUPT  " + str(folder / "10percent.txt") + " (1 of 128,116 lines)" in capsys.readouterr().out
    (folder / "10percent.txt").unlink()
    assert main(["data", "check", "--data-root", str(tmp_path)]) == 0
    assert "MISSING  " + str(folder / "10percent.txt") + " (0 of 128,116 lines)" in capsys.readouterr().out


def test_semisup_lacking_its_lists_fails_at_planning_and_the_dry_run_marks_it(tmp_path, capsys, data_root):
    args = ["sweep", "--methods", "invp", "--tasks", "semisup", "--profile", "imagenet",
            "--launcher", "local", "--set", "tasks.semisup.dataset=fashion_mnist",
            "--data-root", str(data_root), "--results", str(tmp_path / "results"),
            "--out", str(tmp_path / "runs"), "--sweeps", str(tmp_path / "sweeps")]
    assert main(args + ["--dry-run"]) == 0
    assert "MISSING INPUT: tasks.semisup.subset_files 0.01: " in capsys.readouterr().out
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "semisup [invp]: tasks.semisup.subset_files 0.01: " in err
    assert "imagenet_subsets/1percent.txt not found; run `python -m benchmark data prepare imagenet_subsets --download`" in err
    assert not list(tmp_path.iterdir())  # nothing submitted, nothing written
