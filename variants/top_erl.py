"""TOP-ERL: Transformer-based Off-Policy Episodic RL (Li et al., ICLR 2025), end to end in one jitted program.

    python variants/top_erl.py                       # `reach` preset: learns on a laptop CPU in minutes
    python variants/top_erl.py --task box-dense      # the paper's box pushing, upstream hyperparameters
    python variants/top_erl.py --task box-dense --num-seeds 4 --segment-length 25   # an ablation is a flag
    python variants/top_erl.py --task metaworld --env metaworld-push   # one Meta-World task (a GPU run)
    python variants/top_erl.py --help                # every knob, with the chosen preset's values

One iteration (spec `top_erl.md` §2), all inside `jax.lax.scan` on the accelerator: roll out `num_envs`
episodes (w ~ N(μ(s₀), LLᵀ) over ProDMP weights, the whole trajectory tracked by the task's PD controller),
add them to the trajectory buffer, `epochs_critic` critic steps (`critic_step`: n-step targets on random
segments, packed into one token sequence per trajectory), `epochs_policy` policy steps through the KL
trust-region projection (`policy_step`), then θ_old ← Polyak(θ_old, θ). The file reads top to bottom: flags →
task, networks, optimisers → rollout → targets → losses → updates → iteration → host entry point; the
library (`toperl_jax`) supplies the parts: envs, ProDMP decoding, Gaussian and projection, critic network,
segments and the packed layout, buffer, chunks, runner. Deviations from upstream: docs/top_erl.md.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Literal

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax

from toperl_jax import buffer as buffer_lib
from toperl_jax import chunks, cli, envs, flags, gaussian, runner
from toperl_jax import critic as critic_lib
from toperl_jax import segments as seg_lib
from toperl_jax.critic import TransformerCritic
from toperl_jax.mp import ProDMPConfig, decode_token_actions, fix_relative_goal, prodmp_trajectory
from toperl_jax.policy import GaussianPolicy
from toperl_jax.projection import ProjectionConfig, kl_projection, trust_region_loss

PyTree = Any
sg = lax.stop_gradient

# ---------------------------------------------------------------------------------------------------------------
# Flags


@dataclasses.dataclass(frozen=True)
class Args(flags.Flags):
    """TOP-ERL: the family's flags (`toperl_jax.flags.Flags`, one line of help each; `--help` lists them with the
    chosen preset's values). The defaults are the `reach` preset; `--task` selects another, other flags override it."""

    task: Literal["reach", "box-dense", "box-dense-cpu", "box-sparse", "hopper-jump", "hopper-jump-cpu",
                  "metaworld"] = "reach"
    """preset: task plus the upstream hyperparameters for it (flags given alongside override the preset)"""


# `reach` is tuned here to learn on a 2-core CPU in minutes; the others are the upstream configs (`flags.PRESETS`).
PRESETS: dict[str, Args] = {name: Args(**values) for name, values in flags.PRESETS.items()}


def parse_args(argv: list[str] | None = None) -> Args:
    """`--task` picks the preset, then tyro parses every flag with that preset as the default."""
    return flags.parse(Args, PRESETS, argv)


# ---------------------------------------------------------------------------------------------------------------
# Task, networks, optimisers


@dataclasses.dataclass(frozen=True)
class Learner:
    """Everything static about the updates (hashable; closed over by the jitted functions). Built by `make_learner`
    from flags that `flags.check_args` has validated; T and dt are the learner's (after downsampling)."""

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
    enforce_initial_condition: bool = True  # V-target â from the buffered desired pos/vel at the row start
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
        enforce_initial_condition=args.initial_condition_enforcement, token_buckets=args.token_buckets)


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
    buffer: buffer_lib.TrajectoryBuffer
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
# Rollout


