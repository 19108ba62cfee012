"""Replanning inside an episode: splits, rollout, segment completion and the split-aware TOP-ERL updates
(spec: replanning.md; the plain algorithm: top_erl.md).

An episode of T steps is cut into N *splits* with starts σ_0 = 0 < σ_1 < … < σ_{N−1} < T. At σ_j the policy
reads the current observation d_j = s_{σ_j} (time feature included), draws ProDMP weights w_j and the ProDMP
is decoded at the absolute action times t_k = (k + 1)·dt from the boundary condition (σ_j·dt, q_j, q̇_j): the
*desired* pos/vel of the last executed step (the measured robot state for j = 0). The plan of split j runs
the steps owner(k) = j, owner(k) = max{j : σ_j ≤ k}. Because the new plan starts exactly from where the old
one was at σ_j·dt, desired position and velocity are continuous across split boundaries.

## Static shapes
- Split starts are an `[N]` int32 array, owner indices `[T]`; N is static, σ may be traced (random splits).
- `rollout` runs one `lax.scan` over the T steps of a batch of episodes; at a split start a `lax.cond` (real
  branch: the schedule is shared by the batch) queries the policy and decodes the new plan over the whole
  horizon `[n, T, 2·dof]`; step k executes entry k of the current plan. So one compiled program serves every
  schedule, and for N = 1 the rollout is the plain TOP-ERL rollout.
- In the updates every (trajectory, row, split) gets its own weight sample θ_{b,r,j} = μ̃(d_{b,j}) +
  L̃ ξ_{b,r,j}; each token of the packed layout (see `updates`) picks its plan index and initial condition
  and is decoded on its own (`complete_rows`).

## Segment completion (spec §2) for a row of action indices [c, c + ℓ)
j0 = owner(c), the plan that owns the row's first action; x⁰ = ProDMP(θ_{j0}) from the row's initial
condition. `overconfident`: x⁰ on the whole row. `truncated`: x⁰ on the actions with owner = j0, zero actions
elsewhere, and only those tokens count (Q sum of the policy loss, Q-token loss and V-target read-out of the
critic). `continuing`: the actions owned by j > j0 come from θ_j decoded from (σ_j·dt, composite pos/vel at
σ_j − 1), i.e. the composite is continuous where the plans hand over.

Row initial condition (`init`): `"segment"` = the buffered desired pos/vel at the row start,
(t_c − dt, q̂_c, q̂̇_c) — TOP-ERL's initial-condition enforcement, and upstream's "buffer-based" policy init;
`"split"` = the boundary condition the plan j0 was executed from, (σ_{j0}·dt, q_{j0}, q̇_{j0}) — for N = 1
this is the episode start, i.e. TOP-ERL's policy loss.

## Deviations from upstream (rw-ml/Replanning_TOP_ERL), each on purpose
- j0 = owner(c) (upstream: owner(c − 1) from the init time; spec bug 2). The `rel_shift_time`/`shift`
  workarounds are therefore not needed and do not exist here.
- Row initial condition at the row's own start c (upstream default: the last column of the previous row,
  wrong for overlapping or non-contiguous rows; bug 3). Its time is t_c − dt, consistent with q̂_c.
- `continuing` chains from the composite at σ_j − 1, which always exists because j0 = owner(c) (upstream
  starts from q = q̇ = 0 when the prefix is empty; bug 4); no wrap-around to plan 0.
- `truncated` V target = Q̄ read at the last action owned by j0, not at the end of a row padded with zero
  actions (bug 5).
- No empty splits: every strategy yields N non-empty splits (`random` draws N − 1 distinct boundaries with a
  minimum length), so no dummy plan owns the last action (bug 8). Split starts are stored per episode `[N]`
  (bug 9). The relative-goal fix re-anchors the goal of plan j from its own split start q_j to the decoding
  initial condition, in the policy and the critic alike (bug 7). Options with config-typo or dict-mutation
  bugs upstream (bugs 1, 12: `enforce_no_overlap`, `include_0`, `segments_equal_splits`) are not offered.
- The policy loss uses TOP-ERL's random segments (upstream "route A"); the per-split "route B" and the
  decision-state critic token are not implemented.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax import lax

from toperl_jax import buffer as buffer_lib
from toperl_jax import critic as critic_lib
from toperl_jax import gaussian, updates
from toperl_jax import segments as seg_lib
from toperl_jax.critic import TransformerCritic
from toperl_jax.envs.base import EnvState, EpisodicTask, Rollout
from toperl_jax.mp import ProDMPConfig, prodmp_trajectory
from toperl_jax.projection import trust_region_loss

sg = lax.stop_gradient
Strategy = Literal["equal", "fixed", "random"]
Completion = Literal["overconfident", "truncated", "continuing"]
InitCond = Literal["segment", "split"]

# ---------------------------------------------------------------------------------------------------------------
# Split schedules


def equal_split_sizes(T: int, n_splits: int) -> tuple[int, ...]:
    """⌊T/N⌋ each, the remainder +1 on the last splits (upstream `n_equal_splits`: 100/3 → (33, 33, 34))."""
    base, rem = divmod(T, n_splits)
    return tuple(base + (i >= n_splits - rem) for i in range(n_splits))


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """How an episode of T steps is cut into N non-empty splits (static).

    Attributes:
        T: episode length.
        n_splits: N ≥ 1.
        strategy: `equal` (`equal_split_sizes`), `fixed` (`sizes`, Σ = T), `random` (N − 1 distinct boundaries
            uniform over the compositions of T into N parts of at least `min_length` steps, one draw per rollout
            batch, shared by its episodes as upstream).
        sizes: split lengths for `fixed`.
        min_length: smallest split length for `random`.
    """

    T: int
    n_splits: int = 1
    strategy: Strategy = "equal"
    sizes: tuple[int, ...] | None = None
    min_length: int = 1

    def __post_init__(self):
        if not (isinstance(self.n_splits, int) and 1 <= self.n_splits <= self.T):
            raise ValueError(f"--n-splits must be in [1, T={self.T}], got {self.n_splits!r}")
        if self.strategy not in ("equal", "fixed", "random"):
            raise ValueError(f"--split-strategy must be one of equal, fixed, random; got {self.strategy!r}")
        if self.strategy == "fixed" and not (self.sizes and len(self.sizes) == self.n_splits
                                             and min(self.sizes) >= 1 and sum(self.sizes) == self.T):
            raise ValueError(f"--split-sizes must be {self.n_splits} (--n-splits) positive lengths summing to "
                             f"T={self.T}, got {self.sizes!r}")
        if self.strategy == "random" and not 1 <= self.min_length <= self.T // self.n_splits:
            raise ValueError(f"--split-min-length must be in [1, T // N = {self.T // self.n_splits}], "
                             f"got {self.min_length}")

    def static_sizes(self) -> tuple[int, ...] | None:
        """The split lengths when they do not depend on a draw."""
        if self.strategy == "equal":
            return equal_split_sizes(self.T, self.n_splits)
        if self.strategy == "fixed":
            return tuple(self.sizes)
        return None


def split_starts(cfg: SplitConfig, key: jax.Array) -> jax.Array:
    """σ `[N]` int32, σ_0 = 0, strictly increasing, σ_{N−1} < T.

    `random`: with m = min_length and E = T − N·m spare steps, N − 1 distinct sorted v_i from {1 … E + N − 1}
    give σ_i = i·m + v_i − i (stars and bars: uniform over the compositions, every part ≥ m).
    """
    sizes = cfg.static_sizes()
    if sizes is not None:
        return jnp.asarray(np.concatenate([[0], np.cumsum(sizes)[:-1]]), jnp.int32)
    N, m = cfg.n_splits, cfg.min_length
    if N == 1:
        return jnp.zeros((1,), jnp.int32)
    spare = cfg.T - N * m
    v = jnp.sort(jax.random.choice(key, spare + N - 1, (N - 1,), replace=False).astype(jnp.int32) + 1)
    i = jnp.arange(1, N, dtype=jnp.int32)
    return jnp.concatenate([jnp.zeros((1,), jnp.int32), i * m + v - i])


def owner_index(split_start: jax.Array, T: int) -> jax.Array:
    """owner(k) = max{j : σ_j ≤ k} = #{j : σ_j ≤ k} − 1: `[..., N]` → `[..., T]` int32."""
    k = jnp.arange(T, dtype=jnp.int32)
    return jnp.sum(split_start[..., None, :] <= k[:, None], axis=-1).astype(jnp.int32) - 1


