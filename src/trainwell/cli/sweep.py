"""``trainwell sweep``: search hyperparameters of a recipe or config file with Optuna, one normal
run directory per trial; at the end a table of trials, ``best.yaml`` and ``study.html``.

Running the same command again continues the study in the sweep directory: trials a kill or a
signal interrupted run again, and the sweep stops once ``--trials`` trials have a result.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trainwell.cli.train import RUNS, read_yaml
from trainwell.config import FIELDS, validate
from trainwell.errors import ConfigError

OPTUNA_MISSING = "trainwell sweep needs Optuna: pip install 'trainwell[sweep]' (or pip install optuna)"


def sweep(args: argparse.Namespace) -> int:
    """Resolve the fixed options and the search space, run the study, report it."""
    if importlib.util.find_spec("optuna") is None:
        raise ConfigError(OPTUNA_MISSING)
    from trainwell import sweep as sw

    for option in ("trials", "jobs"):
        if getattr(args, option) < 1:
            raise ConfigError(f"--{option} must be at least 1 (got {getattr(args, option)})")
    base, sources, space, sweep_dir = resolve(args)
    check_same_sweep(sweep_dir, base, space)
    from trainwell.runtime import stop_on_signals

    received: list[str] = []
    with sw.exclusive(sweep_dir), stop_on_signals(received.append), sw.trial_output():
        study = sw.open_study(sweep_dir, base["seed"], args.trials)
        _write_sweep_file(sweep_dir, base, space)
        requeued = sw.requeue_interrupted(study)
        finished = sw.done(study)
        print(_headline(sweep_dir, base, space, args, finished, requeued), flush=True)
        if finished < args.trials:
            def after_trial(study: Any, trial: Any) -> None:
                line = outcome_line(study, trial, sweep_dir)
                if line:
                    print(line, flush=True)
                if received:
                    study.stop()

            try:
                study.optimize(sw.objective(sweep_dir, base, sources, space, received, print),
                               n_trials=args.trials - finished, n_jobs=args.jobs, catch=(sw.TrialFailed,),
                               callbacks=[after_trial])
            except sw.SweepInterrupted as stop:
                received.append(str(stop))
        if received:
            print(f"trainwell: sweep interrupted by {received[0]}: {sw.done(study)} of {args.trials} trials "
                  "finished. Run the same command again to continue the study.")
            return 0
    return finish(study, sweep_dir, args.trials)


def resolve(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str], dict[str, Any], Path]:
    """(fixed config values, how the user spelled each, the search space, the sweep directory).

    The fixed values merge as ``trainwell train`` does: recipe defaults < CONFIG.yaml < options;
    the config file may hold the search space as a ``sweep:`` mapping, which ``--param`` overrides.
    """
    from trainwell.recipes import recipe_defaults
    from trainwell.sweep import check_space, parse_space

    given = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    sources = {name: f"--{name.replace('_', '-')}" for name in given}
    if args.gpu:
        given["device"], sources["device"] = "cuda", "--gpu"
    target, file_space, file_name = args.target, None, None
    if target is not None and (target.endswith((".yaml", ".yml")) or Path(target).is_file()):
        file_name = target
        values = read_yaml(Path(target))
        file_space = values.pop("sweep", None)
        sources.update({name: f"{target}: {name}" for name in values if name not in given})
        given = {**values, **given}
        target = values.get("recipe")
    recipe = str(target or "mnist")
    named = Path(file_name).stem if file_name else recipe
    sweep_dir = Path(given.pop("run_dir", None) or RUNS / f"sweep-{named}")
    resolved = asdict(validate({**recipe_defaults(recipe), **given, "recipe": recipe}, sources))
    base = {name: value for name, value in resolved.items() if name != "run_dir"}
    space = parse_space(file_space, args.param or [], file_name)
    check_space(base, space, sources)
    return base, sources, space, sweep_dir


def check_same_sweep(sweep_dir: Path, base: dict[str, Any], space: dict[str, Any]) -> None:
    """A rerun continues the study only with the same search space and fixed options (``--trials``
    and ``--jobs`` may change): otherwise its trials would answer different questions."""
    from trainwell.sweep import STUDY_DB, SWEEP_FILE

    saved_path = sweep_dir / SWEEP_FILE
    if not saved_path.is_file():
        if any(sweep_dir.glob("trial-*")):
            raise ConfigError(f"{sweep_dir} holds trial directories but no {SWEEP_FILE}; choose another --run-dir")
        return
    saved = read_yaml(saved_path)
    if not (sweep_dir / STUDY_DB).is_file():
        raise ConfigError(f"{sweep_dir} has {SWEEP_FILE} but its {STUDY_DB} is gone; choose another --run-dir")
    now = {"space": {name: param.spec for name, param in space.items()}, "fixed": base}
    for part in ("space", "fixed"):
        old, new = saved.get(part, {}), now[part]
        for key in sorted(set(old) | set(new)):
            if old.get(key, "(absent)") != new.get(key, "(absent)"):
                what = "search space" if part == "space" else "fixed options"
                raise ConfigError(f"{sweep_dir} holds a sweep with other {what}: {key} was "
                                  f"{old.get(key, '(absent)')!r}, now {new.get(key, '(absent)')!r}; "
                                  "rerun it as it was to continue it, or choose another --run-dir")


def _write_sweep_file(sweep_dir: Path, base: dict[str, Any], space: dict[str, Any]) -> None:
    from trainwell.rundir import write_yaml
    from trainwell.sweep import SWEEP_FILE

    write_yaml(sweep_dir / SWEEP_FILE, {"space": {name: param.spec for name, param in space.items()}, "fixed": base})


def _headline(sweep_dir: Path, base: dict[str, Any], space: dict[str, Any], args: argparse.Namespace,
              finished: int, requeued: list[int]) -> str:
    searched = ", ".join(f"{name} {param.spec}" for name, param in space.items())
    if not finished and not requeued:
        return (f"trainwell: sweep of {base['recipe']} in {sweep_dir}: {args.trials} trials, searching {searched} "
                f"(TPE sampler, seed {base['seed']}; median pruning; {args.jobs} at a time)")
    again = f"; interrupted trial{'s' if len(requeued) > 1 else ''} {', '.join(map(str, requeued))} run again" \
        if requeued else ""
    if finished >= args.trials:
        return f"trainwell: the sweep in {sweep_dir} is complete: {finished} of {args.trials} trials finished"
    return f"trainwell: continuing the sweep in {sweep_dir}: {finished} of {args.trials} trials finished{again}"


def outcome_line(study: Any, trial: Any, sweep_dir: Path) -> str | None:
    """One line per finished trial: its loss, or why it was pruned or failed."""
    from optuna.trial import TrialState

    from trainwell.sweep import trial_dir

    monitor = trial.user_attrs.get("monitor", "loss")
    if trial.state == TrialState.COMPLETE:
        best = study.best_trial
        return (f"trial {trial.number}: {monitor} {trial.value:.4g} in {len(trial.intermediate_values)} epochs; "
                f"best so far: trial {best.number} ({best.value:.4g})")
    if trial.state == TrialState.PRUNED:
        return (f"trial {trial.number}: pruned at epoch {trial.user_attrs.get('pruned_at')}: its {monitor} was worse "
                "than the median of earlier trials")
    if "failure" in trial.user_attrs:
        return f"trial {trial.number}: failed: {trial.user_attrs['failure']} (see {trial_dir(sweep_dir, trial.number)}/train.log)"
    return None


def trial_rows(study: Any) -> tuple[list[str], list[list[Any]]]:
    """The trials table: number, each parameter, the objective, epochs trained, state."""
    from optuna.trial import TrialState

    from trainwell.sweep import format_value, interrupted

    trials = study.get_trials(deepcopy=False)
    names = list(dict.fromkeys(name for t in trials for name in t.params))
    validated = any(t.user_attrs.get("monitor") == "validation loss" for t in trials)
    rerun = {t.user_attrs["rerun_of"]: t.number for t in trials if "rerun_of" in t.user_attrs}
    best = study.best_trial.number if any(t.state == TrialState.COMPLETE for t in trials) else None
    rows = []
    for t in trials:
        losses = [v for v in t.intermediate_values.values() if math.isfinite(v)]
        value = t.value if t.state == TrialState.COMPLETE else min(losses) if losses and validated else None
        if t.state == TrialState.COMPLETE:
            state = "complete (best)" if t.number == best else "complete"
        elif t.state == TrialState.PRUNED:
            state = f"pruned at epoch {t.user_attrs.get('pruned_at')}"
        elif interrupted(t):
            state = "interrupted" + (f", re-run as trial {rerun[t.number]}" if t.number in rerun else "")
        else:
            state = f"failed: {t.user_attrs.get('failure', '')}"[:70]
        rows.append([t.number, *(format_value(t.params[n]) if n in t.params else "-" for n in names),
                     "-" if value is None else f"{value:.4g}", len(t.intermediate_values), state])
    header = ["TRIAL", *[n.upper() for n in names], "BEST VAL LOSS" if validated else "FINAL TRAIN LOSS",
              "EPOCHS", "STATE"]
    return header, rows


def finish(study: Any, sweep_dir: Path, trials: int) -> int:
    """Print the table; write best.yaml and study.html; say how to train the best config."""
    from optuna.trial import TrialState

    from trainwell.runs import text_table
    from trainwell.sweep import BEST, PAGE, format_params, trial_dir

    header, rows = trial_rows(study)
    print(text_table(header, [[str(c) for c in row] for row in rows]))
    page = sweep_dir / PAGE
    page.write_text(study_page(study, sweep_dir, header, rows), encoding="utf-8")
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        print(f"trainwell: no trial completed, so there is no best config; see the trials' train.log. "
              f"Wrote {page}", flush=True)
        return 1
    best = study.best_trial
    write_best(trial_dir(sweep_dir, best.number), sweep_dir / BEST, best, sweep_dir)
    print(f"Best: trial {best.number}, {best.user_attrs.get('monitor', 'loss')} {best.value:.4g}, "
          f"with {format_params(best.params)}")
    print(f"Wrote {sweep_dir}/: {BEST}, {PAGE}, study.db, trial-NNN/ (one run directory per trial)")
    print(f"Train the best config: trainwell train {sweep_dir / BEST}")
    return 0


def write_best(run_dir: Path, path: Path, best: Any, sweep_dir: Path) -> None:
    """The best trial's resolved config as a config file ``trainwell train`` accepts (a new run directory)."""
    import yaml

    from trainwell.rundir import read_config

    config = {key: value for key, value in read_config(run_dir).items() if key != "run_dir"}
    comment = (f"# The best trial ({best.number}) of the sweep in {sweep_dir}: "
               f"{best.user_attrs.get('monitor', 'loss')} {best.value:.6g}.\n"
               f"# Train it: trainwell train {path}\n")
    path.write_text(comment + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def study_page(study: Any, sweep_dir: Path, header: list[str], rows: list[list[Any]]) -> str:
    """study.html: the headline, optimization history, parameter importance, per-epoch losses, the table."""
    from trainwell.report import html_table, page
    from trainwell.sweep import BEST, format_params

    complete = [t for t in study.get_trials(deepcopy=False) if t.value is not None]
    if complete:
        best = study.best_trial
        headline = (f"<p>Best: trial {best.number}, {html.escape(best.user_attrs.get('monitor', 'loss'))} "
                    f"{best.value:.4g}, with {html.escape(format_params(best.params))}. Train it with "
                    f"<code>trainwell train {html.escape(str(sweep_dir / BEST))}</code>.</p>")
    else:
        headline = "<p class='note'>No trial completed yet.</p>"
    sections = [f"<h1>trainwell sweep: {html.escape(sweep_dir.name)}</h1>",
                f"<p class='sub'>{len(rows)} trials; TPE sampler, median pruning; the study is {sweep_dir}/study.db</p>",
                headline, *study_plots(study), "<h2>Trials</h2>", html_table(header, rows)]
    return page(f"trainwell sweep: {sweep_dir.name}", "\n".join(sections))


def study_plots(study: Any) -> list[str]:
    """The study page's figures as inline SVG: optimization history, parameter importance, loss per epoch."""
    from optuna.trial import TrialState

    from trainwell.plotting import figure_svg, new_figure

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    monitor = next((t.user_attrs["monitor"] for t in trials if "monitor" in t.user_attrs), "loss")
    sections = ["<h2>Optimization history</h2>"]
    if complete:
        fig = new_figure(7.5, 3.2)
        ax = fig.add_subplot()
        ax.plot([t.number for t in complete], [t.value for t in complete], "o", color="#0969da", label="complete")
        pruned = [(t.number, min(t.intermediate_values.values())) for t in trials
                  if t.state == TrialState.PRUNED and t.intermediate_values]
        if pruned:
            ax.plot(*zip(*pruned), "x", color="#8c959f", label="pruned (best epoch)")
        best = [min(t.value for t in complete if t.number <= n) for n in (t.number for t in complete)]
        ax.step([t.number for t in complete], best, where="post", color="#cf222e", label="best so far")
        _axes(ax, "trial", monitor, [t.value for t in complete] + [v for _, v in pruned])
        ax.legend(loc="best", fontsize="small")
        sections.append(figure_svg(fig, "history"))
    else:
        sections.append("<p class='note'>No trial completed yet.</p>")
    sections += ["<h2>Parameter importance</h2>", _importance(study, complete, figure_svg, new_figure)]
    sections.append("<h2>Loss per epoch</h2>")
    curves = [t for t in trials if t.intermediate_values]
    if curves:
        fig = new_figure(7.5, 3.2)
        ax = fig.add_subplot()
        for t in curves:
            steps = sorted(t.intermediate_values)
            ax.plot(steps, [t.intermediate_values[s] for s in steps], "--" if t.state == TrialState.PRUNED else "-",
                    linewidth=1.2, label=f"trial {t.number}")
        _axes(ax, "epoch", monitor, [v for t in curves for v in t.intermediate_values.values()])
        if len(curves) <= 12:
            ax.legend(loc="best", fontsize="x-small", ncol=2)
        sections += [figure_svg(fig, "epochs"), "<p class='note'>Dashed: pruned trials.</p>"]
    else:
        sections.append("<p class='note'>No epoch finished yet.</p>")
    return sections


def _axes(ax: Any, xlabel: str, ylabel: str, values: list[float]) -> None:
    """Whole-number x ticks; a log y axis when the losses span more than the report's factor."""
    from matplotlib.ticker import MaxNLocator

    from trainwell.report import LOG_SCALE_SPAN

    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > LOG_SCALE_SPAN:
        ax.set_yscale("log")


def _importance(study: Any, complete: list, figure_svg: Any, new_figure: Any) -> str:
    """PED-ANOVA importance (Optuna's default evaluator), when enough trials completed to estimate it."""
    import warnings

    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    if len(complete) < 3:
        return "<p class='note'>Needs at least 3 completed trials.</p>"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importance = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError) as e:
        return f"<p class='note'>Not estimated: {e}</p>"
    if not importance:
        return "<p class='note'>Not estimated: no parameter varied.</p>"
    fig = new_figure(7.5, 0.5 + 0.4 * len(importance))
    ax = fig.add_subplot()
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names], color="#0969da")
    ax.set(xlabel="importance (share, PED-ANOVA)", xlim=(0, 1))
    return figure_svg(fig, "importance") + ("<p class='note'>How much each parameter decides whether a trial "
                                            "lands among the best ones (Optuna's PED-ANOVA).</p>")
