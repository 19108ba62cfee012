"""TOP-ERL with replanning inside the episode (spec `replanning.md`), end to end in one jitted program.

    python variants/top_erl_replan.py                              # `reach-switch`: the goal moves mid-episode
    python variants/top_erl_replan.py --n-splits 1                 # = variants/top_erl.py (tested), the baseline
    python variants/top_erl_replan.py --task box-dense             # upstream "final": fixed splits [50, 20, 30]
    python variants/top_erl_replan.py --task box-dense-switch      # the same on the goal-switching box pushing
    python variants/top_erl_replan.py --task hopper-jump           # upstream "final": 2 equal splits
    python variants/top_erl_replan.py --task metaworld --env metaworld-door-open  # upstream "final": 3 equal splits
    python variants/top_erl_replan.py --split-strategy random --n-splits 3 --policy-completion continuing

A fork of `variants/top_erl.py` that changes what replanning changes: the episode of T steps is cut into N
splits; at every split start the policy reads the current observation and a new ProDMP plan continues from the
desired pos/vel of the last executed step (`toperl_jax.replan.rollout`). The buffer stores the split starts,
boundary conditions and per-split policy outputs; the V targets' and the policy loss's rows take the plan that
owns their first action and are completed past the next split start (`--critic-completion`,
`--policy-completion`; `replan.complete_rows`); the projection runs per (trajectory, split). Everything else is
TOP-ERL's, written out here as in `variants/top_erl.py`. Deviations from upstream rw-ml/Replanning_TOP_ERL:
docs/replanning.md.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax

from toperl_jax import buffer as buffer_lib
from toperl_jax import chunks, cli, envs, flags, gaussian, replan, runner
from toperl_jax.cli import UsageError
from toperl_jax import critic as critic_lib
from toperl_jax import segments as seg_lib
from toperl_jax.critic import TransformerCritic
from toperl_jax.mp import ProDMPConfig
from toperl_jax.policy import GaussianPolicy
from toperl_jax.projection import ProjectionConfig, kl_projection, trust_region_loss

PyTree = Any
sg = lax.stop_gradient

# ---------------------------------------------------------------------------------------------------------------
# Flags


@dataclasses.dataclass(frozen=True)
class Args(flags.Flags):
    """TOP-ERL with replanning: the family's flags (`toperl_jax.flags.Flags`) plus the split schedule and the
    completion strategies. The defaults are the `reach-switch` preset; `--task` selects another."""

    task: Literal["reach-switch", "reach", "box-dense", "box-dense-switch", "hopper-jump", "metaworld"] = \
        "reach-switch"
    """preset: task plus hyperparameters (flags given alongside override the preset)"""
    env: str = "reacher-switch"
    """environment (`toperl_jax.envs.task_names()`); set by the preset"""

    # --- replanning
    n_splits: int = 2
    """N, splits per episode (1 = plain TOP-ERL)"""
    split_strategy: Literal["equal", "fixed", "random"] = "equal"
    """equal: ⌊T/N⌋ each (remainder on the last splits); fixed: `--split-sizes`; random: N − 1 random boundaries"""
    split_sizes: tuple[int, ...] = ()
    """split lengths for `--split-strategy fixed` (N of them, summing to T)"""
    split_min_length: int = 1
    """shortest split of `--split-strategy random`"""
    critic_completion: Literal["overconfident", "truncated", "continuing"] = "overconfident"
    """how the V-target rows are completed past the next split start (upstream `v_func_estimation`)"""
    policy_completion: Literal["overconfident", "truncated", "continuing"] = "overconfident"
    """how the policy-loss rows are completed past the next split start (upstream `q_loss_strategy`)"""
    policy_init: Literal["segment", "split"] = "segment"
    """policy-loss row start: buffered desired pos/vel at the row start, or its plan's boundary condition"""
    reuse_noise: bool = False
    """one noise vector ξ per episode, reused by every split (upstream `prodmp_reuse_sample`)"""

    @property
    def run_dir(self) -> pathlib.Path:
        return pathlib.Path(self.logdir) / (self.run_name or f"replan_{self.task}_s{self.seed}")


