"""The run configuration: one typed dataclass, a help string per field.

The command line is generated from these fields, a YAML config file uses the same
names, and validation (pydantic, imported only when a run starts, so that
``trainwell --help`` stays instant) turns any mistake into one line naming the key.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal, Optional

from annotated_types import Ge, Gt

from trainwell.errors import ConfigError


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Everything a run needs; recipes supply their own defaults."""

    recipe: str = _opt("mnist", "the recipe (model + data) to train", cli=False)
    epochs: Annotated[int, Ge(1)] = _opt(5, "number of passes over the training data")
    lr: Annotated[float, Gt(0)] = _opt(1e-3, "learning rate (peak learning rate for schedules)")
    batch_size: Annotated[int, Ge(1)] = _opt(64, "samples per micro-batch")
    optimizer: Literal["adam", "adamw", "sgd"] = _opt("adam", "optimizer (torch's fused kernel where available)")
    weight_decay: Annotated[float, Ge(0)] = _opt(0.0, "weight decay (decoupled with adamw)")
    device: Literal["auto", "cpu", "cuda", "mps"] = _opt("auto", "where to train: auto picks cuda, then mps, then cpu")
    precision: Literal["32", "bf16", "16"] = _opt("32", "32, bf16 (autocast, CPU or GPU) or 16 (GPU, loss scaling)")
    seed: int = _opt(0, "seeds python, numpy and torch; fixes the data order")
    accumulate: Annotated[int, Ge(1)] = _opt(1, "micro-batches per optimizer step (exact gradient accumulation)")
    clip: Optional[Annotated[float, Gt(0)]] = _opt(None, "clip the global gradient norm to this value")
    schedule: Literal["constant", "step", "cosine", "warmup-cosine", "plateau", "one-cycle"] = _opt(
        "constant", "learning-rate schedule")
    warmup: Annotated[int, Ge(0)] = _opt(0, "linear warmup steps (cosine and warmup-cosine schedules)")
    patience: Optional[Annotated[int, Ge(1)]] = _opt(None, "early stopping: epochs without validation improvement")
    num_samples: Optional[Annotated[int, Ge(1)]] = _opt(None, "use only this many training samples (quick test)")
    data: Optional[str] = _opt(None, "directory with the recipe's data files (e.g. MNIST IDX files)")
    run_dir: Optional[str] = _opt(None, "where the run writes its files (default runs/<recipe>-<time>)")
    checkpoint_every: Optional[Annotated[int, Ge(1)]] = _opt(None, "also checkpoint every N optimizer steps")
    keep_checkpoints: Annotated[int, Ge(1)] = _opt(3, "how many recent checkpoints to keep (plus the best)")
    log_every: Annotated[int, Ge(1)] = _opt(50, "write a step record to metrics.jsonl every N steps")


FIELDS = {f.name: f for f in fields(TrainConfig)}


def closest(name: str, choices: Any) -> str:
    """' (did you mean X?)' for the nearest valid name, or ''."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def validate(raw: dict[str, Any], sources: dict[str, str] | None = None) -> TrainConfig:
    """A TrainConfig from plain values; ConfigError with one line on the first problem.

    ``sources`` maps a key to how the user spelled it (``--batch-size`` on the command
    line), so the message names what they typed.
    """
    sources = sources or {}
    for key in raw:
        if key not in FIELDS:
            raise ConfigError(f"unknown config key {key!r}{closest(key, FIELDS)}")
    from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

    adapter = TypeAdapter(with_config(ConfigDict(extra="forbid"))(TrainConfig))
    try:
        return adapter.validate_python(raw)
    except ValidationError as e:
        error = e.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else "config"
        name = sources.get(key, f"config key {key!r}")
        raise ConfigError(f"{name}: {error['msg'].lower()} (got {error.get('input')!r})") from None
