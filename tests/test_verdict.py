"""The health verdict: each finding provoked on purpose, at its threshold and in a real run."""

from __future__ import annotations

import inspect
import json
import math
import time

import pytest
import torch
from torch import nn

import trainwell as tw
from trainwell import verdict
from trainwell.verdict import diagnose, format_verdict, read_records


# ---------------------------------------------------------------- synthetic records


def epochs(train, val=None, train_acc=None, val_acc=None, steps_per_epoch=10, **extra):
    """Epoch records from per-epoch lists (val, accuracies and extra fields optional)."""
    records = []
    for i, loss in enumerate(train):
        r = {"kind": "epoch", "epoch": i + 1, "step": (i + 1) * steps_per_epoch, "train_loss": loss, "lr": 1e-3}
        for key, values in (("eval_loss", val), ("train_acc", train_acc), ("eval_acc", val_acc)):
            if values is not None:
                r[key] = values[i]
        r.update({k: v[i] for k, v in extra.items()})
        records.append(r)
    return records


def steps(losses, lr=1e-3, every=10):
    return [{"kind": "step", "step": (i + 1) * every, "epoch": 1, "loss": v, "grad_norm": 1.0, "lr": lr}
            for i, v in enumerate(losses)]


def layers(norms: dict[str, float], n=5, update_ratio=1e-3):
    return [{"kind": "layers", "step": 10 * (i + 1), "epoch": 1,
             "layers": {k: {"grad_norm": v, "weight_norm": 1.0, "update_ratio": update_ratio} for k, v in norms.items()}}
            for i in range(n)]


def codes(records, config=None):
    return [f.code for f in diagnose(records, config)]


def finding(records, code, config=None):
    found = [f for f in diagnose(records, config) if f.code == code]
    assert found, f"no {code!r} finding in {codes(records, config)}"
    return found[0]


def text(f):
    return f"{f.title}. {f.evidence} {f.suggestion}"


HEALTHY = epochs([1.0, 0.6, 0.4, 0.3, 0.25], [1.05, 0.65, 0.45, 0.36, 0.35],
                 [0.6, 0.8, 0.88, 0.91, 0.93], [0.58, 0.78, 0.86, 0.89, 0.9])


# ---------------------------------------------------------------- reading


def test_read_records_tolerates_a_cut_short_last_line_and_old_step_records(tmp_path):
    lines = [json.dumps({"step": 1, "loss": 0.5}), json.dumps({"kind": "epoch", "epoch": 1, "train_loss": 0.5}),
             '{"kind": "step", "step": 2, "lo']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    records = read_records(tmp_path)
    assert [r["kind"] for r in records] == ["step", "epoch"]
    assert read_records(tmp_path / "metrics.jsonl") == records
    assert read_records(tmp_path / "missing") == []


def test_nothing_recorded_says_so():
    (f,) = diagnose([])
    assert f.code == "no_data" and "Nothing was recorded" in f.title


def test_healthy_run_says_so_plainly():
    findings = diagnose(HEALTHY)
    assert [f.code for f in findings] == ["healthy"] and findings[0].severity == "ok"
    out = format_verdict(findings)
    assert out.startswith("Health verdict: healthy.")
    assert "fell from 1 to 0.25" in out and "best at epoch 5" in out


def test_format_verdict_one_paragraph_per_finding():
    records = epochs([1.0, 1.0, 1.0, 1.0]) + [{"kind": "epoch", "epoch": 5, "train_loss": math.nan, "step": 50}]
    findings = diagnose(records, {"lr": 0.5})
    out = format_verdict(findings)
    paragraphs = out.split("\n\n")
    assert len(paragraphs) == len(findings) + 1
    assert paragraphs[0].startswith("Health verdict: ") and "problem" in paragraphs[0]
    assert all("Evidence:" in p and "Next step:" in p for p in paragraphs[1:])


# ---------------------------------------------------------------- each finding at its threshold


