"""The command line, run as a real subprocess (``python -m trainwell``) so exit codes and
streams are what a user sees."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from trainwell.config import FIELDS

# Tiny models: one intra-op thread is much faster than two fighting on a busy 2-core machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8", "NO_COLOR": "1", "COLUMNS": "200"}
SPEC_OPTIONS = ["--epochs", "--lr", "--batch-size", "--device", "--gpu", "--seed", "--run-dir", "--resume",
                "--precision", "--accumulate", "--clip", "--schedule", "--warmup", "--patience", "--num-samples"]


def trainwell(*args, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "trainwell", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout)


# The two longest runs start in the background when the module starts (if their tests were selected),
# so that they use the second core while the other tests run.
BACKGROUND = {
    "test_xor_with_defaults_reaches_full_test_accuracy": ["train", "xor", "--run-dir", "run"],
    "test_mnist_quick_run": ["train", "mnist", "--num-samples", "2000", "--epochs", "1", "--run-dir", "run"],
}


@pytest.fixture(scope="module", autouse=True)
def background(request, tmp_path_factory):
    selected = {item.originalname for item in request.session.items}
    started = {}
    for test_name, args in BACKGROUND.items():
        if test_name in selected:
            cwd = tmp_path_factory.mktemp(test_name[5:20])
            with open(cwd / "stdout.txt", "w") as out, open(cwd / "stderr.txt", "w") as err:
                process = subprocess.Popen([sys.executable, "-m", "trainwell", *args], cwd=cwd, env=ENV,
                                           stdout=out, stderr=err)
            started[test_name] = (process, cwd)
    yield started
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


def finished(background, test_name, timeout=300):
    """(exit code, stdout, stderr, cwd) of a background run, once it has finished."""
    process, cwd = background[test_name]
    code = process.wait(timeout=timeout)
    read = lambda name: (cwd / name).read_text(encoding="utf-8")  # noqa: E731
    return code, read("stdout.txt"), read("stderr.txt"), cwd


# --------------------------------------------------------------------------- help


def test_top_level_help(tmp_path):
    result = trainwell("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and result.stderr == ""


def test_train_help_lists_options_and_recipes(tmp_path):
    result = trainwell("train", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in SPEC_OPTIONS:
        assert option in result.stdout, option
    assert "mnist" in result.stdout and "xor" in result.stdout


# --------------------------------------------------------------------------- configuration errors: exit 2, one line

POSITIVE = ("greater than 0", "> 0", "positive")
ERROR_CASES = {
    # id: (arguments, words the one-line message must contain; a tuple: one of them)
    "lr-negative": (["train", "xor", "--lr", "-1"], ["--lr", "-1", POSITIVE]),
    "lr-zero": (["train", "xor", "--lr", "0"], ["--lr", POSITIVE]),
    "batch-size-zero": (["train", "xor", "--batch-size", "0"], ["--batch-size", ("greater than or equal to 1", ">= 1",
                                                                                 "at least 1")]),
    "epochs-not-a-number": (["train", "xor", "--epochs", "abc"], ["--epochs", "abc"]),
    "precision-13": (["train", "xor", "--precision", "13"], ["--precision", "13"]),
    "unknown-option": (["train", "xor", "--bogus", "3"], ["--bogus"]),
    "unknown-recipe": (["train", "nosuch"], ["nosuch", "mnist", "xor"]),
    "config-unknown-key": (["train", "unknown_key.yaml"], ["lrr", "'lr'"]),
    "config-wrong-type": (["train", "wrong_type.yaml"], ["epochs", "many"]),
    "config-file-missing": (["train", "missing.yaml"], ["missing.yaml"]),
    "run-dir-unwritable": (["train", "xor", "--run-dir", "a_file/run"], ["a_file/run", "not writable"]),
    "device-cuda-without-gpu": (["train", "xor", "--device", "cuda"], ["cuda"]),
    "precision-16-on-cpu": (["train", "xor", "--precision", "16", "--device", "cpu"], ["16", "CUDA"]),
    "data-dir-without-mnist": (["train", "mnist", "--data", "empty_data", "--epochs", "1"],
                               ["empty_data", "train-images-idx3-ubyte"]),
    "text-option-for-xor": (["train", "xor", "--group-by-length"], ["--group-by-length", "text-classify", "xor"]),
    "max-length-for-mnist": (["train", "mnist", "--max-length", "64"], ["--max-length", "text-classify", "mnist"]),
    "model-for-xor-in-lr-find": (["lr-find", "xor", "--model", "some_dir"], ["--model", "text-classify", "xor"]),
    "bool-option-from-yaml-as-number": (["train", "bool_as_number.yaml"], ["group_by_length", "true or false"]),
}
NEEDS_NO_GPU = {"device-cuda-without-gpu", "precision-16-on-cpu"}


def _prepare(directory):
    (directory / "unknown_key.yaml").write_text("recipe: xor\nlrr: 0.1\n")
    (directory / "wrong_type.yaml").write_text("recipe: xor\nepochs: many\n")
    (directory / "a_file").write_text("a regular file, not a directory\n")
    (directory / "bool_as_number.yaml").write_text("recipe: text-classify\ngroup_by_length: 1\n")
    (directory / "empty_data").mkdir()


@pytest.fixture(scope="module")
def error_results(request, tmp_path_factory):
    """The selected error cases, run as subprocesses two at a time (each one imports torch: ~2 s)."""
    from concurrent.futures import ThreadPoolExecutor

    selected = [item.callspec.params["case"] for item in request.session.items
                if item.originalname == "test_configuration_error_is_one_line_and_exit_2"]

    def run(case):
        cwd = tmp_path_factory.mktemp(case)
        _prepare(cwd)
        result = trainwell(*ERROR_CASES[case][0], cwd=cwd)
        return result.returncode, result.stdout, result.stderr

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(selected, pool.map(run, selected)))


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_configuration_error_is_one_line_and_exit_2(case, error_results):
    if case in NEEDS_NO_GPU and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    code, stdout, stderr = error_results[case]
    assert code == 2, f"exit {code}\nstdout: {stdout}\nstderr: {stderr}"
    assert "Traceback" not in stderr + stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for word in ERROR_CASES[case][1]:
        choices = word if isinstance(word, tuple) else (word,)
        assert any(choice in lines[0] for choice in choices), f"{word!r} not in {lines[0]!r}"


# --------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("xor30")
    result = trainwell("train", "xor", "--epochs", "30", "--run-dir", "run", cwd=cwd)
    return result, cwd / "run"


def test_xor_run_output(xor_run):
    result, _ = xor_run
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    assert "Memory estimate" in out
    epoch_lines = [line for line in out.splitlines() if line.startswith("Epoch [")]
    assert epoch_lines[0].startswith("Epoch [1/30]")
    assert epoch_lines[-1].startswith("Epoch [30/30]") and len(epoch_lines) == 30
    for line in epoch_lines:
        assert "Train Loss" in line and "Val Loss" in line
    assert "best model saved" in epoch_lines[0]
    test_lines = [line for line in out.splitlines() if line.lower().startswith("test")]
    assert len(test_lines) == 1 and "accuracy" in test_lines[0].lower() and "%" in test_lines[0]
    # the memory estimate comes before training
    assert out.index("Memory estimate") < out.index("Epoch [1/30]")


def test_xor_run_directory(xor_run):
    result, run = xor_run
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert set(FIELDS) <= set(config)  # fully resolved: every key
    assert config["recipe"] == "xor" and config["epochs"] == 30
    assert config["lr"] == 0.05 and config["batch_size"] == 32  # the recipe's defaults, written out

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    assert [r["epoch"] for r in epochs] == list(range(1, 31))
    assert all("train_loss" in r and "eval_loss" in r for r in epochs)

    checkpoints = sorted((run / "checkpoints").glob("*.ckpt"))
    assert checkpoints
    assert all((c.parent / (c.name + ".manifest.json")).is_file() for c in checkpoints)

    weights = load_file(run / "model.safetensors")
    assert {k: tuple(v.shape) for k, v in weights.items()} == {
        "0.weight": (4, 2), "0.bias": (4,), "2.weight": (1, 4), "2.bias": (1,)}
    assert (run / "model-best.safetensors").is_file()

    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 30 and summary["steps"] == 30 * 25  # 800 samples / 32
    assert 0.0 <= summary["test_acc"] <= 1.0
    assert summary["test_acc"] >= 0.95


def test_reusing_a_run_dir_without_resume_does_not_mix_runs(xor_run, tmp_path):
    """A second run into the same --run-dir (no --resume) must not keep the first run's later checkpoints
    (they would be what a later --resume picks) nor delete its own: refuse with exit 2, or start clean."""
    result, first = xor_run
    assert result.returncode == 0, result.stderr
    shutil.copytree(first, tmp_path / "run")
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    second = trainwell("train", "xor", "--epochs", "2", "--run-dir", "run", cwd=tmp_path)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    if second.returncode == 2:
        assert len(second.stderr.strip().splitlines()) == 1 and "run" in second.stderr
        assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before
    else:
        assert second.returncode == 0, second.stderr
        steps = json.loads((tmp_path / "run" / "summary.json").read_text())["steps"]
        assert steps == 2 * 25
        assert names and names[-1] == f"step-{steps:09d}.ckpt", names  # the newest is this run's last step
        assert all(int(n[5:14]) <= steps for n in names), names  # nothing left over from the first run


@pytest.mark.slow
def test_xor_with_defaults_reaches_full_test_accuracy(background):
    code, stdout, stderr, cwd = finished(background, "test_xor_with_defaults_reaches_full_test_accuracy")
    assert code == 0, stderr
    summary = json.loads((cwd / "run" / "summary.json").read_text())
    assert summary["test_acc"] == 1.0
    assert "100.00%" in stdout


def test_yaml_config_file_and_cli_override(tmp_path):
    (tmp_path / "exp.yaml").write_text("recipe: xor\nepochs: 3\nlr: 0.01\nseed: 4\n")
    result = trainwell("train", "exp.yaml", "--lr", "0.02", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["recipe"] == "xor"
    assert config["epochs"] == 3 and config["seed"] == 4  # from the file
    assert config["lr"] == 0.02  # the command line wins over the file
    assert config["batch_size"] == 32  # the recipe's default fills the rest
    assert len([line for line in result.stdout.splitlines() if line.startswith("Epoch [")]) == 3
    assert "Epoch [3/3]" in result.stdout


@pytest.mark.slow
def test_mnist_quick_run(background):
    code, stdout, stderr, cwd = finished(background, "test_mnist_quick_run")
    assert code == 0, stderr
    assert "2,000 training samples" in stdout
    assert "Epoch [1/1]" in stdout and "Trained 1 epoch (32 steps)" in stdout
    run = cwd / "run"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["num_samples"] == 2000 and config["recipe"] == "mnist"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["steps"] == 32  # 2000 / 64, rounded up
    assert summary["test_samples"] == 10_000 and summary["test_acc"] > 0.6  # better than chance by far
    weights = load_file(run / "model.safetensors")
    assert sum(v.numel() for v in weights.values()) == 235_146
