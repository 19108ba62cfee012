"""Differentiable KL trust-region projection with entropy control (spec: trpl_kl_projection.md).

Given the raw policy output N(μ, LLᵀ) and the old policy N(μₒ, LₒLₒᵀ), return the closest Gaussian
N(μ̃, L̃L̃ᵀ) whose mean part and covariance part of KL(·‖old) stay within `mean_bound` and `cov_bound`.

Mean (closed form): m = ½‖Lₒ⁻¹(μ − μₒ)‖²; if m > ε_μ then ω = √(m/ε_μ) − 1 and μ̃ = μₒ + (μ − μₒ)/(1 + ω).

Covariance: minimise KL(Σ̃‖Σ) s.t. KL(Σ̃‖Σₒ) ≤ ε_Σ. The solution is Σ̃⁻¹ = (η Σₒ⁻¹ + Σ⁻¹)/(1 + η) with the
dual variable η ≥ 0 the unique root of KL(Σ̃(η)‖Σₒ) = ε_Σ. Upstream solves the dual with NLopt in C++ and
writes the backward pass by hand; here, everything is jit/vmap/grad-safe JAX:

1. Whiten, B = Lₒ⁻¹L. With μ_i = eig(BᵀB) − 1 (taken from BᵀB − I = E + Eᵀ + EᵀE, E = B − I, so there is no
   cancellation near L = Lₒ), the whitened eigenvalues of Σ̃(η) are s_i = 1 + d_i, d_i = μ_i/(1 + η(1 + μ_i)),
   and F(η) = KL(Σ̃(η)‖Σₒ) = ½ Σ (d_i − log1p d_i) decreases monotonically from KL₀ to 0.
2. Solve F(η) = ε in u = log(1 + η) ∈ [0, log(1 + 1e12)], where log F is almost linear: a safeguarded
   Newton iteration with bisection fallback, a fixed number of steps (no Python branching on values).
   The eigenvalues and the solve are under `stop_gradient`: eigenvector derivatives are NaN at L = Lₒ.
3. Gradient of η by the implicit-function theorem, without a custom VJP:
   η̂ = η* − sg(1/F′(η*)) · (KL(η*; L, Lₒ) − sg(KL(η*; L, Lₒ))) has the value η* and the derivative
   −∂KL/∂θ / F′, with KL written in matrix form (differentiable in L).
4. Whitened, Σ̃ is S̃ = Lₒ⁻¹Σ̃Lₒ⁻ᵀ = I + D with D = (A − I)(I + ηA)⁻¹, A = BBᵀ, formed from A − I without adding
   I first; L̃ = Lₒ chol(I + D). As η grows S̃ → I and |D| ~ √ε_Σ, so building D (not S̃) keeps float32 digits.
   One Newton step of η on the KL of that factor itself (before differentiation) removes the error that
   float32 eigenvalues of an ill-conditioned A leave in η*.
5. Rows with KL₀ ≤ ε keep L (gradient straight through). Rows whose solve does not reach
   |F(η*) − ε| ≤ `rtol`·ε (η would exceed 1e12), or whose factor is not finite or misses ε by half, fall back to
   sg(Lₒ), as upstream does; their gradient path sees a harmless problem (B = I, η = 0).

The solve runs in the dtype of the inputs: float64 when x64 is enabled (as the upstream C++ does), otherwise
float32, where |KL(L̃‖Lₒ) − ε| stays within 1e-4·ε up to KL₀ ≈ 5e4·ε (docs/foundation.md).

Entropy control (after the projection unless `entropy_first`): with bound β(step), if H(L̃) < β (or always,
with `entropy_eq`) L̃ ← L̃·exp((β − H(L̃))/k).

Non-contextual covariance: pass `L` and `L_old` as single `[k, k]` factors; the covariance is then projected
once and the mean projection broadcasts it over the batch. Old-policy inputs are always treated as constants
(upstream evaluates the old policy under `no_grad`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular

from toperl_jax import gaussian

sg = lax.stop_gradient

ETA_MAX = 1e12  # upper bound of the dual variable (upstream NLopt bound)
OUTPUT_RTOL = 0.5  # a projected factor whose KL misses ε_Σ by more than this (relative) is unsound: fall back


@dataclass(frozen=True)
class ProjectionConfig:
    """Trust-region and entropy-control settings.

    Attributes:
        mean_bound: ε_μ, bound on the mean part of KL(π̃‖π_old).
        cov_bound: ε_Σ, bound on the covariance part of KL(π̃‖π_old).
        trust_region_coeff: weight of the trust-region regression loss KL(π‖sg π̃).
        entropy_schedule: "linear", "exp" or "none" (no entropy control).
        target_entropy: per-dimension target entropy at the end of the schedule.
        temperature: base of the "exp" schedule.
        entropy_eq: equality instead of inequality entropy constraint.
        entropy_first: entropy projection before (instead of after) the trust-region projection.
        total_train_steps: T, the number of iterations over which the schedule runs.
        root_iters: iterations of the dual root solve.
        rtol: relative tolerance |F(η*) − ε| ≤ rtol·ε below which a solve counts as converged.
    """

    mean_bound: float = 0.05
    cov_bound: float = 5e-4
    trust_region_coeff: float = 1.0
    entropy_schedule: Literal["linear", "exp", "none"] = "linear"
    target_entropy: float = 0.0
    temperature: float = 0.5
    entropy_eq: bool = False
    entropy_first: bool = False
    total_train_steps: int = 35000
    root_iters: int = 30
    rtol: float = 1e-4

    def __post_init__(self):
        if not self.mean_bound > 0 or not self.cov_bound > 0:
            raise ValueError(f"mean_bound and cov_bound must be > 0, got {self.mean_bound}, {self.cov_bound}")
        if self.entropy_schedule not in ("linear", "exp", "none"):
            raise ValueError(f"entropy_schedule must be 'linear', 'exp' or 'none', got {self.entropy_schedule!r}")
        if self.entropy_schedule != "none" and self.total_train_steps < 1:
            raise ValueError(f"total_train_steps must be >= 1, got {self.total_train_steps}")
        if self.root_iters < 1:
            raise ValueError(f"root_iters must be >= 1, got {self.root_iters}")


# ---------------------------------------------------------------------------------------------------------
# Mean projection


def project_mean(mean: jax.Array, mean_old: jax.Array, L_old: jax.Array, bound: float) -> jax.Array:
    """Closed-form mean projection, `[..., k]`; m(μ̃) = ε_μ exactly where m(μ) > ε_μ, else μ̃ = μ."""
    m = gaussian.mean_kl(mean, mean_old, L_old)
    active = m > bound
    omega = jnp.sqrt(jnp.where(active, m, bound) / bound) - 1.0  # double-where: no NaN gradient at m = 0
    # μₒ + (μ − μₒ)/(1 + ω) = (μ + ωμₒ)/(1 + ω), without losing digits when |μₒ| ≫ |μ − μₒ|
    projected = mean_old + (mean - mean_old) / (1.0 + omega)[..., None]
    return jnp.where(active[..., None], projected, mean)


# ---------------------------------------------------------------------------------------------------------
# Covariance projection


def _dual_kl(mu: jax.Array, eta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """F(η) = KL(Σ̃(η)‖Σₒ) and F′(η) from the whitened eigenvalues 1 + μ `[k]` of Σ."""
    lam = 1.0 + mu
    denom = 1.0 + eta * lam
    d = mu / denom
    F = 0.5 * jnp.sum(gaussian.x_minus_log1p(d))
    dF = 0.5 * jnp.sum(d / (1.0 + d) * (-mu * lam) / jnp.square(denom))
    return F, dF


def _solve_dual(mu: jax.Array, kl0: jax.Array, bound: float, iters: int) -> jax.Array:
    """η* with F(η*) = ε: safeguarded Newton on h(u) = log F − log ε, u = log(1 + η) ∈ [0, log(1 + 1e12)]."""
    dtype = mu.dtype
    u_max = jnp.asarray(math.log1p(ETA_MAX), dtype)
    log_eps = jnp.asarray(math.log(bound), dtype)

    def step(_, carry):
        u, lo, hi = carry
        eta = jnp.expm1(u)
        F, dF = _dual_kl(mu, eta)
        h = jnp.log(F) - log_eps
        above = h > 0  # F decreases in u: the root lies above u
        lo, hi = jnp.where(above, u, lo), jnp.where(above, hi, u)
        u_newton = u - h * F / (dF * (1.0 + eta))
        ok = jnp.isfinite(u_newton) & (u_newton >= lo) & (u_newton <= hi)
        return jnp.where(ok, u_newton, 0.5 * (lo + hi)), lo, hi

    u0 = jnp.clip(0.5 * jnp.log(kl0 / bound), 0.0, u_max)
    u, _, _ = lax.fori_loop(0, iters, step, (u0, jnp.zeros((), dtype), u_max))
    return jnp.expm1(u)


def _whitened_deviation(B: jax.Array, eta: jax.Array) -> jax.Array:
    """D = S̃(η) − I = (A − I)(I + ηA)⁻¹, A = BBᵀ: the whitened projected covariance minus I, differentiable in B.

    S̃ = Lₒ⁻¹Σ̃Lₒ⁻ᵀ = (1 + η)A(I + ηA)⁻¹. D is formed from A − I = E + Eᵀ + EEᵀ (E = B − I) without adding
    I first, so its relative precision does not degrade as S̃ → I (η ≫ 1, where |D| ~ √ε_Σ).
    """
    k = B.shape[-1]
    eye = jnp.eye(k, dtype=B.dtype)
    E = B - eye
    A_minus_I = E + E.T + E @ E.T
    C = jnp.linalg.cholesky((1.0 + eta) * eye + eta * A_minus_I)  # chol(I + ηA)
    D = solve_triangular(C.T, solve_triangular(C, A_minus_I, lower=True), lower=False)
    return 0.5 * (D + D.T)


def _projected_kl(D: jax.Array, G: jax.Array) -> jax.Array:
    """KL(Σ̃‖Σₒ) = ½[tr D − log|I + D|] with I + D = GGᵀ (used for its derivative dη/dL only)."""
    return 0.5 * jnp.trace(D) - jnp.sum(jnp.log(jnp.diagonal(G)))


def _project_cov_row(L: jax.Array, L_old: jax.Array, bound: float, iters: int, rtol: float):
    """One `[k, k]` factor; returns (L̃, η, kl0, fallback)."""
    k = L.shape[-1]
    eye = jnp.eye(k, dtype=L.dtype)
    B = solve_triangular(L_old, L, lower=True)
    kl0 = gaussian.whitened_cov_kl(B)
    active = sg(kl0) > bound

    E = sg(B) - eye
    mu = jnp.linalg.eigvalsh(E + E.T + E.T @ E)  # eig(BᵀB) − 1
    mu = jnp.where(active, mu, 1.0)  # inactive rows: a harmless problem (the result is discarded)
    eta_star = _solve_dual(mu, jnp.where(active, sg(kl0), 1.0), bound, iters)
    F, dF = _dual_kl(mu, eta_star)
    converged = jnp.isfinite(F) & (jnp.abs(F - bound) <= rtol * bound)
    # The factor itself, checked before anything is differentiated: a row whose L̃ is not finite or misses the
    # bound (float32 at KL₀ ≳ 1e5·ε) falls back, and its gradient path below sees a harmless problem instead.
    eta_star = jnp.where(converged, eta_star, 0.0)
    G = jnp.linalg.cholesky(eye + _whitened_deviation(sg(B), eta_star))
    # One Newton step on the factor's own KL: float32 eigenvalues of an ill-conditioned BBᵀ misplace η* by more
    # than the bound's tolerance at KL₀ ≳ 1e3·ε; the step against KL(L̃‖Lₒ) itself removes that.
    eta_star = jnp.maximum(eta_star - (gaussian.whitened_cov_kl(G) - bound) / jnp.where(converged, dF, -1.0), 0.0)
    G = jnp.linalg.cholesky(eye + _whitened_deviation(sg(B), eta_star))
    kl_out = gaussian.whitened_cov_kl(G)
    sound = jnp.all(jnp.isfinite(G)) & (jnp.abs(kl_out - bound) <= OUTPUT_RTOL * bound)
    use = active & converged & sound
    fallback = active & ~use

    eta_star = jnp.where(use, eta_star, 0.0)
    B = jnp.where(use, B, eye)
    inv_dF = jnp.where(use, 1.0 / jnp.where(use, dF, -1.0), 0.0)
    D = _whitened_deviation(B, eta_star)
    kl_eta = _projected_kl(D, jnp.linalg.cholesky(eye + D))
    eta = eta_star - inv_dF * (kl_eta - sg(kl_eta))

    L_proj = sg(L_old) @ jnp.linalg.cholesky(eye + _whitened_deviation(B, eta))  # L̃ = Lₒ chol(S̃)
    L_proj = jnp.where(use, L_proj, jnp.where(fallback, L_old, L))
    return L_proj, eta_star, kl0, fallback


def project_cov(L: jax.Array, L_old: jax.Array, bound: float, iters: int = 30, rtol: float = 1e-4):
    """KL projection of Cholesky factors `[..., k, k]` (leading dimensions broadcast).

    Returns `(L_proj [..., k, k], info)` with `info = {"eta": [...], "kl0": [...], "fallback": [...]}`:
    the dual variable, the unprojected covariance KL and whether the row fell back to `L_old`.
    """
    L_proj, eta, kl0, fallback = gaussian.map_matrices(
        lambda a, b: _project_cov_row(a, b, bound, iters, rtol), L, sg(L_old), core_ndims=(2, 2))
    return L_proj, {"eta": eta, "kl0": kl0, "fallback": fallback}


# ---------------------------------------------------------------------------------------------------------
# Entropy control


def entropy_bound(cfg: ProjectionConfig, step: jax.Array, initial_entropy: jax.Array, k: int) -> jax.Array:
    """β(step): linear or exponential decay from H₀ to k·target_entropy over `total_train_steps`."""
    target = k * cfg.target_entropy
    frac = jnp.asarray(step, jnp.result_type(float)) / cfg.total_train_steps
    if cfg.entropy_schedule == "linear":
        return initial_entropy + frac * (target - initial_entropy)
    if cfg.entropy_schedule == "exp":
        return target + (initial_entropy - target) * cfg.temperature ** (10.0 * frac)
    return jnp.asarray(-jnp.inf)


def project_entropy(L: jax.Array, beta: jax.Array, equality: bool = False) -> jax.Array:
    """Scale L by exp((β − H(L))/k) where H(L) < β (always, with `equality`); `[..., k, k]`."""
    k = L.shape[-1]
    H = gaussian.entropy(L)
    scaled = L * jnp.exp((beta - H) / k)[..., None, None]
    if equality:
        return scaled
    return jnp.where((H < beta)[..., None, None], scaled, L)


# ---------------------------------------------------------------------------------------------------------
# The full projection and the trust-region loss


def kl_projection(cfg: ProjectionConfig, mean, L, mean_old, L_old, step=0, initial_entropy=0.0):
    """Project (μ `[..., k]`, L `[..., k, k]` or `[k, k]`) onto the trust region of the old policy.

    `step` (the iteration count, 1-based upstream) and `initial_entropy` (H₀) drive the entropy schedule.
    Returns `(mean_proj, L_proj, info)`; `info` is that of `project_cov`.
    """
    mean_old, L_old = sg(mean_old), sg(L_old)
    use_entropy = cfg.entropy_schedule != "none"
    beta = entropy_bound(cfg, step, initial_entropy, mean.shape[-1]) if use_entropy else None
    if use_entropy and cfg.entropy_first:
        L = project_entropy(L, beta, cfg.entropy_eq)
    mean_proj = project_mean(mean, mean_old, L_old, cfg.mean_bound)
    L_proj, info = project_cov(L, L_old, cfg.cov_bound, cfg.root_iters, cfg.rtol)
    if use_entropy and not cfg.entropy_first:
        L_proj = project_entropy(L_proj, beta, cfg.entropy_eq)
    return mean_proj, L_proj, info


def trust_region_loss(cfg: ProjectionConfig, mean, L, mean_proj, L_proj) -> jax.Array:
    """coeff · mean over the batch of KL(π_raw ‖ sg(π̃)) = ½‖L̃⁻¹(μ − μ̃)‖² + KLc(Σ‖Σ̃); a scalar."""
    mean_part, cov_part = gaussian.kl(mean, L, sg(mean_proj), sg(L_proj))
    return cfg.trust_region_coeff * jnp.mean(mean_part + cov_part)
