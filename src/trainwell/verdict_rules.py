"""The verdict's rules: each looks at the run model and returns its findings (or none).

Every threshold states its reason in one comment; the calibration suite
(tests/verdict_scenarios, docs/health-calibration.md) checks them against real runs.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter

from trainwell.verdict_run import EXPLOSION_FACTOR, Finding, Run, finite, fmt, names, number, sentence

# Loss trend. Below 1% relative improvement over the whole run the loss is "not
# decreasing"; below 5% it is "barely moving" (typical of a learning rate 10-1000x too low).
NOT_DECREASING = 0.01
BARELY_MOVING = 0.05
MIN_TREND_POINTS = 3
# Update size: healthy training changes each weight tensor by ~1e-3 of its norm per step
# (a common rule of thumb); a median ratio below 1e-5 means the steps are far too small.
LOW_UPDATE_RATIO = 1e-5
SPIKES_FOR_LR = 2  # one spike can be a bad batch; two or more point at the step size
# Early rise: within the first third of the run the loss climbs this far above its start.
EARLY_RISE_FACTOR = 1.5
# Oscillation: at least half the epoch-to-epoch changes of the training loss are rises of >5%.
OSCILLATION_RISE = 0.05
OSCILLATION_SHARE = 0.5
# Zig-zag: the validation loss rises >5% and falls back >5% the next epoch, each swing at least
# 5% of the starting loss: weights that land somewhere new each epoch (steps too big to settle,
# clipping or not). Two of them; a model at its capacity or overfitting moves one way.
ZIGZAG_SWING = 0.05
ZIGZAG_SHARE = 0.05
ZIGZAGS_FOR_LR = 2
# Overfitting: the same margin as plotting.py's warning (last validation loss 10% above its best),
# or 5% above it while the training loss fell 4x (memorising); either way at least 2 evaluations
# after the best (one noisy epoch is no trend), a rise of 1% of the starting loss (not noise on a
# near-zero loss), and a training loss still falling 10%. Or train accuracy this far above
# validation accuracy at the end, by more than 3 standard errors of the validation accuracy.
OVERFIT_MARGIN = 1.10
OVERFIT_MEMORISE_MARGIN = 1.05
OVERFIT_MEMORISE_FALL = 4.0
OVERFIT_MIN_SHARE = 0.01
OVERFIT_TRAIN_FALL = 0.10
OVERFIT_ACC_GAP = 0.15
# Underfitting: the loss has plateaued (<2% better over the last half of the epochs) while accuracy
# is below 70%, or, without accuracy, while the loss has not even halved; a regression whose loss is
# above half the loss of predicting the mean (R² below 0.5) underfits, plateau or not.
PLATEAU = 0.02
UNDERFIT_ACC = 0.70
UNDERFIT_LOSS_SHARE = 0.5
# ...and when the recipe logs a baseline of metrics (random order for ranking), the loss scale says
# nothing (a margin loss on noisy pairs never halves): it underfits when its validation metrics close
# under a fifth of the gap between the baseline and perfect.
UNDERFIT_METRIC_GAIN = 0.2
MIN_EPOCHS_FOR_PLATEAU = 4
# Gradients: a weight matrix whose typical gradient norm is below 1e-5 of the largest one's learns
# ~100,000x slower than the rest (vanishing). Judged on matrices (ndim >= 2): a 1-D tensor can get
# zero gradient by construction (an attention key bias under softmax, a bias before BatchNorm).
# Above 1e3 a single step moves weights far out of range (exploding).
VANISHING_RATIO = 1e-5
EXPLODING_NORM = 1e3
# Data loading: above 30% of step time waiting for the next batch the accelerator idles
# for a third of the run; faster loading buys more than any model change.
DATA_WAIT_SHARE = 0.3
# ... unless the run waited less than this in all: in a run of 10 ms epochs one preemption on a
# busy machine is a third of an epoch, and the share says nothing about the loader.
MIN_DATA_WAIT_S = 0.25


def loss_exploding(run: Run) -> list[Finding]:
    if run.guard_nonfinite and run.nonfinite_events < 2 and run.recovered and run.explosion() is None:
        return []  # one bad value the guard skipped, the run finite afterwards: reported as an intervention
    evidence = []
    if run.nonfinite_steps:
        evidence.append(f"the logged step loss was NaN or infinite {len(run.nonfinite_steps)} time(s), "
                        f"first at step {run.nonfinite_steps[0][0]}")
    if run.nonfinite_epochs:
        evidence.append(f"the mean training loss was NaN or infinite in epoch "
                        f"{', '.join(str(e) for e in run.nonfinite_epochs[:5])}")
    if run.guard_nonfinite:
        steps = ", ".join(str(r.get("step")) for r in run.guard_nonfinite[:5])
        evidence.append(f"the health guard caught {len(run.guard_nonfinite)} non-finite loss or gradient "
                        f"value(s) (step {steps}{', ...' if len(run.guard_nonfinite) > 5 else ''})")
    if (peak := run.explosion()) is not None:
        evidence.append(f"the loss rose to {fmt(peak[1])} at step {peak[0]}, "
                        f"{peak[1] / run.finite[0][1]:.0f}x its starting value {fmt(run.finite[0][1])}")
    if not evidence:
        return []
    recovered = " The run recovered: its last logged loss is finite." if run.recovered else ""
    return [Finding(
        "loss_exploding", "problem", "The loss exploded or became NaN",
        sentence("; ".join(evidence)) + "." + recovered,
        "Lower the learning rate (try 10x lower), clip gradients (--clip 1.0), add warmup, and check the "
        "inputs and labels for NaN or extreme values; with --precision 16 try bf16.",
    )]


def not_decreasing(run: Run) -> list[Finding]:
    change = run.change()
    if change is None or change >= NOT_DECREASING:
        return []
    start, end = run.ends()
    direction = "rose" if change < 0 else "barely changed"
    return [Finding(
        "not_decreasing", "problem", "Training loss is not decreasing",
        f"It {direction}: {fmt(start)} at the start, {fmt(end)} at the end ({-change:+.1%} over {run.span()}).",
        "Check that the labels match the inputs and the loss is connected to the model; then tune the "
        "learning rate — a stuck loss usually means it is far too low, a rising one too high.",
    )]


def zigzags(run: Run) -> int:
    """How many times the validation loss rose and fell straight back (see ZIGZAG_SWING)."""
    values, scale = [e[1] for e in run.eval_losses()], run.start_scale()
    return sum(b > a * (1 + ZIGZAG_SWING) and c * (1 + ZIGZAG_SWING) < b and b - a > ZIGZAG_SHARE * scale
               for a, b, c in zip(values, values[1:], values[2:]))


def lr_too_high(run: Run) -> list[Finding]:
    signs = []
    spikes = run.spikes()
    if len(spikes) + len(run.guard_spikes) >= SPIKES_FOR_LR:
        worst = f" (up to {max(s[1] / s[2] for s in spikes):.0f}x the recent median)" if spikes else ""
        signs.append(f"{len(spikes) + len(run.guard_spikes)} loss spikes{worst}"
                     + (f", {len(run.guard_spikes)} caught by the health guard" if run.guard_spikes else ""))
    if (peak := run.explosion()) is not None:
        signs.append(f"the loss grew {peak[1] / run.finite[0][1]:.0f}x")
    if run.nonfinite_events >= 2:
        signs.append(f"the loss or gradients went non-finite {run.nonfinite_events} times")
    if (rise := run.early_rise()) is not None and rise[2] > EARLY_RISE_FACTOR * rise[1] > 0:
        signs.append(f"early in the run the loss climbed from {fmt(rise[1])} to {fmt(rise[2])}")
    losses = [r["train_loss"] for r in run.epochs if finite(r.get("train_loss"))]
    rises = sum(b > a * (1 + OSCILLATION_RISE) for a, b in zip(losses, losses[1:]))
    if len(losses) >= MIN_TREND_POINTS and rises >= OSCILLATION_SHARE * (len(losses) - 1):
        signs.append(f"the epoch training loss went up in {rises} of {len(losses) - 1} epochs")
    if (zigzag := zigzags(run)) >= ZIGZAGS_FOR_LR:
        signs.append(f"the validation loss jumped up and straight back down {zigzag} times "
                     f"({', '.join(fmt(e[1]) for e in run.eval_losses()[:8])})")
    if not signs:
        return []
    lr = run.lr()
    name = f"The learning rate ({fmt(lr)})" if lr is not None else "The learning rate"
    lower = f"try {fmt(lr / 10)}" if number(lr) else "try 10x lower"
    severe = peak is not None or run.nonfinite_events >= 2 or bool(run.guard_spikes)
    return [Finding(
        "lr_too_high", "problem" if severe else "warning", f"{name} is probably too high",
        sentence("; ".join(signs)) + ".",
        f"Lower the learning rate ({lower}), add warmup (--warmup 500) or gradient clipping (--clip 1.0).",
    )]


def lr_too_low(run: Run) -> list[Finding]:
    change = run.change()
    if change is None or not -NOT_DECREASING < change < BARELY_MOVING:
        return []  # moving well, or rising (too high, not too low)
    if run.spikes() or run.explosion() or run.nonfinite_events or run.interventions:
        return []  # an unstable loss is not a slow one
    ratio = run.update_ratio()
    if ratio is not None and ratio >= LOW_UPDATE_RATIO:
        return []  # the steps are a normal size: a plateau (capacity, data), not a slow learner
    lr = run.lr()
    name = f"The learning rate ({fmt(lr)})" if lr is not None else "The learning rate"
    higher = f"try {fmt(lr * 10)}" if number(lr) else "try 10x higher"
    start, end = run.ends()
    updates = (f"; each step changed the weights by a median {fmt(ratio)} of their size (about 1e-3 is "
               "typical)" if ratio is not None else "")
    return [Finding(
        "lr_too_low", "warning", f"{name} is probably too low",
        f"The training loss barely moved: {fmt(start)} -> {fmt(end)} ({-change:+.2%} over {run.span()}){updates}.",
        f"Raise the learning rate ({higher}).",
    )]


def unstable(run: Run) -> bool:
    """A learning rate too high as a problem (signs of it, and the loss exploded, went non-finite
    twice or spiked past the health guard): curves that say more about the step size than the model."""
    return any(f.severity == "problem" for f in lr_too_high(run))


def overfitting(run: Run) -> list[Finding]:
    evals = run.eval_losses()
    # An unstable run's validation loss wanders with its learning rate, and its first epochs'
    # training loss is inflated by the spikes: a rise from the best is no sign of memorising.
    if len(evals) >= MIN_TREND_POINTS and not unstable(run):
        best_index = min(range(len(evals)), key=lambda i: evals[i][1])
        best, last = evals[best_index], evals[-1]
        train_fell = finite(best[2]) and finite(last[2]) and last[2] < (1 - OVERFIT_TRAIN_FALL) * best[2]
        fall = best[2] / last[2] if train_fell and last[2] > 0 else math.inf
        margin = OVERFIT_MEMORISE_MARGIN if fall >= OVERFIT_MEMORISE_FALL else OVERFIT_MARGIN
        sustained = len(evals) - 1 - best_index >= 2
        real = last[1] - best[1] > OVERFIT_MIN_SHARE * run.start_scale()
        if train_fell and sustained and real and last[1] > margin * best[1]:
            return [Finding(
                "overfitting", "warning", f"Overfitting began at epoch {best[0] + 1}",
                f"Validation loss rose from {fmt(best[1])} at epoch {best[0]} (its best) to {fmt(last[1])} at "
                f"epoch {last[0]} ({last[1] / best[1] - 1:+.0%}) while training loss fell from {fmt(best[2])} "
                f"to {fmt(last[2])}.",
                f"Use the best weights (model-best.safetensors, epoch {best[0]}); stop earlier (--patience 3); "
                "add data, augmentation or weight decay (--weight-decay 1e-4), or use a smaller model.",
            )]
    final = run.epochs[-1] if len(run.epochs) >= MIN_TREND_POINTS else {}
    train_acc, eval_acc, n = final.get("train_acc"), final.get("eval_acc"), final.get("eval_samples")
    if train_acc is None or eval_acc is None or train_acc - eval_acc <= OVERFIT_ACC_GAP:
        return []
    if finite(n) and n > 0 and train_acc - eval_acc <= 3 * math.sqrt(max(eval_acc * (1 - eval_acc), 1e-12) / n):
        return []  # a small validation set: the gap is within its noise
    return [Finding(
        "overfitting", "warning", "The model does much better on training data than on validation data",
        f"At epoch {final.get('epoch')} training accuracy is {train_acc:.1%} but validation accuracy is "
        f"{eval_acc:.1%} (a {train_acc - eval_acc:.1%} gap).",
        "Add data, augmentation, dropout or weight decay (--weight-decay 1e-4), or use a smaller model.",
    )]


def underfitting(run: Run) -> list[Finding]:
    advice = ("Use a bigger model (wider or deeper), train longer, reduce regularisation (weight decay, dropout), "
              "or check the features carry the signal and the labels are right.")
    if run.baseline is not None and run.epochs:
        return _below_baseline(run, advice)
    if run.metric_baseline is not None:
        return _below_metric_baseline(run, advice)
    losses = [(r.get("epoch"), r["train_loss"], r.get("train_acc"), r.get("eval_loss"), r.get("eval_acc"))
              for r in run.epochs if finite(r.get("train_loss"))]
    if len(losses) < MIN_EPOCHS_FOR_PLATEAU or losses[0][1] <= 0:
        return []
    half = losses[len(losses) // 2]
    last = losses[-1]
    if half[1] <= 0 or (half[1] - last[1]) / half[1] >= PLATEAU:
        return []  # still improving: not a plateau yet
    acc = last[2]
    high = acc < UNDERFIT_ACC if acc is not None else last[1] > UNDERFIT_LOSS_SHARE * losses[0][1]
    if not high:
        return []
    scores = f"training accuracy {acc:.1%}" if acc is not None else f"training loss {fmt(last[1])}"
    if last[4] is not None:
        scores += f", validation accuracy {last[4]:.1%}"
    elif last[3] is not None:
        scores += f", validation loss {fmt(last[3])}"
    return [Finding(
        "underfitting", "warning", "The model is underfitting",
        f"The training loss has plateaued ({fmt(half[1])} at epoch {half[0]}, {fmt(last[1])} at epoch "
        f"{last[0]}) with {scores}: training and validation both stay poor.", advice,
    )]


def _below_baseline(run: Run, advice: str) -> list[Finding]:
    """A regression compared with predicting the mean of its targets (the baseline record).

    Judged at the best epoch (the weights early stopping keeps), and only when the training loss
    is above the share too: a model that fits its training data but not the validation data is
    held back by noise in the data or by overfitting, not by its capacity.
    """
    key = "eval_loss" if run.baseline.get("split") == "validation" else "train_loss"
    scored = [r for r in run.epochs if finite(r.get(key))]
    last = min(scored, key=lambda r: r[key]) if scored else None
    baseline = float(run.baseline["loss"])
    if last is None or baseline <= 0 or last[key] <= UNDERFIT_LOSS_SHARE * baseline:
        return []
    trained = [r["train_loss"] for r in run.epochs if finite(r.get("train_loss"))]
    if trained and trained[-1] <= UNDERFIT_LOSS_SHARE * baseline:
        return []
    split = "validation" if key == "eval_loss" else "training"
    return [Finding(
        "underfitting", "warning", "The model barely beats predicting the mean",
        f"The {split} loss is {fmt(last[key])} at epoch {last.get('epoch')} against {fmt(baseline)} for "
        f"predicting the mean of the targets: the model removes only {1 - last[key] / baseline:.0%} of it "
        f"(R² {1 - last[key] / baseline:.2f} for a squared error).", advice,
    )]


def _below_metric_baseline(run: Run, advice: str) -> list[Finding]:
    """A run judged by metrics (higher is better) against the baseline's values for them."""
    last = run.epochs[-1] if run.epochs else {}
    gains = {k: (last[f"eval_{k}"] - v) / (1 - v) for k, v in run.metric_baseline.items()
             if finite(v) and v < 1 and finite(last.get(f"eval_{k}"))}
    if not gains or max(gains.values()) >= UNDERFIT_METRIC_GAIN:
        return []
    shown = ", ".join(f"validation {k} {fmt(last[f'eval_{k}'])} against {fmt(run.metric_baseline[k])}" for k in gains)
    return [Finding(
        "underfitting", "warning", f"The model barely beats {run.metric_baseline.get('predictor', 'its baseline')}",
        f"At epoch {last.get('epoch')}: {shown}.", advice,
    )]


