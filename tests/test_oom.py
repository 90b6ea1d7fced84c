"""Out-of-memory proof training: a forward that runs out of memory is retried on the same samples
in micro-batches of half the size, with the same update; the size is kept, checkpointed, and
one sample that does not fit is a clear error (exit 1 from the CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainwell as tw
from trainwell import oom
from trainwell.data import split
from trainwell.distributed import Group
from trainwell.errors import TrainingError

pytestmark = pytest.mark.filterwarnings("ignore:out of memory")


class Limited(nn.Module):
    """An MLP whose forward raises torch.OutOfMemoryError on more than ``limit`` samples (in training,
    or in evaluation with ``eval_limit``); ``sizes`` records every training forward's batch size."""

    def __init__(self, limit: int | None = None, eval_limit: int | None = None, dropout: float = 0.0,
                 error: Exception | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))
        self.limit, self.eval_limit, self.error = limit, eval_limit, error
        self.sizes: list[int] = []

    def forward(self, x):
        if self.training:  # not the memory estimate's probe (an eval forward before training)
            self.sizes.append(len(x))
        out = self.net(x)  # the dropout draws happen before the failure: the retry must rewind them
        limit = self.limit if self.training else self.eval_limit
        if limit is not None and len(x) > limit:
            raise self.error or torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {len(x)} MiB (GPU 0; fake)")
        return out


def data(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def loader(kind: str, batch_size: int = 64):
    x, y = data()
    if kind == "in-memory":
        return tw.InMemoryLoader(x, y, batch_size=batch_size)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)


def trainer_for(model: nn.Module, run_dir: Path | None = None) -> tw.Trainer:
    torch.manual_seed(0)
    for p in model.parameters():  # the same start for every model of these tests
        nn.init.normal_(p, std=0.3, generator=torch.Generator().manual_seed(p.numel()))
    return tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-2), nn.CrossEntropyLoss(), device="cpu",
                      seed=0, run_dir=run_dir, health=False)


