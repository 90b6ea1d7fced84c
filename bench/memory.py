"""The memory estimate against the measured training peak, for a recipe built as
``trainwell train RECIPE --batch-size B`` builds it (docs/memory.md holds the table).

    python bench/memory.py                      # mnist at batch 64 and 512
    python bench/memory.py --batch-size 128 --epochs 2 --cost --optimizer sgd

For each batch size: one epoch with a ``MemoryProbe`` (its "memory" record gives the estimate
by part and the measured peak); with ``--cost`` also one epoch without it, the losses compared
bitwise and the two epoch times printed (the probe's cost; noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from trainwell.config import validate
from trainwell.memory import PARTS, MemoryProbe
from trainwell.recipes import get_recipe, recipe_defaults
from trainwell.runtime import resolve_device, seed_everything
from trainwell.trainer import Trainer


class Records:
    """A logger that keeps the records in memory."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def log(self, record: dict[str, Any], step: int) -> None:
        self.records.append(record)


def train(recipe: str, batch_size: int, epochs: int, device: str, probe: bool,
          optimizer: str | None = None, num_samples: int | None = None) -> tuple[dict | None, list, float]:
    """(the memory record or None, the per-epoch training losses, seconds per epoch) of one run."""
    options = {"optimizer": optimizer} if optimizer else {}
    if num_samples:
        options["num_samples"] = num_samples
    config = validate({**recipe_defaults(recipe), "recipe": recipe, "batch_size": batch_size, "epochs": epochs,
                       "device": device, **options})
    torch_device = resolve_device(config.device)
    seed_everything(config.seed)
    parts = get_recipe(recipe).build(config, torch_device)
    records = Records()
    callbacks = [*parts.callbacks, records] + ([MemoryProbe(example_inputs=parts.example_batch)] if probe else [])
    trainer = Trainer(parts.model, parts.optimizer, parts.loss_fn, parts.scheduler, config.clip, device=torch_device,
                      precision=config.precision, callbacks=callbacks, seed=config.seed)
    started = time.perf_counter()
    history = trainer.fit(parts.train, parts.val, epochs=epochs, accumulation_steps=config.accumulate)
    seconds = (time.perf_counter() - started) / epochs
    memory = next((r for r in records.records if r["kind"] == "memory"), None)
    return memory, history["train_loss"], seconds


def row(batch_size: int, record: dict) -> str:
    """One markdown table row: the estimate by part, its total, the measured peak, their ratio."""
    estimated, measured = record["estimated"], record["measured_peak"]
    cells = [f"{(estimated[k] or 0) / 2**20:.2f}" for k in (*PARTS, "total")]
    ratio = estimated["total"] / measured
    return f"| {batch_size} | " + " | ".join(cells) + f" | {measured / 2**20:.2f} | {ratio:.2f} ({ratio - 1:+.0%}) |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="mnist")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--optimizer", help="the recipe's own by default (mnist: adam)")
    parser.add_argument("--num-samples", type=int, help="train on this many samples (text-classify: 320)")
    parser.add_argument("--cost", action="store_true", help="also train without the probe: losses and epoch times")
    args = parser.parse_args()
    rows, costs = [], []
    for batch_size in args.batch_size:
        record, losses, seconds = train(args.recipe, batch_size, args.epochs, args.device, True, args.optimizer,
                                        args.num_samples)
        rows.append(row(batch_size, record))
        print(f"batch {batch_size}: {record['method']}; {record['steps']} steps; at start "
              f"{record['at_start'] / 2**20:.2f} MiB", flush=True)
        if args.cost:
            _, plain_losses, plain_seconds = train(args.recipe, batch_size, args.epochs, args.device, False,
                                                   args.optimizer)
            costs.append(f"batch {batch_size}: losses identical with and without the probe: {losses == plain_losses}; "
                         f"epoch {seconds:.2f} s with it, {plain_seconds:.2f} s without")
    print(f"\n{args.recipe} ({args.optimizer or 'its optimizer'}) on {args.device} (MiB)\n")
    print("| batch | parameters | gradients | optimizer state | activations | optimizer step | estimate | "
          "measured peak | estimate / measured |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    if costs:
        print("\n" + "\n".join(costs))


if __name__ == "__main__":
    main()
