"""``trainwell bench-devices``: seed 000's "GPU vs CPU training speed", measured with trainwell itself.

On each device there is (cpu, then cuda and mps where torch finds them) the recipe is built
as ``trainwell train`` builds it (the registry, the recipe's default config, the same seed,
so every device starts from the same weights) and trained by a ``Trainer`` with no run
directory and verbose off. The in-memory training data is moved to the device first
(``place_on_device``, as ``fit`` does). A short warm-up (``fit`` on the first batches:
kernels loaded, allocator and caches filled, the first-batch checks and the memory probe
done) comes before the clock starts. The timed part is ``train_epoch`` itself, with the
device synchronized once before and once after it: nothing in between waits for the
device but the trainer's own epoch-end summary. The health guard and the gradient-flow
record are off, because each reads a value on the host every step or every 100 (a sync
that would serialise the GPU's queue); ``trainwell train`` has them on. Nothing is written
to disk. Only argparse (and trainwell's errors) load at import: ``trainwell --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import islice
from typing import Any, Iterator

from trainwell.errors import TrainwellError

WARMUP_STEPS = 10  # optimizer steps before the clock starts (fewer if an epoch is shorter)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options (registered by ``trainwell.cli.build_parser``)."""
    from trainwell.recipes import RECIPES

    parser.add_argument("recipe", nargs="?", default="mnist", metavar="RECIPE",
                        help=f"the recipe to time ({', '.join(RECIPES)}; default: mnist)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_at_least_one, default=None, metavar="N",
                        help="whole epochs timed on each device (default: 1)")
    length.add_argument("--steps", type=_at_least_one, default=None, metavar="N",
                        help="time only the first N optimizer steps of an epoch (a quick check); seconds per "
                             "epoch are then extrapolated from them")
    parser.add_argument("--num-samples", type=_at_least_one, default=None, metavar="N",
                        help="train on the first N training samples only (default: all)")
    parser.add_argument("--batch-size", type=_at_least_one, default=None, metavar="N",
                        help="samples per batch (default: the recipe's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def bench_devices(args: argparse.Namespace) -> int:
    """Time the recipe on every available device and print the comparison; exit 1 if a device failed."""
    from trainwell.config import validate
    from trainwell.recipes import recipe_defaults

    given = {name: getattr(args, name) for name in ("batch_size", "num_samples") if getattr(args, name) is not None}
    config = validate({**recipe_defaults(args.recipe), **given, "recipe": args.recipe},
                      {name: f"--{name.replace('_', '-')}" for name in given})
    import torch

    epochs = args.epochs or 1  # a default of None: argparse sees "--epochs 1 --steps 2" as a conflict
    devices = available_devices()
    note = None if len(devices) > 1 else no_gpu_line()
    if not args.json:
        print(f"trainwell bench-devices: recipe {config.recipe}, batch {config.batch_size}, on "
              f"{', '.join(d.type for d in devices)}; {WARMUP_STEPS} warm-up steps, then "
              + (f"{args.steps} steps" if args.steps else f"{epochs} epoch{'s' * (epochs > 1)}")
              + " timed on each")
        if note:
            print(note)
    results, failed = [], False
    for device in devices:
        print(f"timing {device.type} ...", file=sys.stderr, flush=True)
        try:
            results.append(time_device(config, device, epochs, args.steps))
        except TrainwellError:
            raise
        except Exception as e:  # one device failing (out of memory, a driver error) keeps the others' rows
            print(f"trainwell: timing on {device.type} failed: {type(e).__name__}: {e}", file=sys.stderr)
            failed = True
        if device.type == "cuda":
            torch.cuda.empty_cache()
    cpu_rate = next((r["samples_per_s"] for r in results if r["device"] == "cpu"), None)
    for result in results:
        result["speedup_vs_cpu"] = result["samples_per_s"] / cpu_rate if cpu_rate else None
    if args.json:
        print(json.dumps({"recipe": config.recipe, "batch_size": config.batch_size,
                          "num_samples": config.num_samples, "warmup_steps": WARMUP_STEPS,
                          "timed": {"steps": args.steps} if args.steps else {"epochs": epochs},
                          "gpu_available": len(devices) > 1, "note": note, "torch": torch.__version__,
                          "devices": results}, indent=2))
    else:
        print(table(results))
    return 1 if failed else 0


def available_devices() -> list[Any]:
    """cpu first (the reference), then cuda and mps where torch finds them."""
    import torch

    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if torch.backends.mps.is_available():
        devices.append(torch.device("mps"))
    return devices


def no_gpu_line() -> str:
    """The one line said when the CPU is all there is, with the likely reason."""
    import torch

    why = "this torch build has no CUDA support" if torch.version.cuda is None else "torch finds no CUDA GPU"
    return f"No GPU on this machine ({why}, and no Apple MPS): timing the CPU alone."


def time_device(config: Any, device: Any, epochs: int, steps: int | None) -> dict[str, Any]:
    """One device's figures: the recipe built fresh (same seed), warmed up, then timed."""
    from trainwell.data import InMemoryLoader
    from trainwell.recipes import get_recipe
    from trainwell.runtime import place_on_device, seed_everything
    from trainwell.trainer import Trainer

    seed_everything(config.seed)  # as `trainwell train`: the same initial weights on every device
    parts = get_recipe(config.recipe).build(config, device)
    trainer = Trainer(parts.model, parts.optimizer, parts.loss_fn, parts.scheduler, config.clip, device=device,
                      precision=config.precision, callbacks=parts.callbacks, seed=config.seed, health=False,
                      grad_flow_every=None)
    train = parts.train
    if isinstance(train, InMemoryLoader):
        place_on_device(train, trainer.device)  # what fit does: the data resident on the device
    trainer.fit(FirstBatches(train, WARMUP_STEPS, config.seed), epochs=1)
    timed = FirstBatches(train, steps, config.seed) if steps else train
    trained, stepped = trainer.samples_trained, trainer.step
    synchronize(trainer.device)
    started = time.perf_counter()
    for _ in range(1 if steps else epochs):
        loss = trainer.train_epoch(timed)
    synchronize(trainer.device)
    seconds = time.perf_counter() - started
    samples, timed_steps = trainer.samples_trained - trained, trainer.step - stepped
    return {"device": device.type, "name": device_name(trainer.device), "steps": timed_steps, "samples": samples,
            "seconds": seconds, "samples_per_s": samples / max(seconds, 1e-9),
            "seconds_per_epoch": seconds / max(timed_steps, 1) * len(train), "train_loss": loss}


class FirstBatches:
    """The first ``count`` batches of each pass over ``loader``, drawn as the trainer draws them
    (in-memory loaders through their reused input buffers); re-iterable, with a length."""

    def __init__(self, loader: Any, count: int, seed: int):
        self.loader, self.count, self.seed, self.epoch = loader, count, seed, 0

    def __len__(self) -> int:
        return min(self.count, len(self.loader))

    def __iter__(self) -> Iterator:
        from trainwell.data import epoch_batches

        self.epoch += 1
        return islice(epoch_batches(self.loader, seed=self.seed, epoch=self.epoch, reuse=1), len(self))


def synchronize(device: Any) -> None:
    """Wait for the device's queued work (a no-op on the CPU, which runs it as it is issued)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    threads = torch.get_num_threads()
    return f"CPU, {threads} thread{'s' * (threads > 1)}"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def table(results: list[dict[str, Any]]) -> str:
    """device, name, steps timed, samples/s, seconds per epoch, speed-up vs CPU: numbers right-aligned."""
    header = ["device", "name", "steps", "samples/s", "s/epoch", "vs CPU"]
    rows = [[r["device"], r["name"], f"{r['steps']:,}", _rate(r["samples_per_s"]), f"{r['seconds_per_epoch']:.2f}",
             "-" if r["speedup_vs_cpu"] is None else f"{r['speedup_vs_cpu']:.2f}x"] for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))).rstrip() for row in [header, *rows])

