"""Smoke test of benchmarks/accelerator_check.py on CPU with tiny sizes: the report is written,
has every requested section with numbers, and a failing section is reported without losing the rest."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import accelerator_check, depthwise  # noqa: E402

TINY = ["--tiny", "--impls", "shift", "--models", "convmixer_512_12", "--no-torch"]


def test_tiny_report_has_every_section(tmp_path):
    out = tmp_path / "report.md"
    accelerator_check.main(TINY + ["--out", str(out), "--sections", "exactness", "depthwise", "train"])
    report = out.read_text()
    assert "- device: " in report and "JAX platform cpu" in report
    assert "## Depthwise exactness at the models' shapes" in report
    exactness = report.split("## Depthwise exactness at the models' shapes")[1].split("##")[0]
    assert exactness.count("| ok |") == 4, exactness  # 2 shapes x (auto, shift)
    assert "| shift |" in report and "| xla |" in report and "bfloat16" in report
    assert "| convmixer_512_12 | dog_jax (depthwise impl auto) |" in report
    assert "failed" not in report.lower() and "**error**" not in report


def test_a_failing_part_is_reported_and_the_rest_still_runs(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated depthwise failure")

    monkeypatch.setattr(depthwise, "benchmark_shape", broken)
    monkeypatch.setattr(
        accelerator_check,
        "section_exactness_on_model_shapes",
        lambda args: (_ for _ in ()).throw(ValueError("simulated exactness failure")),
    )
    out = tmp_path / "report.md"
    accelerator_check.main(TINY + ["--out", str(out), "--sections", "exactness", "depthwise"])
    report = out.read_text()
    assert "**This section failed:**" in report and "simulated exactness failure" in report
    assert report.count("RuntimeError: simulated depthwise failure") == 4  # 2 shapes x 2 dtypes
    assert "## Depthwise speed: every impl vs PyTorch" in report


def test_out_is_required():
    with pytest.raises(SystemExit):
        accelerator_check.main(["--tiny"])
