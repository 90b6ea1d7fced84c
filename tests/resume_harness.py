"""Kill-and-resume harness: SIGKILL a training job at a random moment, resume it, and
compare its final weights with an uninterrupted run using ``torch.equal`` on every tensor.

    python tests/resume_harness.py --trials 24            # all variants, round robin
    python tests/resume_harness.py --variants workers --trials 3
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from trainwell import checkpoint

JOB = Path(__file__).with_name("resume_job.py")
VARIANTS = ("inmemory", "dataloader", "workers", "dropout", "steplr", "warmup_cosine", "accumulate", "bf16")


def run_job(run_dir: Path, variant: str, step_sleep: float = 0.0, timeout: float = 300) -> None:
    """Run the job to completion (resuming whatever is in ``run_dir``)."""
    result = subprocess.run([sys.executable, str(JOB), str(run_dir), variant, "--step-sleep", str(step_sleep)],
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"job {variant} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def kill_at_random(run_dir: Path, variant: str, rng: random.Random, step_sleep: float,
                   min_checkpoints: int = 1) -> int:
    """Start the job, SIGKILL it (and its workers) at a random moment after ``min_checkpoints`` exist.

    Returns the number of checkpoints on disk when it was killed (0: it finished first).
    """
    process = subprocess.Popen([sys.executable, str(JOB), str(run_dir), variant, "--step-sleep", str(step_sleep)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoints = run_dir / "checkpoints"
    deadline = time.monotonic() + 120
    while len(list(checkpoints.glob("*.manifest.json"))) < min_checkpoints and process.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 1.5))
    finished = process.poll() is not None
    if not finished:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return 0 if finished else len(list(checkpoints.glob("*.ckpt")))


def truncate_newest(run_dir: Path) -> Path:
    """Cut the newest complete checkpoint file (one with its manifest) in half, as a crash in the
    middle of a copy would. (A kill can land between a file's rename and its manifest's: that
    newer file is then skipped as unfinished, a different path.)"""
    complete = [p for p in (run_dir / "checkpoints").glob("*.ckpt") if checkpoint.manifest_path(p).exists()]
    newest = sorted(complete)[-1]
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    return newest


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "final.safetensors")


def bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def trial(root: Path, variant: str, reference: dict, rng: random.Random, truncate: bool = False,
          step_sleep: float = 0.01) -> tuple[bool, int]:
    """One kill + resume; (bitwise equal to the reference?, checkpoints present at the kill)."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=root))
    present = kill_at_random(run_dir, variant, rng, step_sleep)
    if truncate and present:
        truncate_newest(run_dir)
    run_job(run_dir, variant)
    return bitwise_equal(final_weights(run_dir), reference), present


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=len(VARIANTS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truncate", action="store_true", help="also truncate the newest checkpoint after the kill")
    args = parser.parse_args()
    variants = args.variants.split(",")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        references = {}
        for variant in variants:
            run_dir = root / f"reference-{variant}"
            run_job(run_dir, variant)
            references[variant] = final_weights(run_dir)
        results = []
        for i in range(args.trials):
            variant = variants[i % len(variants)]
            equal, present = trial(root, variant, references[variant], rng, truncate=args.truncate)
            results.append((variant, equal, present))
            print(f"trial {i + 1:3d}  {variant:14s} killed with {present} checkpoints on disk  "
                  f"{'bitwise equal' if equal else 'DIFFERENT'}", flush=True)
    equal = sum(1 for _, ok, _ in results if ok)
    print(f"{equal}/{len(results)} trials bitwise equal to the uninterrupted run")
    sys.exit(0 if equal == len(results) else 1)


if __name__ == "__main__":
    main()
