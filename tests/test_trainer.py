"""The training loop: exact accumulation, per-sample metrics, counters and history,
clipping, seeding, dict batches, precision, input checks, checkpoints and the run directory."""

import copy
import json
import math
import pickle
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import trainwell as tw


def classification_data(n=30, features=4, classes=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def mlp(features=4, classes=3, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 8), nn.Tanh(), nn.Linear(8, classes)).to(dtype)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a, b, atol=0.0):
    a, b = weights(a) if isinstance(a, nn.Module) else a, weights(b) if isinstance(b, nn.Module) else b
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0.0:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


# --------------------------------------------------------------------------- exact accumulation


def _one_epoch(model, loader, accumulation_steps=1, lr=0.5, momentum=0.0):
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum),
                         nn.CrossEntropyLoss(), device="cpu")
    trainer.train_epoch(loader, accumulation_steps=accumulation_steps)
    return trainer


def _in_memory(x, y, batch_size):
    return tw.InMemoryLoader(x, y, batch_size=batch_size, shuffle=False)


def _torch_loader(x, y, batch_size):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


@pytest.mark.parametrize("make_loader", [_in_memory, _torch_loader], ids=["InMemoryLoader", "DataLoader"])
@pytest.mark.parametrize("n, micro, k", [(32, 8, 4), (30, 8, 4), (64, 8, 4), (22, 4, 3)],
                         ids=["32=4x8", "ragged-30=8+8+8+6", "64=2x(4x8)", "ragged-22=12+(4+4+2)"])
def test_accumulation_equals_one_large_batch(make_loader, n, micro, k):
    x, y = classification_data(n, dtype=torch.float64)
    big = mlp(dtype=torch.float64)
    small = copy.deepcopy(big)
    big_trainer = _one_epoch(big, make_loader(x, y, micro * k), momentum=0.9)
    small_trainer = _one_epoch(small, make_loader(x, y, micro), accumulation_steps=k, momentum=0.9)
    assert small_trainer.step == big_trainer.step == math.ceil(n / (micro * k))
    assert_same_weights(big, small, atol=1e-6)
    # and the update is not a no-op
    assert not torch.equal(weights(big)["0.weight"], weights(mlp(dtype=torch.float64))["0.weight"])


def test_accumulation_ragged_window_is_weighted_by_samples_not_by_k():
    """The exact reference: one SGD step on the full-batch mean gradient, computed by hand."""
    x, y = classification_data(30, dtype=torch.float64)
    model = mlp(dtype=torch.float64)
    reference = copy.deepcopy(model)
    nn.CrossEntropyLoss()(reference(x), y).backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.5 * p.grad
    _one_epoch(model, _in_memory(x, y, 8), accumulation_steps=4)
    assert_same_weights(reference, model, atol=1e-12)


# --------------------------------------------------------------------------- metrics


def test_train_epoch_returns_per_sample_mean_not_mean_of_batch_means():
    x, y = classification_data(10)
    model = mlp()
    # lr 0: the weights do not move, so the epoch's loss is the loss over the whole set
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), nn.CrossEntropyLoss(), device="cpu")
    loss = trainer.train_epoch(_in_memory(x, y, 4))  # batches of 4, 4, 2
    with torch.no_grad():
        per_sample = nn.CrossEntropyLoss()(model(x), y).item()
        batch_means = [nn.CrossEntropyLoss()(model(x[i:i + 4]), y[i:i + 4]).item() for i in (0, 4, 8)]
    assert isinstance(loss, float)
    assert loss == pytest.approx(per_sample, rel=1e-6)
    assert abs(sum(batch_means) / 3 - per_sample) > 1e-3  # the two means really differ here
    assert trainer.history["train_loss"] == [loss]


def test_train_epoch_loss_matches_a_manual_loop_while_learning():
    x, y = classification_data(10)
    model = mlp()
    twin = copy.deepcopy(model)
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.3), nn.CrossEntropyLoss(), device="cpu")
    loss = trainer.train_epoch(_torch_loader(x, y, 4))
    opt = torch.optim.SGD(twin.parameters(), lr=0.3)
    total = 0.0
    for i in (0, 4, 8):
        opt.zero_grad()
        batch_loss = nn.CrossEntropyLoss()(twin(x[i:i + 4]), y[i:i + 4])
        batch_loss.backward()
        opt.step()
        total += batch_loss.item() * len(y[i:i + 4])
    assert loss == pytest.approx(total / 10, rel=1e-5)
    assert_same_weights(model, twin, atol=1e-6)


