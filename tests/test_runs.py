"""`runs list` and `runs compare`: rows, status of unfinished runs, one comparison page."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
import yaml
from torch import nn

import trainwell as tw
from trainwell.runs import compare_runs, format_compare_table, format_runs_table, list_runs


def fake_run(path, lr, val_losses, summary=True, started="2025-03-0{}T10:00:00+00:00"):
    """A run directory as the trainer leaves it, with `len(val_losses)` epochs."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"recipe": "xor", "epochs": len(val_losses), "lr": lr,
                                                      "batch_size": 32, "run_dir": str(path)}))
    records = [{"kind": "start", "time": started.format(len(val_losses))}]
    records += [{"kind": "epoch", "epoch": e, "step": 10 * e, "train_loss": v * 0.9, "train_acc": 1 - v / 2,
                 "eval_loss": v, "eval_acc": 1 - v / 2} for e, v in enumerate(val_losses, 1)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if summary:
        (path / "summary.json").write_text(json.dumps({"recipe": "xor", "status": "completed",
                                                       "epochs": len(val_losses), "steps": 10 * len(val_losses),
                                                       "wall_time_s": 3.2, "test_loss": 0.2, "test_acc": 0.91}))
    return path


def test_list_runs_rows_and_statuses(tmp_path):
    fake_run(tmp_path / "xor-a", 0.05, [0.6, 0.4, 0.5])
    crashed = fake_run(tmp_path / "xor-b", 0.5, [0.7, 0.6, 0.55, 0.5], summary=False)
    os.utime(crashed / "metrics.jsonl", (0, 0))
    fake_run(tmp_path / "xor-c", 0.1, [0.9, 0.8, 0.7, 0.6, 0.5], summary=False)  # written just now
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "stray.txt").write_text("")
    rows = list_runs(tmp_path)
    assert [r["name"] for r in rows] == ["xor-a", "xor-b", "xor-c"]  # by date
    a, b, c = rows
    assert (a["status"], a["epochs"], a["best_epoch"], a["best_val_loss"], a["test_acc"]) == ("completed", 3, 2, 0.4, 0.91)
    assert (b["status"], b["test_acc"], b["best_epoch"]) == ("incomplete", None, 4)
    assert c["status"] == "running" and a["recipe"] == "xor" and a["date"] == "2025-03-03 10:00"
    table = format_runs_table(rows)
    lines = table.splitlines()
    assert lines[0].split() == ["RUN", "RECIPE", "DATE", "EPOCHS", "BEST", "VALIDATION", "TEST", "HEALTH", "STATUS"]
    assert "acc 80.00% (epoch 2)" in lines[1] and "acc 91.00%" in lines[1] and lines[2].endswith("incomplete")
    assert len({line.index("xor ") for line in lines[1:]}) == 1  # aligned columns


def test_list_runs_of_a_missing_root_is_empty_and_a_missing_run_is_a_clear_error(tmp_path):
    assert list_runs(tmp_path / "nothing") == []
    assert format_runs_table([]) == "No runs found."
    with pytest.raises(tw.ConfigError, match="no run directory at .*nothing"):
        format_compare_table([tmp_path / "nothing"])


def test_compare_runs_page_and_table(tmp_path):
    a = fake_run(tmp_path / "xor-a", 0.05, [0.6, 0.4, 0.5])
    b = fake_run(tmp_path / "xor-b", 0.5, [0.7, 0.6, 0.55, 0.5])
    out = compare_runs([a, b], tmp_path / "compare" / "index.html")
    page = out.read_text()
    assert page.count("<svg") == 1 and "xor-a" in page and "xor-b" in page
    # one legend for the runs (colour), one for the split (line style), so the two never look alike
    assert "train (dashed)" in page and "validation (solid)" in page
    ticks = re.findall(r"<text[^>]*>([^<]*)</text>", page)  # the plots' texts (svg.fonttype none)
    assert "1" in ticks and "4" in ticks and not [t for t in ticks if t in ("1.5", "2.5", "3.5")]  # whole epochs
    assert "<script" not in page and "<link" not in page and 'href="http' not in page
    assert "Config differences" in page and "<td>lr</td>" in page and "<td>batch_size</td>" not in page
    assert "run_dir" not in page.split("Config differences")[1]  # differs by construction: not shown
    text = format_compare_table([a, b])
    assert text.startswith("Results\n")
    lr_line = next(line for line in text.splitlines() if line.startswith("lr "))
    assert lr_line.split() == ["lr", "0.05", "0.5"]
    assert "acc 80.00% (epoch 2)" in text and "acc 75.00% (epoch 4)" in text


