"""TOP-ERL updates (variants/top_erl.py): the packed, once-compiled critic targets / loss and policy loss against
a plain per-row reference for every segment length of T = 100 and T = 250, initial-condition enforcement of
the target actions, masks beyond the episode end, upstream's loss normalisation, gradient routing, Polyak
updates, the coupled policy weight decay, and a small learning check.

The per-row reference follows spec top_erl.md §3–§5 literally: numpy loops over the rows of
`segments.index_in_segments`, the critic's *per-row* `apply` ([state, ℓ actions], plain causal attention),
numpy n-step returns and `mse_loss` over [batch, rows, 1 + ℓ]. To keep to one compilation per T, the per-row
`apply` is called on rows padded with zero actions to T action slots (and to a fixed number of rows); the
critic is causal within a row, so the first 1 + ℓ outputs are those of the unpadded row (checked against
exact-shape calls for a few lengths below).
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toperl_jax import buffer as buffer_lib
from toperl_jax import segments as seg_lib
from toperl_jax import gaussian
from variants import top_erl as U
from toperl_jax.critic import TransformerCritic, apply_ensemble, init_ensemble
from toperl_jax.mp import ProDMPConfig, prodmp_trajectory
from toperl_jax.policy import GaussianPolicy
from toperl_jax.projection import ProjectionConfig

S = 5  # state dim of the synthetic episodes
B = 2  # trajectories in the equivalence tests


def make_learner(T, dt, *, dof=2, num_basis=3, relative_goal=False, goal_scale=1.0, discount=1.0, batch_size=B,
                 max_num_segments=25, lr_critic=1e-3):
    mp = ProDMPConfig(num_dof=dof, num_basis=num_basis, tau=T * dt, dt=dt, auto_scale_basis=True,
                      relative_goal=relative_goal, goal_scale=goal_scale, weights_scale=0.5)
    critic = TransformerCritic(state_dim=S, action_dim=2 * dof, n_embd=16, n_layer=1, n_head=2,
                               block_size=2 * T + 2)
    policy = GaussianPolicy(action_dim=mp.num_params, hidden_sizes=(16,), min_std=1e-4)
    proj = ProjectionConfig(mean_bound=0.05, cov_bound=5e-3, entropy_schedule="linear", total_train_steps=100)
    return U.Learner(critic=critic, policy=policy, mp=mp, projection=proj,
                     critic_optimizer=U.critic_optimizer(lr_critic, 1e-5),
                     policy_optimizer=U.policy_optimizer(1e-3, 1e-5),
                     T=T, dt=dt, batch_size=batch_size, discount=discount, max_num_segments=max_num_segments)


def make_episodes(rng, learner, batch=B):
    T, dof = learner.T, learner.mp.num_dof
    k = learner.mp.num_params
    f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    init_pos = f(batch, dof)
    desired_pos = f(batch, T, dof).at[:, 0].set(init_pos)  # spec §1: desired_pos[0] = measured pos at reset
    return buffer_lib.Episode(
        states=f(batch, T, S), actions=f(batch, T, 2 * dof), rewards=f(batch, T), dones=jnp.zeros((batch, T), bool),
        desired_pos=desired_pos, desired_vel=f(batch, T, dof),
        init_time=jnp.asarray(rng.uniform(0.0, 0.1, size=batch), jnp.float32), init_pos=init_pos,
        init_vel=f(batch, dof), params_mean=f(batch, k), params_L=jnp.zeros((batch, k, k)))


def random_policy_output(rng, learner, batch=B):
    k = learner.mp.num_params
    mean = jnp.asarray(rng.normal(size=(batch, k)), jnp.float32)
    L = jnp.asarray(np.tril(0.1 * rng.normal(size=(k, k)), -1) + np.diag(rng.uniform(0.2, 0.6, size=k)), jnp.float32)
    return mean, L


def perturbed(params, key, scale=0.02):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


# --------------------------------------------------------------------------------------------------------------
# Per-row reference pieces (one compilation per shape, i.e. per T)


@partial(jax.jit, static_argnums=0)
def _per_row_apply(critic, params, states, actions, state_idx, action_idx):
    """The critic's per-row `apply` for every critic of the stack: `[C, ..., 1 + L]`."""
    return apply_ensemble(critic, params, states, actions, state_idx, action_idx)


@partial(jax.jit, static_argnums=0)
def _decode(mp, weights, times, init_time, init_pos, init_vel):
    return prodmp_trajectory(mp, weights, times, init_time, init_pos, init_vel)