def _preset(name: str, **changes) -> Args:
    """The TOP-ERL numbers of `flags.PRESETS[name]` with the given changes."""
    return Args(**{**flags.PRESETS[name], **changes})


# Upstream Replanning_TOP_ERL box_push_random_init shared_dense.yaml + the 2025-11-20 "fully optimized" runs
# (*_3_50_20_30_*): fixed splits [50, 20, 30], q = v = overconfident, buffer-based init, 30 policy epochs
# (TOP-ERL: 15).
_BOX_DENSE_REPLAN = {"n_splits": 3, "split_strategy": "fixed", "split_sizes": (50, 20, 30), "epochs_policy": 30,
                     "critic_completion": "overconfident", "policy_completion": "overconfident",
                     "policy_init": "segment"}

PRESETS: dict[str, Args] = {
    # The goal-switching reacher (goal jumps at step 10…20 of 50); TOP-ERL's reach hyperparameters, 2 splits.
    "reach-switch": _preset("reach", task="reach-switch", env="reacher-switch", n_splits=2),
    # The plain reacher with the same replanning settings.
    "reach": _preset("reach", task="reach", env="reacher", n_splits=2),
    # Upstream's box-dense replanning config (_BOX_DENSE_REPLAN above).
    "box-dense": _preset("box-dense", **_BOX_DENSE_REPLAN),
    # The same on the goal-switching box pushing (goal pose jumps at step 20…50 of 100, so the plan at σ_1 = 50
    # always sees the second goal); not an upstream config.
    "box-dense-switch": _preset("box-dense", task="box-dense-switch", env="box-pushing-dense-switch",
                                **_BOX_DENSE_REPLAN),
    # Upstream shared_hopper "final": 2 equal splits, q = v = overconfident, buffer-based init.
    "hopper-jump": _preset("hopper-jump", n_splits=2, split_strategy="equal", critic_completion="overconfident",
                           policy_completion="overconfident", policy_init="segment"),
    # Upstream shared_meta "final": 3 equal splits of the learner's 100 steps (env: 500 steps, F = 5), q = v =
    # overconfident, rel_shift_time 0, critic updates from iteration 2, 20k iterations (one `--env` per run).
    "metaworld": _preset("metaworld", n_splits=3, split_strategy="equal", critic_completion="overconfident",
                         policy_completion="overconfident", policy_init="segment", critic_update_from=2,
                         iterations=20000),
}


def parse_args(argv: list[str] | None = None) -> Args:
    """`--task` picks the preset, then tyro parses every flag with that preset as the default."""
    return flags.parse(Args, PRESETS, argv)


def split_config(args: Args, task: envs.EpisodicTask) -> replan.SplitConfig:
    """The split schedule on the learner's grid of T_env / F steps (errors name the flag, before compiling)."""
    if args.split_strategy != "fixed" and args.split_sizes:
        raise UsageError(f"--split-sizes is only used with --split-strategy fixed (got {args.split_strategy})")
    try:
        return replan.SplitConfig(T=flags.learner_grid(args, task)[0], n_splits=args.n_splits,
                                  strategy=args.split_strategy, sizes=tuple(args.split_sizes) or None,
                                  min_length=args.split_min_length)
    except ValueError as e:  # its messages name the flag
        raise UsageError(str(e)) from None


# ---------------------------------------------------------------------------------------------------------------
# Task, networks, optimisers


