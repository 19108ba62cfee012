"""ProDMP decoder: parity with MP_PyTorch 0.1.4, analytic properties, jit/vmap/grad, validation.

The MP_PyTorch reference values are committed fixtures written by
tests/fixtures/prodmp/generate_prodmp_fixtures.py (torch / mp_pytorch are not needed here).
The fixture cases come in groups that share array shapes, so the eager parity loop compiles
once per group (the ProDMP config enters the jitted core as data, not as a static argument).
"""

import dataclasses
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toperl_jax.mp import ProDMPConfig, prodmp_basis, prodmp_trajectory, weights_goal_scale

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "prodmp"
INPUTS = ("weights", "times", "init_time", "init_pos", "init_vel")


@functools.cache
def fixture_cases() -> list[tuple[dict, dict]]:
    """[(config kwargs, arrays)] for every MP_PyTorch reference case."""
    groups = json.loads((FIXTURES / "prodmp_configs.json").read_text())["groups"]
    with np.load(FIXTURES / "prodmp_cases.npz") as data:
        arrays = {key: data[key] for key in data.files}
    cases = []
    for g, configs in enumerate(groups):
        for j, cfg in enumerate(configs):
            cases.append((cfg, {name: arrays[f"g{g:02d}_{name}"][j]
                                for name in INPUTS + ("pos", "vel", "pos32", "vel32")}))
    return cases


def relative_error(ours, ref) -> float:
    """max |ours - ref| / max(1, max |ref|)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / max(1.0, np.abs(ref).max()))


def run_case(cfg: dict, arrays: dict, dtype):
    pos, vel = prodmp_trajectory(ProDMPConfig(**cfg),
                                 *(jnp.asarray(arrays[name], dtype) for name in INPUTS))
    assert pos.dtype == dtype and vel.dtype == dtype
    assert pos.shape == arrays["pos"].shape and vel.shape == arrays["vel"].shape
    return pos, vel


# ----------------------------------------------------------------------------------------------
# Parity with MP_PyTorch


def test_fixtures_cover_every_option():
    configs = [cfg for cfg, _ in fixture_cases()]
    assert len(configs) >= 200
    assert {c["num_dof"] for c in configs} == set(range(1, 8))
    assert set(range(2, 11)) <= {c["num_basis"] for c in configs}
    for flag in ("auto_scale_basis", "relative_goal", "disable_goal"):
        assert {c[flag] for c in configs} == {False, True}
    assert {c["num_basis_outside"] > 0 for c in configs} == {False, True}
    assert {c["weights_scale"] != 1 for c in configs} == {False, True}
    assert {c["goal_scale"] != 1 for c in configs} == {False, True}
    ratios = [c["tau"] / c["dt"] for c in configs]
    assert any(abs(r - round(r)) < 1e-9 for r in ratios)
    assert any(abs(r - round(r)) > 0.01 for r in ratios)
    arrays = [a for _, a in fixture_cases()]
    assert any((a["init_time"] == 0).all() for a in arrays)
    assert any((a["init_time"] > 0).any() for a in arrays)
    assert any((a["times"][..., 0] > a["init_time"]).any() for a in arrays)  # mid-trajectory
    assert any(a["init_time"].size > 1 for a in arrays)  # batch dims > 1


def test_parity_with_mp_pytorch_float32():
    worst_pos = worst_vel = 0.0
    failures = []
    for k, (cfg, arrays) in enumerate(fixture_cases()):
        pos, vel = run_case(cfg, arrays, jnp.float32)
        err_pos, err_vel = relative_error(pos, arrays["pos"]), relative_error(vel, arrays["vel"])
        worst_pos, worst_vel = max(worst_pos, err_pos), max(worst_vel, err_vel)
        if not (err_pos <= 1e-5 and err_vel <= 1e-5):
            failures.append((k, err_pos, err_vel, cfg))
    print(f"float32 parity: max relative error pos {worst_pos:.2e}, vel {worst_vel:.2e}")
    assert not failures, failures[:5]


def test_parity_with_mp_pytorch_float64():
    """In float64 the reproduction of MP_PyTorch's grid / trapezoid / interpolation is exact."""
    worst = 0.0
    with jax.enable_x64(True):
        for cfg, arrays in fixture_cases():
            pos, vel = run_case(cfg, arrays, jnp.float64)
            worst = max(worst, relative_error(pos, arrays["pos"]),
                        relative_error(vel, arrays["vel"]))
    print(f"float64 parity: max relative error {worst:.2e}")
    assert worst <= 1e-10