def gradients(run: Run) -> list[Finding]:
    norms: dict[str, list[float]] = {}
    ndim: dict[str, int] = {}
    for record in run.layers:
        ndim.update(record.get("ndim") or {})
        for name, stats in (record.get("layers") or {}).items():
            value = stats.get("grad_norm") if isinstance(stats, dict) else None
            if finite(value):
                norms.setdefault(name, []).append(float(value))
    findings = []
    if norms:
        typical = {name: statistics.median(values) for name, values in norms.items()}
        matrices = {n: v for n, v in typical.items() if ndim.get(n, 2) >= 2} or typical  # older runs: no ndim
        largest_name = max(matrices, key=matrices.get)
        largest = matrices[largest_name]
        exploding = largest > EXPLODING_NORM  # then "small next to the largest" means nothing
        vanishing = [n for n, v in matrices.items() if not exploding and v < VANISHING_RATIO * largest]
        if vanishing:
            findings.append(Finding(
                "vanishing_gradients", "warning", f"Vanishing gradients in {names(vanishing)}",
                "Typical gradient norm " + ", ".join(f"{n} {fmt(typical[n])}" for n in vanishing[:5])
                + f", against {fmt(largest)} in {largest_name} (below {VANISHING_RATIO:g} of the largest).",
                "Use ReLU/GELU instead of sigmoid/tanh, add normalisation (BatchNorm/LayerNorm) or residual "
                "connections, and check the initialisation (Kaiming/Xavier).",
            ))
        peaks = {n: max(v) for n, v in norms.items() if max(v) > EXPLODING_NORM}
        if peaks:
            findings.append(Finding(
                "exploding_gradients", "problem", f"Exploding gradients in {names(list(peaks))}",
                "Peak gradient norm " + ", ".join(f"{n} {fmt(v)}" for n, v in list(peaks.items())[:5])
                + f" (above {EXPLODING_NORM:g}).",
                "Clip gradients (--clip 1.0), lower the learning rate, and add normalisation or a better "
                "initialisation in those layers.",
            ))
        return findings
    norms_logged = [(r.get("step"), r.get("grad_norm_max", r.get("grad_norm"))) for r in run.epochs + run.steps]
    big = [(s, v) for s, v in norms_logged if finite(v) and v > EXPLODING_NORM]
    if big:
        step, value = max(big, key=lambda p: p[1])
        findings.append(Finding(
            "exploding_gradients", "problem", "Exploding gradients",
            f"The global gradient norm reached {fmt(value)} (step {step}; above {EXPLODING_NORM:g}); "
            "per-layer norms were not recorded.",
            "Clip gradients (--clip 1.0), lower the learning rate, and add normalisation.",
        ))
    return findings


