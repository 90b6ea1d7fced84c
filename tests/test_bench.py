"""The benchmark's report (``bench/report.py``): the acceptance ratios of issue 5 are computed
from its JSON lines, so the arithmetic that turns runs into ratios is pinned here (the runs
themselves are too slow for the suite); and ``bench/run.py``'s choice of contenders."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


run = _load("bench_run", BENCH / "run.py")
report = _load("bench_report", BENCH / "report.py")
common = _load("bench_common", BENCH / "contenders" / "_common.py")


def _run(label: str, rep: int, epoch_s: list[float], samples_per_epoch: int = 54_000, rss: float = 600.0) -> dict:
    timed = sum(epoch_s)
    return {"label": label, "rep": rep, "batch_size_asked": 64, "samples_per_s": samples_per_epoch * len(epoch_s) / timed,
            "timed_s": timed, "epoch_s": epoch_s, "process_wall_s": 10.0, "import_s": 2.0, "peak_rss_mib": rss,
            "val_acc": 97.0}


def test_fastest_epoch_is_the_quickest_timed_epoch_of_a_process() -> None:
    assert report.fastest_epoch(_run("x", 0, [2.0, 1.0, 4.0])) == pytest.approx(54_000 / 1.0)
    legacy = _run("x", 0, [3.0])
    del legacy["epoch_s"]  # results written before epochs were timed one by one
    assert report.fastest_epoch(legacy) == pytest.approx(54_000 / 3.0)


def test_ratios_pair_runs_of_the_same_repetition() -> None:
    results = [
        _run("trainwell_recipe", 0, [1.0, 1.0], rss=610), _run("hand_tuned", 0, [1.0, 2.0]),  # a slow epoch
        _run("trainwell_recipe", 1, [2.0, 2.0], rss=610), _run("hand_tuned", 1, [1.0, 1.0]),
        _run("trainwell_recipe", 2, [1.0, 1.0], rss=610), _run("hand_tuned", 2, [1.0, 1.0]),
    ]
    table = report.summarise(results, ["trainwell_recipe", "hand_tuned"], [64])
    rows = {(r["text"], r["kind"]): r for r in report.ratio_rows(table)}
    speed = rows[("trainwell_recipe / hand_tuned", "speed")]
    # medians 54k vs 54k samples/s; per repetition 1.5, 0.5 and 1.0
    assert speed["value"] == pytest.approx(1.0)
    assert (speed["lo"], speed["hi"]) == (pytest.approx(0.5), pytest.approx(1.5))
    # fastest epochs: 54k / 54k, 27k / 54k, 54k / 54k
    assert speed["fastest_value"] == pytest.approx(1.0)
    assert (speed["fastest_lo"], speed["fastest_hi"]) == (pytest.approx(0.5), pytest.approx(1.0))
    assert speed["ok"] and speed["fastest_ok"]
    rss = rows[("peak RSS trainwell_recipe / hand_tuned", "rss")]
    assert rss["value"] == pytest.approx(610 / 600) and rss["ok"]
    assert "fastest_value" not in rss


def test_bootstrap_interval_of_the_ratio_of_medians() -> None:
    steady = [(0.9 * b, b) for b in (40_000.0, 31_000.0, 52_000.0, 35_000.0, 44_000.0)]
    assert report.bootstrap_interval(steady) == (pytest.approx(0.9), pytest.approx(0.9))
    assert report.bootstrap_interval(steady[:2]) is None  # too few repetitions to resample
    noisy = [(a, 40_000.0) for a in (28_000.0, 52_000.0, 36_000.0, 47_000.0, 31_000.0, 41_000.0, 38_000.0)]
    lo, hi = report.bootstrap_interval(noisy)
    assert 28_000 / 40_000 <= lo < 38_000 / 40_000 < hi <= 52_000 / 40_000  # around the median ratio, within the data
    assert report.bootstrap_interval(noisy) == (lo, hi)  # seeded: a report can be recomputed


def test_report_table_shows_the_interval_and_verdict() -> None:
    results = [r for rep in range(4) for r in (_run("trainwell_recipe", rep, [1.0 + rep / 10, 1.0]),
                                                 _run("hand_tuned", rep, [1.0, 1.0]))]
    table = report.summarise(results, ["trainwell_recipe", "hand_tuned"], [64])
    args = type("Args", (), {"reps": 4, "epochs": 2})()
    text = report.markdown(args, {}, table, report.ratio_rows(table), {}, ["trainwell_recipe", "hand_tuned"],
                           "cmd", [0.5, 0.6], 60.0)
    row = next(line for line in text.splitlines() if line.startswith("| trainwell_recipe / hand_tuned | 64"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # median ratio, 90% interval, per-rep range, target, met (then the same for the fastest epochs)
    assert cells[2] == "**0.93**" and cells[3].count("–") == 1 and cells[4] == "0.87–1.00"
    assert cells[5:7] == ["≥ 0.97", "**no**"] and cells[7] == "**1.00**" and cells[10] == "yes"


def test_only_picks_contenders_by_name_or_variant_and_rejects_unknown_ones() -> None:
    assert run.selected("hand_tuned,lightning:fast") == [("hand_tuned", "default"), ("lightning", "fast")]
    assert ("lightning", "default") in run.selected("lightning")
    failed = subprocess.run([sys.executable, str(BENCH / "run.py"), "--only", "hand_tuned,lightnin"],
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1
    assert "unknown contender(s) ['lightnin']; choose from" in failed.stderr


def test_epoch_clock_times_each_epoch_after_the_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter([10.0, 12.0, 15.0])
    monkeypatch.setattr(common.time, "perf_counter", lambda: next(ticks))
    clock = common.EpochClock("cpu")
    for index in range(3):  # epoch 0 is the warm-up: not timed
        clock.epoch_start(index)
    clock.stop()
    assert clock.epoch_seconds == [2.0, 3.0]
    assert clock.seconds == 5.0
    with pytest.raises(RuntimeError, match="not started and stopped"):
        _ = common.EpochClock("cpu").seconds


def test_steps_bench_writes_one_row_per_loop_against_the_hand_tuned_loop(tmp_path: Path) -> None:
    out = tmp_path / "STEPS.md"
    done = subprocess.run([sys.executable, str(BENCH / "steps.py"), "--rounds", "2", "--steps", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ") and "ms |" in line]
    assert [cells[0].strip() for cells in rows] == ["hand", "minimal", "bare", "health", "health+flow", "defaults"]
    assert rows[0][2].strip() == "**1.000** (1.000-1.000)"
    assert rows[0][4].strip() == "0 µs (0-0)"  # the hand-tuned loop's extra time over itself
    assert all(cells[4].strip().endswith(")") and " µs (" in cells[4] for cells in rows)
    assert all(float(cells[1].strip().removesuffix(" ms")) > 0 for cells in rows)
    assert "--rounds 2 --steps 2 --batch-size 64" in out.read_text()
