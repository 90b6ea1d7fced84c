"""The trainer's optimizer step: its fast path for fused Adam/AdamW must give torch's update bit for bit."""

from unittest import mock

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

import trainwell as tw
from trainwell.optim import OptimizerStep


def model_and_batches(seed: int = 0) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    batches = [(torch.randn(5, 6), torch.randint(0, 3, (5,))) for _ in range(12)]
    return model, batches


def two_group_optimizer(kind: str, model: nn.Module) -> torch.optim.Optimizer:
    """Two groups with their own lr; AdamW with weight decay, Adam with coupled decay in one group."""
    first, second = list(model[0].parameters()), list(model[2].parameters())
    if kind == "adamw":
        return torch.optim.AdamW([{"params": first}, {"params": second, "lr": 3e-3}], lr=1e-2,
                                 weight_decay=0.05, fused=True)
    return torch.optim.Adam([{"params": first, "weight_decay": 0.01}, {"params": second, "lr": 3e-3}], lr=1e-2,
                            fused=True)


def train(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list, step, zero_grad) -> None:
    """Steps with the last layer's bias frozen out of every third step and an lr change half way."""
    for i, (x, y) in enumerate(batches):
        if i == len(batches) // 2:
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
        nn.functional.cross_entropy(model(x), y).backward()
        if i % 3 == 2:
            model[2].bias.grad = None  # torch skips a parameter without a gradient; so must we
        step()
        zero_grad()


def assert_same_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer, model_a: nn.Module, model_b: nn.Module):
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(pa, pb)
        assert pa.grad is None and pb.grad is None
    for sa, sb in zip(a.state.values(), b.state.values()):
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_fast_step_matches_torch_bitwise_and_skips_optimizer_step(kind):
    model_a, batches = model_and_batches()
    model_b, _ = model_and_batches()
    reference = two_group_optimizer(kind, model_a)
    train(model_a, reference, batches, reference.step, lambda: reference.zero_grad(set_to_none=True))

    fast = two_group_optimizer(kind, model_b)
    stepper = OptimizerStep(fast)
    with mock.patch.object(fast, "step", wraps=fast.step) as torch_step:
        train(model_b, fast, batches, stepper.step, stepper.zero_grad)
    assert torch_step.call_count == 1  # only the first step, which creates the state
    assert_same_state(reference, fast, model_a, model_b)
    assert float(fast.state[model_b[0].weight]["step"]) == len(batches)


def test_fast_step_continues_bitwise_from_a_loaded_state_dict():
    model_a, batches = model_and_batches()
    reference = two_group_optimizer("adam", model_a)
    for _ in range(2):
        train(model_a, reference, batches, reference.step, lambda: reference.zero_grad(set_to_none=True))

    model_b, _ = model_and_batches()
    first = two_group_optimizer("adam", model_b)
    train(model_b, first, batches, first.step, lambda: first.zero_grad(set_to_none=True))
    resumed = two_group_optimizer("adam", model_b)
    resumed.load_state_dict(first.state_dict())
    stepper = OptimizerStep(resumed)
    train(model_b, resumed, batches, stepper.step, stepper.zero_grad)
    assert_same_state(reference, resumed, model_a, model_b)


def test_fast_step_follows_a_state_loaded_mid_run():
    """The stepper looks the state tensors up once; a rollback (load_state_dict on the same optimizer,
    as the health guard does) gives it new ones, and it must step those, not the old."""
    import copy

    def run(use_stepper: bool) -> tuple[nn.Module, torch.optim.Optimizer]:
        model, batches = model_and_batches()
        optimizer = two_group_optimizer("adam", model)
        stepper = OptimizerStep(optimizer)
        step = stepper.step if use_stepper else optimizer.step
        zero_grad = stepper.zero_grad if use_stepper else (lambda: optimizer.zero_grad(set_to_none=True))
        train(model, optimizer, batches[:4], step, zero_grad)
        saved = copy.deepcopy((model.state_dict(), optimizer.state_dict()))
        train(model, optimizer, batches[4:], step, zero_grad)
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        train(model, optimizer, batches[4:], step, zero_grad)
        return model, optimizer

    model_a, reference = run(use_stepper=False)
    model_b, fast = run(use_stepper=True)
    assert_same_state(reference, fast, model_a, model_b)
    assert float(fast.state[model_b[0].weight]["step"]) == 12


