"""The per-epoch meter's batched bookkeeping and the in-memory loader's reused input buffers:
both exist for speed, so these tests pin that they change no number a user sees."""

from __future__ import annotations

import torch
from torch import nn

import trainwell as tw
from trainwell.data import epoch_batches
from trainwell.metrics import FLUSH_EVERY, EpochMeter, accuracy_inputs, predictions

CPU = torch.device("cpu")


def _correct_by_hand(batches, kind, loss_fn) -> int:
    return sum(int((predictions(kind, logits, loss_fn).reshape(-1) == targets.reshape(-1)).sum())
               for logits, targets in batches)


def test_deferred_argmax_counts_exactly_what_a_per_batch_argmax_counts() -> None:
    """Small batches keep their scores for one argmax at the flush; a large one is reduced at
    once; sequence outputs ([batch, time, classes]) are counted per position, as before."""
    g = torch.Generator().manual_seed(0)
    shapes = [(64, 10)] * 70 + [(7, 10), (300, 300, 10), (5, 6, 10), (64, 10)]  # ragged, large, sequence
    batches = [(torch.randn(*shape, generator=g), torch.randint(0, 10, shape[:-1], generator=g)) for shape in shapes]
    meter = EpochMeter(CPU)
    for logits, targets in batches:
        kept = accuracy_inputs("multiclass", logits, nn.functional.cross_entropy)
        meter.add_batch(torch.tensor(1.0), len(targets), kept, targets)
    assert accuracy_inputs("multiclass", *batches[71][:1], None).dtype == torch.int64  # the large one: reduced now
    assert accuracy_inputs("multiclass", *batches[0][:1], None).is_floating_point()  # small: scores kept
    meter.result("train")
    assert int(meter.correct) == _correct_by_hand(batches, "multiclass", None)


def test_binary_accuracy_is_counted_from_predictions() -> None:
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 1, generator=g), torch.randint(0, 2, (16, 1), generator=g).float()) for _ in range(5)]
    meter, loss_fn = EpochMeter(CPU), nn.BCEWithLogitsLoss()
    for logits, targets in batches:
        meter.add_batch(torch.tensor(0.5), 16, accuracy_inputs("binary", logits, loss_fn), targets)
    expected = sum(int(((logits.reshape(-1) > 0) == (targets.reshape(-1) > 0.5)).sum()) for logits, targets in batches)
    assert meter.result("train")["train_acc"] == expected / 80


def test_gradient_norms_are_summed_in_batches_and_survive_a_round_trip_exactly() -> None:
    """Norms wait, like losses, for the flush: a meter restored mid-epoch must report the
    same float mean and maximum as an unbroken one."""
    g = torch.Generator().manual_seed(2)
    for trial in range(10):
        norms = torch.rand(3 * FLUSH_EVERY, generator=g) * 5
        straight, first = EpochMeter(CPU), EpochMeter(CPU)
        for i, norm in enumerate(norms):
            straight.add_batch(torch.tensor(1.0), 4)
            straight.add_grad_norm(norm)
            if i < 100:
                first.add_batch(torch.tensor(1.0), 4)
                first.add_grad_norm(norm)
        second = EpochMeter(CPU)
        second.load_state_dict(first.state_dict())
        for norm in norms[100:]:
            second.add_batch(torch.tensor(1.0), 4)
            second.add_grad_norm(norm)
        result = straight.result("train")
        assert second.result("train") == result, trial
        assert result["grad_norm_max"] == float(norms.max())
        assert abs(result["grad_norm"] - float(norms.double().mean())) < 1e-5


def test_reused_input_buffers_cycle_and_leave_the_values_unchanged() -> None:
    x, y = torch.randn(70, 3), torch.arange(70)
    loader = tw.InMemoryLoader(x, y, batch_size=8, shuffle=True, seed=5)
    plain = list(loader.batches(epoch=2))
    reused = []
    for inputs, targets in loader.batches(epoch=2, reuse=3):
        reused.append((inputs.data_ptr(), inputs.clone(), targets))
    assert len(reused) == len(plain) == 9
    for (_, inputs, targets), (want_inputs, want_targets) in zip(reused, plain):
        assert torch.equal(inputs, want_inputs) and torch.equal(targets, want_targets)
    pointers = [pointer for pointer, _, _ in reused]
    assert len(set(pointers[:8])) == 3 and pointers[0] == pointers[3] == pointers[6]
    assert pointers[8] not in pointers[:8], "the ragged last batch (6 samples) is not gathered into a buffer"
    assert [b[1].data_ptr() for b in plain[:2]] != [pointers[0]] * 2  # iteration by users never reuses


def test_accumulation_over_reused_buffers_trains_like_the_same_batches_held_as_copies() -> None:
    """The trainer holds a step's micro-batches together: the ring must be as long as the window."""
    torch.manual_seed(0)
    x, y = torch.randn(90, 4, dtype=torch.float64), torch.randint(0, 3, (90,))

    def run(data):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.3), nn.functional.cross_entropy,
                             device="cpu", seed=3, health=False)
        trainer.train_epoch(data, accumulation_steps=3)
        return model, trainer

    loader = tw.InMemoryLoader(x, y, batch_size=8, shuffle=True)
    model, trainer = run(loader)
    copies = [tuple(t.clone() for t in batch) for batch in epoch_batches(loader, seed=3, epoch=0)]
    reference, reference_trainer = run(copies)
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
    assert trainer.history["train_acc"] == reference_trainer.history["train_acc"]


class _Tagger(nn.Module):
    """Per-position classes ([batch, time, classes]): the class is the input token itself."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.table = nn.Embedding(classes, classes)
        with torch.no_grad():
            self.table.weight.copy_(torch.eye(classes) * 10)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table(tokens)


def _sequence_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def test_sequence_accuracy_is_the_share_of_correct_positions() -> None:
    """A [batch, time, classes] output is scored per position: accuracy is correct positions
    over positions (it was divided by sequences, and a perfect tagger scored 12.0)."""
    tokens = torch.randint(0, 5, (40, 12), generator=torch.Generator().manual_seed(3))
    targets = tokens.clone()
    targets[:, :3] = (targets[:, :3] + 1) % 5  # the first 3 of 12 positions are always wrong
    model = _Tagger(5)
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), _sequence_loss, health=False,
                         grad_flow_every=None)
    data = tw.InMemoryLoader(tokens, targets, batch_size=8)
    trainer.fit(data, data, epochs=1)
    assert trainer.history["train_acc"] == [0.75]
    assert trainer.history["eval_acc"] == [0.75]
    assert trainer.test(data)["test_acc"] == 0.75
