"""Synthetic kernel sets with known labels: clustering names, template classes, DoG fit."""

import numpy as np
import pytest

from dog_jax.analysis import classify_kernels, cluster_kernels, fit_dog, minmax_normalize
from dog_jax.analysis.report import shuffle_pixels
from dog_jax.analysis.templates import dc_ratio, dog_templates, gaussian_blob, gaussian_derivative

K = 7


def _affine_noise(rng, kernels, noise=0.04, offset=0.15):
    """a·w + b + noise with a > 0; b and the noise are relative to each kernel's mean |w|."""
    n = len(kernels)
    scale = np.abs(kernels).reshape(n, -1).mean(1)[:, None, None]
    a = rng.uniform(0.5, 3.0, (n, 1, 1))
    b = rng.uniform(-offset, offset, (n, 1, 1)) * scale
    return a * (kernels + b + noise * scale * rng.standard_normal(kernels.shape))


def make_dogs(rng, n, on=True, k=K, gamma=(0.15, 0.5)):
    g = rng.uniform(*gamma, n)
    d = dog_templates((k, k), g)
    return _affine_noise(rng, d if on else -d), g


def make_blobs(rng, n, k=K):
    s = rng.uniform(0.6, 1.4, n)
    return _affine_noise(rng, np.stack([gaussian_blob((k, k), x) for x in s]), offset=0.0)


def make_derivatives(rng, n, order, k=K):
    out = [gaussian_derivative((k, k), rng.uniform(0.9, 1.6), rng.choice(np.arange(0, 360, 45)), order)
           for _ in range(n)]
    return _affine_noise(rng, np.stack(out))


def make_noise(rng, n, k=K):
    return rng.standard_normal((n, k, k))


def test_minmax_is_invariant_to_positive_affine_maps():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((20, 5, 5))
    z1, v1 = minmax_normalize(w)
    z2, _ = minmax_normalize(3.7 * w - 1.2)
    np.testing.assert_allclose(z1, z2, atol=1e-5)
    z3, _ = minmax_normalize(-w)
    np.testing.assert_allclose(z3, 1 - z1, atol=1e-5)
    _, valid = minmax_normalize(np.zeros((2, 3, 3)))
    assert v1.all() and not valid.any()


def test_on_off_dogs_and_noise_get_right_names_and_proportions():
    rng = np.random.default_rng(1)
    on, _ = make_dogs(rng, 300, on=True)
    off, _ = make_dogs(rng, 200, on=False)
    kernels = np.concatenate([on, off, make_noise(rng, 100)])
    truth = np.array(["excitatory-centre"] * 300 + ["inhibitory-centre"] * 200 + ["other"] * 100)
    perm = rng.permutation(len(kernels))
    result = cluster_kernels(kernels[perm], k=3, seed=0)
    assert sorted(result.names) == ["excitatory-centre", "inhibitory-centre", "other"]
    accuracy = np.mean(result.kernel_labels == truth[perm])
    assert accuracy > 0.95
    props = result.proportions()
    assert props["excitatory-centre"] == pytest.approx(0.5, abs=0.04)
    assert props["inhibitory-centre"] == pytest.approx(1 / 3, abs=0.04)
    assert props["other"] == pytest.approx(1 / 6, abs=0.04)


def test_names_do_not_depend_on_kernel_order_or_seed():
    rng = np.random.default_rng(2)
    on, _ = make_dogs(rng, 150)
    off, _ = make_dogs(rng, 150, on=False)
    kernels = np.concatenate([on, off, make_noise(rng, 150)])
    reference = cluster_kernels(kernels, k=3, seed=0).proportions()
    for seed in (1, 2):
        perm = np.random.default_rng(seed).permutation(len(kernels))
        props = cluster_kernels(kernels[perm], k=3, seed=seed).proportions()
        for name, p in reference.items():
            assert props[name] == pytest.approx(p, abs=0.02)


def test_gaussian_blobs_are_not_called_dog_and_do_not_push_dogs_into_other():
    rng = np.random.default_rng(3)
    on, _ = make_dogs(rng, 200)
    off, _ = make_dogs(rng, 200, on=False)
    blobs = make_blobs(rng, 200)
    kernels = np.concatenate([on, off, blobs, make_noise(rng, 200)])
    truth = np.array(["excitatory-centre"] * 200 + ["inhibitory-centre"] * 200 + ["gaussian-blob"] * 200
                     + ["other"] * 200)
    result = cluster_kernels(kernels, k=4, seed=0)
    assert sorted(result.names) == sorted(["excitatory-centre", "inhibitory-centre", "gaussian-blob", "other"])
    assert np.mean(result.kernel_labels == truth) > 0.9
    # Blob centroids have the largest contrast, which a contrast ranking would call "excitatory".
    blob_stats = result.stats[result.names.index("gaussian-blob")]
    exc_stats = result.stats[result.names.index("excitatory-centre")]
    assert blob_stats["contrast"] > exc_stats["contrast"]
    assert blob_stats["dc_median"] > 0.9 and exc_stats["dc_median"] < 0.3


