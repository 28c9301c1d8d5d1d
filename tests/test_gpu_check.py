"""speed/gpu_check.py on CPU: --help, the refusal of CUDA where there is none, a --tiny run of
every path end to end (table printed, JSON written, exit 0), and a failing path (exit 1, the row
saying why)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "speed" / "gpu_check.py"


@pytest.fixture
def script(monkeypatch):
    """speed/gpu_check.py imported as a module (registered, as its dataclasses need)."""
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_help_works_without_a_gpu():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--tiny" in out.stdout and "--json" in out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_user_error(script, tmp_path, capsys):
    assert script.main(["--device", "cuda", "--json", str(tmp_path / "out.json")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err and not (tmp_path / "out.json").exists()


def test_tiny_cpu_run_exercises_every_path(tmp_path):
    out_json = tmp_path / "check.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--json", str(out_json)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out_json.read_text())
    assert report["tiny"] and {"date", "gpu", "driver", "cuda", "cudnn", "torch"} <= report["header"].keys()
    rows = report["rows"]
    assert {row["section"] for row in rows} == {"pretrain", "pipeline", "method", "topm", "probe", "ddp"}
    assert not [row for row in rows if row["met"] == "error"]
    skipped = [row["name"] for row in rows if row["met"] == "skipped"]
    assert len(skipped) == 1 and "fp16" in skipped[0]  # fp16 autocast: CUDA only
    assert all(row["number"] is not None for row in rows if row["met"] != "skipped")
    assert run.stdout.startswith("GPU check, ") and "| section | measurement | value | goal | met |" in run.stdout
    assert run.stdout.count("\n| ") == len(rows) + 1  # the header row and one line per row


def test_a_failing_path_exits_1_and_its_row_says_why(script, tmp_path, monkeypatch, capsys):
    def broken(scores, m):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(script, "threshold_top_m", broken)
    out_json = tmp_path / "check.json"
    assert script.main(["--device", "cpu", "--tiny", "--sections", "topm", "--json", str(out_json)]) == 1
    (row,) = json.loads(out_json.read_text())["rows"]
    assert row["met"] == "error" and row["value"] == "error: RuntimeError: injected failure"
    assert "| topm | " in capsys.readouterr().out
