"""One real sweep end to end: train.py in a subprocess, collect, learning curves, kernel analysis, skip on rerun."""

import csv
import json
import textwrap
from pathlib import Path

import pytest

from dog_jax import provenance
from dog_jax.experiments.__main__ import main
from tests.support import subprocesses

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_sweep_trains_collects_analyses_and_skips_on_rerun(tmp_path, capsys, monkeypatch, tiny_data_dir):
    data_dir = tiny_data_dir
    overrides = {
        "dataset": "dog_jax_demo/tiny", "data_dir": str(data_dir), "model_overrides.width": 16,
        "model_overrides.depth": 2, "model_overrides.kernel_size": 5, "batch_size": 16, "num_train_steps": 4,
        "log_every_steps": 2, "eval_every_steps": 2, "checkpoint_every_steps": 2, "cache_data": False,
    }
    sweep = tmp_path / "tiny.py"
    sweep.write_text(textwrap.dedent(f"""
        from dog_jax.experiments import Entry, Sweep
        SWEEP = Sweep(entries=[Entry("{ROOT}/configs/paper.py:table2_gamma0-0.5_onoff,demo", name="dog")],
                      seeds=(3,), overrides={overrides!r}, analysis=True, analysis_during=True)
    """))
    root = tmp_path / "root"
    # The runner starts train.py without a timeout of its own.
    with subprocesses.watchdog(monkeypatch, timeout=subprocesses.TIMEOUT_S):
        assert main([str(sweep), "--workdir-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "[1/1] dog/seed_3: starting" in out and "[1/1] dog/seed_3: done in" in out
    assert "step 4/4" in out  # the trainer's progress lines are echoed

    workdir = root / "dog" / "seed_3"
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["final_step"] == 4 and summary["config"]["seed"] == 3 and summary["config"]["dw_init"] == "dog"
    with open(root / "results.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"] == "done" and float(row["final_top1"]) == summary["final_eval"]["eval_top1"]
    assert row["experiment"] == "table2_gamma0-0.5_onoff" and row["paper_row_top1"] == "66.34"
    assert row["commit"] == provenance.code_label(summary["provenance"]) != "unrecorded"  # the run names its code
    assert row["impl"] == provenance.impl_label(summary["provenance"])
    assert "| `dog` | dog (table2_gamma0-0.5_onoff) | 1/1 |" in (root / "results.md").read_text()
    assert (root / "curves" / "dog.png").stat().st_size > 10_000

    # Kernel analysis: the trained checkpoint and the step-0 kernels, side by side.
    init = dict(__import__("numpy").load(workdir / "init_kernels.npz"))
    assert len(init) == 2 and all(k.shape == (5, 5, 1, 16) for k in init.values())
    assert all(abs(float(k.sum(axis=(0, 1)).max())) < 1e-5 for k in init.values())  # DoG kernels sum to 0
    table = (root / "analysis.md").read_text()
    assert "| `dog` | init | 1 × 32 |" in table and "| `dog` | trained | 1 × 32 |" in table
    trained = json.loads((root / "analysis" / "dog" / "summary.json").read_text())
    # Checkpoints named relative to the sweep's workdir root: no machine paths in results meant for docs/.
    assert [c["path"] for c in trained["checkpoints"]] == ["dog/seed_3/checkpoints/4", "dog/seed_3/init_kernels.npz"]
    # ... and the kept checkpoint between them (steps 2 and 4 are kept; 4 is the trained one), the null row
    # and the figure of the shares over training.
    assert "| `dog` | step 2 | 1 × 32 |" in table and "| `dog` | step 4 |" not in table
    assert "| `dog` | null (trained, pixels shuffled) | 1 × 32 |" in table
    # The emergence table: the trained kernels' centre–surround share (paper naming) and DoG-template share,
    # each beside its null (one seed: means without an interval).
    from dog_jax.experiments.kernel_report import checkpoint_shares

    shares, null = checkpoint_shares(trained)["dog/seed_3/checkpoints/4"]
    cells = [100 * (s["paper_excitatory"] + s["paper_inhibitory"]) for s in (shares, null)]
    cells += [100 * s["dog_templates"] for s in (shares, null)]
    assert "| `dog` | 1 | " + " | ".join(f"{c:.0f}" for c in cells) + " |" in table
    during = json.loads((root / "analysis" / "dog" / "during" / "summary.json").read_text())
    assert [c["path"] for c in during["checkpoints"]] == ["dog/seed_3/checkpoints/2"]
    assert (root / "analysis" / "trajectory.png").stat().st_size > 10_000

    published = tmp_path / "published"
    # --allow-dirty: this test's tree may hold uncommitted work (test_plan_run_collect.py tests the refusal).
    assert main([str(sweep), "--workdir-root", str(root), "--no-analysis", "--publish", str(published),
                 "--allow-dirty"]) == 0
    assert "dog/seed_3: finished earlier, skipped" in capsys.readouterr().out
    for name in ("analysis.md", "analysis/trajectory.png", "analysis/dog/during/summary.json", "commands.md"):
        assert (published / name).is_file(), name


def test_the_emergence_tables_intervals_are_t_intervals_over_seeds():
    from dog_jax.experiments.kernel_report import _interval_cell

    # Shares 0.3, 0.4, 0.5: mean 40 %, std 10 %, t(0.975, 2) = 4.303 -> half width 24.8 %.
    assert _interval_cell([0.3, 0.4, 0.5]) == "40 [15, 65]"
    assert _interval_cell([0.25]) == "25" and _interval_cell([]) == "—"
