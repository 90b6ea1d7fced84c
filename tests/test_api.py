"""The public API's seed 003 / 001 / 004 primitives: CosineSchedule, clip_grad_norm,
EarlyStopping, train_val_test_split, InMemoryLoader, and learning-rate schedules as the
Trainer drives them (by name, seed-style ``get_lr`` objects, torch schedulers)."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Subset, TensorDataset

import trainwell as tw


# --------------------------------------------------------------------------- CosineSchedule


@pytest.mark.parametrize("epoch, expected", [(0, 0.1), (50, 0.055), (100, 0.01), (150, 0.01), (1000, 0.01)])
def test_cosine_schedule_seed_values(epoch, expected):
    schedule = tw.CosineSchedule(max_lr=0.1, min_lr=0.01, total_epochs=100)
    assert schedule.get_lr(epoch) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("epoch", [1, 10, 25, 33, 75, 99])
def test_cosine_schedule_formula(epoch):
    schedule = tw.CosineSchedule(max_lr=0.1, min_lr=0.01, total_epochs=100)
    expected = 0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * epoch / 100)) / 2
    lr = schedule.get_lr(epoch)
    assert isinstance(lr, float)
    assert lr == pytest.approx(expected, rel=1e-12)


def test_cosine_schedule_decreases_monotonically():
    schedule = tw.CosineSchedule(max_lr=1.0, min_lr=0.0, total_epochs=20)
    lrs = [schedule.get_lr(e) for e in range(25)]
    assert all(a > b for a, b in zip(lrs[:20], lrs[1:21]))
    assert lrs[20:] == [0.0] * 5


# --------------------------------------------------------------------------- clip_grad_norm

SEED_NORM = math.sqrt(100**2 + 200**2 + 50**2)  # 229.128...


def _params_with_grads(values, shapes="three"):
    if shapes == "one":
        p = nn.Parameter(torch.zeros(3))
        p.grad = torch.tensor(values, dtype=torch.float32)
        return [p]
    params = []
    for v in values:
        p = nn.Parameter(torch.zeros(1))
        p.grad = torch.tensor([v], dtype=torch.float32)
        params.append(p)
    return params


@pytest.mark.parametrize("shapes", ["one", "three"])
def test_clip_grad_norm_seed_example(shapes):
    params = _params_with_grads([100.0, 200.0, 50.0], shapes)
    norm = tw.clip_grad_norm(params, max_norm=1.0)
    assert isinstance(norm, float)
    assert norm == pytest.approx(229.128, abs=1e-3)
    assert norm == pytest.approx(SEED_NORM, rel=1e-6)
    grads = torch.cat([p.grad.reshape(-1) for p in params])
    torch.testing.assert_close(grads, torch.tensor([0.4364, 0.8729, 0.2182]), atol=1e-4, rtol=0)
    assert float(grads.norm()) == pytest.approx(1.0, abs=1e-5)


def test_clip_grad_norm_below_max_leaves_grads_bitwise_unchanged():
    params = _params_with_grads([0.3, -0.4, 0.1], "three")
    before = [p.grad.clone() for p in params]
    norm = tw.clip_grad_norm(params, max_norm=1.0)
    assert norm == pytest.approx(math.sqrt(0.09 + 0.16 + 0.01), rel=1e-6)
    for p, b in zip(params, before):
        assert torch.equal(p.grad, b)


def test_clip_grad_norm_accepts_a_generator_and_skips_params_without_grad():
    model = nn.Sequential(nn.Linear(3, 1, bias=False), nn.Linear(1, 1))
    model[0].weight.grad = torch.tensor([[100.0, 200.0, 50.0]])
    # model[1] has no gradients at all (.grad is None): skipped, not an error
    assert model[1].weight.grad is None
    norm = tw.clip_grad_norm(model.parameters(), max_norm=1.0)
    assert norm == pytest.approx(SEED_NORM, rel=1e-6)
    torch.testing.assert_close(model[0].weight.grad, torch.tensor([[0.4364, 0.8729, 0.2182]]), atol=1e-4, rtol=0)
    assert model[1].weight.grad is None and model[1].bias.grad is None


def test_clip_grad_norm_matches_torch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    model(torch.randn(16, 5)).pow(2).sum().backward()
    twin = [p.grad.clone() for p in model.parameters()]
    ours = tw.clip_grad_norm(model.parameters(), max_norm=0.5)
    params = [nn.Parameter(torch.zeros_like(g)) for g in twin]
    for p, g in zip(params, twin):
        p.grad = g
    theirs = torch.nn.utils.clip_grad_norm_(params, 0.5)
    assert ours == pytest.approx(float(theirs), rel=1e-6)
    for p, q in zip(model.parameters(), params):
        torch.testing.assert_close(p.grad, q.grad)


# --------------------------------------------------------------------------- EarlyStopping


def test_early_stopping_callable_seed_pattern():
    es = tw.EarlyStopping(patience=3)
    results = [es(v) for v in (1.0, 0.9, 0.95, 0.95, 0.95)]
    assert results == [False, False, False, False, True]


def test_early_stopping_improvement_resets_the_counter():
    es = tw.EarlyStopping(patience=2)
    assert [es(v) for v in (1.0, 1.1, 0.5, 0.6, 0.7)] == [False, False, False, False, True]


def test_early_stopping_min_delta():
    es = tw.EarlyStopping(patience=2, min_delta=0.1)
    # 0.95 and 0.91 are better than 1.0, but not by more than 0.1: no improvement
    assert [es(v) for v in (1.0, 0.95, 0.91)] == [False, False, True]
    es = tw.EarlyStopping(patience=2, min_delta=0.1)
    assert [es(v) for v in (1.0, 0.85, 0.7, 0.55)] == [False, False, False, False]


def test_early_stopping_mode_max():
    es = tw.EarlyStopping(patience=2, mode="max")
    assert [es(v) for v in (0.5, 0.6, 0.7, 0.65, 0.7)] == [False, False, False, False, True]


@pytest.mark.parametrize("kwargs", [{"patience": 0}, {"patience": -1}, {"mode": "x"}, {"min_delta": -0.1}])
def test_early_stopping_rejects_invalid_arguments(kwargs):
    with pytest.raises(tw.ConfigError) as info:
        tw.EarlyStopping(**kwargs)
    assert isinstance(info.value, ValueError)
    key = next(iter(kwargs))
    assert key in str(info.value)


class _Recorder:
    """Records the weights and the validation loss at the end of each epoch."""

    def __init__(self):
        self.states, self.eval_losses = [], []

    def on_epoch_end(self, trainer, metrics):
        self.states.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
        self.eval_losses.append(metrics["eval_loss"])


def _overfitting_run(tmp_path, restore_best=True):
    """w starts at 0 and walks towards 2 (train targets 2x); validation wants 1x.

    The validation loss falls for 5 epochs, then rises: patience 3 stops after epoch 8.
    """
    x = torch.linspace(-1, 1, 32).unsqueeze(1)
    train = tw.InMemoryLoader(x, 2 * x, batch_size=32, shuffle=False)
    val = tw.InMemoryLoader(x, x, batch_size=32, shuffle=False)
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    recorder = _Recorder()
    es = tw.EarlyStopping(patience=3, restore_best=restore_best)
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.2), nn.MSELoss(),
                         callbacks=[recorder, es], run_dir=tmp_path / "run", device="cpu")
    history = trainer.fit(train, val, epochs=50)
    return trainer, history, recorder


def test_early_stopping_in_fit_stops_and_restores_best_weights(tmp_path):
    trainer, history, recorder = _overfitting_run(tmp_path)
    best = int(np.argmin(recorder.eval_losses))
    assert trainer.stop_reason is not None and "early stopping" in trainer.stop_reason
    assert trainer.epoch == len(history["train_loss"]) == best + 1 + 3 < 50
    assert len(history["eval_loss"]) == trainer.epoch
    # the final weights are not the best ones, and restore_best put the best ones back
    assert not torch.equal(recorder.states[-1]["weight"], recorder.states[best]["weight"])
    assert torch.equal(trainer.model.weight.detach(), recorder.states[best]["weight"])
    saved_best = load_file(tmp_path / "run" / "model-best.safetensors")
    assert torch.equal(saved_best["weight"], trainer.model.weight.detach())
    final = load_file(tmp_path / "run" / "model.safetensors")  # the final weights written are the restored ones
    assert torch.equal(final["weight"], trainer.model.weight.detach())


def test_early_stopping_without_restore_keeps_last_weights(tmp_path):
    trainer, history, recorder = _overfitting_run(tmp_path, restore_best=False)
    assert trainer.stop_reason is not None
    assert torch.equal(trainer.model.weight.detach(), recorder.states[-1]["weight"])


# --------------------------------------------------------------------------- train_val_test_split


def test_split_sizes_disjoint_complete_tensors():
    x = torch.arange(1000)
    y = x * 2
    train, val, test = tw.train_val_test_split(x, y, train=0.8, val=0.1, seed=0)
    (xtr, ytr), (xva, yva), (xte, yte) = train, val, test
    assert (len(xtr), len(xva), len(xte)) == (800, 100, 100)
    for xs, ys in (train, val, test):
        assert isinstance(xs, torch.Tensor) and torch.equal(ys, xs * 2)  # rows stay aligned
    everything = torch.cat([xtr, xva, xte])
    assert torch.equal(everything.sort().values, x)  # disjoint and complete
    assert not torch.equal(xtr, x[:800])  # shuffled


def test_split_numpy_and_seed_reproducibility():
    x = np.arange(1000)
    a = tw.train_val_test_split(x, seed=3)
    b = tw.train_val_test_split(x, seed=3)
    c = tw.train_val_test_split(x, seed=4)
    for part in a:
        assert isinstance(part, np.ndarray)  # one array in: arrays out, not tuples
    assert [len(p) for p in a] == [800, 100, 100]
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(a[0], c[0])
    np.testing.assert_array_equal(np.sort(np.concatenate(a)), x)


def test_split_dataset_returns_subsets():
    data = TensorDataset(torch.arange(50).float(), torch.arange(50))
    train, val, test = tw.train_val_test_split(data, seed=0)
    assert all(isinstance(s, Subset) for s in (train, val, test))
    assert (len(train), len(val), len(test)) == (40, 5, 5)
    indices = sorted(list(train.indices) + list(val.indices) + list(test.indices))
    assert indices == list(range(50))


def test_split_stratify_keeps_class_shares():
    labels = torch.tensor([0] * 700 + [1] * 300)
    x = torch.arange(1000)
    (xtr, ytr), (xva, yva), (xte, yte) = tw.train_val_test_split(x, labels, seed=0, stratify=labels)
    assert int(ytr.sum()) == 240 and len(ytr) == 800
    assert int(yva.sum()) == 30 and len(yva) == 100
    assert int(yte.sum()) == 30 and len(yte) == 100
    assert torch.equal(labels[xtr], ytr)


@pytest.mark.parametrize("kwargs", [{"train": 0.0}, {"train": 1.2}, {"val": -0.1},
                                    {"train": 0.8, "val": 0.3}, {"val": 1.0}])
def test_split_rejects_bad_fractions(kwargs):
    with pytest.raises(tw.ConfigError):
        tw.train_val_test_split(torch.arange(100), **kwargs)


# --------------------------------------------------------------------------- InMemoryLoader


def _epoch_order(loader):
    return torch.cat([batch[0] for batch in loader]).tolist()


@pytest.mark.parametrize("n, batch_size, drop_last, expected", [
    (10, 3, False, 4), (10, 3, True, 3), (9, 3, False, 3), (9, 3, True, 3), (2, 5, False, 1), (2, 5, True, 0),
])
def test_loader_batch_count(n, batch_size, drop_last, expected):
    loader = tw.InMemoryLoader(torch.arange(n), batch_size=batch_size, drop_last=drop_last, shuffle=False)
    assert len(loader) == expected
    batches = list(loader)
    assert len(batches) == expected
    sizes = [len(b[0]) for b in batches]
    if drop_last:
        assert all(s == batch_size for s in sizes)
    else:
        assert sum(sizes) == n and all(s == batch_size for s in sizes[:-1])


def test_loader_unshuffled_order_and_alignment():
    x = torch.arange(10)
    loader = tw.InMemoryLoader(x, x * 10, batch_size=4, shuffle=False)
    batches = list(loader)
    assert [b[0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(torch.equal(b[1], b[0] * 10) for b in batches)


def test_loader_shuffle_is_reproducible_and_varies_by_epoch_and_seed():
    x = torch.arange(100)
    a = tw.InMemoryLoader(x, batch_size=7, seed=1)
    epoch0, epoch1 = _epoch_order(a), _epoch_order(a)
    assert sorted(epoch0) == list(range(100)) and sorted(epoch1) == list(range(100))  # each sample once
    assert epoch0 != epoch1 and epoch0 != list(range(100))
    b = tw.InMemoryLoader(x, batch_size=7, seed=1)
    assert _epoch_order(b) == epoch0 and _epoch_order(b) == epoch1
    c = tw.InMemoryLoader(x, batch_size=7, seed=2)
    assert _epoch_order(c) != epoch0
    # the order is a function of (seed, epoch) alone, not of the global RNG
    torch.manual_seed(123)
    assert [t.tolist() for t, in a.batches(0)] == [t.tolist() for t, in b.batches(0)]
    assert torch.cat([t for t, in a.batches(1)]).tolist() == epoch1


def test_loader_state_dict_resumes_mid_epoch():
    x = torch.arange(50)
    loader = tw.InMemoryLoader(x, batch_size=6, seed=5)
    _epoch_order(loader)  # finish epoch 0; now in epoch 1
    it = iter(loader)
    first = [next(it)[0].tolist() for _ in range(3)]
    state = loader.state_dict()
    rest = [b[0].tolist() for b in it]

    fresh = tw.InMemoryLoader(x, batch_size=6, seed=5)
    fresh.load_state_dict(state)
    resumed = [b[0].tolist() for b in fresh]
    assert resumed == rest
    assert sorted(sum(first + resumed, [])) == list(range(50))
    # and it carries on into the next epoch the same way as the original
    assert _epoch_order(fresh) == _epoch_order(loader)


# --------------------------------------------------------------------------- schedules in the Trainer


class _StepLRs:
    """The learning rate each optimizer step used (read just before the step)."""

    def __init__(self):
        self.lrs = []

    def on_before_step(self, trainer, **_):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


def _regression_data(n=40, batch_size=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    return tw.InMemoryLoader(x, y, batch_size=batch_size, shuffle=False)


def _fit_with(scheduler, epochs=4, lr=0.1, val=None, make_scheduler=None):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    if make_scheduler is not None:
        scheduler = make_scheduler(optimizer)
    recorder = _StepLRs()
    trainer = tw.Trainer(model, optimizer, nn.MSELoss(), scheduler, callbacks=[recorder], device="cpu")
    trainer.fit(_regression_data(), val, epochs=epochs)
    return trainer, recorder.lrs


def test_schedule_constant():
    trainer, lrs = _fit_with("constant")
    assert lrs == [0.1] * 20
    assert trainer.history["learning_rates"] == [0.1] * 4


def test_schedule_warmup_cosine_rises_linearly_then_decays():
    trainer, lrs = _fit_with(("warmup-cosine", {"warmup_steps": 5}))
    assert len(lrs) == 20  # 5 batches x 4 epochs
    assert lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    tail = lrs[4:]
    assert all(a >= b for a, b in zip(tail, tail[1:]))
    assert lrs[-1] < 0.01
    assert trainer.history["learning_rates"][0] == pytest.approx(0.02)


def test_schedule_cosine_starts_at_peak_and_ends_near_zero():
    trainer, lrs = _fit_with("cosine")
    assert lrs[0] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] < 0.1 * 0.01
    # the lr after the last step is 0 (the end of the cosine)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_schedule_step_by_name():
    trainer, _ = _fit_with(("step", {"step_size_epochs": 1, "gamma": 0.5}))
    assert trainer.history["learning_rates"] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    trainer, _ = _fit_with("step", epochs=6)  # default: decay by 10x every third of the run
    assert trainer.history["learning_rates"] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_schedule_one_cycle():
    _, lrs = _fit_with("one-cycle")
    assert lrs[0] == pytest.approx(0.1 / 25, rel=1e-3)
    assert max(lrs) == pytest.approx(0.1, rel=0.05)
    peak = lrs.index(max(lrs))
    assert 0 < peak < len(lrs) - 1
    assert lrs[-1] < 0.1 / 25


def _stalled_validation():
    """Validation inputs are all zero: a bias-free model's val loss never changes, while the train loss falls."""
    return tw.InMemoryLoader(torch.zeros(8, 3), torch.ones(8, 1), batch_size=8, shuffle=False)


