"""Curriculum vs random order on the mnist recipe: the same steps, several seeds.

    python bench/curriculum.py                         # seeds 0,1,2, the recipe's 5 epochs, all 54k samples
    python bench/curriculum.py --seeds 0,1,2,3,4 --num-samples 20000 --json bench/results/curriculum.json

Each run is the recipe as `trainwell train mnist [--curriculum loss]` builds it (seeded the
same way, the same model, Adam 1e-3, batch 64), trained by a `Trainer` with no run directory.
Every `--eval-every` optimizer steps the validation accuracy (the recipe's 6,000 held-out
images) is measured in eval mode, which changes nothing in training; the table gives the first
measured step at which it reached each threshold, and the final accuracy. The curriculum's
reference pass (one extra epoch on a copy of the model) is not in its step count: its time is
a column of its own. The health guard is on, as in `trainwell train`, except in the
``curriculum-noguard`` arm, which separates the curriculum's own effect from the guard's
reaction to it (see docs/curriculum.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from trainwell.config import validate
from trainwell.recipes import get_recipe, recipe_defaults
from trainwell.runtime import seed_everything
from trainwell.trainer import Trainer


class ValidationCurve:
    """Validation accuracy every ``every`` steps (and at the end), as (step, accuracy) pairs."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, every: int):
        self.inputs, self.labels, self.every, self.points = inputs, labels, every, []

    @torch.no_grad()
    def measure(self, trainer: Trainer) -> None:
        model = trainer.model
        model.eval()
        correct = sum(int((model(x).argmax(1) == y).sum())
                      for x, y in zip(self.inputs.split(2000), self.labels.split(2000)))
        model.train()
        self.points.append((trainer.step, correct / len(self.labels)))

    def on_step_end(self, trainer: Trainer, **_: object) -> None:
        if trainer.step % self.every == 0:
            self.measure(trainer)


class Interventions:
    """A logger that keeps the health guard's interventions (a rollback and a learning-rate back-off each)."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def log(self, record: dict, step: int) -> None:
        if record.get("kind") == "intervention":
            self.records.append(record)

    def close(self) -> None:
        pass


ARMS = {"random": ("none", True), "curriculum": ("loss", True), "curriculum-noguard": ("loss", False)}


def run(arm: str, seed: int, args: argparse.Namespace) -> dict:
    """One training run of the mnist recipe: ``arm`` names the curriculum and whether the health guard is on."""
    curriculum, health = ARMS[arm]
    raw = {**recipe_defaults("mnist"), "recipe": "mnist", "seed": seed, "curriculum": curriculum,
           "epochs": args.epochs, "device": "cpu"}
    if args.num_samples:
        raw["num_samples"] = args.num_samples
    config = validate(raw)
    seed_everything(config.seed)  # as `trainwell train` does before building the recipe
    parts = get_recipe("mnist").build(config, torch.device("cpu"))
    curve = ValidationCurve(*parts.val.tensors, args.eval_every)
    interventions = Interventions()
    trainer = Trainer(parts.model, parts.optimizer, parts.loss_fn, parts.scheduler, device="cpu", seed=config.seed,
                      callbacks=[curve, interventions], grad_flow_every=None, health=health)
    scoring = 0.0
    if curriculum != "none":  # score now, to time the reference pass apart from training
        started = time.perf_counter()
        parts.train.ranked  # noqa: B018 - computes the difficulty scores once
        scoring = time.perf_counter() - started
    started = time.perf_counter()
    trainer.fit(parts.train, parts.val, epochs=config.epochs)
    wall = time.perf_counter() - started
    if not curve.points or curve.points[-1][0] != trainer.step:
        curve.measure(trainer)
    reached = {t: next((step for step, acc in curve.points if acc >= t), None) for t in args.thresholds}
    return {"arm": arm, "seed": seed, "steps": trainer.step, "final_val_acc": curve.points[-1][1],
            "best_val_acc": max(acc for _, acc in curve.points), "steps_to": reached,
            "epoch_val_acc": trainer.history["eval_acc"], "interventions": len(interventions.records),
            "intervention_steps": [r["step"] for r in interventions.records],
            "train_s": round(wall, 1), "scoring_s": round(scoring, 1), "curve": curve.points}


def table(results: list[dict], thresholds: list[float]) -> str:
    """One row per run, then the mean per arm (steps to a threshold: mean over the seeds that reached it)."""
    head = ["arm", "seed", "steps"] + [f"steps to {t:.1%}" for t in thresholds] + [
        "val acc per epoch", "final val acc", "best val acc", "guard interventions", "train s", "scoring s"]
    rows = [head, ["---"] * len(head)]
    for r in results:
        rows.append([r["arm"], str(r["seed"]), str(r["steps"])] + [str(r["steps_to"][t] or "not reached")
                                                                 for t in thresholds]
                    + [" ".join(f"{a:.1%}" for a in r["epoch_val_acc"]), f"{r['final_val_acc']:.2%}",
                       f"{r['best_val_acc']:.2%}", str(r["interventions"]), str(r["train_s"]), str(r["scoring_s"])])
    for arm in dict.fromkeys(r["arm"] for r in results):
        runs = [r for r in results if r["arm"] == arm]
        cells = []
        for t in thresholds:
            hit = [r["steps_to"][t] for r in runs if r["steps_to"][t] is not None]
            cells.append(f"{statistics.mean(hit):.0f} ({len(hit)}/{len(runs)} reached)" if hit else "not reached")
        final = [r["final_val_acc"] for r in runs]
        spread = f" ± {statistics.stdev(final):.2%}" if len(final) > 1 else ""
        per_epoch = " ".join(f"{statistics.mean(e):.1%}" for e in zip(*(r["epoch_val_acc"] for r in runs)))
        rows.append([f"**{arm} mean**", "", str(runs[0]["steps"])] + cells + [
            per_epoch, f"{statistics.mean(final):.2%}{spread}", f"{statistics.mean(r['best_val_acc'] for r in runs):.2%}",
            str(sum(r["interventions"] for r in runs)),
            f"{statistics.mean(r['train_s'] for r in runs):.1f}", f"{statistics.mean(r['scoring_s'] for r in runs):.1f}"])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (default: the recipe's 5)")
    parser.add_argument("--num-samples", type=int, default=None, help="train on the first N samples (default: all)")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between validation measurements")
    parser.add_argument("--thresholds", default="0.95,0.97", help="validation accuracies to time (default: 0.95,0.97)")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help="random (--curriculum none), curriculum (--curriculum loss), curriculum-noguard (the "
                             "same with the health guard off); default: all three")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine two threads spin-wait on each other)")
    parser.add_argument("--json", type=Path, default=None, help="also write every run, curves included, here")
    args = parser.parse_args()
    args.thresholds = [float(t) for t in args.thresholds.split(",")]
    torch.set_num_threads(args.threads)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm in args.arms.split(","):
            results.append(run(arm, seed, args))
            r = results[-1]
            print(f"seed {seed} {arm}: final val acc {r['final_val_acc']:.2%}, steps to "
                  f"{', '.join(f'{t:.0%}: {s}' for t, s in r['steps_to'].items())}, {r['train_s']}s", flush=True)
    print(f"\n{torch.get_num_threads()} torch threads, torch {torch.__version__}\n")
    print(table(results, args.thresholds))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": results},
                                        indent=1, default=str))


if __name__ == "__main__":
    main()