# ---------------------------------------------------------------------------------------------------------------
# Episodes with splits


@struct.dataclass
class ReplanEpisode:
    """One episode with replanning, as the buffer stores it (leading batch axes allowed).

    Attributes:
        episode: the TOP-ERL fields (`buffer.Episode`); its `params_mean` `[N, k]` and `params_L` `[N, k, k]`
            hold the behaviour policy's output at every split (upstream `episode_params_mean/L`).
        split_start: `[N]` int32 σ_j.
        split_init_pos, split_init_vel: `[N, dof]` boundary condition (q_j, q̇_j) of each split: the desired
            pos/vel of the last executed step (measured at reset for j = 0).
    """

    episode: buffer_lib.Episode
    split_start: jax.Array
    split_init_pos: jax.Array
    split_init_vel: jax.Array


def replan_episode_spec(T: int, state_dim: int, dof: int, num_weights: int, n_splits: int) -> ReplanEpisode:
    """Shapes of one `ReplanEpisode` (no batch axis), for `buffer.init`."""
    f = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
    ep = buffer_lib.episode_spec(T, state_dim, dof, num_weights).replace(
        params_mean=f(n_splits, num_weights), params_L=f(n_splits, num_weights, num_weights))
    return ReplanEpisode(episode=ep, split_start=jax.ShapeDtypeStruct((n_splits,), jnp.int32),
                         split_init_pos=f(n_splits, dof), split_init_vel=f(n_splits, dof))


