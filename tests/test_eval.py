"""``trainwell eval``: a run's final weights (or a checkpoint) give the metrics of the run's own test
record; paths that are not runs, and options that do not apply, are one line and exit 2.
(text-classify's eval and predict are in test_text.py, beside its tiny fine-tune.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainwell.cli import main

KEYS = ("test_loss", "test_acc", "test_samples")


def run_test_record(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in records if r["kind"] == "test")


def eval_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["eval", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An xor run (5 epochs) and a quick mnist run (512 samples, 1 epoch)."""
    root = tmp_path_factory.mktemp("eval")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    assert main(["train", "xor", "--epochs", "5", "--run-dir", str(root / "xor")]) == 0
    assert main(["train", "mnist", "--epochs", "1", "--num-samples", "512", "--run-dir", str(root / "mnist")]) == 0
    mp.undo()
    return root


@pytest.mark.parametrize("recipe", ["xor", "mnist"])
def test_eval_equals_the_runs_own_test_metrics(recipe, runs, capsys):
    printed = eval_json(capsys, str(runs / recipe))
    assert {k: printed[k] for k in KEYS} == {k: run_test_record(runs / recipe)[k] for k in KEYS}
    assert printed["recipe"] == recipe


def test_eval_prints_one_line_with_loss_and_accuracy(runs, capsys):
    capsys.readouterr()
    assert main(["eval", str(runs / "xor")]) == 0
    out = capsys.readouterr().out
    record = run_test_record(runs / "xor")
    assert out.count("\n") == 1
    assert f"loss {record['test_loss']:.4f}, accuracy {record['test_acc']:.2%} on {record['test_samples']:,}" in out


def test_eval_of_the_last_checkpoint_equals_the_final_weights(runs, capsys):
    last = sorted((runs / "mnist" / "checkpoints").glob("*.ckpt"))[-1]
    printed = eval_json(capsys, str(last))
    assert {k: printed[k] for k in KEYS} == {k: run_test_record(runs / "mnist")[k] for k in KEYS}


def test_eval_on_the_validation_split(runs, capsys):
    printed = eval_json(capsys, str(runs / "mnist"), "--split", "val")
    assert printed["val_samples"] == 6_000 and 0 < printed["val_acc"] <= 1


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "nowhere", "is neither a run directory (with config.yaml) nor a checkpoint (.ckpt)"),
    (lambda root: root, "is neither a run directory"),
])
def test_a_path_that_is_not_a_run_is_one_line_and_exit_2(make, message, tmp_path, capsys):
    assert main(["eval", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_an_unfinished_run_points_at_its_checkpoints(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("recipe: xor\n")
    assert main(["eval", str(tmp_path)]) == 2
    assert "has no final weights (model.safetensors)" in capsys.readouterr().err


def test_data_for_a_recipe_with_built_in_data_is_refused(runs, capsys):
    assert main(["eval", str(runs / "xor"), "--data", "x.csv"]) == 2
    assert "the xor recipe's data is built in" in capsys.readouterr().err


def test_predict_refuses_a_run_that_is_not_text(runs, capsys):
    assert main(["predict", str(runs / "xor"), "hello"]) == 2
    assert "xor run" in capsys.readouterr().err
