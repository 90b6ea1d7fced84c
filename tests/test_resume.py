"""Exact, crash-safe resume: SIGKILL at a random moment, truncated checkpoints, SIGTERM,
a full disk, a malicious pickle, and a checkpoint from another model."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import trainwell as tw
from trainwell import checkpoint
from resume_harness import bitwise_equal, final_weights, kill_at_random, run_job, truncate_newest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Final weights of uninterrupted runs, per variant (computed once)."""
    root = tmp_path_factory.mktemp("reference")
    cache: dict = {}

    def get(variant: str) -> dict:
        if variant not in cache:
            run_job(root / variant, variant)
            cache[variant] = final_weights(root / variant)
        return cache[variant]

    return get


@pytest.mark.parametrize("variant", ["inmemory", "workers", "accumulate"])
def test_sigkill_then_resume_is_bitwise_identical(tmp_path: Path, references, variant: str) -> None:
    present = kill_at_random(tmp_path / "run", variant, random.Random(variant), step_sleep=0.01)
    assert present > 0, "the job finished before it could be killed; slow it down"
    run_job(tmp_path / "run", variant)
    assert bitwise_equal(final_weights(tmp_path / "run"), references(variant))


def test_truncated_checkpoint_is_skipped_and_resume_stays_exact(tmp_path: Path, references) -> None:
    run_dir = tmp_path / "run"
    present = kill_at_random(run_dir, "dropout", random.Random(3), step_sleep=0.01, min_checkpoints=2)
    assert present >= 2
    newest = truncate_newest(run_dir)
    assert "truncated" in checkpoint.verify(newest)
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("resume_job.py")), str(run_dir), "dropout"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"skipped checkpoint {newest}" in result.stderr
    assert bitwise_equal(final_weights(run_dir), references("dropout"))


def test_sigterm_stops_within_a_step_and_resume_continues_exactly(tmp_path: Path, references) -> None:
    run_dir = tmp_path / "run"
    job = Path(__file__).with_name("resume_job.py")
    process = subprocess.Popen([sys.executable, str(job), str(run_dir), "steplr", "--step-sleep", "0.02"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not any((run_dir / "checkpoints").glob("*.manifest.json")):
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.01)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert time.monotonic() - sent < 5
    assert "interrupted by SIGTERM" in out and "checkpoint saved to" in out
    run_job(run_dir, "steplr")
    assert bitwise_equal(final_weights(run_dir), references("steplr"))
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if json.loads(line).get("kind") == "step"]
    assert steps == sorted(set(steps)), "a resumed run must not duplicate step records"


def _tiny_trainer(run_dir: Path | None = None, width: int = 8, **options) -> tuple[tw.Trainer, tw.InMemoryLoader]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))
    data = tw.InMemoryLoader(torch.randn(64, 4), torch.randint(0, 2, (64,)), batch_size=16)
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                         device="cpu", seed=0, run_dir=run_dir, **options)
    return trainer, data


def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"trainer": {}, "payload": Payload()}, evil)
    trainer, _ = _tiny_trainer()
    with pytest.raises(tw.CheckpointError, match="could run code"):
        trainer.load_checkpoint(evil)
    assert not marker.exists()


def test_a_crafted_pickle_inside_a_safetensors_checkpoint_is_refused(tmp_path: Path) -> None:
    """The plain data rides in the safetensors header; it is read with weights_only too."""
    import base64
    import io

    from safetensors.torch import save_file

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    plain = io.BytesIO()
    torch.save({"state": {"trainer": {}, "payload": Payload()}, "tensors": []}, plain)
    evil = tmp_path / "evil.ckpt"
    save_file({"x": torch.zeros(1)}, evil,
              metadata={"format": checkpoint.FORMAT, "state": base64.b64encode(plain.getvalue()).decode()})
    with pytest.raises(tw.CheckpointError, match="could run code"):
        checkpoint.load(evil)
    assert not marker.exists()


def test_a_checkpoint_is_a_safetensors_file_named_by_state_paths(tmp_path: Path) -> None:
    from safetensors import safe_open

    trainer, data = _tiny_trainer()
    trainer.train_epoch(data)
    path = trainer.save_checkpoint(tmp_path / "a.ckpt")
    with safe_open(path, framework="pt") as f:
        names = set(f.keys())
        assert torch.equal(f.get_tensor("model/0.weight"), trainer.model.state_dict()["0.weight"])
    assert {"model/2.bias", "rng/torch", "rng/python/1"} <= names


def test_any_nested_state_round_trips_exactly(tmp_path: Path) -> None:
    """Keys with slashes (names that would collide), tuples, lists of tensors, dtypes safetensors
    lacks, None, NaN and big ints all come back as they went in."""
    state = {
        "trainer": {"step": 2**62, "loss": float("nan"), "none": None},
        "a/b": torch.arange(3),
        "a": {"b": torch.ones(2, dtype=torch.bfloat16)},
        "tuple": (torch.tensor(True), "text", 1.5),
        "list": [torch.zeros(0), torch.full((2, 2), 7.0).t()],
        "odd": torch.tensor([1 + 2j]),
        7: {0: torch.tensor([2**40], dtype=torch.int64)},
    }
    back = checkpoint.load(checkpoint.save(state, tmp_path / "s.ckpt"))

    def same(a, b) -> bool:
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        if isinstance(a, dict):
            return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
        return a == b or (a != a and b != b)

    assert same(state, back)