def test_float32_matches_mp_pytorch_float32_within_its_own_error():
    """MP_PyTorch in float32 is itself up to ~1e-4 off its float64 result (and NaN for
    alpha > ~29.5); ours stays within that band where it is finite."""
    finite = 0
    for cfg, arrays in fixture_cases():
        pos32, vel32 = arrays["pos32"], arrays["vel32"]
        if not (np.isfinite(pos32).all() and np.isfinite(vel32).all()):
            assert cfg["alpha"] > 29.0  # float32 overflow of exp(alpha * 3) in its precompute
            continue
        finite += 1
        pos, vel = run_case(cfg, arrays, jnp.float32)
        assert relative_error(pos, pos32) <= 3e-4 and relative_error(vel, vel32) <= 3e-4
    assert finite > 200


# ----------------------------------------------------------------------------------------------
# Analytic properties (independent of MP_PyTorch)

CFG = ProDMPConfig(num_dof=3, num_basis=5, tau=2.0, dt=0.02, alpha=25.0, weights_scale=0.7,
                   goal_scale=0.5, num_basis_outside=1, auto_scale_basis=True)


def random_inputs(cfg, key, batch=(4,), num_times=50, dtype=jnp.float32):
    k = jax.random.split(key, 5)
    init_time = jax.random.uniform(k[0], batch, dtype, 0.0, 0.5 * cfg.tau)
    times = init_time[..., None] + cfg.dt * jnp.arange(num_times, dtype=dtype)
    return {
        "weights": jax.random.normal(k[1], batch + (cfg.num_params,), dtype),
        "times": times,
        "init_time": init_time,
        "init_pos": jax.random.normal(k[2], batch + (cfg.num_dof,), dtype),
        "init_vel": jax.random.normal(k[3], batch + (cfg.num_dof,), dtype),
    }


@pytest.mark.parametrize("relative_goal,disable_goal", [(False, False), (True, False),
                                                        (False, True), (True, True)])
def test_initial_conditions_are_enforced(relative_goal, disable_goal):
    cfg = ProDMPConfig(num_dof=4, num_basis=6, tau=3.0, dt=0.03, alpha_phase=2.0, alpha=20.0,
                       relative_goal=relative_goal, disable_goal=disable_goal,
                       auto_scale_basis=True, weights_scale=2.0)
    inputs = random_inputs(cfg, jax.random.key(0), batch=(6,))
    # include an off-grid initial time, a late one and 0
    inputs["init_time"] = inputs["init_time"].at[:3].set(jnp.array([0.0, 1.2345, 2.9]))
    inputs["times"] = inputs["init_time"][:, None] + jnp.array([0.0, 0.5, 1.0])
    pos, vel = prodmp_trajectory(cfg, **inputs)
    np.testing.assert_allclose(pos[:, 0], inputs["init_pos"], atol=1e-5)
    np.testing.assert_allclose(vel[:, 0], inputs["init_vel"], atol=1e-5)


def critically_damped(t, p0, g, alpha, tau):
    """Closed-form DMP response with zero forcing, init at t = 0 with zero velocity."""
    a = 0.5 * alpha * t / tau
    pos = g + (p0 - g) * (1 + a) * np.exp(-a)
    vel = -(p0 - g) * (0.5 * alpha / tau) ** 2 * t * np.exp(-a)
    return pos, vel


@pytest.mark.parametrize("relative_goal,goal_scale,auto_scale_basis",
                         [(False, 1.0, False), (True, 0.5, True), (False, 2.0, False)])
