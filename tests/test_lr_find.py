"""The LR range test: it leaves the trainer bitwise as it was (also when the sweep raises), its
curve is reproducible, its suggestion sensible, and `trainwell lr-find` writes the plot and prints
the suggestion; bad options are one line and exit 2."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainwell as tw
from trainwell.lr_finder import STEEPEST, smooth, suggest


def blobs(n=256, seed=0):
    """Four Gaussian blobs in 2-D: a small MLP learns them within a few dozen steps at a good lr."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    centres = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]])
    return centres[y] + 0.8 * torch.randn(n, 2, generator=g), y


class Flaky(nn.Module):
    """An MLP (with dropout, so the RNG matters) whose forward raises on the ``fail_at``-th call once armed."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 4))
        self.calls, self.fail_at = 0, None

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("injected failure mid-sweep")
        return self.net(x)


def make_trainer(seed=0, **options):
    model = Flaky(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return tw.Trainer(model, optimizer, nn.CrossEntropyLoss(), options.pop("scheduler", "cosine"),
                      device="cpu", seed=seed, **options)


def loader(batch_size=32):
    return tw.InMemoryLoader(*blobs(), batch_size=batch_size, seed=0)


def assert_same_training(a, b):
    assert a.model.state_dict().keys() == b.model.state_dict().keys()
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key
    state_a, state_b = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert state_a["param_groups"] == state_b["param_groups"]
    for index, entry in state_a["state"].items():
        for name, value in entry.items():
            assert torch.equal(value, state_b["state"][index][name]), (index, name)
    timing = ("samples_per_sec", "epoch_time")  # wall-clock, never equal
    assert {k: v for k, v in a.history.items() if k not in timing} == \
        {k: v for k, v in b.history.items() if k not in timing}
    assert a.history["train_loss"] and a.history["eval_loss"] == b.history["eval_loss"]
    assert (a.epoch, a.step, a.position) == (b.epoch, b.step, b.position)
    assert a.lr_schedule.state_dict() == b.lr_schedule.state_dict()
    assert torch.equal(a._rng_after, b._rng_after)  # the global RNG ends in the same state


def fit_twice(trainer, data, val, **fit):
    trainer.fit(data, val, epochs=2, **fit)
    trainer._rng_after = torch.get_rng_state()
    return trainer


@pytest.mark.parametrize("kind", ["in-memory", "dataloader"])
def test_lr_find_then_fit_is_bitwise_the_same_as_fit_alone(kind):
    x, y = blobs()

    def data():
        if kind == "in-memory":
            return loader()
        return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)

    val = tw.InMemoryLoader(*blobs(64, seed=1), batch_size=64, shuffle=False)
    alone = fit_twice(make_trainer(), data(), val)
    with_finder = make_trainer()
    train = data()
    result = tw.lr_find(with_finder, train, num_steps=30)
    assert len(result.lrs) == len(result.losses) == len(result.raw_losses) > 0
    assert with_finder.step == 0 and with_finder.model.calls > 0
    fit_twice(with_finder, train, val)
    assert_same_training(alone, with_finder)


def test_an_exception_mid_sweep_propagates_and_leaves_the_trainer_as_it_was():
    val = tw.InMemoryLoader(*blobs(64, seed=1), batch_size=64, shuffle=False)
    alone = fit_twice(make_trainer(), loader(), val)
    trainer = make_trainer()
    trainer.model.fail_at = 5
    events, loggers = trainer.events, list(trainer._loggers)
    with pytest.raises(RuntimeError, match="injected failure"):
        tw.lr_find(trainer, loader(), num_steps=30)
    trainer.model.fail_at = None
    assert trainer.step == 0 and trainer.lr_schedule is None
    assert trainer.events is events and trainer._loggers == loggers
    assert all(p.grad is None for p in trainer.model.parameters())
    fit_twice(trainer, loader(), val)
    assert_same_training(alone, trainer)


def test_at_step_above_zero_with_accumulation_the_sweep_takes_every_step_and_training_goes_on_unchanged():
    alone = make_trainer(scheduler=None)  # one trainer after the other: they share the global RNG
    alone.fit(loader(), epochs=1, accumulation_steps=2)
    alone.fit(loader(), epochs=3, accumulation_steps=2)
    alone._rng_after = torch.get_rng_state()
    trainer = make_trainer(scheduler=None)
    trainer.fit(loader(), epochs=1, accumulation_steps=2)
    assert trainer.step == 4
    result = tw.lr_find(trainer, loader(), min_lr=1e-6, max_lr=1e-3, num_steps=12, accumulation_steps=2)
    assert result.stopped_early is None and len(result.lrs) == 12  # 12 steps: 3 epochs of 4 windows, cycled
    assert result.lrs[0] == pytest.approx(1e-6) and result.lrs[-1] == pytest.approx(1e-3)
    assert trainer.step == 4
    history = trainer.history
    assert trainer.fit(loader(), epochs=3, accumulation_steps=2) is history  # the same object, kept
    trainer._rng_after = torch.get_rng_state()
    assert_same_training(alone, trainer)


def test_callbacks_and_loggers_do_not_fire_and_one_record_is_logged():
    seen = []

    class Spy(tw.Callback):
        def on_step_end(self, trainer, **info):
            seen.append("step_end")

        def on_before_step(self, trainer, **info):
            seen.append("before_step")

        def log(self, record, step):
            seen.append(record["kind"])

    trainer = make_trainer(callbacks=[Spy()])
    result = tw.lr_find(trainer, loader(), num_steps=10)
    assert seen == ["lr_find"]
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-2  # the sweep's lr did not stay
    assert len(result.lrs) <= 10


def test_two_calls_give_identical_curves():
    trainer = make_trainer()
    first = tw.lr_find(trainer, loader(), num_steps=40)
    second = tw.lr_find(trainer, loader(), num_steps=40)
    assert first.lrs == second.lrs and first.raw_losses == second.raw_losses and first.losses == second.losses
    assert first.suggestion == second.suggestion


def test_adam_on_a_small_mlp_suggests_a_sensible_rate_and_plots_it(tmp_path):
    trainer = make_trainer()
    result = tw.lr_find(trainer, loader(16), num_steps=100)
    assert result.reason == STEEPEST
    assert 1e-4 <= result.suggestion <= 0.3, result.suggestion
    assert result.suggestion in result.lrs
    assert result.stopped_early and "passed 4x its best" in result.stopped_early  # 10.0 diverges
    path = result.plot(tmp_path / "lr_find.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_smoothing_is_bias_corrected_and_a_flat_curve_gets_no_suggestion():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0
    lrs = [1e-7 * 10 ** (i / 10) for i in range(50)]
    suggestion, reason = suggest(lrs, [1.0 + 0.001 * math.sin(i) for i in range(50)])
    assert suggestion is None and reason.startswith("no clear valley")
    falling = [2.0 - math.tanh(i - 25) for i in range(50)]  # steepest at i = 25
    assert suggest(lrs, falling) == (lrs[25], STEEPEST)
    assert suggest(lrs[:4], falling[:4])[0] is None


@pytest.mark.parametrize("options, words", [
    ({"min_lr": 1.0, "max_lr": 0.1}, ["min_lr", "below", "max_lr"]),
    ({"num_steps": 1}, ["num_steps", "at least 2"]),
    ({"max_lr": math.inf}, ["max_lr", "finite"]),
    ({"min_lr": 0.0}, ["min_lr", "above 0"]),
])
def test_bad_options_are_a_config_error(options, words):
    with pytest.raises(tw.ConfigError) as error:
        tw.lr_find(make_trainer(), loader(), **options)
    assert all(word in str(error.value) for word in words), str(error.value)


# --------------------------------------------------------------------------- the command line


def trainwell(*args, cwd):
    return subprocess.run([sys.executable, "-m", "trainwell", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_cli_writes_the_plot_and_the_record_and_prints_the_suggestion(tmp_path):
    result = trainwell("lr-find", "xor", "--run-dir", "finder", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "suggested" in line.lower())
    assert "learning rate" in line
    run = tmp_path / "finder"
    assert (run / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((run / "lr_find.json").read_text())
    assert record["recipe"] == "xor" and len(record["lrs"]) == record["steps_taken"] <= 100
    assert sorted(p.name for p in run.iterdir()) == ["lr_find.json", "lr_find.png"]
    if record["suggestion"] is not None:
        assert f"{record['suggestion']:.2e}" in line


@pytest.mark.parametrize("args, words", [
    (["--min-lr", "1", "--max-lr", "0.1"], ["--min-lr", "--max-lr"]),
    (["--num-steps", "1"], ["--num-steps", "2"]),
    (["--max-lr", "inf"], ["--max-lr", "finite"]),
    (["--min-lr", "abc"], ["--min-lr", "abc"]),
    (["--batch-size", "0"], ["--batch-size"]),
])
def test_cli_bad_options_exit_2_with_one_line(tmp_path, args, words):
    result = trainwell("lr-find", "xor", "--run-dir", "finder", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert not (tmp_path / "finder").exists()


def test_bf16_sweep_leaves_training_unchanged():
    def trainer():
        return make_trainer(precision="bf16")

    alone = fit_twice(trainer(), loader(), None)
    with_finder = trainer()
    result = tw.lr_find(with_finder, loader(), num_steps=20)
    assert all(math.isfinite(v) for v in result.raw_losses)
    fit_twice(with_finder, loader(), None)
    assert_same_training(alone, with_finder)


def test_lr_find_is_refused_under_distributed_training():
    trainer = make_trainer()
    trainer.group = object()  # what a torchrun process's trainer holds
    with pytest.raises(tw.ConfigError, match="single process"):
        tw.lr_find(trainer, loader())


# --------------------------------------------------------------------------- --lr suggested


def test_lr_suggested_is_a_valid_config_value_and_command_line_word():
    from trainwell.config import cli_type, validate

    assert validate({"recipe": "xor", "lr": "suggested"}).lr == "suggested"
    assert cli_type("lr")("suggested") == "suggested" and cli_type("lr")("0.01") == 0.01
    with pytest.raises(Exception, match="a number or 'suggested'"):
        cli_type("lr")("fast")
    with pytest.raises(tw.ConfigError, match="--lr"):
        validate({"recipe": "xor", "lr": "fast"}, {"lr": "--lr"})


def test_resolve_suggested_lr_returns_the_printed_rate_and_writes_the_plot(tmp_path, capsys):
    from trainwell.cli.tune import resolve_suggested_lr
    from trainwell.config import validate

    config = validate({"recipe": "xor", "lr": "suggested", "epochs": 1})
    lr = resolve_suggested_lr(config, torch.device("cpu"), tmp_path / "run")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == f"Suggested learning rate: {lr:.2e} (steepest descent of the smoothed loss); training with it"
    assert float(f"{lr:.2e}") == lr and 1e-4 < lr < 10
    assert json.loads((tmp_path / "run" / "lr_find.json").read_text())["suggestion"] == pytest.approx(lr, rel=1e-2)
    assert (tmp_path / "run" / "lr_find.png").is_file()


def test_resolve_suggested_lr_without_a_valley_is_a_config_error(tmp_path, monkeypatch):
    from trainwell.cli import tune
    from trainwell.config import validate
    from trainwell.lr_finder import LRFindResult

    flat = LRFindResult([1e-3, 1e-2], [1.0, 1.0], [1.0, 1.0], None, "no clear valley: the smoothed loss fell only 0.0%")
    monkeypatch.setattr(tune, "find", lambda *args, **kwargs: flat)
    with pytest.raises(tw.ConfigError, match="suggests nothing .*give --lr a number"):
        tune.resolve_suggested_lr(validate({"recipe": "xor", "lr": "suggested"}), torch.device("cpu"), tmp_path)


TRAIN_SOURCE = (Path(__file__).parent.parent / "src" / "trainwell" / "cli" / "train.py").read_text()


@pytest.mark.skipif("resolve_suggested_lr" not in TRAIN_SOURCE, reason="train --lr suggested not wired in yet")
def test_train_with_lr_suggested_trains_with_the_suggestion(tmp_path):
    result = trainwell("train", "xor", "--lr", "suggested", "--epochs", 2, "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("Suggested learning rate"))
    import yaml

    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert f"{saved['lr']:.2e}" in line
    assert (tmp_path / "run" / "lr_find.png").is_file()
