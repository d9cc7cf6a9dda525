"""configs/sweeps/*.py: every sweep file resolves to configs that validate, and the basis sweep plans
its free and basis runs."""

import importlib.util
import os
from pathlib import Path

from dog_jax.experiments.sweep import load_sweep, plan_runs
from dog_jax.train.run_spec import check
from tests.support.configs import ROOT, load

SWEEPS = Path(ROOT, "configs", "sweeps")


def test_every_sweep_file_resolves_to_valid_configs():
    sweeps = sorted(SWEEPS.glob("*.py"))
    assert {"demo_bias.py", "fashion_mnist.py", "demo_repro.py"} <= {path.name for path in sweeps}
    for path in sweeps:
        for entry in load_sweep(path).entries:
            file, _, arg = entry.config.partition(":")
            config = load(os.path.basename(file)[:-3], arg or None)
            for key, value in entry.overrides.items():
                config[key] = value
            check(config, device_count=1)


def test_basis_sweep_plans_free_and_basis_runs_whose_configs_validate(tmp_path):
    path = SWEEPS / "demo_basis.py"
    runs = plan_runs(load_sweep(path), path, tmp_path)
    assert len(runs) == 24
    seen = set()
    for run in runs[::3]:  # one seed of each entry
        spec = importlib.util.spec_from_file_location("cfg", run.config_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config(run.config_arg)
        for key, value in run.overrides.items():
            config[key] = value
        model = check(config, device_count=1)
        assert config.dataset == "dog_jax_demo"
        seen.add((config.model, config.dw_init, config.dw_param))
        assert model.overrides.get("dw_param", "free") == model.architecture.dw_param == config.dw_param
    assert len(seen) == 8
