"""``trainwell train``: resolve the config, build the recipe, train, test, and say where it all went."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from trainwell.cli.resume import AlreadyComplete, find_resume, resumed_config
from trainwell.config import FIELDS, TrainConfig, validate
from trainwell.errors import ConfigError, Interrupted, TrainingError, TrainwellError

RUNS = Path("runs")


def resolve_config(args: argparse.Namespace) -> tuple[TrainConfig, Path, Path | str | None]:
    """(config, run directory, checkpoint to resume from: a path, "auto" or None).

    A new run: recipe defaults < CONFIG.yaml < command-line options. A resumed run keeps
    the config it was started with; options may only extend it (see ``cli.resume``).
    """
    from trainwell.recipes import recipe_defaults

    given = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    sources = {name: f"--{name.replace('_', '-')}" for name in given}
    if args.gpu:
        given["device"], sources["device"] = "cuda", "--gpu"
    target = args.target
    if target is not None and (target.endswith((".yaml", ".yml")) or Path(target).is_file()):
        file_values = read_yaml(Path(target))
        sources.update({name: f"{target}: {name}" for name in file_values if name not in given})
        given = {**file_values, **given}
        target = file_values.get("recipe")
    if args.resume or args.resume_or_start:
        found = find_resume(args.resume or "auto", given.get("run_dir"), target, RUNS,
                            must=args.resume is not None)
        if found is not None:
            run_dir, checkpoint, saved = found
            config = resumed_config(saved, given, sources, run_dir)
            return config, run_dir, checkpoint
    recipe = str(target or "mnist")
    config = validate({**recipe_defaults(recipe), **given, "recipe": recipe}, sources)
    run_dir = Path(config.run_dir) if config.run_dir else RUNS / f"{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    return config, run_dir, None


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


def run(args: argparse.Namespace) -> int:
    """The whole command under one signal guard: SIGTERM/SIGINT never leave a half-written run directory."""
    from trainwell.runtime import stop_on_signals

    from trainwell.distributed import Group, note_failure

    group = Group.from_environment()  # under torchrun: join the job first; only rank 0 prints
    if group is not None and not group.is_main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0" and not args.resume:
        args.resume_or_start = True  # torchrun restarted the job: go on from its last checkpoint
    received: list[str] = []
    with stop_on_signals(received.append):
        try:
            code = _run(args, received, group)
        except AlreadyComplete as done:
            print(f"trainwell: {done}")
            return 0
        except BaseException:
            if group is not None:
                note_failure()  # at exit, leave the job at once rather than wait for the other processes
            raise
    if code != 0 and group is not None:
        note_failure()
    return code


def _run(args: argparse.Namespace, received: list[str], group: Any) -> int:
    config, run_dir, checkpoint = resolve_config(args)
    if group is not None:  # the default run directory is named by the time: take rank 0's
        run_dir = Path(group.broadcast(str(run_dir)))
    return start(config, run_dir, checkpoint, received, resume_or_start=args.resume_or_start, group=group)


def start(config: TrainConfig, run_dir: Path, checkpoint: Path | str | None, received: list[str], *,
          resume_or_start: bool = False, group: Any = None, callbacks: Sequence[Any] = ()) -> int:
    """Build the recipe and train it in ``run_dir``: ``trainwell train`` once its config is resolved.
    ``callbacks`` join the recipe's (a sweep trial's pruning reporter)."""
    from trainwell.recipes import get_recipe
    from trainwell.rundir import CONFIG, ensure_writable, write_yaml
    from trainwell.runtime import check_precision, resolve_device, seed_everything

    device = resolve_device(config.device)  # every user error before anything is written
    check_precision(config.precision, device)
    if checkpoint is None and any((run_dir / "checkpoints").glob("*.ckpt")) and not resume_or_start:
        raise ConfigError(f"run directory {run_dir} already holds a run; add --resume to continue it "
                          "or choose another --run-dir")
    if config.lr == "suggested":  # run the LR range test first, then train with its suggestion
        config = suggested(config, device, run_dir, checkpoint, group)
    seed_everything(config.seed)
    parts = get_recipe(config.recipe).build(config, device)
    parts.callbacks.extend(callbacks)
    ensure_writable(run_dir)
    if received:
        print(f"trainwell: interrupted by {received[0]} before training started; nothing was trained")
        return 0
    if group is None or group.is_main:
        write_yaml(run_dir / CONFIG, {**asdict(config), "run_dir": str(run_dir)})
    return train(config, parts, device, run_dir, checkpoint, received, group)


def suggested(config: TrainConfig, device: Any, run_dir: Path, checkpoint: Any, group: Any) -> TrainConfig:
    """The config with ``lr`` set to the LR finder's suggestion (see ``trainwell lr-find``)."""
    from dataclasses import replace

    from trainwell.cli.tune import resolve_suggested_lr

    if checkpoint is not None:
        raise ConfigError("--lr suggested starts a run; a resumed run keeps its learning rate")
    if group is not None:
        raise ConfigError("--lr suggested runs the LR finder in one process: run `trainwell lr-find` first, then "
                          "torchrun ... trainwell train --lr <its suggestion>")
    return replace(config, lr=resolve_suggested_lr(config, device, run_dir))


