"""The loggers: metrics.jsonl, epochs.csv and TensorBoard events, read back by their own readers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import trainwell as tw


def run(run_dir: Path, epochs: int = 3) -> tw.Trainer:
    torch.manual_seed(0)
    x, y = torch.randn(256, 6), torch.randint(0, 3, (256,))
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-2), nn.CrossEntropyLoss(),
                         device="cpu", seed=0, run_dir=run_dir, log_every_steps=5, grad_flow_every=10)
    trainer.fit(tw.InMemoryLoader(x, y, batch_size=16), tw.InMemoryLoader(x, y, batch_size=64), epochs=epochs)
    return trainer


def test_tensorboard_events_read_back_with_tensorboards_reader(tmp_path: Path) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    trainer = run(tmp_path / "run")
    events = event_accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"epoch/train_loss", "epoch/eval_loss", "epoch/eval_acc", "step/loss"} <= tags
    assert any(tag.startswith("layers/grad_norm/") for tag in tags)
    train_loss = events.Scalars("epoch/train_loss")
    assert [e.step for e in train_loss] == [16, 32, 48]
    assert [e.value for e in train_loss] == pytest.approx(trainer.history["train_loss"], rel=1e-6)


def test_jsonl_and_csv_hold_every_epoch(tmp_path: Path) -> None:
    trainer = run(tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 3
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(5, 49, 5))
    assert any(r["kind"] == "layers" and "0.weight" in r["layers"] for r in records)
    with open(tmp_path / "run" / "epochs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["eval_loss"]) for r in rows] == pytest.approx(trainer.history["eval_loss"])
