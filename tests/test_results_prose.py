"""The published studies say what their data says: every number a study README quotes from its
results.csv / analysis summaries / data files is checked against them, and so are the paragraphs of
the top-level README and docs/ that quote a study (tests/results_prose.py describes the check comments)."""

from pathlib import Path

import pytest

from tests.results_prose import RESULTS, STUDIES, Study, check_document

ROOT = Path(__file__).resolve().parents[1]
QUOTING = ("README.md", "docs/experiments.md", "docs/models.md", "docs/analysis.md")


@pytest.mark.parametrize("name", STUDIES)
def test_study_readme_agrees_with_its_data(name):
    problems = check_document(RESULTS / name / "README.md", Study(name), strict=True)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", QUOTING)
def test_documents_quoting_the_studies_agree_with_their_data(name):
    problems = check_document(ROOT / name, None, strict=False)
    assert not problems, "\n".join(problems)