def rows_apply(learner, params, row_states, actions_rows, c, length):
    """Per-row values of rows starting at `c` [Ra] with actions `[B, Ra, ℓ, A]` → `[C, B, Ra, 1 + ℓ]`.

    Rows are padded with zero actions to T slots and to `Rpad` rows for a fixed shape; causality makes the
    first 1 + ℓ outputs of a padded row equal to those of the row itself.
    """
    T = learner.T
    Rpad = seg_lib.max_num_rows(T, learner.max_num_segments, True)
    Bn, Ra = row_states.shape[:2]
    A = actions_rows.shape[-1]
    st = np.zeros((Bn, Rpad, S), np.float32)
    st[:, :Ra] = row_states
    act = np.zeros((Bn, Rpad, T, A), np.float32)
    act[:, :Ra, :length] = actions_rows
    cc = np.zeros(Rpad, np.int32)
    cc[:Ra] = c
    aidx = cc[:, None] + np.arange(T, dtype=np.int32)[None]
    out = np.asarray(_per_row_apply(learner.critic, params, st, act, cc, aidx))
    return out[:, :, :Ra, : 1 + length]


def decode_rows(learner, w, c, t0, init_time, init_pos, init_vel, length):
    """ProDMP actions of rows: weights `[B, Ra, k]` at the action times t_{c+j} = t0 + (c + j + 1)·dt (j < ℓ),
    initial condition `init_time [B, Ra]`, `init_pos/vel [B, Ra, dof]` → `[B, Ra, ℓ, 2·dof]` (decoded on T
    times and cut to ℓ: a ProDMP is evaluated pointwise in time)."""
    T = learner.T
    Rpad = seg_lib.max_num_rows(T, learner.max_num_segments, True)
    Bn, Ra, k = w.shape
    dof = learner.mp.num_dof

    def pad(x):
        out = np.zeros((Bn, Rpad) + x.shape[2:], np.float32)
        out[:, :Ra] = x
        return out

    cc = np.zeros(Rpad)
    cc[:Ra] = c
    times = t0[:, None, None] + (cc[None, :, None] + np.arange(T)[None, None, :] + 1.0) * learner.dt
    pos, vel = _decode(learner.mp, pad(w), times.astype(np.float32), pad(init_time), pad(init_pos), pad(init_vel))
    pos, vel = np.asarray(pos)[:, :Ra, :length], np.asarray(vel)[:, :Ra, :length]
    assert pos.shape[-1] == dof
    return np.concatenate([pos, vel], axis=-1)


def reference_critic(learner, params, target_params, ep, w_rows, length, offset):
    """Spec §3/§4 per row: predictions [C, B, Ra, 1+ℓ], targets [B, Ra, 1+ℓ], â [B, Ra, ℓ, A], losses [C]."""
    T, dt, g = learner.T, learner.dt, learner.discount
    idx = seg_lib.index_in_segments(T, length, offset, extra_row=True)
    Ra = idx.shape[0]
    c, a_idx = idx[:, 0], idx[:, :-1]
    valid = a_idx < T  # [Ra, ℓ]
    states, actions = np.asarray(ep.states), np.asarray(ep.actions)
    rewards = np.asarray(ep.rewards, np.float64)
    dpos, dvel = np.asarray(ep.desired_pos), np.asarray(ep.desired_vel)
    t0 = np.asarray(ep.init_time, np.float64)

    # predictions on the buffered actions (zero beyond T, as upstream pads them)
    act_pad = np.concatenate([actions, np.zeros((actions.shape[0], length, actions.shape[-1]), np.float32)], 1)
    pred = rows_apply(learner, params, states[:, c], act_pad[:, a_idx], c, length)

    # â: the projected-policy row samples, relative goal fixed, decoded from the buffered initial condition
    w = np.array(w_rows[:, :Ra], np.float64)
    if learner.mp.relative_goal:
        b = learner.mp.params_per_dof
        w[..., b - 1::b] -= dpos[:, c] - dpos[:, :1]
    seg_t0 = t0[:, None] + c[None, :] * dt  # t_c − dt
    a_hat = decode_rows(learner, w.astype(np.float32), c, t0, seg_t0, dpos[:, c], dvel[:, c], length)
    q_hat = rows_apply(learner, target_params, states[:, c], a_hat, c, length).min(0)  # [B, Ra, 1+ℓ]

    v = np.asarray(_per_row_apply(learner.critic, target_params, states, None, np.arange(T), None))[..., 0].min(0)
    v_pad = np.concatenate([v, np.zeros((v.shape[0], length + 1))], 1).astype(np.float64)
    r_pad = np.concatenate([rewards, np.zeros((rewards.shape[0], length + 1))], 1)

    G = np.zeros((states.shape[0], Ra, 1 + length))
    for r in range(Ra):
        G[:, r, 0] = q_hat[:, r, int(valid[r].sum())]  # Q̄ at the last valid action of the row
        for l in range(1, length + 1):
            ret = sum(g**j * r_pad[:, c[r] + j] for j in range(l))
            G[:, r, l] = ret + g**l * v_pad[:, c[r] + l]
    mask = np.concatenate([np.ones((Ra, 1), bool), valid], axis=1)
    G = G * mask
    pred_m = pred * mask
    losses = ((pred_m - G[None]) ** 2).mean(axis=(1, 2, 3))  # torch mse_loss over [B, rows, 1 + ℓ]
    return pred, G, a_hat, losses, mask