def train(config: TrainConfig, parts: Any, device: Any, run_dir: Path, checkpoint: Path | str | None,
          received: list[str], group: Any = None) -> int:
    """Train the recipe's parts; exit 1 with a diagnosis if training fails."""
    from rich.console import Console

    from trainwell import memory
    from trainwell.trainer import Trainer

    console = Console(highlight=False, soft_wrap=True)
    n_params = sum(p.numel() for p in parts.model.parameters())
    where = device.type if group is None else (f"{group.world_size} processes ({device.type}, global batch "
                                               f"{config.batch_size * group.world_size})")
    console.print(f"trainwell: recipe {config.recipe} on {where}, {n_params:,} parameters, "
                  f"{parts.train.num_samples:,} training samples, run directory {run_dir}")
    console.print(memory.describe(memory.estimate(parts.model, parts.optimizer, parts.example_batch.to(device)),
                                  n_params))
    # the command line measures the CPU peak too (docs/memory.md); under torchrun each rank would profile
    probe = [memory.MemoryProbe(cpu=True, example_inputs=parts.example_batch)] if group is None else []
    trainer = Trainer(
        parts.model, parts.optimizer, parts.loss_fn, parts.scheduler, config.clip, device=device,
        precision=config.precision, callbacks=[*parts.callbacks, *probe], run_dir=run_dir, seed=config.seed,
        checkpoint_every_steps=config.checkpoint_every, log_every_steps=config.log_every,
        keep_checkpoints=config.keep_checkpoints, verbose=True,
    )
    started = time.perf_counter()
    try:
        trainer.fit(parts.train, parts.val, epochs=config.epochs, resume=checkpoint, accumulation_steps=config.accumulate)
    except Interrupted as e:
        console.print(f"trainwell: {e}.\nResume with: trainwell train --resume {run_dir}")
        return 0
    except TrainingError as e:
        from trainwell.rundir import update_summary

        if not trainer.is_main:
            return 1
        print(f"trainwell: training stopped: {e}", file=sys.stderr)
        update_summary(run_dir, recipe=config.recipe, status=f"failed: {e}", epochs=trainer.epoch, steps=trainer.step)
        finish(run_dir, console)
        return 1
    except TrainwellError:
        raise
    except Exception as e:  # a failure once training started: diagnose, point at the last good state
        from trainwell.checkpoint import latest

        print(f"trainwell: training failed: {type(e).__name__}: {e}", file=sys.stderr)
        print(f"trainwell: last good checkpoint: {latest(run_dir / 'checkpoints') or 'none yet'}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - started
    if trainer.resumed_from is not None and trainer.samples_trained == 0:
        return 0  # already complete: the trainer said so, and every file stays as it was
    if parts.test is not None:
        console.print(test_line(trainer.test(parts.test)))  # every process evaluates its share
    if not trainer.is_main:
        return 0
    from trainwell.rundir import update_summary

    update_summary(run_dir, recipe=config.recipe, wall_time_s=round(wall, 2))
    console.print(trained_line(trainer, wall))
    finish(run_dir, console)
    if received:
        console.print(f"trainwell: {received[0]} arrived after training; the run was finished first")
    console.print(f"Wrote {run_dir}/: config.yaml, metrics.jsonl, epochs.csv, tensorboard/, checkpoints/, "
                  f"model.safetensors{', model-best.safetensors' if parts.val is not None else ''}, "
                  f"learning_curves.png, summary.json, report.html{', model/' if (run_dir / 'model').is_dir() else ''}")
    return 0


def trained_line(trainer: Any, wall: float) -> str:
    """What this process trained, honestly: a resumed run counts only the epochs and samples it did."""
    throughput = trainer.samples_trained / max(trainer.train_seconds, 1e-9)
    rate = f"{throughput:,.0f} training samples/s ({trainer.samples_trained:,} samples in {trainer.train_seconds:.1f}s of training)"
    resumed = trainer.resumed_from
    if resumed is None:
        epochs = "1 epoch" if trainer.epoch == 1 else f"{trainer.epoch} epochs"
        return f"Trained {epochs} ({trainer.step} steps) in {wall:.1f}s: {rate}."
    first = resumed["epoch"] + 1
    epochs = f"epoch {first}" if first == trainer.epoch else f"epochs {first}-{trainer.epoch}"
    return (f"Trained {epochs} ({trainer.step - resumed['step']} steps, resumed from step {resumed['step']}) "
            f"in {wall:.1f}s: {rate}.")


def finish(run_dir: Path, console: Any) -> None:
    """The health verdict in plain words (the same findings as summary.json), and the one-file report."""
    from trainwell.report import write_report
    from trainwell.rundir import read_config
    from trainwell.verdict import diagnose, format_verdict, read_records

    console.print(format_verdict(diagnose(read_records(run_dir), read_config(run_dir))))
    write_report(run_dir)


def test_line(results: dict[str, float]) -> str:
    line = f"Test: loss {results['test_loss']:.4f}"
    if "test_acc" in results:
        line += f", accuracy {results['test_acc']:.2%}"
    for key, label in (("test_mae", "MAE"), ("test_r2", "R²"), ("test_pairwise_acc", "pairwise accuracy"),
                       ("test_ndcg10", "NDCG@10")):
        if key in results:
            line += f", {label} {results[key]:.4g}"
    return line + f" on {results['test_samples']:,} samples"