def test_evaluate_is_per_sample_over_the_whole_set():
    x, y = classification_data(10)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cpu")
    before = weights(model)
    loss, acc = trainer.evaluate(_in_memory(x, y, 4))
    with torch.no_grad():
        logits = model(x)
    assert loss == pytest.approx(nn.CrossEntropyLoss()(logits, y).item(), rel=1e-6)
    assert acc == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert_same_weights(before, model)  # evaluation does not train
    assert model.training  # and leaves the model's mode as it found it


def test_evaluate_regression_has_no_accuracy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 3, generator=g)
    y = torch.randn(10, 1, generator=g)
    model = nn.Linear(3, 1)
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(), device="cpu")
    loss, acc = trainer.evaluate(_torch_loader(x, y, 4))
    assert acc is None
    with torch.no_grad():
        assert loss == pytest.approx(nn.MSELoss()(model(x), y).item(), rel=1e-6)


def test_binary_accuracy_with_bce_with_logits():
    x = torch.tensor([[2.0], [-1.0], [0.5], [-3.0], [1.0]])
    y = torch.tensor([[1.0], [0.0], [0.0], [0.0], [0.0]])
    model = nn.Linear(1, 1, bias=False)
    nn.init.ones_(model.weight)  # logits = x: predictions 1, 0, 1, 0, 1 -> 3 of 5 right
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.BCEWithLogitsLoss(), device="cpu")
    loss, acc = trainer.evaluate(_torch_loader(x, y, 2))
    assert acc == pytest.approx(3 / 5)
    assert loss == pytest.approx(nn.BCEWithLogitsLoss()(x, y).item(), rel=1e-6)


def test_accumulation_larger_than_the_epoch_is_one_step():
    x, y = classification_data(12)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cpu")
    trainer.train_epoch(_in_memory(x, y, 4), accumulation_steps=10)
    assert trainer.step == 1
    with pytest.raises(tw.ConfigError):
        trainer.train_epoch(_in_memory(x, y, 4), accumulation_steps=0)


def test_step_epoch_and_history_bookkeeping():
    x, y = classification_data(40)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cpu")
    train = _in_memory(x, y, 4)  # 10 batches
    history = trainer.fit(train, _in_memory(x, y, 16), epochs=2, accumulation_steps=3)
    assert trainer.epoch == 2
    assert trainer.step == 2 * math.ceil(10 / 3)
    assert history is trainer.history
    for key in ("train_loss", "eval_loss", "learning_rates", "grad_norm", "samples_per_sec", "epoch_time"):
        assert len(history[key]) == 2, key
        assert all(isinstance(v, float) and math.isfinite(v) for v in history[key]), key
    assert all(v > 0 for v in history["samples_per_sec"] + history["grad_norm"])
    assert history["learning_rates"] == [0.1, 0.1]
    # train_epoch alone adds one more epoch
    trainer.train_epoch(train)
    assert trainer.epoch == 3 and trainer.step == 2 * 4 + 10 and len(history["train_loss"]) == 3


def test_fit_counts_epochs_in_total():
    x, y = classification_data(16)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cpu")
    trainer.fit(_in_memory(x, y, 8), epochs=2)
    trainer.fit(_in_memory(x, y, 8), epochs=3)
    assert trainer.epoch == 3 and len(trainer.history["train_loss"]) == 3
    with pytest.raises(tw.ConfigError):
        trainer.fit(_in_memory(x, y, 8), epochs=0)


# --------------------------------------------------------------------------- clipping