def rollout(args: Args, task: envs.EpisodicTask, learner: Learner, policy_params, key, num_episodes: int,
            deterministic: bool):
    """`num_episodes` fresh episodes with w ~ N(μ(s₀), LLᵀ) (or w = μ): the whole desired trajectory is decoded
    from the measured initial state and tracked by the task's PD controller. Returns (Episode [n, T, ...] as
    the learner stores it, i.e. downsampled to T_env / F steps, final env states, per-episode stats {name: [n]}
    of the whole env episode)."""
    k = learner.mp.num_params
    k_reset, k_w = jax.random.split(key)
    start = jax.vmap(task.reset)(jax.random.split(k_reset, num_episodes))
    mean, L = learner.policy.apply(policy_params, start.obs)  # [n, k], [k, k] or [n, k, k]
    w = mean if deterministic else gaussian.sample(k_w, mean, L)
    pos, vel = prodmp_trajectory(learner.mp, w, task.action_times(), jnp.zeros(num_episodes), start.desired_pos,
                                 start.desired_vel)  # [n, T_env, dof] at t_k = (k + 1) dt
    final, ro = jax.vmap(task.rollout)(start, jnp.concatenate([pos, vel], axis=-1))
    rewards = jax.vmap(task.mdp_rewards)(ro) if args.reward_redistribution else ro.rewards
    episodes = buffer_lib.Episode(
        states=ro.obs, actions=ro.actions, rewards=rewards, dones=ro.dones, desired_pos=ro.desired_pos,
        desired_vel=ro.desired_vel, init_time=jnp.zeros(num_episodes), init_pos=ro.init_pos,
        init_vel=ro.init_vel, params_mean=mean, params_L=jnp.broadcast_to(L, (num_episodes, k, k)))
    episodes = buffer_lib.downsample_episode(episodes, args.traj_downsample_factor)  # [n, T, ...]
    stats = {"return": jnp.sum(ro.rewards, axis=-1), **ro.final_metrics}
    return episodes, final, stats


# ---------------------------------------------------------------------------------------------------------------
# The policy at the decision states, and the segmentation of an update


def decision_states(episodes: buffer_lib.Episode) -> jax.Array:
    """d = s_0 of each trajectory, `[B, S]`."""
    return episodes.states[:, 0]


def initial_entropy(learner: Learner, old_params, d_states: jax.Array) -> jax.Array:
    """H₀ of the entropy schedule: batch mean of H(π_old(d)) (upstream sets it at the first `make_new_pred`)."""
    _, L_old = learner.policy.apply(old_params, d_states)
    return jnp.mean(gaussian.entropy(L_old))


def projected_policy(learner: Learner, params, old_params, d_states: jax.Array, step, h0):
    """Raw and projected policy at the decision states (upstream `make_new_pred`): (μ [B, k], L, μ̃ [B, k], L̃,
    info), L and L̃ `[k, k]` (or `[B, k, k]` contextual). The old policy is a constant; gradients reach `params`
    through the projection."""
    mean, L = learner.policy.apply(params, d_states)
    if not learner.use_projection:
        return mean, L, mean, L, {"fallback": jnp.zeros(mean.shape[:-1], bool)}
    mean_old, L_old = learner.policy.apply(old_params, d_states)
    mean_p, L_p, info = kl_projection(learner.projection, mean, L, sg(mean_old), sg(L_old), step, h0)
    return mean, L, mean_p, L_p, info


def row_noise(key: jax.Array, batch: int, num_rows: int, k: int) -> jax.Array:
    """ξ ~ N(0, I) `[batch, num_rows, k]`: one weight sample μ̃ + L̃ξ per (trajectory, row)."""
    return jax.random.normal(key, (batch, num_rows, k), dtype=jnp.float32)


def draw_segmentation(learner: Learner, key: jax.Array, extra_row: bool) -> seg_lib.Segmentation:
    """Random length and offset (spec §3), or the fixed `segment_length` with a random offset."""
    return seg_lib.draw_segmentation(key, learner.T, learner.max_num_segments, extra_row, learner.segment_length)


# ---------------------------------------------------------------------------------------------------------------
# Critic targets (spec §4, upstream `segments_n_step_return_vf`), on the packed layout of `toperl_jax.segments`