def test_not_decreasing_at_one_percent():
    assert "not_decreasing" in codes(epochs([1.0, 0.998, 0.995]))  # 0.5% better: stuck
    assert "not_decreasing" not in codes(epochs([1.0, 0.99, 0.985]))  # 1.5% better
    f = finding(epochs([1.0, 1.05, 1.1]), "not_decreasing")
    assert f.severity == "problem" and "not decreasing" in f.title and "rose" in f.evidence and "+10.0%" in f.evidence


def test_loss_nan_in_records_and_from_the_guard():
    f = finding(steps([1.0, 0.9, math.nan, 0.8]), "loss_exploding")
    assert "NaN" in f.title and "first at step 30" in f.evidence
    guarded = steps([1.0, 0.9, 0.8]) + [
        {"kind": "intervention", "step": 15, "epoch": 1, "cause": "non-finite loss (nan)",
         "action": "skipped the step", "lr_after": 5e-4}]
    # One bad value the guard skipped, the run finite afterwards: an intervention, not an explosion
    # (this expected loss_exploding before the calibration; the scenario suite's transient_nan).
    f = finding(guarded, "interventions")
    assert "non-finite loss (1)" in f.evidence and "recovered" in f.evidence
    assert "loss_exploding" not in codes(guarded)
    assert "lr_too_high" not in codes(guarded)  # one bad batch is not a learning-rate problem
    twice = guarded + [dict(guarded[-1], step=25)]
    f = finding(twice, "loss_exploding")
    assert "health guard caught 2 non-finite" in f.evidence and "recovered" in f.evidence


def test_loss_exploding_at_ten_times_its_start():
    assert "loss_exploding" in codes(steps([1.0, 2.0, 11.0]))
    assert "loss_exploding" not in codes(steps([1.0, 2.0, 9.0]))
    assert "11x its starting value" in finding(steps([1.0, 2.0, 11.0]), "loss_exploding").evidence


def test_overfitting_names_the_epoch_where_it_began():
    train = [1.0, 0.7, 0.5, 0.35, 0.25, 0.18]
    f = finding(epochs(train, [1.1, 0.8, 0.6, 0.62, 0.64, 0.661]), "overfitting")  # +10.2% over best
    assert f.title == "Overfitting began at epoch 4"
    assert "0.6 at epoch 3 (its best)" in f.evidence and "model-best.safetensors" in f.suggestion
    assert "overfitting" not in codes(epochs(train, [1.1, 0.8, 0.6, 0.62, 0.64, 0.655]))  # +9.2%
    # validation rising while training rises too is not overfitting
    assert "overfitting" not in codes(epochs([1.0, 0.7, 0.5, 0.6, 0.7, 0.8], [1.1, 0.8, 0.6, 0.7, 0.8, 0.9]))


def test_a_validation_rise_after_loss_spikes_the_guard_caught_is_the_learning_rate_not_overfitting():
    # Adam at 500x its default on mnist: the guard caught spikes in epoch 1 (inflating its training
    # loss), then the validation loss wandered up while the training loss "fell" from that mean.
    wandering = epochs([2.34, 0.95, 0.97, 0.96], [1.08, 1.25, 1.21, 1.23])
    assert "overfitting" in codes(wandering)  # the same curves from a stable run would be overfitting
    spikes = [{"kind": "intervention", "step": s, "epoch": 1, "cause": "loss spike (40.1x the recent median)",
               "action": "skipped the step, rolled back to step 0", "lr_after": 0.25} for s in (1, 2, 3)]
    found = codes(wandering + spikes)
    assert "lr_too_high" in found and "overfitting" not in found
    assert "overfitting" in codes(wandering + spikes[:1])  # one caught spike is a bad batch, not instability


def test_overfitting_from_an_accuracy_gap():
    f = finding(epochs([1.0, 0.5, 0.2], None, [0.6, 0.9, 0.99], [0.6, 0.8, 0.8]), "overfitting")
    assert "99.0%" in f.evidence and "80.0%" in f.evidence and "19.0% gap" in f.evidence
    assert "overfitting" not in codes(epochs([1.0, 0.5, 0.2], None, [0.6, 0.9, 0.94], [0.6, 0.8, 0.8]))