def test_schedule_plateau_by_name_is_fed_validation_loss():
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False)
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(),
                         ("plateau", {"patience": 1, "factor": 0.5}), device="cpu")
    trainer.fit(_regression_data(), _stalled_validation(), epochs=6)
    h = trainer.history
    assert len(set(h["eval_loss"])) == 1  # validation stalled
    assert h["train_loss"][-1] < h["train_loss"][0]  # training improved
    # patience 1: halved after two stalled epochs, then again after two more
    assert h["learning_rates"] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025])


def test_torch_reduce_lr_on_plateau_is_fed_validation_loss():
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    trainer = tw.Trainer(model, optimizer, nn.MSELoss(), plateau, device="cpu")
    trainer.fit(_regression_data(), _stalled_validation(), epochs=4)
    assert trainer.history["learning_rates"] == pytest.approx([0.1, 0.1, 0.05, 0.025])


def test_reduce_lr_on_plateau_keeps_lr_while_validation_improves():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    trainer = tw.Trainer(model, optimizer, nn.MSELoss(), plateau, device="cpu")
    trainer.fit(_regression_data(), _regression_data(), epochs=4)
    assert all(a > b for a, b in zip(trainer.history["eval_loss"], trainer.history["eval_loss"][1:]))
    assert trainer.history["learning_rates"] == [0.05] * 4


