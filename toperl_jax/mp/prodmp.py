"""ProDMP trajectories in JAX, numerically matching MP_PyTorch 0.1.4 (`mp_pytorch.mp.ProDMP`).

Math (s = t / tau is scaled time, primes are d/ds):
  phase     x(s) = exp(-alpha_phase * max(s, 0))
  basis     b_k(x): K Gaussian RBFs in phase, normalised to sum to one (see `basis.py`)
  DMP       y'' + alpha y' + alpha^2/4 (y - g) = x(s) sum_k b_k(x(s)) w_k   (critically damped)
  solution  y(s) = c1 y1(s) + c2 y2(s) + sum_k B_k(s) w_k + B_g(s) g,
            y1 = e^{-alpha s/2}, y2 = s y1
            B_k, B_g: particular solutions with zero state at s = 0 (precomputed table, `basis.py`)
  IC        c1, c2 make y(s0) = init_pos and y'(s0) = tau * init_vel at s0 = init_time / tau.
            With D = s - s0 and q = y1(s)/y1(s0) = e^{-alpha D / 2} this gives
              y(s) = q (1 + alpha D/2) p0 + q D (tau v0) + sum_j [B_j(s) - q(1 + alpha D/2) B_j(s0)
                     - q D B_j'(s0)] w_j          (j over basis functions and the goal),
            and the velocity in real time is y'(s) / tau.
  scaling   each w_j is multiplied by weights_scale (goal: goal_scale), times 1 / max_s B_j(s)
            when auto_scale_basis; relative_goal adds the unscaled goal column * init_pos,
            i.e. the goal parameter is an offset from the initial position; disable_goal fixes
            the goal parameter to 0.

How MP_PyTorch evaluates this, and what we reproduce:
  MP_PyTorch tabulates B, B' *and* y1, y2, y1', y2' on a grid of 6 * round(tau/dt) + 1 nodes
  over s in [0, 6] (B_k by a trapezoid rule), and evaluates all of them at a time t by linear
  interpolation at the fractional node index u = max(t, 0) / dt. We do the same:
  - B, B' come from the same float64 table (`basis.prodmp_basis_tables`), gathered at floor(u)
    and floor(u) + 1 and interpolated. The index is clipped to [0, N-2], so beyond the grid end
    the last interval is extrapolated linearly, exactly like MP_PyTorch's `torch.lerp`
    (MP_PyTorch raises for t > 6 tau; under jit we cannot, so do not go there).
  - y1, y2 are *also* linearly interpolated in MP_PyTorch, which changes the IC solution by up
    to O(alpha^2 h^2) between grid nodes. We do not tabulate them: the interpolated values have
    a closed form, y1(u) = e^{-alpha s_i/2} (1 - w + w r) and
    y2(u) = y1(u) (s_i + h w r / (1 - w + w r)) with i = floor(u), w = u - i, h = 1/round(tau/dt),
    r = e^{-alpha h/2}, from which we form q and D directly as ratios and differences. These are
    the numbers MP_PyTorch computes, but we never form y1(s0)^2 (which underflows float32 for
    late init times) nor s - s0 by subtracting two large numbers.
  - Node i stands for scaled time i / round(tau/dt) but is looked up at t = i * dt. When tau/dt
    is not an integer, the DMP therefore effectively runs with tau' = round(tau/dt) * dt, while
    the init_vel scaling and the velocity output still use tau. This is MP_PyTorch's behaviour
    and we keep it (the velocity then is not exactly d pos / dt); choose dt dividing tau.

Precision: the table and scale factors are built once per config in float64 (numpy, cached) and
cast to the dtype of `weights`; the runtime arithmetic is then done in that dtype. The trapezoid
integrals are accumulated as a discounted recursion, so no exp(alpha s / 2) is ever formed
(MP_PyTorch forms it and, in float32, overflows to NaN for alpha > ~29.5).

Compilation: the config-derived numbers enter the jitted cores as array arguments (`_Constants`)
and only the flags that change the program are static, so eager calls compile once per set of
array shapes rather than once per config; inside a user's jit they are constants either way.
"""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from toperl_jax.mp import basis as basis_lib


