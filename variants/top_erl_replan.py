"""TOP-ERL with replanning inside the episode (spec `replanning.md`), end to end in one jitted program.

    python variants/top_erl_replan.py                              # `reach-switch`: the goal moves mid-episode
    python variants/top_erl_replan.py --n-splits 1                 # = variants/top_erl.py (tested), the baseline
    python variants/top_erl_replan.py --task box-dense             # upstream "final": fixed splits [50, 20, 30]
    python variants/top_erl_replan.py --task box-dense-switch      # the same on the goal-switching box pushing
    python variants/top_erl_replan.py --task hopper-jump           # upstream "final": 2 equal splits
    python variants/top_erl_replan.py --task metaworld --env metaworld-door-open  # upstream "final": 3 equal splits
    python variants/top_erl_replan.py --split-strategy random --n-splits 3 --policy-completion continuing

Plain TOP-ERL draws one ProDMP trajectory at the start of an episode. Here the episode of T steps is cut into
N splits σ_0 = 0 < σ_1 < … (`--split-strategy` equal / fixed / random); at every split start the policy reads
the current observation (with its time feature), draws new weights and the ProDMP is decoded at absolute
episode times from the desired pos/vel of the last executed step, so the motion stays continuous in position
and velocity (`toperl_jax.replan.rollout`). One iteration, all inside `lax.scan`:
  1. roll out `num_envs` episodes with replanning (one split schedule per rollout batch, stored per episode);
  2. add them to the buffer with their split starts, boundary conditions and per-split policy outputs;
  3. critic steps as TOP-ERL; the V targets' actions â come from the projected policy at the decision state
     of the plan that owns the row's first action, completed past the next split start by
     `--critic-completion` (`replan.critic_step`);
  4. policy steps: π and the Polyak old policy at all N decision states, KL projection per (trajectory, split),
     q_loss over TOP-ERL random segments completed by `--policy-completion` (`replan.policy_step`).
Everything else — flags, presets, logging, checkpoints, `--resume`, `--num-seeds` — is `variants/top_erl.py`'s:
`Args` extends its `Args`, the learner is built by its `make_learner`, the host loop uses its helpers.

Deviations from upstream rw-ml/Replanning_TOP_ERL are listed in `toperl_jax/replan.py` (module docstring) and
docs/replanning.md; the ones visible here:
- the plan of a segment is chosen by owner(c) of its first action (upstream owner(c − 1), spec bug 2), so the
  upstream presets' `rel_shift_time: 1` workaround is gone;
- evaluation uses the training split strategy (upstream: equal splits with the same N);
- presets take every TOP-ERL number from `variants/top_erl.py`'s presets at import time and only set the
  replanning knobs (and epochs where the replanning configs differ).
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from typing import Literal

import jax
import jax.numpy as jnp
import optax
import tyro
from jax import lax

from toperl_jax import buffer as buffer_lib
from toperl_jax import chunks, envs, gaussian, replan, runner
from toperl_jax import critic as critic_lib
from toperl_jax import segments as seg_lib
from variants import top_erl as te  # flags, presets, Learner, states: shared with TOP-ERL (issue 26 makes this a fork)


sg = lax.stop_gradient



# ---------------------------------------------------------------------------------------------------------------
# Flags


@dataclasses.dataclass(frozen=True)
class Args(te.Args):
    """TOP-ERL with replanning: every TOP-ERL flag, plus the split schedule and the completion strategies.
    The defaults are the `reach-switch` preset; `--task` selects another preset, other flags override it."""

    task: Literal["reach-switch", "reach", "box-dense", "box-dense-switch", "hopper-jump", "metaworld"] = \
        "reach-switch"
    """preset: task plus hyperparameters (flags given alongside override the preset)"""
    env: str = "reacher-switch"
    """environment (`toperl_jax.envs.task_names()`); set by the preset"""

    # --- replanning
    n_splits: int = 2
    """N, splits per episode (1 = plain TOP-ERL)"""
    split_strategy: Literal["equal", "fixed", "random"] = "equal"
    """equal: ⌊T/N⌋ each, remainder on the last splits; fixed: `--split-sizes`; random: N − 1 distinct boundaries
    per rollout, every split ≥ `--split-min-length`"""
    split_sizes: tuple[int, ...] = ()
    """split lengths for `--split-strategy fixed` (N of them, summing to T)"""
    split_min_length: int = 1
    """shortest split of `--split-strategy random`"""
    critic_completion: Literal["overconfident", "truncated", "continuing"] = "overconfident"
    """how the V-target rows are completed past the next split start (upstream `v_func_estimation`)"""
    policy_completion: Literal["overconfident", "truncated", "continuing"] = "overconfident"
    """how the policy-loss rows are completed past the next split start (upstream `q_loss_strategy`)"""
    policy_init: Literal["segment", "split"] = "segment"
    """initial condition of a policy-loss row: the buffered desired pos/vel at the row start (upstream's
    buffer-based init) or the boundary condition of the plan's split (N = 1: TOP-ERL's episode start)"""
    reuse_noise: bool = False
    """one noise vector ξ per episode, reused by every split (upstream `prodmp_reuse_sample`)"""

    @property
    def run_dir(self) -> pathlib.Path:
        return pathlib.Path(self.logdir) / (self.run_name or f"replan_{self.task}_s{self.seed}")


def _from_top_erl(name: str, **changes) -> Args:
    """A TOP-ERL preset (read now, so that retuning it there carries over) with the given changes."""
    base = te.PRESETS[name]
    return Args(**{**{f.name: getattr(base, f.name) for f in dataclasses.fields(te.Args)}, **changes})


# Upstream Replanning_TOP_ERL box_push_random_init shared_dense.yaml + the 2025-11-20 "fully optimized" runs
# (*_3_50_20_30_*): fixed splits [50, 20, 30], q = v = overconfident, buffer-based init, 30 policy epochs
# (TOP-ERL: 15).
_BOX_DENSE_REPLAN = {"n_splits": 3, "split_strategy": "fixed", "split_sizes": (50, 20, 30), "epochs_policy": 30,
                     "critic_completion": "overconfident", "policy_completion": "overconfident",
                     "policy_init": "segment"}

PRESETS: dict[str, Args] = {
    # The goal-switching reacher (goal jumps at step 10…20 of 50); TOP-ERL's reach hyperparameters, 2 splits.
    "reach-switch": _from_top_erl("reach", task="reach-switch", env="reacher-switch", n_splits=2),
    # The plain reacher with the same replanning settings.
    "reach": _from_top_erl("reach", task="reach", env="reacher", n_splits=2),
    # Upstream's box-dense replanning config (_BOX_DENSE_REPLAN above).
    "box-dense": _from_top_erl("box-dense", **_BOX_DENSE_REPLAN),
    # The same on the goal-switching box pushing (goal pose jumps at step 20…50 of 100, so the plan at σ_1 = 50
    # always sees the second goal); not an upstream config.
    "box-dense-switch": _from_top_erl("box-dense", task="box-dense-switch", env="box-pushing-dense-switch",
                                      **_BOX_DENSE_REPLAN),
    # Upstream shared_hopper "final": 2 equal splits, q = v = overconfident, buffer-based init.
    "hopper-jump": _from_top_erl("hopper-jump", n_splits=2, split_strategy="equal",
                                 critic_completion="overconfident", policy_completion="overconfident",
                                 policy_init="segment"),
    # Upstream shared_meta "final": 3 equal splits of the learner's 100 steps (env: 500 steps, F = 5), q = v =
    # overconfident, rel_shift_time 0, critic updates from iteration 2, 20k iterations; the rest is TOP-ERL's
    # metaworld preset (one `--env metaworld-<name>` per run).
    "metaworld": _from_top_erl("metaworld", n_splits=3, split_strategy="equal", critic_completion="overconfident",
                               policy_completion="overconfident", policy_init="segment", critic_update_from=2,
                               iterations=20000),
}


def parse_args(argv: list[str] | None = None) -> Args:
    """`--task` picks the preset, then tyro parses every flag with that preset as the default."""
    argv = sys.argv[1:] if argv is None else list(argv)
    task = "reach-switch"
    for i, a in enumerate(argv):
        if a == "--task" and i + 1 < len(argv):
            task = argv[i + 1]
        elif a.startswith("--task="):
            task = a.split("=", 1)[1]
    if task not in PRESETS:
        raise SystemExit(f"--task {task!r} is not a preset; choose one of {', '.join(PRESETS)}")
    return tyro.cli(Args, default=PRESETS[task], args=argv)


def split_config(args: Args, task: envs.EpisodicTask) -> replan.SplitConfig:
    """The split schedule on the learner's grid of T_env / F steps (`--traj-downsample-factor` F); errors name the
    flag (raised before anything is compiled)."""
    if args.split_strategy != "fixed" and args.split_sizes:
        raise ValueError(f"--split-sizes is only used with --split-strategy fixed (got {args.split_strategy})")
    return replan.SplitConfig(T=task.episode_length // args.traj_downsample_factor, n_splits=args.n_splits,
                              strategy=args.split_strategy, sizes=tuple(args.split_sizes) or None,
                              min_length=args.split_min_length)


# ---------------------------------------------------------------------------------------------------------------
# Split-aware targets, losses and updates (what replanning changes: the rows' plans and their completion)


@dataclasses.dataclass(frozen=True)
class ReplanUpdates:
    """Static settings of the split-aware updates (besides the TOP-ERL `te.Learner`).

    Attributes:
        critic_completion: completion of the V-target rows (upstream `v_func_estimation`).
        policy_completion: completion of the policy-loss rows (upstream `q_loss_strategy`).
        critic_init: row initial condition of the V targets (`segment` = TOP-ERL's enforcement).
        policy_init: row initial condition of the policy loss (`split`: N = 1 is TOP-ERL's episode start).
    """

    critic_completion: replan.Completion = "overconfident"
    policy_completion: replan.Completion = "overconfident"
    critic_init: replan.InitCond = "segment"
    policy_init: replan.InitCond = "segment"


def split_noise(key: jax.Array, batch: int, num_rows: int, n_splits: int, k: int) -> jax.Array:
    """ξ `[B, R, N, k]` (for N = 1 the numbers of TOP-ERL's `row_noise(key, B, R, k)`)."""
    return jax.random.normal(key, (batch, num_rows, n_splits, k), dtype=jnp.float32)


def _last_owned_token(owned_valid: jax.Array, layout: seg_lib.PackedLayout, R: int) -> jax.Array:
    """`[b, Ntok]`: for every token, the index of the last token of its row where `owned_valid` holds."""
    t = jnp.arange(layout.row.shape[0], dtype=jnp.int32)
    in_r = layout.row[None, :] == jnp.arange(R)[:, None]  # [R, Ntok]
    last = jnp.max(jnp.where(in_r[None] & owned_valid[:, None, :], t, -1), axis=-1)  # [b, R]
    return jnp.maximum(last, 0)[:, layout.row]


def _targets_chunk(learner, ru: ReplanUpdates, target_params, rep: replan.ReplanEpisode, seg, layout, mean_p, L_p, xi):
    ep = rep.episode
    w = gaussian.sample_rows(mean_p, L_p, xi)
    actions, _, owned = replan.complete_rows(learner.mp, learner.dt, ru.critic_completion, rep, seg, layout, w,
                                      ru.critic_init)
    act_valid = layout.is_action & layout.valid
    actions = jnp.where(act_valid[:, None], actions, 0.0)
    state_tok, _ = seg_lib.gather_tokens(layout, ep.states, ep.actions)
    q_hat = jnp.min(critic_lib.packed_values(learner.critic, target_params, state_tok, actions, layout), axis=0)  # [b, Ntok]
    if ru.critic_completion == "truncated":
        last = _last_owned_token(act_valid & owned, layout, seg.row_start.shape[0])
    else:
        last = jnp.broadcast_to(seg_lib.last_valid_token(seg, layout), q_hat.shape)
    v_target = jnp.take_along_axis(q_hat, last, axis=1)
    v_bar = critic_lib.state_values(learner.critic, target_params, ep.states)  # [b, T]
    q_target = seg_lib.n_step_returns(seg, layout, ep.rewards, v_bar, learner.discount)
    targets = jnp.where(layout.is_state, v_target, jnp.where(act_valid, q_target, 0.0))
    loss_mask = owned | layout.is_state if ru.critic_completion == "truncated" else jnp.ones_like(owned)
    return targets, loss_mask, {"actions": actions, "owned": owned}


def critic_targets(learner: te.Learner, ru: ReplanUpdates, target_params, rep: replan.ReplanEpisode,
                   seg: seg_lib.Segmentation, layout: seg_lib.PackedLayout, mean_proj: jax.Array, L_proj: jax.Array,
                   key: jax.Array):
    """Packed n-step targets (as `TOP-ERL's `critic_targets``) with the V-target â completed per split.

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

    n = chunks.num_chunks(learner.micro_batch, B)
    out = chunks.chunked_map(chunk, (rep, mean_proj, xi, L_proj if ctx else None), n)
    return jax.tree.map(sg, out)


def _masked_critic_loss_and_grad(learner, params, episodes, layout, targets, mask, dropout_key):
    """Per-critic MSE `[C]` (TOP-ERL's `masked_mse`, with the Q tokens outside `mask` dropped) and the gradient
    of their sum, over chunks of `micro_batch` trajectories."""
    B = targets.shape[0]
    n = chunks.num_chunks(learner.micro_batch, B)
    keys = jax.random.split(dropout_key, n) if n > 1 else dropout_key

    def f(p, _, data):
        ep, tgt, m, key = data
        state_tok, action_tok = seg_lib.gather_tokens(layout, ep.states, ep.actions)
        pred = critic_lib.packed_values(learner.critic, p, state_tok, action_tok, layout, key)
        per = te.masked_mse(jnp.where(m, pred, 0.0), jnp.where(m, tgt, 0.0), layout, B)
        return jnp.sum(per), per

    (_, per), (grads, _) = chunks.chunked_value_and_grad(f, params, (), (episodes, targets, mask, keys), n)
    return per, grads


def _projected(learner, params, old_params, rep, step, initial_entropy):
    return te.projected_policy(learner, params, old_params, replan.decision_states(rep), step, initial_entropy)


def critic_step(learner: te.Learner, ru: ReplanUpdates, state: te.CriticState,
                buffer: buffer_lib.TrajectoryBuffer, policy_params, old_policy_params, step, initial_entropy,
                key: jax.Array):
    """One critic step (as TOP-ERL's `critic_step`; the same key use, so N = 1 gives its numbers)."""
    k_batch, k_seg, k_noise, k_drop = jax.random.split(key, 4)
    rep = buffer_lib.sample(buffer, k_batch, learner.batch_size)
    seg = te.draw_segmentation(learner, k_seg, extra_row=True)
    layout = seg_lib.packed_layout(seg)
    _, _, mean_p, L_p, _ = _projected(learner, policy_params, old_policy_params, rep, step, initial_entropy)
    targets, mask, _ = critic_targets(learner, ru, state.target_params, rep, seg, layout, mean_p, L_p, k_noise)
    if ru.critic_completion == "truncated":
        per_critic, grads = _masked_critic_loss_and_grad(learner, state.params, rep.episode, layout, targets,
                                                         mask, k_drop)
    else:
        per_critic, grads = te.critic_loss_and_grad(learner, state.params, rep.episode, layout, targets,
                                                         k_drop)
    upd, opt_state = learner.critic_optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, upd)
    target_params = optax.incremental_update(params, state.target_params, learner.critic_tau)
    valid = layout.valid
    metrics = {"critic_loss": jnp.mean(per_critic),
               "target_mean": jnp.sum(jnp.where(valid, targets, 0.0)) / (targets.shape[0] * jnp.sum(valid)),
               "segment_length": seg.length}
    return te.CriticState(params=params, target_params=target_params, opt_state=opt_state), metrics


def critic_update(learner, ru, state, buffer, policy_params, old_policy_params, step, initial_entropy, key,
                  num_steps: int):
    """`num_steps` `critic_step`s in a `lax.scan`."""

    def body(s, k):
        return critic_step(learner, ru, s, buffer, policy_params, old_policy_params, step, initial_entropy, k)

    return lax.scan(body, state, jax.random.split(key, num_steps))


def _q_sum(learner, ru: ReplanUpdates, critic_params, rep, seg, layout, mean_p, L_p, xi):
    """Σ over (trajectory, valid row) of min_C Σ_{l ∈ kept tokens} Q_C(s_c, â_{c:c+l}) for a chunk."""
    R = seg.row_start.shape[0]
    w = gaussian.sample_rows(mean_p, L_p, xi)
    actions, _, owned = replan.complete_rows(learner.mp, learner.dt, ru.policy_completion, rep, seg, layout, w,
                                      ru.policy_init)
    actions = jnp.where(layout.is_action[:, None], actions, 0.0)
    state_tok, _ = seg_lib.gather_tokens(layout, rep.episode.states, rep.episode.actions)
    q = critic_lib.packed_values(learner.critic, sg(critic_params), state_tok, actions, layout)  # [C, b, Ntok]
    keep = layout.is_action & layout.valid
    if ru.policy_completion == "truncated":
        keep = keep & owned
    q_tokens = jnp.where(keep, q, 0.0)
    row_q = jnp.min(seg_lib.sum_rows(q_tokens, layout, R), axis=0)
    return jnp.sum(jnp.where(seg.row_valid, row_q, 0.0))


def policy_loss_and_grad(learner: te.Learner, ru: ReplanUpdates, params, old_params, critic_params,
                         rep: replan.ReplanEpisode, seg: seg_lib.Segmentation, step, initial_entropy, key: jax.Array):
    """Gradient and metrics of q_loss(π̃) + trust-region loss with per-split projection (spec §4).

    π(d_{b,j}) at every decision state, the old (Polyak) policy at the same states, KL projection per
    (b, j); trust-region loss and entropy are means over all B·N. q_loss = −Σ(kept Q tokens)/(B · rows),
    rows completed with `ru.policy_completion` from `ru.policy_init`. As TOP-ERL's `policy_loss_and_grad`:
    the projection once, the q_loss gradient w.r.t. (μ̃, L̃) over chunks, pulled back through it.
    """
    B = rep.episode.rewards.shape[0]
    layout = seg_lib.packed_layout(seg)
    N = rep.split_start.shape[-1]

    def project(p):
        mean, L, mean_p, L_p, info = _projected(learner, p, old_params, rep, step, initial_entropy)
        return (mean_p, L_p, te.trust_region(learner, mean, L, mean_p, L_p)), info

    (mean_p, L_p, tr), pullback, info = jax.vjp(project, params, has_aux=True)
    xi = split_noise(key, B, seg.row_start.shape[0], N, learner.policy.action_dim)
    contextual = L_p.ndim == 4

    def f(L_shared, rows, data):
        m, L_rows = rows
        r, xi_c = data
        L_c = L_rows if contextual else L_shared
        return -_q_sum(learner, ru, critic_params, r, seg, layout, m, L_c, xi_c) / (B * seg.num_rows), ()

    shared = () if contextual else L_p
    (ql, _), (d_shared, (d_mean, d_L_rows)) = chunks.chunked_value_and_grad(
        f, shared, (mean_p, L_p if contextual else None), (rep, xi), chunks.num_chunks(learner.micro_batch, B))
    (grads,) = pullback((d_mean, d_L_rows if contextual else d_shared, jnp.ones_like(tr)))
    return grads, te.policy_metrics(ql, tr, L_p, info)


def policy_step(learner: te.Learner, ru: ReplanUpdates, state: te.PolicyState,
                buffer: buffer_lib.TrajectoryBuffer, critic_params, step, initial_entropy, key: jax.Array):
    """One policy step (as TOP-ERL's `policy_step`, same key use)."""
    k_batch, k_seg, k_noise = jax.random.split(key, 3)
    rep = buffer_lib.sample(buffer, k_batch, learner.batch_size)
    seg = te.draw_segmentation(learner, k_seg, extra_row=False)
    grads, metrics = policy_loss_and_grad(learner, ru, state.params, state.old_params, critic_params, rep, seg,
                                          step, initial_entropy, k_noise)
    upd, opt_state = learner.policy_optimizer.update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, upd), opt_state=opt_state), metrics


def policy_update(learner, ru, state, buffer, critic_params, step, initial_entropy, key, num_steps: int):
    """`num_steps` `policy_step`s in a `lax.scan`, then the old-policy Polyak update."""

    def body(s, k):
        return policy_step(learner, ru, s, buffer, critic_params, step, initial_entropy, k)

    state, metrics = lax.scan(body, state, jax.random.split(key, num_steps))
    return te.old_policy_update(learner, state), metrics


# ---------------------------------------------------------------------------------------------------------------
# The jitted program


def make_train(args: Args) -> runner.Program:
    """Static set-up: the task, the learner, the split schedule and the pure functions of one run."""
    te.check_env(args)
    task = envs.make(args.env, **({"random_init": args.random_init} if args.env.startswith("box") else {}))
    te.check_args(args, task)
    splits = split_config(args, task)
    F = args.traj_downsample_factor
    fine_sizes = None if splits.static_sizes() is None else tuple(F * n for n in splits.static_sizes())
    learner = te.make_learner(args, task)
    ru = ReplanUpdates(critic_completion=args.critic_completion, policy_completion=args.policy_completion,
                              critic_init="segment" if args.initial_condition_enforcement else "split",
                              policy_init=args.policy_init)
    T, dof, k = learner.T, task.num_dof, learner.mp.num_params  # T: the learner's (T_env / F)

    def rollout(policy_params, key, num_episodes: int, deterministic: bool, full_rate: bool = False):
        """`num_episodes` fresh episodes with replanning at the split starts: (ReplanEpisode [n, ...] as the
        learner stores it, final env states, per-episode stats {name: [n]} of the whole env episode). Key use as
        TOP-ERL's rollout (N = 1 gives its numbers).

        With F = `--traj-downsample-factor` > 1 the splits σ_j live on the learner's grid of T_env / F steps: the
        env replans at step F·σ_j, and the episode is stored downsampled (`buffer.downsample_episode`) with the
        split starts σ_j, so that the decision state s_{σ_j} and the boundary condition (desired pos/vel at
        σ_j) are the stored entries at index σ_j. (Upstream stores the split starts on the 500-step env grid
        next to 100-step arrays, spec replanning.md bug 6.) `full_rate`: keep the env's T_env steps (rendering)."""
        k_reset, k_w = jax.random.split(key)
        start = jax.vmap(task.reset)(jax.random.split(k_reset, num_episodes))
        sigma = replan.split_starts(splits, jax.random.fold_in(key, 0x5B17))
        rep, final, ro = replan.rollout(task, learner.mp, lambda obs: learner.policy.apply(policy_params, obs),
                                        start, F * sigma, k_w, deterministic, args.reuse_noise, fine_sizes)
        if args.reward_redistribution:
            rep = rep.replace(episode=rep.episode.replace(rewards=jax.vmap(task.mdp_rewards)(ro)))
        if F > 1 and not full_rate:  # F = 1: the episode and σ are stored as they are
            rep = rep.replace(episode=buffer_lib.downsample_episode(rep.episode, F),
                              split_start=jnp.broadcast_to(sigma, rep.split_start.shape))
        stats = {"return": jnp.sum(ro.rewards, axis=-1), **ro.final_metrics}
        return rep, final, stats

    warmup = te.warmup_episodes(args)

    def init(key) -> te.TrainState:
        k_pol, k_crit, key = jax.random.split(key, 3)
        policy = te.init_policy_state(learner, k_pol)
        buffer = buffer_lib.init(args.buffer_size, replan.replan_episode_spec(T, task.obs_size, dof, k, args.n_splits))
        if warmup:  # as TOP-ERL: fill the buffer with a batch of the initial policy's episodes
            episodes, _, _ = rollout(policy.params, jax.random.fold_in(key, 0x3A11), warmup, deterministic=False)
            buffer = buffer_lib.add(buffer, episodes)
        return te.TrainState(policy=policy, critic=te.init_critic_state(learner, k_crit, 2 if args.double_critic else 1),
                             buffer=buffer, initial_entropy=jnp.full((), jnp.nan), key=key)

    def iteration(state: te.TrainState, it):
        """Iteration `it` (1-based): rollout, buffer add, critic steps, policy steps (as TOP-ERL's)."""
        key, k_roll, k_crit, k_pol = jax.random.split(state.key, 4)
        episodes, _, stats = rollout(state.policy.params, k_roll, args.num_envs, deterministic=False)
        buffer = buffer_lib.add(state.buffer, episodes)
        h0 = jnp.where(jnp.isnan(state.initial_entropy) & (it >= args.critic_update_from),
                       te.initial_entropy(learner, state.policy.old_params, episodes.episode.states[:, 0]),
                       state.initial_entropy)

        critic, c_metrics = runner.run_if(
            it >= args.critic_update_from,
            lambda c: critic_update(learner, ru, c, buffer, state.policy.params, state.policy.old_params, it,
                                           h0, k_crit, args.epochs_critic), state.critic)
        policy, p_metrics = runner.run_if(
            it >= args.policy_update_from,
            lambda p: policy_update(learner, ru, p, buffer, critic.params, it, h0, k_pol, args.epochs_policy),
            state.policy)
        metrics = {**{f"rollout/{n}": jnp.mean(v) for n, v in stats.items()},
                   **{f"critic/{n}": jnp.mean(v) for n, v in c_metrics.items()},
                   **{f"policy/{n}": jnp.mean(v) for n, v in p_metrics.items()}}
        metrics = {n: v.astype(jnp.float32) for n, v in metrics.items()}
        return te.TrainState(policy=policy, critic=critic, buffer=buffer, initial_entropy=h0, key=key), metrics

    def run_chunk(state: te.TrainState, first_it):
        """Iterations first_it … first_it + eval_interval − 1 (those past `iterations` are skipped)."""

        def body(s, i):
            return runner.run_if(first_it + i <= args.iterations, iteration, s, first_it + i)

        return lax.scan(body, state, jnp.arange(args.eval_interval, dtype=jnp.int32))

    def evaluate(policy_params, key):
        """Mean over `num_eval_episodes` fresh episodes of the deterministic policy, replanning as in training."""
        _, _, stats = rollout(policy_params, key, args.num_eval_episodes, deterministic=True)
        return {n: jnp.mean(v) for n, v in stats.items()}

    return runner.Program(init, run_chunk, evaluate, rollout, task, learner, warmup * task.episode_length)


# ---------------------------------------------------------------------------------------------------------------
# Host loop (TOP-ERL's, with this variant's program): chunks, evaluation, logging, checkpoints


def run(args: Args, max_chunks: int | None = None, verbose: bool = True) -> dict:
    """Train (or continue with `args.resume`) with `variants/top_erl.py`'s host loop and this variant's program;
    returns the summary dict (also written to run_dir/summary.json) — see `top_erl.run`."""
    return runner.run(args, make_train(args), max_chunks, verbose,
                      title=f"TOP-ERL with replanning ({args.n_splits} {args.split_strategy} splits)",
                  render_final=_render_final)


def _render_final(args: Args, program: runner.Program, state, run_dir: pathlib.Path, say) -> None:
    """One episode of seed 0's deterministic policy, with replanning, to run_dir/final.mp4 (errors reported)."""
    try:
        from toperl_jax.envs import render

        task = program.task
        params = jax.tree.map(lambda x: x[0], state.policy.params)
        key = jax.random.PRNGKey(args.seed)
        rep, _, _ = jax.jit(lambda p, k: program.rollout(p, k, 1, True, full_rate=True))(params, key)
        start = task.reset(jax.random.split(jax.random.split(key)[0], 1)[0])  # the rollout's reset key
        states = jax.jit(lambda s, d: render.episode_states(task, s, d))(start, rep.episode.actions[0])
        path = render.render_episode(task, states, run_dir / "final.mp4")
        say(f"video of the final policy (seed {args.seed}): {path}")
    except Exception as e:  # noqa: BLE001 - report and keep the run's results
        say(f"--video failed: {type(e).__name__}: {e}\n(headless rendering needs MUJOCO_GL=egl or osmesa set "
            "before start, and `pip install -e .[render]` for mp4)")


if __name__ == "__main__":
    run(parse_args())
