"""``trainwell eval`` (a saved model's test metrics, for every recipe) and ``trainwell predict``
(labels and probabilities for new text, from a text-classify run's ``model/``)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from trainwell.errors import ConfigError

DATA_RECIPES = ("mnist", "text-classify")  # the recipes whose data --data replaces
PREDICT_BATCH = 64


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="RUN_DIR | CHECKPOINT",
                        help="a run directory (its final weights, model.safetensors) or one of its checkpoints")
    parser.add_argument("--data", default=None, metavar="FILE | DIR",
                        help="evaluate on this data instead: text-classify, every row of a CSV/JSONL file; "
                             "mnist, the test set of a directory of IDX files (default: the run's own data)")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="which split of the run's data to evaluate (default: test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a line")


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a text-classify run directory (or its model/ directory)")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="the texts to classify")
    parser.add_argument("--data", default=None, metavar="FILE",
                        help="also classify every row of this CSV/JSONL file's text column")
    parser.add_argument("--json", action="store_true", help="print one JSON object per input instead of a table")


def evaluate(args: argparse.Namespace) -> int:
    """Rebuild the run's recipe from its config.yaml, load its weights, evaluate, print the metrics."""
    run_dir, checkpoint_path = locate(Path(args.path))
    config = run_config(run_dir)
    if args.data is not None:
        if config.recipe not in DATA_RECIPES:
            raise ConfigError(f"the {config.recipe} recipe's data is built in; --data applies to "
                              f"{' and '.join(DATA_RECIPES)} runs")
        if config.recipe == "mnist":
            config = replace(config, data=args.data)
    import torch

    from trainwell.recipes import get_recipe
    from trainwell.runtime import resolve_device, seed_everything
    from trainwell.trainer import Trainer

    device = resolve_device(config.device)
    seed_everything(config.seed)
    parts = get_recipe(config.recipe).build(config, device)
    load_weights(parts.model, run_dir, checkpoint_path)
    loader = parts.val if args.split == "val" else parts.test
    if args.data is not None and config.recipe == "text-classify":
        from trainwell.recipes.text import evaluation_loader, load_tokenizer

        tokenizer, model_dir = load_tokenizer(config)
        names = [parts.model.config.id2label[i] for i in range(parts.model.config.num_labels)]
        loader = evaluation_loader(config, args.data, tokenizer, model_dir, names, config.batch_size)
    if loader is None:
        raise ConfigError(f"the run has no {args.split} split to evaluate (its {args.split} share was empty)")
    trainer = Trainer(parts.model, parts.optimizer, parts.loss_fn, device=device, precision=config.precision,
                      seed=config.seed, health=False)
    with torch.no_grad():
        metrics = trainer.test(loader)
    if args.split == "val" and args.data is None:
        metrics = {key.replace("test_", "val_", 1): value for key, value in metrics.items()}
    weights = str(checkpoint_path or run_dir / "model.safetensors")
    if args.json:
        print(json.dumps({"run_dir": str(run_dir), "weights": weights, "recipe": config.recipe,
                          "data": args.data or args.split, **metrics}))
    else:
        print(f"{config.recipe} {weights} on {args.data or f'the {args.split} split'}: {metrics_line(metrics)}")
    return 0


def locate(path: Path) -> tuple[Path, Path | None]:
    """(run directory, checkpoint or None) for a run directory or a checkpoint file inside one."""
    if path.is_dir() and (path / "config.yaml").is_file():
        if not (path / "model.safetensors").is_file():
            raise ConfigError(f"{path} has no final weights (model.safetensors): the run has not finished; "
                              f"give one of its checkpoints, e.g. trainwell eval {path}/checkpoints/<file>.ckpt")
        return path, None
    if path.is_file() and path.suffix == ".ckpt":
        run_dir = path.resolve().parent.parent
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"checkpoint {path} is not inside a run directory (no config.yaml in {run_dir})")
        return run_dir, path
    raise ConfigError(f"{path} is neither a run directory (with config.yaml) nor a checkpoint (.ckpt)")


def run_config(run_dir: Path) -> Any:
    """The run's resolved config, as trained."""
    from trainwell.config import validate
    from trainwell.rundir import read_config

    values = read_config(run_dir)
    if not values:
        raise ConfigError(f"{run_dir}/config.yaml cannot be read as a run's config")
    return validate(values, {key: f"{run_dir}/config.yaml: {key}" for key in values})


def load_weights(model: Any, run_dir: Path, checkpoint_path: Path | None) -> None:
    """The run's final weights (or the checkpoint's model state) into ``model``."""
    from trainwell import checkpoint

    if checkpoint_path is not None:
        state = checkpoint.load(checkpoint_path)["model"]
    else:
        from safetensors.torch import load_file

        state = load_file(str(run_dir / "model.safetensors"))
    checkpoint.check_model_keys(model, state)
    model.load_state_dict(state)


def metrics_line(metrics: dict[str, Any]) -> str:
    """``loss 0.1234, accuracy 97.50% on 1,000 samples`` (plus any other metric the record holds)."""
    prefix = "val_" if "val_loss" in metrics else "test_"
    parts = [f"loss {metrics[prefix + 'loss']:.4f}"]
    if prefix + "acc" in metrics:
        parts.append(f"accuracy {metrics[prefix + 'acc']:.2%}")
    skip = {prefix + name for name in ("loss", "acc", "samples")}
    parts += [f"{key[len(prefix):]} {value:.4g}" for key, value in metrics.items()
              if key not in skip and isinstance(value, float)]
    return ", ".join(parts) + f" on {metrics[prefix + 'samples']:,} samples"


def predict(args: argparse.Namespace) -> int:
    """Label and probability per text, from RUN_DIR/model/ with transformers alone."""
    from trainwell import text_data

    model_dir = Path(args.run_dir)
    run_dir = model_dir.parent if (model_dir / "config.json").is_file() and model_dir.name == "model" else model_dir
    if not (model_dir / "config.json").is_file():
        model_dir = run_dir / "model"
    config = run_config(run_dir) if (run_dir / "config.yaml").is_file() else None
    if config is not None and config.recipe != "text-classify":
        raise ConfigError(f"trainwell predict classifies text: {run_dir} is a {config.recipe} run; "
                          "use trainwell eval for it")
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{args.run_dir} has no model/ directory: give a finished text-classify run directory")
    texts = list(args.texts)
    if args.data:
        texts += [str(row["text"]) for row in text_data.read_rows(Path(args.data), ("text",))]
    if not texts:
        raise ConfigError("nothing to classify: give TEXT arguments or --data FILE")
    text_data.require_transformers()
    for label, probability, text in classify(model_dir, texts, config.max_length if config else 128):
        if args.json:
            print(json.dumps({"text": text, "label": label, "probability": round(probability, 6)}))
        else:
            print(f"{label}\t{probability:.4f}\t{text}")
    return 0


def classify(model_dir: Path, texts: list[str], max_length: int) -> list[tuple[str, float, str]]:
    """(label, its probability, text) for each text, batched and padded per batch."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from trainwell.recipes.text import quiet_transformers

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True).eval()
    results = []
    with torch.no_grad():
        for start in range(0, len(texts), PREDICT_BATCH):
            batch = texts[start : start + PREDICT_BATCH]
            inputs = tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            inputs.pop("token_type_ids", None)  # trained without them (all zeros for one sentence)
            probabilities = model(**inputs).logits.float().softmax(-1)
            best, index = probabilities.max(-1)
            results += [(model.config.id2label[int(i)], float(p), text)
                        for p, i, text in zip(best.tolist(), index.tolist(), batch)]
    return results
