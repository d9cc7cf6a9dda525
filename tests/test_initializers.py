"""Tests of the DoG initializer against an independent float64 reference, its properties, sampling,
drop-in use in Flax NNX and Linen, and its errors."""

import math
from pathlib import Path

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dog_jax import initializers as dog_init
from dog_jax.initializers import dog, dog_kernel, get_initializer, he_normal, torch_default, trunc_normal_02


def reference_dog(kh: int, kw: int, gamma: float) -> np.ndarray:
    """The paper's kernel in float64, straight from Eq. 2-3 and a 2x2 linear solve.

    E is scaled by exp(-max log E) before the solve (a scales inversely, so the kernel is unchanged);
    that keeps small-gamma cases finite. The degenerate-case rules (empty centre -> nearest pixels;
    empty surround -> farthest pixels) are the documented definitions.
    """
    gamma = min(max(gamma, 1e-3), 1 - 1e-3)
    s = math.sqrt((1 - gamma**2) / -math.log(gamma))
    sigma_h, sigma_w = kh / 4 * s, kw / 4 * s
    y = np.arange(kh) - (kh - 1) / 2
    x = np.arange(kw) - (kw - 1) / 2
    q = (y[:, None] / sigma_h) ** 2 + (x[None, :] / sigma_w) ** 2
    log_e = -2 * math.log(gamma) - q / (2 * gamma**2)
    log_i = -q / 2
    centre = log_e > log_i
    if not centre.any():
        centre = q <= q.min()
    if centre.all():
        centre = q < q.max()
    e = np.exp(log_e - log_e.max())
    i = np.exp(log_i)
    system = np.array([[e[centre].sum(), -i[centre].sum()], [e[~centre].sum(), -i[~centre].sum()]])
    a, b = np.linalg.solve(system, [0.5, -0.5])
    return a * e - b * i


def tie_free_gammas(k: int) -> list[float]:
    """The tested gamma grid, minus values where the zero-crossing radius gamma*k/2 hits a pixel distance
    exactly (there float32 and float64 may legitimately put that pixel on different sides)."""
    grid = [1e-3, 2 / k - 1e-3, 2 / k + 1e-3, 0.1, 0.25, 0.33, 0.5, 0.7, 0.9]
    return [g for g in grid if 0 < g < 1]


@pytest.mark.parametrize("k", [3, 5, 7, 8, 9, 11, 31])
def test_matches_float64_reference(k):
    for gamma in tie_free_gammas(k):
        ours = np.asarray(dog_kernel(k, gamma))
        ref = reference_dog(k, k, gamma)
        assert ours.dtype == np.float32 and ours.shape == (k, k)
        np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0, err_msg=f"k={k} gamma={gamma}")


@pytest.mark.parametrize("kh,kw", [(3, 7), (9, 5), (2, 3), (1, 5)])
def test_rectangular_matches_reference(kh, kw):
    for gamma in (0.05, 0.3, 0.5, 0.77):
        np.testing.assert_allclose(dog_kernel((kh, kw), gamma), reference_dog(kh, kw, gamma), atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [3, 5, 7, 8, 9, 31])
def test_zero_sum_and_centre_sign(k):
    for gamma in np.linspace(0.001, 0.999, 37):
        kernel = np.asarray(dog_kernel(k, float(gamma)), np.float64)
        assert np.isfinite(kernel).all()
        assert abs(kernel.sum()) < 1e-5
        c = (k - 1) / 2
        centre_value = kernel[int(math.floor(c)), int(math.floor(c))]
        assert centre_value > 0 and centre_value == pytest.approx(kernel.max())
        off = np.asarray(dog_kernel(k, float(gamma), on_center=False))
        np.testing.assert_array_equal(off, -kernel.astype(np.float32))


