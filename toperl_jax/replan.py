"""Replanning's machinery (spec: replanning.md): split schedules, owner indices, the replanning rollout and its
stored boundary conditions, and the completion of segment rows across splits. The split-aware targets, losses
and updates are the variant's (`variants/top_erl_replan.py`); design notes and the deviations from upstream
(spec bugs): docs/replanning.md.

An episode of T steps is cut into N splits with starts σ_0 = 0 < σ_1 < … < σ_{N−1} < T (`[N]` int32; N static,
σ may be traced); owner(k) = max{j : σ_j ≤ k} is the split that executes step k. At σ_j the policy reads
d_j = s_{σ_j} and the ProDMP of its weights is decoded at the absolute times t_k = (k + 1)·dt from the boundary
condition (σ_j·dt, q_j, q̇_j), the desired pos/vel of the last executed step, so that the desired trajectory is
continuous across splits.

Segment completion (spec §2) of a row of actions [c, c + ℓ): j0 = owner(c) from the row's initial condition
(`init`: "segment" = the buffered desired pos/vel at c, time t_c − dt; "split" = the boundary condition of
j0). `overconfident`: plan j0 on the whole row; `truncated`: plan j0 on the actions it owns, zero elsewhere,
only those tokens count; `continuing`: plan j > j0 takes over at σ_j from the composite's pos/vel at σ_j − 1.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from toperl_jax import buffer as buffer_lib
from toperl_jax import gaussian
from toperl_jax import segments as seg_lib
from toperl_jax.envs.base import EnvState, EpisodicTask, Rollout
from toperl_jax.mp import ProDMPConfig, decode_token_actions, fix_relative_goal, prodmp_trajectory

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


def row_initial_condition(rep: ReplanEpisode, row_start: jax.Array, j0: jax.Array, init: InitCond, dt: float):
    """Initial condition of each row's first plan j0: `(time [b, R], pos [b, R, dof], vel [b, R, dof])`.

    `segment`: (t_c − dt, desired_pos[c], desired_vel[c]) at the row start c (clipped to T − 1 for unused
    slots); `split`: (init_time + σ_{j0}·dt, q_{j0}, q̇_{j0}).
    """
    ep = rep.episode
    T = ep.rewards.shape[-1]
    if init == "segment":
        c = jnp.minimum(row_start, T - 1)
        t = seg_lib.action_times(ep.init_time, row_start, dt) - dt
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
    times = seg_lib.action_times(ep.init_time, layout.time_index, dt)  # [b, Ntok]

    def anchor(j):  # [b, R, dof] split start position of plan j
        return jnp.take_along_axis(rep.split_init_pos, j[..., None], axis=1)

    if completion in ("overconfident", "truncated"):
        w = fix_relative_goal(mp, _gather_rows(weights, j0), anchor(j0), p_row)
        actions = decode_token_actions(mp, w[:, row], times, t_row[:, row], p_row[:, row], v_row[:, row])
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
    actions = decode_token_actions(mp, pick(w_all), times, pick(t_all), pick(p_all), pick(v_all))
    return actions, plan, owned


# ---------------------------------------------------------------------------------------------------------------
# Updates
