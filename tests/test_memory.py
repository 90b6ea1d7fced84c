"""The memory estimate (parts by optimizer type, saved activations) and the MemoryProbe that
measures the training peak: it lands near the estimate and changes nothing the training computes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trainwell as tw
from trainwell.memory import MemoryProbe, estimate, optimizer_state_bytes, saved_activation_bytes


def mlp(hidden=32):
    return nn.Sequential(nn.Linear(20, hidden), nn.ReLU(), nn.Linear(hidden, 4))


def data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 20, generator=g), torch.randint(0, 4, (n,), generator=g)


class Records:
    def __init__(self):
        self.records = []

    def log(self, record, step):
        self.records.append(record)

    def of(self, kind):
        return [r for r in self.records if r["kind"] == kind]


def train(probe, epochs=2, batch_size=32, n=256, model=None, **trainer_options):
    torch.manual_seed(0)
    model = model or mlp()
    records = Records()
    callbacks = [records] + ([probe] if probe else [])
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), 1e-2), F.cross_entropy, seed=0,
                         callbacks=callbacks, health=False, **trainer_options)
    x, y = data(n)
    history = trainer.fit(tw.InMemoryLoader(x, y, batch_size=batch_size, seed=0), epochs=epochs)
    return trainer, history, records


# ------------------------------------------------------------------ the estimate


@pytest.mark.parametrize(("make", "copies"), [
    (lambda p: torch.optim.Adam(p), 2), (lambda p: torch.optim.AdamW(p), 2),
    (lambda p: torch.optim.Adam(p, amsgrad=True), 3), (lambda p: torch.optim.SGD(p, lr=0.1), 0),
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), 1), (lambda p: torch.optim.Adagrad(p), 1),
    (lambda p: torch.optim.RMSprop(p), 1), (lambda p: torch.optim.RMSprop(p, momentum=0.9, centered=True), 3),
])
def test_optimizer_state_is_counted_by_optimizer_type_and_matches_the_real_state(make, copies):
    model = mlp()
    optimizer = make(model.parameters())
    weights = sum(p.numel() * 4 for p in model.parameters())
    scalars = 64 * len(list(model.parameters()))  # per-parameter step counts, where kept
    assert copies * weights <= optimizer_state_bytes(optimizer) <= copies * weights + scalars  # Adagrad's is eager
    F.cross_entropy(model(torch.randn(8, 20)), torch.zeros(8, dtype=torch.long)).backward()
    optimizer.step()
    # once the optimizer has state, its own tensors are counted: the prediction was right (scalars aside)
    assert copies * weights <= optimizer_state_bytes(optimizer) <= copies * weights + scalars


def test_frozen_parameters_have_no_gradient_or_optimizer_state():
    model = mlp()
    model[0].requires_grad_(False)
    sizes = estimate(model, torch.optim.Adam(model.parameters(), fused=True))
    trainable = sum(p.numel() * 4 for p in model[2].parameters())
    assert sizes["parameters"] == sum(p.numel() * 4 for p in model.parameters())
    assert sizes["gradients"] == trainable and sizes["optimizer_state"] == 2 * trainable
    assert sizes["activations"] == 0 and sizes["total"] == sizes["parameters"] + 3 * trainable


def test_activations_are_the_tensors_autograd_saves_not_the_inputs_or_weights():
    model, x, y = mlp(hidden=8), torch.randn(16, 20), torch.randint(0, 4, (16,))
    # Linear saves its input and weight (both exist anyway); ReLU saves its output (16 x 8 floats), which
    # the second Linear saves too (counted once); cross-entropy saves its log-softmax (16 x 4 floats)
    # and the total weight (one float).
    assert saved_activation_bytes(model, x) == 16 * 8 * 4
    assert saved_activation_bytes(model, x, y, F.cross_entropy) == 16 * 8 * 4 + 16 * 4 * 4 + 4
    assert estimate(model, torch.optim.SGD(model.parameters(), lr=0.1), x)["activations"] == 16 * 8 * 4


def test_the_activation_probe_counts_dropout_masks_and_leaves_rng_buffers_and_mode_as_they_were():
    model = nn.Sequential(nn.Linear(20, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 4)).train()
    without_dropout = nn.Sequential(model[0], model[1], model[3])
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(32, 20)
    rng = torch.get_rng_state()
    activations = saved_activation_bytes(model, x)
    assert activations == saved_activation_bytes(without_dropout, x) + 32 * 16  # a bool mask per element
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, buffers[k]) for k, v in model.state_dict().items())
    assert model.training


def test_the_activation_probe_runs_no_training_forward():
    """A model's training-only behaviour (its counters, an injected fault) is not set off before training."""
    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear, self.training_forwards = nn.Linear(20, 4), 0

        def forward(self, x):
            self.training_forwards += self.training
            return self.linear(x)

    model = Counting()
    assert saved_activation_bytes(model, torch.randn(8, 20)) == 0  # Linear saves only its input and weight
    assert model.training_forwards == 0