@dataclasses.dataclass(frozen=True)
class Learner:
    """Everything static about the updates (hashable); TOP-ERL's, plus the rows' completion and initial condition."""

    critic: TransformerCritic
    policy: GaussianPolicy
    mp: ProDMPConfig
    projection: ProjectionConfig
    critic_optimizer: optax.GradientTransformation
    policy_optimizer: optax.GradientTransformation
    T: int  # steps per episode seen by the learner
    dt: float  # its time step: t_k = init_time + (k + 1)·dt
    batch_size: int
    discount: float = 1.0
    max_num_segments: int = seg_lib.MAX_NUM_SEGMENTS
    critic_tau: float = 0.005
    old_policy_rate: float = 0.005
    micro_batch: int | None = None  # trajectories per sequential chunk (`toperl_jax.chunks`); None: one pass
    segment_length: int | None = None  # None: random ℓ per update (spec §3); an int: the fixed-ℓ ablation
    use_projection: bool = True  # False: raw policy, no trust-region loss, no entropy control (ablation)
    critic_completion: replan.Completion = "overconfident"  # V-target rows (upstream `v_func_estimation`)
    policy_completion: replan.Completion = "overconfident"  # policy-loss rows (upstream `q_loss_strategy`)
    critic_init: replan.InitCond = "segment"  # V-target row start (`segment`: TOP-ERL's enforcement)
    policy_init: replan.InitCond = "segment"  # policy-loss row start (`split` with N = 1: TOP-ERL's episode start)
    token_buckets: int = 1  # static token budgets per pass (`segments.token_switch`); 1: one that fits every draw


def critic_optimizer(learning_rate, weight_decay: float) -> optax.GradientTransformation:
    """AdamW on the stacked critic parameters, decay on ≥ 2-D parameters only (upstream `configure_optimizer`)."""
    return critic_lib.make_optimizer(learning_rate, weight_decay, stacked_axes=1)