def test_underfitting_when_accuracy_is_low_and_flat():
    train = [1.0, 0.72, 0.70, 0.695, 0.69, 0.689]
    f = finding(epochs(train, train, [0.5, 0.55, 0.56, 0.56, 0.56, 0.56], [0.5, 0.54, 0.55, 0.55, 0.55, 0.55]),
                "underfitting")
    assert "underfitting" in f.title and "56.0%" in f.evidence and "bigger model" in f.suggestion
    high_acc = [0.5, 0.9, 0.95, 0.96, 0.96, 0.96]
    assert "underfitting" not in codes(epochs(train, train, high_acc, high_acc))
    # still improving: not a plateau
    assert "underfitting" not in codes(epochs([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], None, [0.5] * 6))


def test_learning_rate_too_high_from_spikes_names_the_rate():
    losses = [1.0, 0.8, 0.7, 5.0, 0.7, 0.6, 4.5, 0.6, 0.5, 0.5]
    f = finding(steps(losses, lr=0.3), "lr_too_high")
    assert f.title == "The learning rate (0.3) is probably too high"
    assert "2 loss spikes" in f.evidence and "try 0.03" in f.suggestion
    one_spike = [1.0, 0.8, 0.7, 5.0, 0.7, 0.6, 0.6, 0.6, 0.5, 0.5]
    assert "lr_too_high" not in codes(steps(one_spike))
    # noise on a near-zero loss is not a spike
    assert "lr_too_high" not in codes(steps([1.0, 0.01, 0.001, 0.01, 0.001, 0.01, 0.001]))


def test_learning_rate_too_high_from_an_early_rise_and_oscillation():
    f = finding(steps([1.0, 1.6, 1.2, 0.9, 0.8, 0.7], lr=0.1), "lr_too_high")
    assert "climbed from 1 to 1.6" in f.evidence and "(0.1)" in f.title
    assert "lr_too_high" not in codes(steps([1.0, 1.4, 1.2, 0.9, 0.8, 0.7]))
    f = finding(epochs([1.0, 0.8, 0.9, 0.7, 0.8], lr=[0.2] * 5), "lr_too_high", {"lr": 0.2})
    assert "went up in 2 of 4 epochs" in f.evidence and "(0.2)" in f.title


def test_learning_rate_too_low_when_the_loss_barely_moves():
    f = finding(epochs([1.0, 0.985, 0.97], lr=[1e-6] * 3), "lr_too_low")  # 3% better
    assert f.title == "The learning rate (1e-06) is probably too low"
    f = finding(epochs([1.0, 0.985, 0.97], lr=[1e-6] * 3), "lr_too_low", {"lr": 1e-6})  # the config's, if given
    assert f.title == "The learning rate (1e-06) is probably too low" and "try 1e-05" in f.suggestion
    assert "lr_too_low" not in codes(epochs([1.0, 0.97, 0.94]), {"lr": 1e-6})  # 6%
    assert "lr_too_low" not in codes(epochs([1.0, 1.05, 1.1]))  # rising is not slow
    # normal-size updates mean a plateau, not a learning rate too low
    assert "lr_too_low" not in codes(epochs([1.0, 0.985, 0.97]) + layers({"w": 1.0}, update_ratio=1e-3))
    f = finding(epochs([1.0, 0.985, 0.97]) + layers({"w": 1.0}, update_ratio=1e-7), "lr_too_low")
    assert "median 1e-07 of their size" in f.evidence


def test_vanishing_gradients_name_the_layers():
    f = finding(HEALTHY + layers({"0.weight": 1e-7, "1.weight": 1e-4, "2.weight": 0.5}), "vanishing_gradients")
    assert f.title == "Vanishing gradients in 0.weight" and "1e-07" in f.evidence and "2.weight" in f.evidence
    assert "vanishing_gradients" not in codes(HEALTHY + layers({"0.weight": 1e-5, "2.weight": 0.5}))


