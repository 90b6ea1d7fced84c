"""Pairwise learning to rank (seed 001): a seeded pair sampler, the margin loss, and ranking metrics.

Each training sample is a pair of items whose targets differ, ordered (higher, lower). The
model scores both items of a pair at once (inputs ``[B, 2, F]`` -> scores ``[B, 2]``), so the
trainer's ``loss_fn(outputs, targets)`` is the seed's ``max(0, margin - score(pos) + score(neg))``
on those two columns. The pairs of an epoch are a pure function of (seed, epoch), like every
other loader's order: an interrupted epoch is rebuilt with the same pairs and resume stays exact.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F

from trainwell.baseline import ConstantBaseline
from trainwell.data import InMemoryLoader, epoch_seed


class PairLoader(InMemoryLoader):
    """Batches of ``(items [B, 2, F], targets [B, 2])`` pairs drawn from ``items [N, F]``, ``targets [N]``.

    An epoch holds ``pairs_per_item`` x N pairs: each item is the first of that many pairs, its
    partner drawn at random among the items with a different target (redrawn until it differs),
    then the two put in order (higher target first). ``shuffle=True`` draws new pairs each epoch from (seed, epoch);
    ``shuffle=False`` (validation) draws the same pairs every time, from (seed, 0).
    The rest (length, device placement, ``state_dict``, sharding) is ``InMemoryLoader``'s.
    """

    def __init__(self, items: torch.Tensor, targets: torch.Tensor, batch_size: int = 32, shuffle: bool = True,
                 seed: int | None = None, pairs_per_item: int = 1):
        super().__init__(items, targets, batch_size=batch_size, shuffle=shuffle, seed=seed)
        self.pairs_per_item = pairs_per_item
        if len(targets) and bool((targets == targets[0]).all()):
            from trainwell.errors import DataError

            raise DataError("pairwise ranking needs at least two different target values; every target is equal")

    @property
    def num_samples(self) -> int:
        """Pairs per epoch (the samples the trainer counts)."""
        return self.pairs_per_item * len(self.tensors[0])

    def pairs(self, epoch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(higher, lower) item indices of the epoch's pairs; a pure function of (seed, epoch)."""
        targets = self.tensors[1].cpu()
        n = len(targets)
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch if self.shuffle else 0))
        first = torch.cat([torch.randperm(n, generator=generator) for _ in range(self.pairs_per_item)])
        second = torch.randint(n, (len(first),), generator=generator)
        tied = targets[first] == targets[second]
        while bool(tied.any()):  # redraw the partners that tie (the item itself included)
            second[tied] = torch.randint(n, (int(tied.sum()),), generator=generator)
            tied = targets[first] == targets[second]
        higher = targets[first] > targets[second]
        return torch.where(higher, first, second), torch.where(higher, second, first)

    def batches(self, epoch: int, seed: int | None = None, start: int = 0, reuse: int = 0,
                shard: Any = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's pair batches from batch ``start`` on (this process's part of each with a ``shard``)."""
        seed = self.seed if self.seed is not None else (seed or 0)
        items, targets = self.tensors
        higher, lower = (t.to(items.device) for t in self.pairs(epoch, seed))
        size = self.batch_size
        spans = ((lo, lo + size) for lo in range(start * size, len(self) * size, size)) if shard is None else (
            shard.span(index) for index in range(start, len(shard)))
        for lo, hi in spans:
            picked = torch.stack((higher[lo:hi], lower[lo:hi]), dim=1)  # [B, 2]
            yield items[picked], targets[picked]


class PairwiseMarginLoss:
    """Seed 001's ranking loss, ``mean(max(0, margin - score(pos) + score(neg)))``, on ``scores [B, 2]``.

    Which column is the positive comes from the targets (the higher one): a pair given the
    other way round is scored the other way round, and a tie (no order to learn) counts zero.
    """

    def __init__(self, margin: float = 1.0):
        self.margin = margin

    def __call__(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        order = torch.sign(targets[:, 0] - targets[:, 1]).to(scores.dtype)
        losses = F.margin_ranking_loss(scores[:, 0], scores[:, 1], order, margin=self.margin, reduction="none")
        return (losses * order.abs()).mean()


def pairwise_accuracy(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """The share of item pairs with different targets that the scores put in the right order
    (a tie in the scores counts a half); random scores give 0.5."""
    target_order = torch.sign(targets[:, None] - targets[None, :])
    score_order = torch.sign(scores[:, None] - scores[None, :])
    counted = torch.triu(target_order != 0, diagonal=1)
    right = (score_order == target_order).float() + 0.5 * (score_order == 0).float()
    return float(right[counted].mean())


def ranking_metrics(top_k: int = 10):
    """``compute(scores, targets)``: pairwise accuracy and NDCG@top_k (torchmetrics; the targets,
    whole numbers, are the gains) of one ranked list."""
    from torchmetrics.functional.retrieval import retrieval_normalized_dcg

    def compute(scores: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        scores = scores.reshape(targets.shape)
        ndcg = retrieval_normalized_dcg(scores, targets.round().long(), top_k=top_k)
        return {"pairwise_acc": pairwise_accuracy(scores, targets), f"ndcg{top_k}": float(ndcg)}

    return compute


def random_order_ndcg(targets: torch.Tensor, top_k: int = 10) -> float:
    """The expected NDCG@top_k of a random order: torchmetrics averages over tied scores, so
    one constant score gives exactly the mean over every order."""
    return ranking_metrics(top_k)(torch.zeros(len(targets)), targets)[f"ndcg{top_k}"]


class RandomOrderBaseline(ConstantBaseline):
    """Ranking's trivial baseline, in place of the regression one (predicting the targets' mean
    says nothing about an order): a random order, logged once as ``{"kind": "baseline",
    "predictor": "random order", "pairwise_acc": 0.5, "ndcg10": ...}`` for the validation items.
    It has no ``loss``, so the verdict's regression comparison stays silent."""

    def __init__(self, val_targets: torch.Tensor, top_k: int = 10):
        super().__init__()
        self.val_targets, self.top_k = val_targets, top_k

    def on_fit_start(self, trainer: Any, **_: Any) -> None:
        self._done = False

    def on_epoch_end(self, trainer: Any, **_: Any) -> None:
        if self._done:
            return
        self._done = True
        trainer.log({"kind": "baseline", "step": trainer.step, "epoch": trainer.epoch, "split": "validation",
                     "predictor": "random order", "pairwise_acc": 0.5,
                     f"ndcg{self.top_k}": random_order_ndcg(self.val_targets, self.top_k)})
