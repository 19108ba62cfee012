"""ProDMP basis tables, precomputed once per configuration with numpy in float64.

Everything here depends only on the configuration (never on weights, times or initial
conditions), runs on the host at trace time, and is embedded in jitted code as constants.

All functions work in *scaled time* s = t / tau. The table rows are the nodes s_i = i / n of a
uniform grid over [0, length_factor] (n = round(tau / dt) nodes per tau); the columns are the
particular solutions of the DMP for a unit weight on each basis function, then the goal.
"""

import numpy as np

PRECOMPUTE_LENGTH_FACTOR = 6  # the grid covers s in [0, 6], i.e. t in [0, 6 tau]


def grid_steps_per_tau(tau: float, dt: float) -> int:
    """Number of grid intervals per tau: round(tau / dt), rounding half to even.

    Computed as round(1 / (dt / tau)), the same expression MP_PyTorch evaluates.
    """
    return round(1.0 / (dt / tau))


def rbf_centers_and_widths(num_basis: int, alpha_phase: float, bandwidth_factor: float,
                           num_basis_outside: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres (in phase) and bandwidths of the RBF basis.

    The centres sit at equally spaced scaled times from -m*d to 1 + m*d (m = num_basis_outside,
    d = 1 / (num_basis - 2m - 1)), mapped to phase x = exp(-alpha_phase * s). Each bandwidth is
    bandwidth_factor / gap**2, where gap is the phase distance to the next centre (one virtual
    centre is added after the last); with exactly two basis functions the last gap is doubled.
    A single basis function sits at s = 0.5 with bandwidth bandwidth_factor.

    Returns:
        centers, widths: [num_basis] each.
    """
    if num_basis == 1:
        return np.exp(-alpha_phase * np.array([0.5])), np.array([float(bandwidth_factor)])
    spacing = 1.0 / (num_basis - 2 * num_basis_outside - 1)
    centers_s = (np.arange(num_basis + 1) - num_basis_outside) * spacing  # +1 virtual centre
    centers_x = np.exp(-alpha_phase * centers_s)
    gaps = centers_x[:-1] - centers_x[1:]
    if num_basis == 2:
        gaps[-1] *= 2.0
    return centers_x[:-1], bandwidth_factor / gaps**2


def normalized_rbf(phase: np.ndarray, centers: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Gaussian RBFs in phase, normalised to sum to one (unless there is only one).

    b_k(x) = exp(-w_k (x - c_k)^2 / 2) / sum_j exp(-w_j (x - c_j)^2 / 2), evaluated as a softmax
    so that it never divides by an underflowed sum.

    Args:
        phase: [N]; centers, widths: [K].
    Returns:
        [N, K].
    """
    logits = -0.5 * widths * (phase[:, None] - centers) ** 2
    if len(centers) == 1:
        return np.exp(logits)
    logits = logits - logits.max(axis=-1, keepdims=True)
    basis = np.exp(logits)
    return basis / basis.sum(axis=-1, keepdims=True)


def discounted_cumulative_trapezoid(f: np.ndarray, h: float, decay: float) -> np.ndarray:
    """out[i] = exp(-a s_i) * integral_0^{s_i} exp(a s) f(s) ds by the trapezoid rule on the grid.

    decay = exp(-a h). Written as the recursion out[i+1] = decay * out[i] + h/2 (decay f[i] +
    f[i+1]), which is the same sum as the trapezoid rule but never forms exp(a s) (which
    overflows float64 for large alpha).

    Args:
        f: [N, K] integrand on the grid nodes.
    Returns:
        [N, K].
    """
    increments = 0.5 * h * (decay * f[:-1] + f[1:])
    out = np.zeros_like(f)
    for i, inc in enumerate(increments):
        out[i + 1] = decay * out[i] + inc
    return out


def prodmp_basis_tables(num_basis: int, tau: float, dt: float, alpha: float, alpha_phase: float,
                        bandwidth_factor: float, num_basis_outside: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Position and velocity basis of the ProDMP on the precompute grid.

    The DMP in scaled time, y'' + alpha y' + alpha^2/4 (y - g) = x(s) * sum_k b_k(x(s)) w_k, has
    y1 = exp(-alpha s / 2) and y2 = s y1 as homogeneous solutions. Column k < K-1 is the
    particular solution for w_k = 1, g = 0 with y(0) = y'(0) = 0:
        B_k(s) = integral_0^s (s - s') exp(-alpha (s - s') / 2) x(s') b_k(s') ds'
               = s * P_k(s) - Q_k(s),
    with P_k, Q_k the discounted integrals of x b_k and s x b_k, integrated by the trapezoid
    rule on the grid (as MP_PyTorch does). The last column is the goal solution in closed form,
    B_g(s) = 1 - exp(-alpha s / 2) (1 + alpha s / 2). Velocities are d/ds (not d/dt):
        V_k = P_k - alpha/2 * B_k,   V_g = (alpha/2)^2 s exp(-alpha s / 2).

    Returns:
        pos, vel: [N, num_basis + 1] with N = 6 * round(tau / dt) + 1, float64.
    """
    steps = grid_steps_per_tau(tau, dt)
    h = 1.0 / steps
    s = np.arange(PRECOMPUTE_LENGTH_FACTOR * steps + 1) * h
    phase = np.exp(-alpha_phase * s)
    centers, widths = rbf_centers_and_widths(num_basis, alpha_phase, bandwidth_factor,
                                             num_basis_outside)
    forcing = phase[:, None] * normalized_rbf(phase, centers, widths)  # [N, num_basis]

    decay = np.exp(-0.5 * alpha * h)
    p = discounted_cumulative_trapezoid(forcing, h, decay)
    q = discounted_cumulative_trapezoid(s[:, None] * forcing, h, decay)
    pos_w = s[:, None] * p - q
    vel_w = p - 0.5 * alpha * pos_w

    y1 = np.exp(-0.5 * alpha * s)
    pos_g = 1.0 - y1 * (1.0 + 0.5 * alpha * s)
    vel_g = (0.5 * alpha) ** 2 * s * y1
    return (np.concatenate([pos_w, pos_g[:, None]], axis=-1),
            np.concatenate([vel_w, vel_g[:, None]], axis=-1))