def test_exploding_gradients_name_the_layers():
    f = finding(HEALTHY + layers({"0.weight": 2e3, "1.weight": 1.0}), "exploding_gradients")
    assert f.title == "Exploding gradients in 0.weight" and "2000" in f.evidence and "--clip" in f.suggestion
    assert "vanishing_gradients" not in codes(HEALTHY + layers({"0.weight": 2e3, "1.weight": 1e-3}))
    assert "exploding_gradients" not in codes(HEALTHY + layers({"0.weight": 900.0}))
    # without per-layer records, the global norm still tells
    f = finding(epochs([1.0, 0.6, 0.4], grad_norm_max=[5.0, 5e3, 6.0]), "exploding_gradients")
    assert "5000" in f.evidence and "per-layer norms were not recorded" in f.evidence


def test_data_loading_bottleneck_above_thirty_percent():
    f = finding(epochs([1.0, 0.6, 0.4], data_wait_share=[0.4, 0.45, 0.5]), "data_loading")
    assert "45% of each step" in f.evidence and "worst: epoch 3, 50%" in f.evidence and "num_workers" in f.suggestion
    assert "data_loading" not in codes(epochs([1.0, 0.6, 0.4], data_wait_share=[0.2, 0.25, 0.3]))


def test_data_loading_needs_enough_waiting_to_mean_something():
    """A high share of very short epochs (a preemption on a busy machine) is no bottleneck."""
    shares = [0.4, 0.45, 0.5]
    assert "data_loading" not in codes(epochs([1.0, 0.6, 0.4], data_wait_share=shares, epoch_time=[0.01] * 3))
    f = finding(epochs([1.0, 0.6, 0.4], data_wait_share=shares, epoch_time=[0.5] * 3), "data_loading")
    assert "45% of each step" in f.evidence


def test_interventions_are_summarised():
    records = HEALTHY + [
        {"kind": "intervention", "step": 12, "epoch": 2, "cause": "loss spike (12.3x the recent median)",
         "action": "skipped the step", "lr_after": 1e-3},
        {"kind": "intervention", "step": 30, "epoch": 3, "cause": "non-finite gradients",
         "action": "rolled back to step 20 and halved the learning rate", "lr_after": 5e-4},
    ]
    f = finding(records, "interventions")
    assert f.title == "The health guard intervened 2 times"
    assert "loss spike (1)" in f.evidence and "non-finite gradients (1)" in f.evidence
    assert "First at step 12, last at step 30" in f.evidence and "0.0005" in f.evidence


# ---------------------------------------------------------------- real (tiny) training runs


def xor(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (n, 2), generator=g).float()
    return x + 0.1 * torch.randn(n, 2, generator=g), (x[:, 0] != x[:, 1]).long()


def mlp():
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))


TRAINER_OPTIONS = inspect.signature(tw.Trainer).parameters


def train(tmp_path, model, lr, epochs, data, val=None, batch_size=20, optimizer=torch.optim.Adam, callbacks=()):
    """A real run into tmp_path; its records (a run the health guard stops still leaves them)."""
    options = {"grad_flow_every": 2} if "grad_flow_every" in TRAINER_OPTIONS else {}
    trainer = tw.Trainer(model, optimizer(model.parameters(), lr=lr), nn.CrossEntropyLoss(), run_dir=tmp_path,
                         seed=0, log_every_steps=1, callbacks=callbacks, **options)
    train_loader = tw.InMemoryLoader(*data, batch_size=batch_size, seed=0) if isinstance(data, tuple) else data
    val_loader = tw.InMemoryLoader(*val, batch_size=256, shuffle=False) if val is not None else None
    try:
        trainer.fit(train_loader, val_loader, epochs=epochs)
    except tw.TrainingError:
        pass
    return read_records(tmp_path)


def test_real_healthy_run(tmp_path):
    torch.manual_seed(0)
    assert codes(train(tmp_path, mlp(), 0.05, 4, xor(200), xor(100, 1))) == ["healthy"]


