"""The published studies say what their data says: every number a study README quotes from its
results.csv / analysis summaries / data files is checked against them, and so are the paragraphs of
the top-level README and docs/ that quote a study (tests/support/results_prose.py describes the check comments)."""

from pathlib import Path

import pytest

from tests.support.results_prose import RESULTS, STUDIES, Study, check_document

ROOT = Path(__file__).resolve().parents[2]
QUOTING = ("README.md", "docs/experiments.md", "docs/models.md", "docs/analysis.md", "docs/performance.md")


@pytest.mark.parametrize("name", STUDIES)
def test_study_readme_agrees_with_its_data(name):
    problems = check_document(RESULTS / name / "README.md", Study(name), strict=True)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", QUOTING)
def test_documents_quoting_the_studies_agree_with_their_data(name):
    problems = check_document(ROOT / name, None, strict=False)
    assert not problems, "\n".join(problems)


def test_tpu_plan_reading_agrees_with_the_reports():
    """Every number docs/tpu.md reads from the pod plan (its table is generated from the same reports)."""
    problems = check_document(ROOT / "docs" / "tpu.md", None, strict=True, region=("Reading (", "## GPU"))
    assert not problems, "\n".join(problems)


def _tiny_study(tmp_path, readme):
    rows = ["label,seed,status,final_top1,num_params"] + [
        f"{label},{seed},done,{top1},{params}" for label, params, values in
        (("dog", 1234, (0.80, 0.82, 0.85)), ("ref", 1234, (0.70, 0.75, 0.74))) for seed, top1 in enumerate(values)]
    (tmp_path / "results.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "README.md").write_text(readme)
    return check_document(tmp_path / "README.md", Study("tiny", tmp_path), strict=True)


GOOD = """DoG leads by +9.33 points, [+4.16, +14.50], on 3 of 3 seeds; 1,234 parameters, γ up to 0.5.
<!-- check
+9.33 = mean(gap("dog", "ref"))
[+4.16, +14.50] = ci(gap("dog", "ref"))
3 of 3 = ahead(gap("dog", "ref"))
1,234 = params("dog")
not data: 0.5   # a setting
-->
"""


@pytest.mark.parametrize("readme, problem", [
    (GOOD, None),
    (GOOD.replace("+9.33", "+9.38"), "+9.38 should be +9.33"),  # a wrong number
    (GOOD.replace("not data: 0.5   # a setting", ""), "'0.5' in"),  # a number nobody checked
    (GOOD + "Later: 82.33 %.\n", "comes after the last check comment"),
    (GOOD.replace("+9.33 = mean", "+9.3 = mean"), "'+9.3' not found"),  # claims name whole numbers ...
    (GOOD.replace("3 of 3 = ahead", "[+4.16, +14.50] = ci(gap(\"dog\", \"ref\"))\n3 of 3 = ahead"),
     "not found in the text above (after the previous claim)"),  # ... in order: no claim twice
    (GOOD.replace('params("dog")', 'params("nobody")'), "no finished run labelled 'nobody'"),
])
def test_the_prose_check_fails_on_wrong_or_unchecked_numbers(tmp_path, readme, problem):
    problems = _tiny_study(tmp_path, readme)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in line for line in problems), problems


@pytest.mark.parametrize("name", sorted(path.parent.name for path in RESULTS.glob("*/results.csv")))
def test_every_published_sweep_names_one_clean_commit(name):
    """Every results.csv names the commit that made its runs: one commit per study, none dirty."""
    commits = Study(name).commits()
    assert len(commits) == 1, f"{name}/results.csv mixes commits: {sorted(commits)}"
    (commit,) = commits
    assert commit and "+dirty" not in commit and " < " not in commit, f"{name}/results.csv: commit {commit!r}"
