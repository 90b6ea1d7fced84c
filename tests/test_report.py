"""report.html: self-contained, a plot per section, the verdict, and graceful gaps."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from torch import nn

import trainwell as tw
from trainwell.report import write_report

PLOT_SECTIONS = ("Learning curves", "Loss, learning rate and gradient norm over the steps", "Gradient flow per layer",
                 "Throughput and data loading", "Memory")


def write_run(path, records, config=None, summary=None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if config is not None:
        import yaml

        (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def full_records(epochs=6):
    """Every record kind with every optional field, overfitting from epoch 4 on."""
    records = [{"kind": "start", "time": "2025-03-01T10:00:00+00:00", "device": "cpu", "precision": "32",
                "num_params": 235146, "memory": {"parameters": 940584, "gradients": 940584,
                                                 "optimizer_state": 1881168, "activations": 204800,
                                                 "total": 3967136}}]
    train = [1.0, 0.6, 0.4, 0.3, 0.2, 0.12]
    val = [1.05, 0.65, 0.45, 0.5, 0.55, 0.6]
    for e in range(1, epochs + 1):
        for s in range(1, 11):
            step = (e - 1) * 10 + s
            records.append({"kind": "step", "step": step, "epoch": e, "loss": train[e - 1] * (1.1 - s / 100),
                            "grad_norm": 2.0 / e, "lr": 1e-3 * (1 - step / 80), "data_wait_share": 0.1})
        records.append({"kind": "layers", "step": e * 10, "epoch": e, "layers": {
            "0.weight": {"grad_norm": 0.5 / e, "weight_norm": 10.0, "update_ratio": 1e-3},
            "0.bias": {"grad_norm": 0.05 / e, "weight_norm": 1.0, "update_ratio": 2e-3},
            "2.weight": {"grad_norm": 1.5 / e, "weight_norm": 8.0, "update_ratio": 8e-4}}})
        records.append({"kind": "epoch", "step": e * 10, "epoch": e, "train_loss": train[e - 1],
                        "train_acc": 0.6 + 0.06 * e, "eval_loss": val[e - 1], "eval_acc": 0.55 + 0.04 * e,
                        "lr": 1e-3, "epoch_time": 1.5, "samples_per_sec": 1000.0 + 10 * e, "grad_norm": 2.0 / e,
                        "grad_norm_max": 4.0 / e, "best": e <= 3, "data_wait_share": 0.1 + 0.02 * e,
                        "memory_bytes": 5_000_000})
    records.insert(20, {"kind": "intervention", "step": 17, "epoch": 2, "cause": "loss spike (12.3x the recent median)",
                        "action": "rolled back to step 10 and halved the learning rate", "lr_after": 5e-4})
    records += [{"kind": "test", "test_loss": 0.51, "test_acc": 0.83, "test_samples": 1000},
                {"kind": "end", "status": "completed", "epochs": epochs, "steps": epochs * 10, "wall_time_s": 9.0}]
    return records


CONFIG = {"recipe": "mnist", "epochs": 6, "lr": 0.001, "batch_size": 64, "optimizer": "adam",
          "note": "<script>alert('x')</script>"}


def sections(page):
    """{heading: section html}."""
    return {m.group(1): m.group(2) for m in re.finditer(r"<section><h2>(.*?)</h2>(.*?)</section>", page, re.S)}


def assert_self_contained(page):
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert "@import" not in page and "url(http" not in page


def test_full_report_has_every_section_with_a_plot(tmp_path):
    run = write_run(tmp_path / "run", full_records(), CONFIG)
    path = write_report(run)
    assert path == run / "report.html"
    page = path.read_text()
    assert_self_contained(page)
    found = sections(page)
    for title in PLOT_SECTIONS:
        assert "<svg" in found[title], title
    assert "mnist run: completed" in page and "2025-03-01 10:00" in page
    # verdict: overfitting (validation rising since epoch 3) and the intervention
    assert "Overfitting began at epoch 4" in found["Health verdict"]
    assert "The health guard intervened 1 time" in found["Health verdict"]
    assert "Warning: possible overfitting" in found["Learning curves"]
    assert "loss spike (12.3x the recent median)" in found["Health-guard interventions"]
    assert "83.00%" in found["Final test metrics"] and "83.00%" in page.split("<section>")[0]  # headline
    assert "235,146" in page and "Measured peak process memory" in found["Memory"]
    # everything from the run is escaped
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in found["Resolved config"]
    assert len(page.encode()) < 300_000


def test_report_degrades_when_fields_are_missing(tmp_path):
    """Old-style step records only (no kind), two bare epochs, no config, summary or test."""
    records = [{"step": 5 * i, "epoch": 1 + i // 3, "loss": 1.0 / i, "grad_norm": 1.0, "lr": 0.01} for i in range(1, 7)]
    records += [{"kind": "epoch", "step": 15, "epoch": 1, "train_loss": 0.5},
                {"kind": "epoch", "step": 30, "epoch": 2, "train_loss": 0.3}]
    run = write_run(tmp_path / "old", records)
    log = run / "metrics.jsonl"
    log.write_text(log.read_text() + '{"kind": "epo')  # crashed mid-line
    os.utime(log, (0, 0))  # long ago: crashed, not running
    page = write_report(run).read_text()
    assert_self_contained(page)
    found = sections(page)
    assert "<svg" in found["Learning curves"] and "<svg" in found["Loss, learning rate and gradient norm over the steps"]
    for title in ("Gradient flow per layer", "Throughput and data loading", "Memory", "Final test metrics",
                  "Resolved config"):
        assert "Not recorded" in found[title] and "<svg" not in found[title], title
    assert "run: incomplete" in page


def test_report_of_an_empty_run_directory(tmp_path):
    page = write_report(write_run(tmp_path / "empty", [])).read_text()
    assert "Nothing was recorded" in page and "Not recorded" in page
    assert_self_contained(page)


def test_report_from_a_real_run(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    trainer = tw.Trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), nn.CrossEntropyLoss(),
                         run_dir=tmp_path, seed=0, log_every_steps=2)
    trainer.fit(tw.InMemoryLoader(x[:100], y[:100], batch_size=20, seed=0),
                tw.InMemoryLoader(x[100:], y[100:], batch_size=20, shuffle=False), epochs=3)
    page = write_report(tmp_path).read_text()
    assert_self_contained(page)
    found = sections(page)
    assert "<svg" in found["Learning curves"] and "The run looks healthy" in found["Health verdict"]
    assert page.count("<svg") >= 3
    assert "<h1>Sequential run: completed</h1>" in page  # a library run is titled by its model's class


def test_report_of_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(tw.ConfigError, match="no run directory"):
        write_report(tmp_path / "missing")


def test_report_of_a_directory_that_is_not_a_run_writes_nothing(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"")
    with pytest.raises(tw.ConfigError, match=r"photos is not a run directory \(no metrics.jsonl, config.yaml "
                                             r"or summary.json\)"):
        write_report(tmp_path / "photos")
    assert [p.name for p in (tmp_path / "photos").iterdir()] == ["cat.jpg"]


@pytest.mark.skipif(not __import__("shutil").which("chromium"), reason="chromium is not installed")
def test_report_renders_in_headless_chromium(tmp_path):
    """The page loads offline in a real browser, and the screenshot is not blank."""
    import subprocess

    path = write_report(write_run(tmp_path / "run", full_records(), CONFIG))
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,3000",
                    path.as_uri()], check=True, capture_output=True, timeout=60)
    assert shot.stat().st_size > 50_000


# --------------------------------------------------------------------------- what a reader of the page sees


def test_report_title_names_the_recipe_else_the_model_else_the_directory(tmp_path):
    epoch = [{"kind": "epoch", "step": 5, "epoch": 1, "train_loss": 0.5}]
    library = write_run(tmp_path / "mine", epoch, summary={"model": "TinyNet", "status": "completed"})
    assert "<h1>TinyNet run: completed</h1>" in write_report(library).read_text()
    bare = write_run(tmp_path / "exp-3", epoch)
    assert "<h1>exp-3 run:" in write_report(bare).read_text()
    recipe = write_run(tmp_path / "r", epoch, config={"recipe": "xor"}, summary={"model": "Sequential"})
    assert "<h1>xor run:" in write_report(recipe).read_text()
    assert "? run" not in write_report(library).read_text()


def test_update_ratio_axis_labels_only_powers_of_ten(tmp_path):
    """Minor log labels (2x10^-3, 3x10^-3, ...) overlapped on the narrow update/weight panel."""
    found = sections(write_report(write_run(tmp_path / "run", full_records(), CONFIG)).read_text())
    flow = found["Gradient flow per layer"]
    assert "10^{-3}" in flow and "\\times" not in flow


def test_data_wait_threshold_is_in_the_legend(tmp_path):
    found = sections(write_report(write_run(tmp_path / "run", full_records(), CONFIG)).read_text())
    assert "warning level (30%)" in found["Throughput and data loading"]


def test_memory_section_explains_estimate_versus_measured_process_memory(tmp_path):
    memory = sections(write_report(write_run(tmp_path / "run", full_records(), CONFIG)).read_text())["Memory"]
    assert "Estimated training memory: 3.8 MB" in memory
    assert "Measured peak process memory (RSS): 4.8 MB" in memory
    assert "whole process" in memory and "torch&#x27;s own libraries" in memory
    assert "Measured training peak: not recorded." in memory  # a run from before the probe


def test_memory_section_sets_the_estimate_beside_the_measured_training_peak(tmp_path):
    records = full_records()
    estimate = records[0]["memory"]
    records.insert(12, {"kind": "memory", "step": 4, "estimated": estimate, "measured_peak": 3_600_000,
                        "at_start": 2_821_752, "steps": 3, "method": "cpu: torch profiler memory events"})
    memory = sections(write_report(write_run(tmp_path / "run", records, CONFIG)).read_text())["Memory"]
    assert "Estimated training memory: 3.8 MB (parameters 918.5 KB, gradients 918.5 KB, optimizer state 1.8 MB, " \
           "activations 200.0 KB" in memory
    assert "Measured training peak: 3.4 MB over 3 steps" in memory and "cpu: torch profiler memory events" in memory
    assert "The estimate is within 11% of the measured training peak (above it)." in memory  # 3967136 / 3.6e6
    assert "measured training peak 3.4 MB" in memory and "estimate" in memory  # both bars, in the legend
    assert "Measured peak process memory (RSS): 4.8 MB" in memory  # kept, as context


def test_memory_section_counts_the_larger_of_activations_and_optimizer_step(tmp_path):
    records = full_records()
    records[0]["memory"] = {"parameters": 2**20, "gradients": 2**20, "optimizer_state": 2**21,
                            "activations": 2**18, "optimizer_step": 2**21, "total": 6 * 2**20}
    memory = sections(write_report(write_run(tmp_path / "run", records, CONFIG)).read_text())["Memory"]
    assert "optimizer step 2.0 MB" in memory and "activations 256.0 KB" not in memory.split("The optimizer")[0]
    assert "never coexist, so only the larger is counted" in memory
    assert "Measured training peak: not recorded." in memory


def test_interventions_section_says_plainly_that_none_were_recorded(tmp_path):
    records = [r for r in full_records() if r["kind"] != "intervention"]
    page = write_report(write_run(tmp_path / "on", records, CONFIG)).read_text()
    assert "None were recorded" in sections(page)["Health-guard interventions"]
    assert "was not recording" not in page
    records[0]["health_guard"] = False
    page = write_report(write_run(tmp_path / "off", records, CONFIG)).read_text()
    assert "the health guard was off for this run" in sections(page)["Health-guard interventions"]


def test_a_long_epoch_table_shows_its_ends_and_folds_the_rest(tmp_path):
    records = [{"kind": "epoch", "step": e, "epoch": e, "train_loss": 1 / e, "eval_loss": 1 / e,
                "samples_per_sec": 46712.3} for e in range(1, 201)]
    table = sections(write_report(write_run(tmp_path / "long", records)).read_text())["Epochs"]
    visible, folded = table.split("<details>")
    assert visible.count("<tr>") == 1 + 10 + 1  # header, first 5 and last 5 epochs, the "more" row
    assert "190 more epochs" in visible and "<td class='num'>200</td>" in visible
    assert "<td class='num'>46,712</td>" in visible  # large rates in full, not 4.671e+04
    assert "<summary>All 200 epochs</summary>" in folded and folded.count("<tr>") == 201
    short = [r for r in records if r["epoch"] <= 10]
    assert "<details>" not in sections(write_report(write_run(tmp_path / "short", short)).read_text())["Epochs"]


def spiky_records():
    """Four loss spikes 9x the recent loss, two logged steps each: the verdict blames the learning rate."""
    records = [{"kind": "start", "device": "cpu"}]
    for step in range(1, 61):
        loss = 9.0 if step in (20, 21, 40, 41) else 1.0 - step / 200
        records.append({"kind": "step", "step": step, "epoch": 1 + (step - 1) // 20, "loss": loss, "lr": 0.5})
    records += [{"kind": "epoch", "step": 20 * e, "epoch": e, "train_loss": 1.5 - 0.1 * e, "lr": 0.5} for e in (1, 2, 3)]
    return records


def test_loss_spikes_the_verdict_cites_are_marked_on_the_step_loss_plot(tmp_path):
    found = sections(write_report(write_run(tmp_path / "spiky", spiky_records(), {"lr": 0.5})).read_text())
    assert "too high" in found["Health verdict"]  # the verdict's lr_too_high finding cites the spikes
    assert "loss spike (4, cited in the verdict)" in found["Loss, learning rate and gradient norm over the steps"]
    calm = sections(write_report(write_run(tmp_path / "calm", full_records(), CONFIG)).read_text())
    assert "cited in the verdict" not in calm["Loss, learning rate and gradient norm over the steps"]
