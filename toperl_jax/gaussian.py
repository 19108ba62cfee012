"""Multivariate Gaussians parameterised by a mean and a lower Cholesky factor.

Everything TOP-ERL needs of its policy distribution N(mean, L Lᵀ) over MP weights: sampling, log-density,
entropy and the two parts of the KL divergence. All functions broadcast over leading dimensions, so a
non-contextual factor `L` of shape `[k, k]` can be used with a batch of means `[..., k]`.

The covariance KL is written in whitened form, B = L_q⁻¹ L_p:

    KLc(p‖q) = ½ [tr(B Bᵀ) − k − 2 Σ log B_ii] = ½ [‖B − I‖²_F + 2 Σ (δ_i − log1p δ_i)],   δ = diag(B) − 1,

which avoids the cancellation of `tr − k` (about 1e-4 relative in float32 at k = 63 near the trust region,
against ~1e-7 for this form). `x − log1p(x)` is itself evaluated with a series near 0 (`x_minus_log1p`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular


def map_matrices(fn, *args, core_ndims: tuple[int, ...]):
    """Apply `fn`, written for one problem, over the broadcast leading dimensions of `args`.

    `core_ndims[i]` trailing dimensions of `args[i]` belong to one problem (2 for a matrix, 1 for a vector).
    On CPU the problems run one after another (`lax.map`); elsewhere they are vectorised (`vmap`). The reason
    is a deadlock in jaxlib 0.10.2's CPU LAPACK kernels: a batched call splits its batch over XLA's intra-op
    thread pool and blocks until the pieces finish, so several batched calls running at once (as in the
    backward pass of a batched projection) can occupy every pool thread and wait forever
    (`benchmarks/repro_cpu_batched_solve_grad_hang.py`). Unbatched LAPACK calls do not fan out.
    """
    batch = jnp.broadcast_shapes(*(a.shape[: a.ndim - c] for a, c in zip(args, core_ndims)))
    if not batch:
        return fn(*args)
    n = math.prod(batch)
    flat = [jnp.broadcast_to(a, batch + a.shape[a.ndim - c:]).reshape((n,) + a.shape[a.ndim - c:])
            for a, c in zip(args, core_ndims)]
    out = lax.platform_dependent(*flat, cpu=lambda *xs: lax.map(lambda row: fn(*row), xs),
                                 default=lambda *xs: jax.vmap(fn)(*xs))
    return jax.tree.map(lambda o: o.reshape(batch + o.shape[1:]), out)


def sample_rows(mean: jax.Array, L: jax.Array, xi: jax.Array) -> jax.Array:
    """Reparameterised samples w = μ + Lξ, one per row: mean `[B, ..., k]`, L `[k, k]` (shared) or
    `[B, ..., k, k]`, standard normal ξ `[B, R, ..., k]` → `[B, R, ..., k]`; gradients flow to μ and L."""
    L_b = L if L.ndim == 2 else L[:, None]
    return mean[:, None] + jnp.einsum("...ij,...j->...i", L_b, xi.astype(mean.dtype))


def x_minus_log1p(x: jax.Array) -> jax.Array:
    """`x − log(1 + x)` for x > −1, accurate to a few ulps also for |x| ≪ 1 (where the naive form cancels).

    With z = x / (2 + x), log1p(x) = 2 atanh(z) = 2 (z + z³/3 + z⁵/5 + …) and x − 2z = x² / (2 + x), so
    x − log1p(x) = x² / (2 + x) − 2 Σ_{n≥1} z^{2n+1} / (2n + 1). For |x| < 1/4, |z| < 1/7 and eight terms reach
    float64 precision. Gradient-safe: both branches only ever see inputs valid for them.
    """
    small = jnp.abs(x) < 0.25
    xs = jnp.where(small, x, 0.0)
    z = xs / (2.0 + xs)
    z2 = z * z
    series = 0.0
    for n in range(8, 0, -1):  # Horner over 2/(2n+1) z^{2n+1}, n = 8 … 1
        series = z2 * (2.0 / (2 * n + 1) + series)
    near_zero = xs * xs / (2.0 + xs) - z * series
    xl = jnp.where(small, 1.0, x)
    return jnp.where(small, near_zero, xl - jnp.log1p(xl))


def tril_solve(L: jax.Array, x: jax.Array) -> jax.Array:
    """L⁻¹ x for lower-triangular `L` `[..., k, k]` and vectors `x` `[..., k]`, with broadcasting.

    A single factor `[k, k]` against a batch of vectors is solved as one triangular solve with many
    right-hand sides.
    """
    k = L.shape[-1]
    if L.ndim == 2:
        flat = x.reshape(-1, k)
        return solve_triangular(L, flat.T, lower=True).T.reshape(x.shape)
    return map_matrices(lambda a, b: solve_triangular(a, b, lower=True), L, x, core_ndims=(2, 1))


def whiten(L: jax.Array, L_ref: jax.Array) -> jax.Array:
    """B = L_ref⁻¹ L, lower triangular `[..., k, k]` (broadcast over leading dimensions)."""
    return map_matrices(lambda a, b: solve_triangular(a, b, lower=True), L_ref, L, core_ndims=(2, 2))


def whitened_cov_kl(B: jax.Array) -> jax.Array:
    """KL(N(0, Σ_p) ‖ N(0, Σ_q)) from the whitened factor B = L_q⁻¹ L_p `[..., k, k]`; returns `[...]`."""
    k = B.shape[-1]
    eye = jnp.eye(k, dtype=B.dtype)
    off = jnp.sum(jnp.square(B - eye), axis=(-2, -1))
    delta = jnp.diagonal(B, axis1=-2, axis2=-1) - 1.0
    return 0.5 * off + jnp.sum(x_minus_log1p(delta), axis=-1)


def cov_kl(L_p: jax.Array, L_q: jax.Array) -> jax.Array:
    """Covariance part of KL(p‖q): ½[tr(Σ_q⁻¹ Σ_p) − k + log|Σ_q| − log|Σ_p|], shape `[...]`."""
    return whitened_cov_kl(whiten(L_p, L_q))


def mean_kl(mean_p: jax.Array, mean_q: jax.Array, L_q: jax.Array) -> jax.Array:
    """Mean part of KL(p‖q): ½ ‖L_q⁻¹ (μ_p − μ_q)‖², shape `[...]`."""
    return 0.5 * jnp.sum(jnp.square(tril_solve(L_q, mean_p - mean_q)), axis=-1)


def kl(mean_p, L_p, mean_q, L_q) -> tuple[jax.Array, jax.Array]:
    """KL(N(μ_p, L_p L_pᵀ) ‖ N(μ_q, L_q L_qᵀ)) split as `(mean part, covariance part)`; their sum is the KL."""
    return mean_kl(mean_p, mean_q, L_q), cov_kl(L_p, L_q)


def log_det(L: jax.Array) -> jax.Array:
    """log |L Lᵀ| = 2 Σ log L_ii, shape `[...]`."""
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)


def entropy(L: jax.Array) -> jax.Array:
    """Differential entropy ½ k (1 + log 2π) + Σ log L_ii, shape `[...]`."""
    k = L.shape[-1]
    return 0.5 * k * (1.0 + math.log(2.0 * math.pi)) + 0.5 * log_det(L)


def log_prob(x: jax.Array, mean: jax.Array, L: jax.Array) -> jax.Array:
    """log N(x; μ, L Lᵀ), shape `[...]` (broadcast of x, mean and L's leading dimensions)."""
    k = L.shape[-1]
    maha = jnp.sum(jnp.square(tril_solve(L, x - mean)), axis=-1)
    return -0.5 * (maha + k * math.log(2.0 * math.pi) + log_det(L))


def sample(key: jax.Array, mean: jax.Array, L: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
    """Reparameterised samples μ + L ξ, ξ ~ N(0, I), shape `shape + broadcast(mean, L)[..., k]`.

    Gradients flow to `mean` and `L`. Every sample gets its own ξ.
    """
    batch = jnp.broadcast_shapes(mean.shape[:-1], L.shape[:-2])
    k = mean.shape[-1]
    xi = jax.random.normal(key, shape + batch + (k,), dtype=mean.dtype)
    return mean + jnp.einsum("...ij,...j->...i", L, xi)