def test_positive_mass_is_half_where_the_positive_set_is_unchanged():
    checked = 0
    for k in (5, 7, 9, 11):
        for gamma in np.linspace(0.01, 0.95, 60):
            kernel = np.asarray(dog_kernel(k, float(gamma)), np.float64)
            s = math.sqrt((1 - gamma**2) / -math.log(gamma))
            y = np.arange(k) - (k - 1) / 2
            q = (y[:, None] ** 2 + y[None, :] ** 2) / (k / 4 * s) ** 2
            centre = -2 * math.log(gamma) - q / (2 * gamma**2) > -q / 2
            if centre.any() and (~centre).any() and np.array_equal(kernel > 0, centre):
                assert kernel[kernel > 0].sum() == pytest.approx(0.5, abs=1e-5)
                assert kernel[kernel < 0].sum() == pytest.approx(-0.5, abs=1e-5)
                checked += 1
    assert checked > 150  # the property holds for the large majority of gammas


def half_mass_table(n: int = 20_000) -> list[tuple[tuple[float, float], int, float, float, float]]:
    """The ±0.5 table of docs/initializer.md, measured: per γ range and k, on n kernels drawn as dog()
    draws them (γ ~ U(range), key 0): (range, k, share of kernels whose positive mass is 0.5 ± 1e-3,
    largest |positive mass − 0.5|, largest |sum|)."""
    rows = []
    for lo, hi in ((0.0, 0.5), (0.0, 1.0), (0.5, 1.0)):
        gammas = jax.random.uniform(jax.random.key(0), (n,), jnp.float32, lo, hi)
        for k in (3, 5, 7, 9):
            w = np.asarray(dog_init.signed_kernels(gammas, jnp.ones(n), k, k), np.float64).reshape(n, -1)
            deviation = np.abs(np.where(w > 0, w, 0.0).sum(axis=1) - 0.5)
            rows.append(((lo, hi), k, float(np.mean(deviation <= 1e-3)), float(deviation.max()),
                         float(np.abs(w.sum(axis=1)).max())))
    return rows


