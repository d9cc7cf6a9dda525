"""dog_jax.experiments: sweep files, run planning, --only / --shard, skip / resume, collecting.

Training is stubbed (dependency injection of ``train_fn``); tests/experiments/test_end_to_end.py runs
one real sweep through train.py.
"""

import csv
import json
import os
import textwrap
from pathlib import Path

import pytest

from dog_jax.experiments import (SweepError, collect, load_sweep, mean_std, parse_shard, plan_runs,
                                 run_status, run_sweep, select_runs)
from dog_jax.experiments.__main__ import main
from dog_jax.experiments.sweep import format_flag_value, run_cpu_time

ROOT = Path(__file__).resolve().parents[2]


def write_sweep(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "my_sweep.py"
    path.write_text("from dog_jax.experiments import Entry, Sweep\n" + textwrap.dedent(body))
    return path


SIMPLE = f"""
SWEEP = Sweep(entries=[Entry("{ROOT}/configs/paper.py:table2_kaiming-reference,demo", name="kaiming"),
                       Entry("{ROOT}/configs/paper.py:table2_gamma0-0.5_onoff,demo", {{"num_epochs": 2.0}})],
              seeds=(0, 1, 2), overrides={{"num_epochs": 1.0, "dog.gamma_range": (0.0, 0.5)}})
"""


def fake_record(commit: str = "a" * 40, *, dirty: bool = False, depthwise: str = "native") -> dict:
    """A provenance record as the trainer writes it (dog_jax.provenance.record)."""
    return {"code": {"commit": commit, "dirty": dirty}, "packages": {"jax": "0.10.2"},
            "native_kernels": {"available": depthwise == "native", "status": "loaded"},
            "auto_choices": {"depthwise": {depthwise: 4}}, "devices": {"platform": "cpu", "count": 1}}


def fake_summary(workdir: str, top1: float, *, interrupted: bool = False, history=None, record=None) -> None:
    os.makedirs(workdir, exist_ok=True)
    summary = {"final_step": 2 if interrupted else 4, "total_steps": 4, "interrupted": interrupted,
               "final_eval": {"eval_top1": top1, "eval_top5": 1.0, "eval_loss": 1.0},
               "best_eval": {"eval_top1": top1, "step": 4}, "wall_time_s": 60.0, "cpu_time_s": 90.0,
               "num_params": 10,
               "train_history": history or [{"step": 2, "loss": 2.0}, {"step": 4, "loss": 1.5}],
               "eval_history": [{"step": 4, "eval_top1": top1}], "config": {"dw_init": "dog"},
               **({"provenance": record} if record else {})}
    Path(workdir, "summary.json").write_text(json.dumps(summary))


def test_plan_labels_workdirs_overrides(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, SIMPLE))
    runs = plan_runs(sweep, tmp_path / "my_sweep.py", tmp_path / "root")
    assert [r.key for r in runs] == [
        "kaiming/seed_0", "kaiming/seed_1", "kaiming/seed_2", "paper.table2_gamma0-0.5_onoff.demo/seed_0",
        "paper.table2_gamma0-0.5_onoff.demo/seed_1", "paper.table2_gamma0-0.5_onoff.demo/seed_2"]
    assert runs[4].workdir == str(tmp_path / "root" / "paper.table2_gamma0-0.5_onoff.demo" / "seed_1")
    assert runs[0].overrides["num_epochs"] == 1.0 and runs[4].overrides["num_epochs"] == 2.0  # entry wins
    flags = runs[4].flags()
    assert flags[0] == f"--config={ROOT}/configs/paper.py:table2_gamma0-0.5_onoff,demo"
    assert "--config.seed=1" in flags and "--config.dog.gamma_range=(0.0, 0.5)" in flags
    assert format_flag_value(True) == "true" and format_flag_value((3,)) == "(3,)"


