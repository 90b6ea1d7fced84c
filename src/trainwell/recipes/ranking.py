"""Seed 001's pairwise ranking loss on real data: order scikit-learn's bundled diabetes patients
by their disease progression one year on (a measured, graded quantity), as a clinic with a few
follow-up slots would: what matters is who comes first, not the predicted number itself.

A 10-64-64-1 score model sees both patients of a pair (``[B, 2, 10]`` -> ``[B, 2]``) and learns
``max(0, 1 - score(pos) + score(neg))``; each epoch draws 4 pairs per training patient afresh
from (seed, epoch) (``trainwell.ranking.PairLoader``). Validation and test report pairwise
accuracy and NDCG@10 of each held-out list (torchmetrics), beside a random order's.
The same 70/15/15 split as the regression recipe; features standardised on the training split.
"""

from __future__ import annotations

import torch
from torch import nn

from trainwell.config import TrainConfig
from trainwell.curriculum import refuse
from trainwell.ranking import PairLoader, PairwiseMarginLoss, RandomOrderBaseline, ranking_metrics
from trainwell.recipes import Parts, Recipe
from trainwell.recipes.common import assemble
from trainwell.recipes.regression import HIDDEN, load_diabetes_tensors, standardised_splits
from trainwell.setmetrics import SetMetrics

MARGIN = 1.0
TRAIN_PAIRS_PER_ITEM = 4  # 1,236 fresh pairs an epoch
VAL_PAIRS_PER_ITEM = 10  # 660 fixed validation pairs: a steady loss for early stopping
TOP_K = 10


def score_model(features: int = 10) -> nn.Module:
    """features -> 64 -> 64 -> 1 score per item; ``[..., F]`` -> ``[...]`` (pairs ``[B, 2, F]`` -> ``[B, 2]``)."""
    return nn.Sequential(nn.Linear(features, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                         nn.Linear(HIDDEN, 1), nn.Flatten(-2))


def build(config: TrainConfig, device: torch.device) -> Parts:
    refuse(config, "it trains on pairs drawn afresh each epoch, not on a fixed set of samples")
    (train, val, test), _ = standardised_splits(*load_diabetes_tensors(), seed=config.seed, targets=False)
    parts = assemble(config, device, score_model(), PairwiseMarginLoss(MARGIN), (train, val, test))
    if config.num_samples is not None:
        train = (train[0][: config.num_samples], train[1][: config.num_samples])
    parts.train = PairLoader(*train, batch_size=config.batch_size, seed=config.seed,
                             pairs_per_item=TRAIN_PAIRS_PER_ITEM)
    parts.val = PairLoader(*val, batch_size=config.batch_size, shuffle=False, seed=config.seed,
                           pairs_per_item=VAL_PAIRS_PER_ITEM) if len(val[0]) else None
    parts.test = PairLoader(*test, batch_size=config.batch_size, shuffle=False, seed=config.seed,
                            pairs_per_item=VAL_PAIRS_PER_ITEM) if len(test[0]) else None
    parts.example_batch = next(parts.train.batches(0))[0]
    parts.callbacks += [SetMetrics(ranking_metrics(TOP_K), val=val, test=test), RandomOrderBaseline(val[1], TOP_K)]
    return parts


RECIPE = Recipe("ranking", build)