def decision_states(rep: ReplanEpisode) -> jax.Array:
    """d_j = s_{σ_j}: `[B, N, S]`."""
    return jnp.take_along_axis(rep.episode.states, rep.split_start[..., None], axis=-2)


def rollout(task: EpisodicTask, mp: ProDMPConfig, policy_apply, start: EnvState, split_start: jax.Array,
            key: jax.Array, deterministic: bool, reuse_noise: bool = False,
            static_sizes: tuple[int, ...] | None = None):
    """Execute a batch of episodes with replanning at the split starts.

    Args:
        task: the task (static).
        mp: ProDMP config of the policy's weights.
        policy_apply: obs `[n, S]` → (mean `[n, k]`, L `[k, k]` or `[n, k, k]`).
        start: `[n]` batch of reset states.
        split_start: `[N]` σ, shared by the batch.
        key: noise key: split 0 draws ξ with `key` itself (so that N = 1 is TOP-ERL's rollout), split j ≥ 1
            with `fold_in(key, j)`; `reuse_noise` uses `key` for every split (upstream `prodmp_reuse_sample`).
        deterministic: w_j = μ_j.
        static_sizes: the split lengths when they are static (`SplitConfig.static_sizes()`; they must match
            `split_start`). Then each split runs as one `task.rollout` over its slice of the plan (for N = 1
            exactly TOP-ERL's rollout call); otherwise one `lax.scan` over T steps replans under `lax.cond`.
            Both give the same episodes up to float rounding (tested).

    Returns:
        (`ReplanEpisode` `[n, ...]` with the env rewards, final env state `[n]`, `Rollout` `[n, ...]`).
    """
    n, T, dof = start.obs.shape[0], task.episode_length, task.num_dof
    times = task.action_times()  # [T]
    N = split_start.shape[0]
    is_start = jnp.zeros((T,), bool).at[split_start].set(True)
    owner = owner_index(split_start, T)

    def plan_at(env: EnvState, j, k_step):
        mean, L = policy_apply(env.obs)
        kj = key if reuse_noise else (key if isinstance(j, int) and j == 0 else jax.random.fold_in(key, j))
        w = mean if deterministic else gaussian.sample(kj, mean, L)
        if isinstance(k_step, int) and k_step == 0:
            t0 = jnp.zeros((n,))  # as TOP-ERL's rollout
        else:  # the same float32 product as the action time t_{k−1} = k·dt
            t0 = jnp.full((n,), jnp.asarray(k_step, jnp.float32) * np.float32(task.dt))
        pos, vel = prodmp_trajectory(mp, w, times, t0, env.desired_pos, env.desired_vel)  # [n, T, dof]
        return jnp.concatenate([pos, vel], axis=-1), mean, jnp.broadcast_to(L, (n,) + L.shape[-2:])

    if static_sizes is not None:
        starts = np.concatenate([[0], np.cumsum(static_sizes)[:-1]]).astype(int)
        env, parts, recs = start, [], []
        for j, (s, length) in enumerate(zip(starts.tolist(), static_sizes)):
            plan, mean, L = plan_at(env, j, s)
            recs.append((mean, L, env.desired_pos, env.desired_vel))
            env, part = jax.vmap(task.rollout)(env, plan[:, s:s + length])
            parts.append(part)
        final = env
        cat = lambda *xs: jnp.concatenate(xs, axis=1)
        ro = jax.tree.map(cat, *[p.replace(final_obs=None, final_metrics=None) for p in parts])
        ro = ro.replace(final_obs=final.obs, final_metrics=final.metrics)
        rec = tuple(jnp.stack(x, axis=1) for x in zip(*recs))
        return _replan_episode(ro, rec, split_start), final, ro

    plan, mean0, L0 = plan_at(start, 0, 0)
    k_w = mean0.shape[-1]
    rec = (jnp.zeros((n, N, k_w)).at[:, 0].set(mean0), jnp.zeros((n, N, k_w, k_w)).at[:, 0].set(L0),
           jnp.zeros((n, N, dof)).at[:, 0].set(start.desired_pos),
           jnp.zeros((n, N, dof)).at[:, 0].set(start.desired_vel))

    def replan(carry, k):
        env, _, (m, Ls, p0, v0) = carry
        j = owner[k]
        plan, mean, L = plan_at(env, j, k.astype(jnp.float32))
        return env, plan, (m.at[:, j].set(mean), Ls.at[:, j].set(L), p0.at[:, j].set(env.desired_pos),
                           v0.at[:, j].set(env.desired_vel))

    def body(carry, k):
        carry = lax.cond(is_start[k] & (k > 0), replan, lambda c, _: c, carry, k)
        env, plan, rec = carry
        out = (env.obs, env.desired_pos, env.desired_vel)
        a = plan[:, k].astype(jnp.float32)
        env = jax.vmap(task.step)(env, a[:, :dof], a[:, dof:])
        return (env, plan, rec), out + (a, env.reward, env.done, env.metrics)

    (final, _, rec), outs = lax.scan(body, (start, plan, rec), jnp.arange(T, dtype=jnp.int32))
    obs, dpos, dvel, actions, rew, done, metrics = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), outs)
    ro = Rollout(obs=obs, actions=actions, rewards=rew, dones=done, desired_pos=dpos, desired_vel=dvel,
                 metrics=metrics, final_obs=final.obs, final_metrics=final.metrics)
    return _replan_episode(ro, rec, split_start), final, ro