def _documented_half_mass_rows() -> dict[tuple[tuple[float, float], int], tuple[float, float]]:
    """Rows of the table between the half-mass markers in docs/initializer.md: share (%) and bound."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "initializer.md").read_text()
    block = text.split("<!-- half-mass table -->")[1]
    rows = {}
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        lo, hi = (float(x) for x in cells[0].strip("()").split(","))
        rows[((lo, hi), int(cells[1]))] = (float(cells[2].rstrip(" %")) / 100, float(cells[3]))
    return rows


def test_half_mass_table_holds_for_all_sampled_kernels():
    """Every sampled kernel sums to 0; its positive mass is within the documented bound of 0.5, and the
    documented share of exactly-±0.5 kernels is the measured one (to 1 percentage point)."""
    documented = _documented_half_mass_rows()
    measured = half_mass_table()
    assert len(documented) == len(measured) == 12
    for gamma_range, k, share, max_deviation, max_sum in measured:
        doc_share, doc_bound = documented[(gamma_range, k)]
        assert max_sum < 1e-5, (gamma_range, k)
        assert max_deviation <= doc_bound, (gamma_range, k, max_deviation)
        assert doc_bound - max_deviation < 0.01, (gamma_range, k, "the documented bound is loose")
        assert share == pytest.approx(doc_share, abs=0.01), (gamma_range, k, share)
    # The paper's range (0, 0.5) keeps the positive mass within 0.035 of 0.5; U(0, 1) does not.
    assert max(m[3] for m in measured if m[0] == (0.0, 0.5)) < 0.035
    assert min(m[2] for m in measured if m[0] == (0.0, 1.0)) < 0.65


@pytest.mark.parametrize("k", [9, 15, 31])
def test_zero_crossing_radius_is_gamma_k_over_2(k):
    """E = I exactly at radius gamma*k/2. The solved amplitudes (a != b) move the sign change of a*E - b*I:
    by < 0.6 px over the paper's range gamma <= 0.5; inwards for larger gamma, where much of the surround
    falls outside the kernel (measured: -1.1 px at k=9, -3.8 px at k=31 for gamma = 0.95)."""
    c = (k - 1) // 2
    for gamma in np.linspace(2 / k + 0.01, 0.95, 30):
        row = np.asarray(dog_kernel(k, float(gamma)))[c, c:]  # from the centre to the right edge
        first_negative = int(np.argmax(row < 0))
        assert (row[:first_negative] > 0).all() and (row[first_negative:] < 0).all()
        crossing = first_negative - 1 + row[first_negative - 1] / (row[first_negative - 1] - row[first_negative])
        if gamma <= 0.5:
            assert abs(crossing - gamma * k / 2) < 0.6, (gamma, crossing)
        else:
            assert gamma * k / 2 - 0.15 * k < crossing < gamma * k / 2 + 0.1, (gamma, crossing)


def test_centre_grows_with_gamma():
    sizes = [int((np.asarray(dog_kernel(9, g)) > 0).sum()) for g in (0.2, 0.4, 0.6, 0.8)]
    assert sizes == sorted(sizes) and sizes[0] == 1 and sizes[-1] > sizes[1]


def test_reproduces_paper_fig3_values():
    # Values of Fig. 3 (9x9, on-centre); the derivation is in docs/initializer.md (The formulas).
    expected = {0.2: (0.500, 0.51), 0.4: (0.151, 0.215), 0.6: (0.068, 0.155), 0.8: (0.048, 0.146)}
    for gamma, (peak, l2) in expected.items():
        kernel = np.asarray(dog_kernel(9, gamma))
        assert kernel[4, 4] == pytest.approx(peak, abs=1e-3)
        assert np.linalg.norm(kernel) == pytest.approx(l2, abs=5e-3)


def test_degenerate_cases_are_finite_and_normalised():
    # Even kernel, tiny gamma: the centre is the four central pixels with +0.5 in total.
    kernel = np.asarray(dog_kernel(8, 1e-3))
    np.testing.assert_allclose(kernel[3:5, 3:5], 0.125, atol=1e-6)
    assert kernel.sum() == pytest.approx(0.0, abs=1e-6)
    # k=3 with gamma near 1: no pixel is negative in E - I, so the corners become the surround.
    kernel = np.asarray(dog_kernel(3, 1.0))
    assert np.isfinite(kernel).all() and kernel[0, 0] < 0 and kernel[1, 1] > 0
    assert kernel.sum() == pytest.approx(0.0, abs=1e-6)
    # gamma = 0 is clamped to 1e-3.
    np.testing.assert_array_equal(dog_kernel(7, 0.0), dog_kernel(7, 1e-3))


def recover_gammas(kernels: np.ndarray, k: int) -> np.ndarray:
    """Recovers each (k, k, 1, n) kernel's gamma by nearest match in a bank of dog_kernel(k, gamma)."""
    grid = np.linspace(0.0, 1.0, 2001)
    bank = np.asarray(dog_init.signed_kernels(jnp.asarray(grid), jnp.ones(len(grid)), k, k)).reshape(len(grid), -1)
    flat = kernels.reshape(k * k, -1).T
    flat = flat * np.sign(flat[:, (k * k) // 2])[:, None]  # off-centre kernels are negated on-centre ones
    errors = np.abs(flat[:, None, :] - bank[None]).max(axis=2)
    assert errors.min(axis=1).max() < 2e-3  # every sampled kernel is a paper kernel for some gamma
    return grid[errors.argmin(axis=1)]


def test_sampling_gamma_range_and_on_fraction():
    init = dog(gamma_range=(0.2, 0.4), on_fraction=0.3, balanced=False)
    kernels = np.asarray(init(jax.random.key(0), (9, 9, 1, 4000)))
    assert (kernels[4, 4, 0] > 0).mean() == pytest.approx(0.3, abs=0.03)
    gammas = recover_gammas(kernels[..., :400], 9)
    assert gammas.min() >= 0.2 - 2e-3 and gammas.max() <= 0.4 + 2e-3
    assert gammas.mean() == pytest.approx(0.3, abs=0.015)
    assert np.histogram(gammas, bins=4, range=(0.2, 0.4))[0].min() > 60  # roughly uniform


def test_default_range_is_the_papers():
    kernels = np.asarray(dog()(jax.random.key(1), (7, 7, 1, 300)))
    gammas = recover_gammas(kernels, 7)
    assert gammas.max() <= 0.5 + 2e-3 and gammas.mean() == pytest.approx(0.25, abs=0.03)
    assert int((kernels[3, 3, 0] > 0).sum()) == 150  # the paper's split: exactly half on-centre


@pytest.mark.parametrize("n", [96, 97, 512])
def test_default_is_exactly_half_on_centre_per_layer(n):
    """The paper assigns "half of the kernels" on- and half off-centre: every call (one layer) does."""
    for seed in range(3):
        kernels = np.asarray(dog()(jax.random.key(seed), (7, 7, 1, n)))
        assert int((kernels[3, 3, 0] > 0).sum()) == round(n / 2)
        assert int((kernels[3, 3, 0] < 0).sum()) == n - round(n / 2)


def test_coin_flip_is_available_and_varies():
    counts = {int((np.asarray(dog(balanced=False)(jax.random.key(s), (5, 5, 1, 64)))[2, 2, 0] > 0).sum())
              for s in range(8)}
    assert len(counts) > 1  # independent flips: the on-centre count changes with the key


def test_balanced_is_exact():
    for n, frac in [(64, 0.5), (101, 0.3), (10, 1.0), (10, 0.0)]:
        kernels = np.asarray(dog(on_fraction=frac, balanced=True)(jax.random.key(n), (5, 5, 1, n)))
        assert int((kernels[2, 2] > 0).sum()) == round(frac * n)
    # Positions are random: two keys give different arrangements.
    a = np.asarray(dog(balanced=True)(jax.random.key(0), (5, 5, 1, 64)))[2, 2] > 0
    b = np.asarray(dog(balanced=True)(jax.random.key(1), (5, 5, 1, 64)))[2, 2] > 0
    assert not np.array_equal(a, b)


def test_same_key_same_kernels_and_jit():
    init = dog()
    a = init(jax.random.key(3), (9, 9, 1, 32))
    b = jax.jit(init, static_argnums=(1,))(jax.random.key(3), (9, 9, 1, 32))
    np.testing.assert_array_equal(a, b)
    c = init(jax.random.key(4), (9, 9, 1, 32))
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_dtypes(dtype):
    kernels = dog()(jax.random.key(0), (7, 7, 1, 16), dtype)
    assert kernels.dtype == dtype
    np.testing.assert_allclose(np.asarray(kernels, np.float32),
                               np.asarray(dog()(jax.random.key(0), (7, 7, 1, 16))), atol=4e-3)


def test_channel_multiplier_kernels_are_independent():
    kernels = np.asarray(dog()(jax.random.key(0), (5, 5, 1, 12)))
    flat = kernels.reshape(25, 12).T
    assert len({tuple(np.round(k, 6)) for k in flat}) == 12


def test_he_norm():
    kernels = np.asarray(dog(norm="he")(jax.random.key(0), (9, 9, 1, 50)))
    np.testing.assert_allclose(np.linalg.norm(kernels.reshape(81, 50), axis=0), math.sqrt(2), rtol=1e-5)
    regular = np.asarray(dog(norm="he", depthwise_only=False)(jax.random.key(0), (3, 3, 4, 5)))
    np.testing.assert_allclose(np.linalg.norm(regular.reshape(9, 20), axis=0), math.sqrt(0.5), rtol=1e-5)
    assert np.abs(regular.sum(axis=(0, 1))).max() < 1e-5


def test_nnx_conv_drop_in():
    c, k = 16, 7
    conv = nnx.Conv(c, c, (k, k), feature_group_count=c, kernel_init=dog(), rngs=nnx.Rngs(0))
    kernel = np.asarray(conv.kernel[...])
    assert kernel.shape == (k, k, 1, c)
    assert np.abs(kernel.sum(axis=(0, 1))).max() < 1e-5
    assert (np.abs(kernel[3, 3]) == np.abs(kernel).max(axis=(0, 1, 2))).all()
    assert conv(jnp.ones((1, 12, 12, c))).shape == (1, 12, 12, c)


def test_linen_conv_drop_in_under_jit():
    c, k = 8, 9
    conv = linen.Conv(c, (k, k), feature_group_count=c, kernel_init=dog())
    params = jax.jit(conv.init)(jax.random.key(0), jnp.ones((1, 16, 16, c)))["params"]
    kernel = np.asarray(params["kernel"])
    assert kernel.shape == (k, k, 1, c)
    assert np.abs(kernel.sum(axis=(0, 1))).max() < 1e-5
    assert (np.abs(kernel[4, 4]) == np.abs(kernel).max(axis=(0, 1, 2))).all()


def test_bf16_nnx_params():
    conv = nnx.Conv(8, 8, (5, 5), feature_group_count=8, kernel_init=dog(), param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert conv.kernel[...].dtype == jnp.bfloat16


def test_baselines():
    key = jax.random.key(0)
    shape = (9, 9, 1, 20000)
    tn = np.asarray(trunc_normal_02()(key, shape))
    assert tn.std() == pytest.approx(0.02, rel=0.01)  # jax.nn.initializers.truncated_normal(0.02) gives 0.0176
    he = np.asarray(he_normal()(key, shape))
    assert he.std() == pytest.approx(math.sqrt(2 / 81), rel=0.01)
    assert np.abs(he).max() > 2.5 * math.sqrt(2 / 81)  # untruncated, as torch.nn.init.kaiming_normal_
    td = np.asarray(torch_default()(key, shape))
    assert np.abs(td).max() <= 1 / 9 and np.abs(td).max() > 0.99 / 9  # U(±1/sqrt(fan_in))


def test_get_initializer():
    assert get_initializer("kaiming")(jax.random.key(0), (3, 3, 1, 4)).shape == (3, 3, 1, 4)
    custom = jax.nn.initializers.zeros
    assert get_initializer(custom) is custom
    kernels = np.asarray(get_initializer("dog")(jax.random.key(0), (5, 5, 1, 4)))
    assert np.abs(kernels.sum(axis=(0, 1))).max() < 1e-5
    with pytest.raises(ValueError, match="Unknown initializer 'dogg'"):
        get_initializer("dogg")


@pytest.mark.parametrize("kwargs,message", [
    (dict(gamma_range=(-0.1, 0.5)), "gamma_range must satisfy"),
    (dict(gamma_range=(0.2, 1.5)), "gamma_range must satisfy"),
    (dict(gamma_range=(0.5, 0.2)), "gamma_range must satisfy"),
    (dict(gamma_range=0.3), "gamma_range must be a"),
    (dict(on_fraction=1.2), "on_fraction must lie in"),
    (dict(on_fraction=-0.1), "on_fraction must lie in"),
    (dict(norm="l2"), "Unknown norm 'l2'"),
])
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        dog(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("shape,message", [
    ((9, 9, 16), "4-D HWIO"),
    ((0, 3, 1, 4), "at least 1"),
    ((1, 1, 1, 4), "at least 3 pixels along one axis"),
    ((2, 2, 1, 4), "at least 3 pixels along one axis"),
    ((3, 3, 4, 4), "defined for depthwise convolutions: use feature_group_count=in_features"),
])
def test_shape_errors(shape, message):
    with pytest.raises(ValueError, match=message) as info:
        dog()(jax.random.key(0), shape)
    assert "\n" not in str(info.value)


def test_dog_kernel_errors():
    with pytest.raises(ValueError, match="gamma must lie in"):
        dog_kernel(7, 1.5)
    with pytest.raises(ValueError, match="kernel_size must be an int"):
        dog_kernel("7", 0.3)


def test_generation_is_vectorised():
    """10,000 kernels are built by one compiled call whose program does not grow with their number
    (no loop over kernels; the speed check itself is in benchmarks)."""

    def program(n):
        return jax.make_jaxpr(lambda g, s: dog_init.signed_kernels(g, s, 9, 9))(jnp.full((n,), 0.3), jnp.ones((n,)))

    small, large = program(10), program(10000)
    assert [eqn.primitive.name for eqn in large.eqns] == ["jit"]  # one jitted call
    inner = [[eqn.primitive.name for eqn in jaxpr.eqns[0].params["jaxpr"].jaxpr.eqns] for jaxpr in (small, large)]
    assert inner[0] == inner[1] and not {"while", "scan"} & set(inner[1])
    kernels = dog_init.signed_kernels(jnp.full((10000,), 0.3), jnp.ones((10000,)), 9, 9)
    assert kernels.shape == (10000, 9, 9)
    np.testing.assert_allclose(kernels[123], dog_kernel(9, 0.3), atol=1e-7)