def test_real_learning_rate_far_too_low(tmp_path):
    torch.manual_seed(0)
    records = train(tmp_path, mlp(), 1e-7, 3, xor(200), xor(100, 1))
    assert "not_decreasing" in codes(records)
    assert finding(records, "lr_too_low", {"lr": 1e-7}).title == "The learning rate (1e-07) is probably too low"


def test_real_learning_rate_far_too_high(tmp_path):
    torch.manual_seed(0)
    records = train(tmp_path, mlp(), 20.0, 4, xor(200), xor(100, 1))
    assert finding(records, "lr_too_high", {"lr": 20.0}).title == "The learning rate (20) is probably too high"


def test_real_overfitting_on_a_tiny_dataset(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(24, 20, generator=g), torch.randint(0, 2, (24,), generator=g))
    val = (torch.randn(64, 20, generator=g), torch.randint(0, 2, (64,), generator=g))
    torch.manual_seed(0)
    big = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))
    f = finding(train(tmp_path, big, 1e-2, 20, data, val, batch_size=24), "overfitting")
    assert f.title.startswith("Overfitting began at epoch ")


def test_real_underfitting_linear_model_on_xor(tmp_path):
    torch.manual_seed(0)
    f = finding(train(tmp_path, nn.Linear(2, 2), 0.05, 8, xor(200), xor(100, 1)), "underfitting")
    assert "training accuracy" in f.evidence


class NaNOnce(nn.Module):
    """An MLP whose 15th forward call returns NaN: a transient fault."""

    def __init__(self):
        super().__init__()
        self.net, self.calls = mlp(), 0

    def forward(self, x):
        self.calls += 1
        out = self.net(x)
        return out * math.nan if self.calls == 15 else out


def test_real_transient_nan(tmp_path):
    torch.manual_seed(0)
    records = train(tmp_path, NaNOnce(), 0.05, 3, xor(200), xor(100, 1))
    f = finding(records, "interventions")  # the guard skipped it and the run went on
    assert "non-finite loss (1)" in f.evidence and "recovered" in f.evidence
    assert "loss_exploding" not in codes(records) and "lr_too_high" not in codes(records)


def test_real_vanishing_gradients_in_a_deep_sigmoid_stack(tmp_path):
    torch.manual_seed(0)
    deep = [nn.Linear(2, 8), nn.Sigmoid()] + [m for _ in range(12) for m in (nn.Linear(8, 8), nn.Sigmoid())]
    records = train(tmp_path, nn.Sequential(*deep, nn.Linear(8, 2)), 1e-3, 1, xor(100))
    if not verdict.of_kind(records, "layers"):
        pytest.skip("the trainer does not write per-layer gradient records yet")
    assert "0.weight" in finding(records, "vanishing_gradients").title


class SlowDataset(torch.utils.data.Dataset):
    """Every sample takes 5 ms to load: the model waits for data most of the time."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        time.sleep(0.005)
        return self.x[i], self.y[i]


def test_real_slow_data_loading(tmp_path):
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(SlowDataset(*xor(64)), batch_size=16, shuffle=True)
    records = train(tmp_path, mlp(), 0.01, 2, loader)
    if not any("data_wait_share" in r for r in records):
        pytest.skip("the trainer does not record data_wait_share yet")
    assert "bottleneck" in finding(records, "data_loading").title


# ---------------------------------------------------------------- calibration (issues 20 and 23)


def test_late_minibatch_noise_is_not_a_spike_but_a_loss_that_stays_up_is():
    """The default mnist run's "2 loss spikes (up to 13x the recent median)" was one hard batch at a time."""
    late = [0.19, 0.2] + [0.02, 0.015, 0.018, 0.017, 0.02, 0.016] * 3
    noisy = late[:10] + [0.133] + late[10:15] + [0.133] + late[15:]
    assert "lr_too_high" not in codes(steps(noisy))
    # the same rise twice, each time followed by a loss that stayed up: the step size, not a batch
    lasting = late[:10] + [0.9, 0.8] + late[10:15] + [0.9, 0.85] + late[15:]
    f = finding(steps(lasting, lr=0.01), "lr_too_high")
    assert "loss spikes" in f.evidence and "try 0.001" in f.suggestion


