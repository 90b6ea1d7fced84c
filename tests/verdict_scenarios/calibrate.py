"""Run the verdict's scenario suite and print its calibration tables (Markdown).

    python tests/verdict_scenarios/calibrate.py [--before before.json] [--record FILE] [--only NAME ...]

``--record`` saves each scenario's codes as JSON (how ``before.json``, the rules' answers before
calibration, was made); ``--before`` adds them as a column.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

from verdict_cases import CODES, SCENARIOS, judge  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = json.loads(args.before.read_text()) if args.before else {}
    results = {}
    for scenario in SCENARIOS:
        if args.only and scenario.name not in args.only:
            continue
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            found, complaints = judge(scenario, scenario.run(Path(tmp) / "run"))
        results[scenario.name] = found
        print(f"{scenario.name}: {', '.join(found)} ({time.perf_counter() - started:.1f}s)"
              + (f"  WRONG: {'; '.join(complaints)}" if complaints else ""), file=sys.stderr)
    if args.record:
        args.record.write_text(json.dumps(results, indent=1) + "\n")
    print(scenario_table(results, before))
    print()
    print(precision_recall_table(results, before))


def scenario_table(results: dict[str, list[str]], before: dict[str, list[str]]) -> str:
    rows = ["| scenario | what it is | required (any of) | forbidden | got before | got after |",
            "|---|---|---|---|---|---|"]
    for s in SCENARIOS:
        if s.name not in results:
            continue
        forbidden = "every other code" if set(s.forbidden) | set(s.required) == set(CODES) else ", ".join(s.forbidden)
        rows.append(f"| `{s.name}` | {s.description} | {', '.join(s.required)} | {forbidden} | "
                    f"{_mark(s, before.get(s.name))} | {_mark(s, results[s.name])} |")
    return "\n".join(rows)


def _mark(scenario, found: list[str] | None) -> str:
    if found is None:
        return "(not run)"
    wrong = not set(found) & set(scenario.required) or set(found) & set(scenario.forbidden)
    return ", ".join(found) + (" ✗" if wrong else " ✓")


def precision_recall_table(results: dict[str, list[str]], before: dict[str, list[str]]) -> str:
    """Per code, over the suite: a found code is a true positive where it is required, a false
    positive where it is forbidden; a required code not found (and no alternative found) is missed."""
    rows = ["| finding code | true positives | false positives | missed | precision | recall | "
            "precision before | recall before |", "|---|---|---|---|---|---|---|---|"]
    for code in CODES:
        tp, fp, fn = _counts(code, results)
        old = _counts(code, {name: before[name] for name in results if name in before})
        rows.append(f"| `{code}` | {tp} | {fp} | {fn} | {_share(tp, tp + fp)} | {_share(tp, tp + fn)} | "
                    f"{_share(old[0], old[0] + old[1])} | {_share(old[0], old[0] + old[2])} |")
    return "\n".join(rows)


def _counts(code: str, results: dict[str, list[str]]) -> tuple[int, int, int]:
    by_name = {s.name: s for s in SCENARIOS}
    tp = fp = fn = 0
    for name, found in results.items():
        s = by_name[name]
        if code in found and code in s.required:
            tp += 1
        elif code in found and code in s.forbidden:
            fp += 1
        elif code in s.required and not set(found) & set(s.required):
            fn += 1
    return tp, fp, fn


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "n/a"


if __name__ == "__main__":
    main()