def test_relative_config_paths_resolve_against_the_repository(tmp_path, monkeypatch):
    sweeps = ROOT / "configs" / "sweeps"
    monkeypatch.chdir(tmp_path)  # not the repository: the sweep file's repository is used.
    runs = plan_runs(load_sweep(sweeps / "demo_repro.py"), sweeps / "demo_repro.py", tmp_path)
    assert len(runs) == 18 and runs[0].config_path == str(ROOT / "configs" / "paper.py")
    assert {r.label for r in runs} == {f"{m}_{i}" for m in ("convmixer", "convnext")
                                       for i in ("kaiming-he", "reference", "dog")}


@pytest.mark.parametrize("body, message", [
    ("X = 1\n", "must define SWEEP"),
    ("SWEEP = Sweep(entries=[Entry('a.py'), Entry('b/a.py')])\n", "share the label 'a'"),
    ("SWEEP = Sweep(entries=[Entry('a.py')], seeds=(1, 1))\n", "duplicates"),
    ("SWEEP = Sweep(entries=[Entry('configs/nowhere.py:x')])\n", "Config file 'configs/nowhere.py'"),
    ("SWEEP = Sweep(entries=[Entry('a.py')], comparisons=[('a', 'b')])\n", "comparisons name 'b'"),
])
def test_bad_sweep_files(tmp_path, body, message):
    path = write_sweep(tmp_path, body)
    with pytest.raises(SweepError, match=message):
        plan_runs(load_sweep(path), path, tmp_path)


def test_only_and_shards_partition_the_runs(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, SIMPLE))
    runs = plan_runs(sweep, tmp_path / "my_sweep.py", tmp_path)
    assert [r.key for r in select_runs(runs, only="kaiming/seed_[01]")] == ["kaiming/seed_0", "kaiming/seed_1"]
    shards = [select_runs(runs, shard=(i, 4)) for i in range(4)]
    keys = [r.key for shard in shards for r in shard]
    assert sorted(keys) == sorted(r.key for r in runs) and len(set(keys)) == len(runs)
    assert [r.index for r in shards[1]] == [1, 5]
    assert parse_shard(" 2/3 ") == (2, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(SweepError, match="must be i/n"):
            parse_shard(bad)
    with pytest.raises(SweepError, match="not a valid regular expression"):
        select_runs(runs, only="(")


def test_run_skips_finished_resumes_partial_and_survives_failures(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, SIMPLE))
    runs = plan_runs(sweep, tmp_path / "my_sweep.py", tmp_path / "root")
    fake_summary(runs[0].workdir, 0.5)                       # finished earlier
    fake_summary(runs[1].workdir, 0.1, interrupted=True)     # stopped: resume from its checkpoint
    os.makedirs(os.path.join(runs[1].workdir, "checkpoints", "2"))
    assert [run_status(r.workdir) for r in runs[:3]] == ["done", "partial", "pending"]
    calls = []

    def train(run, log):
        calls.append(run.key)
        log.write("training\n")
        if run.seed == 2 and run.label == "kaiming":
            log.write("error: boom\n")
            return 1
        fake_summary(run.workdir, 0.6 + 0.1 * run.seed)
        return 0

    out = tmp_path / "console.txt"
    with open(out, "w") as console:
        result = run_sweep(runs, train, out=console)
    text = out.read_text()
    assert calls == [r.key for r in runs[1:]]
    assert "kaiming/seed_0: finished earlier, skipped" in text and "kaiming/seed_1: resuming" in text
    assert "kaiming/seed_2: FAILED" in text and "error: boom" in text
    assert (len(result["done"]), len(result["skipped"]), len(result["failed"])) == (4, 1, 1)
    assert "==== " in Path(runs[1].workdir, "train.log").read_text()
    calls.clear()
    with open(out, "w") as console:
        run_sweep(runs, train, out=console)
    assert calls == ["kaiming/seed_2"]  # only the failed one is retried