def test_overfitting_needs_a_sustained_rise_that_matters():
    # two evaluations (two optimizer steps of a tiny run) are no trend
    assert "overfitting" not in codes(epochs([1.0, 0.8], [1.0, 1.2]))
    # a 20% rise of a validation loss of 3e-4 is noise on a near-zero loss
    assert "overfitting" not in codes(epochs([0.33, 0.01, 0.001, 0.0005, 0.0004, 0.0003],
                                             [0.03, 0.005, 0.0003, 0.00028, 0.0003, 0.00034]))
    # memorising: validation 8% above its best for 9 epochs while the training loss fell 26x
    train = [0.95, 0.35, 0.25, 0.2, 0.14, 0.1] + [0.1 / 1.5 ** i for i in range(1, 10)]
    val = [0.44, 0.37, 0.33, 0.3, 0.29, 0.263, 0.289, 0.273, 0.28, 0.274, 0.276, 0.277, 0.277, 0.291, 0.285]
    assert finding(epochs(train, val), "overfitting").title == "Overfitting began at epoch 7"


def test_an_accuracy_gap_within_the_noise_of_a_small_validation_set_is_not_overfitting():
    small = epochs([1.0, 0.5, 0.2], None, [0.6, 0.9, 0.99], [0.6, 0.8, 0.8], eval_samples=[10] * 3)
    assert "overfitting" not in codes(small)
    large = epochs([1.0, 0.5, 0.2], None, [0.6, 0.9, 0.99], [0.6, 0.8, 0.8], eval_samples=[1000] * 3)
    assert "overfitting" in codes(large)


def test_a_validation_loss_that_zigzags_means_the_steps_are_too_big():
    f = finding(epochs([1.12, 0.8, 0.79, 0.78, 0.75, 0.8], [1.08, 1.27, 0.78, 0.59, 0.73, 0.48]), "lr_too_high",
                {"lr": 1.0})
    assert "jumped up and straight back down 2 times" in f.evidence
    assert "underfitting" not in codes(epochs([1.12, 0.8, 0.79, 0.78, 0.75, 0.8], [1.08, 1.27, 0.78, 0.59, 0.73, 0.48]))
    # one swing is not a pattern; neither are swings of a tiny share of the loss
    assert "lr_too_high" not in codes(epochs([1.0, 0.5, 0.4, 0.3, 0.25], [0.9, 1.0, 0.8, 0.7, 0.6]))
    assert "lr_too_high" not in codes(epochs([0.3, 0.02, 0.01, 0.008, 0.007, 0.006],
                                             [0.03, 0.005, 0.0037, 0.0051, 0.0028, 0.0013]))


def test_vanishing_gradients_are_judged_on_weight_matrices_not_biases():
    """An attention key bias gets ~zero gradient under softmax by construction (every BERT)."""
    norms = {"attention.query.weight": 0.3, "attention.key.weight": 0.2, "attention.key.bias": 1e-9,
             "classifier.weight": 0.5}
    ndim = {name: 1 if name.endswith("bias") else 2 for name in norms}
    records = HEALTHY + [dict(r, ndim=ndim) for r in layers(norms)]
    assert codes(records) == ["healthy"]
    # a matrix with no gradient is still found; runs logged before ndim was recorded judge every tensor
    norms["encoder.0.weight"], ndim["encoder.0.weight"] = 1e-8, 2
    assert finding(HEALTHY + [dict(r, ndim=ndim) for r in layers(norms)],
                   "vanishing_gradients").title == "Vanishing gradients in encoder.0.weight"
    assert "attention.key.bias" in finding(HEALTHY + layers(norms), "vanishing_gradients").title


def baseline(loss, split="validation"):
    return [{"kind": "baseline", "step": 10, "epoch": 1, "split": split, "predictor": "the mean of the targets",
             "loss": loss}]