def offsets_for(T, length, rng, two):
    if T // length == 1:
        return [0]
    o_drop = T % length  # ℓ divides T − o: the extra row would start at T and is dropped
    if not two:
        return [int(rng.integers(0, length))]
    others = [o for o in range(length) if o != o_drop]
    return [o_drop, int(rng.choice(others))]


# --------------------------------------------------------------------------------------------------------------
# 1. Packed critic predictions / targets / losses == per-row reference, every segment length, one compile


@pytest.mark.parametrize("T,dt,num_critics,relative_goal,discount", [
    (100, 0.02, 2, True, 0.9),  # double critic, relative goal (goal scale 0.5), γ < 1
    (250, 0.008, 1, False, 1.0),  # single critic, upstream's γ = 1
])
def test_packed_critic_matches_per_row_reference(T, dt, num_critics, relative_goal, discount):
    learner = make_learner(T, dt, relative_goal=relative_goal, goal_scale=0.5, discount=discount)
    rng = np.random.default_rng(T)
    ep = make_episodes(rng, learner)
    mean_p, L_p = random_policy_output(rng, learner)
    params = init_ensemble(learner.critic, jax.random.key(1), num_critics)
    target_params = perturbed(params, jax.random.key(2), 0.05)
    traces = []

    @jax.jit
    def packed(params, target_params, ep, mean_p, L_p, length, offset, key):
        traces.append(1)
        seg = seg_lib.make_segmentation(length, offset, T, learner.max_num_segments, extra_row=True)
        layout = seg_lib.packed_layout(seg)
        targets, aux = U.critic_targets(learner, target_params, ep, seg, layout, mean_p, L_p, key)
        loss, info = U.critic_loss(learner, params, ep, layout, targets)
        pred_rows, _ = seg_lib.unpack_rows(info["pred"], seg)
        tgt_rows, _ = seg_lib.unpack_rows(targets, seg)
        act_rows, _ = seg_lib.unpack_rows(aux["actions"], seg, feature_dims=1)
        return pred_rows, tgt_rows, act_rows, info["critic_loss"], loss, aux["weights"]

    exact_checked = 0
    for length in seg_lib.segment_lengths(T):
        length = int(length)
        for offset in offsets_for(T, length, rng, two=(T == 100)):
            key = jax.random.key(length * 1000 + offset)
            pred_rows, tgt_rows, act_rows, per_critic, loss, w_rows = jax.device_get(
                packed(params, target_params, ep, mean_p, L_p, length, offset, key))
            pred, G, a_hat, losses, mask = reference_critic(learner, params, target_params, ep, w_rows, length, offset)
            Ra = G.shape[1]
            msg = f"T={T} ℓ={length} o={offset}"
            m = mask[None, None]
            np.testing.assert_allclose(np.asarray(pred_rows)[:, :, :Ra, : 1 + length] * m, pred * m,
                                       rtol=1e-4, atol=1e-5, err_msg=msg)
            np.testing.assert_allclose(np.asarray(tgt_rows)[:, :Ra, : 1 + length], G, rtol=1e-4, atol=2e-4,
                                       err_msg=msg)
            # the decoded â of every valid action equals the per-row decode (initial-condition enforcement)
            valid_a = mask[:, 1:]
            np.testing.assert_allclose(np.asarray(act_rows)[:, :Ra, 1 : 1 + length][:, valid_a],
                                       a_hat[:, valid_a], rtol=1e-4, atol=1e-4, err_msg=msg)
            np.testing.assert_allclose(per_critic, losses, rtol=1e-4, atol=1e-6, err_msg=msg)
            np.testing.assert_allclose(loss, losses.sum(), rtol=1e-4, err_msg=msg)
            # nothing lives outside the rows
            assert np.all(np.asarray(tgt_rows)[:, Ra:] == 0) and np.all(np.asarray(tgt_rows)[:, :, 1 + length:] == 0)
            if T == 100 and length in (4, 33) and exact_checked < 2:
                # the padded per-row reference equals exact-shape per-row calls
                idx = seg_lib.index_in_segments(T, length, offset, True)
                a_pad = np.concatenate([np.asarray(ep.actions), np.zeros((B, length, 4), np.float32)], 1)
                exact = np.asarray(_per_row_apply(learner.critic, params, np.asarray(ep.states)[:, idx[:, 0]],
                                                  a_pad[:, idx[:, :-1]], idx[:, 0], idx[:, :-1]))
                np.testing.assert_allclose(exact, pred, rtol=1e-5, atol=1e-6)
                exact_checked += 1
    assert exact_checked == (2 if T == 100 else 0)
    assert len(traces) == 1, f"packed path traced {len(traces)} times; must compile once for every ℓ and o"