def test_zero_weights_converge_to_goal(relative_goal, goal_scale, auto_scale_basis):
    cfg = ProDMPConfig(num_dof=2, num_basis=4, tau=1.5, dt=0.01, alpha=18.0, goal_scale=goal_scale,
                       relative_goal=relative_goal, auto_scale_basis=auto_scale_basis)
    p0, goal = np.array([0.3, -1.0]), np.array([1.5, 2.0])
    weights = np.zeros((2, 5))
    # the goal parameter is scaled by goal_scale (the goal basis peaks at 1, so auto-scaling
    # leaves it unchanged) and, with relative_goal, is an offset from init_pos
    weights[:, -1] = ((goal - p0) if relative_goal else goal) / goal_scale
    times = cfg.dt * np.arange(500)  # on the grid, up to 3.3 tau
    pos, vel = prodmp_trajectory(cfg, weights.reshape(-1), times, 0.0, p0, np.zeros(2))
    ref_pos, ref_vel = critically_damped(times[:, None], p0, goal, cfg.alpha, cfg.tau)
    np.testing.assert_allclose(pos, ref_pos, atol=1e-5)
    np.testing.assert_allclose(vel, ref_vel, atol=1e-4 * np.abs(ref_vel).max())
    np.testing.assert_allclose(pos[-1], goal, atol=1e-5)
    assert np.all(np.diff(np.abs(np.asarray(pos) - goal), axis=0) <= 1e-6)  # no overshoot


def test_velocity_is_time_derivative_of_position():
    cfg = ProDMPConfig(num_dof=3, num_basis=8, tau=1.0, dt=0.002, alpha=25.0,
                       auto_scale_basis=True, relative_goal=True)
    with jax.enable_x64(True):
        inputs = random_inputs(cfg, jax.random.key(1), batch=(3,), num_times=400,
                               dtype=jnp.float64)
        inputs["init_time"] = jnp.array([0.0, 0.2, 0.416])  # on the grid
        inputs["times"] = inputs["init_time"][:, None] + cfg.dt * jnp.arange(400)
        pos, vel = prodmp_trajectory(cfg, **inputs)
    pos, vel = np.asarray(pos), np.asarray(vel)
    fd = (pos[:, 2:] - pos[:, :-2]) / (2 * cfg.dt)
    assert np.abs(fd - vel[:, 1:-1]).max() <= 2e-3 * np.abs(vel).max()


def test_restarting_mid_trajectory_continues_the_trajectory():
    """Conditioning on the trajectory's own state at t0 reproduces it after t0; with a relative
    goal, the goal parameter is re-anchored by -(new init_pos - old init_pos) (spec §6)."""
    for relative_goal in (False, True):
        cfg = ProDMPConfig(num_dof=3, num_basis=6, tau=2.0, dt=0.02, alpha=25.0,
                           relative_goal=relative_goal, weights_scale=0.5)
        inputs = random_inputs(cfg, jax.random.key(2), batch=(), num_times=100)
        inputs["init_time"] = jnp.zeros(())
        inputs["times"] = cfg.dt * jnp.arange(100.0)
        pos, vel = prodmp_trajectory(cfg, **inputs)
        k = 37
        weights = inputs["weights"].reshape(3, 7)
        if relative_goal:
            weights = weights.at[:, -1].add(-(pos[k] - inputs["init_pos"]))
        pos2, vel2 = prodmp_trajectory(cfg, weights.reshape(-1), inputs["times"][k:],
                                       inputs["times"][k], pos[k], vel[k])
        np.testing.assert_allclose(pos2, pos[k:], atol=1e-4)
        np.testing.assert_allclose(vel2, vel[k:], atol=1e-3)


def test_basis_decomposition_matches_trajectory():
    inputs = random_inputs(CFG, jax.random.key(3))
    pos, vel = prodmp_trajectory(CFG, **inputs)
    b = prodmp_basis(CFG, inputs["times"], inputs["init_time"])
    w = inputs["weights"].reshape(-1, CFG.num_dof, CFG.params_per_dof)
    for ic, H, out in ((b.pos_ic, b.pos_H, pos), (b.vel_ic, b.vel_H, vel)):
        rebuilt = (ic[..., :1] * inputs["init_pos"][:, None]
                   + ic[..., 1:] * inputs["init_vel"][:, None]
                   + jnp.einsum("btk,bdk->btd", H, w))
        np.testing.assert_allclose(rebuilt, out, rtol=1e-5, atol=1e-5)
    scale = weights_goal_scale(CFG)
    assert scale.shape == (CFG.num_basis + 1,) and np.all(scale > 0)