def test_a_regression_is_compared_with_predicting_the_mean():
    """Issue 23: "healthy" at MSE 5.47 where predicting the mean gives 8.25."""
    weak = epochs([9.0, 7.0, 6.2, 5.8, 5.6], [8.9, 6.9, 6.0, 5.6, 5.47]) + baseline(8.25)
    f = finding(weak, "underfitting")
    assert f.title == "The model barely beats predicting the mean"
    assert "5.47 at epoch 5 against 8.25 for predicting the mean" in f.evidence and "34%" in f.evidence
    assert "accuracy" not in text(f)
    good = epochs([9.0, 3.0, 1.0, 0.5, 0.4], [8.9, 3.1, 1.1, 0.6, 0.45]) + baseline(8.25)
    (ok,) = diagnose(good)
    assert ok.code == "healthy" and "predicting the mean of the targets would give 8.25" in ok.evidence


def test_the_healthy_message_never_calls_a_rise_a_fall():
    """Issue 23: "Training loss fell from 0.425 to 0.4424" from two logged steps, while the epoch
    means fell 0.72 -> 0.29."""
    records = steps([0.425, 0.4424], every=50) + epochs([0.72, 0.29], steps_per_epoch=60)
    (ok,) = diagnose(records)
    assert "fell from 0.72 to 0.29 over 2 epochs" in ok.evidence and "0.4424" not in ok.evidence
    (ok,) = diagnose(steps([0.425, 0.4424], every=50))
    assert "rose from 0.425 to 0.4424" in ok.evidence


def test_findings_as_data_and_the_worst_severity():
    assert verdict.findings_as_data(diagnose(HEALTHY)) == [
        {"code": "healthy", "severity": "ok", "title": "The run looks healthy",
         "evidence": diagnose(HEALTHY)[0].evidence, "suggestion": diagnose(HEALTHY)[0].suggestion}]
    assert json.loads(json.dumps(verdict.findings_as_data(diagnose([]))))[0]["code"] == "no_data"
    assert verdict.worst_severity(diagnose(HEALTHY)) == "ok"
    assert verdict.worst_severity(diagnose(epochs([1.0, 1.0, 1.0]))) == "problem"


def regression_fit(tmp_path, callbacks, val=True):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    y = x @ torch.randn(4, 1, generator=g) + 3.0
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), nn.MSELoss(), run_dir=tmp_path,
                         seed=0, callbacks=callbacks)
    data = tw.InMemoryLoader(x[:160], y[:160], batch_size=32, seed=0)
    history = trainer.fit(data, tw.InMemoryLoader(x[160:], y[160:], batch_size=64, shuffle=False) if val else None,
                          epochs=3)
    return history, read_records(tmp_path), y


def test_constant_baseline_logs_the_loss_of_predicting_the_mean_once_and_changes_nothing(tmp_path):
    from trainwell.baseline import ConstantBaseline

    history, records, y = regression_fit(tmp_path / "with", [ConstantBaseline()])
    (record,) = verdict.of_kind(records, "baseline")
    val = y[160:]
    assert record["split"] == "validation" and record["epoch"] == 1
    assert record["loss"] == pytest.approx(float(((val - val.mean()) ** 2).mean()), rel=1e-5)
    plain, _, _ = regression_fit(tmp_path / "without", [])
    assert history["train_loss"] == plain["train_loss"], "the baseline must not disturb training"
    _, records, y = regression_fit(tmp_path / "train-only", [ConstantBaseline()], val=False)
    (record,) = verdict.of_kind(records, "baseline")
    assert record["split"] == "training"
    assert record["loss"] == pytest.approx(float(((y[:160] - y[:160].mean()) ** 2).mean()), rel=1e-5)


