"""Curriculum learning: the competence schedule, easy-first pools, full coverage at competence 1,
sharding, exact mid-epoch resume (SIGTERM and SIGKILL), per-sample losses, and every error path."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trainwell as tw
from trainwell.cli import main
from trainwell.curriculum import per_sample_loss, self_taught
from trainwell.distributed import Group, Shard
from trainwell.errors import Interrupted
from trainwell.runtime import rng_state

from test_cli_help import usage_error  # the one line a usage error prints (exit 2)


def data(n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=generator)
    return x, (x[:, 0] > 0).long()


def indices(loader: tw.InMemoryLoader, epoch: int, **kwargs) -> torch.Tensor:
    """The sample indices an epoch serves (the first tensor is the index itself)."""
    return torch.cat([batch[0] for batch in loader.batches(epoch, **kwargs)])


def index_curriculum(n: int = 100, difficulty: torch.Tensor | None = None, **options) -> tw.Curriculum:
    ids = torch.arange(n)
    return tw.Curriculum(ids, ids, difficulty=ids.flip(0).float() if difficulty is None else difficulty, **options)


def test_competence_follows_the_square_root_schedule() -> None:
    loader = index_curriculum(100, batch_size=10, initial=0.2, full_at=4)
    expected = [math.sqrt(e * (1 - 0.04) / 4 + 0.04) for e in range(4)] + [1.0, 1.0]
    assert [loader.competence(e) for e in range(6)] == pytest.approx(expected)
    assert [round(loader.competence(e), 4) for e in range(5)] == [0.2, 0.5292, 0.7211, 0.8718, 1.0]
    assert [loader.pool_size(e) for e in range(6)] == [20, 53, 73, 88, 100, 100]
    assert len(loader) == 10  # every epoch as long as the plain loader's


def test_each_epoch_draws_from_the_easiest_pool_evenly() -> None:
    loader = index_curriculum(100, batch_size=8, initial=0.2, full_at=4)  # difficulty 99..0: sample 99 easiest
    for epoch in range(4):
        served, pool = indices(loader, epoch), loader.pool_size(epoch)
        assert len(served) == 100
        assert set(served.tolist()) == set(range(100 - pool, 100))  # exactly the easiest `pool` samples
        counts = torch.bincount(served, minlength=100)[100 - pool:]
        assert counts.min() >= 100 // pool and counts.max() <= math.ceil(100 / pool)


def test_ties_and_random_scores_rank_easiest_first() -> None:
    scores = torch.tensor([0.5, 0.1, 0.5, 0.9, 0.1, 0.3])
    loader = index_curriculum(6, difficulty=scores, batch_size=2, initial=0.5, full_at=2)
    assert loader.ranked.tolist() == [1, 4, 5, 0, 2, 3]  # stable: equal scores keep index order
    assert set(indices(loader, 0).tolist()) == {1, 4, 5}


def test_every_sample_once_per_epoch_at_full_competence_as_the_plain_loader() -> None:
    loader = index_curriculum(100, batch_size=16, seed=3, initial=0.3, full_at=2)
    plain = tw.InMemoryLoader(torch.arange(100), torch.arange(100), batch_size=16, seed=3)
    for epoch in (2, 3, 7):
        served = indices(loader, epoch)
        assert sorted(served.tolist()) == list(range(100))
        assert torch.equal(served, indices(plain, epoch))


def test_the_order_is_a_pure_function_of_seed_and_epoch() -> None:
    loader = index_curriculum(100, batch_size=8, initial=0.25, full_at=3)
    first = indices(loader, 1, seed=5)
    assert torch.equal(first, indices(loader, 1, seed=5))
    assert torch.equal(first[5 * 8:], indices(loader, 1, seed=5, start=5))  # resuming at batch 5
    assert not torch.equal(first, indices(loader, 1, seed=6))
    loader.seed = 9  # the loader's own seed wins over the trainer's
    assert torch.equal(indices(loader, 1, seed=5), indices(loader, 1, seed=77))


def test_two_shards_split_each_global_batch_of_the_one_process_order() -> None:
    one = index_curriculum(102, batch_size=10, initial=0.3, full_at=3)
    parts = []
    for rank in (0, 1):
        loader = index_curriculum(102, batch_size=5, initial=0.3, full_at=3)
        shard = Shard(loader.num_samples, loader.batch_size, Group(rank, 2, rank))
        parts.append(list(loader.batches(1, seed=4, shard=shard)))
    assert len(parts[0]) == len(parts[1]) == len(one)
    for global_batch, (a, b) in zip(one.batches(1, seed=4), zip(*parts)):
        assert torch.equal(torch.cat([a[0], b[0]]), global_batch[0])


@pytest.mark.parametrize("options, message", [
    ({"difficulty": torch.zeros(99)}, "one score per sample: shape (100,), got (99,)"),
    ({"difficulty": torch.zeros(100, 1)}, "one score per sample"),
    ({"difficulty": torch.tensor([0.0] * 50 + [float("nan")] * 50)}, "50 NaN or infinite score(s), the first at sample 50"),
    ({"difficulty": torch.zeros(100, dtype=torch.bool)}, "real numbers"),
])
def test_bad_difficulty_is_a_data_error_naming_the_problem(options, message) -> None:
    with pytest.raises(tw.DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        index_curriculum(100, **options)


def test_a_bad_score_function_fails_when_the_scores_arrive() -> None:
    loader = index_curriculum(10, difficulty=lambda ids, _: torch.ones(3))
    with pytest.raises(tw.DataError, match="one score per sample"):
        next(loader.batches(0))


@pytest.mark.parametrize("options, message", [
    ({"initial": 0.0}, "initial .* must be in \\(0, 1\\], got 0.0"),
    ({"initial": 1.5}, "initial .* got 1.5"),
    ({"full_at": 0}, "full_at .* at least 1, got 0"),
    ({"full_at": 2.5}, "full_at .* got 2.5"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
])
def test_bad_schedule_options_are_config_errors(options, message) -> None:
    with pytest.raises(tw.ConfigError, match=message):
        index_curriculum(100, **options)


def test_per_sample_loss_for_functions_modules_and_plain_callables() -> None:
    x, y = data(50)
    model = nn.Linear(6, 2)
    logits = model(x).detach()
    expected = F.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(per_sample_loss(model, F.cross_entropy, x, y, batch_size=16), expected)
    assert torch.allclose(per_sample_loss(model, nn.CrossEntropyLoss(), x, y), expected)
    plain = lambda out, target: F.cross_entropy(out, target)  # noqa: E731 - no reduction option: one by one
    assert torch.allclose(per_sample_loss(model, plain, x, y), expected)
    binary = nn.Linear(6, 1)
    targets = y.float().unsqueeze(1)
    assert torch.allclose(per_sample_loss(binary, nn.BCEWithLogitsLoss(), x, targets),
                          F.binary_cross_entropy_with_logits(binary(x).detach(), targets, reduction="none")[:, 0])
    assert model.training  # the model's mode is left as it was


def test_self_taught_scores_are_a_function_of_the_seed_and_leave_every_rng_alone() -> None:
    x, y = data(200)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    make = lambda params: torch.optim.Adam(params, lr=1e-2)  # noqa: E731
    score = self_taught(model, make, F.cross_entropy, batch_size=32, seed=0)
    state = rng_state()
    first = score(x, y)
    assert torch.equal(rng_state()["torch"], state["torch"])
    torch.manual_seed(123)  # later, from another random state (as a resumed run is): the same scores
    assert torch.equal(first, self_taught(model, make, F.cross_entropy, batch_size=32, seed=0)(x, y))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # a copy was trained
    untrained = per_sample_loss(model, F.cross_entropy, x, y)
    assert first.mean() < untrained.mean()  # the reference learned something


def tiny_run(run_dir: Path | None, callbacks=(), epochs: int = 3, resume=None, scheduler=None) -> tw.Trainer:
    """A curriculum run with dropout, self-taught scores, a cosine schedule and mid-epoch checkpoints."""
    x, y = data(300)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scores = self_taught(model, lambda p: torch.optim.Adam(p, lr=1e-2), F.cross_entropy, batch_size=32, seed=0)
    train = tw.Curriculum(x[:240], y[:240], difficulty=scores, batch_size=16, initial=0.25, full_at=2)
    trainer = tw.Trainer(model, optimizer, F.cross_entropy, scheduler or "cosine", device="cpu", seed=4,
                         run_dir=run_dir, checkpoint_every_steps=4 if run_dir else None, callbacks=callbacks)
    trainer.fit(train, tw.InMemoryLoader(x[240:], y[240:], batch_size=60, shuffle=False), epochs=epochs,
                resume=resume)
    return trainer


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_trains_with_a_constant_number_of_steps_per_epoch() -> None:
    trainer = tiny_run(None, epochs=3)
    assert trainer.step == 3 * 15 and trainer.batches_per_epoch == 15
    assert len(trainer.history["train_loss"]) == 3 and trainer.optimizer.param_groups[0]["lr"] == 0.0


def test_sigterm_mid_epoch_then_resume_auto_is_bitwise_identical(tmp_path: Path) -> None:
    class TermAt:
        def on_step_end(self, trainer, **_):
            if trainer.step == 22:  # epoch 2 (competence 0.66), batch 7 of 15
                os.kill(os.getpid(), signal.SIGTERM)

    straight = tiny_run(None)
    with pytest.raises(Interrupted):
        tiny_run(tmp_path / "run", [TermAt()])
    resumed = tiny_run(tmp_path / "run", resume="auto")
    assert resumed.resumed_from["epoch"] == 1 and resumed.resumed_from["batch"] == 7
    assert same_weights(resumed.model, straight.model)
    assert resumed.history["train_loss"] == straight.history["train_loss"]


JOB = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_curriculum import tiny_run

    class KillAt:
        def on_step_end(self, trainer, **_):
            if trainer.step == 23:  # epoch 2 (competence 0.66), batch 8 of 15
                trainer.wait_for_checkpoints()  # the step-20 checkpoint is on disk; steps 21-23 are lost
                os.kill(os.getpid(), signal.SIGKILL)

    tiny_run(Path(sys.argv[1]), [KillAt()])
""")