def test_grad_clip_norm_bounds_the_update_and_history_has_the_preclip_norm():
    x, y = classification_data(16)
    model = mlp()
    reference = copy.deepcopy(model)
    nn.CrossEntropyLoss()(reference(x), y).backward()
    true_norm = torch.nn.utils.get_total_norm([p.grad for p in reference.parameters()]).item()
    assert true_norm > 0.01

    before = weights(model)
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=10.0), nn.CrossEntropyLoss(),
                         grad_clip_norm=1e-3, device="cpu")
    trainer.train_epoch(_in_memory(x, y, 16))  # one step on the whole set
    update = torch.cat([(after - before[k]).reshape(-1) for k, after in weights(model).items()])
    assert update.norm().item() == pytest.approx(10.0 * 1e-3, rel=1e-3)
    assert trainer.history["grad_norm"][0] == pytest.approx(true_norm, rel=1e-5)


def test_without_clipping_the_update_is_the_plain_gradient_step():
    x, y = classification_data(16)
    model = mlp()
    reference = copy.deepcopy(model)
    nn.CrossEntropyLoss()(reference(x), y).backward()
    true_norm = torch.nn.utils.get_total_norm([p.grad for p in reference.parameters()]).item()
    before = weights(model)
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cpu")
    trainer.train_epoch(_in_memory(x, y, 16))
    update = torch.cat([(after - before[k]).reshape(-1) for k, after in weights(model).items()])
    assert update.norm().item() == pytest.approx(0.1 * true_norm, rel=1e-4)


@pytest.mark.parametrize("bad", [0, -1.0])
def test_grad_clip_norm_must_be_positive(bad):
    model = mlp()
    with pytest.raises(tw.ConfigError):
        tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), grad_clip_norm=bad)


# --------------------------------------------------------------------------- seeding


def _seeded_run(seed):
    x, y = classification_data(48)
    torch.manual_seed(0)  # identical fresh models
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), nn.CrossEntropyLoss(),
                         device="cpu", seed=seed)
    torch.manual_seed(999 if seed == 1 else 5)  # whatever the caller did to the global RNG before
    trainer.fit(DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True), epochs=2)
    return weights(model)


def test_same_seed_gives_identical_weights_different_seeds_differ():
    a, b = _seeded_run(1), _seeded_run(1)
    assert_same_weights(a, b)
    c = _seeded_run(2)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_trainer_seed_decides_an_unseeded_in_memory_loader_order():
    def run(seed):
        x, y = classification_data(48)
        model = mlp()
        trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.2), nn.CrossEntropyLoss(),
                             device="cpu", seed=seed)
        trainer.fit(tw.InMemoryLoader(x, y, batch_size=8), epochs=2)
        return weights(model)

    a, b, c = run(1), run(1), run(2)
    assert_same_weights(a, b)
    assert any(not torch.equal(a[k], c[k]) for k in a)


# --------------------------------------------------------------------------- Hugging Face style dict batches


@dataclass
class Output:
    loss: torch.Tensor
    logits: torch.Tensor


class TinyTextModel(nn.Module):
    """forward(input_ids=..., labels=...) -> an object with .loss and .logits, as transformers models do."""

    def __init__(self, vocab=10, dim=8, classes=2, output=Output):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, classes)
        self.output = output

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.head(self.embed(input_ids).mean(dim=1))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return self.output(loss=loss, logits=logits)


class TokenDataset(Dataset):
    def __init__(self, n=64, seq=5, vocab=10, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, vocab, (n, seq), generator=g)
        self.labels = (self.ids[:, 0] >= vocab // 2).long()  # label: is the first token in the upper half

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


@pytest.mark.parametrize("output", [Output, SimpleNamespace], ids=["dataclass", "SimpleNamespace"])
def test_dict_batches_with_model_computed_loss(output):
    torch.manual_seed(0)
    model = TinyTextModel(output=output)
    loader = DataLoader(TokenDataset(), batch_size=16, shuffle=True)
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=0.05), loss_fn=None, device="cpu", seed=0)
    loss0, _ = trainer.evaluate(loader)
    history = trainer.fit(loader, loader, epochs=15)
    assert history["train_loss"][-1] < history["train_loss"][0]
    loss, acc = trainer.evaluate(loader)
    assert loss < loss0
    assert acc is not None and acc >= 0.75
    assert history["eval_acc"][-1] == pytest.approx(acc)
    preds = trainer.predict(DataLoader(TokenDataset(), batch_size=16))
    assert preds.shape == (64, 2)


