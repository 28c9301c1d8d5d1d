"""One settings reader: method options are checked through core.fields like every other section
(unknown keys with close matches, ``method.<key>`` named with the fix), and the engine, models,
data, methods and tasks hold no ``.get(key, default)`` config defaults that the profiles hold."""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from method_configs import method_config

from benchmark.core.config import PROFILE_DIR, ConfigError
from benchmark.core.fields import Int
from benchmark.core.settings import defaulted_fields, read_settings, setting, settings_section
from benchmark.harness.cli import main
from methods.base import METHODS, Method, build_method, method_class

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("method, typo, meant", [
    ("invp", "temperatur", "temperature"), ("mocov2", "queue_sise", "queue_size"),
    ("interclr", "neg_sample", "neg_sampling"), ("knn", "and_round", "and_rounds"),
])
def test_an_unknown_method_key_is_refused_with_its_close_match(method, typo, meant):
    with pytest.raises(ConfigError, match=rf"^method: unknown setting\(s\) \['{typo}'\] "
                                          rf"\(did you mean {meant}[,?].*; valid: .*{meant}"):
        method_class(method).check_settings({**method_config(method), typo: 1})


@pytest.mark.parametrize("method, key, value, expected", [
    ("invp", "temperature", "abc", "a number > 0"),
    ("invp", "ramp.type", "linear", "one of binary, gaussian, none"),
    ("insdis", "nce_z_momentum", 1.0, r"a number in \[0, 1\)"),
    ("mocov2", "queue_size", 8.5, "a positive integer"),
    ("clim", "mix", "blend", "one of cutmix, mixup, none"),
    ("interclr", "online_labels", "false", "true or false"),
])
def test_a_wrong_method_value_names_the_key_and_the_fix(method, key, value, expected):
    block = {key.split(".")[0]: {key.split(".")[1]: value}} if "." in key else {key: value}
    with pytest.raises(ConfigError, match=rf"^method\.{key} must be {expected}, got {value!r}; fix it in the "
                                          rf"profile's methods\.{method} block or with --set method\.{key}=\.\.\.$"):
        method_class(method).check_settings(method_config(method, **block))


def test_rules_across_settings_and_the_data_size_use_the_same_wording():
    with pytest.raises(ConfigError, match=r"^method\.pool_size must be >= negatives=20 for neg_sampling "
                                          r"semihard, got 10; fix it in the profile's methods\.interclr block"):
        method_class("interclr").check_settings(method_config("interclr", negatives=20, pool_size=10))
    with pytest.raises(ConfigError, match=r"^method\.queue_size must be below the 8 training samples .*got 8; "
                                          r"fix it in the profile's methods\.mocov2 block"):
        build_method(method_config("mocov2", queue_size=8), 8, 4)


def test_settings_are_typed_and_every_field_declares_its_spec():
    for name, cls in METHODS.items():
        if cls.settings_class is not None:
            settings_section(cls.settings_class)  # raises TypeError for a field without a Spec
    s = method_class("invp").check_settings(method_config("invp", temperature=1, ramp={"length": 5}))
    assert isinstance(s.temperature, float) and (s.ramp.type, s.ramp.length) == ("binary", 5)
    clim = method_class("clim").check_settings(method_config("clim", multires_sizes=[8, 6]))
    assert clim.multires_sizes == (8, 6)

    @dataclasses.dataclass(frozen=True)
    class Untyped:
        size: int = 3

    @dataclasses.dataclass(frozen=True)
    class Typed:
        size: int = setting(3, Int(ge=1))

    with pytest.raises(TypeError, match="Untyped.size declares no Spec"):
        read_settings(Untyped, {}, "toy")
    assert read_settings(Typed, {"name": "toy"}, "toy").size == 3


@pytest.mark.parametrize("override, message", [
    ("pretrain.amp=1", "pretrain.amp must be true or false, got 1"),
    ("pretrain.optimizer.momentum=abc", r"pretrain.optimizer.momentum must be a number in \[0, 1\), got 'abc'"),
    ("pretrain.monitor.every=-1", "pretrain.monitor.every must be an integer >= 0, got -1"),
])
def test_an_engine_key_of_the_wrong_type_is_refused_at_planning(tmp_path, capsys, override, message):
    code = main(["sweep", "--methods", "invp", "--seeds", "0", "--profile", "mini", "--launcher", "local",
                 "--dry-run", "--set", override, "--sweeps", str(tmp_path / "sweeps"),
                 "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results")])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(rf"{message}; fix it in .*mini\.yaml or with --set", err)
    assert not list(tmp_path.iterdir())