@dataclasses.dataclass(frozen=True)
class ProDMPConfig:
    """Static ProDMP configuration (hashable: pass it as a static argument to jax.jit).

    Field names and defaults follow MP_PyTorch's ProDMP (via MPFactory, phase delay 0).
    """

    num_dof: int
    """Number of degrees of freedom (independent DMPs sharing time and basis)."""
    num_basis: int
    """Number of RBF basis functions per DoF (the goal parameter comes on top)."""
    tau: float
    """Duration scale in seconds: the basis centres span t in [0, tau]."""
    dt: float
    """Time step in seconds; sets the precompute grid (round(tau / dt) intervals per tau)."""
    alpha_phase: float = 3.0
    """Decay rate of the canonical phase x = exp(-alpha_phase t / tau)."""
    alpha: float = 25.0
    """DMP stiffness: y'' + alpha y' + alpha^2/4 (y - g) = forcing (critically damped)."""
    basis_bandwidth_factor: float = 3.0
    """RBF bandwidth = factor / (distance to the next centre in phase)^2."""
    num_basis_outside: int = 0
    """Number of basis centres placed beyond each end of [0, tau]."""
    weights_scale: float = 1.0
    """Multiplies the basis weights."""
    goal_scale: float = 1.0
    """Multiplies the goal parameter."""
    auto_scale_basis: bool = False
    """Additionally scale every column by 1 / its maximum over the precompute grid."""
    relative_goal: bool = False
    """Goal parameter is an offset from init_pos (converges to init_pos + scaled goal)."""
    disable_goal: bool = False
    """No goal parameter: weights have num_dof * num_basis entries and the goal is 0
    (or init_pos with relative_goal)."""

    def __post_init__(self):
        def check(ok, name, expected):
            if not ok:
                raise ValueError(
                    f"ProDMPConfig.{name} must be {expected}, got {getattr(self, name)!r}")

        for name in ("num_dof", "num_basis", "num_basis_outside"):
            value = getattr(self, name)
            check(isinstance(value, (int, np.integer)) and not isinstance(value, bool), name,
                  "an int")
            object.__setattr__(self, name, int(value))
        for name in ("tau", "dt", "alpha_phase", "alpha", "basis_bandwidth_factor",
                     "weights_scale", "goal_scale"):
            value = getattr(self, name)
            check(isinstance(value, (int, float, np.integer, np.floating))
                  and not isinstance(value, bool) and np.isfinite(value), name, "a finite float")
            object.__setattr__(self, name, float(value))
        for name in ("auto_scale_basis", "relative_goal", "disable_goal"):
            check(isinstance(getattr(self, name), (bool, np.bool_)), name, "a bool")
            object.__setattr__(self, name, bool(getattr(self, name)))

        check(self.num_dof >= 1, "num_dof", ">= 1")
        check(self.num_basis >= 1, "num_basis", ">= 1")
        for name in ("tau", "dt", "alpha_phase", "alpha", "basis_bandwidth_factor"):
            check(getattr(self, name) > 0, name, "> 0")
        check(self.num_basis_outside >= 0, "num_basis_outside", ">= 0")
        if self.num_basis == 1:
            check(self.num_basis_outside == 0, "num_basis_outside", "0 when num_basis == 1")
        else:
            check(self.num_basis - 2 * self.num_basis_outside >= 2, "num_basis_outside",
                  f"<= (num_basis - 2) / 2 = {(self.num_basis - 2) // 2} for num_basis="
                  f"{self.num_basis} (centres must span [0, tau])")
        check(basis_lib.grid_steps_per_tau(self.tau, self.dt) >= 1, "dt",
              f"< 2 * tau so that round(tau / dt) >= 1 (tau={self.tau})")

    @property
    def params_per_dof(self) -> int:
        """Parameters per DoF: num_basis weights, then the goal unless disable_goal."""
        return self.num_basis + (0 if self.disable_goal else 1)

    @property
    def num_params(self) -> int:
        """Length of the last axis of `weights`: num_dof * params_per_dof."""
        return self.num_dof * self.params_per_dof


class ProDMPBasis(NamedTuple):
    """Everything a ProDMP trajectory is linear in, at given times and initial time.

        pos[..., t, d] = pos_ic[..., t, 0] init_pos[d] + pos_ic[..., t, 1] init_vel[d]
                         + sum_k pos_H[..., t, k] w[d, k]
    and the same for vel with vel_ic, vel_H. w = weights.reshape(num_dof, params_per_dof).
    All scalings (weights_scale, goal_scale, auto_scale_basis, tau) and the relative-goal term
    are folded in; velocities are per second.

    Fields:
        pos_H, vel_H:   [..., T, params_per_dof] (goal column last; absent with disable_goal)
        pos_ic, vel_ic: [..., T, 2] coefficients of (init_pos, init_vel)
    """

    pos_H: jax.Array
    vel_H: jax.Array
    pos_ic: jax.Array
    vel_ic: jax.Array