def test_a_model_that_fails_on_the_example_gives_no_activation_figure_but_the_rest():
    model = mlp()
    sizes = estimate(model, torch.optim.Adam(model.parameters(), fused=True), torch.randn(8, 7))  # wrong width
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert sizes["activations"] is None and sizes["total"] == 4 * weights
    # a loss that fails leaves the model's own saved tensors
    def failing_loss(logits, targets):
        raise ValueError("targets of the wrong kind")

    assert saved_activation_bytes(model, torch.randn(8, 20), torch.zeros(8), failing_loss) == 8 * 32 * 4


def test_describe_names_every_part_and_the_total():
    line = tw.memory.describe({"parameters": 2**20, "gradients": 2**20, "optimizer_state": 2 * 2**20,
                               "activations": None, "total": 4 * 2**20}, 262_144)
    assert line == ("Memory estimate: 1.0 MB parameters + 1.0 MB gradients + 2.0 MB optimizer state + ? MB "
                    "activations = 4.0 MB (4.0x the model; 262,144 parameters)")
    line = tw.memory.describe({"parameters": 2**20, "gradients": 2**20, "optimizer_state": 2 * 2**20,
                               "activations": 2**19, "optimizer_step": 2**20, "total": 5 * 2**20}, 262_144)
    assert "+ max(0.5 MB activations, 1.0 MB optimizer step) = 5.0 MB" in line


# ------------------------------------------------------------------ the probe


@pytest.mark.parametrize("fused", [True, False])
def test_the_probe_logs_a_measured_peak_near_the_estimate(fused):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 4))
    records = Records()
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), 1e-3, fused=fused), F.cross_entropy, seed=0,
                         callbacks=[records, MemoryProbe()], health=False)
    trainer.fit(tw.InMemoryLoader(*data(), batch_size=32, seed=0), epochs=1)
    [record] = records.of("memory")
    estimated, measured = record["estimated"], record["measured_peak"]
    weights = sum(p.numel() * 4 for p in trainer.model.parameters())
    assert record["steps"] == 3 and record["step"] == 4  # after the first step, three more
    # parameters + Adam's two moments and step counts (the gradients were dropped by zero_grad)
    assert 3 * weights < record["at_start"] <= 3 * weights + 64
    assert record["method"].startswith("cpu: torch profiler memory events")
    assert estimated == records.of("start")[0]["memory"]  # the start record shows the same estimate
    # the loop over tensors keeps sqrt and quotient of the largest weight; the fused kernel nothing
    assert estimated["optimizer_step"] == (0 if fused else 2 * 256 * 256 * 4)
    step_or_activations = max(estimated["activations"], estimated["optimizer_step"])
    assert estimated["activations"] > 0 and estimated["total"] == 4 * weights + step_or_activations
    assert 0.7 <= estimated["total"] / measured <= 1.3


def test_training_is_bitwise_the_same_with_and_without_the_probe():
    def dropout_mlp():  # dropout draws from the RNG: the probe must not move it
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(20, 32), nn.Dropout(0.3), nn.ReLU(), nn.Linear(32, 4))

    with_probe, history, _ = train(MemoryProbe(), model=dropout_mlp())
    without, plain_history, _ = train(None, model=dropout_mlp())
    assert history["train_loss"] == plain_history["train_loss"]
    assert all(torch.equal(a, b) for a, b in zip(with_probe.model.parameters(), without.model.parameters()))


def test_short_epochs_stop_the_measurement_at_the_epoch_end_and_one_step_epochs_are_measured_whole():
    _, _, records = train(MemoryProbe(), epochs=2, batch_size=128)  # two steps an epoch
    [record] = records.of("memory")
    assert record["steps"] == 1 and record["step"] == 2  # evaluation and the next epoch are not measured
    _, _, records = train(MemoryProbe(), epochs=3, batch_size=256)  # one step an epoch
    [record] = records.of("memory")
    assert record["steps"] == 1 and record["step"] == 2 and record["measured_peak"] > record["at_start"]


def test_a_run_of_one_step_has_no_measurement_and_the_probe_leaves_no_profiler_running():
    _, _, records = train(MemoryProbe(), epochs=1, batch_size=256)
    assert records.of("memory") == [] and records.of("start")[0]["memory"]["total"] > 0
    assert not torch.autograd._profiler_enabled()