# --------------------------------------------------------------------------------------------------------------
# 2. Target actions: direct ProDMP decode of each row from the buffered initial condition


def test_target_actions_enforce_buffered_initial_condition():
    T, dt = 100, 0.02
    learner = make_learner(T, dt, relative_goal=True, goal_scale=0.5)
    rng = np.random.default_rng(7)
    ep = make_episodes(rng, learner)
    mean_p, L_p = random_policy_output(rng, learner)
    params = init_ensemble(learner.critic, jax.random.key(0), 1)
    length, offset = 20, 7
    seg = seg_lib.make_segmentation(length, offset, T, extra_row=True)
    layout = seg_lib.packed_layout(seg)
    _, aux = jax.jit(lambda ep, m, L, k: U.critic_targets(learner, params, ep, seg, layout, m, L, k))(
        ep, mean_p, L_p, jax.random.key(3))
    act_rows, _ = seg_lib.unpack_rows(aux["actions"], seg, feature_dims=1)
    act_rows, w = np.asarray(act_rows), np.asarray(aux["weights"])
    # the row samples are μ̃ + L̃ξ with ξ = normal(key, [B, R, k])
    xi = np.asarray(jax.random.normal(jax.random.key(3), w.shape))
    np.testing.assert_allclose(w, np.asarray(mean_p)[:, None] + xi @ np.asarray(L_p).T, rtol=1e-5, atol=1e-5)
    t0, dpos, dvel = np.asarray(ep.init_time), np.asarray(ep.desired_pos), np.asarray(ep.desired_vel)
    b = learner.mp.params_per_dof
    idx = seg_lib.index_in_segments(T, length, offset, True)
    for r, row in enumerate(idx):
        c = int(row[0])
        n_valid = int((row[:-1] < T).sum())
        for i in range(B):
            wr = w[i, r].copy()
            wr[b - 1::b] -= dpos[i, c] - dpos[i, 0]  # fix_relative_goal_for_segments
            # times: the row's initial time t_c − dt, then its actions t_c … t_{c+ℓ−1}
            times = t0[i] + (np.arange(c, c + length + 1)) * dt
            pos, vel = prodmp_trajectory(learner.mp, jnp.asarray(wr), jnp.asarray(times, jnp.float32),
                                         jnp.float32(t0[i] + c * dt), jnp.asarray(dpos[i, c]),
                                         jnp.asarray(dvel[i, c]))
            pos, vel = np.asarray(pos), np.asarray(vel)
            np.testing.assert_allclose(pos[0], dpos[i, c], atol=1e-4)  # the buffered desired pos/vel hold
            np.testing.assert_allclose(vel[0], dvel[i, c], atol=1e-3)
            direct = np.concatenate([pos[1:], vel[1:]], -1)[:n_valid]
            np.testing.assert_allclose(act_rows[i, r, 1 : 1 + n_valid], direct, rtol=1e-4, atol=1e-4)
            assert np.all(act_rows[i, r, 1 + n_valid : 1 + length] == 0)  # padded actions are zeroed


# --------------------------------------------------------------------------------------------------------------
# 3. Masks beyond T and the loss normalisation


def test_nothing_beyond_the_episode_leaks_into_targets():
    T, dt = 100, 0.02
    learner = make_learner(T, dt, discount=1.0)
    rng = np.random.default_rng(3)
    ep = make_episodes(rng, learner)
    big = 1e6
    ep = ep.replace(rewards=ep.rewards.at[:, T - 1].set(big))  # only the very last reward is huge
    mean_p, L_p = random_policy_output(rng, learner)
    params = init_ensemble(learner.critic, jax.random.key(0), 1)

    @jax.jit
    def run(length, offset):
        seg = seg_lib.make_segmentation(length, offset, T, extra_row=True)
        layout = seg_lib.packed_layout(seg)
        targets, _ = U.critic_targets(learner, params, ep, seg, layout, mean_p, L_p, jax.random.key(0))
        # the bootstrap term alone: no rewards, a huge V̄ at every state
        v_next = seg_lib.n_step_returns(seg, layout, jnp.zeros_like(ep.rewards), jnp.full_like(ep.rewards, big), 1.0)
        return targets, v_next, layout

    rewards = np.asarray(ep.rewards, np.float64)
    for length, offset in [(33, 0), (33, 5), (7, 3), (12, 4), (100, 0), (50, 0), (4, 0)]:
        targets, v_next, layout = jax.device_get(run(length, offset))
        k, is_act, valid = layout.time_index, layout.is_state == 0, layout.valid
        act = is_act & layout.in_row
        # padded action tokens (k ≥ T) have target 0, not the huge reward nor any value
        assert np.all(targets[:, act & ~valid] == 0)
        # no bootstrap from beyond the episode: V̄ term is exactly 0 where k + 1 ≥ T
        assert np.all(v_next[:, act & (k + 1 >= T)] == 0)
        # tokens before T − 1 never see the last reward; the token at T − 1 sees it exactly once, with no V̄
        assert np.all(np.abs(targets[:, act & valid & (k < T - 1)]) < 1e4)
        last = np.flatnonzero(act & (k == T - 1))
        assert last.size == 1
        c = offset + (T - 1 - offset) // length * length
        np.testing.assert_allclose(targets[:, last[0]], rewards[:, c:T].sum(1), rtol=1e-6)


