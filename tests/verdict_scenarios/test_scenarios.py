"""The verdict on each labelled scenario: its required finding present, every forbidden one absent.

The same scenarios print the calibration table: python tests/verdict_scenarios/calibrate.py
"""

from __future__ import annotations

import json

import pytest

from trainwell.verdict import findings_as_data, format_verdict
from verdict_cases import SCENARIOS, judge

CASES = [pytest.param(s, id=s.name, marks=[pytest.mark.slow] if s.slow else []) for s in SCENARIOS]


@pytest.mark.parametrize("scenario", CASES)
def test_scenario(scenario, tmp_path):
    outcome = scenario.run(tmp_path / "run")
    found, complaints = judge(scenario, outcome)
    assert not complaints, f"{scenario.name}: {found}: {'; '.join(complaints)}\n{format_verdict(outcome.findings())}"


@pytest.mark.slow
def test_default_mnist_run_says_healthy_in_words_and_as_data(tmp_path):
    """The issue's acceptance: the default run ends "Health verdict: healthy", one ok finding as data."""
    scenario = next(s for s in SCENARIOS if s.name == "mnist_default")
    findings = scenario.run(tmp_path / "run").findings()
    assert format_verdict(findings).startswith("Health verdict: healthy.")
    (health,) = json.loads(json.dumps(findings_as_data(findings)))
    assert health["severity"] == "ok" and health["code"] == "healthy"
    assert set(health) == {"code", "severity", "title", "evidence", "suggestion"}
