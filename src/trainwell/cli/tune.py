"""``trainwell lr-find`` and ``trainwell train --lr suggested``: the LR range test on a recipe.

The recipe is built as ``trainwell train`` builds it (same config resolution, seed, batch
size, accumulation, precision, clipping), the range test runs on a trainer without a run
directory, and only ``lr_find.png`` and ``lr_find.json`` are written.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from trainwell.cli.train import RUNS, resolve_config
from trainwell.config import FIELDS, TrainConfig
from trainwell.errors import ConfigError

PLOT, RECORD = "lr_find.png", "lr_find.json"
OPTION_NAMES = {"min_lr": "--min-lr", "max_lr": "--max-lr", "num_steps": "--num-steps", "accumulation_steps": "--accumulate"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The range test's own options (the config options are added beside them)."""
    parser.add_argument("--min-lr", type=float, default=1e-7, metavar="X", help="first learning rate (default: 1e-7)")
    parser.add_argument("--max-lr", type=float, default=10.0, metavar="X", help="last learning rate (default: 10)")
    parser.add_argument("--num-steps", type=int, default=100, metavar="N",
                        help="optimizer steps of the sweep, both ends included (default: 100)")


def lr_find_command(args: argparse.Namespace) -> int:
    """Run the range test on the recipe or config file, print the suggestion, write the plot and record."""
    from trainwell.lr_finder import check_options
    from trainwell.rundir import ensure_writable
    from trainwell.runtime import check_precision, resolve_device

    args = argparse.Namespace(**{**vars(args), "resume": None, "resume_or_start": False})
    config, _, _ = resolve_config(args)
    check_options(args.min_lr, args.max_lr, args.num_steps, config.accumulate, OPTION_NAMES)
    run_dir = Path(config.run_dir) if config.run_dir else RUNS / f"{config.recipe}-lr-find-{time.strftime('%Y%m%d-%H%M%S')}"
    device = resolve_device(config.device)
    check_precision(config.precision, device)
    ensure_writable(run_dir)
    print(f"trainwell: lr-find on recipe {config.recipe} ({device.type}): learning rate from {args.min_lr:g} to "
          f"{args.max_lr:g} over {args.num_steps} steps of batch {config.batch_size}"
          + (f" x {config.accumulate} micro-batches" if config.accumulate > 1 else ""))
    result = find(config, device, args.min_lr, args.max_lr, args.num_steps)
    print(suggestion_line(result))
    write(result, config, device, run_dir)
    if result.suggestion is not None:
        print(f"Train with it: trainwell train {config.recipe} --lr {result.suggestion:.2e} "
              "(or --lr suggested, which runs this first)")
    print(f"Wrote {run_dir / PLOT} and {run_dir / RECORD}")
    return 0


def resolve_suggested_lr(config: TrainConfig, device: Any, run_dir: Path | None = None) -> float:
    """The learning rate for ``trainwell train --lr suggested``: the range test's suggestion with the
    default sweep, printed; plot and record go into ``run_dir`` when given. No clear valley is a
    ConfigError (exit 2) telling the user to give ``--lr`` a number."""
    result = find(config, device)
    print(suggestion_line(result) + ("; training with it" if result.suggestion is not None else ""))
    if run_dir is not None:
        from trainwell.rundir import ensure_writable

        ensure_writable(run_dir)
        write(result, config, device, run_dir)
    if result.suggestion is None:
        where = f" (see {run_dir / PLOT})" if run_dir is not None else ""
        raise ConfigError(f"--lr suggested: the LR finder found {result.reason.removeprefix('no clear valley: ')} "
                          f"and suggests nothing{where}; give --lr a number")
    return float(f"{result.suggestion:.2e}")  # the rate as printed, so the run and its config.yaml agree


def find(config: TrainConfig, device: Any, min_lr: float = 1e-7, max_lr: float = 10.0, num_steps: int = 100) -> Any:
    """The range test on a freshly built recipe, seeded as ``trainwell train`` seeds it."""
    from trainwell.lr_finder import lr_find
    from trainwell.recipes import get_recipe
    from trainwell.runtime import seed_everything
    from trainwell.trainer import Trainer

    if not isinstance(config.lr, float):  # "suggested": the sweep sets the rate of every step itself
        config = replace(config, lr=FIELDS["lr"].default)
    seed_everything(config.seed)
    parts = get_recipe(config.recipe).build(config, device)
    trainer = Trainer(parts.model, parts.optimizer, parts.loss_fn, None, config.clip, device=device,
                      precision=config.precision, seed=config.seed, health=False, grad_flow_every=None)
    return lr_find(trainer, parts.train, min_lr=min_lr, max_lr=max_lr, num_steps=num_steps,
                   accumulation_steps=config.accumulate)


def suggestion_line(result: Any) -> str:
    """'Suggested learning rate: 3.2e-03 (steepest descent ...)', or why none is suggested."""
    if result.suggestion is None:
        return f"No learning rate suggested: {result.reason}"
    return f"Suggested learning rate: {result.suggestion:.2e} ({result.reason})"


def write(result: Any, config: TrainConfig, device: Any, run_dir: Path) -> None:
    """``lr_find.png`` and ``lr_find.json`` (the curve, the suggestion and what it was measured with)."""
    result.plot(run_dir / PLOT)
    measured_with = {key: value for key, value in asdict(config).items()
                     if key in ("recipe", "batch_size", "accumulate", "optimizer", "weight_decay", "precision",
                                "clip", "seed", "num_samples")}
    (run_dir / RECORD).write_text(json.dumps({**measured_with, "device": device.type, **result.as_dict()}, indent=1))
