"""`trainwell bench-devices`: the device table, its JSON, its usage errors; and the help acceptance
points: `trainwell --help` lists every command, `trainwell train --help` every recipe on one line."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest
import torch

from trainwell.cli import bench_devices, build_parser, main
from trainwell.recipes import RECIPES

NO_GPU = not torch.cuda.is_available() and not torch.backends.mps.is_available()


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["bench-devices", *args])
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys, *args: str) -> str:
    """The one line an argparse usage error prints (exit 2)."""
    with pytest.raises(SystemExit) as exited:
        main(["bench-devices", *args])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_few_steps_on_the_cpu_print_the_table_and_write_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "mnist", "--steps", "3", "--num-samples", "640")
    assert code == 0
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("device"))
    assert lines[header].split()[:2] == ["device", "name"] and "samples/s" in lines[header]
    assert "s/epoch" in lines[header] and "vs CPU" in lines[header]
    cpu = lines[header + 1]
    match = re.match(r"cpu\s+CPU, \d+ threads?\s+(\d+)\s+([\d,]+)\s+([\d.]+)\s+1\.00x$", cpu)
    assert match, cpu
    steps, rate, per_epoch = int(match[1]), float(match[2].replace(",", "")), float(match[3])
    assert steps == 3 and rate > 0 and per_epoch > 0
    assert "batch 64" in lines[0] and "3 steps" in lines[0]
    if NO_GPU:
        assert sum("No GPU on this machine" in line for line in lines) == 1
        assert lines[header + 1:] == [cpu]  # the CPU alone
    assert list(tmp_path.iterdir()) == []  # no run directory, nothing on disk


def test_json_has_every_field(capsys):
    code, out, err = run(capsys, "xor", "--steps", "2", "--batch-size", "16", "--json")
    assert code == 0 and "timing cpu" in err
    report = json.loads(out)  # stdout is the JSON object alone
    assert report["recipe"] == "xor" and report["batch_size"] == 16 and report["timed"] == {"steps": 2}
    assert report["warmup_steps"] == bench_devices.WARMUP_STEPS and report["gpu_available"] is (not NO_GPU)
    assert (report["note"] is not None) is NO_GPU
    cpu = report["devices"][0]
    assert set(cpu) == {"device", "name", "steps", "samples", "seconds", "samples_per_s", "seconds_per_epoch",
                        "speedup_vs_cpu", "train_loss"}
    assert cpu["device"] == "cpu" and cpu["steps"] == 2 and cpu["samples"] == 32 and cpu["speedup_vs_cpu"] == 1.0
    assert cpu["samples_per_s"] == pytest.approx(cpu["samples"] / cpu["seconds"]) and cpu["samples_per_s"] > 0
    assert cpu["seconds_per_epoch"] == pytest.approx(cpu["seconds"] / 2 * 50)  # 800 training points / 16


def test_each_device_starts_from_the_same_weights():
    """Built fresh with the recipe's seed: two timings do exactly the same work."""
    from trainwell.config import validate
    from trainwell.recipes import recipe_defaults

    config = validate({**recipe_defaults("xor"), "recipe": "xor"})
    first, second = (bench_devices.time_device(config, torch.device("cpu"), 1, 4) for _ in range(2))
    assert first["train_loss"] == second["train_loss"] and first["steps"] == second["steps"] == 4


def test_whole_epochs_are_timed_and_every_device_gets_a_row(capsys, monkeypatch):
    """With a second device, one row each and the speed-up against the first (CPU) row."""
    monkeypatch.setattr(bench_devices, "available_devices", lambda: [torch.device("cpu")] * 2)
    code, out, _ = run(capsys, "xor", "--epochs", "2", "--num-samples", "64", "--json")
    report = json.loads(out)
    assert code == 0 and report["timed"] == {"epochs": 2} and report["note"] is None
    rows = report["devices"]
    assert [r["steps"] for r in rows] == [4, 4] and [r["samples"] for r in rows] == [128, 128]  # 2 epochs of 2 batches
    assert rows[1]["speedup_vs_cpu"] == pytest.approx(rows[1]["samples_per_s"] / rows[0]["samples_per_s"])


def test_a_device_that_fails_is_one_line_exit_1_and_the_others_keep_their_rows(capsys, monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(bench_devices, "available_devices", lambda: [torch.device("cpu"), cuda])
    real = bench_devices.time_device

    def time_device(config, device, epochs, steps):
        if device == cuda:
            raise RuntimeError("CUDA error: out of memory")
        return real(config, device, epochs, steps)

    monkeypatch.setattr(bench_devices, "time_device", time_device)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    code, out, err = run(capsys, "xor", "--steps", "2")
    assert code == 1
    assert "trainwell: timing on cuda failed: RuntimeError: CUDA error: out of memory" in err.splitlines()
    rows = out.split("vs CPU\n")[1].splitlines()
    assert len(rows) == 1 and rows[0].startswith("cpu") and rows[0].endswith("1.00x")


def test_an_unknown_recipe_is_one_line_and_exit_2(capsys):
    code, out, err = run(capsys, "mnsit", "--steps", "1")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"trainwell: error: unknown recipe 'mnsit' (did you mean 'mnist'?); available: {', '.join(RECIPES)}"]


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["--epochs", "-1"], "argument --epochs: must be at least 1, got -1"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["--num-samples", "lots"], "argument --num-samples: must be a whole number, got 'lots'"),
    (["--epochs", "1", "--steps", "2"], "argument --steps: not allowed with argument --epochs"),
    (["--stesp", "2"], "did you mean --steps?"),
])
def test_a_bad_option_is_one_line_and_exit_2(capsys, args, message):
    line = usage_error(capsys, *args)
    assert line.startswith("trainwell bench-devices: error:") and message in line, line


def test_help_does_not_import_torch():
    code = ("import sys\nfrom trainwell.cli import main\ntry:\n    main(['bench-devices', '--help'])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


# --------------------------------------------------------------------------- the help acceptance points


def _help(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_every_command_with_its_line(capsys):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = {choice.dest: choice.help for choice in sub._choices_actions}
    assert set(commands) == set(sub.choices) and "bench-devices" in commands  # every command has a help line
    text = _help(capsys)
    listed = re.findall(r"^    (\S+)\s{2,}(\S.*)$", text, re.M)
    assert [name for name, _ in listed] == list(sub.choices)
    for name, first in listed:
        assert commands[name] and commands[name].startswith(first.rstrip()), (name, first)


def test_train_help_lists_every_recipe_on_one_line(capsys):
    text = _help(capsys, "train")
    section = text.split("\nrecipes:\n")[1].split("\n\n")[0].splitlines()
    assert len(section) == len(RECIPES)
    for line, (name, (_, about)) in zip(section, RECIPES.items()):
        assert re.fullmatch(rf"  {re.escape(name)} +{re.escape(about)}", line), line
