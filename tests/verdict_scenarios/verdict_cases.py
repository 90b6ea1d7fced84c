"""The labelled scenario suite of the health verdict: real short runs whose diagnosis is known by
construction, each with the finding it must produce and the findings it must not.

``python tests/verdict_scenarios/calibrate.py`` runs them all and prints the calibration table
(docs/health-calibration.md); ``test_scenarios.py`` runs them as tests.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import trainwell as tw
from trainwell.baseline import ConstantBaseline
from trainwell.verdict import Finding, diagnose, read_records

CODES = ("healthy", "loss_exploding", "not_decreasing", "lr_too_high", "lr_too_low", "overfitting",
         "underfitting", "vanishing_gradients", "exploding_gradients", "data_loading", "interventions")
NOT_OK = tuple(c for c in CODES if c != "healthy")


@dataclass
class Outcome:
    """What a scenario's run left: its records, the config the verdict is given, and the trainer."""

    records: list[dict[str, Any]]
    config: dict[str, Any]
    trainer: Any = None

    def findings(self) -> list[Finding]:
        return diagnose(self.records, self.config)


@dataclass
class Scenario:
    """A run, the codes of which at least one must be found, the codes that must not be, and an
    extra check of the findings' words (returns a complaint, or "")."""

    name: str
    description: str
    run: Callable[[Path], Outcome]
    required: tuple[str, ...]
    forbidden: tuple[str, ...]
    check: Callable[[Outcome, list[Finding]], str] = lambda outcome, findings: ""
    slow: bool = False


# ---------------------------------------------------------------- running


def _trainer_adds_baseline() -> bool:
    """Whether the Trainer already adds a ConstantBaseline by default (then adding another would log twice)."""
    model = nn.Linear(1, 1)
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(), device="cpu")
    return any(isinstance(cb, ConstantBaseline) for cb in trainer.callbacks)


def fit_run(run_dir: Path, model: nn.Module, lr: float, epochs: int, train: Any, val: Any = None, *,
            loss_fn: Any = None, optimizer: Any = torch.optim.Adam, clip: float | None = None,
            callbacks: tuple = (), log_every: int = 10, grad_flow_every: int = 10, **config: Any) -> Outcome:
    """Train ``model`` into ``run_dir`` as a library user would; a run the guard stops still leaves records."""
    extra = [] if _trainer_adds_baseline() else [ConstantBaseline()]
    trainer = tw.Trainer(model, optimizer(model.parameters(), lr=lr), loss_fn or nn.CrossEntropyLoss(),
                         grad_clip_norm=clip, device="cpu", run_dir=run_dir, seed=0, log_every_steps=log_every,
                         grad_flow_every=grad_flow_every, callbacks=[*callbacks, *extra])
    try:
        trainer.fit(train, val, epochs=epochs)
    except tw.TrainingError:
        pass
    return Outcome(read_records(run_dir), {"lr": lr, "epochs": epochs, "clip": clip, **config}, trainer)


def recipe_run(run_dir: Path, recipe: str, **options: Any) -> Outcome:
    """A recipe trained as ``trainwell train RECIPE --run-dir DIR [options]`` trains it (no test, no report)."""
    from trainwell.config import validate
    from trainwell.recipes import get_recipe, recipe_defaults

    config = validate({**recipe_defaults(recipe), **options, "recipe": recipe, "run_dir": str(run_dir)})
    tw.seed_everything(config.seed)
    device = torch.device("cpu")
    parts = get_recipe(recipe).build(config, device)
    extra = [] if _trainer_adds_baseline() else [ConstantBaseline()]
    trainer = tw.Trainer(parts.model, parts.optimizer, parts.loss_fn, parts.scheduler, config.clip, device=device,
                         precision=config.precision, callbacks=[*parts.callbacks, *extra], run_dir=run_dir,
                         seed=config.seed, log_every_steps=config.log_every, keep_checkpoints=config.keep_checkpoints)
    try:
        trainer.fit(parts.train, parts.val, epochs=config.epochs, accumulation_steps=config.accumulate)
    except tw.TrainingError:
        pass
    return Outcome(read_records(run_dir), asdict(config), trainer)