# ``.get(<literal key>, <default>)`` calls that read something other than the run config
STORED_READERS = {
    ("benchmark/engine/checkpoint.py", "config"): "the config stored in a checkpoint file",
    ("methods/parts/top_m.py", "PATH"): "the process environment",
    ("methods/state.py", "state_names"): "a class's own attributes",
    ("benchmark/harness/completion.py", "records"): "a stored result file",
    ("benchmark/harness/status.py", "encoder"): "a job entry of the stored sweep state",
    ("benchmark/harness/status.py", "folder"): "a submission of the stored sweep state",
    ("benchmark/harness/sweep_state.py", "versions"): "the code versions stored in a sweep state",
    ("benchmark/harness/submitit_launcher.py", "SUBMITIT_PREEMPT_SIGNAL"): "the process environment",
    ("benchmark/harness/resources.py", "sbatch"): "an override layer (launcher.<kind>, --sbatch), all optional",
}
CONFIG_PACKAGES = ("benchmark/engine", "benchmark/models", "benchmark/data", "methods", "tasks",
                   "benchmark/harness")


def config_defaults(source: str) -> list[tuple[int, str, str]]:
    """(line, key, call) of every ``x.get("key", default)`` / ``x.get("key") or default`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        call = node.values[0] if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) else node
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "get"
                and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
            continue
        if call is not node or len(call.args) > 1 or call.keywords:
            found.append((node.lineno, call.args[0].value, ast.unparse(node)))
    return found


def test_the_scan_finds_config_defaults():
    assert [key for _, key, _ in config_defaults(
        'a = cfg.get("amp", False)\nb = int(c.get("every") or 1)\nd = cfg["x"]\ne = cfg.get("y")\n'
    )] == ["amp", "every"]


def test_no_config_default_is_written_in_engine_models_data_methods_tasks_or_harness():
    found = []
    for package in CONFIG_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            found += [f"{relative}:{line}: {call}" for line, key, call in config_defaults(path.read_text())
                      if (relative, key) not in STORED_READERS]
    assert not found, "config defaults in code (read the key directly, the profiles hold it):\n" + "\n".join(found)


def _settings_classes() -> dict[str, type]:
    """The settings class of every registered method and of its variants (``knn``'s two)."""
    found, todo = {}, list(Method.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.settings_class is not None:
            found[cls.settings_class.__name__] = cls.settings_class
    return found


def test_no_settings_field_of_a_registered_method_holds_a_default():
    classes = _settings_classes()
    assert {"InvPSettings", "InsDisSettings", "KNNSettings", "MomentumSettings", "InterCLRSettings",
            "CLIMSettings"} <= set(classes)
    assert {name: fields for name, cls in classes.items() if (fields := defaulted_fields(cls))} == {}


def _without(text: str, line: str) -> str:
    """``text`` with its one ``line`` (a leading newline kept) left out."""
    assert text.count(line) == 1
    return text.replace(line, "\n" if line.startswith("\n") else "")


@pytest.mark.parametrize("method, line, key", [
    ("invp", "    n_pos: 20\n", "n_pos"),
    ("interclr", "    pool_size: 1000\n", "pool_size"),
])
def test_a_method_block_lacking_a_key_fails_planning_and_build_naming_it(tmp_path, capsys, method, line, key):
    profile = tmp_path / "mini.yaml"
    profile.write_text(_without((PROFILE_DIR / "mini.yaml").read_text(), line))
    message = (rf"methods\.{method}\.{key} is missing from the profile \(the run's method\.{key}\); "
               rf"add it to the profile's methods\.{method} block .* or --set method\.{key}=\.\.\.")
    out = tmp_path / "out"
    code = main(["sweep", "--methods", method, "--seeds", "0", "--profile", str(profile),
                 "--launcher", "local", "--dry-run", "--sweeps", str(out / "sweeps"),
                 "--out", str(out / "runs"), "--results", str(out / "results")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err) and not out.exists()
    block = {k: v for k, v in method_config(method, "mini").items() if k != key}
    with pytest.raises(ConfigError, match=message):
        build_method(block, 10000, 128)


def test_a_nested_block_lacking_a_key_is_named_with_its_dotted_key():
    with pytest.raises(ConfigError, match=r"^methods\.knn\.ramp\.length is missing from the profile"):
        method_class("knn").check_settings({**method_config("knn"), "ramp": {"type": "binary"}})


@pytest.mark.parametrize("line, message", [
    ("\nseed: 0\n", r"the config is missing seed; fix it in .*mini\.yaml or with --set seed=\.\.\.$"),
    ("\n  name: local ",
     r"launcher is missing name; fix it in .*mini\.yaml or with --set launcher\.name=\.\.\.$"),
])
def test_sweep_reads_the_profile_seed_and_launcher_without_defaults(tmp_path, capsys, line, message):
    profile = tmp_path / "mini.yaml"
    profile.write_text(_without((PROFILE_DIR / "mini.yaml").read_text(), line))
    code = main(["sweep", "--methods", "invp", "--profile", str(profile), "--dry-run",
                 "--sweeps", str(tmp_path / "sweeps"), "--out", str(tmp_path / "runs"),
                 "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err.strip())
