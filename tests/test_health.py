"""The health guard: skip, roll back, back off, recover, and stop with a diagnosis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import trainwell as tw
from trainwell import checkpoint
from trainwell.config import TrainConfig
from trainwell.health import HealthGuard
from trainwell.recipes import get_recipe
from trainwell.runtime import seed_everything


class Sabotage(nn.Module):
    """Wraps a model; on chosen training calls it returns NaN or multiplies the output."""

    def __init__(self, inner: nn.Module, nan_at: int = 0, blow_up_at: int = 0):
        super().__init__()
        self.inner, self.nan_at, self.blow_up_at, self.calls = inner, nan_at, blow_up_at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls == self.nan_at:
                return out * float("nan")
            if self.calls == self.blow_up_at:
                return out * 1e4
        return out


def tiny(nan_at: int = 0, blow_up_at: int = 0, **options) -> tuple[tw.Trainer, tw.InMemoryLoader]:
    torch.manual_seed(0)
    x = torch.randn(512, 8)
    y = (x[:, 0] > 0).long()
    model = Sabotage(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)), nan_at, blow_up_at)
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                         device="cpu", seed=0, **options)
    return trainer, tw.InMemoryLoader(x, y, batch_size=16)


def guard(trainer: tw.Trainer) -> HealthGuard:
    return next(cb for cb in trainer.callbacks if isinstance(cb, HealthGuard))


def test_a_transient_nan_is_skipped_and_the_lr_recovers(tmp_path: Path, capsys) -> None:
    trainer, data = tiny(nan_at=40, run_dir=tmp_path / "run", verbose=True)
    trainer.fit(data, epochs=6)
    interventions = guard(trainer).interventions
    assert [i["cause"] for i in interventions] == ["non-finite loss (nan)"]
    assert "skipped the step" in interventions[0]["action"]
    assert "backed the learning rate off to 0.05" in interventions[0]["action"]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1), "the back-off eases out"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["cause"] for r in records if r["kind"] == "intervention"] == ["non-finite loss (nan)"]
    assert "non-finite loss (nan) -> skipped the step" in capsys.readouterr().out


def test_a_loss_spike_rolls_back_to_the_last_good_state() -> None:
    trainer, data = tiny(blow_up_at=60)
    trainer.fit(data, epochs=2)
    (intervention,) = guard(trainer).interventions
    assert intervention["cause"].startswith("loss spike")
    assert "rolled back to step" in intervention["action"]


def test_damaged_weights_are_rolled_back() -> None:
    class Poison:
        def on_step_end(self, trainer, **_):
            if trainer.step == 20:
                with torch.no_grad():
                    next(trainer.model.parameters()).fill_(float("nan"))

    trainer, data = tiny(callbacks=[Poison()])
    trainer.fit(data, epochs=2)
    (intervention,) = guard(trainer).interventions
    assert "rolled back to step 0" in intervention["action"]  # the weights themselves were damaged
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_repeated_trouble_stops_with_a_diagnosis() -> None:
    trainer, data = tiny(health=HealthGuard(max_interventions=2))
    trainer.model.nan_at = 5
    original = trainer.model.forward
    trainer.model.forward = lambda x: original(x) * float("nan")  # every batch is broken
    with pytest.raises(tw.TrainingError, match=r"3 interventions.*non-finite loss.*learning rate"):
        trainer.fit(data, epochs=1)


def test_guard_state_is_checkpointed(tmp_path: Path) -> None:
    trainer, data = tiny(nan_at=10)
    trainer.fit(data, epochs=1)
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    fresh, _ = tiny()
    fresh.load_checkpoint(tmp_path / "c.ckpt")
    assert guard(fresh).interventions == guard(trainer).interventions
    assert list(guard(fresh).losses) == list(guard(trainer).losses)


class SpikeAtStep(nn.Module):
    """Multiplies the output by 1e4 once, on the training forward of optimizer step ``at``
    (counted from the trainer's step, so a resumed run spikes at the same step)."""

    def __init__(self, at: int):
        super().__init__()
        self.inner, self.at, self.step = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)), at, 0
        self.spiked = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.training and self.step + 1 == self.at and not self.spiked:
            self.spiked = True
            return out * 1e4
        return out


class TellStep:
    def on_epoch_start(self, trainer, **_):
        trainer.model.step = trainer.step

    def on_step_end(self, trainer, **_):
        trainer.model.step = trainer.step


def spiky_run(run_dir: Path, epochs: int, resume: str | None = None) -> tw.Trainer:
    torch.manual_seed(0)
    x = torch.randn(512, 8)
    y = (x[:, 0] > 0).long()
    model = SpikeAtStep(at=40)
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), nn.CrossEntropyLoss(),
                         device="cpu", seed=0, run_dir=run_dir, callbacks=[TellStep()])
    trainer.fit(tw.InMemoryLoader(x, y, batch_size=16), epochs=epochs, resume=resume)
    return trainer