def test_list_and_compare_real_runs(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 4, generator=g)
    y = (x[:, 0] > 0).long()
    dirs = []
    for lr in (0.01, 0.1):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        run_dir = tmp_path / "runs" / f"toy-lr{lr}"
        trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=lr), nn.CrossEntropyLoss(),
                             run_dir=run_dir, seed=0)
        trainer.fit(tw.InMemoryLoader(x[:80], y[:80], batch_size=20, seed=0),
                    tw.InMemoryLoader(x[80:], y[80:], batch_size=20, shuffle=False), epochs=2)
        (run_dir / "config.yaml").write_text(yaml.safe_dump({"recipe": "toy", "lr": lr}))
        dirs.append(run_dir)
    rows = list_runs(tmp_path / "runs")
    assert [(r["name"], r["recipe"], r["epochs"]) for r in rows] == [("toy-lr0.01", "toy", 2), ("toy-lr0.1", "toy", 2)]
    assert all(r["best_val_acc"] is not None for r in rows)
    page = compare_runs(dirs, tmp_path / "compare.html").read_text()
    assert "toy-lr0.01" in page and "validation (solid)" in page and "<svg" in page
    assert "0.01" in format_compare_table(dirs)


def test_runs_list_shows_each_runs_worst_health_severity(tmp_path):
    """From summary.json's "health" findings when written, else from the verdict on metrics.jsonl."""
    from trainwell.verdict import diagnose, read_records, worst_severity

    summarised = fake_run(tmp_path / "xor-a", 0.05, [0.6, 0.4, 0.3])
    summary = json.loads((summarised / "summary.json").read_text())
    finding = {"code": "c", "title": "t", "evidence": "e", "suggestion": "s"}
    summary["health"] = [{**finding, "severity": "warning"}, {**finding, "severity": "problem"}]
    (summarised / "summary.json").write_text(json.dumps(summary))
    unsummarised = [fake_run(tmp_path / "xor-b", 0.05, [0.6, 0.4, 0.3, 0.25], summary=False),
                    fake_run(tmp_path / "xor-c", 0.05, [0.6, 0.4, 0.3, 0.5, 0.7], summary=False)]
    rows = {r["name"]: r for r in list_runs(tmp_path)}
    assert rows["xor-a"]["health"] == "problem"  # summary.json's findings win over the records
    for path in unsummarised:
        expected = worst_severity(diagnose(read_records(path), yaml.safe_load((path / "config.yaml").read_text())))
        assert rows[path.name]["health"] == expected
    assert rows["xor-c"]["health"] != "ok"  # validation loss rising since epoch 3
    lines = format_runs_table(list(rows.values())).splitlines()
    column = lines[0].index("HEALTH")
    assert [line[column:].split()[0] for line in lines[1:]] == [rows[n]["health"] for n in ("xor-a", "xor-b", "xor-c")]


def test_throughput_is_all_samples_over_all_time_not_a_mean_of_epoch_rates(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    records = [{"kind": "epoch", "epoch": 1, "samples_per_sec": 1000.0, "epoch_time": 1.0, "train_loss": 1.0},
               {"kind": "epoch", "epoch": 2, "samples_per_sec": 100.0, "epoch_time": 9.0, "train_loss": 0.9}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    from trainwell.runs import load_run

    assert load_run(run_dir).throughput() == pytest.approx(190.0)  # 1,900 samples in 10 s (not 550)
