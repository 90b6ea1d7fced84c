"""The README and the documentation site stay true: the README is short, its Python runs as
written, its links lead somewhere, every command-line option is in docs/cli.md, and the
MkDocs site builds with --strict (a broken link, a missing anchor or a page left out of the
nav fails)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trainwell.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CLI_DOC = ROOT / "docs" / "cli.md"
README_LIMIT = 15_000  # issue 20: a page a newcomer reads in five minutes


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    actions = build_parser()._actions
    sub = next(a for a in actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")]


def test_readme_is_short() -> None:
    size = len(README.read_text(encoding="utf-8"))
    assert size < README_LIMIT, f"README.md has {size:,} characters; keep it under {README_LIMIT:,} and move depth to docs/"


def test_readme_python_examples_run_as_written(tmp_path: Path) -> None:
    blocks = _python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md should show a Python example"
    for index, code in enumerate(blocks):
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"README python block {index + 1} failed:\n{result.stderr[-3000:]}"
    # The ten-line example trains with a run directory and prints its test metrics.
    assert (tmp_path / "runs" / "my-run" / "model.safetensors").is_file()
    assert "'test_acc'" in result.stdout


def test_readme_links_lead_to_files_and_headings() -> None:
    markdown = pytest.importorskip("markdown.extensions.toc")
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links, "README.md should link into docs/"
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        target, _, anchor = link.partition("#")
        path = ROOT / target
        assert path.is_file(), f"README.md links to {link}, but {target} does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), flags=re.M)
            slugs = {markdown.slugify(h.replace("`", ""), "-") for h in headings}
            assert anchor in slugs, f"README.md links to {link}, but {target} has no heading #{anchor}"


def test_every_command_and_option_is_in_the_cli_doc() -> None:
    doc = CLI_DOC.read_text(encoding="utf-8")
    parsers = {"": build_parser(), **{f"{name} ": p for name, p in _subcommands().items()}}
    for prefix, parser in parsers.items():
        if prefix:
            assert f"## `trainwell {prefix.strip()}`" in doc, f"docs/cli.md has no section for `trainwell {prefix.strip()}`"
        for option in _option_strings(parser):
            assert f"`{option}" in doc, f"docs/cli.md does not document `trainwell {prefix}{option}`"
    for action in _subcommands()["runs"]._actions:  # the runs actions (list, compare)
        for choice in action.choices or ():
            assert f"`{choice}" in doc, f"docs/cli.md does not document `trainwell runs {choice}`"


def test_every_train_option_has_a_row_in_the_options_table() -> None:
    doc = CLI_DOC.read_text(encoding="utf-8")
    rows = [line for line in doc.splitlines() if line.startswith("| `-")]
    documented = {opt for row in rows for opt in re.findall(r"`(--?[a-z][a-z-]*)", row.split(" | ")[0])}
    train = set(_option_strings(_subcommands()["train"]))
    assert train - documented == set(), f"train options without a row in docs/cli.md: {sorted(train - documented)}"
    known = {s for p in [build_parser(), *_subcommands().values()] for a in p._actions for s in a.option_strings}
    assert documented - known == set(), f"docs/cli.md documents options that do not exist: {sorted(documented - known)}"


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip('mkdocs and mkdocs-material are not installed (pip install -e ".[test]" installs them)')
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    for page in ("index", "cli", "api", "recipes", "resume", "health", "health-calibration", "speed"):
        built = tmp_path / "site" / ("index.html" if page == "index" else f"{page}/index.html")
        assert built.is_file(), f"the site has no page for docs/{page}.md"