def test_pure_noise_and_shuffled_dogs_have_no_centre_surround_clusters():
    rng = np.random.default_rng(4)
    result = cluster_kernels(make_noise(rng, 600), k=3, seed=0)
    assert result.names == ("other",) * 3
    on, _ = make_dogs(rng, 600)
    # Shuffling keeps every kernel's values but destroys the spatial pattern.
    shuffled = cluster_kernels(shuffle_pixels(on, 0), k=3, seed=0).proportions()
    assert shuffled["excitatory-centre"] < 0.5


def test_template_classifier_on_known_families():
    rng = np.random.default_rng(5)
    sets = {
        "dog_on": make_dogs(rng, 150)[0],
        "dog_off": make_dogs(rng, 150, on=False)[0],
        "gaussian": make_blobs(rng, 150),
        "derivative1": make_derivatives(rng, 150, 1),
        "derivative2": make_derivatives(rng, 150, 2),
        "unclassified": make_noise(rng, 150),
    }
    kernels = np.concatenate(list(sets.values()))
    truth = np.repeat(list(sets), 150)
    result = classify_kernels(kernels)
    for name in sets:
        acc = np.mean(result.classes[truth == name] == name)
        assert acc > 0.9, (name, acc)
    shares = result.shares()
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["unclassified"] == pytest.approx(1 / 6, abs=0.03)


def test_template_classifier_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        classify_kernels(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="min_correlation"):
        classify_kernels(np.zeros((2, 3, 3)), min_correlation=0)


@pytest.mark.parametrize("k", [7, 9])
def test_fit_dog_recovers_parameters(k):
    rng = np.random.default_rng(6)
    gammas = rng.uniform(0.2, 0.5, 40)
    on = rng.random(40) < 0.5
    amp = rng.uniform(0.2, 2.0, 40)
    off = rng.uniform(-0.1, 0.1, 40)
    d = dog_templates((k, k), gammas) * np.where(on, 1, -1)[:, None, None]
    kernels = amp[:, None, None] * d + off[:, None, None]
    fit = fit_dog(kernels)
    np.testing.assert_array_equal(fit.on_center, on)
    assert np.max(np.abs(fit.gamma - gammas)) < 0.02
    np.testing.assert_allclose(fit.amplitude, amp, rtol=0.05)
    np.testing.assert_allclose(fit.offset, off, atol=1e-6)
    assert np.all(fit.r2 > 0.99)


def test_fit_dog_noise_fits_poorly_and_dc_ratio_separates_blobs():
    rng = np.random.default_rng(7)
    fit = fit_dog(make_noise(rng, 200))
    assert np.median(fit.r2) < 0.5
    assert np.median(dc_ratio(make_dogs(rng, 100)[0])) < 0.2
    assert np.median(dc_ratio(make_blobs(rng, 100))) > 0.9


def test_a_noise_cluster_with_an_extreme_middle_pixel_is_not_centre_surround():
    from dog_jax.analysis.cluster import name_cluster

    rng = np.random.default_rng(8)
    noise = rng.standard_normal((200, 3, 3))
    # Centroid k-means found on 524,288 Gaussian-noise 3x3 kernels: the middle pixel stands out
    # (contrast 0.36) but the border stays at the noise's mean level 0.5.
    selected = np.array([[0.457, 0.541, 0.493], [0.489, 0.838, 0.403], [0.488, 0.475, 0.471]])
    assert name_cluster(selected, noise, reference_level=0.5)[0] == "other"
    # MobileNetV2's centroids (reference level 0.452) keep their names with the same members' signs.
    on = np.array([[0.193, 0.388, 0.196], [0.329, 0.967, 0.380], [0.176, 0.368, 0.198]])
    dog_like = make_dogs(rng, 50, k=3)[0]
    assert name_cluster(on, dog_like, reference_level=0.452)[0] == "excitatory-centre"
    assert name_cluster(1 - on, -dog_like, reference_level=0.548)[0] == "inhibitory-centre"
    assert name_cluster(on, np.abs(dog_like), reference_level=0.452)[0] == "gaussian-blob"


def test_all_families_together_oriented_bars_are_not_centre_surround():
    from dog_jax.analysis.cluster import anisotropy

    rng = np.random.default_rng(9)
    sets = {"excitatory-centre": make_dogs(rng, 200)[0], "inhibitory-centre": make_dogs(rng, 200, on=False)[0],
            "gaussian-blob": make_blobs(rng, 200), "d1": make_derivatives(rng, 200, 1),
            "d2": make_derivatives(rng, 200, 2), "noise": make_noise(rng, 200)}
    kernels = np.concatenate(list(sets.values()))
    truth = np.repeat(list(sets), 200)
    labels = cluster_kernels(kernels, k=6, seed=0).kernel_labels
    assert np.mean(labels[truth == "excitatory-centre"] == "excitatory-centre") > 0.95
    assert np.mean(labels[truth == "inhibitory-centre"] == "inhibitory-centre") > 0.95
    # Bars of all orientations average to a centre-dipped, Laplacian-like centroid; each is oriented.
    for family in ("d1", "d2", "noise"):
        assert np.mean(labels[truth == family] == "other") > 0.95, family
    assert np.mean(labels[truth == "gaussian-blob"] == "gaussian-blob") > 0.6
    assert np.median(anisotropy(sets["excitatory-centre"])) < 0.1
    assert np.median(anisotropy(sets["d2"])) > 0.9
