"""What ``trainwell train --resume`` / ``--resume-or-start`` go on from, and with which config.

- ``--resume [RUN_DIR]`` must resume: RUN_DIR, else ``--run-dir``, else the newest run of the
  recipe (of any recipe when none is named) under ``runs/``. Nothing to resume is exit 2 with
  one line saying where it looked.
- ``--resume-or-start`` resumes the same way when there is a valid checkpoint, else starts the
  run (a job that may be requeued runs the same command every time).
- A resumed run keeps the config it was started with. Options beside ``--resume`` may change
  only what does not change the math done so far (``RESUMABLE``), and each change is printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainwell.config import FIELDS, TrainConfig, validate
from trainwell.errors import ConfigError, TrainwellError

# Options a resumed run may change: more (or fewer) epochs, where it runs, how it is recorded.
RESUMABLE = ("epochs", "device", "checkpoint_every", "keep_checkpoints", "log_every", "patience", "run_dir")


class AlreadyComplete(TrainwellError):
    """The run to resume has finished: nothing to train, nothing rewritten (exit 0)."""

    exit_code = 0


def find_resume(resume: str, run_dir: str | None, recipe: str | None, root: Path,
                must: bool) -> tuple[Path, Path | str, dict[str, Any]] | None:
    """(run directory, checkpoint to load or "auto", its saved config); None: start a new run."""
    from trainwell.checkpoint import latest_valid

    if resume != "auto" or run_dir is not None:
        directory = Path(resume if resume != "auto" else run_dir)
        if not (directory / "config.yaml").is_file() and not (directory / "checkpoints").is_dir():
            if not must:
                return None
            what = "does not exist" if not directory.exists() else "holds no config.yaml or checkpoints/"
            raise ConfigError(f"no run at {directory}: the directory {what}; give the directory of a run "
                              "that `trainwell train` wrote")
    else:
        directory = newest_run(root, recipe)
        if directory is None:
            if not must:
                return None
            kind = f"{recipe} run" if recipe else "run"
            raise ConfigError(f"nothing to resume: no {kind} under {root}/ (start one without --resume)")
    path, skipped = latest_valid(directory / "checkpoints")
    for bad, problem in skipped:
        print(f"trainwell: skipped checkpoint {bad}: {problem}")
    if path is None and must:
        damaged = f" ({len(skipped)} damaged, skipped)" if skipped else ""
        raise ConfigError(f"nothing to resume: {directory / 'checkpoints'} holds no valid checkpoint{damaged}; "
                          "start a new run without --resume, or use --resume-or-start")
    saved = _saved_config(directory)
    if recipe is not None and saved["recipe"] != recipe:
        raise ConfigError(f"{directory} is a {saved['recipe']} run, not {recipe}; name its recipe or leave it out")
    return directory, path or "auto", saved


def newest_run(root: Path, recipe: str | None) -> Path | None:
    """The most recently written run directory under ``root`` (of ``recipe``, when given)."""
    import yaml

    candidates = []
    for config in root.glob("*/config.yaml"):
        try:
            values = yaml.safe_load(config.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(values, dict) and values.get("recipe") and recipe in (None, values["recipe"]):
            log = config.parent / "metrics.jsonl"
            candidates.append(((log if log.exists() else config).stat().st_mtime, config.parent))
    return max(candidates)[1] if candidates else None


def resumed_config(saved: dict[str, Any], given: dict[str, Any], sources: dict[str, str], run_dir: Path) -> TrainConfig:
    """The run's own config, with the changes ``given`` may make (printed); others are refused."""
    base = validate({**saved, "run_dir": str(run_dir)})
    config = validate({**saved, **given, "run_dir": str(run_dir)}, sources)
    for name in FIELDS:
        before, after = getattr(base, name), getattr(config, name)
        if before == after:
            continue
        option = sources.get(name, f"--{name.replace('_', '-')}")
        if name not in RESUMABLE:
            raise ConfigError(f"{option} {after!r} differs from the run being resumed ({before!r}): a resumed run "
                              f"keeps the config it started with; drop {option}, or start a new run")
        if name == "epochs" and (config.schedule not in ("constant", "plateau") or config.warmup):
            raise ConfigError(f"{option} {after} would change the length of the run's {config.schedule} schedule, "
                              f"which was built for {before} epochs (past its end the learning rate stays at its "
                              "final value); resume without it, or start a new run")
        if name == "epochs":
            print(f"trainwell: {'extending' if after > before else 'shortening'} the run from {before} to {after} "
                  f"epochs ({option})")
        else:
            print(f"trainwell: {option} changed from {before!r} to {after!r} for the rest of the run")
    _refuse_if_complete(run_dir, config)
    return config


def _saved_config(directory: Path) -> dict[str, Any]:
    from trainwell.cli.train import read_yaml

    path = directory / "config.yaml"
    saved = read_yaml(path) if path.is_file() else {}
    if not saved.get("recipe"):
        raise ConfigError(f"{directory} was not started by `trainwell train` (no recipe in its config.yaml); "
                          "resume it from Python with Trainer.fit(resume=...)")
    return {k: v for k, v in saved.items() if k in FIELDS}


def _refuse_if_complete(run_dir: Path, config: TrainConfig) -> None:
    """A finished run is left as it is: AlreadyComplete says so (exit 0)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return
    status, epochs = str(summary.get("status", "")), summary.get("epochs", 0)
    if status.startswith("early stopping"):
        raise AlreadyComplete(f"{run_dir} is already complete: it stopped early after epoch {epochs} ({status}); "
                              "nothing to do")
    if status == "completed" and epochs >= config.epochs:
        raise AlreadyComplete(f"{run_dir} is already complete ({epochs} of {config.epochs} epochs); nothing to do. "
                              "To train longer, resume it with --epochs N")