def test_dict_batches_from_a_plain_list():
    data = TokenDataset(n=32)
    batches = [{"input_ids": data.ids[i:i + 8], "labels": data.labels[i:i + 8]} for i in range(0, 32, 8)]
    torch.manual_seed(0)
    model = TinyTextModel()
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=0.05), device="cpu")
    history = trainer.fit(batches, epochs=3)
    assert trainer.step == 12 and len(history["train_loss"]) == 3
    assert "train_acc" in history and len(history["train_acc"]) == 3


def test_no_loss_fn_and_no_loss_in_output_is_a_config_error():
    x, y = classification_data(8)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=None, device="cpu")
    with pytest.raises(tw.ConfigError, match="loss"):
        trainer.train_epoch(_in_memory(x, y, 4))


# --------------------------------------------------------------------------- precision and device


def test_bf16_on_cpu_trains():
    x, y = classification_data(64)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=0.05), nn.CrossEntropyLoss(),
                         precision="bf16", device="cpu", seed=0)
    history = trainer.fit(_in_memory(x, y, 16), epochs=5)
    assert history["train_loss"][-1] < history["train_loss"][0] * 0.9
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32


def test_precision_16_on_cpu_needs_cuda():
    model = mlp()
    with pytest.raises(tw.ConfigError, match="CUDA"):
        tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                   precision="16", device="cpu")


def test_unknown_precision_is_a_config_error():
    model = mlp()
    with pytest.raises(tw.ConfigError, match="13"):
        tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), precision="13")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_device_without_gpu_is_a_config_error():
    model = mlp()
    with pytest.raises(tw.ConfigError, match="cuda"):
        tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cuda")


# --------------------------------------------------------------------------- clear errors on bad data


LOADERS = [_in_memory, _torch_loader]
LOADER_IDS = ["InMemoryLoader", "DataLoader"]


def _fresh_trainer():
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cpu")
    return trainer, weights(model)


def _assert_nothing_trained(trainer, before):
    assert trainer.step == 0 and trainer.epoch == 0
    assert_same_weights(before, trainer.model)


@pytest.mark.parametrize("make_loader", LOADERS, ids=LOADER_IDS)
def test_label_out_of_range_in_the_first_batch(make_loader):
    x, y = classification_data(16)
    y[1] = 5  # the model has 3 outputs
    trainer, before = _fresh_trainer()
    with pytest.raises(tw.DataError) as info:
        trainer.train_epoch(make_loader(x, y, 4))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "label 5" in message and "3 outputs" in message
    _assert_nothing_trained(trainer, before)


def test_label_out_of_range_anywhere_in_memory_is_caught_before_training():
    x, y = classification_data(16)
    y[13] = 7  # in the last batch
    trainer, before = _fresh_trainer()
    with pytest.raises(tw.DataError) as info:
        trainer.train_epoch(_in_memory(x, y, 4))
    assert "label 7" in str(info.value) and "3 outputs" in str(info.value)
    _assert_nothing_trained(trainer, before)


def test_negative_label_is_caught():
    x, y = classification_data(16)
    y[0] = -1
    trainer, before = _fresh_trainer()
    with pytest.raises(tw.DataError, match="label -1"):
        trainer.train_epoch(_in_memory(x, y, 4))
    _assert_nothing_trained(trainer, before)


def test_label_out_of_range_in_a_later_streamed_batch_is_a_data_error():
    x, y = classification_data(16)
    y[13] = 7
    trainer, _ = _fresh_trainer()
    with pytest.raises(tw.DataError) as info:
        trainer.train_epoch(_torch_loader(x, y, 4))
    assert "7" in str(info.value) and "3 outputs" in str(info.value)


@pytest.mark.parametrize("make_loader", LOADERS, ids=LOADER_IDS)
def test_nan_in_inputs(make_loader):
    x, y = classification_data(16)
    x[2, 1] = float("nan")
    trainer, before = _fresh_trainer()
    with pytest.raises(tw.DataError, match="NaN"):
        trainer.train_epoch(make_loader(x, y, 4))
    _assert_nothing_trained(trainer, before)


def test_nan_anywhere_in_memory_is_caught_before_training():
    x, y = classification_data(16)
    x[14, 0] = float("inf")
    trainer, before = _fresh_trainer()
    with pytest.raises(tw.DataError, match="NaN or inf"):
        trainer.train_epoch(_in_memory(x, y, 4))
    _assert_nothing_trained(trainer, before)


