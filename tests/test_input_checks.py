"""Input checks that catch the silent bugs (issue 23, items 4, 6-8, 10, 12): shape mismatches named
right, losses that would broadcast, NaN in targets, schedules that no longer fit the run,
honest throughput, and library run directories that are complete."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import trainwell as tw


def fit(model, x, y, loss_fn, loader=None, epochs=1, **options):
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), loss_fn, device="cpu", seed=0, **options)
    trainer.fit(loader or tw.InMemoryLoader(x, y, batch_size=8), epochs=epochs)
    return trainer


def test_a_shape_mismatch_is_explained_not_hidden_by_the_memory_estimate():
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    with pytest.raises(tw.DataError, match=r"the model fails on the first batch's inputs of shape \(8, 5\)"):
        fit(nn.Linear(4, 3), x, y, nn.CrossEntropyLoss())


@pytest.mark.parametrize("loss_fn", [nn.MSELoss(), F.mse_loss, nn.L1Loss()], ids=["MSELoss", "mse_loss", "L1Loss"])
@pytest.mark.parametrize("outputs, targets", [(2, (32, 1)), (1, (32,))], ids=["[N,2]-vs-[N,1]", "[N,1]-vs-[N]"])
def test_a_loss_that_would_broadcast_outputs_and_targets_is_a_data_error(loss_fn, outputs, targets):
    x, y = torch.randn(32, 4), torch.randn(*targets)
    with pytest.raises(tw.DataError) as error:
        fit(nn.Linear(4, outputs), x, y, loss_fn)
    message = str(error.value)
    assert f"outputs of shape (8, {outputs})" in message
    assert f"targets of shape {(8, *targets[1:])}" in message and "broadcast" in message


def test_cross_entropy_with_float_or_2d_targets_is_explained():
    x = torch.randn(32, 4)
    with pytest.raises(tw.DataError, match=r"integer class labels: convert the targets with \.long\(\)"):
        fit(nn.Linear(4, 3), x, torch.randint(0, 3, (32,)).float(), nn.CrossEntropyLoss())
    with pytest.raises(tw.DataError, match=r"targets\.squeeze\(-1\).*targets shape \(8, 1\)"):
        fit(nn.Linear(4, 3), x, torch.randint(0, 3, (32, 1)), nn.CrossEntropyLoss())


def _targets_with_nan(row: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    y[row, 0] = float("nan")
    return x, y


def test_nan_in_regression_targets_names_the_data_set_row():
    x, y = _targets_with_nan()
    with pytest.raises(tw.DataError, match=r"the training targets contain NaN or inf \(first in row 40 of the data set"):
        fit(nn.Linear(4, 1), x, y, nn.MSELoss())
    shuffled = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    with pytest.raises(tw.DataError, match=r"first in row 40 of the data set"):
        fit(nn.Linear(4, 1), x, y, nn.MSELoss(), loader=shuffled)


class _Rows(Dataset):
    """A custom Dataset (not in memory as tensors): NaN shows up only when its batch is loaded."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def test_nan_targets_from_a_custom_dataset_stop_the_run_instead_of_backing_off_every_epoch():
    x, y = _targets_with_nan(row=40)
    loader = DataLoader(_Rows(x, y), batch_size=8, shuffle=False)
    with pytest.raises(tw.DataError, match=r"batch 6 of epoch 1: targets contain NaN or inf \(first at index \(0, 0\)\)"):
        fit(nn.Linear(4, 1), x, y, nn.MSELoss(), loader=loader, epochs=3)


def test_extending_a_finished_cosine_run_is_refused_not_trained_at_lr_zero(tmp_path):
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))

    def trainer() -> tw.Trainer:
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        return tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), "warmup-cosine",
                          device="cpu", seed=0, run_dir=tmp_path / "run")

    first = trainer()
    first.fit(tw.InMemoryLoader(x, y, batch_size=16), epochs=2)
    with pytest.raises(tw.ConfigError, match=r"built for 2 epochs \(8 optimizer steps\).*asks for 3 epochs \(12 steps\)"):
        first.fit(tw.InMemoryLoader(x, y, batch_size=16), epochs=3)
    with pytest.raises(tw.ConfigError, match=r"'warmup-cosine' schedule was built for 2 epochs"):
        trainer().fit(tw.InMemoryLoader(x, y, batch_size=16), epochs=3, resume="auto")


