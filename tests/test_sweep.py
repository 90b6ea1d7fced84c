"""``trainwell sweep``: six trials on xor finish with a table, best.yaml and study.html; a sweep
killed mid-way continues the same study when rerun; best.yaml trains; a pruned trial is recorded
as pruned; every mistake in the search space is one line and exit 2."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from trainwell.cli import main

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--epochs", "3", "--num-samples", "100"]
SPACE = ["--param", "batch_size=choice:16,32"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "COLUMNS": "200"}  # one thread: tiny models
CONFIG = {"recipe": "xor", "sweep": {"lr": "loguniform:1e-3:0.3"}}  # the rest of the space comes from --param


def _trainwell(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainwell", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=ENV)


def _sweep_command(config: Path, sweep_dir: Path, trials: int = 6) -> list[str]:
    return ["sweep", str(config), "--trials", str(trials), *SPACE, *QUICK, "--run-dir", str(sweep_dir)]


def _config(tmp: Path) -> Path:
    path = tmp / "xor-sweep.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def _study(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'study.db'}")


def _table_rows(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("TRIAL "))
    return [line for line in lines[start + 1:] if re.match(r"\d+\s", line)]


def _assert_trial_dirs_match_study(sweep_dir: Path, study: optuna.Study) -> None:
    """Each trial-NNN is a normal run directory trained with exactly trial NNN's parameters."""
    for trial in study.trials:
        run_dir = sweep_dir / f"trial-{trial.number:03d}"
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["run_dir"] == str(run_dir)
        assert {name: config[name] for name in trial.params} == trial.params
        if trial.state.is_finished() and "failure" not in trial.user_attrs and trial.state != TrialState.FAIL:
            assert (run_dir / "metrics.jsonl").is_file() and (run_dir / "summary.json").is_file()


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("sweep")
    sweep_dir = tmp / "sweep-xor"
    return sweep_dir, _trainwell(*_sweep_command(_config(tmp), sweep_dir), cwd=tmp)


def test_six_trials_finish_with_a_table_best_yaml_and_an_offline_page(finished_sweep) -> None:
    sweep_dir, result = finished_sweep
    assert result.returncode == 0, result.stderr
    assert len(_table_rows(result.stdout)) == 6
    study = _study(sweep_dir)
    assert len(study.trials) == 6 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert {"lr", "batch_size"} == set(study.best_trial.params)
    _assert_trial_dirs_match_study(sweep_dir, study)
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert "sweep" not in best and "run_dir" not in best
    assert best["recipe"] == "xor" and best["epochs"] == 3
    assert {name: best[name] for name in study.best_trial.params} == study.best_trial.params
    assert f"Best: trial {study.best_trial.number}," in result.stdout
    page = (sweep_dir / "study.html").read_text()
    for section in ("Optimization history", "Parameter importance", "Loss per epoch", "Trials"):
        assert f"<h2>{section}</h2>" in page
    assert page.count("<svg") == 3
    assert "<script" not in page and not re.search(r"(src|href)=['\"]https?:", page)