def test_training_data_is_still_checked_after_an_evaluate_first():
    """Measuring a baseline before training is common; it must not switch off the training-data checks."""
    x, y = classification_data(16)
    trainer, before = _fresh_trainer()
    trainer.evaluate(_in_memory(x, y, 8))  # clean validation data
    bad_x = x.clone()
    bad_x[14, 0] = float("nan")
    with pytest.raises(tw.DataError, match="NaN"):
        trainer.train_epoch(_in_memory(bad_x, y, 4))
    _assert_nothing_trained(trainer, before)


def test_training_labels_are_still_checked_after_an_evaluate_first():
    x, y = classification_data(16)
    trainer, before = _fresh_trainer()
    trainer.evaluate(_in_memory(x, y, 8))
    bad_y = y.clone()
    bad_y[13] = 7
    with pytest.raises(tw.DataError) as info:
        trainer.train_epoch(_in_memory(x, bad_y, 4))
    _assert_nothing_trained(trainer, before)  # caught by the whole-dataset check, not after 3 steps
    assert "label 7" in str(info.value) and "3 outputs" in str(info.value)


@pytest.mark.parametrize("make_loader", LOADERS, ids=LOADER_IDS)
def test_empty_training_data(make_loader):
    x, y = torch.empty(0, 4), torch.empty(0, dtype=torch.long)
    trainer, before = _fresh_trainer()
    with pytest.raises(tw.DataError, match="empty"):
        trainer.train_epoch(make_loader(x, y, 4))
    with pytest.raises(tw.DataError, match="empty"):
        trainer.fit(make_loader(x, y, 4), epochs=1)
    _assert_nothing_trained(trainer, before)


def test_empty_validation_data():
    x, y = classification_data(8)
    trainer, _ = _fresh_trainer()
    with pytest.raises(tw.DataError, match="validation data is empty"):
        trainer.evaluate(_in_memory(torch.empty(0, 4), torch.empty(0, dtype=torch.long), 4))


@pytest.mark.parametrize("make_loader", LOADERS, ids=LOADER_IDS)
def test_shape_mismatch_names_the_input_shape(make_loader):
    x, y = classification_data(16, features=5)  # the model expects 4 features
    trainer, before = _fresh_trainer()
    with pytest.raises(tw.DataError) as info:
        trainer.train_epoch(make_loader(x, y, 8))
    assert "(8, 5)" in str(info.value)
    assert "shape" in str(info.value)
    _assert_nothing_trained(trainer, before)


# --------------------------------------------------------------------------- checkpoints


def _resumable(seed=3):
    torch.manual_seed(seed)  # a different init each time: the checkpoint must overwrite it
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    trainer = tw.Trainer(model, optimizer, nn.CrossEntropyLoss(), scheduler, grad_clip_norm=1.0,
                         device="cpu", seed=7)
    x, y = classification_data(40)
    return trainer, tw.InMemoryLoader(x, y, batch_size=8), tw.InMemoryLoader(x, y, batch_size=16, shuffle=False)


@pytest.mark.parametrize("how", ["load_checkpoint", "fit(resume=path)"])
def test_checkpoint_round_trip_continues_identically(tmp_path, how):
    straight, train, val = _resumable()
    straight.fit(train, val, epochs=2)

    first, train, val = _resumable()
    first.fit(train, val, epochs=1)
    path = first.save_checkpoint(tmp_path / "epoch1.ckpt")
    assert path.is_file() and (tmp_path / "epoch1.ckpt.manifest.json").is_file()

    resumed, train, val = _resumable(seed=99)
    if how == "load_checkpoint":
        resumed.load_checkpoint(path)
        assert resumed.epoch == 1 and resumed.step == first.step
        resumed.fit(train, val, epochs=2)
    else:
        resumed.fit(train, val, epochs=2, resume=path)

    assert resumed.epoch == straight.epoch == 2 and resumed.step == straight.step
    assert_same_weights(straight.model, resumed.model)
    for key in ("train_loss", "eval_loss", "learning_rates", "grad_norm"):
        assert resumed.history[key] == straight.history[key], key
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"] == 0.0025