def test_masked_mse_counts_padded_tokens_like_upstream():
    T = 100
    seg = seg_lib.make_segmentation(33, 0, T, extra_row=True)  # rows c = 0, 33, 66 and the extra row c = 99
    layout = seg_lib.packed_layout(seg)
    # the budget (125 tokens) cuts the extra row's last 11 padded actions; upstream's rows are 4 × 34 = 136 tokens
    assert int(seg.num_rows) == 4 and layout.time_index.shape == (125,) and int(layout.num_row_tokens) == 136
    pred = jnp.ones((3, 2, layout.time_index.shape[0]))  # [C, B, N], garbage everywhere
    targets = jnp.zeros((2, layout.time_index.shape[0]))
    loss = U.masked_mse(pred, targets, layout)
    # 3 full rows (34 valid tokens each) + the extra row's state token and its one valid action (action 99);
    # its 32 padded action tokens are zeroed but stay in the denominator: B·rows·(1 + ℓ) = 2·4·34.
    np.testing.assert_allclose(loss, np.full(3, (3 * 34 + 2) / 136), rtol=1e-6)
    pred_np = np.ones((2, 4, 34))
    pred_np[:, 3, 2:] = 0  # upstream: vq_pred[..., 1:] *= valid_mask
    np.testing.assert_allclose(loss[0], np.mean(pred_np**2), rtol=1e-6)


def test_critic_step_without_the_padded_actions_past_the_budget():
    """Targets, per-critic losses and gradients on the critic budget (the tokens up to the last valid one) equal
    those on upstream's whole rows, whose extra row ends in padded actions past the budget (T = 20: 25 against
    28 tokens; ℓ = 6 with o = 0 or 1 is cut)."""
    T, M = 20, 5
    learner = make_learner(T, 0.05, max_num_segments=M, relative_goal=True, goal_scale=0.5, discount=0.9)
    rng = np.random.default_rng(13)
    ep = make_episodes(rng, learner)
    mean_p, L_p = random_policy_output(rng, learner)
    params = init_ensemble(learner.critic, jax.random.key(7), 2)
    target_params = perturbed(params, jax.random.key(8), 0.05)
    N = seg_lib.token_budget(T, M, True)

    @partial(jax.jit, static_argnums=2)
    def run(length, offset, budget):
        seg = seg_lib.make_segmentation(length, offset, T, M, extra_row=True)
        layout = seg_lib.packed_layout(seg, budget=budget)
        targets, _ = U.critic_targets(learner, target_params, ep, seg, layout, mean_p, L_p, jax.random.key(9))
        per_critic, grads = U.critic_loss_and_grad(learner, params, ep, layout, targets)
        return targets[:, :N], per_critic, grads

    assert N == 25
    for length, offset in [(6, 0), (6, 1), (4, 3), (10, 0)]:
        cut, whole = run(length, offset, N), run(length, offset, 28)
        for a, b in zip(jax.tree.leaves(cut), jax.tree.leaves(whole)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"ℓ={length} o={offset}")


# --------------------------------------------------------------------------------------------------------------
# 4. Policy loss: per-row reference, gradient routing, Polyak updates, coupled weight decay