def test_a_rollback_after_resume_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    """The rollback snapshot is not stored in checkpoints but rebuilt from the restored state."""
    whole = spiky_run(tmp_path / "whole", epochs=2)
    (intervention,) = guard(whole).interventions
    assert intervention["step"] == 39 and "rolled back to step 32" in intervention["action"]
    spiky_run(tmp_path / "split", epochs=1)  # 32 steps, checkpoint at the epoch's end
    saved = checkpoint.load(tmp_path / "split" / "checkpoints" / "step-000000032.ckpt")
    assert saved["callbacks"]["HealthGuard"]["snapshot"] is None, "the snapshot is the checkpoint itself"
    resumed = spiky_run(tmp_path / "split", epochs=2, resume="auto")
    assert guard(resumed).interventions == guard(whole).interventions
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_a_second_rollback_finds_the_snapshot_unchanged() -> None:
    """After a rollback the optimizer trains on; the snapshot it came from must not change with it."""
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(8, 2)
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), nn.CrossEntropyLoss(),
                         device="cpu", seed=0)
    data = tw.InMemoryLoader(x, y, batch_size=16)
    trainer.fit(data, epochs=1)
    healthguard = guard(trainer)
    healthguard._take_snapshot(trainer)
    saved = {k: v.clone() for k, v in healthguard.snapshot["optimizer"]["state"][0].items()}
    healthguard._intervene(trainer, "loss spike (test)", spike=True)
    trainer.fit(data, epochs=2)  # 16 more steps, updating the optimizer state in place
    healthguard._intervene(trainer, "loss spike (test)", spike=True)
    restored = trainer.optimizer.state_dict()["state"][0]
    for key, value in saved.items():
        assert torch.equal(restored[key], value), key


def test_a_nearly_memorised_dataset_is_not_mistaken_for_spikes() -> None:
    """6,400 MNIST images seen 12 times: the loss falls to ~0.005 and single batches wobble
    to 15-25x that. Before the guard asked for a rise of half the starting loss level,
    it rolled back at step 1049 and again every ~100 steps."""
    from trainwell.datasets import load_mnist
    from trainwell.recipes.mnist import mlp, normalize

    arrays = load_mnist()
    x = normalize(torch.from_numpy(arrays.train_images[:6400]))
    y = torch.from_numpy(arrays.train_labels[:6400]).long()
    torch.manual_seed(0)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-3), nn.functional.cross_entropy,
                         device="cpu", seed=0)
    trainer.fit(tw.InMemoryLoader(x, y, batch_size=64), epochs=12)
    assert trainer.history["train_loss"][-1] < 0.01
    assert guard(trainer).interventions == []


def test_late_hard_examples_are_not_spikes_but_a_jump_back_to_the_starting_level_is() -> None:
    """The pattern of 54k MNIST images after 20 epochs: median 0.005, single batches at 0.2-0.4."""
    healthguard = HealthGuard()
    for loss in [2.3] * 10 + [0.005, 0.004, 0.006] * 30:
        assert healthguard._diagnose(loss, 1.0) is None
        healthguard.losses.append(loss)
    assert healthguard._diagnose(0.35, 1.0) is None, "one confidently wrong sample in a batch of 64"
    assert healthguard._diagnose(1.4, 1.0).startswith("loss spike")


def test_health_guard_can_be_switched_off() -> None:
    trainer, data = tiny(nan_at=5, health=False)
    trainer.fit(data, epochs=1)
    assert not any(isinstance(cb, HealthGuard) for cb in trainer.callbacks)
    assert not all(torch.isfinite(p).all() for p in trainer.model.parameters())


@pytest.mark.slow
def test_transient_nan_on_mnist_ends_within_5_percent_of_the_clean_run() -> None:
    def run(nan_at: int) -> tuple[float, tw.Trainer]:
        seed_everything(0)
        parts = get_recipe("mnist").build(TrainConfig(num_samples=12000, epochs=2), torch.device("cpu"))
        trainer = tw.Trainer(Sabotage(parts.model, nan_at), parts.optimizer, parts.loss_fn, device="cpu", seed=0)
        trainer.fit(parts.train, parts.val, epochs=2)
        return trainer.history["eval_loss"][-1], trainer

    clean, _ = run(0)
    healed, trainer = run(100)
    assert len(guard(trainer).interventions) == 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert abs(healed - clean) / clean < 0.05


def test_learning_rate_far_too_high_stops_with_exit_1_naming_the_lr(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trainwell", "train", "mnist", "--lr", "10", "--num-samples", "2000",
         "--epochs", "1", "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "learning rate is probably too high" in result.stderr
    assert "from 10 to" in result.stderr
    assert "Traceback" not in result.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    interventions = [r for r in records if r["kind"] == "intervention"]
    assert 1 < len(interventions) <= 6 and interventions[-1]["step"] < 20
    assert records[-1]["kind"] == "end" and records[-1]["status"].startswith("failed")


def test_huge_but_finite_weights_are_not_taken_for_damaged_ones() -> None:
    """A norm of weights around 1e20 overflows float32; the weights themselves are finite."""
    from trainwell.health import _all_finite

    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.fill_(1e30)
    assert _all_finite(model)
    model.bias.data[0] = float("nan")
    assert not _all_finite(model)


@pytest.mark.parametrize("epoch, position, grows, cleared", [
    (1, 0, True, True),     # the pool widened at this epoch's start: harder samples are the new normal
    (1, 5, True, False),    # a resumed epoch already learned its level: resume stays exact
    (1, 0, False, False),   # the same pool: the level stands
    (0, 0, True, False),    # the first epoch has no earlier pool
])
def test_a_widening_curriculum_pool_resets_the_spike_level(epoch, position, grows, cleared):
    from types import SimpleNamespace

    import trainwell as tw

    model = nn.Linear(4, 2)
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), 0.1), nn.CrossEntropyLoss(), device="cpu")
    [guard] = [cb for cb in trainer.callbacks if isinstance(cb, tw.HealthGuard)]
    guard.on_fit_start(trainer, train_data=SimpleNamespace(pool_size=lambda e: 100 * (e + 1) if grows else 100))
    guard.losses.extend([0.001] * 50)
    guard.level = (0.001, 0.008)
    trainer.position = position
    guard.on_epoch_start(trainer, epoch=epoch)
    assert (len(guard.losses) == 0 and guard.level is None) == cleared
