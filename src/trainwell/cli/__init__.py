"""The ``trainwell`` command. Only argparse and the config dataclass load here, so
``trainwell --help`` answers at once; torch is imported when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING
from typing import Sequence

from trainwell.config import FIELDS
from trainwell.errors import TrainwellError
from trainwell.recipes import RECIPES


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit 2, like every other configuration error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One ``--kebab-case`` option per TrainConfig field; values are validated with the config."""
    for name, spec in FIELDS.items():
        if spec.metadata.get("cli", True) is False:
            continue
        default = None if spec.default is MISSING else spec.default
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=argparse.SUPPRESS,
                            metavar=name.upper(), help=f"{spec.metadata['help']} (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    recipes = "\n".join(f"  {name:<8} {about}" for name, (_, about) in RECIPES.items())
    parser = _Parser(prog="trainwell", description="Train PyTorch models with a loop you can trust.",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="With no command, `trainwell` runs `trainwell train` (the mnist recipe).")
    parser.add_argument("--version", action="version", version="trainwell 0.1.0")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    train = commands.add_parser(
        "train", help="train a recipe or a config file", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a recipe (default: mnist) or CONFIG.yaml; command-line options override the file.",
        epilog=f"recipes:\n{recipes}\n\nexit status: 0 success, 2 usage or configuration error, 1 training failure",
    )
    train.add_argument("target", nargs="?", default=None, metavar="RECIPE | CONFIG.yaml",
                       help=f"a recipe ({', '.join(RECIPES)}) or a YAML config file")
    _add_config_options(train)
    train.add_argument("--gpu", action="store_true", help="train on the CUDA GPU (same as --device cuda)")
    train.add_argument("--resume", nargs="?", const="auto", default=None, metavar="RUN_DIR",
                       help="continue from the latest valid checkpoint of RUN_DIR (default: the --run-dir, "
                            "else the newest run of this recipe)")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn trainwell's errors into one line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv or ["train"])
    try:
        if args.command == "report":
            from trainwell.cli.inspect import report

            return report(args)
        if args.command == "runs":
            from trainwell.cli.inspect import runs

            return runs(args)
        from trainwell.cli.train import run

        return run(args)
    except TrainwellError as e:
        print(f"trainwell: error: {e}", file=sys.stderr)
        return e.exit_code
