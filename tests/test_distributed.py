"""Distributed training under torchrun on gloo (2 processes on this CPU): the same math as one
process, rank-0-only files, exact resume after SIGKILL, elastic restarts, SIGTERM and NaN on one
rank, two nodes on localhost. Every launch has a timeout, so a hang fails instead of stalling."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import trainwell as tw

JOB = str(Path(__file__).with_name("ddp_job.py"))
# torchrun's agents re-create the gloo group reliably after a restart only with their own store (pytorch #135712).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "NO_COLOR": "1",
       "PYTHONIOENCODING": "utf-8"}
TIMEOUT = 240

pytestmark = pytest.mark.slow


def torchrun(*args, nproc: int = 2, extra: tuple = (), cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *extra,
               *map(str, args)]
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def alone(*args, cwd: Path) -> None:
    result = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "final.safetensors")


def results(out: Path) -> dict:
    return json.loads((out / "history.json").read_text())


def records(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r.get("kind") == kind]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 2-process run with a run directory (3 epochs, a checkpoint every 3 steps)."""
    cwd = tmp_path_factory.mktemp("reference")
    torchrun(JOB, "out", "--run-dir", "run", "--checkpoint-every", 3, "--epochs", 3, cwd=cwd)
    return cwd


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """203 samples, per-process batch 8 x 2 processes, accumulation 3: ragged last batch and window."""
    alone(JOB, "one", "--batch-size", 16, "--accumulate", 3, cwd=tmp_path)
    torchrun(JOB, "two", "--batch-size", 8, "--accumulate", 3, cwd=tmp_path)
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-6
    a, b = results(tmp_path / "one"), results(tmp_path / "two")
    assert a["step"] == b["step"] == 10  # ceil(ceil(203 / 16) / 3) = 5 steps an epoch
    assert b["history"]["train_loss"] == pytest.approx(a["history"]["train_loss"], rel=1e-6)
    # Evaluation over an odd-sized set (51 samples in batches of 16): every sample counted once.
    assert b["test"]["test_samples"] == 51
    assert b["test"]["test_loss"] == pytest.approx(a["test"]["test_loss"], rel=1e-6)
    assert b["test"]["test_acc"] == a["test"]["test_acc"]


def test_a_dataloader_is_sharded_and_only_rank_0_writes(reference, tmp_path):
    torchrun(JOB, "out", "--loader", "dataloader", "--run-dir", "run", "--epochs", 2, cwd=tmp_path)
    epochs = records(tmp_path / "run", "epoch")
    assert [r["epoch"] for r in epochs] == [1, 2]  # one record per epoch, not one per process
    assert all(r["train_samples"] == 203 for r in epochs)  # each sample once an epoch, over both processes
    assert (tmp_path / "run" / "epochs.csv").read_text().count("\n") == 3
    names = sorted(p.name for p in (reference / "run" / "checkpoints").glob("*.ckpt"))
    # 13 steps an epoch: the best (epoch 1) and the last three, each written once by rank 0.
    assert names == ["step-000000013.ckpt", "step-000000033.ckpt", "step-000000036.ckpt", "step-000000039.ckpt"]
    assert len(records(reference / "run", "end")) == 1


# Two kill points in CI; TW_KILL_TRIALS=N runs N (the closing trial count of issue 21).
@pytest.mark.parametrize("seed", range(1, 1 + int(os.environ.get("TW_KILL_TRIALS", "2"))))
def test_sigkill_of_the_whole_job_then_the_same_command_is_bitwise_identical(reference, tmp_path, seed):
    args = (JOB, "out", "--run-dir", "run", "--checkpoint-every", 3, "--epochs", 3)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *map(str, args),
               "--sleep", "0.03"]
    job = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    _wait_for_checkpoints(job, tmp_path / "run", 2 + (seed - 1) % 2)  # at most 3 are kept at a time
    time.sleep(random.Random(seed).uniform(0, 0.2))
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert not (tmp_path / "out").exists(), "the job finished before the kill"
    torchrun(*args, cwd=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(weights(tmp_path / "out").values(),
                                                  weights(reference / "out").values()))
    steps = [r["step"] for r in records(tmp_path / "run", "step")]
    assert steps == sorted(set(steps)), "a resumed run must not duplicate step records"