# ----------------------------------------------------------------------------------------------
# jit / vmap / grad / dtype


def test_jit_matches_eager():
    inputs = random_inputs(CFG, jax.random.key(4))
    eager = prodmp_trajectory(CFG, **inputs)
    jitted = jax.jit(prodmp_trajectory, static_argnums=0)(CFG, **inputs)
    for a, b in zip(eager, jitted):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_vmap_matches_loop_and_broadcasting():
    inputs = random_inputs(CFG, jax.random.key(5))
    batched = jax.vmap(functools.partial(prodmp_trajectory, CFG))(*(inputs[n] for n in INPUTS))
    for b in range(4):
        single = prodmp_trajectory(CFG, *(inputs[n][b] for n in INPUTS))
        for x, y in zip(batched, single):
            np.testing.assert_allclose(x[b], y, rtol=1e-6, atol=1e-6)
    # shared times / initial condition broadcast against a [2, 4] batch of weights
    weights = jnp.stack([inputs["weights"], 2 * inputs["weights"]])
    times, init = inputs["times"][0], inputs["init_time"][0]
    pos, vel = prodmp_trajectory(CFG, weights, times, init, inputs["init_pos"][0],
                                 inputs["init_vel"][0])
    assert pos.shape == vel.shape == (2, 4, 50, CFG.num_dof)
    ref = prodmp_trajectory(CFG, weights[1, 2], times, init, inputs["init_pos"][0],
                            inputs["init_vel"][0])
    np.testing.assert_allclose(pos[1, 2], ref[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vel[1, 2], ref[1], rtol=1e-6, atol=1e-6)


def loss_fn(cfg, weights, init_pos, init_vel, times, init_time, probe_pos, probe_vel):
    pos, vel = prodmp_trajectory(cfg, weights, times, init_time, init_pos, init_vel)
    return jnp.sum(pos * probe_pos) + jnp.sum(vel * probe_vel)


def test_grad_matches_finite_differences():
    cfg = ProDMPConfig(num_dof=2, num_basis=4, tau=1.0, dt=0.01, auto_scale_basis=True,
                       relative_goal=True, goal_scale=0.3)
    with jax.enable_x64(True):
        inputs = random_inputs(cfg, jax.random.key(6), batch=(2,), num_times=30,
                               dtype=jnp.float64)
        probes = jax.random.normal(jax.random.key(7), (2, 2, 30, 2), jnp.float64)
        args = (inputs["weights"], inputs["init_pos"], inputs["init_vel"])
        rest = (inputs["times"], inputs["init_time"], probes[0], probes[1])
        f = jax.jit(functools.partial(loss_fn, cfg))
        grads = jax.grad(f, argnums=(0, 1, 2))(*args, *rest)
        eps = 1e-6
        for n, (x, g) in enumerate(zip(args, grads)):
            assert g.dtype == jnp.float64 and np.isfinite(g).all()
            flat = np.asarray(x).reshape(-1)
            fd = np.zeros_like(flat)
            for m in range(flat.size):
                dx = np.zeros_like(flat)
                dx[m] = eps
                plus = list(args)
                minus = list(args)
                plus[n] = jnp.asarray((flat + dx).reshape(x.shape))
                minus[n] = jnp.asarray((flat - dx).reshape(x.shape))
                fd[m] = (f(*plus, *rest) - f(*minus, *rest)) / (2 * eps)
            np.testing.assert_allclose(np.asarray(g).reshape(-1), fd, rtol=1e-6, atol=1e-6)
        grads64 = [np.asarray(g) for g in grads]
    # float32 gradients are finite and agree with float64
    grads32 = jax.grad(f, argnums=(0, 1, 2))(
        *(jnp.asarray(np.asarray(a), jnp.float32) for a in args + rest))
    for g32, g64 in zip(grads32, grads64):
        assert g32.dtype == jnp.float32 and np.isfinite(g32).all()
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4 * np.abs(g64).max())


