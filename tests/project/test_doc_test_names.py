"""Every test a document names as ``tests/<path>.py::test_name`` exists, and every row of the fault
table in docs/reliability.md names at least one: a renamed or removed test cannot leave a guarantee
pointing at nothing."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_REFERENCE = re.compile(r"(tests/[\w/]+\.py)::(test_\w+)")


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_test_named_in_the_docs_exists():
    named, missing = 0, []
    for document in _documents():
        for file, name in _REFERENCE.findall(document.read_text()):
            named += 1
            path = ROOT / file
            if not path.is_file() or not re.search(rf"^(async )?def {name}\(", path.read_text(), re.MULTILINE):
                missing.append(f"{document.relative_to(ROOT)}: {file}::{name}")
    assert named >= 20, named  # the fault table alone names more
    assert not missing, "tests named in the docs that do not exist:\n" + "\n".join(missing)


def test_every_row_of_the_fault_table_names_a_test():
    text = (ROOT / "docs" / "reliability.md").read_text()
    section = text.split("## Faults at a glance", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| fault |")]
    faults = [row.split(" | ")[0].strip("| ") for row in rows]
    for needed in ("kill -9", "SIGTERM", "preemption notice", "damaged checkpoint", "N → M devices",
                   "non-finite loss", "bad input", "second launch", "stray writer", "full disk", "read-only workdir",
                   "vanished workdir", "permission refused", "write error in the middle of a checkpoint",
                   "storage server gone"):
        assert any(fault.startswith(needed) for fault in faults), (needed, faults)
    without = [row[:60] for row in rows if not _REFERENCE.search(row)]
    assert not without, f"fault table rows naming no test: {without}"