def test_a_profiler_the_user_runs_is_left_alone():
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        _, _, records = train(MemoryProbe())
    assert records.of("memory") == [] and profiler.events()  # no measurement, and the user's trace is intact


def test_the_probe_is_stateless_and_resume_stays_exact(tmp_path):
    full, _, _ = train(MemoryProbe(), epochs=2, run_dir=tmp_path / "full")
    assert not hasattr(MemoryProbe(), "state_dict")
    train(MemoryProbe(), epochs=1, run_dir=tmp_path / "part")
    torch.manual_seed(0)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), 1e-2), F.cross_entropy, seed=0,
                         callbacks=[MemoryProbe()], health=False, run_dir=tmp_path / "part")
    x, y = data()
    trainer.fit(tw.InMemoryLoader(x, y, batch_size=32, seed=0), epochs=2, resume="auto")
    assert all(torch.equal(a, b) for a, b in zip(full.model.parameters(), trainer.model.parameters()))
    lines = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    measured = [r for r in lines if r["kind"] == "memory"]
    assert [r["step"] for r in measured] == [4, 12]  # one per fit: the resumed fit measured its own first steps


def test_the_profilers_own_messages_are_kept_off_stderr_and_everything_else_is_kept(capfd):
    class Shout:
        def on_step_end(self, trainer, **_):
            if trainer.step == 3:
                import os

                os.write(2, b"a line of the user's own\n")

    torch.manual_seed(0)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), 1e-2), F.cross_entropy, seed=0,
                         callbacks=[MemoryProbe(), Shout()], health=False)
    x, y = data()
    trainer.fit(tw.InMemoryLoader(x, y, batch_size=32, seed=0), epochs=1)
    err = capfd.readouterr().err
    assert "a line of the user's own" in err
    assert "profiler_start" not in err and "Memory block of unknown size" not in err


def test_every_trainer_gets_a_probe_that_profiles_on_cuda_only():
    torch.manual_seed(0)
    model = mlp()
    records = Records()
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), 1e-2), F.cross_entropy, seed=0,
                         callbacks=[records], health=False)
    [probe] = [cb for cb in trainer.callbacks if isinstance(cb, MemoryProbe)]
    assert probe.cpu is False
    trainer.fit(tw.InMemoryLoader(*data(), batch_size=32, seed=0), epochs=1)
    assert records.of("memory") == [] and records.of("start")[0]["memory"]["total"] > 0  # the estimate stays


def test_a_fit_that_raises_mid_measurement_leaves_a_process_that_exits_cleanly():
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys, torch, torch.nn.functional as F
        from torch import nn
        import trainwell as tw
        from trainwell.memory import MemoryProbe

        class Boom:
            def on_step_end(self, trainer, **_):
                if trainer.step == 3:  # the probe started after step 1 and is still measuring
                    raise RuntimeError("the user's callback failed")

        model = nn.Linear(20, 4)
        trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), 0.1), F.cross_entropy,
                             callbacks=[MemoryProbe(), Boom()], health=False)
        x, y = torch.randn(256, 20), torch.randint(0, 4, (256,))
        try:
            trainer.fit(tw.InMemoryLoader(x, y, batch_size=32), epochs=1)
        except RuntimeError as e:
            print(e, file=sys.stderr)
            sys.exit(3)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.returncode  # a segfault at exit was -11
    assert "the user's callback failed" in result.stderr


def test_fits_in_two_threads_at_once_measure_one_at_a_time():
    import threading

    outcomes = {}

    def run(name):
        _, _, records = train(MemoryProbe(), epochs=2)
        outcomes[name] = len(records.of("memory"))

    threads = [threading.Thread(target=run, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values())[-1] == 1 and not torch.autograd._profiler_enabled()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_peak_comes_from_the_allocator():
    _, _, records = train(MemoryProbe(), device="cuda")
    [record] = records.of("memory")
    assert record["method"].startswith("cuda: torch.cuda.max_memory_allocated")
    assert 0.7 <= record["estimated"]["total"] / record["measured_peak"] <= 1.3


def test_a_real_runs_report_shows_the_measured_training_peak_and_the_gap(tmp_path):
    from trainwell.report import write_report

    train(MemoryProbe(), run_dir=tmp_path / "run")
    page = write_report(tmp_path / "run").read_text()
    memory = page.split("<h2>Memory</h2>")[1].split("</section>")[0]
    assert "Measured training peak:" in memory and "over 3 steps" in memory
    assert "The estimate is within" in memory and "of the measured training peak" in memory
