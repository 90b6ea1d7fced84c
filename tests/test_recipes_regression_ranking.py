"""The regression and ranking recipes: their data handling, the pair sampler, the margin loss,
the ranking metrics, and `trainwell train regression|ranking` at the defaults, end to end."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainwell.data import train_val_test_split
from trainwell.errors import DataError
from trainwell.ranking import PairLoader, PairwiseMarginLoss, pairwise_accuracy, random_order_ndcg, ranking_metrics
from trainwell.recipes.ranking import score_model
from trainwell.recipes.regression import SPLIT, load_diabetes_tensors, regression_metrics, standardised_splits

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8", "NO_COLOR": "1", "COLUMNS": "250"}


def trainwell(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainwell", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, encoding="utf-8", timeout=300)


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- data


def test_diabetes_is_read_from_the_package_unscaled() -> None:
    x, y = load_diabetes_tensors()
    assert x.shape == (442, 10) and y.shape == (442,)
    assert x[:, 0].min() >= 19 and x[:, 0].max() <= 79  # age in years: the raw copy, not the pre-scaled one
    assert 25 <= float(y.min()) and float(y.max()) <= 346


def test_standardisation_uses_the_training_split_only() -> None:
    x, y = load_diabetes_tensors()
    (train, val, test), target_std = standardised_splits(x, y, seed=0)
    assert [len(s[0]) for s in (train, val, test)] == [309, 66, 67]
    assert torch.allclose(train[0].mean(0), torch.zeros(10), atol=1e-5)
    assert torch.allclose(train[0].std(0), torch.ones(10), atol=1e-5)
    assert abs(float(train[1].mean())) < 1e-5 and abs(float(train[1].std()) - 1) < 1e-5
    # Changing every held-out patient changes nothing in the scaled training split.
    train_rows, *_ = train_val_test_split(torch.arange(442), seed=0, **SPLIT)
    held_out = torch.ones(442, dtype=torch.bool)
    held_out[train_rows] = False
    x2, y2 = x.clone(), y.clone()
    x2[held_out] *= 100
    y2[held_out] += 1000
    (train2, val2, _), std2 = standardised_splits(x2, y2, seed=0)
    assert torch.equal(train2[0], train[0]) and torch.equal(train2[1], train[1]) and std2 == target_std
    assert not torch.equal(val2[0], val[0])
    (_, val3, _), _ = standardised_splits(x, y, seed=0, targets=False)
    assert set(val3[1].tolist()) <= set(y.tolist())  # ranking keeps the measured targets as they are


def test_regression_metrics_are_mae_in_target_units_and_r2() -> None:
    targets = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    compute = regression_metrics(target_std=50.0)
    perfect = compute(targets.clone(), targets)
    assert perfect == {"mae": 0.0, "r2": 1.0}
    off = compute(targets + 0.5, targets)
    assert off["mae"] == pytest.approx(25.0)  # 0.5 standard deviations of 50 points
    assert off["r2"] == pytest.approx(1 - 0.25 / targets.var(unbiased=False).item())
    assert compute(torch.full((4,), targets.mean().item()), targets)["r2"] == pytest.approx(0.0)


# --------------------------------------------------------------------------- pairs


def test_pairs_are_a_pure_function_of_seed_and_epoch_and_ordered_high_first() -> None:
    targets = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0, 4.0, 1.0, 0.0])
    items = torch.arange(8.0)[:, None].repeat(1, 3)
    loader = PairLoader(items, targets, batch_size=3, seed=7, pairs_per_item=2)
    assert loader.num_samples == 16 and len(loader) == 6
    epoch0 = list(loader.batches(0))
    again = list(PairLoader(items, targets, batch_size=3, seed=7, pairs_per_item=2).batches(0))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(epoch0, again))
    assert not torch.equal(torch.cat([b[1] for b in epoch0]), torch.cat([b[1] for b in loader.batches(1)]))
    pairs, pair_targets = torch.cat([b[0] for b in epoch0]), torch.cat([b[1] for b in epoch0])
    assert pairs.shape == (16, 2, 3) and pair_targets.shape == (16, 2)
    assert bool((pair_targets[:, 0] > pair_targets[:, 1]).all())  # no ties; the higher one first
    assert torch.equal(targets[pairs[:, :, 0].long()], pair_targets)  # targets belong to their items
    assert sorted(pairs[:, :, 0].flatten().long().tolist()).count(4) >= 2  # every item leads pairs_per_item pairs
    # Resuming at batch 4 yields exactly the rest of the epoch.
    rest = list(loader.batches(0, start=4))
    assert len(rest) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(rest, epoch0[4:]))


def test_validation_pairs_are_the_same_every_epoch() -> None:
    targets = torch.arange(10.0)
    loader = PairLoader(torch.randn(10, 2), targets, batch_size=4, shuffle=False, seed=1)
    first = torch.cat([b[1] for b in loader])
    second = torch.cat([b[1] for b in loader])  # iterating moves the loader's epoch on
    assert torch.equal(first, second)


def test_a_pair_loader_needs_two_different_targets() -> None:
    with pytest.raises(DataError, match="at least two different target values"):
        PairLoader(torch.randn(5, 2), torch.full((5,), 3.0))


def test_margin_loss_is_the_seed_formula() -> None:
    scores = torch.tensor([[2.0, 0.5], [0.0, 0.3], [1.0, 1.0], [0.2, 0.1]])
    targets = torch.tensor([[5.0, 1.0], [4.0, 2.0], [3.0, 1.0], [1.0, 1.0]])  # the last pair ties
    loss = PairwiseMarginLoss(margin=1.0)(scores, targets)
    by_hand = [max(0.0, 1.0 - 2.0 + 0.5), max(0.0, 1.0 - 0.0 + 0.3), max(0.0, 1.0 - 1.0 + 1.0), 0.0]
    assert float(loss) == pytest.approx(sum(by_hand) / 4)
    swapped = PairwiseMarginLoss(margin=1.0)(scores.flip(1), targets.flip(1))
    assert float(swapped) == pytest.approx(float(loss))  # the positive is found from the targets


def test_pairwise_accuracy_and_ndcg() -> None:
    targets = torch.tensor([10.0, 30.0, 20.0, 40.0, 20.0])
    assert pairwise_accuracy(targets, targets) == 1.0
    assert pairwise_accuracy(-targets, targets) == 0.0
    assert pairwise_accuracy(torch.zeros(5), targets) == 0.5
    metrics = ranking_metrics(top_k=10)(targets * 2, targets)
    assert metrics == {"pairwise_acc": 1.0, "ndcg10": pytest.approx(1.0)}


def test_random_order_ndcg_is_the_mean_over_every_order() -> None:
    targets = torch.tensor([3.0, 0.0, 1.0, 7.0, 2.0])
    compute = ranking_metrics(top_k=2)
    orders = [compute(torch.tensor(p, dtype=torch.float32), targets)["ndcg2"]
              for p in itertools.permutations(range(5))]
    assert random_order_ndcg(targets, top_k=2) == pytest.approx(sum(orders) / len(orders), rel=1e-5)


def test_the_score_model_scores_pairs_and_single_items() -> None:
    model = score_model()
    assert model(torch.randn(4, 2, 10)).shape == (4, 2)
    assert model(torch.randn(7, 10)).shape == (7,)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    cwd = tmp_path_factory.mktemp("regression")
    return trainwell("train", "regression", "--run-dir", "run", cwd=cwd), cwd / "run"


@pytest.fixture(scope="module")
def ranking_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    cwd = tmp_path_factory.mktemp("ranking")
    return trainwell("train", "ranking", "--run-dir", "run", cwd=cwd), cwd / "run"


def test_regression_at_its_defaults_learns_and_beats_the_mean(regression_run) -> None:
    result, run = regression_run
    assert result.returncode == 0, result.stderr
    found = records(run)
    epochs = [r for r in found if r["kind"] == "epoch"]
    baseline = next(r for r in found if r["kind"] == "baseline")
    assert epochs[-1]["train_loss"] < 0.6 * epochs[0]["train_loss"]
    best = min(epochs, key=lambda e: e["eval_loss"])
    assert best["eval_loss"] < 0.6 * baseline["loss"]  # the mean predictor's MSE on the same patients
    assert best["eval_r2"] > 0.4 and 30 < best["eval_mae"] < 60  # progression points (targets 25..346)
    test = next(r for r in found if r["kind"] == "test")
    assert {"test_loss", "test_mae", "test_r2", "test_samples"} <= set(test)
    assert json.loads((run / "summary.json").read_text())["test_r2"] == test["test_r2"]


def test_regression_shows_mse_mae_r2_and_no_accuracy_anywhere(regression_run) -> None:
    result, run = regression_run
    lines = [line for line in result.stdout.splitlines() if line.startswith("Epoch [")]
    assert all("Val MAE:" in line and "Val R²:" in line for line in lines)
    assert "Acc" not in result.stdout and "accuracy" not in result.stdout.lower()
    assert not any("acc" in key for r in records(run) for key in r)
    report = (run / "report.html").read_text(encoding="utf-8")
    assert "val R²" in report and "val MAE" in report and "<td>R²</td>" in report and "<td>MAE</td>" in report
    assert "accuracy" not in report.lower() and "val acc" not in report
    findings = json.loads((run / "summary.json").read_text())["health"]
    assert not any("accuracy" in (f["title"] + f["evidence"]).lower() for f in findings)


def test_ranking_at_its_defaults_learns_and_beats_a_random_order(ranking_run) -> None:
    result, run = ranking_run
    assert result.returncode == 0, result.stderr
    found = records(run)
    epochs = [r for r in found if r["kind"] == "epoch"]
    baseline = next(r for r in found if r["kind"] == "baseline")
    assert baseline["predictor"] == "random order" and "loss" not in baseline
    assert epochs[-1]["train_loss"] < 0.7 * epochs[0]["train_loss"]
    best = min(epochs, key=lambda e: e["eval_loss"])
    assert best["eval_pairwise_acc"] > 0.7 and best["eval_ndcg10"] > baseline["ndcg10"] + 0.15
    test = next(r for r in found if r["kind"] == "test")
    assert test["test_pairwise_acc"] > 0.6 and 0 < test["test_ndcg10"] <= 1
    lines = [line for line in result.stdout.splitlines() if line.startswith("Epoch [")]
    assert all("Val Pairwise Acc:" in line and "Val NDCG@10:" in line for line in lines)
    assert "Health verdict: healthy" in result.stdout
    report = (run / "report.html").read_text(encoding="utf-8")
    assert "val NDCG@10" in report and "<td>pairwise accuracy</td>" in report


def test_the_ranking_model_is_exported_and_scores_items(ranking_run) -> None:
    _, run = ranking_run
    model = score_model()
    model.load_state_dict(load_file(run / "model.safetensors"))
    x, y = load_diabetes_tensors()
    (train, _, test), _ = standardised_splits(x, y, seed=0, targets=False)
    with torch.no_grad():
        scores = model(test[0])
    assert scores.shape == (67,) and pairwise_accuracy(scores, test[1]) > 0.6
