"""Runs the worked examples of docs/adding-a-method.md and docs/adding-a-task.md.

A page's ```` ```python example ```` blocks form the example module (a method or a task, which
registers itself), its ```` ```python example-test ```` blocks the unit test the page
recommends, and its ```` ```yaml example ```` blocks the profile entries. As a script
(``python tests/docs_examples.py OUT``) it loads each page's example, runs its unit tests and
then runs the example through the real code: the toy method pretrains for two steps on the
engine tests' tiny profile (``OUT/method/run``), the toy task runs through the planner and the
job runner on the mini profile for the two sanity encoders (``OUT/task/results``,
``OUT/task/outcomes.json``). tests/test_docs_examples.py starts it once in a subprocess, so that
the toys' registrations never reach the registries of the test process.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
import traceback
import types
from pathlib import Path
from typing import Any

import engine_support
import yaml

from benchmark.core.config import load_profile
from benchmark.data import resolve_data_root
from benchmark.engine.pretrain import pretrain
from benchmark.harness.jobs import Paths, run_job
from benchmark.harness.plan import plan_run, select_tasks
from benchmark.harness.schema import resolve_run

DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"
METHOD_PAGE = DOCS_DIR / "adding-a-method.md"
TASK_PAGE = DOCS_DIR / "adding-a-task.md"
FENCE = re.compile(r"^```(\w+) (example(?:-test)?)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
TWO_STEPS = ("pretrain.epochs=1", "data.train_subset=64")  # 64 images, batch 32: two steps


def example_blocks(page: Path, language: str, tag: str) -> list[tuple[int, str]]:
    """(line of its first code line, code) of every ```` ```<language> <tag> ```` block of
    ``page``, in page order (lines count from 0)."""
    text = page.read_text()
    blocks = [(text.count("\n", 0, match.start(3)), match.group(3)) for match in FENCE.finditer(text)
              if match.group(1, 2) == (language, tag)]
    if not blocks:
        raise ValueError(f"{page} has no ```{language} {tag} block")
    return blocks


def load_module(name: str, page: Path, tag: str) -> types.ModuleType:
    """The ``python <tag>`` blocks of ``page`` executed as module ``name`` (in sys.modules, so
    that dataclasses see it as any imported module); tracebacks name the page's lines."""
    source = ""
    for line, code in example_blocks(page, "python", tag):
        source += "\n" * (line - source.count("\n")) + code
    module = types.ModuleType(name)
    module.__file__ = str(page)
    sys.modules[name] = module
    exec(compile(source, str(page), "exec"), module.__dict__)  # noqa: S102  (the page's example: the point)
    return module


def profile_entries(page: Path) -> dict[str, Any]:
    """The ``yaml example`` blocks of ``page`` merged into one mapping of profile sections."""
    entries: dict[str, Any] = {}
    for _, block in example_blocks(page, "yaml", "example"):
        for section, items in yaml.safe_load(block).items():
            entries.setdefault(section, {}).update(items)
    return entries


def run_example_tests(module: types.ModuleType, scratch: Path) -> list[str]:
    """Call every ``test_*`` function of ``module`` (a ``tmp_path`` parameter gets a fresh
    folder under ``scratch``); returns their names."""
    names = sorted(name for name in vars(module) if name.startswith("test_"))
    for name in names:
        test = getattr(module, name)
        kwargs = {}
        if "tmp_path" in inspect.signature(test).parameters:
            kwargs["tmp_path"] = scratch / name
            kwargs["tmp_path"].mkdir(parents=True)
        test(**kwargs)
    return names


def write_profile(tree: dict[str, Any], entries: dict[str, Any], path: Path) -> Path:
    """``tree`` with the page's profile ``entries`` added to its sections, written to ``path``."""
    for section, items in entries.items():
        tree.setdefault(section, {}).update(items)
    path.write_text(yaml.safe_dump(tree))
    return path


def run_method_example(out: Path) -> None:
    """Load the toy method, run its unit test, pretrain it for two steps into ``out/run``."""
    load_module("toy_method_example", METHOD_PAGE, "example")
    tests = run_example_tests(load_module("toy_method_example_test", METHOD_PAGE, "example-test"), out)
    tiny = yaml.safe_load(engine_support.tiny_profile(out).read_text())
    profile = write_profile(tiny, profile_entries(METHOD_PAGE), out / "docs_method.yaml")
    pretrain(resolve_run(str(profile), "toy_alignment", TWO_STEPS), out / "run", resume="never")
    (out / "example_tests.json").write_text(json.dumps(tests))


def run_task_example(out: Path) -> None:
    """Load the toy task, run its unit test, then plan it on the mini profile and run its jobs
    for the random-init and raw-pixel encoders; outcomes go to ``out/outcomes.json``."""
    load_module("toy_task_example", TASK_PAGE, "example")
    tests = run_example_tests(load_module("toy_task_example_test", TASK_PAGE, "example-test"), out)
    profile = write_profile(load_profile("mini"), profile_entries(TASK_PAGE), out / "docs_task.yaml")
    cfg = resolve_run(str(profile), "invp", ["threads=1"])
    jobs = plan_run(cfg, select_tasks(cfg, "toy_feature_norm"), out / "runs")
    paths = Paths(results=out / "results", runs=out / "runs", data_root=resolve_data_root())
    outcomes = [dataclasses.asdict(run_job(job, paths)) | {"encoder": job.encoder}
                for job in jobs if job.kind == "task" and job.encoder != "pretrained"]
    (out / "outcomes.json").write_text(json.dumps(outcomes))
    (out / "example_tests.json").write_text(json.dumps(tests))


EXAMPLES = {"method": run_method_example, "task": run_task_example}


def main(out: Path) -> None:
    """Run every page's example into ``out/<kind>``; one that fails leaves its traceback in
    ``out/<kind>/failure.txt`` and the others still run."""
    for kind, run in EXAMPLES.items():
        folder = out / kind
        folder.mkdir(parents=True)
        try:
            run(folder)
        except Exception:  # noqa: BLE001  (reported to the test that reads this folder)
            (folder / "failure.txt").write_text(traceback.format_exc())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