def records(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


@pytest.mark.parametrize("kind", ["in-memory", "dataloader"])
@pytest.mark.parametrize("accumulation", [1, 2])
def test_out_of_memory_halves_the_micro_batch_and_keeps_the_update(kind, accumulation, tmp_path):
    reference = trainer_for(Limited())
    reference.fit(loader(kind), epochs=2, accumulation_steps=accumulation)
    model = Limited(limit=16)
    faulted = trainer_for(model, tmp_path)
    faulted.fit(loader(kind), epochs=2, accumulation_steps=accumulation)

    assert faulted.step == reference.step
    assert faulted.micro_batch_size == 16
    for mine, theirs in zip(faulted.model.parameters(), reference.model.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.tensor(faulted.history["train_loss"]),
                               torch.tensor(reference.history["train_loss"]), rtol=1e-6, atol=1e-6)
    # 64 fails once, then 32 once; every later forward has at most 16 samples (the last batch is ragged: 8)
    assert model.sizes[:2] == [64, 32] and max(model.sizes[2:]) == 16
    interventions = records(tmp_path, "intervention")
    assert [r["action"].split(",")[0] for r in interventions] == ["micro-batch 64 -> 32", "micro-batch 32 -> 16"]
    assert interventions[0]["cause"].startswith("out of memory on cpu (CUDA out of memory.")
    assert interventions[0]["step"] == 0 and f"accumulation {accumulation} -> {2 * accumulation}" in \
        interventions[0]["action"]
    assert any("retrying the same samples as micro-batches of 16" in r["message"] for r in records(tmp_path, "notice"))


def test_the_retry_rewinds_the_random_state(tmp_path):
    """With dropout drawing before the failure, the retried step is bitwise the run that used
    micro-batches of 16 from the start: the failed attempts' draws were rewound."""
    faulted = trainer_for(Limited(limit=16, dropout=0.3))
    faulted.fit(loader("in-memory"), epochs=1)
    preset = trainer_for(Limited(dropout=0.3))
    preset.micro_batch_size = 16
    preset.fit(loader("in-memory"), epochs=1)
    for mine, theirs in zip(faulted.model.parameters(), preset.model.parameters()):
        assert torch.equal(mine, theirs)


def test_the_micro_batch_size_survives_a_resume(tmp_path):
    first = trainer_for(Limited(limit=16), tmp_path / "a")
    first.fit(loader("in-memory"), epochs=1)
    first.save_checkpoint(tmp_path / "after-split.pt")

    model = Limited(limit=16)
    resumed = trainer_for(model, tmp_path / "b")
    resumed.load_checkpoint(tmp_path / "after-split.pt")
    assert resumed.micro_batch_size == 16
    resumed.fit(loader("in-memory"), epochs=2)
    assert max(model.sizes) == 16 and resumed.epoch == 2
    assert records(tmp_path / "b", "intervention") == []


def test_a_checkpoint_without_a_micro_batch_size_loads_as_whole_batches(tmp_path):
    trainer = trainer_for(Limited())
    saved = trainer.state_dict()
    del saved["trainer"]["micro_batch_size"], saved["trainer"]["eval_micro_batch_size"]
    trainer.micro_batch_size = 8
    trainer.load_state_dict(saved)
    assert trainer.micro_batch_size is None and trainer.eval_micro_batch_size is None


def test_a_single_sample_that_does_not_fit_is_a_training_error(tmp_path):
    trainer = trainer_for(Limited(limit=0), tmp_path)
    with pytest.raises(TrainingError, match=r"^a single sample does not fit in memory on cpu: CUDA out of memory"):
        trainer.fit(loader("in-memory", batch_size=4), epochs=1)
    assert records(tmp_path, "end")[-1]["status"].startswith("failed: a single sample does not fit")


def test_the_cli_exits_1_when_a_single_sample_does_not_fit(tmp_path, monkeypatch, capsys):
    """Through ``trainwell train xor`` with the recipe's model swapped for one that never fits."""
    import trainwell.recipes.xor as xor
    from trainwell.cli import main

    class NeverFits(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

    original = xor.assemble
    monkeypatch.setattr(xor, "assemble", lambda config, device, model, *rest: original(
        config, device, NeverFits(model), *rest))
    code = main(["train", "xor", "--epochs", "1", "--run-dir", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert "a single sample does not fit in memory on cpu: CUDA out of memory" in err
    assert "Traceback" not in err


def test_evaluation_out_of_memory_halves_the_evaluation_batch_only(tmp_path):
    val_x, val_y = data(50, seed=1)
    reference = trainer_for(Limited())
    expected = reference.evaluate(tw.InMemoryLoader(val_x, val_y, batch_size=32, shuffle=False))

    model = Limited(eval_limit=8)
    trainer = trainer_for(model, tmp_path)
    trainer.fit(loader("in-memory"), tw.InMemoryLoader(val_x, val_y, batch_size=32, shuffle=False), epochs=1)
    assert trainer.eval_micro_batch_size == 8 and trainer.micro_batch_size is None
    fresh = trainer_for(Limited(eval_limit=8))
    assert fresh.evaluate(tw.InMemoryLoader(val_x, val_y, batch_size=32, shuffle=False)) == pytest.approx(
        expected, rel=1e-6)
    assert [r["action"].split(" (")[0] for r in records(tmp_path, "intervention")] == [
        "evaluation batch 32 -> 16", "evaluation batch 16 -> 8"]


@pytest.mark.parametrize("message", ["CUDA error: device-side assert triggered",
                                     "CUDA error: out of memory; device-side assert triggered",
                                     "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling cublasSgemm"])
def test_an_error_that_is_not_out_of_memory_propagates_unchanged(message):
    error = RuntimeError(message)
    model = Limited(limit=16, error=error)
    trainer = trainer_for(model)
    with pytest.raises(RuntimeError) as raised:
        trainer.fit(loader("in-memory"), epochs=1)
    assert raised.value is error
    assert model.sizes == [64] and trainer.micro_batch_size is None


def test_is_out_of_memory():
    assert oom.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert oom.is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)"))
    assert not oom.is_out_of_memory(torch.OutOfMemoryError("device-side assert triggered"))
    assert not oom.is_out_of_memory(ValueError("out of memory"))
    assert not oom.is_out_of_memory(RuntimeError("expected scalar type Float"))


def test_split_keeps_tuple_and_dict_batches_together():
    x, y = torch.arange(10).reshape(5, 2), torch.arange(5)
    parts = split((x, y, 5), 2)
    assert [n for _, _, n in parts] == [2, 2, 1]
    assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    batch = {"input_ids": x, "labels": y, "names": list("abcde"), "scale": 2.0}
    inputs, targets, n = split((batch, y, 5), 3)[1]
    assert n == 2 and inputs["names"] == ["d", "e"] and inputs["scale"] == 2.0
    assert torch.equal(inputs["input_ids"], x[3:]) and torch.equal(targets, y[3:])
    assert split((x, y, 5), None)[0][0] is x and split((x, y, 5), 8)[0][0] is x


def test_out_of_memory_in_distributed_training_is_refused_clearly():
    trainer = trainer_for(Limited())
    trainer.group = Group(rank=1, world_size=2, local_rank=1)
    with pytest.raises(TrainingError, match=r"out of memory on cpu \(rank 1\) at micro-batch 64: .*under torchrun"):
        oom.halve(trainer, "CUDA out of memory", [64], None, "micro-batch")
    # evaluation has no collective until its sums: each process may halve its own evaluation batch
    assert oom.halve(trainer, "CUDA out of memory", [64], None, "evaluation batch") == 32


@pytest.mark.slow
def test_out_of_memory_on_one_rank_stops_the_job_without_a_hang(tmp_path):
    job = tmp_path / "job.py"
    job.write_text(textwrap.dedent("""
        import torch, trainwell as tw
        from torch import nn

        class OnRank(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Linear(8, 3)

            def forward(self, x):
                import torch.distributed as dist
                if dist.get_rank() == 1 and len(x) > 16:
                    raise torch.OutOfMemoryError("CUDA out of memory (fake, rank 1 only)")
                return self.net(x)

        model = OnRank()
        trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                             device="cpu", seed=0, health=False)
        trainer.fit(tw.InMemoryLoader(torch.randn(256, 8), torch.randint(0, 3, (256,)), batch_size=32), epochs=1)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                             str(job)], env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode != 0
    assert "out of memory on cpu (rank 1) at micro-batch 32" in result.stdout + result.stderr
