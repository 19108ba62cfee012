"""Gaussian policy over MP weights: π(w | s) = N(μ(s), L Lᵀ) (spec: trpl_kl_projection.md §5).

- Mean: an MLP with leaky-ReLU hidden layers and a linear output; orthogonal weight init with gain √2 on the
  hidden layers and 0.01 on the output layer, zero biases.
- Cholesky factor L, from a raw vector v of length k (std_only) or k + k(k−1)/2:
  diag(L) = softplus(v[:k]) + min_std; the strictly-lower entries are v[k:] in row-major order
  (the order of `torch.tril_indices(k, k, -1)`, which is also `numpy.tril_indices(k, -1)`).
  - non-contextual (TOP-ERL default): v is a trainable vector, initialised so that diag(L) = 0.99 + min_std
    and the off-diagonals are 0. Upstream inverts the softplus with its default offset 1e-2 before min_std is
    set, hence 0.99 rather than 1; we reproduce the number.
  - contextual: v = MLP(s), a second network shaped like the mean network.

`GaussianPolicy.__call__(obs [..., S])` returns `(mean [..., k], L)`, where `L` is `[k, k]` for a
non-contextual covariance (one factor shared by the batch; every function in `toperl_jax.gaussian` and
`toperl_jax.projection` broadcasts it) and `[..., k, k]` for a contextual one. The distribution's maths
(sampling, log-prob, entropy, KL) lives in `toperl_jax.gaussian`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Upstream (mprl AbstractGaussianPolicy): reverse_from_softplus_space(1.0, lower_bound=None) uses offset 1e-2.
INIT_SOFTPLUS_DIAG = 0.99


def inverse_softplus(y: float) -> float:
    """x such that softplus(x) = y (y > 0)."""
    return math.log(math.expm1(y))


def cholesky_vector_size(k: int, std_only: bool = False) -> int:
    """Length of the raw covariance vector: k (diagonal only) or k + k(k−1)/2."""
    return k if std_only else k + k * (k - 1) // 2


def vector_to_cholesky(v: jax.Array, k: int, min_std: float, std_only: bool = False) -> jax.Array:
    """Raw vector `[..., k (+ k(k−1)/2)]` → lower-triangular factor `[..., k, k]` with a positive diagonal."""
    diag = jax.nn.softplus(v[..., :k]) + min_std
    L = diag[..., :, None] * jnp.eye(k, dtype=v.dtype)
    if not std_only:
        rows, cols = np.tril_indices(k, -1)
        L = L.at[..., rows, cols].set(v[..., k:])
    return L


def cholesky_to_vector(L: jax.Array, min_std: float, std_only: bool = False) -> jax.Array:
    """Inverse of `vector_to_cholesky` (for setting a covariance, e.g. in tests or warm starts)."""
    k = L.shape[-1]
    diag = jnp.diagonal(L, axis1=-2, axis2=-1) - min_std
    raw_diag = jnp.log(jnp.expm1(diag))
    if std_only:
        return raw_diag
    rows, cols = np.tril_indices(k, -1)
    return jnp.concatenate([raw_diag, L[..., rows, cols]], axis=-1)


class MLP(nn.Module):
    """Leaky-ReLU MLP with a linear output; orthogonal init (gain √2 hidden, `out_gain` output), zero biases."""

    hidden_sizes: Sequence[int]
    out_dim: int
    out_gain: float = 0.01

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden_sizes:
            x = nn.Dense(width, kernel_init=nn.initializers.orthogonal(math.sqrt(2.0)),
                         bias_init=nn.initializers.zeros)(x)
            x = nn.leaky_relu(x)  # negative slope 0.01, as torch's default
        return nn.Dense(self.out_dim, kernel_init=nn.initializers.orthogonal(self.out_gain),
                        bias_init=nn.initializers.zeros)(x)


class GaussianPolicy(nn.Module):
    """π(w | s) = N(μ(s), L Lᵀ) over `action_dim` MP weights.

    Attributes:
        action_dim: k, the number of MP weights (num_dof · (num_basis + 1)).
        hidden_sizes: hidden widths of the mean MLP (box pushing [256, 256], others [128, 128]).
        contextual_cov: L depends on the state through its own MLP (TOP-ERL: false).
        std_only: diagonal L only.
        min_std: floor added to the softplus diagonal (box, Meta-World 1e-5; hopper 1e-4).
        cov_hidden_sizes: hidden widths of the covariance MLP (contextual only).
        out_gain: orthogonal-init gain of the output layers.
    """

    action_dim: int
    hidden_sizes: Sequence[int] = (256, 256)
    contextual_cov: bool = False
    std_only: bool = False
    min_std: float = 1e-5
    cov_hidden_sizes: Sequence[int] = (256, 256)
    out_gain: float = 0.01

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        k = self.action_dim
        n = cholesky_vector_size(k, self.std_only)
        mean = MLP(self.hidden_sizes, k, self.out_gain, name="mean_net")(obs)
        if self.contextual_cov:
            v = MLP(self.cov_hidden_sizes, n, self.out_gain, name="cov_net")(obs)
        else:
            def init_vector(key, shape, dtype=jnp.float32):
                del key
                return jnp.zeros(shape, dtype).at[:k].set(inverse_softplus(INIT_SOFTPLUS_DIAG))

            v = self.param("cov_vector", init_vector, (n,))
        return mean, vector_to_cholesky(v, k, self.min_std, self.std_only)