def policy_optimizer(learning_rate, weight_decay: float) -> optax.GradientTransformation:
    """Adam with coupled L2 decay, as `torch.optim.Adam(lr, weight_decay=wd)`: g ← g + wd·θ, then Adam."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate, b1=0.9, b2=0.999,
                                                                          eps=1e-8))


def make_learner(args: Args, task: envs.EpisodicTask, platform: str | None = None) -> Learner:
    """The learner of validated flags (`flags.check_args`); networks and configs from `toperl_jax.flags`; the
    micro-batching suits the target `platform` ('cpu', 'cuda', …; default: the backend at hand)."""
    mp = flags.prodmp_config(args, task)
    T, dt = flags.learner_grid(args, task)
    policy_steps = max(1, (args.iterations - args.policy_update_from + 1) * args.epochs_policy)
    policy_lr = optax.linear_schedule(args.lr_policy, 0.0, policy_steps) if args.anneal_lr_policy else args.lr_policy
    return Learner(
        critic=flags.critic_network(args, task), policy=flags.policy_network(args, mp.num_params), mp=mp,
        projection=flags.projection_config(args),
        critic_optimizer=critic_optimizer(args.lr_critic, args.wd_critic),
        policy_optimizer=policy_optimizer(policy_lr, args.wd_policy),
        T=T, dt=dt, batch_size=args.batch_size, discount=args.discount, max_num_segments=args.max_num_segments,
        critic_tau=args.critic_tau, old_policy_rate=args.old_policy_rate,
        micro_batch=flags.micro_batch(args, platform),
        segment_length=args.segment_length, use_projection=args.projection,
        critic_completion=args.critic_completion, policy_completion=args.policy_completion,
        critic_init="segment" if args.initial_condition_enforcement else "split", policy_init=args.policy_init,
        token_buckets=args.token_buckets)


@struct.dataclass
class CriticState:
    params: PyTree  # online critics, every leaf stacked [C, ...] (C = 1 single, 2 double critic)
    target_params: PyTree  # Polyak-averaged target critics
    opt_state: optax.OptState


@struct.dataclass
class PolicyState:
    params: PyTree
    old_params: PyTree  # Polyak-averaged old policy: the trust region's reference
    opt_state: optax.OptState


@struct.dataclass
class TrainState:
    """Everything a run carries from one iteration to the next (one seed; `--num-seeds` adds a leading axis)."""

    policy: PolicyState
    critic: CriticState
    buffer: buffer_lib.TrajectoryBuffer  # of `replan.ReplanEpisode`s
    initial_entropy: jax.Array  # [] H₀ of the entropy schedule; NaN until the first update sets it
    key: jax.Array


def init_critic_state(learner: Learner, key: jax.Array, num_critics: int = 1) -> CriticState:
    """Fresh critic ensemble; the target starts as a copy of the online parameters (upstream deepcopy)."""
    params = critic_lib.init_ensemble(learner.critic, key, num_critics)
    return CriticState(params=params, target_params=jax.tree.map(jnp.copy, params),
                       opt_state=learner.critic_optimizer.init(params))


def init_policy_state(learner: Learner, key: jax.Array) -> PolicyState:
    """Fresh policy; the old policy starts as a copy (upstream deepcopy at init)."""
    params = learner.policy.init(key, jnp.zeros((1, learner.critic.state_dim)))
    return PolicyState(params=params, old_params=jax.tree.map(jnp.copy, params),
                       opt_state=learner.policy_optimizer.init(params))


# ---------------------------------------------------------------------------------------------------------------
# The policy at the decision states, per split


def initial_entropy(learner: Learner, old_params, d_states: jax.Array) -> jax.Array:
    """H₀ of the entropy schedule: batch mean of H(π_old(d)) (upstream sets it at the first `make_new_pred`)."""
    _, L_old = learner.policy.apply(old_params, d_states)
    return jnp.mean(gaussian.entropy(L_old))


def projected_policy(learner: Learner, params, old_params, rep: replan.ReplanEpisode, step, h0):
    """Raw and projected policy at the N decision states d_{b,j} = s_{σ_j}: (μ [B, N, k], L, μ̃, L̃, info), L and L̃
    `[k, k]` (or `[B, N, k, k]` contextual); the KL projection per (trajectory, split)."""
    d_states = replan.decision_states(rep)
    mean, L = learner.policy.apply(params, d_states)
    if not learner.use_projection:
        return mean, L, mean, L, {"fallback": jnp.zeros(mean.shape[:-1], bool)}
    mean_old, L_old = learner.policy.apply(old_params, d_states)
    mean_p, L_p, info = kl_projection(learner.projection, mean, L, sg(mean_old), sg(L_old), step, h0)
    return mean, L, mean_p, L_p, info


def split_noise(key: jax.Array, batch: int, num_rows: int, n_splits: int, k: int) -> jax.Array:
    """ξ `[B, R, N, k]`: one weight sample per (trajectory, row, split) (N = 1: TOP-ERL's `row_noise`)."""
    return jax.random.normal(key, (batch, num_rows, n_splits, k), dtype=jnp.float32)


def draw_segmentation(learner: Learner, key: jax.Array, extra_row: bool) -> seg_lib.Segmentation:
    """Random length and offset (spec top_erl.md §3), or the fixed `segment_length` with a random offset."""
    return seg_lib.draw_segmentation(key, learner.T, learner.max_num_segments, extra_row, learner.segment_length)


# ---------------------------------------------------------------------------------------------------------------
# Critic targets: TOP-ERL's, with the V-target rows completed per split


def _last_owned_token(owned_valid: jax.Array, layout: seg_lib.PackedLayout, R: int) -> jax.Array:
    """`[b, Ntok]`: for every token, the index of the last token of its row where `owned_valid` holds."""
    t = jnp.arange(layout.row.shape[0], dtype=jnp.int32)
    in_r = layout.row[None, :] == jnp.arange(R)[:, None]  # [R, Ntok]
    last = jnp.max(jnp.where(in_r[None] & owned_valid[:, None, :], t, -1), axis=-1)  # [b, R]
    return jnp.maximum(last, 0)[:, layout.row]


def critic_targets(learner: Learner, target_params, rep: replan.ReplanEpisode, seg: seg_lib.Segmentation,
                   layout: seg_lib.PackedLayout, mean_proj: jax.Array, L_proj: jax.Array, key: jax.Array):
    """Packed n-step targets (TOP-ERL's) with the V-target â completed per split (`learner.critic_completion`).

    Args:
        mean_proj, L_proj: projected policy at the decision states, `[B, N, k]` and `[k, k]` / `[B, N, k, k]`.

    Returns:
        targets `[B, Ntok]`; loss_mask `[B, Ntok]` (False at action tokens that `truncated` drops from the
        Q-token loss; all True otherwise); aux {actions, owned}.
    """
    mean_proj, L_proj, target_params = sg(mean_proj), sg(L_proj), sg(target_params)
    B = rep.episode.rewards.shape[0]
    xi = split_noise(key, B, seg.row_start.shape[0], mean_proj.shape[1], mean_proj.shape[-1])
    contextual = L_proj.ndim == 4
    truncated = learner.critic_completion == "truncated"

    def chunk(x):
        r, m, xi_c, L_c = x
        ep = r.episode
        w = gaussian.sample_rows(m, L_c if contextual else L_proj, xi_c)
        actions, _, owned = replan.complete_rows(learner.mp, learner.dt, learner.critic_completion, r, seg, layout,
                                                 w, learner.critic_init)
        act_valid = layout.is_action & layout.valid
        actions = jnp.where(act_valid[:, None], actions, 0.0)
        state_tok, _ = seg_lib.gather_tokens(layout, ep.states, ep.actions)
        q_hat = jnp.min(critic_lib.packed_values(learner.critic, target_params, state_tok, actions, layout),
                        axis=0)  # [b, Ntok]
        if truncated:
            last = _last_owned_token(act_valid & owned, layout, seg.row_start.shape[0])
        else:
            last = jnp.broadcast_to(seg_lib.last_valid_token(seg, layout), q_hat.shape)
        v_target = jnp.take_along_axis(q_hat, last, axis=1)
        v_bar = critic_lib.state_values(learner.critic, target_params, ep.states)  # [b, T]
        q_target = seg_lib.n_step_returns(seg, layout, ep.rewards, v_bar, learner.discount)
        targets = jnp.where(layout.is_state, v_target, jnp.where(act_valid, q_target, 0.0))
        loss_mask = owned | layout.is_state if truncated else jnp.ones_like(owned)
        return targets, loss_mask, {"actions": actions, "owned": owned}

    n = chunks.num_chunks(learner.micro_batch, B)
    out = chunks.chunked_map(chunk, (rep, mean_proj, xi, L_proj if contextual else None), n)
    return jax.tree.map(sg, out)


# ---------------------------------------------------------------------------------------------------------------
# Losses


def masked_mse(pred: jax.Array, targets: jax.Array, layout: seg_lib.PackedLayout, batch_size: int | None = None):
    """Upstream's critic MSE on the packed layout, `pred [..., b, N]`, `targets [b, N]` → `[...]` (TOP-ERL's:
    zeroed at padded action and packing tokens, divided by B · num_rows · (1 + ℓ))."""
    mask = layout.valid
    diff = jnp.where(mask, pred, 0.0) - jnp.where(mask, targets, 0.0)
    count = (targets.shape[0] if batch_size is None else batch_size) * layout.num_row_tokens
    return jnp.sum(jnp.square(diff), axis=(-2, -1)) / count


def q_sum(learner: Learner, critic_params, rep: replan.ReplanEpisode, seg: seg_lib.Segmentation,
          layout: seg_lib.PackedLayout, mean_p, L_p, xi):
    """Σ over (trajectory, valid row) of min_C Σ_{l ∈ kept tokens} Q_C(s_c, â_{c:c+l}), rows completed per split
    (`learner.policy_completion`; `truncated` keeps the owned tokens only). The critic is frozen."""
    R = seg.row_start.shape[0]
    w = gaussian.sample_rows(mean_p, L_p, xi)
    actions, _, owned = replan.complete_rows(learner.mp, learner.dt, learner.policy_completion, rep, seg, layout, w,
                                             learner.policy_init)
    actions = jnp.where(layout.is_action[:, None], actions, 0.0)
    state_tok, _ = seg_lib.gather_tokens(layout, rep.episode.states, rep.episode.actions)
    q = critic_lib.packed_values(learner.critic, sg(critic_params), state_tok, actions, layout)  # [C, b, Ntok]
    keep = layout.is_action & layout.valid
    if learner.policy_completion == "truncated":
        keep = keep & owned
    q_tokens = jnp.where(keep, q, 0.0)
    row_q = jnp.min(seg_lib.sum_rows(q_tokens, layout, R), axis=0)
    return jnp.sum(jnp.where(seg.row_valid, row_q, 0.0))


def trust_region(learner: Learner, mean, L, mean_p, L_p) -> jax.Array:
    """coeff · mean KL(π_raw ‖ sg π̃) over all (trajectory, split) (spec top_erl.md §5), 0 without the projection."""
    return trust_region_loss(learner.projection, mean, L, mean_p, L_p) if learner.use_projection else jnp.zeros(())


def policy_metrics(ql, tr, L_p, info) -> dict:
    return {"policy_loss": ql + tr, "q_loss": ql, "trust_region_loss": tr, "entropy": jnp.mean(gaussian.entropy(L_p)),
            "fallback": jnp.mean(info["fallback"].astype(jnp.float32))}


# ---------------------------------------------------------------------------------------------------------------
# Updates


def critic_loss_and_grad(learner: Learner, params, episodes: buffer_lib.Episode, layout: seg_lib.PackedLayout,
                         targets: jax.Array, mask: jax.Array | None, dropout_key: jax.Array | None = None):
    """Per-critic `masked_mse` `[C]` (Q tokens outside `mask` dropped; None: none) and the gradient of their sum,
    over chunks of `micro_batch` trajectories."""
    B = targets.shape[0]
    n = chunks.num_chunks(learner.micro_batch, B)
    keys = jax.random.split(dropout_key, n) if n > 1 and dropout_key is not None else dropout_key

    def f(p, _, data):
        ep, tgt, m, key = data
        state_tok, action_tok = seg_lib.gather_tokens(layout, ep.states, ep.actions)
        pred = critic_lib.packed_values(learner.critic, p, state_tok, action_tok, layout, key)
        if m is not None:
            pred, tgt = jnp.where(m, pred, 0.0), jnp.where(m, tgt, 0.0)
        per_critic = masked_mse(pred, tgt, layout, B)
        return jnp.sum(per_critic), per_critic

    (_, per_critic), (grads, _) = chunks.chunked_value_and_grad(f, params, (), (episodes, targets, mask, keys), n)
    return per_critic, grads


def critic_step(learner: Learner, state: CriticState, buffer: buffer_lib.TrajectoryBuffer, policy_params,
                old_policy_params, step, h0, key: jax.Array):
    """One critic step (TOP-ERL's, with the same key use, so that N = 1 gives its numbers)."""
    k_batch, k_seg, k_noise, k_drop = jax.random.split(key, 4)
    rep = buffer_lib.sample(buffer, k_batch, learner.batch_size)
    seg = draw_segmentation(learner, k_seg, extra_row=True)
    _, _, mean_p, L_p, _ = projected_policy(learner, policy_params, old_policy_params, rep, step, h0)

    def at_budget(budget):
        def loss_and_grad(params, target_params, rep, seg, mean_p, L_p, k_noise, k_drop):
            layout = seg_lib.packed_layout(seg, budget=budget)
            targets, mask, _ = critic_targets(learner, target_params, rep, seg, layout, mean_p, L_p, k_noise)
            mask = mask if learner.critic_completion == "truncated" else None
            per_critic, grads = critic_loss_and_grad(learner, params, rep.episode, layout, targets, mask, k_drop)
            target_mean = jnp.sum(jnp.where(layout.valid, targets, 0.0)) / (targets.shape[0] * jnp.sum(layout.valid))
            return per_critic, grads, target_mean
        return loss_and_grad

    per_critic, grads, target_mean = seg_lib.token_switch(seg, learner.token_buckets, at_budget, state.params,
                                                          state.target_params, rep, seg, mean_p, L_p, k_noise,
                                                          k_drop)
    updates, opt_state = learner.critic_optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    target_params = optax.incremental_update(params, state.target_params, learner.critic_tau)
    metrics = {"critic_loss": jnp.mean(per_critic), "segment_length": seg.length, "target_mean": target_mean}
    return CriticState(params=params, target_params=target_params, opt_state=opt_state), metrics


def critic_update(learner: Learner, state: CriticState, buffer, policy_params, old_policy_params, step, h0, key,
                  num_steps: int):
    """`num_steps` (= epochs_critic) critic steps in a `lax.scan`; metrics stacked `[num_steps]`."""
    return lax.scan(lambda s, k: critic_step(learner, s, buffer, policy_params, old_policy_params, step, h0, k),
                    state, jax.random.split(key, num_steps))


def policy_loss_and_grad(learner: Learner, params, old_params, critic_params, rep: replan.ReplanEpisode,
                         seg: seg_lib.Segmentation, step, h0, key: jax.Array):
    """Gradient and metrics of q_loss(π̃) + trust-region loss with the projection per (trajectory, split) (spec
    replanning.md §4): q_loss = −`q_sum` / (B · rows); as TOP-ERL's, the projection runs once on the whole batch
    (`jax.vjp`) and the q_loss gradient with respect to (μ̃, L̃), accumulated over chunks, is pulled back."""
    B = rep.episode.rewards.shape[0]
    N = rep.split_start.shape[-1]

    def project(p):
        mean, L, mean_p, L_p, info = projected_policy(learner, p, old_params, rep, step, h0)
        return (mean_p, L_p, trust_region(learner, mean, L, mean_p, L_p)), info

    (mean_p, L_p, tr), pullback, info = jax.vjp(project, params, has_aux=True)
    xi = split_noise(key, B, seg.row_start.shape[0], N, learner.policy.action_dim)
    contextual = L_p.ndim == 4

    def at_budget(budget):
        def q_loss_and_grad(critic_params, seg, shared, rows, data):
            layout = seg_lib.packed_layout(seg, budget=budget)

            def f(L_shared, rows, data):
                m, L_rows = rows
                r, xi_c = data
                L_c = L_rows if contextual else L_shared
                return -q_sum(learner, critic_params, r, seg, layout, m, L_c, xi_c) / (B * seg.num_rows), ()

            return chunks.chunked_value_and_grad(f, shared, rows, data, chunks.num_chunks(learner.micro_batch, B))
        return q_loss_and_grad

    shared = () if contextual else L_p
    rows = (mean_p, L_p if contextual else None)
    (ql, _), (d_shared, (d_mean, d_L_rows)) = seg_lib.token_switch(seg, learner.token_buckets, at_budget,
                                                                   critic_params, seg, shared, rows, (rep, xi))
    (grads,) = pullback((d_mean, d_L_rows if contextual else d_shared, jnp.ones_like(tr)))
    return grads, policy_metrics(ql, tr, L_p, info)


def policy_step(learner: Learner, state: PolicyState, buffer: buffer_lib.TrajectoryBuffer, critic_params, step, h0,
                key: jax.Array):
    """One policy step (TOP-ERL's, same key use): a fresh batch and segmentation, Adam with coupled decay."""
    k_batch, k_seg, k_noise = jax.random.split(key, 3)
    rep = buffer_lib.sample(buffer, k_batch, learner.batch_size)
    seg = draw_segmentation(learner, k_seg, extra_row=False)
    grads, metrics = policy_loss_and_grad(learner, state.params, state.old_params, critic_params, rep, seg, step,
                                          h0, k_noise)
    updates, opt_state = learner.policy_optimizer.update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state), metrics