def test_collect_table_csv_and_curves(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, SIMPLE))
    runs = plan_runs(sweep, tmp_path / "my_sweep.py", tmp_path / "root")
    for run, top1 in zip(runs, (0.5, 0.7, None, 0.8, 0.8, 0.8)):
        if top1 is not None:
            fake_summary(run.workdir, top1)
    result = collect(runs, sweep, tmp_path / "root", title="T", say=lambda _: None)
    with open(tmp_path / "root" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[2]["status"] == "pending" and rows[0]["experiment"] == "table2_kaiming-reference"
    # No machine paths: the workdir relative to results.csv's directory, the config to the repository.
    assert rows[0]["workdir"] == os.path.join("kaiming", "seed_0")
    assert rows[0]["config"] == "configs/paper.py:table2_kaiming-reference,demo"
    assert rows[3]["paper_row_top1"] == "66.34" and rows[3]["overrides"] == (
        '{"dog.gamma_range": [0.0, 0.5], "num_epochs": 2.0}')
    table = (tmp_path / "root" / "results.md").read_text()
    assert "| `kaiming` | reference | 2/3 | 60.00 ± 14.14 | 60.00 ± 14.14 | 50.0, 70.0 | 1.0 | 64.00 |" in table
    assert "| 3/3 | 80.00 ± 0.00 |" in table and "5 of 6 runs finished" in table
    figures = {p.name for p in result["written"] if p.suffix == ".png"}
    assert figures == {"kaiming.png", "paper.table2_gamma0-0.5_onoff.demo.png", "all_configs.png"}
    assert mean_std([1.0]) [0] == 1.0 and mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))


def test_paired_differences_by_seed(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, SIMPLE.replace(
        "seeds=(0, 1, 2),", "seeds=(0, 1, 2), comparisons=[('paper.table2_gamma0-0.5_onoff.demo', 'kaiming')],")))
    runs = plan_runs(sweep, tmp_path / "my_sweep.py", tmp_path / "root")
    # kaiming: seeds 0, 1 finished; DoG: all three. Seed 2 has no pair and is left out.
    for run, top1 in zip(runs, (0.5, 0.7, None, 0.56, 0.73, 0.9)):
        if top1 is not None:
            fake_summary(run.workdir, top1)
    collect(runs, sweep, tmp_path / "root", title="T", curves=False, say=lambda _: None)
    table = (tmp_path / "root" / "results.md").read_text()
    # Differences +6 and +3 points: mean 4.5, std 2.12, t(0.975, 1) = 12.706 -> half width 19.06. With the
    # same mean and std, 4 seeds would exclude 0 (t(0.975, 3) = 3.182: half width 3.37), 3 not (5.27).
    assert ("| `paper.table2_gamma0-0.5_onoff.demo` | `kaiming` | 2 | +6.0, +3.0 | +4.50 ± 2.12 | "
            "[-14.56, +23.56] | 2 of 2 | 4 |") in table


@pytest.mark.parametrize("mean, std", [(4.5, 2.12), (0.93, 0.39), (-0.18, 0.63), (0.05, 1.0)])
def test_seeds_to_exclude_zero_is_the_fewest_whose_interval_excludes_it(mean, std):
    from scipy import stats

    from dog_jax.experiments.collect import seeds_to_exclude_zero

    def excludes_zero(n):
        return stats.t.ppf(0.975, n - 1) * std / n ** 0.5 < abs(mean)

    n = seeds_to_exclude_zero(mean, std)
    if n is None:
        assert not excludes_zero(1000)
    else:
        assert excludes_zero(n) and (n == 2 or not excludes_zero(n - 1))


PAIRED = SIMPLE.replace("seeds=(0, 1, 2),", "seeds=(0, 1, 2), comparisons=[('paper.table2_gamma0-0.5_onoff.demo', "
                        "'kaiming')], gap_comparisons=[(('paper.table2_gamma0-0.5_onoff.demo', 'kaiming'), "
                        "('kaiming', 'paper.table2_gamma0-0.5_onoff.demo'))],")