class _Constants(NamedTuple):
    """Numbers derived from the config only, as arrays.

    The jitted cores take these as arguments rather than closing over them, so that one XLA
    compilation serves every config with the same array shapes (this makes eager calls cheap;
    inside a user's jit they are constants either way).
    """

    table: np.ndarray | jax.Array  # [N, 2K]: pos basis columns, then vel basis (d/ds) columns
    scale: np.ndarray | jax.Array  # [K]: weights_goal_scale
    inv_dt: np.ndarray | jax.Array  # scalar 1 / dt
    tau: np.ndarray | jax.Array  # scalar
    half_alpha: np.ndarray | jax.Array  # scalar alpha / 2
    h: np.ndarray | jax.Array  # scalar grid spacing in scaled time, 1 / round(tau / dt)
    decay: np.ndarray | jax.Array  # scalar exp(-alpha h / 2) = y1 ratio of neighbouring nodes
    last_interval: np.ndarray | jax.Array  # int32 scalar N - 2 (index of the last grid interval)


@functools.lru_cache(maxsize=128)
def _numpy_constants(cfg: ProDMPConfig) -> _Constants:
    """float64 numpy constants of a config (cached; arrays are read-only)."""
    pos, vel = basis_lib.prodmp_basis_tables(
        cfg.num_basis, cfg.tau, cfg.dt, cfg.alpha, cfg.alpha_phase,
        cfg.basis_bandwidth_factor, cfg.num_basis_outside)
    scale = np.full(cfg.num_basis + 1, cfg.weights_scale)
    scale[-1] = cfg.goal_scale
    if cfg.auto_scale_basis:
        scale = scale / pos.max(axis=0)
    h = 1.0 / basis_lib.grid_steps_per_tau(cfg.tau, cfg.dt)
    consts = _Constants(
        table=np.concatenate([pos, vel], axis=-1),
        scale=scale,
        inv_dt=np.float64(1.0 / cfg.dt),
        tau=np.float64(cfg.tau),
        half_alpha=np.float64(0.5 * cfg.alpha),
        h=np.float64(h),
        decay=np.float64(np.exp(-0.5 * cfg.alpha * h)),
        last_interval=np.int32(len(pos) - 2),
    )
    for x in consts:
        if isinstance(x, np.ndarray):
            x.flags.writeable = False
    return consts


def _constants(cfg: ProDMPConfig, dtype) -> _Constants:
    """The config's constants as JAX arrays, floats cast to `dtype`."""
    return _Constants(*(jnp.asarray(x, jnp.int32 if x.dtype == np.int32 else dtype)
                        for x in _numpy_constants(cfg)))


def weights_goal_scale(cfg: ProDMPConfig) -> np.ndarray:
    """Scale applied to [w_1..w_K, g] per DoF (MP_PyTorch's `weights_goal_scale`), float64 [K]."""
    return _numpy_constants(cfg).scale.copy()