def test_a_mid_epoch_save_leaves_the_epoch_metrics_bitwise_unchanged(tmp_path):
    """Saving (a SIGTERM, say) must not change the float rounding of the epoch's loss sums."""
    class SaveAt:
        def on_step_end(self, trainer, **_):
            if trainer.step == 13:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")

    def run(callbacks=(), resume=None):
        torch.manual_seed(3)
        model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), nn.CrossEntropyLoss(),
                             device="cpu", seed=7, callbacks=callbacks)
        x, y = classification_data(200)
        trainer.fit(tw.InMemoryLoader(x, y, batch_size=8), epochs=2, resume=resume)
        return trainer

    straight = run()
    run([SaveAt()])
    resumed = run(resume=tmp_path / "mid.ckpt")
    assert resumed.history["train_loss"] == straight.history["train_loss"]
    assert resumed.history["train_acc"] == straight.history["train_acc"]


def test_epoch_meter_round_trip_keeps_the_float_rounding_of_an_unbroken_epoch():
    from trainwell.metrics import EpochMeter

    generator = torch.Generator().manual_seed(0)
    for trial in range(20):
        losses = torch.rand(40, generator=generator) * 3
        straight, first = EpochMeter(torch.device("cpu")), EpochMeter(torch.device("cpu"))
        for loss in losses:
            straight.add_batch(loss, 7)
        for loss in losses[:17]:
            first.add_batch(loss, 7)
        second = EpochMeter(torch.device("cpu"))
        second.load_state_dict(first.state_dict())
        for loss in losses[17:]:
            second.add_batch(loss, 7)
        assert second.result("train") == straight.result("train"), trial


def test_checkpoint_from_a_different_model_names_a_key(tmp_path):
    trainer, train, _ = _resumable()
    trainer.fit(train, epochs=1)
    path = trainer.save_checkpoint(tmp_path / "a.ckpt")

    wider = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))
    other = tw.Trainer(wider, torch.optim.Adam(wider.parameters()), nn.CrossEntropyLoss(), device="cpu")
    with pytest.raises(tw.CheckpointError, match=r"0\.weight"):
        other.load_checkpoint(path)

    renamed = nn.Linear(4, 3)
    other = tw.Trainer(renamed, torch.optim.Adam(renamed.parameters()), nn.CrossEntropyLoss(), device="cpu")
    with pytest.raises(tw.CheckpointError) as info:
        other.load_checkpoint(path)
    assert "weight" in str(info.value)
    assert "different model" in str(info.value)


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_crafted_pickle_is_refused_and_never_runs(tmp_path, writer):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.ckpt"
    state = {"trainer": {"epoch": 1}, "model": _Payload(target)}
    if writer == "torch.save":
        torch.save(state, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(state, f, protocol=2)
    assert not target.exists()
    trainer, _ = _fresh_trainer()
    with pytest.warns(UserWarning, match="manifest"), pytest.raises(tw.CheckpointError):
        trainer.load_checkpoint(path)
    assert not target.exists()


def test_tampered_checkpoint_is_refused(tmp_path):
    trainer, train, _ = _resumable()
    trainer.fit(train, epochs=1)
    path = trainer.save_checkpoint(tmp_path / "a.ckpt")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(tw.CheckpointError, match="sha256"):
        trainer.load_checkpoint(path)


def test_resume_auto_needs_a_run_dir_and_starts_fresh_without_checkpoints(tmp_path):
    x, y = classification_data(16)
    trainer, _ = _fresh_trainer()
    with pytest.raises(tw.ConfigError, match="run_dir"):
        trainer.fit(_in_memory(x, y, 8), epochs=1, resume="auto")
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cpu",
                         run_dir=tmp_path / "run")
    with pytest.warns(UserWarning, match="starting fresh"):
        trainer.fit(_in_memory(x, y, 8), epochs=1, resume="auto")
    assert trainer.epoch == 1 and trainer.step == 2


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    trainer, _ = _fresh_trainer()
    with pytest.raises(tw.CheckpointError, match="not found"):
        trainer.load_checkpoint(tmp_path / "nope.ckpt")


# --------------------------------------------------------------------------- the run directory