def data_loading(run: Run) -> list[Finding]:
    shares = [(r.get("epoch"), r["data_wait_share"]) for r in run.epochs if finite(r.get("data_wait_share"))]
    if not shares:
        shares = [(r.get("epoch"), r["data_wait_share"]) for r in run.steps if finite(r.get("data_wait_share"))]
    if not shares:
        return []
    mean = sum(s for _, s in shares) / len(shares)
    timed = [r["data_wait_share"] * r["epoch_time"] for r in run.epochs
             if finite(r.get("data_wait_share")) and finite(r.get("epoch_time"))]
    if mean <= DATA_WAIT_SHARE or (timed and sum(timed) < MIN_DATA_WAIT_S):
        return []
    worst = max(shares, key=lambda s: s[1])
    return [Finding(
        "data_loading", "warning", "Data loading is the bottleneck",
        f"On average {mean:.0%} of each step was spent waiting for the next batch "
        f"(worst: epoch {worst[0]}, {worst[1]:.0%}); above {DATA_WAIT_SHARE:.0%} the model sits idle.",
        "Use DataLoader(num_workers=4, pin_memory=True, persistent_workers=True), move slow preprocessing "
        "out of __getitem__ (do it once, ahead of time), or hold the data in memory with tw.InMemoryLoader.",
    )]


