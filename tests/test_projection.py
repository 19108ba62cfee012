"""KL trust-region projection: the 12 properties of trpl_kl_projection.md §7.

References are independent of the implementation under test: numpy float64 full-matrix KLs, the upstream
C++ backward written out in numpy (§2), scipy's L-BFGS-B on the dual, closed forms and finite differences.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

from toperl_jax import gaussian
from toperl_jax import projection as P

EPS_COV = 5e-4
EPS_MEAN = 0.05


# ----------------------------------------------------------------------------------------------- references


def np_cov_kl(Lp, Lq):
    """KL(N(0, Σp) ‖ N(0, Σq)) with full matrices, float64."""
    Sp, Sq = Lp @ Lp.T, Lq @ Lq.T
    k = Sp.shape[0]
    return 0.5 * (np.trace(np.linalg.solve(Sq, Sp)) - k + np.linalg.slogdet(Sq)[1] - np.linalg.slogdet(Sp)[1])


def whitened_kl64(Lp, Lq):
    """KL(N(0, Σp) ‖ N(0, Σq)) through B = Lq⁻¹Lp in float64 (accurate also for ill-conditioned Lq)."""
    B = scipy.linalg.solve_triangular(np.asarray(Lq, np.float64), np.asarray(Lp, np.float64), lower=True)
    return 0.5 * (np.sum(B * B) - B.shape[0]) - np.sum(np.log(np.diag(B)))


def np_mean_kl(m, mo, Lo):
    diff = np.linalg.solve(Lo, m - mo)
    return 0.5 * diff @ diff


def random_old(rng, k):
    A = rng.normal(size=(k, k))
    return np.linalg.cholesky(A @ A.T / k + 0.5 * np.eye(k))


def make_pair(rng, k, ratio=None, noise=0.05, eps=EPS_COV):
    """(L, Lₒ) float64 with L = Lₒ·B. ratio=None: B = I + noise·tril(N); else KLc(L‖Lₒ) = ratio·ε."""
    Lo = random_old(rng, k)
    N, d = np.tril(rng.normal(size=(k, k)), -1), rng.normal(size=k)

    def B(t):
        return np.diag(np.exp(t * d)) + t * N

    if ratio is None:
        return Lo @ B(noise), Lo

    def kl(t):
        b = B(t)
        return 0.5 * (np.sum(b * b) - k - 2 * np.sum(np.log(np.diag(b))))

    lo, hi = 0.0, 1e-3
    while kl(hi) < ratio * eps:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if kl(mid) < ratio * eps else (lo, mid)
    return Lo @ B(0.5 * (lo + hi)), Lo


def cpp_backward(L, Lo, eta, G):
    """∂⟨G, Σ̃⟩/∂L by the upstream C++ backward (spec §2 steps 1–8), float64."""
    S = L @ L.T
    Pm, Po = np.linalg.inv(S), np.linalg.inv(Lo @ Lo.T)
    e = 1.0 + eta
    St = np.linalg.inv((eta * Po + Pm) / e)
    GQ = -St @ G @ St
    D = Po - Pm
    M = St - St @ Po @ St
    deta_dP = -e * M / np.trace(M @ D)
    g_eta = np.trace(GQ @ D) / e**2
    GP = g_eta * deta_dP + GQ / e
    GS = -Pm @ GP @ Pm
    return np.tril((GS + GS.T) @ L)


def dual(eta, L, Lo, eps):
    """g(η) = η ε − ½ η log|Σₒ| + ½ (η + 1) log|Σ̃(η)|, float64."""
    Pm, Po = np.linalg.inv(L @ L.T), np.linalg.inv(Lo @ Lo.T)
    logdet_old = 2 * np.sum(np.log(np.diag(Lo)))
    logdet_proj = -np.linalg.slogdet((eta * Po + Pm) / (eta + 1))[1]
    return eta * eps - 0.5 * eta * logdet_old + 0.5 * (eta + 1) * logdet_proj


# ----------------------------------------------------------------------------------------------- jitted API

project_cov = jax.jit(P.project_cov, static_argnames=("bound", "iters", "rtol"))
project_mean = jax.jit(P.project_mean, static_argnames=("bound",))


def proj_sigma_loss(L, Lo, G):
    Lp, _ = P.project_cov(L, Lo, EPS_COV)
    return jnp.sum(G * (Lp @ Lp.T))


proj_sigma_grad = jax.jit(jax.grad(proj_sigma_loss))
proj_sigma_value = jax.jit(proj_sigma_loss)


def f64(x):
    return jnp.asarray(x, jnp.float64)


# ----------------------------------------------------------------------------------------------- 1. active


@pytest.mark.parametrize("k", [2, 12, 63])
@pytest.mark.parametrize("ratio", [None, 1.5, 1e2, 1e4])
def test_active_constraint_float64(k, ratio):
    rng = np.random.default_rng(k)
    L, Lo = make_pair(rng, k, ratio, noise=0.2)
    assert np_cov_kl(L, Lo) > EPS_COV
    with jax.enable_x64(True):
        Lp, info = project_cov(f64(L), f64(Lo), bound=EPS_COV)
        assert not bool(info["fallback"])
        assert abs(np_cov_kl(np.asarray(Lp), Lo) - EPS_COV) <= 1e-9
        # L̃ is a valid Cholesky factor: lower triangular with a positive diagonal
        assert np.allclose(np.triu(np.asarray(Lp), 1), 0) and np.all(np.diag(np.asarray(Lp)) > 0)


@pytest.mark.parametrize("k", [2, 12, 63])
@pytest.mark.parametrize("ratio", [1.5, 1e2, 1e4])
def test_active_constraint_float32(k, ratio):
    rng = np.random.default_rng(100 + k)
    L, Lo = make_pair(rng, k, ratio)
    Lp, info = project_cov(jnp.asarray(L, jnp.float32), jnp.asarray(Lo, jnp.float32), bound=EPS_COV)
    assert Lp.dtype == jnp.float32 and not bool(info["fallback"])
    assert abs(np_cov_kl(np.asarray(Lp, np.float64), Lo) - EPS_COV) <= 1e-4 * EPS_COV


@pytest.mark.parametrize("ratio", [1.5, 1e2, 1e4])
def test_mean_projection_hits_bound(ratio):
    rng = np.random.default_rng(7)
    k = 12
    Lo = random_old(rng, k)
    mo = rng.normal(size=k)
    direction = Lo @ rng.normal(size=k)
    m = mo + direction * np.sqrt(ratio * EPS_MEAN / np_mean_kl(mo + direction, mo, Lo))
    with jax.enable_x64(True):
        mp = np.asarray(project_mean(f64(m), f64(mo), f64(Lo), bound=EPS_MEAN))
    assert abs(np_mean_kl(mp, mo, Lo) - EPS_MEAN) <= 1e-12
    # μ̃ lies on the segment between μₒ and μ
    t = (mp - mo) @ (m - mo) / ((m - mo) @ (m - mo))
    np.testing.assert_allclose(mp, mo + t * (m - mo), atol=1e-12)


# ----------------------------------------------------------------------------------------------- 2. identity


def test_identity_inside_bound_and_vjp():
    rng = np.random.default_rng(1)
    k = 12
    L, Lo = make_pair(rng, k, ratio=0.5)
    with jax.enable_x64(True):
        L, Lo = f64(L), f64(Lo)
        Lp, (vjp,) = None, (None,)
        Lp, vjp = jax.vjp(lambda a: P.project_cov(a, Lo, EPS_COV)[0], L)
        np.testing.assert_array_equal(np.asarray(Lp), np.asarray(L))
        G = jnp.asarray(rng.normal(size=(k, k)))
        np.testing.assert_array_equal(np.asarray(vjp(G)[0]), np.asarray(G))
        m, mo = f64(rng.normal(size=k)), f64(rng.normal(size=k))
        mo = m + 1e-3 * (mo - m)
        mp, vjp_m = jax.vjp(lambda a: P.project_mean(a, mo, Lo, EPS_MEAN), m)
        np.testing.assert_array_equal(np.asarray(mp), np.asarray(m))
        np.testing.assert_array_equal(np.asarray(vjp_m(m)[0]), np.asarray(m))


def test_no_nan_at_initialisation():
    """L = Lₒ and μ = μₒ exactly (the first policy update): finite values and gradients, nothing moves."""
    k = 63
    cfg = P.ProjectionConfig(mean_bound=EPS_MEAN, cov_bound=EPS_COV, total_train_steps=100)
    mean = jnp.full((4, k), 0.3)
    L = 0.99 * jnp.eye(k)

    def loss(mean, L):
        mp, Lp, _ = P.kl_projection(cfg, mean, L, mean, L, step=1, initial_entropy=gaussian.entropy(L))
        w = gaussian.sample(jax.random.key(0), mp, Lp, (3,))
        return jnp.mean(jnp.sin(w)) + P.trust_region_loss(cfg, mean, L, mp, Lp)

    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(mean, L)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


# ----------------------------------------------------------------------------------------------- 3. isotropic


@pytest.mark.parametrize("a, s_star, eta_star", [(1.1, 1.0056449487, 29.91851334),
                                                 (2.0, 1.0056449487, 132.61214691),
                                                 (0.9, 0.9943762153, 40.47540419)])
def test_isotropic_closed_form(a, s_star, eta_star):
    k = 63
    with jax.enable_x64(True):
        Lp, info = project_cov(a * jnp.eye(k, dtype=jnp.float64), jnp.eye(k, dtype=jnp.float64), bound=EPS_COV)
    np.testing.assert_allclose(float(info["eta"]), eta_star, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(Lp), np.sqrt(s_star) * np.eye(k), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------- 4. dual


@pytest.mark.parametrize("k, ratio", [(2, 10.0), (12, 1.5), (12, 1e2), (63, 1e4)])
def test_eta_matches_the_dual(k, ratio):
    rng = np.random.default_rng(40 + k)
    L, Lo = make_pair(rng, k, ratio)
    with jax.enable_x64(True):
        _, info = project_cov(f64(L), f64(Lo), bound=EPS_COV)
    eta = float(info["eta"])
    g = functools.partial(dual, L=L, Lo=Lo, eps=EPS_COV)
    Pm, Po = np.linalg.inv(L @ L.T), np.linalg.inv(Lo @ Lo.T)

    def g_prime(e):  # the claimed derivative: ε − KL(Σ̃(η)‖Σₒ)
        return EPS_COV - np_cov_kl(np.linalg.cholesky(np.linalg.inv((e * Po + Pm) / (1 + e))), Lo)

    for e in [0.3 * eta, eta, 3.0 * eta]:  # finite differences confirm g′ = ε − KL
        h = 1e-5 * e
        assert (g(e + h) - g(e - h)) / (2 * h) == pytest.approx(g_prime(e), rel=1e-5, abs=1e-6 * EPS_COV)
    assert abs(g_prime(eta)) < 1e-12
    # scipy's L-BFGS-B on the convex dual (in log η, where it is well scaled) finds the same η
    res = scipy.optimize.minimize(lambda x: (g(np.exp(x[0])), np.array([g_prime(np.exp(x[0])) * np.exp(x[0])])),
                                  x0=[0.0], jac=True, method="L-BFGS-B", options=dict(ftol=0, gtol=1e-16))
    np.testing.assert_allclose(np.exp(res.x[0]), eta, rtol=1e-5)
    # L-BFGS-B stops where g is flat to float64 noise (Δg ~ 1e-18 at 1e-8 relative in η); the stationary
    # point of g (a root of g′, by Brent's method to machine precision) confirms η to 1e-8
    root = scipy.optimize.brentq(g_prime, 0.5 * eta, 2.0 * eta, xtol=1e-15, rtol=1e-15)
    np.testing.assert_allclose(eta, root, rtol=1e-8)


# ----------------------------------------------------------------------------------------------- 5. gradients


@pytest.mark.parametrize("k, ratio", [(2, 5.0), (12, 1.5), (12, 1e3), (63, 1e2)])
def test_cov_gradient_finite_differences_and_cpp_backward(k, ratio):
    rng = np.random.default_rng(50 + k)
    L, Lo = make_pair(rng, k, ratio)
    G = rng.normal(size=(k, k))
    G = G + G.T
    with jax.enable_x64(True):
        grad = np.tril(np.asarray(proj_sigma_grad(f64(L), f64(Lo), f64(G))))
        _, info = project_cov(f64(L), f64(Lo), bound=EPS_COV)
        for _ in range(4):  # directional derivatives, h = 1e-6
            V = np.tril(rng.normal(size=(k, k)))
            h = 1e-6
            fd = (float(proj_sigma_value(f64(L + h * V), f64(Lo), f64(G)))
                  - float(proj_sigma_value(f64(L - h * V), f64(Lo), f64(G)))) / (2 * h)
            np.testing.assert_allclose(np.sum(grad * V), fd, rtol=1e-6)
    cpp = cpp_backward(L, Lo, float(info["eta"]), G)
    np.testing.assert_allclose(grad, cpp, rtol=1e-7, atol=1e-9 * np.abs(cpp).max())


def test_full_finite_difference_gradient_small_k():
    rng = np.random.default_rng(5)
    k = 4
    L, Lo = make_pair(rng, k, 20.0)
    G = rng.normal(size=(k, k))
    G = G + G.T
    with jax.enable_x64(True):
        grad = np.asarray(proj_sigma_grad(f64(L), f64(Lo), f64(G)))
        fd = np.zeros((k, k))
        for i, j in zip(*np.tril_indices(k)):
            E = np.zeros((k, k))
            E[i, j] = 1e-6
            fd[i, j] = (float(proj_sigma_value(f64(L + E), f64(Lo), f64(G)))
                        - float(proj_sigma_value(f64(L - E), f64(Lo), f64(G)))) / 2e-6
    np.testing.assert_allclose(np.tril(grad), fd, rtol=1e-6, atol=1e-8)


def test_mean_and_entropy_gradients_finite_differences():
    rng = np.random.default_rng(6)
    k = 12
    Lo = random_old(rng, k)
    L = Lo * 0.8
    mo = rng.normal(size=k)
    m = mo + Lo @ rng.normal(size=k)
    g = rng.normal(size=k)
    G = rng.normal(size=(k, k))
    with jax.enable_x64(True):
        def mean_loss(m, Lo):
            return jnp.sum(g * P.project_mean(m, f64(mo), Lo, EPS_MEAN))

        beta = float(gaussian.entropy(f64(L))) + 1.0  # entropy too low: the projection scales L

        def ent_loss(L):
            return jnp.sum(G * P.project_entropy(L, beta))

        for loss, x, extra in [(mean_loss, m, (f64(Lo),)), (ent_loss, np.asarray(L), ())]:
            grad = np.asarray(jax.grad(loss)(f64(x), *extra))
            for _ in range(3):
                V = rng.normal(size=np.shape(x))
                if V.ndim == 2:
                    V = np.tril(V)
                h = 1e-6
                fd = (float(loss(f64(x + h * V), *extra)) - float(loss(f64(x - h * V), *extra))) / (2 * h)
                np.testing.assert_allclose(np.sum(grad * V), fd, rtol=1e-6)


# ----------------------------------------------------------------------------------------------- 6. congruence


def test_congruence_invariance():
    rng = np.random.default_rng(8)
    k = 12
    L, Lo = make_pair(rng, k, 50.0)
    T = np.tril(rng.normal(size=(k, k)), -1) * 0.3 + np.diag(rng.uniform(0.5, 2.0, size=k))
    mo = rng.normal(size=k)
    m = mo + 3.0 * Lo @ rng.normal(size=k)
    c = rng.normal(size=k)
    with jax.enable_x64(True):
        Lp, _ = project_cov(f64(L), f64(Lo), bound=EPS_COV)
        LpT, _ = project_cov(f64(T @ L), f64(T @ Lo), bound=EPS_COV)
        mp = project_mean(f64(m), f64(mo), f64(Lo), bound=EPS_MEAN)
        mpT = project_mean(f64(T @ m + c), f64(T @ mo + c), f64(T @ Lo), bound=EPS_MEAN)
    np.testing.assert_allclose(np.asarray(LpT), T @ np.asarray(Lp), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(mpT), T @ np.asarray(mp) + c, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------- 7. optimality


def test_eta_increases_with_step_size():
    rng = np.random.default_rng(9)
    k = 12
    Lo = random_old(rng, k)
    N = np.tril(rng.normal(size=(k, k)))
    etas = []
    with jax.enable_x64(True):
        for t in [0.05, 0.1, 0.2, 0.4, 0.8]:
            _, info = project_cov(f64(Lo @ (np.eye(k) + t * N * 0.3)), f64(Lo), bound=EPS_COV)
            etas.append(float(info["eta"]))
    assert np.all(np.diff(etas) > 0), etas


def test_no_feasible_point_is_closer():
    """Σ̃ minimises KL(·‖Σ) over {KL(·‖Σₒ) ≤ ε}: random feasible points near Σ̃ are never closer."""
    rng = np.random.default_rng(10)
    k = 6
    L, Lo = make_pair(rng, k, 30.0)
    with jax.enable_x64(True):
        Lp = np.asarray(project_cov(f64(L), f64(Lo), bound=EPS_COV)[0])
    So, St = Lo @ Lo.T, Lp @ Lp.T

    def kl_full(S1, S2):
        return np_cov_kl(np.linalg.cholesky(S1), np.linalg.cholesky(S2))

    best = kl_full(St, L @ L.T)
    for _ in range(200):
        D = rng.normal(size=(k, k))
        S = St + 1e-3 * np.trace(St) / k * (D + D.T)
        if np.linalg.eigvalsh(S).min() <= 0:
            continue
        lo, hi = 0.0, 1.0  # move towards Σₒ until feasible (the feasible set is convex and contains Σₒ)
        if kl_full(S, So) > EPS_COV:
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                lo, hi = (lo, mid) if kl_full((1 - mid) * S + mid * So, So) <= EPS_COV else (mid, hi)
            S = (1 - hi) * S + hi * So
        assert kl_full(S, L @ L.T) >= best - 1e-12


# ----------------------------------------------------------------------------------------------- 8. non-contextual


def test_non_contextual_equals_batched_rows():
    rng = np.random.default_rng(11)
    k, batch = 12, 16
    L, Lo = make_pair(rng, k, 20.0)
    Lo_ = jnp.asarray(Lo, jnp.float32)
    mean_old = jnp.asarray(rng.normal(size=(batch, k)), jnp.float32)
    mean = mean_old + jnp.asarray(rng.normal(size=(batch, k)), jnp.float32)
    cfg = P.ProjectionConfig(entropy_schedule="none")
    single = P.kl_projection(cfg, mean, jnp.asarray(L, jnp.float32), mean_old, Lo_)
    batched = P.kl_projection(cfg, mean, jnp.broadcast_to(jnp.asarray(L, jnp.float32), (batch, k, k)), mean_old,
                              jnp.broadcast_to(Lo_, (batch, k, k)))
    assert single[1].shape == (k, k) and batched[1].shape == (batch, k, k)
    np.testing.assert_allclose(np.asarray(single[0]), np.asarray(batched[0]), rtol=1e-6, atol=1e-7)
    for row in np.asarray(batched[1]):
        np.testing.assert_allclose(np.asarray(single[1]), row, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------- 9. entropy


def test_entropy_inequality_and_equality():
    rng = np.random.default_rng(12)
    k = 12
    L = jnp.asarray(np.stack([random_old(rng, k) * s for s in [0.3, 0.5, 1.0, 2.0]]))
    H = np.asarray(gaussian.entropy(L))
    beta = float(np.median(H))
    out = P.project_entropy(L, beta)
    H_out = np.asarray(gaussian.entropy(out))
    assert np.all(H_out >= beta - 1e-5)
    above = H >= beta
    np.testing.assert_array_equal(np.asarray(out)[above], np.asarray(L)[above])
    np.testing.assert_allclose(H_out[~above], beta, atol=1e-5)
    eq = np.asarray(gaussian.entropy(P.project_entropy(L, beta, equality=True)))
    np.testing.assert_allclose(eq, beta, atol=1e-5)


def test_entropy_schedules():
    k, H0, T = 63, 88.7606, 35000
    lin = P.ProjectionConfig(entropy_schedule="linear", target_entropy=0.0, total_train_steps=T)
    assert float(P.entropy_bound(lin, 0, H0, k)) == pytest.approx(H0)
    assert float(P.entropy_bound(lin, T // 2, H0, k)) == pytest.approx(H0 / 2)
    assert float(P.entropy_bound(lin, T, H0, k)) == pytest.approx(0.0, abs=1e-5)
    assert float(P.entropy_bound(lin, 2 * T, H0, k)) == pytest.approx(-H0)  # keeps falling after T
    ex = P.ProjectionConfig(entropy_schedule="exp", target_entropy=-0.5, temperature=0.7, total_train_steps=T)
    step = 1234
    expected = k * -0.5 + (H0 - k * -0.5) * 0.7 ** (10 * step / T)
    assert float(P.entropy_bound(ex, step, H0, k)) == pytest.approx(expected, rel=1e-6)


def test_entropy_order_and_none():
    rng = np.random.default_rng(13)
    k = 12
    L, Lo = make_pair(rng, k, 100.0)
    mean = jnp.zeros(k)
    L, Lo = jnp.asarray(L, jnp.float32), jnp.asarray(Lo, jnp.float32)
    H_old = float(gaussian.entropy(Lo))
    kw = dict(mean_bound=EPS_MEAN, cov_bound=EPS_COV, total_train_steps=10)
    none = P.kl_projection(P.ProjectionConfig(entropy_schedule="none", **kw), mean, L, mean, Lo)
    # β(0) = H₀ set above every entropy involved: entropy last scales the projected factor to β exactly,
    # entropy first scales the raw factor before the KL projection
    after = P.kl_projection(P.ProjectionConfig(**kw), mean, L, mean, Lo, step=0, initial_entropy=H_old + 1.0)
    first = P.kl_projection(P.ProjectionConfig(entropy_first=True, **kw), mean, L, mean, Lo, step=0,
                            initial_entropy=H_old + 1.0)
    assert float(gaussian.entropy(after[1])) == pytest.approx(H_old + 1.0, abs=1e-4)
    H_raw = float(gaussian.entropy(L))
    scaled = L * np.exp((H_old + 1.0 - H_raw) / k) if H_raw < H_old + 1.0 else L
    np.testing.assert_allclose(np.asarray(first[1]), np.asarray(project_cov(scaled, Lo, bound=EPS_COV)[0]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(none[1]), np.asarray(project_cov(L, Lo, bound=EPS_COV)[0]), rtol=1e-5,
                               atol=1e-6)


# ----------------------------------------------------------------------------------------------- 10. precision


@pytest.mark.parametrize("k, ratio", [(12, 1.5), (12, 1e3), (63, 1.5), (63, 1e2), (63, 1e4)])
def test_float32_agrees_with_float64(k, ratio):
    rng = np.random.default_rng(60 + k)
    L, Lo = make_pair(rng, k, ratio)
    L32 = np.asarray(project_cov(jnp.asarray(L, jnp.float32), jnp.asarray(Lo, jnp.float32), bound=EPS_COV)[0])
    with jax.enable_x64(True):
        L64 = np.asarray(project_cov(f64(L), f64(Lo), bound=EPS_COV)[0])
    assert np.linalg.norm(L32 - L64) / np.linalg.norm(L64) < 1e-4


def test_ill_conditioned_old_factor_float32():
    rng = np.random.default_rng(14)
    k = 63
    diag = np.logspace(np.log10(2e-5), np.log10(20.0), k)  # condition number 1e6, diagonal near min_std
    Lo = np.diag(diag) @ (np.eye(k) + 0.1 * np.tril(rng.normal(size=(k, k)), -1) / np.sqrt(k))
    for noise in [0.01, 0.05, 0.2]:
        L = Lo @ (np.eye(k) + noise * np.tril(rng.normal(size=(k, k))) / np.sqrt(k))
        Lp, info = project_cov(jnp.asarray(L, jnp.float32), jnp.asarray(Lo, jnp.float32), bound=EPS_COV)
        assert np.all(np.isfinite(np.asarray(Lp)))
        assert not bool(info["fallback"])


@pytest.mark.parametrize("k, scales", [(7, (0.1, 0.3, 0.5)), (12, (0.1, 0.3, 0.4)), (63, (0.03, 0.1, 0.15))])
def test_float32_bound_on_ill_conditioned_rows(k, scales):
    """Spec §7.1 in float32 where it is hardest: Lₒ with condition numbers up to 1e6 and raw factors up to
    KL₀ ≈ 5e4·ε_Σ. The KL of the float32 output is measured in float64 through the whitened factor.
    (Before L̃ was built as Lₒ·chol(I + D) from D = S̃ − I, rows here reached 3.2e-4·ε.)"""
    rows, olds = [], []
    for cond in (1.0, 1e3, 1e6):
        for j, s in enumerate(np.repeat(scales, 8)):
            rng = np.random.default_rng(1000 * k + j)
            Lo = random_old(rng, k) @ np.diag(np.logspace(0, np.log10(cond), k))
            rows.append(Lo @ (np.diag(np.exp(s * rng.normal(size=k))) + s * np.tril(rng.normal(size=(k, k)), -1)))
            olds.append(Lo)
    L, Lo = np.stack(rows).astype(np.float32), np.stack(olds).astype(np.float32)
    Lp, info = project_cov(jnp.asarray(L), jnp.asarray(Lo), bound=EPS_COV)
    assert not np.asarray(info["fallback"]).any()
    kl0 = np.array([whitened_kl64(a, b) for a, b in zip(L, Lo)])
    assert kl0.min() > EPS_COV and kl0.max() > 1e4 * EPS_COV  # every row active, some far outside
    err = np.array([abs(whitened_kl64(a, b) - EPS_COV) for a, b in zip(np.asarray(Lp), Lo)])
    assert err.max() <= 1e-4 * EPS_COV, (err.max() / EPS_COV, kl0[err.argmax()] / EPS_COV)


def test_fallback_to_old_factor_when_unreachable():
    """A whitened eigenvalue of 1e-14 needs η > 1e12: the row falls back to Lₒ and gradients stay finite."""
    k = 4
    Lo = np.eye(k)
    L = np.diag([1e-7, 1.0, 1.0, 1.0])
    with jax.enable_x64(True):
        Lp, info = project_cov(f64(L), f64(Lo), bound=EPS_COV)
        assert bool(info["fallback"])
        np.testing.assert_array_equal(np.asarray(Lp), Lo)
        grad = proj_sigma_grad(f64(L), f64(Lo), f64(np.eye(k)))
        assert np.all(np.asarray(grad) == 0.0)


# ----------------------------------------------------------------------------------------------- 11. TR loss


def test_trust_region_loss_zero_when_inside():
    rng = np.random.default_rng(15)
    k = 12
    L, Lo = make_pair(rng, k, 0.3)
    mo = jnp.asarray(rng.normal(size=(8, k)), jnp.float32)
    mean = mo + 1e-3
    cfg = P.ProjectionConfig(entropy_schedule="none")
    L, Lo = jnp.asarray(L, jnp.float32), jnp.asarray(Lo, jnp.float32)
    mp, Lp, _ = P.kl_projection(cfg, mean, L, mo, Lo)
    assert float(P.trust_region_loss(cfg, mean, L, mp, Lp)) == 0.0


def test_trust_region_loss_value_and_gradient_closed_form():
    """loss = mean KL(π‖sg π̃); ∂/∂μ = Σ̃⁻¹(μ − μ̃)/B and ∂/∂L = (Σ̃⁻¹ − Σ⁻¹)L/B (lower part)."""
    rng = np.random.default_rng(16)
    k, batch = 6, 3
    L, Lo = make_pair(rng, k, 50.0)
    mo = rng.normal(size=(batch, k))
    mean = mo + rng.normal(size=(batch, k))
    cfg = P.ProjectionConfig(entropy_schedule="none", trust_region_coeff=2.0)
    with jax.enable_x64(True):
        mp, Lp, _ = P.kl_projection(cfg, f64(mean), f64(L), f64(mo), f64(Lo))
        loss, (gm, gL) = jax.value_and_grad(lambda m, l: P.trust_region_loss(cfg, m, l, mp, Lp), argnums=(0, 1))(
            f64(mean), f64(L))
    mp, Lp = np.asarray(mp), np.asarray(Lp)
    Pt = np.linalg.inv(Lp @ Lp.T)
    expected = np.mean([np_mean_kl(mean[b], mp[b], Lp) + np_cov_kl(L, Lp) for b in range(batch)])
    assert float(loss) == pytest.approx(2.0 * expected, rel=1e-10)
    np.testing.assert_allclose(np.asarray(gm), 2.0 * (Pt @ (mean - mp).T).T / batch, rtol=1e-8)
    np.testing.assert_allclose(np.tril(np.asarray(gL)), 2.0 * np.tril((Pt - np.linalg.inv(L @ L.T)) @ L), rtol=1e-7,
                               atol=1e-10)


# ----------------------------------------------------------------------------------------------- 12. jit + vmap


def test_jit_vmap_batch_matches_rows():
    rng = np.random.default_rng(17)
    k, batch = 7, 512
    Lo = random_old(rng, k)
    scales = rng.choice([0.005, 0.05, 0.3], size=batch)  # mixes rows inside and outside the bound
    L = np.stack([Lo @ (np.eye(k) + s * np.tril(rng.normal(size=(k, k)))) for s in scales]).astype(np.float32)
    Lo32 = jnp.asarray(Lo, jnp.float32)
    Lp, info = project_cov(jnp.asarray(L), Lo32, bound=EPS_COV)
    kl0 = np.asarray(info["kl0"])
    assert (kl0 > EPS_COV).any() and (kl0 <= EPS_COV).any()
    Lp_eager, _ = P.project_cov(jnp.asarray(L), Lo32, EPS_COV)  # unjitted
    np.testing.assert_allclose(np.asarray(Lp), np.asarray(Lp_eager), rtol=1e-5, atol=1e-6)
    Lp_vmap, _ = jax.jit(jax.vmap(lambda a: P.project_cov(a, Lo32, EPS_COV)))(jnp.asarray(L))
    np.testing.assert_allclose(np.asarray(Lp), np.asarray(Lp_vmap), rtol=1e-5, atol=1e-6)
    for i in np.concatenate([np.flatnonzero(kl0 > EPS_COV)[:8], np.flatnonzero(kl0 <= EPS_COV)[:8]]):
        row, _ = project_cov(jnp.asarray(L[i]), Lo32, bound=EPS_COV)
        np.testing.assert_allclose(np.asarray(Lp[i]), np.asarray(row), rtol=1e-5, atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="entropy_schedule"):
        P.ProjectionConfig(entropy_schedule="cosine")
    with pytest.raises(ValueError, match="mean_bound"):
        P.ProjectionConfig(mean_bound=0.0)


def test_contextual_backward_does_not_deadlock_on_cpu():
    """Regression: the gradient of a batched (contextual) projection used to hang in jaxlib's CPU LAPACK
    kernels (see `gaussian.map_matrices`). Run it in a subprocess so that a hang fails instead of blocking."""
    import subprocess
    import sys

    code = """
import jax, jax.numpy as jnp, numpy as np
from toperl_jax import projection as P
k, batch = 63, 48
rng = np.random.default_rng(0)
Lo = np.linalg.cholesky(np.cov(rng.normal(size=(4 * k, k)).T) + 0.5 * np.eye(k))
L = jnp.asarray(Lo @ (np.eye(k) + 0.01 * np.tril(rng.normal(size=(batch, k, k)))), jnp.float32)
grad = jax.jit(jax.grad(lambda L: jnp.sum(P.project_cov(L, jnp.asarray(Lo, jnp.float32), 5e-4)[0])))
for _ in range(15):
    g = jax.block_until_ready(grad(L))
assert np.all(np.isfinite(np.asarray(g)))
"""
    result = subprocess.run([sys.executable, "-c", code], timeout=240, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