def old_policy_update(learner: Learner, state: PolicyState) -> PolicyState:
    """θ_old ← (1 − rate)·θ_old + rate·θ (upstream `policy_old.copy_(policy, rate)`), once per iteration."""
    return state.replace(old_params=optax.incremental_update(state.params, state.old_params,
                                                             learner.old_policy_rate))


def policy_update(learner: Learner, state: PolicyState, buffer, critic_params, step, h0, key, num_steps: int):
    """`num_steps` (= epochs_policy) policy steps in a `lax.scan`, then the old-policy Polyak update."""
    state, metrics = lax.scan(lambda s, k: policy_step(learner, s, buffer, critic_params, step, h0, k),
                              state, jax.random.split(key, num_steps))
    return old_policy_update(learner, state), metrics


# ---------------------------------------------------------------------------------------------------------------
# The jitted program


def make_train(args: Args, platform: str | None = None) -> runner.Program:
    """Static set-up: the task, the learner, the split schedule and the pure functions of one run, for the target
    `platform` (default: the backend at hand)."""
    task = flags.make_task(args)
    flags.check_args(args, task)
    splits = split_config(args, task)
    F = args.traj_downsample_factor
    fine_sizes = None if splits.static_sizes() is None else tuple(F * n for n in splits.static_sizes())
    learner = make_learner(args, task, platform)
    T, dof, k = learner.T, task.num_dof, learner.mp.num_params  # T: the learner's (T_env / F)

    def rollout(policy_params, key, num_episodes: int, deterministic: bool, full_rate: bool = False):
        """`num_episodes` fresh episodes with replanning at the split starts: (ReplanEpisode [n, ...] as the
        learner stores it, final env states, per-episode stats {name: [n]} of the whole env episode); key use as
        TOP-ERL's rollout (N = 1 gives its numbers). The splits σ_j live on the learner's grid of T_env / F steps:
        the env replans at step F·σ_j and the episode is stored downsampled with σ_j (docs/replanning.md).
        `full_rate`: keep the env's T_env steps (rendering)."""
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

    warmup = flags.warmup_episodes(args)

    def init(key) -> TrainState:
        k_pol, k_crit, key = jax.random.split(key, 3)
        policy = init_policy_state(learner, k_pol)
        buffer = buffer_lib.init(args.buffer_size, replan.replan_episode_spec(T, task.obs_size, dof, k, args.n_splits))
        if warmup:  # as TOP-ERL: fill the buffer with a batch of the initial policy's episodes
            episodes, _, _ = rollout(policy.params, jax.random.fold_in(key, 0x3A11), warmup, deterministic=False)
            buffer = buffer_lib.add(buffer, episodes)
        return TrainState(policy=policy, critic=init_critic_state(learner, k_crit, 2 if args.double_critic else 1),
                          buffer=buffer, initial_entropy=jnp.full((), jnp.nan), key=key)

    def iteration(state: TrainState, it):
        """Iteration `it` (1-based): rollout, buffer add, critic steps, policy steps (as TOP-ERL's)."""
        key, k_roll, k_crit, k_pol = jax.random.split(state.key, 4)
        episodes, _, stats = rollout(state.policy.params, k_roll, args.num_envs, deterministic=False)
        buffer = buffer_lib.add(state.buffer, episodes)
        h0 = jnp.where(jnp.isnan(state.initial_entropy) & (it >= args.critic_update_from),
                       initial_entropy(learner, state.policy.old_params, episodes.episode.states[:, 0]),
                       state.initial_entropy)

        critic, c_metrics = runner.run_if(
            it >= args.critic_update_from,
            lambda c: critic_update(learner, c, buffer, state.policy.params, state.policy.old_params, it, h0,
                                    k_crit, args.epochs_critic), state.critic)
        policy, p_metrics = runner.run_if(
            it >= args.policy_update_from,
            lambda p: policy_update(learner, p, buffer, critic.params, it, h0, k_pol, args.epochs_policy),
            state.policy)
        metrics = {**{f"rollout/{n}": jnp.mean(v) for n, v in stats.items()},
                   **{f"critic/{n}": jnp.mean(v) for n, v in c_metrics.items()},
                   **{f"policy/{n}": jnp.mean(v) for n, v in p_metrics.items()}}
        metrics = {n: v.astype(jnp.float32) for n, v in metrics.items()}
        return TrainState(policy=policy, critic=critic, buffer=buffer, initial_entropy=h0, key=key), metrics

    def run_chunk(state: TrainState, first_it):
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
# Host entry point


def run(args: Args, max_chunks: int | None = None, verbose: bool = True) -> dict:
    """Train (or continue with `--resume`) with the shared host loop (`toperl_jax.runner.run`); returns the
    summary dict (also written to run_dir/summary.json). Everything is traced at `--matmul-precision`; with
    `--distributed` the processes train the seeds together (`runner.init_distributed`)."""
    runner.init_distributed(args)
    with flags.matmul_precision(args):
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
    cli.main(lambda: run(parse_args()))
