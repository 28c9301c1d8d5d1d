"""The declarative field machinery (benchmark/core/fields.py) and the schemas declared with it."""
from __future__ import annotations

import dataclasses
import math

import pytest

from benchmark.core.config import available_profiles, method_defaults
from benchmark.core.fields import AnyOf, ConfigError, Float, Int, ListOf, MapOf, Section, Tuple, safe_name
from benchmark.harness.plan import plan_run, select_tasks
from benchmark.harness.schema import resolve_run


@pytest.mark.parametrize("name", ["mini", "imagenet-mlp", "a.b_c-1", "..x", "x.."])
def test_safe_names(name):
    assert safe_name(name, "k") == name


@pytest.mark.parametrize("name", [".", "..", "", "a/b", "../x", "a b", "a\nb", "C:\\x", None, 3])
def test_unsafe_names_are_refused_naming_the_key(name):
    with pytest.raises(ConfigError, match=r"^the\.key must be a safe name"):
        safe_name(name, "the.key")


@pytest.mark.parametrize("spec, good, bad", [
    (Int(ge=1), [1, 10**12], [0, -1, 1.0, True, "1", None]),
    (Int(ge=0), [0, 3], [-1, 0.5]),
    (Float(gt=0), [1e-9, 3, 30.0], [0, -1.0, math.nan, math.inf, False, "3e-2"]),
    (Float(ge=0, lt=1), [0, 0.999], [1, 1.0, -0.1]),
    (ListOf(Int(ge=1), length=2), [[1, 2], (3, 4)], [[1], [1, 0], "12", [1, 2, 3]]),
    (Tuple(Float(), Int(ge=1)), [[-6, 12]], [[-6, 1.5], [-6]]),
    (MapOf(Float(gt=0, le=1), Int(ge=1)), [{0.01: 10, 0.1: 1}, {}], [{2: 1}, {0.1: 0}, [1]]),
    (AnyOf(Float(gt=0), ListOf(Float(gt=0), min_len=1)), [0.1, [0.1, 1]], [[], [0.1, 0], "x"]),
])
def test_specs_accept_and_refuse(spec, good, bad):
    for value in good:
        spec.check(value, "k")
    for value in bad:
        with pytest.raises(ConfigError, match=r"^k(\[\d+\]|\.\S+)?[ :]"):
            spec.check(value, "k")


def test_messages_name_the_key_the_expectation_the_value_and_the_fix():
    with pytest.raises(ConfigError) as info:
        Float(ge=0, lt=1).check(1.0, "pretrain.optimizer.momentum", "use --set {key}=0.9")
    assert str(info.value) == ("pretrain.optimizer.momentum must be a number in [0, 1), got 1.0; "
                               "use --set pretrain.optimizer.momentum=0.9")
    with pytest.raises(ConfigError, match=r"^a\.b\[1\] must be a positive integer, got 0; set a\.b$"):
        Section({"b": ListOf(Int(ge=1))}).check({"b": [1, 0]}, "a", "set {key}")


def test_sections_refuse_unknown_and_missing_keys():
    section = Section({"epochs": Int(ge=1), "lr": Float(gt=0)}, required=("lr",))
    with pytest.raises(ConfigError, match=r"^s: unknown setting\(s\) \['epoch'\] \(did you mean epochs\?\); valid: epochs, lr$"):
        section.check({"epoch": 3, "lr": 0.1}, "s")
    with pytest.raises(ConfigError, match="s is missing lr"):
        section.check({"epochs": 3}, "s")
    Section({"name": Int()}, closed=False).check({"name": 1, "anything": "else"}, "m")


def test_declared_fields_cover_their_dataclasses():
    from benchmark.harness.resources import Resources
    from benchmark.harness.schema import RESOURCE_FIELDS
    from tasks.detection.model import C4_FIELDS, C4Config
    from tasks.detection.schedule import SCHEDULE_SETTINGS, DetectionSchedule
    from tasks.finetune import RECIPE_FIELDS, FinetuneRecipe

    for declared, cls in ((RESOURCE_FIELDS, Resources), (C4_FIELDS, C4Config),
                          (SCHEDULE_SETTINGS.fields, DetectionSchedule),
                          (RECIPE_FIELDS, FinetuneRecipe)):
        assert set(declared) == {f.name for f in dataclasses.fields(cls)}, cls.__name__
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(Resources) if f.name != "sbatch")
    C4Config.from_settings({f.name: getattr(C4Config(), f.name) for f in dataclasses.fields(C4Config)})


def test_every_task_declares_a_valid_field_for_each_default():
    from tasks.base import available_tasks
    from tasks.common import checked_settings

    for name, cls in available_tasks().items():
        assert cls.settings_fields, name
        given = {"dataset": "imagenet"} if cls.defaults.get("dataset", "x") is None else {}
        checked_settings(cls(), given, name)


@pytest.mark.parametrize("profile", available_profiles())
def test_every_shipped_profile_passes_the_schema_and_plans_every_task(profile, tmp_path):
    for method in method_defaults(profile):
        cfg = resolve_run(profile, method)
        assert plan_run(cfg, select_tasks(cfg, "all"), tmp_path)
