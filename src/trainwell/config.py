"""The run configuration: one typed dataclass, a help string per field.

The command line is generated from these fields, a YAML config file uses the same
names, and validation (pydantic, imported only when a run starts, so that
``trainwell --help`` stays instant) turns any mistake into one line naming the key.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal, Optional, Union

from annotated_types import Ge, Gt, Le

from trainwell.errors import ConfigError


def _opt(default: Any, help: str, **extra: Any) -> Any:
    """A field with its help text; ``unset=`` says what a None default means (shown in --help)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Everything a run needs; recipes supply their own defaults."""

    recipe: str = _opt("mnist", "the recipe (model + data) to train", cli=False)
    epochs: Annotated[int, Ge(1)] = _opt(5, "number of passes over the training data")
    lr: Union[Annotated[float, Gt(0)], Literal["suggested"]] = _opt(
        1e-3, "learning rate (peak learning rate for schedules); 'suggested': run the LR finder first and use its "
              "suggestion", words=("suggested",))
    batch_size: Annotated[int, Ge(1)] = _opt(64, "samples per micro-batch")
    optimizer: Literal["adam", "adamw", "sgd"] = _opt("adam", "optimizer (torch's fused kernel where available)")
    weight_decay: Annotated[float, Ge(0)] = _opt(0.0, "weight decay (decoupled with adamw)")
    device: Literal["auto", "cpu", "cuda", "mps"] = _opt("auto", "where to train: auto picks cuda, then mps, then cpu")
    precision: Literal["32", "bf16", "16"] = _opt("32", "32, bf16 (autocast, CPU or GPU) or 16 (GPU, loss scaling)")
    seed: int = _opt(0, "seeds python, numpy and torch; fixes the data order")
    accumulate: Annotated[int, Ge(1)] = _opt(1, "micro-batches per optimizer step (exact gradient accumulation)")
    clip: Optional[Annotated[float, Gt(0)]] = _opt(None, "clip the global gradient norm to this value",
                                                   unset="no clipping")
    schedule: Literal["constant", "step", "cosine", "warmup-cosine", "plateau", "one-cycle", "linear"] = _opt(
        "constant", "learning-rate schedule (linear: warmup, then straight down to 0)")
    warmup: Annotated[int, Ge(0)] = _opt(0, "linear warmup steps (cosine, warmup-cosine and linear schedules)")
    warmup_ratio: Annotated[float, Ge(0), Le(1)] = _opt(
        0.0, "linear warmup as a share of all optimizer steps, used when --warmup is 0 (text-classify)")
    patience: Optional[Annotated[int, Ge(1)]] = _opt(None, "early stopping: epochs without validation improvement",
                                                     unset="no early stopping")
    curriculum: Literal["none", "loss"] = _opt(
        "none", "training order: none (random), or loss (easy to hard by a reference model's per-sample loss, the "
                "pool widening each epoch; mnist, xor, regression)")
    num_samples: Optional[Annotated[int, Ge(1)]] = _opt(None, "use only this many training samples (quick test)",
                                                        unset="all")
    data: Optional[str] = _opt(None, "the recipe's data: a directory (MNIST IDX files) or a file (text-classify: "
                                     "CSV or JSONL with text and label columns)",
                               unset="the data that ships with the recipe")
    model: Optional[str] = _opt(None, "text-classify: a local Hugging Face model directory to fine-tune",
                                unset="the bundled all-MiniLM-L6-v2")
    max_length: Annotated[int, Ge(2)] = _opt(128, "text-classify: tokens per snippet at most (longer ones are cut)")
    group_by_length: bool = _opt(False, "text-classify: batches of snippets of similar length (less padding; "
                                        "a seeded order, exact resume kept)")
    run_dir: Optional[str] = _opt(None, "where the run writes its files", unset="runs/<recipe>-YYYYmmdd-HHMMSS")
    checkpoint_every: Optional[Annotated[int, Ge(1)]] = _opt(None, "also checkpoint every N optimizer steps",
                                                             unset="only at the end of each epoch")
    keep_checkpoints: Annotated[int, Ge(1)] = _opt(3, "how many recent checkpoints to keep (plus the best)")
    log_every: Annotated[int, Ge(1)] = _opt(50, "write a step record to metrics.jsonl every N steps")


FIELDS = {f.name: f for f in fields(TrainConfig)}
# Names other trainers and papers use for a field: a YAML file written for one of them gets
# "did you mean" with trainwell's name, which difflib alone would not find (learning_rate -> lr).
ALIASES = {
    "learning_rate": "lr", "bs": "batch_size", "batch": "batch_size", "max_epochs": "epochs",
    "num_epochs": "epochs", "n_epochs": "epochs", "grad_clip": "clip", "clip_grad_norm": "clip",
    "max_grad_norm": "clip", "gradient_clip_val": "clip", "accumulation_steps": "accumulate",
    "grad_accum": "accumulate", "gradient_accumulation_steps": "accumulate", "optim": "optimizer",
    "scheduler": "schedule", "lr_schedule": "schedule", "warmup_steps": "warmup", "wd": "weight_decay",
    "early_stopping_patience": "patience", "output_dir": "run_dir", "amp": "precision",
}


def closest(name: str, choices: Any) -> str:
    """' (did you mean X?)' for the nearest valid name, or ''."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def suggest_field(name: str) -> str:
    """' (did you mean 'lr'?)' for a synonym or a near miss of a config field name, or ''."""
    alias = ALIASES.get(name.lower().replace("-", "_"))
    return f" (did you mean {alias!r}?)" if alias else closest(name, FIELDS)


