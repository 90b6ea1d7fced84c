"""Config validation: finite numbers of the right type, and a suggestion for a mistyped or synonym key."""

from __future__ import annotations

import pytest

from trainwell.cli import main
from trainwell.config import validate
from trainwell.errors import ConfigError


@pytest.mark.parametrize("raw, words", [
    ({"epochs": True}, ["'epochs'", "integer", "True"]),
    ({"batch_size": False}, ["'batch_size'", "integer", "False"]),
    ({"lr": True}, ["'lr'", "number", "True"]),
    ({"lr": float("inf")}, ["'lr'", "finite", "inf"]),
    ({"lr": float("nan")}, ["'lr'", "finite", "nan"]),
    ({"clip": float("inf")}, ["'clip'", "finite"]),
    ({"weight_decay": float("-inf")}, ["'weight_decay'", "finite"]),
    ({"epochs": 2.5}, ["'epochs'", "integer", "2.5"]),
])
def test_wrong_type_or_non_finite_values_are_rejected(raw, words):
    with pytest.raises(ConfigError) as caught:
        validate({"recipe": "xor", **raw})
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    for word in words:
        assert word in message, (word, message)


def test_plain_yaml_values_still_validate():
    """What a YAML file gives: ints for floats, PyYAML's string for 1e-3 (no dot), an int precision."""
    config = validate({"recipe": "xor", "lr": "1e-3", "clip": 1, "epochs": 3, "precision": 16})
    assert (config.lr, config.clip, config.epochs, config.precision) == (0.001, 1.0, 3, "16")


@pytest.mark.parametrize("key, suggestion", [
    ("learning_rate", "lr"), ("bs", "batch_size"), ("batch", "batch_size"), ("max_epochs", "epochs"),
    ("num_epochs", "epochs"), ("grad_clip", "clip"), ("clip_grad_norm", "clip"),
    ("accumulation_steps", "accumulate"), ("grad_accum", "accumulate"), ("lrr", "lr"),
])
def test_unknown_key_suggests_the_field(key, suggestion):
    with pytest.raises(ConfigError, match=rf"unknown config key '{key}' \(did you mean '{suggestion}'\?\)"):
        validate({"recipe": "xor", key: 1})


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "Infinity"])
def test_cli_rejects_a_non_finite_learning_rate(value, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "xor", f"--lr={value}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lr" in err[0] and "finite" in err[0], err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_yaml_boolean_epochs_is_rejected(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text("recipe: xor\nepochs: true\n")
    assert main(["train", "exp.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epochs" in err[0] and "integer" in err[0] and "True" in err[0], err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_yaml_synonym_key_suggests_the_field(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text("recipe: xor\nlearning_rate: 0.1\n")
    assert main(["train", "exp.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "trainwell: error: unknown config key 'learning_rate' (did you mean 'lr'?)"
