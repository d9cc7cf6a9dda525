"""An orbax checkpoint written by a short real ``train.py`` run is read and analysed; the console of both."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from dog_jax.analysis import extract_depthwise_kernels, fit_dog
from tests.support import subprocesses
from tests.support.console import third_party_info_lines

REPO = Path(__file__).resolve().parents[2]
# As users run them: without the suite's TF_USE_LEGACY_KERAS (tests/conftest.py; train.py sets it itself).
_USER_ENV = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}


@pytest.mark.slow
def test_train_py_checkpoint_is_read(tmp_path):
    workdir = tmp_path / "run"
    # One step of a 1-block, 8-channel ConvMixer with the DoG init on the built-in demo dataset (its
    # small variant, generated into this test's directory). The one-cycle schedule starts at learning
    # rate 0, so the saved kernels are still exact DoGs.
    cmd = [sys.executable, "train.py", "--config=configs/convmixer.py:demo,dw_init=dog",
           f"--workdir={workdir}", "--config.dataset=dog_jax_demo/tiny", f"--config.data_dir={tmp_path / 'tfds'}",
           "--config.num_train_steps=1", "--config.batch_size=8",
           "--config.model_overrides.width=8", "--config.model_overrides.depth=1"]
    proc = subprocesses.run(cmd, cwd=REPO, env=_USER_ENV, timeout=subprocesses.TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The default console: dog_jax's lines, no other library's INFO (orbax's checkpointing, TensorFlow's notices).
    assert "Done: step 1" in proc.stderr and not third_party_info_lines(proc.stderr), proc.stderr[-3000:]

    messages = []
    layers = extract_depthwise_kernels(workdir, progress=messages.append)  # the run directory itself
    assert [layer.name for layer in layers] == ["state/params/blocks/0/dw/kernel"]
    assert layers[0].source_shape == (7, 7, 1, 8) and layers[0].layout == "HWIO"
    assert any("optimiser-state" in m for m in messages)
    fit = fit_dog(layers[0].kernels)
    assert np.all(fit.r2 > 0.99)
    assert np.all((fit.gamma > 0) & (fit.gamma <= 0.5 + 0.01))

    out = tmp_path / "analysis"
    proc = subprocesses.run([sys.executable, "-m", "dog_jax.analysis", str(workdir), "--out", str(out), "--no-figures"],
                            cwd=REPO, env=_USER_ENV, timeout=subprocesses.TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "depthwise 7x7: 8 kernels" in proc.stdout and not third_party_info_lines(proc.stderr), proc.stderr
    assert (out / "summary.json").exists() and (out / "clusters.csv").exists()
