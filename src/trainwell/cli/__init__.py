"""The ``trainwell`` command. Only argparse and the config dataclass load here, so
``trainwell --help`` answers at once; torch is imported when a command runs.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import Sequence

from trainwell.config import ALIASES, FIELDS, cli_type, field_kind
from trainwell.errors import TrainwellError
from trainwell.recipes import DEFAULTS, RECIPES


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit 2, like every other configuration error, with a
    "did you mean" for a mistyped option or choice (Python 3.11's argparse has none)."""

    commands: dict[str, argparse.ArgumentParser] = {}  # the subcommands' parsers, by name

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}{self._did_you_mean(message)} (see {self.prog} --help)\n")

    def _did_you_mean(self, message: str) -> str:
        if message.startswith("unrecognized arguments:"):
            options = [o for action in self._actions for o in action.option_strings if o.startswith("--")]
            for given in message.split(":", 1)[1].split():
                if given.startswith("--"):
                    guess = _closest_option(given.split("=")[0], options)
                    if guess:
                        return f"; did you mean {guess}?"
            return ""
        invalid = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if invalid:
            match = difflib.get_close_matches(invalid[1], re.findall(r"'([^']*)'", invalid[2]), n=1, cutoff=0.5)
            return f"; did you mean {match[0]!r}?" if match else ""
        return ""


def _closest_option(given: str, options: list[str]) -> str | None:
    """The option meant by ``given``: a synonym (``--learning-rate`` is ``--lr``) or the nearest spelling."""
    alias = ALIASES.get(given[2:].replace("-", "_"))
    if alias and f"--{alias.replace('_', '-')}" in options:
        return f"--{alias.replace('_', '-')}"
    names = {option[2:]: option for option in options}  # the shared "--" would make any two names look alike
    match = difflib.get_close_matches(given[2:], list(names), n=1, cutoff=0.6)
    return names[match[0]] if match else None


def _recipe_values(name: str) -> dict[str, object]:
    """Field ``name``'s default in each recipe."""
    return {recipe: DEFAULTS[recipe].get(name, FIELDS[name].default) for recipe in RECIPES}


def _default_text(name: str) -> str:
    values = _recipe_values(name)
    if len({repr(v) for v in values.values()}) > 1:
        return "default: per recipe, see below"
    value = next(iter(values.values()))
    return f"default: {FIELDS[name].metadata['unset'] if value is None else value}"