def critic_targets(learner: Learner, target_params, episodes: buffer_lib.Episode, seg: seg_lib.Segmentation,
                   layout: seg_lib.PackedLayout, mean_proj: jax.Array, L_proj: jax.Array, key: jax.Array):
    """Packed n-step targets `[B, N]` (no gradient) and aux {weights [B, R, k], actions [B, N, 2·dof],
    q_hat [B, N]}, for a segmentation with the extra row:
    - state token of row c: V target G_0 = min_C Q̄(s_c, â_c … â_{c+ℓ−1}), read at the row's last valid action,
      with â ~ the projected policy (one ξ per trajectory and row), decoded per token from the buffered desired
      pos/vel at c (initial-condition enforcement) or from the episode start (ablation);
    - action token k: Q target G = Σ_{j=c…k} γ^{j−c} r_j + γ^{k+1−c} min_C V̄(s_{k+1}) (V̄ = 0 at k + 1 ≥ T);
    - 0 at padded action tokens (k ≥ T) and packing tokens."""
    mean_proj, L_proj, target_params = sg(mean_proj), sg(L_proj), sg(target_params)
    chex.assert_shape(episodes.rewards, (None, seg.T))
    B, T, dt, mp = episodes.rewards.shape[0], seg.T, learner.dt, learner.mp
    xi = row_noise(key, B, seg.row_start.shape[0], mean_proj.shape[-1])
    contextual = L_proj.ndim == 3
    row = layout.row
    c_tok = seg.row_start[row]  # [N] row start of each token
    c_row = jnp.minimum(seg.row_start, T - 1)  # [R]; valid rows start before T, the unused slots are clipped

    def chunk(x):
        ep, m, xi_c, L_c = x
        w_rows = gaussian.sample_rows(m, L_c if contextual else L_proj, xi_c)  # [b, R, k]
        times = seg_lib.action_times(ep.init_time, layout.time_index, dt)  # [b, N]
        if learner.enforce_initial_condition:
            seg_pos, seg_vel = ep.desired_pos[:, c_row], ep.desired_vel[:, c_row]  # [b, R, dof]
            w_fixed = fix_relative_goal(mp, w_rows, ep.desired_pos[:, :1], seg_pos)
            seg_init_time = seg_lib.action_times(ep.init_time, c_tok, dt) - dt  # t_c − dt, [b, N]
            actions = decode_token_actions(mp, w_fixed[:, row], times, seg_init_time, seg_pos[:, row],
                                           seg_vel[:, row])
        else:  # ablation: the whole trajectory from the episode's initial condition, read at the row's times
            actions = decode_token_actions(mp, w_rows[:, row], times, ep.init_time[:, None],
                                           ep.init_pos[:, None, :], ep.init_vel[:, None, :])
        actions = jnp.where((layout.is_action & layout.valid)[:, None], actions, 0.0)  # padded: 0, as upstream

        state_tok, _ = seg_lib.gather_tokens(layout, ep.states, ep.actions)
        q_hat = jnp.min(critic_lib.packed_values(learner.critic, target_params, state_tok, actions, layout), axis=0)
        last = jnp.broadcast_to(seg_lib.last_valid_token(seg, layout), q_hat.shape)
        v_target = jnp.take_along_axis(q_hat, last, axis=1)  # [b, N]

        v_bar = critic_lib.state_values(learner.critic, target_params, ep.states)  # [b, T]
        q_target = seg_lib.n_step_returns(seg, layout, ep.rewards, v_bar, learner.discount)
        targets = jnp.where(layout.is_state, v_target, jnp.where(layout.is_action & layout.valid, q_target, 0.0))
        aux = {"weights": w_rows, "actions": actions, "q_hat": q_hat}
        return targets, aux

    n = chunks.num_chunks(learner.micro_batch, B)
    targets, aux = chunks.chunked_map(chunk, (episodes, mean_proj, xi, L_proj if contextual else None), n)
    return sg(targets), jax.tree.map(sg, aux)


# ---------------------------------------------------------------------------------------------------------------
# Losses


def masked_mse(pred: jax.Array, targets: jax.Array, layout: seg_lib.PackedLayout, batch_size: int | None = None):
    """Upstream's critic MSE on the packed layout, `pred [..., b, N]`, `targets [b, N]` → `[...]`: prediction
    and target zeroed at padded action and packing tokens, divided by B · num_rows · (1 + ℓ) (upstream's
    `mse_loss` over [B, rows, 1 + ℓ] counts the padded action tokens, also those past the packed budget; the
    packing tokens do not exist there). `batch_size`: B when `pred` holds a chunk of b < B trajectories."""
    mask = layout.valid
    diff = jnp.where(mask, pred, 0.0) - jnp.where(mask, targets, 0.0)
    count = (targets.shape[0] if batch_size is None else batch_size) * layout.num_row_tokens
    return jnp.sum(jnp.square(diff), axis=(-2, -1)) / count


def critic_loss(learner: Learner, params, episodes: buffer_lib.Episode, layout: seg_lib.PackedLayout,
                targets: jax.Array, dropout_key: jax.Array | None = None, batch_size: int | None = None):
    """Σ over critics of each critic's `masked_mse` (per-critic gradients, as upstream's separate steps).
    Returns `(loss, {"critic_loss": per-critic MSE [C], "pred": [C, B, N]})`."""
    state_tok, action_tok = seg_lib.gather_tokens(layout, episodes.states, episodes.actions)
    pred = critic_lib.packed_values(learner.critic, params, state_tok, action_tok, layout, dropout_key)
    per_critic = masked_mse(pred, targets, layout, batch_size)
    return jnp.sum(per_critic), {"critic_loss": per_critic, "pred": pred}


