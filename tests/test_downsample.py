"""Learner-side trajectory downsampling (`buffer.downsample_episode`, `--traj-downsample-factor`; spec top_erl.md §6).

The key invariant: the learner's ProDMP, decoded at its coarse times t_k = init_time + (k + 1)·F·dt from a stored
initial condition (the episode's, or the buffered desired pos/vel at a segment start), reproduces the desired
pos/vel stored in the downsampled buffer. Checked on the reacher (T = 50, F = 5 → 10), with the index selection
and block sums against plain numpy loops.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toperl_jax import buffer as buffer_lib
from toperl_jax import envs, gaussian
from toperl_jax.mp import prodmp_trajectory

from variants import top_erl as te

F = 5
# The reach preset with F = 5 and small networks (only the rollout and the learner's ProDMP are used).
ARGS = dataclasses.replace(te.Args(), traj_downsample_factor=F, n_embd=16, n_head=2, n_layer=1,
                           policy_hidden_sizes=(16,), max_num_segments=10)


def _numpy_downsample(ep: dict, factor: int) -> dict:
    """Independent reference: explicit loops over the coarse steps k (block k = fine steps kF … kF + F − 1)."""
    n, T = ep["rewards"].shape
    Tc = T // factor
    out = {name: np.zeros((n, Tc) + ep[name].shape[2:], ep[name].dtype)
           for name in ("states", "actions", "rewards", "dones", "desired_pos", "desired_vel")}
    for b in range(n):
        for k in range(Tc):
            first, last = k * factor, k * factor + factor - 1
            out["states"][b, k] = ep["states"][b, first]
            out["desired_pos"][b, k] = ep["desired_pos"][b, first]
            out["desired_vel"][b, k] = ep["desired_vel"][b, first]
            out["actions"][b, k] = ep["actions"][b, last]
            out["rewards"][b, k] = sum(float(ep["rewards"][b, j]) for j in range(first, last + 1)) / factor
            out["dones"][b, k] = any(bool(ep["dones"][b, j]) for j in range(first, last + 1))
    return out


@pytest.fixture(scope="module")
def reacher_episodes():
    """4 reacher episodes (T = 50) of random ProDMP weights, executed at the env's dt: the full-length Episode,
    the sampled weights and the variant's learner (F = 5)."""
    task = envs.make("reacher")
    learner = te.make_learner(ARGS, task)
    params = learner.policy.init(jax.random.PRNGKey(0), jnp.zeros((1, task.obs_size)))

    @jax.jit
    def run(key):
        k_reset, k_w = jax.random.split(key)
        start = jax.vmap(task.reset)(jax.random.split(k_reset, 4))
        mean, L = learner.policy.apply(params, start.obs)
        w = gaussian.sample(k_w, mean, 3.0 * L)  # wider than the initial policy, so the arm really moves
        pos, vel = prodmp_trajectory(learner.mp, w, task.action_times(), jnp.zeros(4), start.desired_pos,
                                     start.desired_vel)
        _, ro = jax.vmap(task.rollout)(start, jnp.concatenate([pos, vel], axis=-1))
        ep = buffer_lib.Episode(states=ro.obs, actions=ro.actions, rewards=ro.rewards, dones=ro.dones,
                                desired_pos=ro.desired_pos, desired_vel=ro.desired_vel, init_time=jnp.zeros(4),
                                init_pos=ro.init_pos, init_vel=ro.init_vel, params_mean=mean,
                                params_L=jnp.broadcast_to(L, (4, *L.shape[-2:])))
        return ep, w

    ep, w = run(jax.random.PRNGKey(1))
    return task, learner, ep, w


def test_learner_shapes_and_times(reacher_episodes):
    task, learner, _, _ = reacher_episodes
    assert (task.episode_length, learner.T) == (50, 10)
    assert learner.dt == pytest.approx(5 * task.dt) and learner.mp.dt == task.dt  # ProDMP grid stays the env's