def test_policy_loss_matches_per_row_reference_and_gradients():
    T, dt = 100, 0.02
    learner = make_learner(T, dt)
    rng = np.random.default_rng(11)
    ep = make_episodes(rng, learner)
    pstate = U.init_policy_state(learner, jax.random.key(0))
    params = perturbed(pstate.params, jax.random.key(1), 0.05)  # ≠ old policy: a nonzero trust-region loss
    old_params = pstate.old_params
    critic_params = init_ensemble(learner.critic, jax.random.key(2), 2)
    traces = []

    @jax.jit
    def packed(params, critic_params, length, offset, key):
        traces.append(1)
        seg = seg_lib.make_segmentation(length, offset, T, extra_row=False)
        loss, metrics = U.policy_loss(learner, params, old_params, critic_params, ep, seg, 3, 10.0, key)
        # the row samples μ̃ + L̃ξ that policy_loss used (same key → same ξ = row_noise(key, B, R, k))
        _, _, mean_p, L_p, _ = U.projected_policy(learner, params, old_params, U.decision_states(ep), 3, 10.0)
        xi = U.row_noise(key, B, seg.row_start.shape[0], mean_p.shape[-1])
        return metrics["q_loss"], loss, metrics, gaussian.sample_rows(mean_p, L_p, xi)

    states = np.asarray(ep.states)
    for length in seg_lib.segment_lengths(T):
        length = int(length)
        offset = 0 if T // length == 1 else int(rng.integers(0, length))
        ql, loss, metrics, w = jax.device_get(packed(params, critic_params, length, offset, jax.random.key(length)))
        idx = seg_lib.index_in_segments(T, length, offset, extra_row=False)
        Ra = idx.shape[0]
        c, a_idx = idx[:, 0], idx[:, :-1]
        assert np.all(a_idx < T)
        rep = lambda x: np.repeat(np.asarray(x)[:, None], Ra, axis=1)  # noqa: E731  episode init condition
        a = decode_rows(learner, np.asarray(w)[:, :Ra], c, np.asarray(ep.init_time), rep(ep.init_time),
                        rep(ep.init_pos), rep(ep.init_vel), length)
        q = rows_apply(learner, critic_params, states[:, c], a, c, length)[..., 1:]  # [C, B, Ra, ℓ]
        ref = -np.mean(np.min(q.sum(-1), axis=0))  # min over critics of the row sums, mean over (traj, row)
        np.testing.assert_allclose(ql, ref, rtol=1e-4, atol=1e-5, err_msg=f"ℓ={length} o={offset}")
        np.testing.assert_allclose(loss, ref + metrics["trust_region_loss"], rtol=1e-4, atol=1e-5)
        assert metrics["trust_region_loss"] > 0
    assert len(traces) == 1

    # gradients: to every policy parameter, finite and nonzero; none to the (frozen) critic
    seg = seg_lib.make_segmentation(10, 3, T, extra_row=False)

    def f(p, cp):
        return U.policy_loss(learner, p, old_params, cp, ep, seg, 3, 10.0, jax.random.key(5))[0]

    g_pol, g_crit = jax.jit(jax.grad(f, argnums=(0, 1)))(params, critic_params)
    for path, g in jax.tree_util.tree_leaves_with_path(g_pol):
        assert np.all(np.isfinite(g)), path
        assert np.abs(np.asarray(g)).sum() > 0, path
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(g_crit))


def test_polyak_updates_and_policy_weight_decay():
    """Old-policy Polyak and the coupled weight decay here; the critic target's Polyak update is checked after
    a `critic_update` step in `test_critic_steps_reduce_the_loss`."""
    learner = make_learner(20, 0.05, max_num_segments=5, batch_size=4)
    pstate = U.init_policy_state(learner, jax.random.key(1))
    moved = pstate.replace(params=perturbed(pstate.params, jax.random.key(3), 0.1))
    upd = U.old_policy_update(learner, moved)
    for p, o, n in zip(jax.tree.leaves(moved.params), jax.tree.leaves(moved.old_params),
                       jax.tree.leaves(upd.old_params)):
        np.testing.assert_allclose(n, 0.995 * np.asarray(o) + 0.005 * np.asarray(p), rtol=1e-6, atol=1e-7)

    # torch.optim.Adam(weight_decay=wd): the decay joins the gradient before the moments (coupled L2)
    lr, wd = 1e-2, 0.3
    opt = U.policy_optimizer(lr, wd)
    theta = jnp.array([1.0, -2.0, 0.5])
    grads = [jnp.array([0.1, 0.2, -0.3]), jnp.array([-0.2, 0.05, 0.4])]
    state, th = opt.init(theta), theta
    m = v = np.zeros(3)
    th_ref = np.asarray(theta, np.float64)
    for t, g in enumerate(grads, 1):
        upd_, state = opt.update(g, state, th)
        th = optax.apply_updates(th, upd_)
        gg = np.asarray(g) + wd * th_ref
        m, v = 0.9 * m + 0.1 * gg, 0.999 * v + 0.001 * gg**2
        th_ref = th_ref - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(th, th_ref, rtol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# 5. Learning sanity check


def test_critic_steps_reduce_the_loss():
    """Synthetic episodes with a known return structure: r_k = 1, γ = 1, a time feature k/T in the state, so
    V(s_k) = T − k and every Q token of a row starting at c is T − c. A few hundred critic steps must cut the
    critic loss by far."""
    T, dt, n = 20, 0.05, 64
    learner = make_learner(T, dt, max_num_segments=5, batch_size=16, lr_critic=3e-3)
    rng = np.random.default_rng(0)
    ep = make_episodes(rng, learner, batch=n)
    k = np.arange(T)
    states = np.asarray(ep.states).copy()
    states[..., 0] = k / T
    rewards = np.ones((n, T))
    ep = ep.replace(states=jnp.asarray(states), rewards=jnp.asarray(rewards, jnp.float32))
    buf = buffer_lib.add(buffer_lib.init(n, jax.tree.map(lambda x: x[0], ep)), ep)
    cstate = U.init_critic_state(learner, jax.random.key(0), 1)
    pstate = U.init_policy_state(learner, jax.random.key(1))
    h0 = U.initial_entropy(learner, pstate.old_params, U.decision_states(ep))

    @jax.jit
    def run(s, key):  # one step per call, so that the Polyak update of a single step can be checked
        return U.critic_update(learner, s, buf, pstate.params, pstate.old_params, 1, h0, key, 1)

    # target critic: θ̄ ← 0.005·θ + 0.995·θ̄ after the step (start from a target that differs from θ)
    cstate = cstate.replace(target_params=perturbed(cstate.params, jax.random.key(9)))
    state, m = run(cstate, jax.random.key(10))
    for p, t_old, t_new in zip(jax.tree.leaves(state.params), jax.tree.leaves(cstate.target_params),
                               jax.tree.leaves(state.target_params)):
        np.testing.assert_allclose(t_new, 0.005 * np.asarray(p) + 0.995 * np.asarray(t_old), rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(cstate.params)))

    losses = [float(m["critic_loss"][0])]
    for i in range(499):
        state, m = run(state, jax.random.key(100 + i))
        losses.append(float(m["critic_loss"][0]))
    first, last = np.mean(losses[:50]), np.mean(losses[-50:])  # segment lengths vary per step: average
    assert np.isfinite(last)
    assert last < 0.25 * first, (first, last)
    assert run._cache_size() == 1


