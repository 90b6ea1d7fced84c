"""`trainwell train --resume` and `--resume-or-start` keep their word (issue 23, items 1-3, 5, 13):
the resumed run keeps its config, nothing to resume is exit 2, a resume says where it picked
up, a finished run is left as it is, and a signal after training still leaves a complete run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8", "NO_COLOR": "1", "COLUMNS": "200"}


def trainwell(*args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainwell", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def epoch_records(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r.get("kind") == "epoch"]


@pytest.fixture(scope="module")
def small_xor(tmp_path_factory) -> Path:
    """A finished 2-epoch xor run on 160 samples, in a run directory with a custom name."""
    cwd = tmp_path_factory.mktemp("cli")
    result = trainwell("train", "xor", "--epochs", 2, "--num-samples", 160, "--run-dir", "runs/my-xor", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd


def test_resume_without_a_run_dir_continues_the_newest_run_with_its_own_config(small_xor, tmp_path):
    cwd = tmp_path / "w"
    subprocess.run(["cp", "-r", str(small_xor), str(cwd)], check=True)
    result = trainwell("train", "--resume", "--epochs", 3, cwd=cwd)
    assert result.returncode == 0, result.stderr
    run = cwd / "runs" / "my-xor"
    assert "extending the run from 2 to 3 epochs (--epochs)" in result.stdout
    assert "resumed from step 10 (the start of epoch 3) of runs/my-xor" in result.stdout
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["num_samples"] == 160 and config["epochs"] == 3 and config["recipe"] == "xor"
    assert [r["epoch"] for r in epoch_records(run)] == [1, 2, 3]
    assert "Trained epoch 3 (5 steps, resumed from step 10)" in result.stdout
    assert "160 samples in" in result.stdout  # only what this process trained


def test_nothing_to_resume_is_exit_2_saying_where_it_looked(small_xor, tmp_path):
    assert one_error_line(trainwell("train", "xor", "--resume", cwd=tmp_path)) == (
        "trainwell: error: nothing to resume: no xor run under runs/ (start one without --resume)")
    line = one_error_line(trainwell("train", "--resume", tmp_path / "nonexistent", cwd=tmp_path))
    assert f"no run at {tmp_path / 'nonexistent'}: the directory does not exist" in line
    assert "cannot read config file" not in line
    cwd = tmp_path / "w"
    subprocess.run(["cp", "-r", str(small_xor), str(cwd)], check=True)
    checkpoints = sorted((cwd / "runs" / "my-xor" / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 2  # one per epoch
    for ckpt in checkpoints:
        ckpt.write_bytes(ckpt.read_bytes()[:100])  # every checkpoint truncated
    result = trainwell("train", "--resume", "runs/my-xor", "--epochs", 3, cwd=cwd)
    assert "holds no valid checkpoint (2 damaged, skipped)" in one_error_line(result)
    assert result.stdout.count("trainwell: skipped checkpoint runs/my-xor/checkpoints/") == 2
    assert "Warning" not in result.stdout + result.stderr


def test_resume_or_start_starts_a_new_run_then_leaves_the_finished_one_alone(tmp_path):
    args = ("train", "xor", "--epochs", 2, "--num-samples", 160, "--run-dir", "job", "--resume-or-start")
    first = trainwell(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Trained 2 epochs" in first.stdout
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "job").rglob("*") if p.is_file()}
    again = trainwell(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "job is already complete (2 of 2 epochs); nothing to do" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "job").rglob("*") if p.is_file()} == files


def test_an_option_that_changes_the_math_is_refused_on_resume(small_xor):
    line = one_error_line(trainwell("train", "--resume", "runs/my-xor", "--lr", "0.5", "--epochs", 3, cwd=small_xor))
    assert "--lr 0.5 differs from the run being resumed (0.05)" in line
    line = one_error_line(trainwell("train", "mnist", "--resume", "runs/my-xor", cwd=small_xor))
    assert "runs/my-xor is a xor run, not mnist" in line


def test_sigterm_while_the_report_is_written_still_finishes_the_run(tmp_path):
    """A SIGTERM after training (here: while report.html is rendered) lets the command finish, exit 0."""
    script = (
        "import os, signal, sys\n"
        "import trainwell.report as report\n"
        "original = report.write_report\n"
        "def slow(run_dir):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return original(run_dir)\n"
        "report.write_report = slow\n"
        "from trainwell.cli import main\n"
        "sys.exit(main(['train', 'xor', '--epochs', '2', '--num-samples', '160', '--run-dir', 'run']))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "SIGTERM arrived after training; the run was finished first" in result.stdout
    assert (tmp_path / "run" / "report.html").stat().st_size > 1000
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"


def test_extending_a_cosine_run_is_refused_before_anything_is_rewritten(tmp_path):
    args = ("train", "xor", "--epochs", 2, "--num-samples", 160, "--run-dir", "run", "--schedule", "warmup-cosine")
    assert trainwell(*args, cwd=tmp_path).returncode == 0
    config = (tmp_path / "run" / "config.yaml").read_text()
    line = one_error_line(trainwell("train", "--resume", "run", "--epochs", 3, cwd=tmp_path))
    assert "--epochs 3 would change the length of the run's warmup-cosine schedule, which was built for 2 epochs" in line
    assert (tmp_path / "run" / "config.yaml").read_text() == config
