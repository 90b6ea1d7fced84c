"""``trainwell report`` and ``trainwell runs``: look at finished (or running) runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainwell.errors import ConfigError


def report(args: argparse.Namespace) -> int:
    from trainwell.report import write_report
    from trainwell.verdict import diagnose, format_verdict, read_records

    run_dir = Path(args.run_dir)
    path = write_report(run_dir)
    print(format_verdict(diagnose(read_records(run_dir), _config(run_dir))))
    print(f"Report: {path}")
    return 0


def runs(args: argparse.Namespace) -> int:
    from trainwell.runs import compare_runs, format_compare_table, format_runs_table, list_runs

    if args.action == "list":
        if args.run_dirs:
            raise ConfigError("`trainwell runs list` takes no run directories; use `trainwell runs compare RUN...`")
        print(format_runs_table(list_runs(args.root)))
        return 0
    if len(args.run_dirs) < 2:
        raise ConfigError("`trainwell runs compare` needs at least two run directories")
    print(format_compare_table(args.run_dirs))
    out = compare_runs(args.run_dirs, Path(args.out) if args.out else Path(args.root) / "compare.html")
    print(f"Comparison page: {out}")
    return 0


def _config(run_dir: Path) -> dict | None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    return yaml.safe_load(path.read_text())