def test_dtype_is_preserved():
    inputs = random_inputs(CFG, jax.random.key(8))
    pos, vel = prodmp_trajectory(CFG, **inputs)
    assert pos.dtype == vel.dtype == jnp.float32
    with jax.enable_x64(True):
        pos32, _ = prodmp_trajectory(CFG, inputs["weights"],
                                     jnp.asarray(np.asarray(inputs["times"]), jnp.float64),
                                     *(inputs[n] for n in INPUTS[2:]))
        assert pos32.dtype == jnp.float32  # weights decide, whether or not x64 is on
        np.testing.assert_allclose(pos32, pos, rtol=1e-6, atol=1e-6)
        args64 = [jnp.asarray(np.asarray(inputs[n]), jnp.float64) for n in INPUTS]
        pos64, vel64 = prodmp_trajectory(CFG, *args64)
        assert pos64.dtype == vel64.dtype == jnp.float64
        np.testing.assert_allclose(pos64, pos, rtol=1e-5, atol=1e-5)


def test_training_shapes_under_jit():
    """TOP-ERL shapes: 512 trajectories x 100 steps x 7 dof, per-segment initial conditions."""
    cfg = ProDMPConfig(num_dof=7, num_basis=8, tau=2.0, dt=0.02, alpha=10.0,
                       auto_scale_basis=True, relative_goal=True, weights_scale=0.3,
                       goal_scale=0.3)
    inputs = random_inputs(cfg, jax.random.key(9), batch=(512,), num_times=100)
    pos, vel = jax.jit(prodmp_trajectory, static_argnums=0)(cfg, **inputs)
    assert pos.shape == vel.shape == (512, 100, 7)
    assert np.isfinite(pos).all() and np.isfinite(vel).all()


# ----------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("kwargs,match", [
    ({"num_basis": 0}, "num_basis"),
    ({"num_dof": 0}, "num_dof"),
    ({"tau": 0.0}, "tau"),
    ({"tau": -1.0}, "tau"),
    ({"dt": 0.0}, "dt"),
    ({"dt": 5.0}, "dt"),
    ({"alpha": 0.0}, "alpha"),
    ({"alpha_phase": -1.0}, "alpha_phase"),
    ({"basis_bandwidth_factor": 0.0}, "basis_bandwidth_factor"),
    ({"num_basis_outside": -1}, "num_basis_outside"),
    ({"num_basis_outside": 2}, "num_basis_outside"),  # 5 - 2*2 < 2
    ({"num_basis": 1, "num_basis_outside": 1}, "num_basis_outside"),
    ({"num_basis": 2.0}, "num_basis"),
    ({"num_dof": True}, "num_dof"),
    ({"weights_scale": float("nan")}, "weights_scale"),
    ({"relative_goal": 1}, "relative_goal"),
])
def test_config_validation(kwargs, match):
    base = {"num_dof": 2, "num_basis": 5, "tau": 1.0, "dt": 0.01}
    with pytest.raises(ValueError, match=match):
        ProDMPConfig(**{**base, **kwargs})


def test_config_is_hashable_and_normalised():
    a = ProDMPConfig(num_dof=2, num_basis=5, tau=1, dt=0.01)
    b = ProDMPConfig(num_dof=2, num_basis=5, tau=1.0, dt=0.01, alpha=25, alpha_phase=3)
    assert a == b and hash(a) == hash(b) and isinstance(a.tau, float)
    assert a.num_params == 12 and ProDMPConfig(2, 5, 1.0, 0.01, disable_goal=True).num_params == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.tau = 2.0


def test_input_shape_errors():
    inputs = random_inputs(CFG, jax.random.key(10))
    with pytest.raises(ValueError, match="weights"):
        prodmp_trajectory(CFG, inputs["weights"][..., :-1], *(inputs[n] for n in INPUTS[1:]))
    with pytest.raises(ValueError, match="init_pos"):
        prodmp_trajectory(CFG, *(inputs[n] for n in INPUTS[:3]), inputs["init_pos"][..., :2],
                          inputs["init_vel"])
    with pytest.raises(ValueError, match="broadcast"):
        prodmp_trajectory(CFG, inputs["weights"], inputs["times"][:3], inputs["init_time"],
                          inputs["init_pos"], inputs["init_vel"])
