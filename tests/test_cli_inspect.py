"""`trainwell report` and `trainwell runs` from the command line: output, files, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import trainwell as tw


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainwell", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cwd")
    for name, lr in (("a", 0.05), ("b", 0.01)):
        torch.manual_seed(0)
        x, y = torch.randn(128, 4), torch.randint(0, 2, (128,))
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=lr), nn.CrossEntropyLoss(),
                             device="cpu", seed=0, run_dir=root / "runs" / name)
        data = tw.InMemoryLoader(x, y, batch_size=32)
        trainer.fit(data, data, epochs=2)
    return root


def test_report_builds_the_page_and_prints_the_verdict(runs_root: Path) -> None:
    result = cli("report", "runs/a", cwd=runs_root)
    assert result.returncode == 0, result.stderr
    assert "Health verdict" in result.stdout and "Report: runs/a/report.html" in result.stdout
    assert (runs_root / "runs" / "a" / "report.html").stat().st_size > 10_000


def test_runs_list_and_compare(runs_root: Path) -> None:
    listed = cli("runs", cwd=runs_root)
    assert listed.returncode == 0, listed.stderr
    assert "a" in listed.stdout.split() and "b" in listed.stdout.split()
    compared = cli("runs", "compare", "runs/a", "runs/b", cwd=runs_root)
    assert compared.returncode == 0, compared.stderr
    assert (runs_root / "runs" / "compare.html").is_file()


@pytest.mark.parametrize("args, message", [
    (("report", "missing"), "no run directory at missing"),
    (("report", "not_a_run"), "not_a_run is not a run directory"),
    (("runs", "compare", "runs/a"), "needs at least two run directories"),
    (("runs", "list", "runs/a"), "takes no run directories"),
])
def test_inspect_errors_are_one_line_exit_2(runs_root: Path, args: tuple, message: str) -> None:
    (runs_root / "not_a_run").mkdir(exist_ok=True)
    (runs_root / "not_a_run" / "notes.txt").write_text("not a run\n")
    result = cli(*args, cwd=runs_root)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (runs_root / "not_a_run").iterdir()) == ["notes.txt"]  # nothing written
