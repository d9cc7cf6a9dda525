"""The naming rule's calibration claims (docs/analysis.md) and the two namings side by side."""

import json

import numpy as np
import pytest

from dog_jax.analysis import cluster_kernels
from dog_jax.analysis.calibration import calibrate, make_family, rates
from dog_jax.analysis.cluster import DEFAULT_MAX_ANISOTROPY, anisotropy, name_cluster, paper_name


@pytest.fixture(scope="module")
def clusters():
    # A reduced grid of docs/figures/analysis/calibrate_naming.py: the smallest and the largest size,
    # the realistic noise levels, the two scenarios that test the anisotropy gate.
    return calibrate(kernel_sizes=(3, 9), noise_levels=(0.25, 0.5), scenarios=("dogs+noise", "dogs+bars"),
                     seeds=(0,), n_per_family=200, max_anisotropies=(0.5, DEFAULT_MAX_ANISOTROPY))


def test_strict_rule_names_every_dog_cluster_and_no_bar_or_noise_cluster(clusters):
    r = rates(clusters, "strict", DEFAULT_MAX_ANISOTROPY)
    assert r["dog_named"] == 1.0
    assert r["false_centre_surround"] == 0.0


def test_paper_rule_names_every_dog_cluster_but_also_a_bar_cluster(clusters):
    r = rates(clusters, "paper")
    assert r["dog_named"] == 1.0
    # Bars at all orientations average to a centre-dipped centroid: the centroid alone calls them inhibitory.
    bars = [c for c in clusters if c.truth == "bar"]
    assert bars and all(c.paper_name == "inhibitory-centre" for c in bars)
    assert all(c.strict_names[DEFAULT_MAX_ANISOTROPY] == "other" for c in bars)


def test_old_gate_rejected_noisy_dog_clusters(clusters):
    # The gate 0.5 used before the calibration turned real DoG clusters into "other" at noise 0.5.
    noisy = [c for c in clusters if c.noise == 0.5]
    assert rates(noisy, "strict", 0.5)["dog_named"] < 1.0
    assert rates(noisy, "strict", DEFAULT_MAX_ANISOTROPY)["dog_named"] == 1.0


def test_centre_surround_cluster_with_moderate_anisotropy_keeps_its_name():
    """The trained demo ConvMixer case: contrast ~ +0.85, members' median anisotropy 0.5-0.6."""
    rng = np.random.default_rng(0)
    members = make_family(rng, "dog_on", 300, 7, 1.0)
    median = float(np.median(anisotropy(members)))
    assert 0.45 < median < DEFAULT_MAX_ANISOTROPY
    result = cluster_kernels(np.concatenate([members, make_family(rng, "dog_off", 300, 7, 1.0)]), 2, seed=0)
    assert sorted(result.names) == ["excitatory-centre", "inhibitory-centre"]
    assert sorted(result.paper_names) == ["excitatory-centre", "inhibitory-centre"]


def test_antagonistic_share_is_none_when_not_computed():
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((100, 5, 5))
    flat = np.full((5, 5), 0.5, np.float32)
    assert paper_name(flat) == "other"
    name, stats = name_cluster(flat, noise)
    assert name == "other" and stats["antagonistic_share"] is None and stats["paper_name"] == "other"


def test_summary_reports_both_namings_and_nulls(tmp_path):
    from dog_jax.analysis.__main__ import main

    rng = np.random.default_rng(2)
    bars = make_family(rng, "bar", 200, 7, 0.25)
    kernels = np.concatenate([make_family(rng, "dog_on", 200, 7, 0.25),
                              make_family(rng, "dog_off", 200, 7, 0.25), bars]).astype(np.float32)
    np.savez(tmp_path / "k.npz", **{"blocks/0/dw/kernel": kernels.transpose(1, 2, 0)[:, :, None, :]})
    assert main([str(tmp_path / "k.npz"), "--out", str(tmp_path / "out"), "--no-figures", "-q"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    group = summary["checkpoints"][0]["groups"][0]
    assert set(group["paper_proportions"]) == {"excitatory-centre", "inhibitory-centre", "other"}
    assert sum(group["paper_counts"].values()) == sum(group["counts"].values()) == 600
    names = [(c["paper_name"], c["name"]) for c in group["clusters"]]
    assert ("inhibitory-centre", "other") in names  # the bar cluster: paper name vs strict name
    for c in group["clusters"]:
        assert (c["antagonistic_share"] is None) == (c["paper_name"] == "other")
    assert "paper_counts" in group["layers"][0]
    header = (tmp_path / "out" / "clusters.csv").read_text().splitlines()[0]
    assert "n_paper_excitatory-centre" in header