def _replan_episode(ro: Rollout, rec, split_start: jax.Array) -> ReplanEpisode:
    """Buffer record of a rollout `[n, ...]`; rec = per-split (mean, L, q_j, q̇_j), each `[n, N, ...]`."""
    n = ro.obs.shape[0]
    mean, Ls, p0, v0 = rec
    episode = buffer_lib.Episode(states=ro.obs, actions=ro.actions, rewards=ro.rewards, dones=ro.dones,
                                 desired_pos=ro.desired_pos, desired_vel=ro.desired_vel, init_time=jnp.zeros(n),
                                 init_pos=ro.init_pos, init_vel=ro.init_vel, params_mean=mean, params_L=Ls)
    return ReplanEpisode(episode=episode, split_start=jnp.broadcast_to(split_start, (n, split_start.shape[0])),
                         split_init_pos=p0, split_init_vel=v0)


# ---------------------------------------------------------------------------------------------------------------
# Split-aware segment generation (spec §2)


def _gather_rows(x: jax.Array, idx: jax.Array) -> jax.Array:
    """x `[b, R, N, ...]`, idx `[b, R]` → `[b, R, ...]` (entry idx[b, r] of the split axis)."""
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=2)[:, :, 0]


def fix_relative_goal(mp: ProDMPConfig, weights: jax.Array, anchor_pos: jax.Array, init_pos: jax.Array):
    """With a relative goal, a plan drawn at q_anchor and decoded from q_init keeps its absolute goal:
    goal ← goal − (q_init − q_anchor) (last weight of each DoF block). No-op without `relative_goal`.
    `weights [..., k]`, `anchor_pos`, `init_pos` `[..., dof]`."""
    if not mp.relative_goal:
        return weights
    b = mp.params_per_dof
    w = weights.reshape(*weights.shape[:-1], mp.num_dof, b)
    w = w.at[..., b - 1].add(-(init_pos - anchor_pos))
    return w.reshape(weights.shape)


def row_initial_condition(rep: ReplanEpisode, row_start: jax.Array, j0: jax.Array, init: InitCond, dt: float):
    """Initial condition of each row's first plan j0: `(time [b, R], pos [b, R, dof], vel [b, R, dof])`.

    `segment`: (t_c − dt, desired_pos[c], desired_vel[c]) at the row start c (clipped to T − 1 for unused
    slots); `split`: (init_time + σ_{j0}·dt, q_{j0}, q̇_{j0}).
    """
    ep = rep.episode
    T = ep.rewards.shape[-1]
    if init == "segment":
        c = jnp.minimum(row_start, T - 1)
        t = updates.action_times(ep.init_time, row_start, dt) - dt
        return t, ep.desired_pos[:, c], ep.desired_vel[:, c]
    sigma = jnp.take_along_axis(rep.split_start, j0, axis=1)  # [b, R]
    t = ep.init_time[:, None] + sigma.astype(ep.init_time.dtype) * dt
    take = lambda x: jnp.take_along_axis(x, j0[..., None], axis=1)
    return t, take(rep.split_init_pos), take(rep.split_init_vel)