# --------------------------------------------------------------------------------------------------------------
# 6. Micro-batching (sequential chunks, gradient accumulation) gives the whole-batch numbers


@pytest.mark.parametrize("contextual", [False, pytest.param(True, marks=pytest.mark.slow)])  # TOP-ERL: non-contextual
def test_micro_batching_matches_whole_batch(contextual):
    T, dt, n = 20, 0.05, 4
    whole = make_learner(T, dt, max_num_segments=5, batch_size=n, relative_goal=True, goal_scale=0.5)
    whole = dataclasses.replace(whole, policy=whole.policy.clone(contextual_cov=contextual, cov_hidden_sizes=(8,)))
    chunked = dataclasses.replace(whole, micro_batch=2)
    rng = np.random.default_rng(5)
    ep = make_episodes(rng, whole, batch=n)
    pstate = U.init_policy_state(whole, jax.random.key(0))
    params = perturbed(pstate.params, jax.random.key(1), 0.05)
    critic_params = init_ensemble(whole.critic, jax.random.key(2), 2)
    target_params = perturbed(critic_params, jax.random.key(3), 0.05)

    def run(learner):
        @jax.jit
        def f(length, offset):
            pseg = seg_lib.make_segmentation(length, offset, T, 5, extra_row=False)
            pgrads, metrics = U.policy_loss_and_grad(learner, params, pstate.old_params, critic_params, ep, pseg, 2,
                                                     5.0, jax.random.key(6))
            if contextual:  # the critic side does not depend on the covariance type
                return pgrads, metrics
            seg = seg_lib.make_segmentation(length, offset, T, 5, extra_row=True)
            layout = seg_lib.packed_layout(seg)
            _, _, m, L, _ = U.projected_policy(learner, params, pstate.old_params, U.decision_states(ep), 2, 5.0)
            targets, aux = U.critic_targets(learner, target_params, ep, seg, layout, m, L, jax.random.key(4))
            per_critic, grads = U.critic_loss_and_grad(learner, critic_params, ep, layout, targets)
            return pgrads, metrics, targets, aux["actions"], per_critic, grads

        return jax.device_get(f(6, 1))

    a, b = run(whole), run(chunked)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=1e-6)
    assert a[1]["trust_region_loss"] > 0


# --------------------------------------------------------------------------------------------------------------
# 7. Token buckets (`--token-buckets`): the updates at the smallest budget that holds the draw give the one-budget
#    numbers, one seed at a time (a switch) and vmapped over seeds (the seeds share the largest of their budgets)