def test_unknown_schedule_name_is_a_config_error():
    with pytest.raises(tw.ConfigError) as info:
        _fit_with("cosine-ish")
    assert "cosine-ish" in str(info.value) and "warmup-cosine" in str(info.value)
    with pytest.raises(tw.ConfigError):
        _fit_with(("step", {"not_an_option": 1}))


def test_seed_style_get_lr_object_sets_lr_per_epoch():
    schedule = tw.CosineSchedule(max_lr=0.1, min_lr=0.01, total_epochs=4)
    trainer, lrs = _fit_with(schedule, epochs=5)
    expected = [schedule.get_lr(e) for e in range(5)]
    assert trainer.history["learning_rates"] == pytest.approx(expected)
    assert lrs == pytest.approx([lr for lr in expected for _ in range(5)])  # constant within an epoch


def test_torch_step_lr_steps_per_epoch():
    trainer, lrs = _fit_with(None, epochs=3,
                             make_scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    assert trainer.history["learning_rates"] == pytest.approx([0.1, 0.05, 0.025])
    assert lrs == pytest.approx([0.1] * 5 + [0.05] * 5 + [0.025] * 5)


def test_an_object_that_is_not_a_scheduler_is_rejected():
    model = nn.Linear(3, 1)
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(), object(), device="cpu")
    with pytest.raises(tw.ConfigError):
        trainer.fit(_regression_data(), epochs=1)


def test_tw_memory_works_without_importing_the_submodule_first():
    import subprocess
    import sys

    code = ("import torch, trainwell as tw; m = torch.nn.Linear(4, 2); "
            "print(tw.memory.estimate(m, torch.optim.Adam(m.parameters()), torch.randn(3, 4))['parameters'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == (4 * 2 + 2) * 4  # ten float32 parameters
