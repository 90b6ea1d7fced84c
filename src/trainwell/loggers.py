"""Loggers: ``log(record, step)`` and ``close()``, nothing else.

A record is a flat dict with a ``kind`` (start, step, layers, intervention, epoch,
test, end). JSONL keeps every record and is the source for reports; CSV keeps the
epoch summary; TensorBoard gets every number, written by TensorBoard's own writer.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable, IO

from trainwell.checkpoint import atomic_write


class JsonlLogger:
    """``metrics.jsonl``: one JSON object per line, flushed as written (a crash loses at most a line)."""

    def __init__(self, path: Path, keep: Callable[[dict], bool] | None = None):
        if path.exists() and keep is not None:  # a resumed run: drop what it will write again
            kept = [line for line in path.read_text().splitlines() if _keep_line(line, keep)]
            atomic_write(path, lambda f: f.write("".join(k + "\n" for k in kept).encode()))
        self.file: IO[str] = open(path, "a", encoding="utf-8")

    def log(self, record: dict[str, Any], step: int) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _keep_line(line: str, keep: Callable[[dict], bool]) -> bool:
    try:
        return keep(json.loads(line))
    except ValueError:
        return False  # a line cut short by a crash


class CsvLogger:
    """``epochs.csv``: the per-epoch summary, one row per epoch, for spreadsheets."""

    COLUMNS = ("epoch", "step", "train_loss", "train_acc", "eval_loss", "eval_acc", "eval_mae", "eval_r2",
               "eval_pairwise_acc", "eval_ndcg10", "lr", "grad_norm",
               "samples_per_sec", "epoch_time", "data_wait_share", "memory_bytes")

    def __init__(self, path: Path, keep: Callable[[dict], bool] | None = None):
        rows = []
        if path.exists() and keep is not None:
            with open(path, newline="") as f:
                rows = [row for row in csv.DictReader(f) if keep({"kind": "epoch", "epoch": int(row["epoch"])})]
        self.file = open(path, "w", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.file, fieldnames=self.COLUMNS, extrasaction="ignore")
        self.writer.writeheader()
        self.writer.writerows(rows)
        self.file.flush()

    def log(self, record: dict[str, Any], step: int) -> None:
        if record.get("kind") == "epoch":
            self.writer.writerow(record)
            self.file.flush()

    def close(self) -> None:
        self.file.close()


class TensorBoardLogger:
    """TensorBoard event files in ``directory``, through ``torch.utils.tensorboard``'s writer.

    Each record becomes one event holding all its numbers, not one event per number as
    ``add_scalar`` would write: a gradient-flow record has 3 numbers per layer, and each
    event costs the training thread about 0.1 ms (protobuf, queue, the writer thread's
    pure-Python crc).
    """

    def __init__(self, directory: Path, resume_step: int = 0):
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard import SummaryWriter

        self.summary = Summary
        # purge_step drops events a resumed run will log again.
        self.writer = SummaryWriter(str(directory), purge_step=resume_step or None)

    def log(self, record: dict[str, Any], step: int) -> None:
        kind = record.get("kind", "step")
        if kind == "layers":
            numbers = [(f"layers/{name}/{layer}", value) for layer, values in record["layers"].items()
                       for name, value in values.items()]
        else:
            numbers = [(f"{kind}/{key}", value) for key, value in record.items()
                       if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "epoch")]
        if numbers:
            values = [self.summary.Value(tag=tag, simple_value=value) for tag, value in numbers]
            self.writer.file_writer.add_summary(self.summary(value=values), step)
        if kind == "intervention":
            self.writer.add_text("interventions", f"{record['cause']}: {record['action']}", step)

    def close(self) -> None:
        self.writer.close()