def _token_bucket_steps(vmapped: bool):
    T, M, n = 20, 2, 4  # lengths 10 and 20: token counts 13 … 22 (critic), 11 / 21 / 22 (policy)
    one = make_learner(T, 0.05, max_num_segments=M, batch_size=n, relative_goal=True, goal_scale=0.5, discount=0.9)
    one = dataclasses.replace(one, critic_optimizer=optax.sgd(1.0), policy_optimizer=optax.sgd(1.0))  # Δθ = −grad
    three = dataclasses.replace(one, token_buckets=3)
    assert seg_lib.token_buckets(T, M, True, 3)[-1] == 22 and seg_lib.token_buckets(T, M, False, 3) == (11, 21, 22)
    rng = np.random.default_rng(3)
    ep = make_episodes(rng, one, batch=n)
    buf = buffer_lib.add(buffer_lib.init(n, buffer_lib.episode_spec(T, S, 2, one.mp.num_params)), ep)

    def steps(learner, key):
        cs = U.init_critic_state(learner, jax.random.fold_in(key, 1), 1)
        ps = U.init_policy_state(learner, jax.random.fold_in(key, 2))
        ps = ps.replace(params=perturbed(ps.params, jax.random.fold_in(key, 3), 0.05))
        cs, cm = U.critic_step(learner, cs, buf, ps.params, ps.old_params, 2, 5.0, jax.random.fold_in(key, 4))
        ps, pm = U.policy_step(learner, ps, buf, cs.params, 2, 5.0, jax.random.fold_in(key, 5))
        return cs.params, cm, ps.params, pm

    keys = jax.random.split(jax.random.key(0), 6)
    batch = jax.vmap if vmapped else partial(partial, jax.lax.map)  # lax.map: one seed at a time, a plain switch
    ref, got = jax.jit(lambda k: (batch(partial(steps, one))(k), batch(partial(steps, three))(k)))(keys)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ref), jax.tree.leaves(got)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(a))) + 1e-7,
                                   err_msg=jax.tree_util.keystr(path))

    # The draws of these steps (critic_step / policy_step split their key this way) reach the smaller budgets.
    def index(key, extra_row):
        seg = U.draw_segmentation(three, jax.random.split(key, 4 if extra_row else 3)[1], extra_row)
        return int(seg_lib.bucket_index(seg, seg_lib.token_buckets(T, M, extra_row, 3)))

    assert min(index(jax.random.fold_in(k, 4), True) for k in keys) < 2
    assert min(index(jax.random.fold_in(k, 5), False) for k in keys) < 2


def test_token_buckets_match_the_one_budget_updates():
    _token_bucket_steps(vmapped=False)


@pytest.mark.slow
def test_token_buckets_match_the_one_budget_updates_vmapped_over_seeds():
    _token_bucket_steps(vmapped=True)


def test_side_by_side_benchmark_runs_the_critic_at_the_token_buckets():
    """benchmarks/learner_vs_upstream.py times our critic's passes the way `critic_step` runs them, inside
    `token_switch`: with 3 budgets its critic update, grad step on fixed (full-budget) targets and targets alone
    (padded to the full budget) give the one-budget values at a short and at the full draw."""
    from benchmarks import learner_vs_upstream as lv

    T, M, n = 20, 2, 4
    one = make_learner(T, 0.05, max_num_segments=M, batch_size=n, relative_goal=True, goal_scale=0.5, discount=0.9)
    one = dataclasses.replace(one, critic_optimizer=optax.sgd(1.0))  # Δθ = −grad (Adam would blow up rounding)
    three = dataclasses.replace(one, token_buckets=3)
    ep = make_episodes(np.random.default_rng(5), one, batch=n)
    key = jax.random.key(1)
    cs = U.init_critic_state(one, jax.random.fold_in(key, 1))
    ps = U.init_policy_state(one, jax.random.fold_in(key, 2))
    ps = ps.replace(params=perturbed(ps.params, jax.random.fold_in(key, 3), 0.05))
    tgt = jnp.asarray(np.random.default_rng(6).normal(size=(n, seg_lib.token_budget(T, M))), jnp.float32)
    i32 = jnp.int32
    draws = [(10, 9), (10, 0)]  # 13 and 22 critic tokens: in the smallest budget and the full one
    assert [int(seg_lib.num_tokens(T, length, o, True)) for length, o in draws] == [13, 22]
    assert 13 <= seg_lib.token_buckets(T, M, True, 3)[0] < 22
    fa, fb = lv.our_steps(one), lv.our_steps(three)
    for length, offset in draws:
        for name, args in (("critic_update", (cs, ps, ep, i32(length), i32(offset), i32(2), 5.0, key)),
                           ("critic_grad", (cs, ep, i32(length), i32(offset), tgt, key)),
                           ("targets", (cs, ps, ep, i32(length), i32(offset), i32(2), 5.0, key))):
            a, b = fa[name](*args), fb[name](*args)
            for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
                np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(x))) + 1e-7,
                                           err_msg=f"{name} ({length}, {offset}) {jax.tree_util.keystr(path)}")