def test_fast_step_follows_settings_changed_mid_run():
    """The fast path keeps each group's plan while its settings stay the same: a change of betas,
    eps or weight decay must be stepped with the new values, and one it does not cover (maximize)
    must go back to torch's step."""
    def run(use_stepper: bool) -> tuple[nn.Module, torch.optim.Optimizer, int]:
        model, batches = model_and_batches()
        optimizer = two_group_optimizer("adam", model)
        stepper = OptimizerStep(optimizer)
        step = stepper.step if use_stepper else optimizer.step
        zero_grad = stepper.zero_grad if use_stepper else (lambda: optimizer.zero_grad(set_to_none=True))
        train(model, optimizer, batches[:4], step, zero_grad)
        optimizer.param_groups[0].update(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
        train(model, optimizer, batches[4:8], step, zero_grad)
        optimizer.param_groups[1]["maximize"] = True
        with mock.patch.object(optimizer, "step", wraps=optimizer.step) as torch_step:
            train(model, optimizer, batches[8:], step, zero_grad)
        return model, optimizer, torch_step.call_count

    model_a, reference, _ = run(use_stepper=False)
    model_b, fast, torch_steps = run(use_stepper=True)
    assert_same_state(reference, fast, model_a, model_b)
    assert torch_steps == 4  # every step after maximize was switched on


@pytest.mark.parametrize("setup", ["step_hook", "global_hook", "not_fused", "amsgrad", "tensor_lr", "subclass"])
def test_torch_steps_whenever_the_fast_path_does_not_apply(setup):
    model, batches = model_and_batches()
    options = {"amsgrad": True} if setup == "amsgrad" else {}
    lr = torch.tensor(1e-2) if setup == "tensor_lr" else 1e-2
    cls = type("MyAdam", (torch.optim.Adam,), {}) if setup == "subclass" else torch.optim.Adam
    optimizer = cls(model.parameters(), lr=lr, fused=setup != "not_fused", **options)
    calls = []
    handles = []
    if setup == "step_hook":
        handles.append(optimizer.register_step_post_hook(lambda *_: calls.append(1)))
    if setup == "global_hook":
        handles.append(register_optimizer_step_post_hook(lambda *_: calls.append(1)))
    stepper = OptimizerStep(optimizer)
    try:
        with mock.patch.object(optimizer, "step", wraps=optimizer.step) as torch_step:
            train(model, optimizer, batches, stepper.step, stepper.zero_grad)
    finally:
        for handle in handles:
            handle.remove()
    assert torch_step.call_count == len(batches)
    if setup.endswith("hook"):
        assert len(calls) == len(batches)


def test_zero_grad_defers_to_an_optimizer_that_overrides_it():
    class CountingSGD(torch.optim.SGD):
        calls = 0

        def zero_grad(self, set_to_none: bool = True) -> None:
            CountingSGD.calls += 1
            super().zero_grad(set_to_none)

    model, batches = model_and_batches()
    stepper = OptimizerStep(CountingSGD(model.parameters(), lr=0.1))
    train(model, stepper.optimizer, batches[:3], stepper.step, stepper.zero_grad)
    assert CountingSGD.calls == 3
    assert all(p.grad is None for p in model.parameters())


def test_trainer_with_fused_adam_matches_a_hand_loop_bitwise():
    """The trainer's fast step inside train_epoch: the same weights as torch's own loop on the same batches."""
    model_a, batches = model_and_batches()
    model_b, _ = model_and_batches()
    reference = torch.optim.Adam(model_a.parameters(), lr=1e-2, fused=True)
    for x, y in batches:
        nn.functional.cross_entropy(model_a(x), y).backward()
        reference.step()
        reference.zero_grad(set_to_none=True)
    trainer = tw.Trainer(model_b, torch.optim.Adam(model_b.parameters(), lr=1e-2, fused=True), nn.CrossEntropyLoss(),
                         device="cpu", health=False, grad_flow_every=None)
    trainer.train_epoch(batches)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(pa, pb)
