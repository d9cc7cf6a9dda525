"""benchmarks/tpu_plan.py: the pod plan's table in docs/tpu.md is the one its reports give, and every
report is a case of the plan (so the table lists it and its command)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks import tpu_plan  # noqa: E402


def test_docs_table_is_the_one_the_reports_give():
    doc = (tpu_plan.REPO / "docs" / "tpu.md").read_text()
    published = doc.split(tpu_plan.MARK_BEGIN, 1)[1].split(tpu_plan.MARK_END, 1)[0]
    expected = tpu_plan.table()
    assert published.strip() == expected.strip(), "run: python benchmarks/tpu_plan.py --table-only"
    assert (tpu_plan.OUT / "table.md").read_text() == expected


def test_every_report_is_a_case_of_the_plan_and_names_its_command():
    cases = {tpu_plan.case_name(*case): case for case in tpu_plan.CASES}
    reports = sorted(path.stem for path in tpu_plan.OUT.glob("*.json"))
    assert reports and set(reports) <= set(cases), set(reports) - set(cases)
    for name in reports:
        assert f"--aot_report=docs/results/tpu_plan/{name}.json" in tpu_plan.command(*cases[name])
