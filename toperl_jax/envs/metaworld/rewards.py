"""Reward shaping primitives of Meta-World's v2 reward functions, in JAX (float32, jit/vmap-safe).

Meta-World builds its rewards from dm_control's `tolerance` and a few products; the definitions below are
written from their documented math:

    tolerance(x, (lo, hi), margin, sigmoid, v=0.1)
        = 1                                   if lo <= x <= hi
        = s(d / margin)  with d = distance of x to the nearer bound, if margin > 0
        = 0                                   if margin == 0 and x is outside
      long_tail: s(u) = 1 / ((u c)^2 + 1), c = sqrt(1/v - 1)   (s(1) = v)
      gaussian:  s(u) = exp(-(u c)^2 / 2), c = sqrt(-2 ln v)
    hamacher_product(a, b) = a b / (a + b - a b)   (0 if the denominator is 0)
    rect_prism_tolerance(p, zero, one) = prod_i (p_i - zero_i) / (one_i - zero_i) if p lies in the box
        spanned by zero and one (each axis in either order), else 1.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

VALUE_AT_MARGIN = 0.1


def _sigmoid(u, sigmoid: str, value_at_1: float = VALUE_AT_MARGIN):
    if sigmoid == "long_tail":
        c = float(np.sqrt(1.0 / value_at_1 - 1.0))
        return 1.0 / ((u * c) ** 2 + 1.0)
    if sigmoid == "gaussian":
        c = float(np.sqrt(-2.0 * np.log(value_at_1)))
        return jnp.exp(-0.5 * (u * c) ** 2)
    raise ValueError(f"sigmoid {sigmoid!r} not implemented (long_tail, gaussian)")


def tolerance(x, bounds=(0.0, 0.0), margin=0.0, sigmoid: str = "gaussian"):
    """[] 1 inside [lo, hi], a sigmoid of the distance to the interval / margin outside (0 if margin = 0)."""
    lo, hi = bounds
    x = jnp.asarray(x, jnp.float32)
    margin = jnp.asarray(margin, jnp.float32)
    inside = (lo <= x) & (x <= hi)
    d = jnp.where(x < lo, lo - x, x - hi)
    safe = jnp.where(margin > 0, margin, 1.0)
    outside = jnp.where(margin > 0, _sigmoid(d / safe, sigmoid), 0.0)
    return jnp.where(inside, 1.0, outside)


def hamacher_product(a, b):
    """[] Hamacher t-norm a b / (a + b - a b) of a, b in [0, 1] (0 where the denominator is 0)."""
    den = a + b - a * b
    return jnp.where(den > 0, a * b / jnp.where(den > 0, den, 1.0), 0.0)


def rect_prism_tolerance(curr, zero, one):
    """[] product of the per-axis fractions (curr - zero) / (one - zero) inside the box, 1 outside."""
    lo, hi = jnp.minimum(zero, one), jnp.maximum(zero, one)
    inside = jnp.all((lo <= curr) & (curr <= hi))
    return jnp.where(inside, jnp.prod((curr - zero) / (one - zero)), 1.0)


def gripper_caging(action, obj_pos, tcp, left_pad, right_pad, obj_init_pos, init_tcp, *, obj_radius: float,
                   pad_success_thresh: float, object_reach_radius: float, xz_thresh: float,
                   desired_gripper_effort: float = 1.0, high_density: bool = False,
                   medium_density: bool = False):
    """Meta-World's generic `_gripper_caging_reward` (SawyerXYZEnv), all positions [3] world frame.

    y caging: each pad's |y - obj_y| must lie in [obj_radius, pad_success_thresh] (long_tail tolerance with
    margin | |pad_y - obj_init_y| - pad_success_thresh |), combined by a Hamacher product; xz caging: the
    tcp-object distance in the x-z plane within xz_thresh (margin ||obj_init_xz - init_tcp_xz|| - xz_thresh);
    caging = H(y, xz); gripping = clip(a_g, 0, effort)/effort if caging > 0.97 else 0;
    result = H(caging, gripping), then (result + caging)/2 (high density) or (result + reach)/2 (medium).
    """
    pad_y = jnp.stack([left_pad[1], right_pad[1]])
    pad_to_obj = jnp.abs(pad_y - obj_pos[1])
    pad_to_init = jnp.abs(pad_y - obj_init_pos[1])
    margin_lr = jnp.abs(pad_to_init - pad_success_thresh)
    lr = [tolerance(pad_to_obj[i], (obj_radius, pad_success_thresh), margin_lr[i], "long_tail")
          for i in range(2)]
    caging_y = hamacher_product(lr[0], lr[1])
    xz = jnp.array([0, 2])
    margin_xz = jnp.linalg.norm(obj_init_pos[xz] - init_tcp[xz]) - xz_thresh
    caging_xz = tolerance(jnp.linalg.norm(tcp[xz] - obj_pos[xz]), (0.0, xz_thresh), margin_xz, "long_tail")
    closed = jnp.minimum(jnp.maximum(0.0, action[-1]), desired_gripper_effort) / desired_gripper_effort
    caging = hamacher_product(caging_y, caging_xz)
    gripping = jnp.where(caging > 0.97, closed, 0.0)
    out = hamacher_product(caging, gripping)
    if high_density and medium_density:
        raise ValueError("high_density and medium_density exclude each other")
    if high_density:
        out = (out + caging) / 2
    if medium_density:
        reach_margin = jnp.abs(jnp.linalg.norm(obj_init_pos - init_tcp) - object_reach_radius)
        reach = tolerance(jnp.linalg.norm(obj_pos - tcp), (0.0, object_reach_radius), reach_margin, "long_tail")
        out = (out + reach) / 2
    return out