def test_fit_writes_the_run_directory(tmp_path):
    run = tmp_path / "run"
    x, y = classification_data(40)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), nn.CrossEntropyLoss(),
                         device="cpu", run_dir=run, seed=0, log_every_steps=2)
    trainer.fit(_in_memory(x, y, 8), _in_memory(x, y, 20), epochs=3)

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert [r["train_loss"] for r in epochs] == pytest.approx(trainer.history["train_loss"])
    assert [r["eval_loss"] for r in epochs] == pytest.approx(trainer.history["eval_loss"])
    steps = [r for r in records if r.get("kind") == "step"]
    assert steps and all(r["step"] % 2 == 0 for r in steps)

    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    assert ckpts
    for ckpt in ckpts:
        manifest = json.loads((ckpt.parent / (ckpt.name + ".manifest.json")).read_text())
        assert manifest["size"] == ckpt.stat().st_size
    assert ckpts[-1].name.endswith(f"{trainer.step:09d}.ckpt")

    final = load_file(run / "model.safetensors")
    assert final.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(final[k], v)
    best = load_file(run / "model-best.safetensors")
    best_epoch = min(range(3), key=lambda i: trainer.history["eval_loss"][i])
    assert best.keys() == final.keys()
    assert [r["best"] for r in epochs].count(True) >= 1 and epochs[best_epoch]["best"]

    # the newest checkpoint resumes into a new trainer at the same point
    fresh = mlp(seed=5)
    other = tw.Trainer(fresh, torch.optim.Adam(fresh.parameters(), lr=0.01), nn.CrossEntropyLoss(), device="cpu",
                       run_dir=tmp_path / "other")
    other.load_checkpoint(ckpts[-1])
    assert other.epoch == 3 and other.step == trainer.step
    assert_same_weights(model, fresh)


def test_fit_without_validation_writes_no_best_weights(tmp_path):
    run = tmp_path / "run"
    x, y = classification_data(16)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters()), nn.CrossEntropyLoss(), device="cpu", run_dir=run)
    trainer.fit(_in_memory(x, y, 8), epochs=2)
    assert (run / "model.safetensors").is_file()
    assert not (run / "model-best.safetensors").exists()


def test_unwritable_run_dir_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    x, y = classification_data(16)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                         device="cpu", run_dir=blocker / "run")
    before = weights(model)
    with pytest.raises(tw.ConfigError, match="not writable"):
        trainer.fit(_in_memory(x, y, 8), epochs=1)
    _assert_nothing_trained(trainer, before)


# --------------------------------------------------------------------------- test() and predict()


def test_test_returns_metrics_and_leaves_history_alone():
    x, y = classification_data(30)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), nn.CrossEntropyLoss(), device="cpu")
    trainer.fit(_in_memory(x, y, 8), _in_memory(x, y, 8), epochs=2)
    snapshot = copy.deepcopy(trainer.history)
    results = trainer.test(_in_memory(x, y, 7))
    assert trainer.history == snapshot
    with torch.no_grad():
        logits = model(x)
    assert results["test_loss"] == pytest.approx(nn.CrossEntropyLoss()(logits, y).item(), rel=1e-6)
    assert results["test_acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item())


def test_predict_accepts_a_loader_of_input_target_batches():
    x, y = classification_data(25)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cpu")
    out = trainer.predict(_in_memory(x, y, 10))
    with torch.no_grad():
        torch.testing.assert_close(out, model(x))


def test_predict_returns_outputs_for_a_tensor():
    x, _ = classification_data(25)
    model = mlp()
    trainer = tw.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cpu")
    out = trainer.predict(x, batch_size=10)
    assert out.shape == (25, 3)
    with torch.no_grad():
        torch.testing.assert_close(out, model(x))


def test_a_sampler_distributed_training_cannot_shard_is_refused():
    from torch.utils.data import WeightedRandomSampler

    from trainwell.data import epoch_batches
    from trainwell.distributed import Group, Shard

    loader = DataLoader(list(range(10)), batch_size=2, sampler=WeightedRandomSampler([1.0] * 10, 10))
    with pytest.raises(tw.ConfigError, match="cannot shard a WeightedRandomSampler"):
        next(epoch_batches(loader, seed=0, epoch=0, shard=Shard(10, 2, Group(0, 2, 0))))