def test_downsample_matches_numpy(reacher_episodes):
    _, _, ep, _ = reacher_episodes
    down = jax.jit(buffer_lib.downsample_episode, static_argnums=1)(ep, F)
    full = {n: np.asarray(getattr(ep, n)) for n in ("states", "actions", "rewards", "dones", "desired_pos",
                                                    "desired_vel")}
    assert full["rewards"].std() > 0 and full["dones"].any()
    ref = _numpy_downsample(full, F)
    for name, want in ref.items():
        got = np.asarray(getattr(down, name))
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=name)
    assert np.asarray(down.dones)[:, -1].all() and not np.asarray(down.dones)[:, :-1].any()
    for name in ("init_time", "init_pos", "init_vel", "params_mean", "params_L"):
        np.testing.assert_array_equal(getattr(down, name), getattr(ep, name))


def test_learner_decode_reproduces_stored_desired(reacher_episodes):
    """ProDMP at the coarse times t_k = (k + 1)·5·dt reproduces the stored actions, from the episode's initial
    condition and from the buffered desired pos/vel at every segment start c (init_time t_c − dt_c = c·dt_c);
    and action k equals the desired pos/vel stored at k + 1 (as without downsampling)."""
    _, learner, ep, w = reacher_episodes
    down = buffer_lib.downsample_episode(ep, F)
    dof = learner.mp.num_dof
    actions = np.asarray(down.actions)  # [4, 10, 2 dof]
    t = (np.arange(learner.T) + 1) * learner.dt  # [10]
    pos, vel = prodmp_trajectory(learner.mp, w, jnp.asarray(t), jnp.zeros(4), down.init_pos, down.init_vel)
    np.testing.assert_allclose(pos, actions[..., :dof], atol=2e-5)
    np.testing.assert_allclose(vel, actions[..., dof:], atol=2e-4)
    for c in range(1, learner.T):
        pos, vel = prodmp_trajectory(learner.mp, w, jnp.asarray(t[c:]), jnp.full(4, c * learner.dt),
                                     down.desired_pos[:, c], down.desired_vel[:, c])
        np.testing.assert_allclose(pos, actions[:, c:, :dof], atol=1e-4, err_msg=f"segment start {c}")
        np.testing.assert_allclose(vel, actions[:, c:, dof:], atol=1e-3, err_msg=f"segment start {c}")
    np.testing.assert_array_equal(actions[:, :-1, :dof], np.asarray(down.desired_pos)[:, 1:])
    np.testing.assert_array_equal(actions[:, :-1, dof:], np.asarray(down.desired_vel)[:, 1:])
    # The upstream slice [::F] would be off by (F − 1)·dt: those actions are not the learner's.
    assert np.abs(np.asarray(ep.actions)[:, ::F, :dof] - actions[..., :dof]).max() > 1e-3


def test_variant_rollout_stores_the_downsampled_episode():
    """The variant's rollout (deterministic: w = μ) stores T = 10 steps that its learner's decode reproduces."""
    prog = te.make_train(ARGS)
    state = prog.init(jax.random.PRNGKey(0))
    ep, _, stats = jax.jit(prog.rollout, static_argnums=(2, 3))(state.policy.params, jax.random.PRNGKey(2), 3, True)
    assert ep.states.shape == (3, 10, prog.task.obs_size) and ep.actions.shape == (3, 10, 4)
    assert ep.rewards.shape == (3, 10) and ep.desired_pos.shape == (3, 10, 2)
    assert state.buffer.data.states.shape == (ARGS.buffer_size, 10, prog.task.obs_size)
    t = (jnp.arange(10) + 1) * prog.learner.dt
    pos, vel = prodmp_trajectory(prog.learner.mp, ep.params_mean, t, ep.init_time, ep.init_pos, ep.init_vel)
    np.testing.assert_allclose(pos, ep.actions[..., :2], atol=2e-5)
    np.testing.assert_allclose(vel, ep.actions[..., 2:], atol=2e-4)
    # Return (logged) is the env's; the stored rewards are the block sums × 1/5, so they sum to return / 5.
    np.testing.assert_allclose(np.asarray(ep.rewards).sum(-1), np.asarray(stats["return"]) / F, rtol=1e-5)


def test_factor_one_is_identity_and_bad_factors_fail(reacher_episodes):
    _, _, ep, _ = reacher_episodes
    assert buffer_lib.downsample_episode(ep, 1) is ep
    with pytest.raises(ValueError, match="does not divide"):
        buffer_lib.downsample_episode(ep, 3)
    with pytest.raises(ValueError, match="positive int"):
        buffer_lib.downsample_episode(ep, 0)