def q_loss(learner: Learner, critic_params, episodes: buffer_lib.Episode, seg: seg_lib.Segmentation,
           layout: seg_lib.PackedLayout, mean_proj: jax.Array, L_proj: jax.Array, xi: jax.Array, norm):
    """−Σ over (trajectory, valid row) of min_C Σ_{l=1…ℓ} Q_C(s_c, â_{c:c+l}) / `norm` (upstream `q_loss`, whose
    norm is B · num_rows), for a segmentation without the extra row. The critic is frozen; gradients reach
    (μ̃, L̃) through the samples w = μ̃ + L̃ξ, decoded per token from the *episode's* initial condition."""
    w_rows = gaussian.sample_rows(mean_proj, L_proj, xi)  # [b, R, k]
    times = seg_lib.action_times(episodes.init_time, layout.time_index, learner.dt)
    actions = decode_token_actions(learner.mp, w_rows[:, layout.row], times, episodes.init_time[:, None],
                                   episodes.init_pos[:, None, :], episodes.init_vel[:, None, :])
    actions = jnp.where(layout.is_action[:, None], actions, 0.0)
    state_tok, _ = seg_lib.gather_tokens(layout, episodes.states, episodes.actions)
    q = critic_lib.packed_values(learner.critic, sg(critic_params), state_tok, actions, layout)  # [C, b, N]
    q_tokens = jnp.where(layout.is_action & layout.valid, q, 0.0)
    row_q = jnp.min(seg_lib.sum_rows(q_tokens, layout, seg.row_start.shape[0]), axis=0)  # [b, R]
    return -jnp.sum(jnp.where(seg.row_valid, row_q, 0.0)) / norm


def trust_region(learner: Learner, mean, L, mean_p, L_p) -> jax.Array:
    """coeff · mean KL(π_raw ‖ sg π̃) (spec §5), 0 without the projection."""
    return trust_region_loss(learner.projection, mean, L, mean_p, L_p) if learner.use_projection else jnp.zeros(())


def policy_loss(learner: Learner, params, old_params, critic_params, episodes: buffer_lib.Episode,
                seg: seg_lib.Segmentation, step, h0, key: jax.Array):
    """q_loss(π̃) + trust-region loss in one pass over the batch (`policy_loss_and_grad` is the update's form);
    differentiable in `params`. Returns `(loss, metrics)`."""
    layout = seg_lib.packed_layout(seg)
    mean, L, mean_p, L_p, info = projected_policy(learner, params, old_params, decision_states(episodes), step, h0)
    B = mean_p.shape[0]
    xi = row_noise(key, B, seg.row_start.shape[0], mean_p.shape[-1])
    ql = q_loss(learner, critic_params, episodes, seg, layout, mean_p, L_p, xi, B * seg.num_rows)
    tr = trust_region(learner, mean, L, mean_p, L_p)
    return ql + tr, policy_metrics(ql, tr, L_p, info)


def policy_metrics(ql, tr, L_p, info) -> dict:
    return {"policy_loss": ql + tr, "q_loss": ql, "trust_region_loss": tr, "entropy": jnp.mean(gaussian.entropy(L_p)),
            "fallback": jnp.mean(info["fallback"].astype(jnp.float32))}


# ---------------------------------------------------------------------------------------------------------------
# Updates


def critic_loss_and_grad(learner: Learner, params, episodes: buffer_lib.Episode, layout: seg_lib.PackedLayout,
                         targets: jax.Array, dropout_key: jax.Array | None = None):
    """Per-critic losses `[C]` and the gradient of their sum, over chunks of `micro_batch` trajectories."""
    B = targets.shape[0]
    n = chunks.num_chunks(learner.micro_batch, B)
    keys = jax.random.split(dropout_key, n) if n > 1 and dropout_key is not None else dropout_key

    def f(p, _, data):
        ep, tgt, key = data
        loss, aux = critic_loss(learner, p, ep, layout, tgt, key, batch_size=B)
        return loss, aux["critic_loss"]

    (_, per_critic), (grads, _) = chunks.chunked_value_and_grad(f, params, (), (episodes, targets, keys), n)
    return per_critic, grads


