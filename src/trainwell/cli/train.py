"""``trainwell train``: resolve the config, build the recipe, train, test, and say where it all went."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trainwell.config import FIELDS, TrainConfig, validate
from trainwell.errors import ConfigError, Interrupted, TrainingError, TrainwellError

RUNS = Path("runs")


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Recipe defaults < the run being resumed < CONFIG.yaml < command-line options."""
    from trainwell.recipes import recipe_defaults

    given = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    sources = {name: f"--{name.replace('_', '-')}" for name in given}
    if args.gpu:
        given["device"], sources["device"] = "cuda", "--gpu"
    file_values: dict[str, Any] = {}
    target = args.target
    if target is not None and (target.endswith((".yaml", ".yml")) or Path(target).is_file()):
        file_values = read_yaml(Path(target))
        target = file_values.get("recipe")
    resumed: dict[str, Any] = {}
    if args.resume not in (None, "auto"):
        resumed = read_yaml(Path(args.resume) / "config.yaml")
        resumed["run_dir"] = args.resume
    recipe = str(target or resumed.get("recipe") or "mnist")
    raw = {**recipe_defaults(recipe), **resumed, **file_values, **given, "recipe": recipe}
    return validate(raw, sources)


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        values = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return values


def pick_run_dir(config: TrainConfig, resume: str | None) -> Path:
    if config.run_dir is not None:
        return Path(config.run_dir)
    if resume == "auto":
        previous = sorted(RUNS.glob(f"{config.recipe}-*"))
        if previous:
            return previous[-1]
    return RUNS / f"{config.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    run_dir = pick_run_dir(config, args.resume)
    from trainwell.recipes import get_recipe
    from trainwell.rundir import ensure_writable
    from trainwell.runtime import check_precision, resolve_device, seed_everything

    device = resolve_device(config.device)  # every user error before anything is written
    check_precision(config.precision, device)
    if not args.resume and any((run_dir / "checkpoints").glob("*.ckpt")):
        raise ConfigError(f"run directory {run_dir} already holds a run; add --resume to continue it "
                          "or choose another --run-dir")
    seed_everything(config.seed)
    parts = get_recipe(config.recipe).build(config, device)
    ensure_writable(run_dir)
    import yaml

    (run_dir / "config.yaml").write_text(yaml.safe_dump({**asdict(config), "run_dir": str(run_dir)}, sort_keys=False))
    return train(config, parts, device, run_dir, resume="auto" if args.resume else None)


def train(config: TrainConfig, parts: Any, device: Any, run_dir: Path, resume: str | None) -> int:
    """Train the recipe's parts; exit 1 with a diagnosis if training fails."""
    from rich.console import Console

    from trainwell import memory
    from trainwell.trainer import Trainer

    console = Console(highlight=False, soft_wrap=True)
    n_params = sum(p.numel() for p in parts.model.parameters())
    console.print(f"trainwell: recipe {config.recipe} on {device.type}, {n_params:,} parameters, "
                  f"{parts.train.num_samples:,} training samples, run directory {run_dir}")
    console.print(memory.describe(memory.estimate(parts.model, parts.optimizer, parts.example_batch.to(device)),
                                  n_params))
    trainer = Trainer(
        parts.model, parts.optimizer, parts.loss_fn, parts.scheduler, config.clip, device=device,
        precision=config.precision, callbacks=parts.callbacks, run_dir=run_dir, seed=config.seed,
        checkpoint_every_steps=config.checkpoint_every, log_every_steps=config.log_every,
        keep_checkpoints=config.keep_checkpoints, verbose=True,
    )
    started = time.perf_counter()
    try:
        trainer.fit(parts.train, parts.val, epochs=config.epochs, resume=resume, accumulation_steps=config.accumulate)
    except Interrupted as e:
        console.print(f"trainwell: {e}.\nResume with: trainwell train --resume {run_dir}")
        return 0
    except TrainingError as e:
        print(f"trainwell: training stopped: {e}", file=sys.stderr)
        finish(run_dir, config, console)
        return 1
    except TrainwellError:
        raise
    except Exception as e:  # a failure once training started: diagnose, point at the last good state
        from trainwell.checkpoint import latest

        print(f"trainwell: training failed: {type(e).__name__}: {e}", file=sys.stderr)
        print(f"trainwell: last good checkpoint: {latest(run_dir / 'checkpoints') or 'none yet'}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - started
    summary = {"recipe": config.recipe, "status": trainer.stop_reason or "completed", "epochs": trainer.epoch,
               "steps": trainer.step, "wall_time_s": round(wall, 2)}
    if parts.test is not None:
        results = trainer.test(parts.test)
        summary.update(results)
        console.print(test_line(results))
    from trainwell.plotting import plot_learning_curves

    plot_learning_curves(trainer.history, run_dir / "learning_curves.png")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    throughput = sum(trainer.history["samples_per_sec"]) / max(len(trainer.history["samples_per_sec"]), 1)
    console.print(f"Trained {trainer.epoch} epochs ({trainer.step} steps) in {wall:.1f}s, "
                  f"{throughput:,.0f} training samples/s on average.")
    finish(run_dir, config, console)
    console.print(f"Wrote {run_dir}/: config.yaml, metrics.jsonl, epochs.csv, tensorboard/, checkpoints/, "
                  f"model.safetensors{', model-best.safetensors' if parts.val is not None else ''}, "
                  "learning_curves.png, summary.json, report.html")
    return 0


def finish(run_dir: Path, config: TrainConfig, console: Any) -> None:
    """The health verdict in plain words, and the one-file report."""
    from trainwell.report import write_report
    from trainwell.verdict import diagnose, format_verdict, read_records

    console.print(format_verdict(diagnose(read_records(run_dir), asdict(config))))
    write_report(run_dir)


def test_line(results: dict[str, float]) -> str:
    line = f"Test: loss {results['test_loss']:.4f}"
    if "test_acc" in results:
        line += f", accuracy {results['test_acc']:.2%}"
    return line + f" on {results['test_samples']:,} samples"
