"""Policy over MP weights and the Gaussian maths it uses, against scipy, numpy and the spec's numbers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from toperl_jax import gaussian
from toperl_jax.policy import GaussianPolicy, cholesky_to_vector, vector_to_cholesky


def random_factor(rng, k, batch=()):
    A = rng.normal(size=batch + (k, k))
    return np.linalg.cholesky(A @ np.swapaxes(A, -1, -2) / k + 0.3 * np.eye(k))


# ----------------------------------------------------------------------------------------------- gaussian.py


def test_x_minus_log1p_accuracy():
    x = np.concatenate([-np.logspace(-8, np.log10(0.99), 200), np.logspace(-8, 1, 200)])

    def reference(v):  # float64: alternating series for |v| < 0.1, direct form elsewhere
        if abs(v) < 0.1:
            return sum((-1) ** n * v**n / n for n in range(2, 40))
        return v - math.log1p(v)

    ref = np.array([reference(v) for v in x])
    out32 = np.asarray(gaussian.x_minus_log1p(jnp.asarray(x, jnp.float32)), np.float64)
    rel32 = np.abs(out32 - ref) / ref
    assert rel32.max() < 2e-6, rel32.max()  # the naive float32 form errs by up to 100% near 0
    with jax.enable_x64(True):
        out64 = np.asarray(gaussian.x_minus_log1p(jnp.asarray(x)))
    assert (np.abs(out64 - ref) / ref).max() < 1e-12
    grad = jax.grad(lambda v: jnp.sum(gaussian.x_minus_log1p(v)))(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(grad), x / (1 + x), rtol=1e-4, atol=1e-7)  # d/dx = x/(1+x)


def test_entropy_and_log_prob_match_scipy():
    rng = np.random.default_rng(0)
    k = 9
    L = random_factor(rng, k)
    mean = rng.normal(size=k)
    dist = scipy.stats.multivariate_normal(mean, L @ L.T)
    x = rng.normal(size=(5, k))
    with jax.enable_x64(True):
        assert float(gaussian.entropy(jnp.asarray(L))) == pytest.approx(dist.entropy(), rel=1e-12)
        np.testing.assert_allclose(np.asarray(gaussian.log_prob(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(L))),
                                   dist.logpdf(x), rtol=1e-12)


def test_kl_matches_closed_form_and_broadcasts():
    rng = np.random.default_rng(1)
    k, batch = 6, 4
    Lp, Lq = random_factor(rng, k, (batch,)), random_factor(rng, k)  # contextual p, non-contextual q
    mp, mq = rng.normal(size=(batch, k)), rng.normal(size=(batch, k))
    with jax.enable_x64(True):
        mean_part, cov_part = gaussian.kl(*map(jnp.asarray, (mp, Lp, mq, Lq)))
    Sq_inv = np.linalg.inv(Lq @ Lq.T)
    for b in range(batch):
        Sp = Lp[b] @ Lp[b].T
        expect_cov = 0.5 * (np.trace(Sq_inv @ Sp) - k + np.linalg.slogdet(Lq @ Lq.T)[1] - np.linalg.slogdet(Sp)[1])
        d = mp[b] - mq[b]
        assert float(mean_part[b]) == pytest.approx(0.5 * d @ Sq_inv @ d, rel=1e-12)
        assert float(cov_part[b]) == pytest.approx(expect_cov, rel=1e-10)


def test_cov_kl_float32_is_accurate_near_the_trust_region():
    """The whitened log1p form keeps ~1e-6 relative accuracy where tr − k would lose ~1e-4 (k = 63)."""
    rng = np.random.default_rng(2)
    k = 63
    Lq = random_factor(rng, k)
    Lp = Lq @ (np.eye(k) + 2e-3 * np.tril(rng.normal(size=(k, k))))  # KL ≈ 5e-4, the box-pushing bound
    Sp, Sq = Lp @ Lp.T, Lq @ Lq.T
    ref = 0.5 * (np.trace(np.linalg.solve(Sq, Sp)) - k + np.linalg.slogdet(Sq)[1] - np.linalg.slogdet(Sp)[1])
    out = float(gaussian.cov_kl(jnp.asarray(Lp, jnp.float32), jnp.asarray(Lq, jnp.float32)))
    assert abs(out - ref) / ref < 2e-5


def test_sampling_moments():
    rng = np.random.default_rng(3)
    k, n = 5, 200_000
    L = random_factor(rng, k).astype(np.float32)
    mean = rng.normal(size=k).astype(np.float32)
    w = np.asarray(gaussian.sample(jax.random.key(0), jnp.asarray(mean), jnp.asarray(L), (n,)), np.float64)
    assert w.shape == (n, k)
    S = L.astype(np.float64) @ L.T
    se = np.sqrt(np.diag(S) / n)
    assert np.all(np.abs(w.mean(0) - mean) < 5 * se)
    np.testing.assert_allclose(np.cov(w.T), S, atol=5 * np.sqrt(2 / n) * np.diag(S).max())


def test_sampling_gradients_are_reparameterised():
    """d/dμ E[w] = I and d/dL of w = μ + Lξ is ξᵀ per sample (checked through a linear functional)."""
    k = 4
    mean, L = jnp.ones(k), jnp.eye(k)
    a = jnp.arange(1.0, k + 1)
    g_mean, g_L = jax.grad(lambda m, l: jnp.sum(a * gaussian.sample(jax.random.key(1), m, l)), argnums=(0, 1))(mean, L)
    xi = gaussian.sample(jax.random.key(1), jnp.zeros(k), jnp.eye(k))
    np.testing.assert_allclose(np.asarray(g_mean), np.asarray(a))
    np.testing.assert_allclose(np.asarray(g_L), np.outer(a, xi), rtol=1e-6)


# ----------------------------------------------------------------------------------------------- policy.py


def test_vector_to_cholesky_layout_and_roundtrip():
    k, min_std = 4, 1e-5
    v = jnp.arange(1.0, 1 + k + k * (k - 1) // 2)
    L = np.asarray(vector_to_cholesky(v, k, min_std))
    softplus = np.log1p(np.exp(np.arange(1.0, k + 1)))
    np.testing.assert_allclose(np.diag(L), softplus + min_std, rtol=1e-6)
    # row-major strictly-lower order, as torch.tril_indices(k, k, -1): (1,0), (2,0), (2,1), (3,0), …
    expected_order = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    for n, (i, j) in enumerate(expected_order):
        assert L[i, j] == k + n + 1
    assert np.all(np.triu(L, 1) == 0)
    np.testing.assert_allclose(np.asarray(cholesky_to_vector(jnp.asarray(L), min_std)), np.asarray(v), rtol=1e-5)
    diag_only = np.asarray(vector_to_cholesky(v[:k], k, min_std, std_only=True))
    np.testing.assert_allclose(diag_only, np.diag(softplus + min_std), rtol=1e-6)


@pytest.mark.parametrize("k, min_std, h0", [(63, 1e-5, 88.7606), (36, 1e-5, 50.7203), (12, 1e-4, 16.9079)])
def test_initial_policy_matches_upstream(k, min_std, h0):
    """Initial diagonal 0.99 + min_std and the initial entropies H₀ quoted by the spec (box, MW, hopper)."""
    obs_dim = 10
    policy = GaussianPolicy(action_dim=k, hidden_sizes=(64, 64), min_std=min_std)
    params = policy.init(jax.random.key(0), jnp.zeros((obs_dim,)))
    mean, L = policy.apply(params, jnp.ones((3, obs_dim)))
    assert mean.shape == (3, k) and L.shape == (k, k)  # non-contextual: one shared factor
    np.testing.assert_allclose(np.asarray(L), (0.99 + min_std) * np.eye(k), rtol=1e-6)
    assert float(gaussian.entropy(L)) == pytest.approx(h0, abs=1e-4)


def test_mean_network_initialisation():
    policy = GaussianPolicy(action_dim=12, hidden_sizes=(64, 32))
    params = policy.init(jax.random.key(1), jnp.zeros((20,)))["params"]["mean_net"]
    kernels = [params[f"Dense_{i}"]["kernel"] for i in range(3)]
    gains = [math.sqrt(2.0), math.sqrt(2.0), 0.01]
    for W, gain in zip(kernels, gains):
        W = np.asarray(W)
        small = min(W.shape)
        gram = W.T @ W if W.shape[0] >= W.shape[1] else W @ W.T  # semi-orthogonal: gain² I on the short side
        np.testing.assert_allclose(gram, gain**2 * np.eye(small), atol=1e-5 * max(1.0, gain**2))
    for i in range(3):
        assert np.all(np.asarray(params[f"Dense_{i}"]["bias"]) == 0)


def test_mean_network_is_leaky_relu_mlp():
    """Recompute the forward pass in numpy from the parameters (leaky slope 0.01, linear output)."""
    policy = GaussianPolicy(action_dim=5, hidden_sizes=(8, 8))
    params = policy.init(jax.random.key(2), jnp.zeros((3,)))
    p = jax.tree.map(lambda a: np.asarray(a) + 0.1, params["params"]["mean_net"])  # non-zero biases too
    obs = np.random.default_rng(4).normal(size=(6, 3)).astype(np.float32)
    h = obs
    for i in range(2):
        h = h @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"]
        h = np.where(h > 0, h, 0.01 * h)
    expected = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
    full = {"params": {**params["params"], "mean_net": jax.tree.map(jnp.asarray, p)}}
    mean, _ = policy.apply(full, jnp.asarray(obs))
    np.testing.assert_allclose(np.asarray(mean), expected, rtol=1e-5, atol=1e-6)


def test_contextual_covariance_and_jit_vmap_grad():
    k = 6
    policy = GaussianPolicy(action_dim=k, hidden_sizes=(16,), contextual_cov=True, cov_hidden_sizes=(16,))
    params = policy.init(jax.random.key(3), jnp.zeros((4,)))
    obs = jax.random.normal(jax.random.key(4), (7, 4))
    mean, L = jax.jit(policy.apply)(params, obs)
    assert mean.shape == (7, k) and L.shape == (7, k, k)
    assert np.all(np.asarray(jnp.diagonal(L, axis1=-2, axis2=-1)) > 0)
    assert np.all(np.triu(np.asarray(L), 1) == 0)
    assert not np.allclose(np.asarray(L[0]), np.asarray(L[1]))  # depends on the state
    m_v, L_v = jax.vmap(policy.apply, in_axes=(None, 0))(params, obs)
    np.testing.assert_allclose(np.asarray(L_v), np.asarray(L), rtol=1e-6)

    def loss(params):
        mean, L = policy.apply(params, obs)
        return -jnp.mean(gaussian.log_prob(jnp.ones(k), mean, L))

    grads = jax.grad(loss)(params)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert any(np.abs(np.asarray(g)).sum() > 0 for g in jax.tree.leaves(grads["params"]["cov_net"]))