def critic_step(learner: Learner, state: CriticState, buffer: buffer_lib.TrajectoryBuffer, policy_params,
                old_policy_params, step, h0, key: jax.Array):
    """One critic step (spec §2.3): a fresh uniform batch and segmentation (with the extra row), packed targets
    from the target critic and the projected policy, AdamW, Polyak target update."""
    k_batch, k_seg, k_noise, k_drop = jax.random.split(key, 4)
    episodes = buffer_lib.sample(buffer, k_batch, learner.batch_size)
    seg = draw_segmentation(learner, k_seg, extra_row=True)
    _, _, mean_p, L_p, _ = projected_policy(learner, policy_params, old_policy_params, decision_states(episodes),
                                            step, h0)

    def at_budget(budget):
        def loss_and_grad(params, target_params, episodes, seg, mean_p, L_p, k_noise, k_drop):
            layout = seg_lib.packed_layout(seg, budget=budget)
            targets, _ = critic_targets(learner, target_params, episodes, seg, layout, mean_p, L_p, k_noise)
            per_critic, grads = critic_loss_and_grad(learner, params, episodes, layout, targets, k_drop)
            target_mean = jnp.sum(jnp.where(layout.valid, targets, 0.0)) / (targets.shape[0] * jnp.sum(layout.valid))
            return per_critic, grads, target_mean
        return loss_and_grad

    per_critic, grads, target_mean = seg_lib.token_switch(seg, learner.token_buckets, at_budget, state.params,
                                                          state.target_params, episodes, seg, mean_p, L_p, k_noise,
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


def policy_loss_and_grad(learner: Learner, params, old_params, critic_params, episodes: buffer_lib.Episode,
                         seg: seg_lib.Segmentation, step, h0, key: jax.Array):
    """Gradient and metrics of `policy_loss`: the projection runs once on the whole batch (`jax.vjp`), the
    q_loss gradient with respect to (μ̃, L̃) is accumulated over chunks of `micro_batch` trajectories and
    pulled back through it."""
    B = episodes.rewards.shape[0]

    def project(p):
        mean, L, mean_p, L_p, info = projected_policy(learner, p, old_params, decision_states(episodes), step, h0)
        return (mean_p, L_p, trust_region(learner, mean, L, mean_p, L_p)), info

    (mean_p, L_p, tr), pullback, info = jax.vjp(project, params, has_aux=True)
    xi = row_noise(key, B, seg.row_start.shape[0], mean_p.shape[-1])
    contextual = L_p.ndim == 3

    def at_budget(budget):
        def q_loss_and_grad(critic_params, seg, shared, rows, data):
            layout = seg_lib.packed_layout(seg, budget=budget)

            def f(L_shared, rows, data):
                m, L_rows = rows
                ep, xi_c = data
                L_c = L_rows if contextual else L_shared
                return q_loss(learner, critic_params, ep, seg, layout, m, L_c, xi_c, B * seg.num_rows), ()

            return chunks.chunked_value_and_grad(f, shared, rows, data, chunks.num_chunks(learner.micro_batch, B))
        return q_loss_and_grad

    shared = () if contextual else L_p
    rows = (mean_p, L_p if contextual else None)
    (ql, _), (d_shared, (d_mean, d_L_rows)) = seg_lib.token_switch(seg, learner.token_buckets, at_budget,
                                                                   critic_params, seg, shared, rows, (episodes, xi))
    (grads,) = pullback((d_mean, d_L_rows if contextual else d_shared, jnp.ones_like(tr)))
    return grads, policy_metrics(ql, tr, L_p, info)


def policy_step(learner: Learner, state: PolicyState, buffer: buffer_lib.TrajectoryBuffer, critic_params, step, h0,
                key: jax.Array):
    """One policy step: a fresh batch and segmentation (without the extra row), Adam with coupled decay."""
    k_batch, k_seg, k_noise = jax.random.split(key, 3)
    episodes = buffer_lib.sample(buffer, k_batch, learner.batch_size)
    seg = draw_segmentation(learner, k_seg, extra_row=False)
    grads, metrics = policy_loss_and_grad(learner, state.params, state.old_params, critic_params, episodes, seg,
                                          step, h0, k_noise)
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
# One iteration, and the program the host runs in chunks


def make_train(args: Args, platform: str | None = None) -> runner.Program:
    """Static set-up (task, learner) and the pure single-seed functions of one run (`runner.Program`), for the
    target `platform` (default: the backend at hand; e.g. 'cuda' to lower the GPU program on a CPU machine)."""
    task = flags.make_task(args)
    flags.check_args(args, task)
    learner = make_learner(args, task, platform)
    T, dof, k = learner.T, task.num_dof, learner.mp.num_params  # T: the learner's (T_env / F)

    def collect(policy_params, key, num_episodes: int, deterministic: bool):
        return rollout(args, task, learner, policy_params, key, num_episodes, deterministic)

    warmup = flags.warmup_episodes(args)

    def init(key) -> TrainState:
        k_pol, k_crit, key = jax.random.split(key, 3)
        policy = init_policy_state(learner, k_pol)
        buffer = buffer_lib.init(args.buffer_size, buffer_lib.episode_spec(T, task.obs_size, dof, k))
        if warmup:  # upstream collects until the buffer holds a batch, then starts iteration 1
            episodes, _, _ = collect(policy.params, jax.random.fold_in(key, 0x3A11), warmup, deterministic=False)
            buffer = buffer_lib.add(buffer, episodes)
        return TrainState(policy=policy, critic=init_critic_state(learner, k_crit, 2 if args.double_critic else 1),
                          buffer=buffer, initial_entropy=jnp.full((), jnp.nan), key=key)

    def iteration(state: TrainState, it):
        """Iteration `it` (1-based, shared by all seeds so that the update gates stay real branches)."""
        key, k_roll, k_crit, k_pol = jax.random.split(state.key, 4)
        episodes, _, stats = collect(state.policy.params, k_roll, args.num_envs, deterministic=False)
        buffer = buffer_lib.add(state.buffer, episodes)
        h0 = jnp.where(jnp.isnan(state.initial_entropy) & (it >= args.critic_update_from),
                       initial_entropy(learner, state.policy.old_params, episodes.states[:, 0]),
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
        """Iterations first_it … first_it + eval_interval − 1 (those past `iterations` are skipped).
        Returns the new state and the per-iteration metrics `{name: [eval_interval]}` (NaN where skipped)."""

        def body(s, i):
            return runner.run_if(first_it + i <= args.iterations, iteration, s, first_it + i)

        return lax.scan(body, state, jnp.arange(args.eval_interval, dtype=jnp.int32))

    def evaluate(policy_params, key):
        """Mean over `num_eval_episodes` fresh episodes of the deterministic policy: {return, task metrics}."""
        _, _, stats = collect(policy_params, key, args.num_eval_episodes, deterministic=True)
        return {n: jnp.mean(v) for n, v in stats.items()}

    return runner.Program(init, run_chunk, evaluate, collect, task, learner, warmup * task.episode_length)


# ---------------------------------------------------------------------------------------------------------------
# Host entry point


def run(args: Args, max_chunks: int | None = None, verbose: bool = True) -> dict:
    """Train (or continue with `--resume`) with the shared host loop (`toperl_jax.runner.run`); returns the
    summary dict (also written to run_dir/summary.json). Everything is traced at `--matmul-precision`; with
    `--distributed` the processes train the seeds together (`runner.init_distributed`)."""
    runner.init_distributed(args)
    with flags.matmul_precision(args):
        return runner.run(args, make_train(args), max_chunks, verbose, title="TOP-ERL", render_final=_render_final)


def _render_final(args: Args, program: runner.Program, state, run_dir: pathlib.Path, say) -> None:
    """Render one episode of seed 0's deterministic policy to run_dir/final.mp4 (failures are reported, not
    raised, so that a finished run is never lost to a missing GL backend)."""
    try:
        from toperl_jax.envs import render

        task, learner = program.task, program.learner

        params = jax.tree.map(lambda x: x[0], state.policy.params)
        start = task.reset(jax.random.PRNGKey(args.seed))
        mean, _ = learner.policy.apply(params, start.obs[None])
        pos, vel = prodmp_trajectory(learner.mp, mean[0], task.action_times(), 0.0, start.desired_pos,
                                     start.desired_vel)
        states = jax.jit(lambda s, d: render.episode_states(task, s, d))(start, jnp.concatenate([pos, vel], -1))
        path = render.render_episode(task, states, run_dir / "final.mp4")
        say(f"video of the final policy (seed {args.seed}): {path}")
    except Exception as e:  # noqa: BLE001 - report and keep the run's results
        say(f"--video failed: {type(e).__name__}: {e}\n(headless rendering needs MUJOCO_GL=egl or osmesa set "
            "before start, and `pip install -e .[render]` for mp4)")


if __name__ == "__main__":
    cli.main(lambda: run(parse_args()))