def interventions(run: Run) -> list[Finding]:
    if not run.interventions:
        return []
    causes = Counter(re.sub(r"\s*\(.*\)$", "", str(r.get("cause", "unknown"))) for r in run.interventions)
    actions = Counter(str(r.get("action", "unknown")) for r in run.interventions)
    steps = [r.get("step") for r in run.interventions]
    lr_after = run.interventions[-1].get("lr_after")
    n = len(run.interventions)
    evidence = (f"Causes: {', '.join(f'{c} ({k})' for c, k in causes.most_common())}. "
                f"Actions: {', '.join(f'{a} ({k})' for a, k in actions.most_common(3))}. "
                f"First at step {steps[0]}, last at step {steps[-1]}")
    evidence += f"; learning rate afterwards {fmt(lr_after)}." if lr_after is not None else "."
    if run.recovered:
        evidence += " The run recovered: its last logged loss is finite."
    return [Finding(
        "interventions", "warning", f"The health guard intervened {n} time{'s' if n > 1 else ''}",
        evidence,
        "Look at the steps listed (a bad batch? a learning rate too high?); if it keeps happening, "
        "lower the learning rate or clip gradients.",
    )]


def out_of_memory(run: Run) -> list[Finding]:
    if not run.out_of_memory:
        return []
    actions = "; ".join(f"step {r.get('step')}: {str(r.get('action', '')).split(',')[0]}" for r in run.out_of_memory[:4])
    return [Finding(
        "out_of_memory", "warning", "Out of memory: the micro-batch was halved",
        f"{len(run.out_of_memory)} out-of-memory error(s), each retried in smaller micro-batches with more "
        f"accumulation ({actions}); the update is the same as with the full batch.",
        "Nothing to fix in the model. To avoid the failed attempts, start with the smaller micro-batch: "
        "--batch-size half as large and --accumulate twice as large give the same update.",
    )]


CHECKS = (loss_exploding, not_decreasing, lr_too_high, lr_too_low, overfitting, underfitting, gradients,
          data_loading, interventions, out_of_memory)