def test_throughput_counts_only_the_samples_this_process_trained(tmp_path):
    x, y = torch.randn(160, 4), torch.randint(0, 2, (160,))

    def trainer() -> tw.Trainer:
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        return tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cpu",
                          seed=0, run_dir=tmp_path / "run", checkpoint_every_steps=13)

    first = trainer()
    first.fit(tw.InMemoryLoader(x, y, batch_size=16), epochs=2)
    assert first.samples_trained == 320
    resumed = trainer()
    resumed.fit(tw.InMemoryLoader(x, y, batch_size=16), epochs=2,
                resume=tmp_path / "run" / "checkpoints" / "step-000000013.ckpt")
    assert resumed.resumed_from["step"] == 13 and resumed.resumed_from["batch"] == 3
    assert resumed.samples_trained == 7 * 16  # epoch 2's last 7 batches; its first 3 were trained before
    rate = resumed.history["samples_per_sec"][-1]
    assert rate == pytest.approx(7 * 16 / resumed.history["epoch_time"][-1])


def test_a_library_run_directory_is_complete(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), nn.CrossEntropyLoss(), device="cpu",
                         seed=0, run_dir=tmp_path / "run")
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    trainer.fit(tw.InMemoryLoader(x, y, batch_size=16), tw.InMemoryLoader(x, y, batch_size=32), epochs=2)
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["model"] == "Sequential" and config["optimizer"] == "Adam" and config["lr"] == 0.01
    assert config["epochs"] == 2 and config["loss_fn"] == "CrossEntropyLoss"
    assert (tmp_path / "run" / "learning_curves.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["model"] == "Sequential" and summary["status"] == "completed" and summary["steps"] == 8
    assert summary["health"] and all(set(f) == {"code", "severity", "title", "evidence", "suggestion"}
                                     for f in summary["health"])
    assert {f["severity"] for f in summary["health"]} <= {"ok", "warning", "problem"}
    trainer.test(tw.InMemoryLoader(x, y, batch_size=32))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["test_samples"] == 64


def test_a_verbose_resume_says_where_it_picked_up_and_a_quiet_one_does_not_warn(tmp_path, capsys, recwarn):
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))

    def trainer(verbose: bool) -> tw.Trainer:
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        return tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cpu",
                          seed=0, run_dir=tmp_path / "run", checkpoint_every_steps=6, verbose=verbose)

    trainer(False).fit(tw.InMemoryLoader(x, y, batch_size=16), epochs=2)
    capsys.readouterr()
    trainer(True).fit(tw.InMemoryLoader(x, y, batch_size=16), epochs=3, resume="auto")
    out = capsys.readouterr().out
    assert f"trainwell: resumed from step 8 (the start of epoch 3) of {tmp_path / 'run'}" in out
    trainer(False).fit(tw.InMemoryLoader(x, y, batch_size=16), epochs=3, resume="auto")
    assert not [w for w in recwarn if "resumed" in str(w.message)]


def test_an_out_of_memory_in_the_first_batch_loss_is_not_explained_as_a_data_error():
    """It reaches the out-of-memory handling (which halves down to one sample), not the label explanations."""
    def loss_fn(outputs, targets):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    with pytest.raises(tw.TrainingError, match="a single sample does not fit in memory"):
        tw.Trainer(nn.Linear(4, 3), torch.optim.SGD(nn.Linear(4, 3).parameters(), lr=0.1), loss_fn,
                   device="cpu", health=False).evaluate(tw.InMemoryLoader(x, y, batch_size=8))