@pytest.mark.parametrize("records, warning", [
    ([fake_record()] * 6, None),
    ([fake_record()] * 5 + [fake_record("b" * 40)], "different commits (aaaaaaaaaa, bbbbbbbbbb)"),
    ([fake_record()] * 5 + [fake_record(depthwise="shift")], "different implementations (native; depthwise "
                                                             "native×4 | no native; depthwise shift×4)"),
    ([fake_record()] * 5 + [fake_record(dirty=True)], "different commits (aaaaaaaaaa, aaaaaaaaaa+dirty) and "
                                                      "uncommitted code"),
    ([fake_record()] * 5 + [None], "1 of its 6 runs record no code version"),
])
def test_results_name_the_commit_and_warn_when_a_comparison_mixes_code(tmp_path, records, warning):
    sweep = load_sweep(write_sweep(tmp_path, PAIRED))
    runs = plan_runs(sweep, tmp_path / "my_sweep.py", tmp_path / "root")
    for run, top1, record in zip(runs, (0.5, 0.7, 0.6, 0.56, 0.73, 0.7), records):
        fake_summary(run.workdir, top1, record=record)
    collect(runs, sweep, tmp_path / "root", title="T", curves=False, say=lambda _: None)
    with open(tmp_path / "root" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    expected = ["unrecorded" if r is None else r["code"]["commit"][:10] + ("+dirty" if r["code"]["dirty"] else "")
                for r in records]
    assert [row["commit"] for row in rows] == expected
    text = (tmp_path / "root" / "results.md").read_text()
    assert f"| 1.0 | 64.00 | {', '.join(dict.fromkeys(expected[:3]))} |" in text  # the commit column
    lines = [line for line in text.splitlines() if line.startswith("> ⚠")]
    if warning is None:
        assert lines == []
    else:  # one line under the paired table and one under the gap table: both use the odd run
        assert len(lines) == 2 and all(warning in line for line in lines)
        assert lines[0].startswith("> ⚠ `paper.table2_gamma0-0.5_onoff.demo` − `kaiming`")


def test_gap_comparison_is_welchs_interval(tmp_path):
    from scipy import stats

    from dog_jax.experiments.collect import welch_interval

    a, b = [15.8, 12.3, 11.15], [5.94, 7.44, 7.13]
    diff, low, high, _ = welch_interval(a, b)
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval()
    assert diff == pytest.approx(sum(a) / 3 - sum(b) / 3)
    assert (low, high) == (pytest.approx(expected.low), pytest.approx(expected.high))
    sweep = load_sweep(write_sweep(tmp_path, PAIRED))
    runs = plan_runs(sweep, tmp_path / "my_sweep.py", tmp_path / "root")
    for run, top1 in zip(runs, (0.5, 0.7, 0.6, 0.56, 0.73, 0.7)):
        fake_summary(run.workdir, top1, record=fake_record())
    collect(runs, sweep, tmp_path / "root", title="T", curves=False, say=lambda _: None)
    gaps = [6.0, 3.0, 10.0]  # DoG minus kaiming per seed, and the reverse gap is its negative
    diff, low, high, df = welch_interval(gaps, [-g for g in gaps])
    assert (f"| `paper.table2_gamma0-0.5_onoff.demo` − `kaiming` | `kaiming` − `paper.table2_gamma0-0.5_onoff.demo` | "
            f"+6.33 ± 3.51 | -6.33 ± 3.51 | {diff:+.2f} | [{low:+.2f}, {high:+.2f}] | {df:.1f} |"
            ) in (tmp_path / "root" / "results.md").read_text()


def test_publish_refuses_uncommitted_code(tmp_path, monkeypatch, capsys):
    from dog_jax import provenance

    path = write_sweep(tmp_path, SIMPLE)
    root, published = tmp_path / "root", tmp_path / "published"
    fake_summary(str(root / "kaiming" / "seed_0"), 0.9, record=fake_record())
    args = [str(path), "--collect", "--no-curves", "--workdir-root", str(root), "--publish", str(published)]
    monkeypatch.setattr(provenance, "code_version", lambda: {"commit": "c" * 40, "dirty": True})
    assert main(args) == 2 and not published.exists()
    assert "--publish: the working tree has uncommitted changes" in capsys.readouterr().err
    monkeypatch.setattr(provenance, "code_version", lambda: {"package_version": "0.1.0"})
    assert main(args) == 2 and "is not imported from a git checkout" in capsys.readouterr().err
    monkeypatch.setattr(provenance, "code_version", lambda: {"commit": "c" * 40, "dirty": False})
    fake_summary(str(root / "kaiming" / "seed_1"), 0.9, record=fake_record(dirty=True))
    assert main(args) == 2 and not published.exists()
    assert "1 run(s) were made by uncommitted code (e.g. kaiming/seed_1" in capsys.readouterr().err
    assert main(args + ["--allow-dirty"]) == 0
    commands = (published / "commands.md").read_text()
    assert "Runs made by: `aaaaaaaaaa`, `aaaaaaaaaa+dirty`" in commands and "Published by: `cccccccccc`" in commands


def test_publish_copies_only_its_sweeps_outputs(tmp_path, monkeypatch):
    from dog_jax import provenance

    monkeypatch.setattr(provenance, "code_version", lambda: {"commit": "c" * 40, "dirty": False})
    path = write_sweep(tmp_path, SIMPLE)
    root, published = tmp_path / "root", tmp_path / "published"
    fake_summary(str(root / "kaiming" / "seed_0"), 0.9, record=fake_record())
    # Another sweep sharing the root left its outputs there; an earlier publication left a stale file.
    for stray in ("curves/other.png", "analysis/other/summary.json", "analysis/kaiming/during/summary.json",
                  "analysis/trajectory.png"):
        (root / stray).parent.mkdir(parents=True, exist_ok=True)
        (root / stray).write_text("x")
    (root / "analysis" / "kaiming" / "summary.json").write_text("{}")
    (published / "analysis" / "gone").mkdir(parents=True)
    assert main([str(path), "--collect", "--no-curves", "--workdir-root", str(root), "--publish", str(published)]) == 0
    files = sorted(str(p.relative_to(published)) for p in published.rglob("*") if p.is_file())
    assert files == ["analysis/kaiming/summary.json", "commands.md", "results.csv", "results.md"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    path = write_sweep(tmp_path, SIMPLE)
    assert main([str(path), "--shard", "4/4"]) == 2
    assert main([str(path), "--only", "nothing-matches"]) == 2
    assert main([str(tmp_path / "missing.py")]) == 2
    bad = tmp_path / "bad_override.py"
    bad.write_text(f"from dog_jax.experiments import Entry, Sweep\n"
                   f"SWEEP = Sweep(entries=[Entry('{ROOT}/configs/paper.py:table2_kaiming-reference,demo', "
                   f"{{'optimizer.lr': 1.0}})])\n")
    assert main([str(bad), "--dry-run", "--workdir-root", str(tmp_path / "r")]) == 2
    typo = tmp_path / "typo.py"
    typo.write_text(f"from dog_jax.experiments import Entry, Sweep\n"
                    f"SWEEP = Sweep(entries=[Entry('{ROOT}/configs/paper.py:table2_kaiminq,demo')])\n")
    assert main([str(typo), "--dry-run", "--workdir-root", str(tmp_path / "r")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 5
    assert "--shard '4/4' must be i/n" in errors[0] and "no runs selected (of 6)" in errors[1]
    assert "does not exist" in errors[2] and "override 'optimizer.lr' is not a config field" in errors[3]
    assert "Unknown experiment 'table2_kaiminq'" in errors[4]


def test_cli_dry_run_and_collect(tmp_path, capsys, monkeypatch):
    from dog_jax import provenance

    monkeypatch.setattr(provenance, "code_version", lambda: {"commit": "c" * 40, "dirty": False})  # a clean tree
    path = write_sweep(tmp_path, SIMPLE)
    root = tmp_path / "root"
    assert main([str(path), "--dry-run", "--workdir-root", str(root), "--shard", "0/2"]) == 0
    out = capsys.readouterr().out
    assert "3 of 6 runs selected" in out and "[pending] kaiming/seed_0" in out
    config = f"{ROOT}/configs/paper.py:table2_kaiming-reference,demo"
    assert f"train.py --config={config} --workdir={root}/kaiming/seed_0" in out
    assert not root.exists()  # a dry run writes nothing
    fake_summary(str(root / "kaiming" / "seed_0"), 0.9)
    published = tmp_path / "docs_results"
    assert main([str(path), "--collect", "--no-curves", "--workdir-root", str(root), "--publish", str(published)]) == 0
    assert "1 of 6 runs finished" in (root / "results.md").read_text()
    assert (published / "results.md").read_text() == (root / "results.md").read_text()
    commands = (published / "commands.md").read_text()
    assert ("1 of 6 runs have a summary; their trainer wall times add up to 1m00s (without process start-up and "
            "the kernel analysis); their processes used 1m30s of CPU time") in commands
    assert "python train.py --config=configs/paper.py:table2_kaiming-reference,demo --workdir=$ROOT/kaiming/seed_0" \
        in commands and "--workdir-root $ROOT" in commands
    assert str(root) not in commands and str(ROOT) not in commands


def test_results_paths_are_relative_inside_the_base_and_as_given_outside(tmp_path):
    from dog_jax._paths import relative_to

    assert relative_to(tmp_path / "root" / "a" / "seed_0", tmp_path / "root") == os.path.join("a", "seed_0")
    assert relative_to(tmp_path / "elsewhere", tmp_path / "root") == str(tmp_path / "elsewhere")
    assert relative_to("relative/ckpt", ".") == os.path.join("relative", "ckpt")


def test_bucket_workdirs_keep_their_url(tmp_path):
    """A gs:// workdir root: workdirs, train.py flags, results.csv paths and commands.md keep ``gs://``
    (pure string logic; reading and writing a real bucket is tests/storage's)."""
    from dog_jax._paths import relative_to, resolved
    from dog_jax.experiments.collect import csv_text
    from dog_jax.experiments.publish import _relative

    root = "gs://bucket/sweeps/demo"
    sweep = load_sweep(write_sweep(tmp_path, SIMPLE))
    runs = plan_runs(sweep, tmp_path / "my_sweep.py", root)
    assert runs[0].workdir == "gs://bucket/sweeps/demo/kaiming/seed_0"
    assert f"--workdir={root}/kaiming/seed_0" in runs[0].flags()
    assert resolved(root) == root
    assert relative_to(runs[0].workdir, root) == "kaiming/seed_0"
    assert relative_to(root, root + "/") == "."
    assert relative_to("gs://bucket/elsewhere/seed_0", root) == "gs://bucket/elsewhere/seed_0"
    assert relative_to(str(tmp_path / "x"), root) == str(tmp_path / "x")
    assert relative_to(root, tmp_path) == root
    text = csv_text([{"label": "kaiming", "seed": 0, "workdir": runs[0].workdir}])
    assert next(csv.DictReader(text.splitlines()))["workdir"] == "gs://bucket/sweeps/demo/kaiming/seed_0"
    command = f"python train.py --workdir={runs[0].workdir}"
    assert _relative(command, ROOT / "train.py", root) == "python train.py --workdir=$ROOT/kaiming/seed_0"


def test_bucket_log_keeps_earlier_content_and_uploads_whole(tmp_path):
    """The train.log of a bucket workdir (objects cannot be appended to), here on a local file: the
    earlier starts' lines stay, the first flush uploads at once, later ones at most every_s apart."""
    from dog_jax.experiments.runner import _tail, _UploadedLog

    path = tmp_path / "train.log"
    path.write_text("first start\n")
    log = _UploadedLog(path, every_s=3600.0)
    log.write("==== second start\n")
    log.flush()
    assert path.read_text() == "first start\n==== second start\n"
    log.write("step 1\n")
    log.flush()  # within every_s of the last upload: kept in memory
    assert path.read_text() == "first start\n==== second start\n"
    log.close()
    assert path.read_text() == "first start\n==== second start\nstep 1\n"
    assert _tail(path, 2) == ["==== second start", "step 1"]
    assert _tail(tmp_path / "missing.log", 2) == []


def test_a_runs_cpu_time_is_its_total_over_starts_where_recorded():
    assert run_cpu_time({"cpu_time_s": 90.0, "cpu_time_total_s": 150.0}) == 150.0
    assert run_cpu_time({"cpu_time_s": 90.0, "cpu_time_total_s": None}) == 90.0  # a checkpoint from before the record
    assert run_cpu_time({"cpu_time_s": 90.0}) == 90.0  # a summary from before the record
    assert run_cpu_time({}) is None