def _grid_position(c: _Constants, times: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Node index i in [0, N-2] (int32) and interpolation weight w = u - i of u = max(t,0)/dt.

    w is in [0, 1) except beyond the last node, where w >= 1 extrapolates the last interval.
    """
    u = jnp.maximum(times, 0) * c.inv_dt
    i = jnp.clip(jnp.floor(u), 0, c.last_interval.astype(u.dtype))
    return i.astype(jnp.int32), u - i


def _interpolate(table: jax.Array, i: jax.Array, w: jax.Array) -> jax.Array:
    """Rows of table [N, C] linearly interpolated at (i, w) [...] -> [..., C]."""
    lo, hi = table[i], table[i + 1]
    return lo + w[..., None] * (hi - lo)


def _ic_coefficients(c: _Constants, i, w, i0, w0):
    """Homogeneous-solution coefficients carrying (y, y') from s0 to s (MP_PyTorch's xi_1..4).

    Args: grid positions (i, w) of the times [..., T] and (i0, w0) of init_time [..., 1].
    Returns (each [..., T]):
        pos_p, pos_v: y(s)  = pos_p * y(s0) + pos_v * y'(s0)   (+ particular terms)
        vel_p, vel_v: y'(s) = vel_p * y(s0) + vel_v * y'(s0)
    computed from the linearly interpolated y1, y2 in closed form (see the module docstring):
    q = y1(s) / y1(s0), D = y2(s)/y1(s) - y2(s0)/y1(s0).
    """
    a, h, r = c.half_alpha, c.h, c.decay
    y1_hat, y1_hat0 = 1 - w * (1 - r), 1 - w0 * (1 - r)  # y1 / exp(-a s_i), in [r, 1] on the grid
    di = (i - i0).astype(w.dtype)
    q = jnp.exp(-a * h * di) * y1_hat / y1_hat0
    delta = h * (di + w * r / y1_hat - w0 * r / y1_hat0)
    return q * (1 + a * delta), q * delta, -(a * a) * q * delta, q * (1 - a * delta)


@functools.partial(jax.jit, static_argnames=("relative_goal", "disable_goal"))
def _basis_core(c: _Constants, times, init_time, *, relative_goal: bool, disable_goal: bool
                ) -> ProDMPBasis:
    """`prodmp_basis` on validated arrays of one floating dtype."""
    k = c.scale.shape[-1]
    i, w = _grid_position(c, times)  # [..., T]
    i0, w0 = _grid_position(c, init_time[..., None])  # [..., 1]
    pos_p, pos_v, vel_p, vel_v = _ic_coefficients(c, i, w, i0, w0)

    at_t = _interpolate(c.table, i, w)  # [..., T, 2k]
    at_0 = _interpolate(c.table, i0, w0)  # [..., 1, 2k]
    b_t, v_t, b_0, v_0 = at_t[..., :k], at_t[..., k:], at_0[..., :k], at_0[..., k:]
    pos_H = b_t - pos_p[..., None] * b_0 - pos_v[..., None] * v_0  # unscaled, [..., T, k]
    vel_H = v_t - vel_p[..., None] * b_0 - vel_v[..., None] * v_0  # d/ds, unscaled

    if relative_goal:  # + unscaled goal column * init_pos
        pos_p = pos_p + pos_H[..., -1]
        vel_p = vel_p + vel_H[..., -1]

    pos_H, vel_H = pos_H * c.scale, vel_H * (c.scale / c.tau)
    if disable_goal:
        pos_H, vel_H = pos_H[..., :-1], vel_H[..., :-1]
    return ProDMPBasis(
        pos_H=pos_H,
        vel_H=vel_H,
        pos_ic=jnp.stack([pos_p, pos_v * c.tau], axis=-1),
        vel_ic=jnp.stack([vel_p / c.tau, vel_v], axis=-1),
    )


def _float_dtype(x: jax.Array):
    """x's dtype if it is floating, else float32."""
    return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.dtype(jnp.float32)


def prodmp_basis(cfg: ProDMPConfig, times: jax.Array, init_time: jax.Array) -> ProDMPBasis:
    """IC-corrected, scaled ProDMP basis at `times` for trajectories that start at `init_time`.

    Args:
        cfg: static configuration.
        times: [..., T] absolute times in seconds (the output has this dtype if it is floating,
            else float32).
        init_time: [...] time at which init_pos / init_vel are imposed; broadcasts with
            times.shape[:-1].
    Returns:
        ProDMPBasis with fields of shape [*batch, T, ...], batch = broadcast(times.shape[:-1],
        init_time.shape).
    """
    times = jnp.asarray(times)
    dtype = _float_dtype(times)
    times, init_time = times.astype(dtype), jnp.asarray(init_time, dtype)
    if times.ndim < 1:
        raise ValueError(f"times must have shape [..., T], got {times.shape}")
    return _basis_core(_constants(cfg, dtype), times, init_time,
                       relative_goal=cfg.relative_goal, disable_goal=cfg.disable_goal)


@functools.partial(jax.jit, static_argnames=("relative_goal", "disable_goal"))
def _trajectory_core(c: _Constants, weights, times, init_time, init_pos, init_vel, *,
                     relative_goal: bool, disable_goal: bool):
    """`prodmp_trajectory` on validated arrays of one floating dtype."""
    basis = _basis_core(c, times, init_time, relative_goal=relative_goal,
                        disable_goal=disable_goal)
    num_dof = init_pos.shape[-1]
    w = weights.reshape(*weights.shape[:-1], num_dof, weights.shape[-1] // num_dof)
    w_t = jnp.swapaxes(w, -1, -2)  # [..., params_per_dof, num_dof]
    p0, v0 = init_pos[..., None, :], init_vel[..., None, :]  # [..., 1, num_dof]

    def combine(ic, H):
        return ic[..., 0:1] * p0 + ic[..., 1:2] * v0 + jnp.matmul(H, w_t)

    return combine(basis.pos_ic, basis.pos_H), combine(basis.vel_ic, basis.vel_H)


def prodmp_trajectory(cfg: ProDMPConfig, weights: jax.Array, times: jax.Array,
                      init_time: jax.Array, init_pos: jax.Array, init_vel: jax.Array
                      ) -> tuple[jax.Array, jax.Array]:
    """Decode ProDMP parameters into desired positions and velocities.

    Equivalent to MP_PyTorch's `mp.update_inputs(times, weights, None, init_time, init_pos,
    init_vel); mp.get_traj_pos(), mp.get_traj_vel()`.

    Args:
        cfg: static configuration (hashable; mark it static under jax.jit).
        weights: [..., num_dof * params_per_dof], per DoF block [w_1 .. w_num_basis, goal]
            (no goal with disable_goal).
        times: [..., T] absolute times in seconds.
        init_time: [...] time of the initial condition.
        init_pos, init_vel: [..., num_dof] position and velocity (per second) at init_time.
        All leading batch dims broadcast with numpy rules (e.g. weights [B, W] with times [T]
        and init_time []).
    Returns:
        pos, vel: [*batch, T, num_dof] in the dtype of `weights` (float32 if it is not a
        floating array); all other inputs are cast to that dtype.
    """
    weights = jnp.asarray(weights)
    dtype = _float_dtype(weights)
    weights = weights.astype(dtype)
    times, init_time, init_pos, init_vel = (
        jnp.asarray(x, dtype) for x in (times, init_time, init_pos, init_vel))
    if weights.ndim < 1 or weights.shape[-1] != cfg.num_params:
        raise ValueError(f"weights must have shape [..., {cfg.num_params}] (num_dof={cfg.num_dof}"
                         f" x {cfg.params_per_dof} params per dof), got {weights.shape}")
    if times.ndim < 1:
        raise ValueError(f"times must have shape [..., T], got {times.shape}")
    for name, x in (("init_pos", init_pos), ("init_vel", init_vel)):
        if x.ndim < 1 or x.shape[-1] != cfg.num_dof:
            raise ValueError(f"{name} must have shape [..., {cfg.num_dof}], got {x.shape}")
    try:
        np.broadcast_shapes(weights.shape[:-1], times.shape[:-1], init_time.shape,
                            init_pos.shape[:-1], init_vel.shape[:-1])
    except ValueError:
        raise ValueError(
            f"batch dims do not broadcast: weights[:-1]={weights.shape[:-1]}, "
            f"times[:-1]={times.shape[:-1]}, init_time={init_time.shape}, "
            f"init_pos[:-1]={init_pos.shape[:-1]}, init_vel[:-1]={init_vel.shape[:-1]}") from None
    return _trajectory_core(_constants(cfg, dtype), weights, times, init_time, init_pos,
                            init_vel, relative_goal=cfg.relative_goal,
                            disable_goal=cfg.disable_goal)


def decode_token_actions(cfg: ProDMPConfig, weights: jax.Array, times: jax.Array, init_time: jax.Array,
                         init_pos: jax.Array, init_vel: jax.Array) -> jax.Array:
    """Desired (pos, vel) at one time per token: `weights [B, N, k]`, `times [B, N]`, an initial condition
    broadcasting to `[B, N]` (`init_time`) and `[B, N, dof]` (`init_pos`, `init_vel`) → `[B, N, 2·dof]`.
    A ProDMP is evaluated pointwise in time, so this equals decoding each row whole and reading its times."""
    pos, vel = prodmp_trajectory(cfg, weights, times[..., None], init_time, init_pos, init_vel)
    return jnp.concatenate([pos[..., 0, :], vel[..., 0, :]], axis=-1)


def fix_relative_goal(cfg: ProDMPConfig, weights: jax.Array, anchor_pos: jax.Array, init_pos: jax.Array):
    """With a relative goal, weights drawn at q_anchor and decoded from q_init keep their goal:
    goal ← goal − (q_init − q_anchor) (the last weight of each DoF block; upstream
    `fix_relative_goal_for_segments`, exact only for an effective goal scale of 1, spec trpl §6). No-op
    without `relative_goal`. `weights [..., k]`, `anchor_pos` and `init_pos` broadcasting to `[..., dof]`."""
    if not cfg.relative_goal:
        return weights
    b = cfg.params_per_dof
    w = weights.reshape(*weights.shape[:-1], cfg.num_dof, b)
    w = w.at[..., b - 1].add(-(init_pos - anchor_pos))
    return w.reshape(weights.shape)
