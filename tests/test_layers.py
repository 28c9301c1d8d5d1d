"""The layering rules: import-linter's contracts hold, and no project import hides in a function.

The contracts (pyproject.toml, [tool.importlinter]) order the layers harness > report > engine >
tasks | methods > models > data > core and forbid cycles between siblings at any depth. A
function-level import would still be seen by import-linter, but it is also how cycles used to be
dodged, so every import of the project's own modules sits at module level.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("benchmark", "methods", "tasks")


def test_import_contracts_hold():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(lint).exists():
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]' (make test does)")
    result = subprocess.run([lint], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


def function_level_project_imports(path: Path, root: Path = REPO_ROOT) -> list[str]:
    """``file:line module`` (relative to ``root``) for every import of a project module inside a
    function body."""
    tree = ast.parse(path.read_text())
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            found += [f"{path.relative_to(root)}:{node.lineno} {m}" for m in modules
                      if m.split(".")[0] in PROJECT_PACKAGES]
    return found


def test_no_project_import_inside_a_function():
    hidden = [hit for package in PROJECT_PACKAGES
              for path in sorted((REPO_ROOT / package).rglob("*.py"))
              for hit in function_level_project_imports(path)]
    assert hidden == []


def test_the_function_level_import_finder_sees_one(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n\ndef f():\n    from benchmark.core import config\n    import json\n"
                      "    import tasks.base\n")
    assert function_level_project_imports(sample, tmp_path) == [
        "sample.py:4 benchmark.core", "sample.py:6 tasks.base"]


MAX_LINES = 350


def test_no_module_is_longer_than_the_limit():
    """One job per module: none of the suite's modules runs past ~350 lines."""
    long = {str(path.relative_to(REPO_ROOT)): n for package in PROJECT_PACKAGES
            for path in sorted((REPO_ROOT / package).rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
