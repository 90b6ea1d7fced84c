"""A small training job for the kill-and-resume harness (run as a subprocess).

    python tests/resume_job.py RUN_DIR VARIANT [--step-sleep S]

Trains with ``resume="auto"`` in RUN_DIR and, when finished, writes the final weights
to RUN_DIR/final.safetensors. Variants pick the loader and the features under test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainwell as tw
from trainwell.errors import Interrupted

VARIANTS = ("inmemory", "dataloader", "workers", "dropout", "steplr", "warmup_cosine", "accumulate", "bf16")


class Pause:
    """Slows each step a little so a kill can land anywhere in the run."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_step_end(self, trainer, **_):
        time.sleep(self.seconds)


def build(variant: str, run_dir: Path, step_sleep: float) -> tuple:
    torch.manual_seed(0)
    x = torch.randn(1200, 16)
    y = (x[:, :4].sum(dim=1) > 0).long() + 2 * (x[:, 4] > 0).long()
    val = tw.InMemoryLoader(x[1000:], y[1000:], batch_size=100, shuffle=False)
    dropout = nn.Dropout(0.3) if variant == "dropout" else nn.Identity()
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), dropout, nn.Linear(32, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = None
    if variant == "steplr":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    elif variant == "warmup_cosine":
        scheduler = ("warmup-cosine", {"warmup_steps": 20})
    if variant in ("dataloader", "workers"):
        train = DataLoader(TensorDataset(x[:1000], y[:1000]), batch_size=32, shuffle=True,
                           num_workers=2 if variant == "workers" else 0)
    else:
        train = tw.InMemoryLoader(x[:1000], y[:1000], batch_size=32)
    trainer = tw.Trainer(
        model, optimizer, nn.CrossEntropyLoss(), scheduler, grad_clip_norm=5.0, device="cpu",
        precision="bf16" if variant == "bf16" else "32", seed=7, run_dir=run_dir,
        checkpoint_every_steps=5, log_every_steps=10,
        callbacks=[tw.EarlyStopping(patience=50), Pause(step_sleep)],
    )
    return trainer, train, val


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    trainer, train, val = build(args.variant, args.run_dir, args.step_sleep)
    accumulation = 3 if args.variant == "accumulate" else 1
    try:
        trainer.fit(train, val, epochs=args.epochs, resume="auto", accumulation_steps=accumulation)
    except Interrupted as stop:
        print(stop, flush=True)
        sys.exit(0)
    save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, args.run_dir / "final.safetensors")


if __name__ == "__main__":
    main()