def complete_rows(mp: ProDMPConfig, dt: float, completion: Completion, rep: ReplanEpisode,
                  seg: seg_lib.Segmentation, layout: seg_lib.PackedLayout, weights: jax.Array, init: InitCond):
    """Per-token actions of every row under a completion strategy (spec §2, with owner(c); see module doc).

    Args:
        weights: `[b, R, N, k]` θ_{b,r,j} (one sample per trajectory, row and split).
        init: row initial condition (`row_initial_condition`).

    Returns:
        actions `[b, Ntok, 2·dof]` (zero where `truncated` cuts; not masked otherwise),
        plan `[b, Ntok]` int32 plan index used by each token,
        owned `[b, Ntok]` bool: owner(k) = j0 of the token's row (the tokens `truncated` keeps).
    """
    ep = rep.episode
    T = ep.rewards.shape[-1]
    N = rep.split_start.shape[-1]
    row = layout.row
    owner = owner_index(rep.split_start, T)  # [b, T]
    j0 = owner[:, jnp.minimum(seg.row_start, T - 1)]  # [b, R]
    tok_owner = owner[:, jnp.minimum(layout.time_index, T - 1)]  # [b, Ntok]
    j0_tok = j0[:, row]
    owned = tok_owner == j0_tok
    t_row, p_row, v_row = row_initial_condition(rep, seg.row_start, j0, init, dt)
    times = updates.action_times(ep.init_time, layout.time_index, dt)  # [b, Ntok]

    def anchor(j):  # [b, R, dof] split start position of plan j
        return jnp.take_along_axis(rep.split_init_pos, j[..., None], axis=1)

    if completion in ("overconfident", "truncated"):
        w = fix_relative_goal(mp, _gather_rows(weights, j0), anchor(j0), p_row)
        actions = updates.decode_token_actions(mp, w[:, row], times, t_row[:, row], p_row[:, row], v_row[:, row])
        if completion == "truncated":
            actions = jnp.where(owned[..., None], actions, 0.0)
        return actions, j0_tok, owned

    # continuing: chain the plans j0, j0 + 1, … ; plan j > j0 starts at σ_j·dt from the composite there.
    ts, ps, vs = [t_row], [p_row], [v_row]
    ws = [fix_relative_goal(mp, weights[:, :, 0], anchor(jnp.zeros_like(j0)), p_row)]
    for j in range(1, N):
        tb = ep.init_time[:, None] + rep.split_start[:, j][:, None].astype(ep.init_time.dtype) * dt  # [b, 1]
        tb = jnp.maximum(jnp.broadcast_to(tb, t_row.shape), ts[-1])  # unused rows only: never decode backwards
        pb, vb = prodmp_trajectory(mp, ws[-1], tb[..., None], ts[-1], ps[-1], vs[-1])  # [b, R, 1, dof]
        first = (j0 == j)[..., None]
        ts.append(jnp.where(j0 == j, t_row, tb))
        ps.append(jnp.where(first, p_row, pb[..., 0, :]))
        vs.append(jnp.where(first, v_row, vb[..., 0, :]))
        ws.append(fix_relative_goal(mp, weights[:, :, j], anchor(jnp.full_like(j0, j)), ps[-1]))
    t_all, p_all, v_all, w_all = (jnp.stack(x, axis=2) for x in (ts, ps, vs, ws))  # [b, R, N, ...]
    plan = jnp.maximum(tok_owner, j0_tok)
    pick = lambda x: _gather_rows(x[:, row], plan)  # [b, Ntok, ...]  [b, Ntok, ...]
    actions = updates.decode_token_actions(mp, pick(w_all), times, pick(t_all), pick(p_all), pick(v_all))
    return actions, plan, owned


# ---------------------------------------------------------------------------------------------------------------
# Updates


@dataclasses.dataclass(frozen=True)
class ReplanUpdates:
    """Static settings of the split-aware updates (besides the TOP-ERL `updates.Learner`).

    Attributes:
        critic_completion: completion of the V-target rows (upstream `v_func_estimation`).
        policy_completion: completion of the policy-loss rows (upstream `q_loss_strategy`).
        critic_init: row initial condition of the V targets (`segment` = TOP-ERL's enforcement).
        policy_init: row initial condition of the policy loss (`split`: N = 1 is TOP-ERL's episode start).
    """

    critic_completion: Completion = "overconfident"
    policy_completion: Completion = "overconfident"
    critic_init: InitCond = "segment"
    policy_init: InitCond = "segment"


def split_noise(key: jax.Array, batch: int, num_rows: int, n_splits: int, k: int) -> jax.Array:
    """ξ `[B, R, N, k]` (for N = 1 the numbers of `updates.row_noise(key, B, R, k)`)."""
    return jax.random.normal(key, (batch, num_rows, n_splits, k), dtype=jnp.float32)


def split_weights(mean: jax.Array, L: jax.Array, xi: jax.Array) -> jax.Array:
    """θ = μ̃ + L̃ξ: mean `[B, N, k]`, L `[k, k]` or `[B, N, k, k]`, ξ `[B, R, N, k]` → `[B, R, N, k]`."""
    L_b = L if L.ndim == 2 else L[:, None]
    return mean[:, None] + jnp.einsum("...ij,...j->...i", L_b, xi.astype(mean.dtype))


