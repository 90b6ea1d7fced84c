"""What a new user reads first: `trainwell --help`, usage errors, the per-epoch line, `dir(trainwell)`."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from trainwell.cli import main


def help_text(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def usage_error(capsys, *args: str) -> str:
    """The one line a usage error prints (exit 2)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def option_help(text: str, option: str) -> str:
    """The help paragraph of one option, joined onto one line."""
    match = re.search(rf"^  {re.escape(option)}\b(.*?)(?=^  -|^\S|\Z)", text, re.S | re.M)
    assert match, option
    return " ".join(match.group(1).split())


def test_train_help_shows_each_recipes_defaults_not_mnists(capsys):
    text = help_text(capsys, "train")
    assert "(default: None)" not in text and "default: None" not in text
    assert "per recipe" in option_help(text, "--epochs") and "per recipe" in option_help(text, "--lr")
    table = text.split("defaults that depend on the recipe:")[1]
    assert re.search(r"--epochs\s+mnist 5, xor 200", table)
    assert re.search(r"--lr\s+mnist 0.001, xor 0.05", table)
    assert re.search(r"--batch-size\s+mnist 64, xor 32", table)
    assert re.search(r"--patience\s+mnist no early stopping, xor 20", table)
    assert "(default: no clipping)" in option_help(text, "--clip")
    assert "(default: 1)" in option_help(text, "--accumulate")  # the same in every recipe: shown inline


def test_train_help_lists_the_choices(capsys):
    text = help_text(capsys, "train")
    assert "--optimizer {adam,adamw,sgd}" in text
    assert "--schedule {constant,step,cosine,warmup-cosine,plateau,one-cycle,linear}" in text
    assert "--device {auto,cpu,cuda,mps}" in text
    assert "--precision {32,bf16,16}" in text


def test_train_help_says_what_each_recipe_is_without_seed_jargon(capsys):
    text = help_text(capsys, "train")
    assert not re.search(r"seed 0\d\d", text)
    recipes = text.split("recipes:")[1].split("defaults that depend")[0]
    assert "mnist" in recipes and "digits" in recipes and "235,146 parameters" in recipes
    assert "xor" in recipes and "XOR" in recipes


@pytest.mark.parametrize("args, guess", [
    (["train", "--optimzer", "sgd"], "did you mean --optimizer?"),
    (["train", "xor", "--batchsize", "3"], "did you mean --batch-size?"),
    (["train", "--learning-rate", "0.1"], "did you mean --lr?"),
    (["train", "--max-epochs", "3"], "did you mean --epochs?"),
    (["runs", "list", "--rot", "x"], "did you mean --root?"),
    (["trian"], "did you mean 'train'?"),
    (["train", "--optimizer", "adamm"], "did you mean 'adam'?"),
])
def test_a_mistyped_option_or_choice_gets_a_suggestion(capsys, args, guess):
    line = usage_error(capsys, *args)
    assert guess in line and "error:" in line


def test_an_option_unlike_any_gets_no_wild_guess(capsys):
    line = usage_error(capsys, "train", "--bogus", "3")
    assert "unrecognized arguments: --bogus" in line and "did you mean" not in line


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"]])
def test_help_does_not_import_torch(args):
    """`trainwell --help` answers at once: argparse and the config only."""
    code = ("import sys\nfrom trainwell.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'pydantic' in sys.modules)" % args)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"


# --------------------------------------------------------------------------- what else a new user reads first


def test_epoch_line_shows_the_learning_rate_only_when_it_changed():
    from trainwell.console import epoch_line

    metrics = {"train_loss": 0.5, "lr": 1e-3, "samples_per_sec": 100.0, "epoch_time": 1.0}
    assert "lr" not in epoch_line(2, 5, metrics, previous_lr=1e-3)
    assert "lr" not in epoch_line(1, 5, metrics)  # the first epoch: the configured rate, already known
    line = epoch_line(3, 5, {**metrics, "lr": 5e-4}, previous_lr=1e-3)
    assert "lr 0.0005" in line


def test_console_reporter_prints_a_changed_learning_rate():
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from trainwell.console import ConsoleReporter

    out = io.StringIO()
    reporter = ConsoleReporter(Console(file=out, highlight=False, soft_wrap=True, no_color=True))
    trainer = SimpleNamespace(epoch=0, run_dir=None)
    for epoch, lr in enumerate((1e-3, 1e-3, 2.5e-4), 1):
        trainer.epoch = epoch
        reporter.on_epoch_end(trainer, {"train_loss": 1.0 / epoch, "lr": lr})
    lines = out.getvalue().splitlines()
    assert [("lr " in line) for line in lines] == [False, False, True]
    assert "lr 0.00025" in lines[2]


def test_public_namespace_is_the_api():
    import trainwell as tw

    names = dir(tw)
    for helper in ("Any", "annotations", "importlib"):
        assert helper not in names
        assert not hasattr(tw, helper)
    assert set(tw.__all__) <= set(names) and "__version__" in names
    assert [n for n in names if not n.startswith("__")] == sorted(tw.__all__)
    assert callable(tw.seed_everything) and tw.Trainer.__name__ == "Trainer"