def test_best_yaml_trains_with_trainwell_train(finished_sweep, tmp_path: Path) -> None:
    sweep_dir, _ = finished_sweep
    result = _trainwell("train", str(sweep_dir / "best.yaml"), "--run-dir", str(tmp_path / "best"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    trained = yaml.safe_load((tmp_path / "best" / "config.yaml").read_text())
    assert {k: v for k, v in trained.items() if k != "run_dir"} == best
    assert json.loads((tmp_path / "best" / "summary.json").read_text())["epochs"] >= 1


def test_a_killed_sweep_continues_the_same_study_when_rerun(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep-xor"
    command = [sys.executable, "-m", "trainwell", *_sweep_command(_config(tmp_path), sweep_dir)]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=ENV)
    deadline = time.monotonic() + 120
    started = sweep_dir / "trial-002" / "config.yaml"  # trial 2 is training (its directory alone: being made)
    while not started.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = _study(sweep_dir)
    assert [t.state for t in before.trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]
    first_metrics = (sweep_dir / "trial-000" / "metrics.jsonl").read_bytes()

    result = _trainwell(*_sweep_command(_config(tmp_path), sweep_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "continuing the sweep" in result.stdout and "interrupted trial 2 run again" in result.stdout
    study = _study(sweep_dir)
    assert len(study.trials) == 7  # the two kept, the killed one, its re-run and three more
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 6
    assert study.trials[2].state == TrialState.FAIL
    rerun = next(t for t in study.trials if t.user_attrs.get("rerun_of") == 2)
    assert rerun.number == 3 and rerun.params == study.trials[2].params
    assert (sweep_dir / "trial-000" / "metrics.jsonl").read_bytes() == first_metrics  # not trained again
    _assert_trial_dirs_match_study(sweep_dir, study)
    rows = _table_rows(result.stdout)
    assert len(rows) == 7 and "interrupted, re-run as trial 3" in rows[2]
    assert (sweep_dir / "best.yaml").is_file()


def test_a_pruned_trial_stops_cleanly_and_is_recorded_as_pruned(tmp_path: Path) -> None:
    from trainwell.cli.sweep import trial_rows
    from trainwell.sweep import TrialFailed, objective, parse_space

    base = {"recipe": "xor", "epochs": 4, "num_samples": 100, "patience": None}
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # any loss is "too high"
    study.optimize(objective(tmp_path, base, {}, parse_space(None, ["lr=choice:0.05"], None), [], lambda _: None),
                   n_trials=1, catch=(TrialFailed,))
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["pruned_at"] == 1
    summary = json.loads((tmp_path / "trial-000" / "summary.json").read_text())
    assert summary["status"].startswith("pruned by the sweep at epoch 1") and summary["epochs"] == 1
    assert (tmp_path / "trial-000" / "report.html").is_file()  # a finished run directory, not a crashed one
    assert trial_rows(study)[1][0][-1] == "pruned at epoch 1"


def test_jobs_run_trials_at_once_each_logging_to_its_own_directory(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = _trainwell("sweep", "xor", "--trials", "2", "--jobs", "2", "--param", "lr=loguniform:1e-3:0.3",
                        "--epochs", "2", "--num-samples", "100", "--run-dir", str(sweep_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(_study(sweep_dir).trials) == 2
    for number in (0, 1):
        log = (sweep_dir / f"trial-{number:03d}" / "train.log").read_text()
        assert log.count("run directory ") == 1 and f"trial-{number:03d}" in log


def test_trials_the_device_refuses_fail_with_the_reason_and_exit_1(tmp_path: Path, capsys) -> None:
    sweep_dir = tmp_path / "s"
    code = main(["sweep", "xor", "--trials", "2", "--param", "lr=uniform:0.01:0.1", "--device", "cpu",
                 "--precision", "16", "--run-dir", str(sweep_dir)])
    out = capsys.readouterr().out
    assert code == 1 and "no trial completed" in out
    rows = _table_rows(out)
    assert len(rows) == 2 and all("failed: precision '16'" in row and "needs a CUDA GPU" in row for row in rows)
    assert all(t.state == TrialState.FAIL and "failure" in t.user_attrs for t in _study(sweep_dir).trials)
    assert not (sweep_dir / "best.yaml").exists() and (sweep_dir / "study.html").is_file()


@pytest.mark.parametrize("args, message", [
    (["--param", "lr=logunifrom:1e-5:1e-1"], "unknown search kind 'logunifrom' (did you mean 'loguniform'?)"),
    (["--param", "lr=loguniform:0:1"], "loguniform needs LO above 0"),
    (["--param", "lr=uniform:0.1"], "expected uniform:LO:HI with two numbers"),
    (["--param", "lr=uniform:0.2:0.1"], "LO must be below HI"),
    (["--param", "lr=uniform:-1:1"], "--param lr=uniform:-1:1: input should be greater than 0"),
    (["--param", "batch_size=choice:32,abc"], "batch_size takes whole numbers (got 'abc')"),
    (["--param", "batch_size=uniform:16:64"], "batch_size takes whole numbers; use int:LO:HI"),
    (["--param", "optimizer=choice:adam,sdg"], "'sdg' is not a choice of optimizer (did you mean 'sgd'?)"),
    (["--param", "lrr=uniform:0.1:0.2"], "unknown parameter 'lrr' (did you mean 'lr'?)"),
    (["--param", "learning_rate=uniform:0.1:0.2"], "unknown parameter 'learning_rate' (did you mean 'lr'?)"),
    (["--param", "lr"], "--param lr: expected NAME=SPEC"),
    ([], "nothing to search: give --param NAME=SPEC"),
    (["--param", "lr=uniform:0.1:0.2", "--trials", "0"], "--trials must be at least 1"),
])
def test_a_bad_search_space_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path, capsys) -> None:
    assert main(["sweep", "xor", "--run-dir", str(tmp_path / "s"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()  # nothing written


def test_a_bad_sweep_mapping_in_the_config_file_names_the_file(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"recipe": "xor", "sweep": {"lr": "loguniform:1e-5"}}))
    assert main(["sweep", str(config), "--run-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{config}: sweep: lr: expected loguniform:LO:HI" in err


def test_rerunning_with_another_search_space_is_refused(finished_sweep, capsys) -> None:
    sweep_dir, _ = finished_sweep
    before = (sweep_dir / "study.db").stat().st_mtime_ns
    assert main(["sweep", "xor", "--param", "lr=uniform:0.1:0.2", *QUICK, "--run-dir", str(sweep_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a sweep with other search space" in err
    assert (sweep_dir / "study.db").stat().st_mtime_ns == before


def test_a_second_sweep_in_the_same_directory_is_refused(tmp_path: Path, capsys) -> None:
    sweep_dir = tmp_path / "s"
    sweep_dir.mkdir()
    with (sweep_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert main(["sweep", "xor", "--param", "lr=uniform:0.1:0.2", "--run-dir", str(sweep_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"another sweep is running in {sweep_dir}" in err


def test_without_optuna_the_sweep_says_what_to_install(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(["sweep", "xor", "--param", "lr=uniform:0.1:0.2", "--run-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err == "trainwell: error: trainwell sweep needs Optuna: pip install 'trainwell[sweep]' (or pip install optuna)\n"