def test_checkpoints_of_earlier_versions_still_load(tmp_path: Path) -> None:
    """Before safetensors, a checkpoint was one torch.save file (read with weights_only)."""
    trainer, data = _tiny_trainer()
    trainer.train_epoch(data)
    old = tmp_path / "old.ckpt"
    torch.save(trainer.state_dict(), old)
    fresh, _ = _tiny_trainer()
    with pytest.warns(UserWarning, match="no manifest"):
        fresh.load_checkpoint(old)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, fresh.model.state_dict()[key])


def test_checkpoint_from_a_different_model_names_the_keys(tmp_path: Path) -> None:
    small, data = _tiny_trainer()
    small.train_epoch(data)
    small.save_checkpoint(tmp_path / "small.ckpt")
    wide, _ = _tiny_trainer(width=16)
    with pytest.raises(tw.CheckpointError, match=r"different model.*0\.weight \(8, 4\) vs \(16, 4\)"):
        wide.load_checkpoint(tmp_path / "small.ckpt")


def test_disk_full_while_checkpointing_fails_clearly_and_keeps_the_previous(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_resume import _tiny_trainer
        import trainwell as tw
        trainer, data = _tiny_trainer({str(tmp_path / 'run')!r}, checkpoint_every_steps=2)
        trainer.fit(data, epochs=1)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))  # logs fit, a checkpoint does not
        try:
            trainer.fit(data, epochs=2)
        except tw.CheckpointError as e:
            print(e)
            sys.exit(1)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "could not write checkpoint" in result.stdout and "File too large" in result.stdout
    good = sorted((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert good and all(checkpoint.verify(p) is None for p in good)
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp")), "temporary files must be cleaned up"
    resumed, data = _tiny_trainer(tmp_path / "run")
    assert resumed.resume("auto") == good[-1]
    assert resumed.step == 4


def test_retention_keeps_last_best_and_milestones(tmp_path: Path) -> None:
    trainer, data = _tiny_trainer(tmp_path / "run", checkpoint_every_steps=1, keep_checkpoints=2)
    trainer.run_directory.milestone_every = 2
    trainer.fit(data, data, epochs=4)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    rundir = trainer.run_directory
    assert names[-2:] == ["step-000000015.ckpt", "step-000000016.ckpt"]
    assert rundir.best_checkpoint in names
    assert {"step-000000008.ckpt", "step-000000016.ckpt"} <= set(names)
    assert len(names) <= 2 + 1 + 2


def test_final_weights_load_without_trainwell(tmp_path: Path) -> None:
    trainer, data = _tiny_trainer(tmp_path / "run")
    trainer.fit(data, data, epochs=2)
    script = (f"import sys; sys.modules['trainwell'] = None\n"
              f"from safetensors.torch import load_file\n"
              f"print(sorted(load_file({str(tmp_path / 'run' / 'model.safetensors')!r})))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "0.weight" in result.stdout


def test_cli_sigterm_then_resume_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "trainwell", "train", "xor", "--epochs", "40", "--checkpoint-every", "30"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    reference = subprocess.run([*command, "--run-dir", "reference"], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    process = subprocess.Popen([*command, "--run-dir", "stopped"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    while not any((tmp_path / "stopped" / "checkpoints").glob("*.manifest.json")):
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "interrupted by SIGTERM" in out and "Resume with: trainwell train --resume stopped" in out
    assert not (tmp_path / "stopped" / "model.safetensors").exists(), "the run stopped before its end"
    resumed = subprocess.run([sys.executable, "-m", "trainwell", "train", "--resume", "stopped"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    from safetensors.torch import load_file

    assert bitwise_equal(load_file(tmp_path / "stopped" / "model.safetensors"),
                         load_file(tmp_path / "reference" / "model.safetensors"))


@pytest.mark.parametrize("recipe", ["regression", "ranking"])
def test_cli_sigterm_then_resume_is_exact_for_the_regression_and_ranking_recipes(tmp_path: Path, recipe: str) -> None:
    """Batch 4 and checkpoints every 25 steps: a run of a few thousand steps that SIGTERM lands in the middle of."""
    from safetensors.torch import load_file

    command = [sys.executable, "-m", "trainwell", "train", recipe, "--epochs", "12", "--batch-size", "4",
               "--checkpoint-every", "25"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    reference = subprocess.run([*command, "--run-dir", "reference"], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    process = subprocess.Popen([*command, "--run-dir", "stopped"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    while not any((tmp_path / "stopped" / "checkpoints").glob("*.manifest.json")):
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "interrupted by SIGTERM" in out
    assert not (tmp_path / "stopped" / "model.safetensors").exists(), "the run stopped before its end"
    resumed = subprocess.run([sys.executable, "-m", "trainwell", "train", "--resume", "stopped"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert bitwise_equal(load_file(tmp_path / "stopped" / "model.safetensors"),
                         load_file(tmp_path / "reference" / "model.safetensors"))
    epochs = [json.loads(line) for line in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()
              if json.loads(line).get("kind") == "epoch"]
    reference_epochs = [json.loads(line) for line in (tmp_path / "reference" / "metrics.jsonl").read_text()
                        .splitlines() if json.loads(line).get("kind") == "epoch"]
    metric = "eval_r2" if recipe == "regression" else "eval_ndcg10"
    assert [e[metric] for e in epochs] == [e[metric] for e in reference_epochs]