def loaders(x: torch.Tensor, y: torch.Tensor, batch_size: int = 32, val_share: float = 0.2) -> tuple:
    """(train, validation) in-memory loaders from one set of tensors."""
    n_val = int(len(x) * val_share)
    return (tw.InMemoryLoader(x[n_val:], y[n_val:], batch_size=batch_size, seed=0),
            tw.InMemoryLoader(x[:n_val], y[:n_val], batch_size=256, shuffle=False))


def blobs(n: int, dims: int = 8, classes: int = 4, seed: int = 0, spread: float = 1.0) -> tuple:
    """Gaussian clusters: an easy classification task (a small MLP reaches ~100%)."""
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(classes, dims, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + spread * torch.randn(n, dims, generator=g), y


def mlp(inputs: int = 8, outputs: int = 4, width: int = 32, activation: type = nn.ReLU, depth: int = 1) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(inputs, width), activation()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), activation()]
    return nn.Sequential(*layers, nn.Linear(width, outputs))


def seeded(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return build()


# ---------------------------------------------------------------- the runs


def mnist_default(run_dir: Path) -> Outcome:
    return recipe_run(run_dir, "mnist")


def mnist_overfit(run_dir: Path) -> Outcome:
    return recipe_run(run_dir, "mnist", epochs=15, num_samples=3000)


def adam_lr_far_too_high(run_dir: Path) -> Outcome:
    return recipe_run(run_dir, "mnist", epochs=3, num_samples=3000, lr=0.5)


def lr_far_too_low(run_dir: Path) -> Outcome:
    return recipe_run(run_dir, "mnist", epochs=3, num_samples=3000, lr=1e-7)


def lr_10x_too_high_clipped(run_dir: Path) -> Outcome:
    # SGD at 0.1 fits this regression to its noise (MSE ~0.03); at 1.0 with the gradient norm
    # clipped to 1 nothing explodes, but the weights bounce and the loss stays ~25x higher.
    model = seeded(lambda: mlp(8, 1, width=32))
    return fit_run(run_dir, model, 1.0, 6, *loaders(*regression_data(1000)), loss_fn=nn.MSELoss(),
                   optimizer=torch.optim.SGD, clip=1.0)


def two_steps(run_dir: Path) -> Outcome:
    return recipe_run(run_dir, "mnist", epochs=2, num_samples=64, batch_size=64, log_every=1)


def deep_sigmoid(run_dir: Path) -> Outcome:
    model = seeded(lambda: mlp(8, 4, width=16, activation=nn.Sigmoid, depth=12))
    return fit_run(run_dir, model, 1e-3, 2, *loaders(*blobs(400)))


class SlowDataset(torch.utils.data.Dataset):
    """Every sample takes 5 ms to load (a decode in ``__getitem__``): the model waits for data."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple:
        time.sleep(0.005)
        return self.x[i], self.y[i]


def slow_dataset(run_dir: Path) -> Outcome:
    x, y = blobs(128)
    loader = torch.utils.data.DataLoader(SlowDataset(x, y), batch_size=16, shuffle=True)
    return fit_run(run_dir, seeded(mlp), 1e-2, 2, loader)


class NaNOnce(nn.Module):
    """An MLP whose 30th training forward returns NaN: one transient bad batch."""

    def __init__(self) -> None:
        super().__init__()
        self.net, self.calls = mlp(), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls == 30:
                return out * math.nan
        return out


def transient_nan(run_dir: Path) -> Outcome:
    return fit_run(run_dir, seeded(NaNOnce), 1e-2, 5, *loaders(*blobs(800)))


def xor_data(n: int, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (n, 2), generator=g).float()
    return x + 0.1 * torch.randn(n, 2, generator=g), (x[:, 0] != x[:, 1]).long()


def tiny_model_hard_task(run_dir: Path) -> Outcome:
    # A linear model cannot separate XOR: it stays near chance however long it trains.
    return fit_run(run_dir, seeded(lambda: nn.Linear(2, 2)), 0.05, 8, *loaders(*xor_data(1000)))


def xor_default(run_dir: Path) -> Outcome:
    return recipe_run(run_dir, "xor")


def regression_data(n: int, nonlinear: float = 0.0, noise: float = 0.1, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.randn(8, 1, generator=g)
    y = x @ w + nonlinear * torch.sin(3 * x[:, :1]) * x[:, 1:2] + noise * torch.randn(n, 1, generator=g)
    return x, y


def regression(run_dir: Path) -> Outcome:
    model = seeded(lambda: mlp(8, 1, width=32))
    return fit_run(run_dir, model, 1e-2, 10, *loaders(*regression_data(1000)), loss_fn=nn.MSELoss())


def regression_near_baseline(run_dir: Path) -> Outcome:
    # Most of the variance is a product term a linear model cannot express.
    x, y = regression_data(1000, nonlinear=6.0)
    y = y - x @ torch.linalg.lstsq(x, y).solution * 0.8  # leave only a weak linear part
    return fit_run(run_dir, seeded(lambda: nn.Linear(8, 1)), 1e-2, 10, *loaders(x, y), loss_fn=nn.MSELoss())


def label_noise(run_dir: Path) -> Outcome:
    x, y = blobs(4000, classes=10, spread=0.5)
    g = torch.Generator().manual_seed(1)
    noisy = torch.rand(len(y), generator=g) < 0.5
    y = torch.where(noisy, torch.randint(0, 10, (len(y),), generator=g), y)
    return fit_run(run_dir, seeded(lambda: mlp(8, 10, width=16)), 1e-3, 10, *loaders(x, y), log_every=5)


def two_epochs_rise_in_steps(run_dir: Path) -> Outcome:
    # Two epochs: the epoch means fall, while single logged batch losses may not (noise).
    x, y = blobs(2000, classes=10, spread=2.5)
    return fit_run(run_dir, seeded(lambda: mlp(8, 10)), 1e-3, 2, *loaders(x, y), log_every=25)


class Attention(nn.Module):
    """One BERT-style self-attention block (query/key/value with biases, softmax) and a classifier:
    the key bias adds the same number to every score of a query, which softmax ignores, so its
    gradient is zero by construction."""

    def __init__(self, dims: int = 8, classes: int = 4):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(dims, dims) for _ in range(3))
        self.out = nn.Linear(dims, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.view(len(x), 4, -1)  # 4 tokens of 2 features, projected to 8
        tokens = nn.functional.pad(tokens, (0, 6))
        q, k, v = self.query(tokens), self.key(tokens), self.value(tokens)
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
        return self.out((weights @ v).mean(dim=1))


def bert_attention(run_dir: Path) -> Outcome:
    return fit_run(run_dir, seeded(Attention), 1e-2, 6, *loaders(*blobs(800)))


# ---------------------------------------------------------------- extra checks


def _title_names_epoch(outcome: Outcome, findings: list[Finding]) -> str:
    found = [f for f in findings if f.code == "overfitting"]
    return "" if found and any(ch.isdigit() for ch in found[0].title) else "the overfitting title names no epoch"


def _names_first_layer(outcome: Outcome, findings: list[Finding]) -> str:
    found = [f for f in findings if f.code == "vanishing_gradients"]
    return "" if found and "net.0.weight" not in found[0].title and "0.weight" in found[0].title \
        else "the vanishing-gradient title does not name the first layer"


def _early_stopped(outcome: Outcome, findings: list[Finding]) -> str:
    epochs = outcome.trainer.epoch
    return "" if epochs < outcome.config["epochs"] else f"early stopping never fired ({epochs} epochs)"


def _no_accuracy_words(outcome: Outcome, findings: list[Finding]) -> str:
    said = " ".join(f"{f.title} {f.evidence} {f.suggestion}" for f in findings).lower()
    return "a regression verdict speaks of accuracy" if "accurac" in said else ""


def _names_baseline(outcome: Outcome, findings: list[Finding]) -> str:
    said = " ".join(f.evidence for f in findings)
    return "" if "predicting the mean" in said else "the verdict does not compare with predicting the mean"


def _honest_direction(outcome: Outcome, findings: list[Finding]) -> str:
    import re

    for f in findings:
        for verb, start, end in re.findall(r"(fell|rose) from ([0-9.e+-]+) to ([0-9.e+-]+)", f.evidence):
            if (verb == "fell") != (float(end) < float(start)):
                return f"{f.code} says the loss {verb} from {start} to {end}"
    epochs = [r["train_loss"] for r in outcome.records if r.get("kind") == "epoch"]
    first = f"{epochs[0]:.4g}"
    return "" if first in " ".join(f.evidence for f in findings) else f"the epoch means ({first} ...) are not cited"


def _both(*checks: Callable) -> Callable:
    return lambda outcome, findings: "; ".join(filter(None, (c(outcome, findings) for c in checks)))


SCENARIOS = [
    Scenario("mnist_default", "mnist recipe at its defaults (Adam 1e-3, 5 epochs, 54k samples)", mnist_default,
             ("healthy",), NOT_OK, slow=True),
    Scenario("mnist_overfit", "mnist, lr 1e-3, 15 epochs on 3,000 samples", mnist_overfit, ("overfitting",),
             ("healthy", "lr_too_high", "lr_too_low", "underfitting", "not_decreasing"), _title_names_epoch, slow=True),
    Scenario("adam_lr_far_too_high", "mnist on 3,000 samples, Adam lr 0.5 (500x the default)", adam_lr_far_too_high,
             ("lr_too_high",), ("healthy", "lr_too_low", "overfitting", "underfitting")),
    Scenario("lr_far_too_low", "mnist on 3,000 samples, Adam lr 1e-7", lr_far_too_low, ("lr_too_low",),
             ("healthy", "lr_too_high", "overfitting", "underfitting", "loss_exploding")),
    Scenario("lr_10x_clipped", "an MLP regression, SGD lr 1.0 (10x the 0.1 that fits it), clipping at 1.0",
             lr_10x_too_high_clipped, ("lr_too_high",), ("healthy", "lr_too_low", "underfitting")),
    Scenario("deep_sigmoid", "12 sigmoid layers of width 16 on Gaussian blobs", deep_sigmoid,
             ("vanishing_gradients",), ("healthy", "exploding_gradients", "lr_too_high"), _names_first_layer),
    Scenario("slow_dataset", "a Dataset that sleeps 5 ms per sample, DataLoader without workers", slow_dataset,
             ("data_loading",), ("healthy", "lr_too_high", "exploding_gradients")),
    Scenario("transient_nan", "one NaN batch (the 30th), then normal training", transient_nan, ("interventions",),
             ("healthy", "lr_too_high", "loss_exploding", "not_decreasing", "underfitting")),
    Scenario("tiny_model_hard_task", "a linear model on XOR", tiny_model_hard_task, ("underfitting",),
             ("healthy", "overfitting", "lr_too_high", "lr_too_low")),
    Scenario("xor_default", "xor recipe at its defaults (200 epochs, patience 20)", xor_default, ("healthy",),
             NOT_OK, _early_stopped, slow=True),
    Scenario("regression", "an MLP on a linear target with noise 0.1, MSE", regression, ("healthy",), NOT_OK,
             _no_accuracy_words),
    Scenario("regression_near_baseline", "a linear model on a mostly nonlinear target, MSE",
             regression_near_baseline, ("underfitting",), ("healthy",), _both(_names_baseline, _no_accuracy_words)),
    Scenario("label_noise_50", "10 Gaussian blobs, half the labels replaced at random, a small MLP", label_noise,
             ("underfitting", "not_decreasing"), ("healthy", "lr_too_high", "lr_too_low", "overfitting")),
    Scenario("two_steps", "mnist, 64 samples, batch 64, 2 epochs: 2 optimizer steps", two_steps, ("healthy",),
             ("overfitting",)),
    Scenario("two_epochs_rise_in_steps", "2 epochs; the verdict must cite the epoch means, never a rise as a fall",
             two_epochs_rise_in_steps, ("healthy",), NOT_OK, _honest_direction),
    Scenario("bert_attention", "a BERT-style attention block (key bias: zero gradient under softmax)",
             bert_attention, ("healthy",), ("vanishing_gradients",)),
]


def judge(scenario: Scenario, outcome: Outcome) -> tuple[list[str], list[str]]:
    """(codes found, complaints): what the verdict said and everything wrong with it."""
    findings = outcome.findings()
    found = [f.code for f in findings]
    complaints = []
    if not set(found) & set(scenario.required):
        complaints.append(f"none of {' / '.join(scenario.required)} found")
    complaints += [f"{code} found" for code in found if code in scenario.forbidden]
    if extra := scenario.check(outcome, findings):
        complaints.append(extra)
    return found, complaints
