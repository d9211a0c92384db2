"""Config errors in a few lines: the key, its value, what is allowed, where it is documented; and dataset
inputs that do not exist named by their key before any job runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator, ValidationError

from sensitivity.pipeline.config_errors import (
    describe_validation_error,
    key_path,
    missing_inputs,
)

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())


def first_error(config: dict) -> ValidationError:
    error = next(Draft202012Validator(SCHEMA).iter_errors(config), None)
    assert error is not None, config
    return error


def test_key_path() -> None:
    assert key_path(["datasets", "demo", "roots", 0]) == "datasets.demo.roots[0]"
    assert key_path([]) == "(top level)"


@pytest.mark.parametrize(("config", "expected"), [
    ({"datasets": {}, "targets": ["demo"], "extraction": {"device": "tpu"}},
     ["Error validating config file: extraction.device = 'tpu'",
      "  'tpu' is not one of ['auto', 'cpu', 'cuda']",
      "  allowed: one of 'auto', 'cpu', 'cuda'"]),
    ({"datasets": {}, "targets": ["demo"], "foo": 1},
     ["Error validating config file: foo = 1",
      "  Additional properties are not allowed ('foo' was unexpected)",
      ("  allowed keys here: targets, on_bad_input, model, extraction, map_methods, comparison, regression, "
       "evaluation, report, paper, speed, datasets")]),
    ({"datasets": {}, "targets": ["demo"], "map_methods": {"integrated_gradients": {"steps": 0}}},
     ["Error validating config file: map_methods.integrated_gradients.steps = 0",
      "  0 is less than the minimum of 1",
      "  allowed: type integer; ≥ 1"]),
])
def test_validation_error_names_key_value_allowed_and_docs(config, expected) -> None:
    lines = describe_validation_error(first_error(config)).splitlines()
    assert lines[: len(expected)] == expected
    assert lines[-1].startswith("  documented in workflow/schemas/config.schema.yaml")
    assert len(lines) <= 6 and all(len(line) <= 320 for line in lines)


def test_missing_dataset_inputs_are_named_by_key(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raccoon").mkdir()
    folder = {"kind": "folder", "roots": ["raccoon", "racoon"]}
    assert missing_inputs("demo", folder) == [f"datasets.demo.roots[1]: racoon does not exist (relative to {os.getcwd()})"]
    assert missing_inputs("demo", {"kind": "folder", "roots": ["raccoon"]}) == []
    assert [line.split(":")[0] for line in missing_inputs("v", {"kind": "csv", "csv": "b.csv", "images": "x"})] == \
        ["datasets.v.csv", "datasets.v.images"]
    # a root that the workflow's own download rules create is not checked
    assert missing_inputs("voc", {"kind": "voc2007", "root": "resources/voc", "download": {"a.tar": {}}}) == []
    assert len(missing_inputs("voc", {"kind": "voc2007", "root": "resources/voc"})) == 1