@pytest.mark.slow  # a subprocess that imports torch: ~5 s alone, 15 s on a loaded 2-core machine
def test_sigkill_mid_epoch_then_resume_auto_is_bitwise_identical(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text(JOB.format(tests=str(Path(__file__).parent)))
    killed = subprocess.run([sys.executable, str(job), str(tmp_path / "run")], capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = tiny_run(tmp_path / "run", resume="auto")
    assert resumed.resumed_from["step"] == 20 and resumed.resumed_from["batch"] == 5
    assert same_weights(resumed.model, tiny_run(None).model)


def test_cli_bad_curriculum_value_is_one_line_and_exit_2(capsys) -> None:
    line = usage_error(capsys, "train", "mnist", "--curriculum", "los")
    assert "--curriculum: invalid choice: 'los'" in line and "did you mean 'loss'?" in line


def test_config_file_bad_curriculum_value_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("recipe: xor\ncurriculum: hardest-first\n")
    assert main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    line = capsys.readouterr().err.strip()
    assert line.count("\n") == 0
    assert "curriculum" in line and "'none' or 'loss'" in line and "hardest-first" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("recipe", ["ranking", "text-classify"])
def test_recipes_without_samples_to_order_refuse_it(tmp_path: Path, capsys, recipe: str) -> None:
    if recipe == "text-classify":
        pytest.importorskip("transformers")
    assert main(["train", recipe, "--curriculum", "loss", "--run-dir", str(tmp_path / "run")]) == 2
    line = capsys.readouterr().err.strip()
    assert line.count("\n") == 0 and f"curriculum 'loss' does not apply to the {recipe} recipe" in line
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_cli_trains_xor_with_a_loss_curriculum(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", "xor", "--curriculum", "loss", "--epochs", "4", "--run-dir", str(run_dir)]) == 0
    assert "curriculum: loss" in (run_dir / "config.yaml").read_text()
    out = capsys.readouterr().out
    assert "Epoch [4/4]" in out and "Test: loss" in out