def test_constant_baseline_skips_classifiers(tmp_path):
    from trainwell.baseline import ConstantBaseline, constant_loss

    labels = tw.InMemoryLoader(torch.zeros(8, 2), torch.tensor([0, 1] * 4), batch_size=4)
    assert constant_loss(labels, nn.CrossEntropyLoss(), torch.device("cpu")) is None
    binary = tw.InMemoryLoader(torch.zeros(8, 2), torch.tensor([[0.0], [1.0]] * 4), batch_size=4)
    assert constant_loss(binary, nn.BCEWithLogitsLoss(), torch.device("cpu")) is None
    assert constant_loss(binary, None, torch.device("cpu")) is None
    records = train(tmp_path, mlp(), 0.05, 1, xor(64), xor(32, 1), callbacks=[ConstantBaseline()])
    assert not verdict.of_kind(records, "baseline")


def test_xor_recipe_early_stopping_fires(tmp_path):
    """Issue 23: the validation loss creeping down by 1e-7 an epoch kept xor training for 200 epochs."""
    from trainwell.callbacks import EarlyStopping
    from trainwell.config import validate
    from trainwell.recipes import get_recipe, recipe_defaults

    config = validate({**recipe_defaults("xor"), "recipe": "xor"})
    parts = get_recipe("xor").build(config, torch.device("cpu"))
    (stopper,) = [cb for cb in parts.callbacks if isinstance(cb, EarlyStopping)]
    assert stopper.patience == 20 and stopper.min_delta > 0
    assert EarlyStopping().min_delta == 0.0  # the public default stays as the spec fixes it
    stopper.best = 1e-5
    assert not stopper.improved(1e-5 - 1e-7)


def _baseline(**values):
    return [{"kind": "baseline", "step": 10, "epoch": 1, "split": "validation", **values}]


def test_a_regression_that_fits_its_training_data_is_not_called_underfitting():
    """Validation R² 0.49 at the data's noise ceiling (least squares gets 0.47), training R² 0.6."""
    noisy = epochs([0.97, 0.6, 0.45, 0.40, 0.385], [0.80, 0.55, 0.491, 0.50, 0.509])
    assert "underfitting" not in codes(noisy + _baseline(predictor="the mean of the targets", loss=0.966))
    cannot_fit = epochs([0.97, 0.9, 0.85, 0.84, 0.83], [0.95, 0.9, 0.88, 0.87, 0.87])
    f = finding(cannot_fit + _baseline(predictor="the mean of the targets", loss=0.966), "underfitting")
    assert "0.87 at epoch 4" in f.evidence and "barely beats predicting the mean" in f.title  # its best epoch


def test_a_ranking_run_is_judged_by_its_metrics_against_random_order_not_by_its_loss():
    """A margin loss on noisy pairs does not halve (0.935 -> 0.494); pairwise accuracy 0.758 vs 0.5 is learning."""
    baseline = _baseline(predictor="random order", pairwise_acc=0.5, ndcg10=0.518)
    learning = epochs([0.935, 0.6, 0.52, 0.50, 0.495, 0.494], eval_pairwise_acc=[0.6, 0.7, 0.74, 0.75, 0.757, 0.758],
                      eval_ndcg10=[0.7, 0.78, 0.8, 0.81, 0.815, 0.817])
    assert "underfitting" not in codes(learning + baseline)
    stuck = epochs([0.99, 0.85, 0.8, 0.79, 0.79, 0.79], eval_pairwise_acc=[0.52, 0.53, 0.53, 0.54, 0.54, 0.54],
                   eval_ndcg10=[0.52, 0.53, 0.53, 0.53, 0.54, 0.54])
    f = finding(stuck + baseline, "underfitting")
    assert "barely beats random order" in f.title and "pairwise_acc 0.54 against 0.5" in f.evidence


def test_an_out_of_memory_halving_is_its_own_finding_not_a_health_guard_intervention():
    oom = [{"kind": "intervention", "step": 0, "epoch": 1, "cause": "out of memory on cpu (CUDA out of memory.)",
            "action": "micro-batch 64 -> 32, accumulation 1 -> 2"}]
    found = codes(HEALTHY + oom)
    assert "out_of_memory" in found and "interventions" not in found
    assert "micro-batch 64 -> 32" in finding(HEALTHY + oom, "out_of_memory").evidence