def _wait_for_checkpoints(job: subprocess.Popen, run_dir: Path, count: int = 1) -> None:
    """Until ``count`` checkpoints of ``run_dir`` are complete (the job must still be running)."""
    deadline = time.monotonic() + TIMEOUT
    while len(list((run_dir / "checkpoints").glob("*.manifest.json"))) < count:
        assert job.poll() is None and time.monotonic() < deadline, "the job ended before it could be stopped"
        time.sleep(0.005)


def _workers(launcher: subprocess.Popen) -> list[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
        if len(pids) == 2:
            return sorted(map(int, pids))
        time.sleep(0.05)
    raise AssertionError("torchrun did not start two workers")


def test_one_rank_killed_under_max_restarts_resumes_by_itself_and_finishes_identical(reference, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--max-restarts=1",
               JOB, "out", "--run-dir", "run", "--checkpoint-every", "3", "--epochs", "3", "--sleep", "0.03"]
    job = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_checkpoints(job, tmp_path / "run")
    os.kill(_workers(job)[1], signal.SIGKILL)
    out, _ = job.communicate(timeout=TIMEOUT)
    assert job.returncode == 0, out[-3000:]
    (first, restarted) = records(tmp_path / "run", "start")
    assert first["resumed_from"] is None and restarted["resumed_from"]["step"] >= 3  # resumed by itself
    assert all(torch.equal(a, b) for a, b in zip(weights(tmp_path / "out").values(),
                                                  weights(reference / "out").values()))


def test_sigterm_to_one_rank_checkpoints_and_every_rank_exits_0(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "trainwell",
               "train", "mnist", "--num-samples", "12000", "--epochs", "2", "--checkpoint-every", "40",
               "--run-dir", "run"]
    job = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_checkpoints(job, tmp_path / "run")
    os.kill(_workers(job)[1], signal.SIGTERM)
    out, _ = job.communicate(timeout=TIMEOUT)
    assert job.returncode == 0, out[-3000:]
    assert "interrupted by a signal to another process after a complete step; checkpoint saved to" in out
    assert "Resume with: trainwell train --resume run" in out
    assert not (tmp_path / "run" / "model.safetensors").exists()
    assert len(sorted((tmp_path / "run" / "checkpoints").glob("*.ckpt"))) == 2  # step 40 and the stop


def test_nan_on_one_rank_is_skipped_on_every_rank_without_a_hang(tmp_path):
    torchrun(JOB, "out", "--nan-rank", 1, "--run-dir", "run", cwd=tmp_path)
    (intervention,) = records(tmp_path / "run", "intervention")
    assert intervention["cause"] == "non-finite loss (nan)" and "skipped the step" in intervention["action"]
    assert results(tmp_path / "out")["step"] == 25  # 26 steps, one skipped, on both ranks alike


@pytest.mark.parametrize("rank", [0, 1])
def test_a_failure_on_one_rank_ends_every_rank_with_its_message(tmp_path, rank):
    started = time.monotonic()
    result = torchrun(JOB, "out", "--fail-rank", rank, cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert f"RuntimeError: rank {rank} failed on purpose" in result.stdout + result.stderr
    assert time.monotonic() - started < 120  # every rank ended: nobody waited at exit for the one that failed
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_of_two_processes_is_refused_by_one(reference):
    checkpoint = sorted((reference / "run" / "checkpoints").glob("*.ckpt"))[-1]
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters()), torch.nn.CrossEntropyLoss(), device="cpu")
    with pytest.raises(tw.CheckpointError, match=r"written by 2 process\(es\) and this run has 1.*--nproc-per-node 2"):
        trainer.load_checkpoint(checkpoint)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_localhost_match_one_node(reference, tmp_path):
    endpoint = f"127.0.0.1:{_free_port()}"
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
               "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", "--rdzv-id=two-nodes",
               JOB, "out", "--run-dir", "run", "--checkpoint-every", "3", "--epochs", "3"]
    nodes = [subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=TIMEOUT)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    one_node, two_nodes = weights(reference / "out"), weights(tmp_path / "out")
    assert max((one_node[k] - two_nodes[k]).abs().max().item() for k in one_node) < 1e-6
