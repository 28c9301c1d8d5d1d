"""The dirty flag: code or config changes mark a record dirty, run outputs do not."""
from __future__ import annotations

import subprocess
from pathlib import Path

from benchmark.core import provenance


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_dirty_flag_ignores_results_and_reports(tmp_path: Path, monkeypatch):
    git(tmp_path, "init", "-q")
    for rel in ("benchmark/x.py", "results/mini/a.json", "reports/mini.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("0\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    assert provenance.git_state()["git_dirty"] is False

    (tmp_path / "results/mini/a.json").write_text("1\n")
    (tmp_path / "reports/mini.md").write_text("1\n")
    assert provenance.git_state()["git_dirty"] is False

    (tmp_path / "benchmark/x.py").write_text("1\n")
    state = provenance.git_state()
    assert state["git_dirty"] is True and len(state["git_commit"]) == 40