def _critic_tokens(learner: updates.Learner, params, state_tok, action_tok, layout, dropout_key=None):
    """Every critic of the stack on packed tokens: `[C, b, Ntok]`."""
    deterministic = dropout_key is None or learner.critic.dropout == 0.0
    return critic_lib.apply_ensemble(
        learner.critic, params, state_tok, action_tok, layout.is_state, layout.time_index, layout.segment_id,
        method=TransformerCritic.tokens, dropout_key=None if deterministic else dropout_key,
        deterministic=deterministic)


def _num_chunks(learner: updates.Learner, batch: int) -> int:
    mb = learner.micro_batch
    return 1 if mb is None or mb >= batch else batch // mb


def _split(tree, n):
    return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), tree)


def _merge(tree):
    return jax.tree.map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), tree)


def _last_owned_token(owned_valid: jax.Array, layout: seg_lib.PackedLayout, R: int) -> jax.Array:
    """`[b, Ntok]`: for every token, the index of the last token of its row where `owned_valid` holds."""
    t = jnp.arange(layout.row.shape[0], dtype=jnp.int32)
    in_r = layout.row[None, :] == jnp.arange(R)[:, None]  # [R, Ntok]
    last = jnp.max(jnp.where(in_r[None] & owned_valid[:, None, :], t, -1), axis=-1)  # [b, R]
    return jnp.maximum(last, 0)[:, layout.row]


def _targets_chunk(learner, ru: ReplanUpdates, target_params, rep: ReplanEpisode, seg, layout, mean_p, L_p, xi):
    ep = rep.episode
    T = seg.T
    c_tok = seg.row_start[layout.row]
    w = split_weights(mean_p, L_p, xi)
    actions, _, owned = complete_rows(learner.mp, learner.dt, ru.critic_completion, rep, seg, layout, w,
                                      ru.critic_init)
    act_valid = layout.is_action & layout.valid
    actions = jnp.where(act_valid[:, None], actions, 0.0)
    state_tok, _ = seg_lib.gather_tokens(layout, ep.states, ep.actions)
    q_hat = jnp.min(_critic_tokens(learner, target_params, state_tok, actions, layout), axis=0)  # [b, Ntok]
    if ru.critic_completion == "truncated":
        last = _last_owned_token(act_valid & owned, layout, seg.row_start.shape[0])
    else:
        last = jnp.broadcast_to(updates.last_valid_token(seg, layout), q_hat.shape)
    v_target = jnp.take_along_axis(q_hat, last, axis=1)
    v_bar = updates.state_values(learner, target_params, ep.states)  # [b, T]
    nxt = layout.time_index + 1
    v_nxt = jnp.where(nxt < T, v_bar[:, jnp.minimum(nxt, T - 1)], 0.0)
    boot = jnp.power(jnp.float32(learner.discount), (nxt - c_tok).astype(jnp.float32)) * v_nxt
    reward_sum = ep.rewards.astype(jnp.float32) @ updates.reward_weights(seg, layout, learner.discount).T
    q_target = reward_sum + boot
    targets = jnp.where(layout.is_state, v_target, jnp.where(act_valid, q_target, 0.0))
    loss_mask = owned | layout.is_state if ru.critic_completion == "truncated" else jnp.ones_like(owned)
    return targets, loss_mask, {"actions": actions, "owned": owned}


def critic_targets(learner: updates.Learner, ru: ReplanUpdates, target_params, rep: ReplanEpisode,
                   seg: seg_lib.Segmentation, layout: seg_lib.PackedLayout, mean_proj: jax.Array, L_proj: jax.Array,
                   key: jax.Array):
    """Packed n-step targets (as `updates.critic_targets`) with the V-target â completed per split.

    Args:
        mean_proj, L_proj: projected policy at the decision states, `[B, N, k]` and `[k, k]` / `[B, N, k, k]`.

    Returns:
        targets `[B, Ntok]`; loss_mask `[B, Ntok]` (False at action tokens that `truncated` drops from the
        Q-token loss; all True otherwise); aux {actions, owned}.
    """
    mean_proj, L_proj, target_params = sg(mean_proj), sg(L_proj), sg(target_params)
    B = rep.episode.rewards.shape[0]
    xi = split_noise(key, B, seg.row_start.shape[0], mean_proj.shape[1], mean_proj.shape[-1])
    ctx = L_proj.ndim == 4

    def chunk(x):
        r, m, xi_c, L_c = x
        return _targets_chunk(learner, ru, target_params, r, seg, layout, m, L_c if ctx else L_proj, xi_c)

    n = _num_chunks(learner, B)
    inputs = (rep, mean_proj, xi, L_proj if ctx else None)
    out = chunk(inputs) if n == 1 else _merge(lax.map(chunk, _split(inputs, n)))
    return jax.tree.map(sg, out)