def field_kind(name: str) -> Any:
    """The value type of field ``name`` without its constraints or Optional: int, float, str,
    or the Literal's tuple of choices."""
    kind = typing.get_type_hints(TrainConfig, include_extras=True)[name]
    while True:
        if typing.get_origin(kind) is Annotated:
            kind = typing.get_args(kind)[0]
        elif typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        elif typing.get_origin(kind) is Literal:
            return typing.get_args(kind)
        else:
            return kind


def cli_type(name: str) -> Any:
    """What the command line converts option ``name``'s text with: the field's type, or for a number
    that also takes words (``--lr suggested``) a converter that accepts either."""
    kind, words = field_kind(name), FIELDS[name].metadata.get("words", ())
    if not words:
        return kind

    def number_or_word(text: str) -> Any:
        if text in words:
            return text
        try:
            return kind(text)
        except ValueError:
            import argparse

            raise argparse.ArgumentTypeError(f"expected a number or {' or '.join(map(repr, words))}, "
                                             f"got {text!r}") from None

    return number_or_word


def validate(raw: dict[str, Any], sources: dict[str, str] | None = None) -> TrainConfig:
    """A TrainConfig from plain values; ConfigError with one line on the first problem.

    Types are strict (YAML ``epochs: true`` is not 1) and numbers finite (``--lr inf`` is
    refused). ``sources`` maps a key to how the user spelled it (``--batch-size`` on the
    command line), so the message names what they typed.
    """
    sources = sources or {}
    for key in raw:
        if key not in FIELDS:
            raise ConfigError(f"unknown config key {key!r}{suggest_field(key)}")
    values = {key: _typed(key, value, sources.get(key, f"config key {key!r}")) for key, value in raw.items()}
    from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

    adapter = TypeAdapter(with_config(ConfigDict(extra="forbid", allow_inf_nan=False))(TrainConfig))
    try:
        return adapter.validate_python(values)
    except ValidationError as e:
        error = e.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else "config"
        name = sources.get(key, f"config key {key!r}")
        raise ConfigError(f"{name}: {error['msg'].lower()} (got {error.get('input')!r})") from None


def _typed(key: str, value: Any, name: str) -> Any:
    """``value`` checked against field ``key``'s type where pydantic's lax mode would coerce it.

    A bool is not a number (pydantic takes ``true`` as 1), a float with a fraction or a string
    is not an integer; a numeric string is a float (PyYAML reads ``1e-3``, with no dot, as a
    string), and ``16`` is the choice ``"16"``. Everything else (ranges, finiteness, choices)
    is left to pydantic.
    """
    kind = field_kind(key)
    if value is None or value in FIELDS[key].metadata.get("words", ()):
        return value
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{name}: input should be true or false (got {value!r})")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{name}: input should be a valid integer (got {value!r})")
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: input should be a number (got {value!r})")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{name}: input should be a number (got {value!r})") from None
    if isinstance(kind, tuple) and not isinstance(value, (str, bool)) and str(value) in kind:
        return str(value)
    return value
