"""The solver study's measuring code (benchmarks/box_pushing_parity.py, benchmarks/hopper_solver.py; issue 25):
settings parsing, the final-box and jump comparisons against hand-computed geometry, and the scripted push
moving the box in MJX (the study's premise: every episode pushes the box)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import box_pushing_parity as bp
from benchmarks import hopper_solver as hs


def test_parse_setting():
    assert bp.parse_setting("4,8") == (4, 8, None, None)
    assert bp.parse_setting("10,10,1e-8") == (10, 10, 1e-8, None)
    assert bp.parse_setting("100,50,1e-8,pyramidal") == (100, 50, 1e-8, "pyramidal")
    for bad in ("4", "4,8,1e-8,square", "1,2,3,elliptic,5"):
        with pytest.raises(SystemExit, match="IT,LS"):
            bp.parse_setting(bad)


def test_final_box_stats_against_hand_geometry():
    """Box b at the start moved 0.1 m along x; box a 0.13 m along x and 0.04 m along y (3-4-5 apart), a turned
    by 0.2 rad about z against b's identity quaternion; returns 9 and 10."""
    box0 = np.zeros((2, 3))
    b = np.array([[0.1, 0, 0, 1, 0, 0, 0]] * 2)
    a = b.copy()
    a[:, :2] = [0.13, 0.04]
    a[1, 3:] = [np.cos(0.1), 0, 0, np.sin(0.1)]
    s = bp.final_box_stats(a, b, box0, np.array([9.0, 9.0]), np.array([10.0, 10.0]))
    assert s["box_pos_median_mm"] == pytest.approx(50.0) and s["box_pos_max_mm"] == pytest.approx(50.0)
    assert s["further_median_mm"] == pytest.approx(1000 * (np.hypot(0.13, 0.04) - 0.1))
    assert s["box_rot_median_rad"] == pytest.approx(0.1, abs=1e-6)  # median of 0 and 0.2
    assert s["return_rel_median"] == pytest.approx(0.1) and s["return_rel_max"] == pytest.approx(0.1)


def test_jump_comparison_counts_latches_and_heights():
    T = 5
    a = {"reward": np.ones((2, T)), "height": np.zeros((2, T)), "max_height": np.zeros((2, T)),
         "init_floor_contact": np.array([[0, 1, 1, 1, 1]] * 2), "has_left_floor": np.array([[0, 0, 1, 1, 1]] * 2),
         "contact_with_floor": np.zeros((2, T))}
    b = {k: v.copy().astype(float) for k, v in a.items()}
    b["reward"][1, 0] += 0.5
    b["height"][0, 3] = 0.02
    b["max_height"][0, -1] = 0.03
    b["has_left_floor"][1] = [0, 0, 0, 1, 1]  # leaves one step later
    assert list(hs.first_steps(a["has_left_floor"])) == [2, 2] and list(hs.first_steps(np.zeros((1, T)))) == [-1]
    c = hs.compare(a, b)
    assert c["return_abs_diff_max"] == pytest.approx(0.5) and c["return_abs_diff_median"] == pytest.approx(0.25)
    assert c["height_path_max_abs_diff_max_m"] == pytest.approx(0.02)
    assert c["max_height_abs_diff_max_m"] == pytest.approx(0.03)
    assert c["latch_steps_identical"] == 1 and c["episodes"] == 2


@pytest.mark.slow  # compiles a box-pushing rollout (~1-2 min on a CPU)
def test_scripted_push_moves_the_box():
    from toperl_jax import envs

    task = envs.make("box-pushing-dense")
    n = 4
    states = jax.vmap(task.reset)(jax.random.split(jax.random.PRNGKey(0), n))
    desired = jax.vmap(lambda s, k: bp.push_plan(task, s, k))(states, jax.random.split(jax.random.PRNGKey(1), n))
    assert desired.shape == (n, task.episode_length, 14) and bool(jnp.all(jnp.isfinite(desired)))
    _, tr = jax.jit(jax.vmap(task.rollout))(states, desired)
    moved = np.linalg.norm(np.asarray(tr.final_obs[:, 14:16] - states.obs[:, 14:16]), axis=-1)
    assert np.all(moved > 0.05), moved  # the docstring's claim: 0.14-0.57 m with the default overshoot