def _masked_critic_loss_and_grad(learner, params, episodes, layout, targets, mask, dropout_key):
    """Per-critic MSE `[C]` (as `updates.masked_mse`, with the Q tokens outside `mask` dropped) and the
    gradient of their sum, in chunks of `micro_batch` trajectories."""
    B = targets.shape[0]
    count = B * jnp.sum(layout.in_row)

    def grad_chunk(ep, tgt, m, key):
        def f(p):
            pred = updates.critic_predictions(learner, p, ep, layout, key)
            keep = layout.valid & m
            per = jnp.sum(jnp.square(jnp.where(keep, pred, 0.0) - jnp.where(keep, tgt, 0.0)), axis=(-2, -1))
            return jnp.sum(per / count), per / count

        return jax.grad(f, has_aux=True)(params)

    n = _num_chunks(learner, B)
    if n == 1:
        grads, per = grad_chunk(episodes, targets, mask, dropout_key)
        return per, grads
    keys = jax.random.split(dropout_key, n)

    def body(acc, x):
        grads, per = grad_chunk(*x)
        return jax.tree.map(jnp.add, acc, (per, grads)), None

    C = jax.tree.leaves(params)[0].shape[0]
    zero = (jnp.zeros((C,), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    (per, grads), _ = lax.scan(body, zero, (_split(episodes, n), _split(targets, n), _split(mask, n), keys))
    return per, grads


def _projected(learner, params, old_params, rep, step, initial_entropy):
    return updates.projected_policy(learner, params, old_params, decision_states(rep), step, initial_entropy)


def critic_step(learner: updates.Learner, ru: ReplanUpdates, state: updates.CriticState,
                buffer: buffer_lib.TrajectoryBuffer, policy_params, old_policy_params, step, initial_entropy,
                key: jax.Array):
    """One critic step (as `updates.critic_step`; the same key use, so N = 1 gives its numbers)."""
    k_batch, k_seg, k_noise, k_drop = jax.random.split(key, 4)
    rep = buffer_lib.sample(buffer, k_batch, learner.batch_size)
    seg = updates.draw_segmentation(learner, k_seg, extra_row=True)
    layout = seg_lib.packed_layout(seg)
    _, _, mean_p, L_p, _ = _projected(learner, policy_params, old_policy_params, rep, step, initial_entropy)
    targets, mask, _ = critic_targets(learner, ru, state.target_params, rep, seg, layout, mean_p, L_p, k_noise)
    if ru.critic_completion == "truncated":
        per_critic, grads = _masked_critic_loss_and_grad(learner, state.params, rep.episode, layout, targets,
                                                         mask, k_drop)
    else:
        per_critic, grads = updates.critic_loss_and_grad(learner, state.params, rep.episode, layout, targets,
                                                         k_drop)
    upd, opt_state = learner.critic_optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, upd)
    target_params = optax.incremental_update(params, state.target_params, learner.critic_tau)
    valid = layout.valid
    metrics = {"critic_loss": jnp.mean(per_critic),
               "target_mean": jnp.sum(jnp.where(valid, targets, 0.0)) / (targets.shape[0] * jnp.sum(valid)),
               "segment_length": seg.length}
    return updates.CriticState(params=params, target_params=target_params, opt_state=opt_state), metrics


def critic_update(learner, ru, state, buffer, policy_params, old_policy_params, step, initial_entropy, key,
                  num_steps: int):
    """`num_steps` `critic_step`s in a `lax.scan`."""

    def body(s, k):
        return critic_step(learner, ru, s, buffer, policy_params, old_policy_params, step, initial_entropy, k)

    return lax.scan(body, state, jax.random.split(key, num_steps))


def _q_sum(learner, ru: ReplanUpdates, critic_params, rep, seg, layout, mean_p, L_p, xi):
    """Σ over (trajectory, valid row) of min_C Σ_{l ∈ kept tokens} Q_C(s_c, â_{c:c+l}) for a chunk."""
    R = seg.row_start.shape[0]
    w = split_weights(mean_p, L_p, xi)
    actions, _, owned = complete_rows(learner.mp, learner.dt, ru.policy_completion, rep, seg, layout, w,
                                      ru.policy_init)
    actions = jnp.where(layout.is_action[:, None], actions, 0.0)
    state_tok, _ = seg_lib.gather_tokens(layout, rep.episode.states, rep.episode.actions)
    q = _critic_tokens(learner, sg(critic_params), state_tok, actions, layout)  # [C, b, Ntok]
    keep = layout.is_action & layout.valid
    if ru.policy_completion == "truncated":
        keep = keep & owned
    q_tokens = jnp.where(keep, q, 0.0)
    one_hot = (layout.row[:, None] == jnp.arange(R)[None, :]) & layout.in_row[:, None]
    row_q = jnp.min(jnp.einsum("cbn,nr->cbr", q_tokens, one_hot.astype(q_tokens.dtype)), axis=0)
    return jnp.sum(jnp.where(seg.row_valid, row_q, 0.0))


def policy_loss_and_grad(learner: updates.Learner, ru: ReplanUpdates, params, old_params, critic_params,
                         rep: ReplanEpisode, seg: seg_lib.Segmentation, step, initial_entropy, key: jax.Array):
    """Gradient and metrics of q_loss(π̃) + trust-region loss with per-split projection (spec §4).

    π(d_{b,j}) at every decision state, the old (Polyak) policy at the same states, KL projection per
    (b, j); trust-region loss and entropy are means over all B·N. q_loss = −Σ(kept Q tokens)/(B · rows),
    rows completed with `ru.policy_completion` from `ru.policy_init`. Micro-batching as
    `updates.policy_loss_and_grad` (projection once, q_loss gradient w.r.t. (μ̃, L̃) accumulated in chunks).
    """
    B = rep.episode.rewards.shape[0]
    layout = seg_lib.packed_layout(seg)
    N = rep.split_start.shape[-1]

    def project(p):
        mean, L, mean_p, L_p, info = _projected(learner, p, old_params, rep, step, initial_entropy)
        tr = (trust_region_loss(learner.projection, mean, L, mean_p, L_p) if learner.use_projection
              else jnp.zeros(()))
        return (mean_p, L_p, tr), info

    xi = split_noise(key, B, seg.row_start.shape[0], N, learner.policy.action_dim)
    norm = B * seg.num_rows
    n = _num_chunks(learner, B)

    def q_loss(r, m, L_, xi_c):
        return -_q_sum(learner, ru, critic_params, r, seg, layout, m, L_, xi_c) / norm

    def metrics_of(ql, tr, L_p, info):
        return {"policy_loss": ql + tr, "q_loss": ql, "trust_region_loss": tr,
                "entropy": jnp.mean(gaussian.entropy(L_p)),
                "fallback": jnp.mean(info["fallback"].astype(jnp.float32))}

    if n == 1:  # one pass, the gradient of the whole loss (the structure of `updates.policy_loss`)
        def loss(p):
            (mean_p, L_p, tr), info = project(p)
            ql = q_loss(rep, mean_p, L_p, xi)
            return ql + tr, metrics_of(ql, tr, L_p, info)

        return jax.grad(loss, has_aux=True)(params)

    (mean_p, L_p, tr), pullback, info = jax.vjp(project, params, has_aux=True)
    ctx = L_p.ndim == 4

    def body(acc_L, x):
        r, m, xi_c, L_c = x
        v, (g_m, g_L) = jax.value_and_grad(q_loss, argnums=(1, 2))(r, m, L_c if ctx else L_p, xi_c)
        return (acc_L, (v, g_m, g_L)) if ctx else (acc_L + g_L, (v, g_m, None))

    chunks = _split((rep, mean_p, xi, L_p if ctx else None), n)
    acc_L, (ql, d_m, d_L_ctx) = lax.scan(body, jnp.zeros_like(L_p), chunks)
    d_L = _merge(d_L_ctx) if ctx else acc_L
    (grads,) = pullback((_merge(d_m), d_L, jnp.ones_like(tr)))
    return grads, metrics_of(jnp.sum(ql), tr, L_p, info)


def policy_step(learner: updates.Learner, ru: ReplanUpdates, state: updates.PolicyState,
                buffer: buffer_lib.TrajectoryBuffer, critic_params, step, initial_entropy, key: jax.Array):
    """One policy step (as `updates.policy_step`, same key use)."""
    k_batch, k_seg, k_noise = jax.random.split(key, 3)
    rep = buffer_lib.sample(buffer, k_batch, learner.batch_size)
    seg = updates.draw_segmentation(learner, k_seg, extra_row=False)
    grads, metrics = policy_loss_and_grad(learner, ru, state.params, state.old_params, critic_params, rep, seg,
                                          step, initial_entropy, k_noise)
    upd, opt_state = learner.policy_optimizer.update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, upd), opt_state=opt_state), metrics


def policy_update(learner, ru, state, buffer, critic_params, step, initial_entropy, key, num_steps: int):
    """`num_steps` `policy_step`s in a `lax.scan`, then the old-policy Polyak update."""

    def body(s, k):
        return policy_step(learner, ru, s, buffer, critic_params, step, initial_entropy, k)

    state, metrics = lax.scan(body, state, jax.random.split(key, num_steps))
    return updates.old_policy_update(learner, state), metrics