def _recipe_defaults_epilog() -> str:
    """'  --epochs  mnist 5, xor 200' for each option whose default depends on the recipe."""
    rows = [(f"--{name.replace('_', '-')}", ", ".join(f"{recipe} {FIELDS[name].metadata['unset'] if v is None else v}"
                                                       for recipe, v in _recipe_values(name).items()))
            for name in FIELDS if FIELDS[name].metadata.get("cli", True) and len({repr(v) for v in
                                                                                _recipe_values(name).values()}) > 1]
    width = max(len(option) for option, _ in rows)
    return "\n".join(f"  {option:<{width}}  {values}" for option, values in rows)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One ``--kebab-case`` option per TrainConfig field, typed from the field; values are validated
    with the config. Literal fields list their choices."""
    for name, spec in FIELDS.items():
        if spec.metadata.get("cli", True) is False:
            continue
        kind = field_kind(name)
        if kind is bool:  # --group-by-length / --no-group-by-length
            typing = {"action": argparse.BooleanOptionalAction}
        elif isinstance(kind, tuple):
            typing = {"choices": kind}
        else:
            typing = {"type": cli_type(name), "metavar": {int: "N", float: "X"}.get(kind, name.upper())}
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=argparse.SUPPRESS,
                            help=f"{spec.metadata['help']} ({_default_text(name)})", **typing)


def build_parser() -> argparse.ArgumentParser:
    width = max(map(len, RECIPES)) + 1
    recipes = "\n".join(f"  {name:<{width}} {about}" for name, (_, about) in RECIPES.items())
    parser = _Parser(prog="trainwell", description="Train PyTorch models with a loop you can trust.",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="With no command, `trainwell` runs `trainwell train` (the mnist recipe).")
    parser.add_argument("--version", action="version", version="trainwell 0.1.0")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    train = commands.add_parser(
        "train", help="train a recipe or a config file", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a recipe (default: mnist) or CONFIG.yaml; command-line options override the file.",
        epilog=f"recipes:\n{recipes}\n\ndefaults that depend on the recipe:\n{_recipe_defaults_epilog()}\n\n"
               "exit status: 0 success, 2 usage or configuration error, 1 training failure",
    )
    train.add_argument("target", nargs="?", default=None, metavar="RECIPE | CONFIG.yaml",
                       help=f"a recipe ({', '.join(RECIPES)}) or a YAML config file")
    _add_config_options(train)
    train.add_argument("--gpu", action="store_true", help="train on the CUDA GPU (same as --device cuda)")
    resume = train.add_mutually_exclusive_group()
    resume.add_argument("--resume", nargs="?", const="auto", default=None, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its latest valid checkpoint (default: the --run-dir, "
                             "else the newest run of this recipe, else the newest run); nothing to resume is an "
                             "error (exit 2)")
    resume.add_argument("--resume-or-start", action="store_true",
                        help="continue the run (as --resume) if it has a valid checkpoint, else start it: "
                             "for jobs that may be requeued")
    lr_find = commands.add_parser(
        "lr-find", help="the LR range test: plot loss against learning rate, print a suggested rate",
        description="Smith's range test on a recipe (default: mnist) or CONFIG.yaml, built as `trainwell train` "
                    "builds it: the learning rate grows exponentially from --min-lr to --max-lr over --num-steps "
                    "optimizer steps; prints the suggested rate and writes lr_find.png and lr_find.json into "
                    "--run-dir (default runs/RECIPE-lr-find-YYYYmmdd-HHMMSS). --lr, --epochs and --schedule "
                    "do not apply to the sweep.",
    )
    lr_find.add_argument("target", nargs="?", default=None, metavar="RECIPE | CONFIG.yaml",
                         help=f"a recipe ({', '.join(RECIPES)}) or a YAML config file")
    from trainwell.cli.tune import add_arguments as add_lr_find_options

    add_lr_find_options(lr_find)
    _add_config_options(lr_find)
    lr_find.add_argument("--gpu", action="store_true", help="run on the CUDA GPU (same as --device cuda)")
    report = commands.add_parser("report", help="(re)build RUN_DIR/report.html and print the health verdict",
                                 description="Write RUN_DIR/report.html: one offline file with the run's curves, "
                                             "gradient flow, throughput, memory, health verdict and config.")
    report.add_argument("run_dir", metavar="RUN_DIR")
    runs = commands.add_parser("runs", help="the runs under ./runs, listed or compared side by side",
                               description="`trainwell runs` or `trainwell runs list`: a table of the runs under "
                                           "./runs. `trainwell runs compare RUN_DIR...`: a table and one HTML page "
                                           "overlaying their curves.")
    runs.add_argument("action", nargs="?", default="list", choices=("list", "compare"))
    runs.add_argument("run_dirs", nargs="*", metavar="RUN_DIR")
    runs.add_argument("--root", default="runs", help="where to look for runs (default: runs)")
    runs.add_argument("--out", default=None, help="the comparison page (default: ROOT/compare.html)")
    sweep = commands.add_parser(
        "sweep", help="search hyperparameters with Optuna, one run directory per trial",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train --trials runs of a recipe or CONFIG.yaml with values Optuna picks from the search space "
                    "(--param, or the config file's sweep: mapping); other options are fixed for every trial. "
                    "--run-dir is the sweep directory (default runs/sweep-RECIPE): the study (study.db), one run "
                    "directory per trial (trial-NNN/), best.yaml and study.html. The same command again continues "
                    "the study.",
        epilog="search specs: loguniform:LO:HI, uniform:LO:HI, int:LO:HI, choice:A,B,C\n\n"
               f"defaults that depend on the recipe:\n{_recipe_defaults_epilog()}\n\n"
               "exit status: 0 success (or interrupted), 2 usage or configuration error, 1 no trial completed",
    )
    sweep.add_argument("target", nargs="?", default=None, metavar="RECIPE | CONFIG.yaml",
                       help=f"a recipe ({', '.join(RECIPES)}) or a YAML config file (may hold a sweep: mapping)")
    sweep.add_argument("--trials", type=int, default=20, metavar="N",
                       help="trials with a result (complete, pruned or failed) the study should reach (default: 20)")
    sweep.add_argument("--param", action="append", default=[], metavar="NAME=SPEC",
                       help="search config field NAME, e.g. lr=loguniform:1e-5:1e-1 or batch_size=choice:32,64,128 "
                            "(repeat for each field)")
    sweep.add_argument("--jobs", type=int, default=1, metavar="N",
                       help="trials trained at once, as threads of this process (default: 1; on a few CPU cores "
                            "1 is fastest)")
    _add_config_options(sweep)
    sweep.add_argument("--gpu", action="store_true", help="train every trial on the CUDA GPU (same as --device cuda)")
    from trainwell.cli.evaluate import add_eval_arguments, add_predict_arguments

    add_eval_arguments(commands.add_parser(
        "eval", help="a saved model's test metrics (a run directory or a checkpoint)",
        description="Evaluate a run's final weights (RUN_DIR/model.safetensors) or one of its checkpoints on the "
                    "run's test split (rebuilt from RUN_DIR/config.yaml) or on --data; prints the same metrics as "
                    "the run's own test record (test_loss, test_acc for classifiers)."))
    add_predict_arguments(commands.add_parser(
        "predict", help="labels and probabilities for new text, from a text-classify run",
        description="Classify each TEXT (and each row of --data's text column) with RUN_DIR/model/: one line per "
                    "input, label, probability and text (the labels as the training data spelled them)."))
    from trainwell.cli.bench_devices import add_arguments as add_bench_devices_arguments

    add_bench_devices_arguments(commands.add_parser(
        "bench-devices", help="time one epoch of a recipe on every available device (CPU, GPU): samples/s, speed-up",
        description="Train one epoch (or --epochs, or only --steps) of a recipe, built as `trainwell train` builds "
                    "it, on the CPU and on each GPU torch finds (CUDA, Apple MPS), after a short warm-up, and print "
                    "samples/s, seconds per epoch and the speed-up over the CPU. Writes nothing to disk.",
        epilog="exit status: 0 success, 2 usage or configuration error, 1 a device failed (the others' rows "
               "are still printed)"))
    parser.commands = dict(commands.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn trainwell's errors into one line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv or ["train"])
    if unknown:  # reported by the command's own parser, which knows the options meant
        parser.commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        if args.command == "report":
            from trainwell.cli.inspect import report

            return report(args)
        if args.command == "sweep":
            from trainwell.cli.sweep import sweep

            return sweep(args)
        if args.command == "lr-find":
            from trainwell.cli.tune import lr_find_command

            return lr_find_command(args)
        if args.command in ("eval", "predict"):
            from trainwell.cli import evaluate

            return evaluate.evaluate(args) if args.command == "eval" else evaluate.predict(args)
        if args.command == "runs":
            from trainwell.cli.inspect import runs

            return runs(args)
        if args.command == "bench-devices":
            from trainwell.cli.bench_devices import bench_devices

            return bench_devices(args)
        from trainwell.cli.train import run

        return run(args)
    except TrainwellError as e:
        print(f"trainwell: error: {e}", file=sys.stderr)
        return e.exit_code
