"""TOP-ERL critic and policy updates as pure functions (spec: top_erl.md §2–§5, §7; trpl_kl_projection.md §5–§6).

Everything here is jit-able, has static shapes and carries its state in pytrees, so that a variant can run
`epochs_critic` critic steps and `epochs_policy` policy steps of an iteration inside `lax.scan`
(`critic_update`, `policy_update`) without a host round-trip.

## Static shapes: one packed token sequence per trajectory (spec §7 (b))
The segment length ℓ changes at every update. Instead of one program per ℓ (16 for T = 100, 21 for T = 250),
every trajectory's rows are packed side by side into one token sequence of a fixed length N (`segments`):

    row 0: [s_c0, a_c0 … a_c0+ℓ−1]  row 1: [s_c1, …]  …  padding …        N = token_budget(T, M, extra_row)

with a block-diagonal causal mask (a token sees the tokens of its own row at or before it) and per-token
absolute time indices for the position table. ℓ, the offset o and the number of rows are *traced* scalars;
only N is static. One compilation therefore serves every segmentation, and the cost per step is that of the
worst case (T = 100: 136 tokens with the extra row, 125 without; T = 250: 336 / 275). Every per-row quantity
of the spec is computed per token instead:

- **Inputs.** State tokens carry s_c, action tokens a_k (buffered actions for the prediction; zero at padded
  actions k ≥ T, as upstream pads them).
- **Q-token targets.** An action token of time index k in a row starting at c is the l-th action of the row
  (l = k − c + 1), so G_l = Σ_{j=c…k} γ^{j−c} r_j + γ^{k+1−c} V̄(s_{k+1}). The reward sum is a product of the
  rewards [B, T] with a fixed-shape [N, T] weight matrix (γ^{j−c} on c ≤ j ≤ k, 0 elsewhere), so indices ≥ T
  have no column and cannot leak. V̄ comes from one V-only pass of the target critic over all T states of
  each trajectory (T one-token sequences, [B, T]), gathered at k + 1 and set to 0 where k + 1 ≥ T.
- **V-token targets.** Q̄(s_c, â_c … â_{c+ℓ−1}) of the target critic on the same packed layout, with the
  action tokens replaced by actions â of the projected policy, read at the row's last *valid* action token
  (position min(ℓ, T − c) of the row) and written at the row's state token.
- **Per-token ProDMP decoding.** â at a token with time index k is the ProDMP of its row's weights
  w_{b,r} = μ̃_b (+ relative-goal fix) + L̃ ξ_{b,r} (one ξ per trajectory and row) at the single time
  t_k = init_time + (k + 1)·dt, from the row's initial condition. Decoding one time per token gives the same
  numbers as decoding the whole row at once (a ProDMP is evaluated pointwise in time) and keeps the shape
  [B, N, 2·dof] static. Critic targets condition on the buffered desired pos/vel at the row start c with
  init_time = t_c − dt ("initial-condition enforcement"); the policy loss uses the episode's initial
  condition for every row (upstream found this better).

## Loss normalisation (upstream `mse_loss` over [batch, rows, 1 + ℓ])
Upstream zeroes prediction and target at the padded action tokens (index ≥ T) and then takes
`torch.nn.functional.mse_loss`, i.e. the mean over *all* B · num_rows · (1 + ℓ) entries, padded ones
included. The packed equivalent is

    loss = Σ_{b, valid tokens} (pred − target)² / (B · num_in_row_tokens),   num_in_row_tokens = num_rows·(1 + ℓ),

counting the padded action tokens of the extra row in the denominator but not the packing tokens after the
last row (which upstream does not have). `masked_mse` implements exactly this; `tests/test_updates.py`
checks it against the per-row definition for every segment length.

## Double critic and precision
Critic parameters are always a stacked ensemble `[C, ...]` (`critic.init_ensemble`): C = 1 is upstream's
`single_q: true`, C = 2 its double critic. Targets take the elementwise min over the C target critics (V̄ and
Q̄); each critic is trained on its own MSE (the loss summed over critics has exactly the per-critic
gradients; Adam is elementwise, so one optimiser over the stack equals upstream's one per critic); the policy
loss takes the min over critics of each row's Q sum. bf16 compute: build the critic with
`compute_dtype=jnp.bfloat16` (matmuls only; parameters, targets and losses stay float32).

## Micro-batching (`Learner.micro_batch`)
Every trajectory's packed sequence is independent, so the critic-target pass, the critic gradient and the
policy's critic pass can run over sequential chunks of `micro_batch` trajectories (`lax.map` for the targets,
gradient accumulation in `lax.scan` for the gradients; the projection runs once on the whole batch and the
q_loss gradient with respect to (μ̃, L̃) is pulled back through it with `jax.vjp`). The noise ξ is drawn for
the whole batch first, so the numbers equal the one-pass numbers up to float summation order (tested). This
only trades peak memory for sequential work: on a CPU the one-pass attention tensors ([B, heads, N, N], 300 MB
per layer at box shapes) fall out of cache and chunks of 8–16 trajectories run about twice as fast; on a GPU
keep `micro_batch=None`.

## Optimisers and Polyak averaging
- Critic: AdamW with decoupled weight decay on ≥ 2-D parameters (`critic_optimizer`), target network
  θ̄ ← τθ + (1 − τ)θ̄ with τ = `critic_tau` (0.005) after every critic step (`optax.incremental_update`).
- Policy: `torch.optim.Adam(weight_decay=wd_policy)` upstream, i.e. *coupled* L2 (the decay is added to the
  gradient before the Adam moments): `optax.chain(add_decayed_weights(wd), adam(lr))` (`policy_optimizer`).
- Old policy: θ_old ← (1 − rate)·θ_old + rate·θ, rate = `old_policy_rate` (0.005), once after the policy
  steps of an iteration (`old_policy_update`; `policy_update` calls it after its scan).

Entry points: `critic_step` / `critic_update`, `policy_step` / `policy_update`, `old_policy_update`; the
pieces (`critic_targets`, `critic_predictions`, `masked_mse`, `critic_loss(_and_grad)`, `q_loss`,
`policy_loss(_and_grad)`, …) are public so that tests and ablations can use them with a fixed segmentation.

Upstream details reproduced as written: the V̄ bootstrap of the state after the last action (index T) is 0;
`dones` are not used (fixed-length episodes); the relative-goal fix subtracts desired_pos[c] − desired_pos[0]
(upstream passes `step_desired_pos[:, 0]`, which spec §1 defines as the measured position at reset, i.e.
init_pos); the V target of a critic with dropout uses the target critic without dropout.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax import lax

from toperl_jax import buffer as buffer_lib
from toperl_jax import critic as critic_lib
from toperl_jax import gaussian
from toperl_jax import segments as seg_lib
from toperl_jax.critic import TransformerCritic
from toperl_jax.mp import ProDMPConfig, prodmp_trajectory
from toperl_jax.policy import GaussianPolicy
from toperl_jax.projection import ProjectionConfig, kl_projection, trust_region_loss

PyTree = Any
sg = lax.stop_gradient


# ---------------------------------------------------------------------------------------------------------------
# Static configuration and state


@dataclasses.dataclass(frozen=True)
class Learner:
    """Everything static about the TOP-ERL updates (hashable; close over it or mark it static under jit).

    Attributes:
        critic: the transformer critic module (its `compute_dtype` selects bf16 compute).
        policy: the Gaussian policy over MP weights.
        mp: ProDMP configuration of the policy's weights (num_params = policy.action_dim).
        projection: trust-region / entropy-control settings.
        critic_optimizer: optax transform for the stacked critic parameters (`critic_optimizer(...)`).
        policy_optimizer: optax transform for the policy parameters (`policy_optimizer(...)`).
        T: steps per episode seen by the learner (box 100, hopper 250, Meta-World 100).
        dt: learner time step in seconds (t_k = init_time + (k + 1)·dt); Meta-World: 5 × the env dt.
        batch_size: trajectories per critic / policy step.
        discount: γ (1.0 in every upstream config).
        max_num_segments: M, candidate segment counts 1 … M (25 upstream).
        critic_tau: Polyak rate of the target critic, applied after every critic step.
        old_policy_rate: Polyak rate of the old policy, applied once per `policy_update`.
        micro_batch: trajectories per sequential chunk of the critic / target / policy passes (`lax.map` and
            gradient accumulation in `lax.scan`), or None for the whole batch at once. The result is the same
            up to float summation order and the noise ξ is drawn for the whole batch either way; only peak
            memory and speed change. On a CPU, chunks of 8–16 trajectories keep the attention tensors
            cache-sized (about 2× faster at box-pushing shapes); on a GPU leave None.
        segment_length: None (TOP-ERL) draws a random segment length per update (spec §3); an int fixes ℓ for
            every update (the paper's fixed-segmentation ablation; the offset stays random). It must be one of
            `segments.segment_lengths(T, max_num_segments)` so that the packed token budget holds.
        use_projection: False drops the trust-region projection and its entropy control (ablation): the policy
            loss uses the raw (μ, L) and the trust-region loss is 0.
        enforce_initial_condition: True (TOP-ERL) decodes the V-target actions â of a row from the buffered
            desired pos/vel at the row start; False decodes them from the episode's initial condition
            (init_time, init_pos, init_vel), like the policy loss (the paper's ablation).
    """

    critic: TransformerCritic
    policy: GaussianPolicy
    mp: ProDMPConfig
    projection: ProjectionConfig
    critic_optimizer: optax.GradientTransformation
    policy_optimizer: optax.GradientTransformation
    T: int
    dt: float
    batch_size: int
    discount: float = 1.0
    max_num_segments: int = seg_lib.MAX_NUM_SEGMENTS
    critic_tau: float = 0.005
    old_policy_rate: float = 0.005
    micro_batch: int | None = None
    segment_length: int | None = None
    use_projection: bool = True
    enforce_initial_condition: bool = True

    def __post_init__(self):
        if self.mp.num_params != self.policy.action_dim:
            raise ValueError(f"policy.action_dim={self.policy.action_dim} must equal mp.num_params="
                             f"{self.mp.num_params} (num_dof={self.mp.num_dof} × {self.mp.params_per_dof})")
        if self.critic.action_dim != 2 * self.mp.num_dof:
            raise ValueError(f"critic.action_dim={self.critic.action_dim} must be 2·num_dof = {2 * self.mp.num_dof}"
                             " (desired position and velocity)")
        if self.mp.relative_goal and self.mp.disable_goal:
            raise ValueError("mp.relative_goal with mp.disable_goal is not supported: the segment goal fix "
                             "shifts the goal weight, which disable_goal removes")
        if not isinstance(self.T, int) or self.T < 1:
            raise ValueError(f"T must be a positive int, got {self.T!r}")
        if not (isinstance(self.max_num_segments, int) and 1 <= self.max_num_segments <= self.T):
            raise ValueError(f"max_num_segments must be an int in [1, T={self.T}], got {self.max_num_segments!r}")
        if not self.dt > 0:
            raise ValueError(f"dt must be > 0, got {self.dt}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {self.discount}")
        if self.micro_batch is not None and not (isinstance(self.micro_batch, int) and self.micro_batch >= 1
                                                  and self.batch_size % self.micro_batch == 0):
            raise ValueError(f"micro_batch must be None or a positive int dividing batch_size={self.batch_size}, "
                             f"got {self.micro_batch!r}")
        for name in ("critic_tau", "old_policy_rate"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.segment_length is not None and self.segment_length not in seg_lib.segment_lengths(
                self.T, self.max_num_segments):
            raise ValueError(f"segment_length must be None (random) or one of segment_lengths(T={self.T}, "
                             f"{self.max_num_segments}) = {seg_lib.segment_lengths(self.T, self.max_num_segments).tolist()}"
                             f", got {self.segment_length!r}")
        # Largest position-table index: a padded action of the extra row, < 2T.
        if 2 * self.T > self.critic.block_size:
            raise ValueError(f"critic.block_size={self.critic.block_size} must be ≥ 2·T = {2 * self.T} "
                             "(padded action tokens of the extra row index the position table up to 2T − 1)")


def critic_optimizer(learning_rate: float | optax.Schedule, weight_decay: float,
                     betas: tuple[float, float] = (0.9, 0.999)) -> optax.GradientTransformation:
    """AdamW on stacked critic parameters, decay on ≥ 2-D parameters only (upstream `configure_optimizer`)."""
    return critic_lib.make_optimizer(learning_rate, weight_decay, betas, stacked_axes=1)


def policy_optimizer(learning_rate: float | optax.Schedule, weight_decay: float) -> optax.GradientTransformation:
    """Adam with coupled L2 weight decay, as `torch.optim.Adam(lr, weight_decay=wd)`: g ← g + wd·θ, then Adam."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate, b1=0.9, b2=0.999,
                                                                          eps=1e-8))


@flax.struct.dataclass
class CriticState:
    """Critic training state. Parameter leaves are stacked `[C, ...]` (C = 1 single, 2 double critic).

    Attributes:
        params: online critic parameters.
        target_params: Polyak-averaged target parameters.
        opt_state: optimiser state of `learner.critic_optimizer`.
    """

    params: PyTree
    target_params: PyTree
    opt_state: optax.OptState


@flax.struct.dataclass
class PolicyState:
    """Policy training state.

    Attributes:
        params: policy parameters.
        old_params: Polyak-averaged old policy (the trust region's reference).
        opt_state: optimiser state of `learner.policy_optimizer`.
    """

    params: PyTree
    old_params: PyTree
    opt_state: optax.OptState


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
# Policy side: projected distribution, per-row weight samples, per-token ProDMP decoding


def decision_states(episodes: buffer_lib.Episode) -> jax.Array:
    """d = s_0 of each trajectory, `[B, S]`."""
    return episodes.states[:, 0]


def initial_entropy(learner: Learner, old_params: PyTree, d_states: jax.Array) -> jax.Array:
    """H₀ for the entropy schedule: batch mean of H(π_old(d)) (upstream sets it at the first `make_new_pred`)."""
    _, L_old = learner.policy.apply(old_params, d_states)
    return jnp.mean(gaussian.entropy(L_old))


def projected_policy(learner: Learner, params: PyTree, old_params: PyTree, d_states: jax.Array, step,
                     initial_entropy) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, dict]:
    """Raw and projected policy at the decision states (upstream `make_new_pred`).

    Returns `(mean [B, k], L, mean_proj [B, k], L_proj, info)`; L is `[k, k]` (non-contextual) or `[B, k, k]`.
    The old policy is evaluated under stop_gradient; gradients reach `params` through the projection.
    """
    mean, L = learner.policy.apply(params, d_states)
    if not learner.use_projection:
        return mean, L, mean, L, {"fallback": jnp.zeros(mean.shape[:-1], bool)}
    mean_old, L_old = learner.policy.apply(old_params, d_states)
    mean_p, L_p, info = kl_projection(learner.projection, mean, L, sg(mean_old), sg(L_old), step, initial_entropy)
    return mean, L, mean_p, L_p, info


def row_noise(key: jax.Array, batch: int, num_rows: int, k: int) -> jax.Array:
    """ξ ~ N(0, I) for every (trajectory, row slot): `jax.random.normal(key, [batch, num_rows, k])`."""
    return jax.random.normal(key, (batch, num_rows, k), dtype=jnp.float32)


def row_weights(mean: jax.Array, L: jax.Array, xi: jax.Array) -> jax.Array:
    """Independent reparameterised samples per (trajectory, row): w = μ + L ξ.

    Args:
        mean: `[B, k]`.
        L: `[k, k]` (shared) or `[B, k, k]`.
        xi: `[B, R, k]` standard normal noise (`row_noise`).

    Returns:
        `[B, R, k]`; gradients flow to `mean` and `L`.
    """
    L_b = L if L.ndim == 2 else L[:, None]
    return mean[:, None, :] + jnp.einsum("...ij,...j->...i", L_b, xi.astype(mean.dtype))


def fix_relative_goal_for_segments(mp: ProDMPConfig, weights: jax.Array, traj_init_pos: jax.Array,
                                   seg_init_pos: jax.Array) -> jax.Array:
    """Upstream `fix_relative_goal_for_segments`: with a relative goal, re-anchor the goal of each row.

    goal ← goal − (seg_init_pos − traj_init_pos) per DoF (the last weight of each DoF block). This re-anchors
    the absolute goal exactly only when the effective goal scale is 1 (spec trpl §6); reproduced as written.
    No-op without `relative_goal`.

    Args:
        weights: `[B, R, num_dof · (num_basis + 1)]`.
        traj_init_pos: `[B, num_dof]` (upstream: the buffered desired_pos[0], the measured position at reset).
        seg_init_pos: `[B, R, num_dof]`, desired_pos at each row start.
    """
    if not mp.relative_goal:
        return weights
    b = mp.params_per_dof
    w = weights.reshape(*weights.shape[:-1], mp.num_dof, b)
    delta = seg_init_pos - traj_init_pos[:, None, :]
    w = w.at[..., b - 1].add(-delta)
    return w.reshape(weights.shape)


def action_times(init_time: jax.Array, time_index: jax.Array, dt: float) -> jax.Array:
    """t_k = init_time + (k + 1)·dt: `init_time [B]`, `time_index [N]` → `[B, N]`."""
    return init_time[:, None] + (time_index[None, :].astype(init_time.dtype) + 1.0) * dt


def decode_token_actions(mp: ProDMPConfig, weights: jax.Array, times: jax.Array, init_time: jax.Array,
                         init_pos: jax.Array, init_vel: jax.Array) -> jax.Array:
    """ProDMP actions, one time per token: `weights [B, N, k]`, `times [B, N]`, initial condition broadcasting
    to `[B, N]` (`init_time`) and `[B, N, dof]` (`init_pos`, `init_vel`) → `[B, N, 2·dof]` = (pos, vel)."""
    pos, vel = prodmp_trajectory(mp, weights, times[..., None], init_time, init_pos, init_vel)
    return jnp.concatenate([pos[..., 0, :], vel[..., 0, :]], axis=-1)


# ---------------------------------------------------------------------------------------------------------------
# Critic: packed predictions, targets, loss


def _ensemble_tokens(learner: Learner, params: PyTree, state_tok, action_tok, layout: seg_lib.PackedLayout,
                     dropout_key: jax.Array | None = None) -> jax.Array:
    """Every critic of the stack on the packed tokens: `[C, B, N]` (0 at packing tokens)."""
    deterministic = dropout_key is None or learner.critic.dropout == 0.0
    return critic_lib.apply_ensemble(
        learner.critic, params, state_tok, action_tok, layout.is_state, layout.time_index, layout.segment_id,
        method=TransformerCritic.tokens, dropout_key=None if deterministic else dropout_key,
        deterministic=deterministic)


def critic_predictions(learner: Learner, params: PyTree, episodes: buffer_lib.Episode,
                       layout: seg_lib.PackedLayout, dropout_key: jax.Array | None = None) -> jax.Array:
    """Online critics on the buffered (state, action) rows, packed: `[C, B, N]`.

    Token t holds V(s_c) at a state token and Q(s_c, a_c … a_k) at the action token of time k.
    `dropout_key` enables dropout (training mode) when the critic has dropout > 0.
    """
    state_tok, action_tok = seg_lib.gather_tokens(layout, episodes.states, episodes.actions)
    return _ensemble_tokens(learner, params, state_tok, action_tok, layout, dropout_key)


def state_values(learner: Learner, params: PyTree, states: jax.Array) -> jax.Array:
    """V of every state on its own (one-token sequences at their absolute index), min over critics: `[B, T]`."""
    T = states.shape[-2]
    idx = jnp.arange(T, dtype=jnp.int32)
    v = critic_lib.apply_ensemble(learner.critic, params, states, None, idx, None)  # [C, B, T, 1]
    return jnp.min(v[..., 0], axis=0)


def reward_weights(seg: seg_lib.Segmentation, layout: seg_lib.PackedLayout, discount: float) -> jax.Array:
    """`[N, T]` weights W with (rewards @ Wᵀ)[t] = Σ_{j=c…k} γ^{j−c} r_j at an action token (row start c,
    time k); 0 rows at state and packing tokens. Columns stop at T, so nothing beyond the episode can enter."""
    T = seg.T
    c = seg.row_start[layout.row][:, None]  # [N, 1]
    k = layout.time_index[:, None]
    j = jnp.arange(T, dtype=jnp.int32)[None, :]
    inside = layout.is_action[:, None] & (j >= c) & (j <= k)
    power = jnp.power(jnp.float32(discount), jnp.maximum(j - c, 0).astype(jnp.float32))
    return jnp.where(inside, power, 0.0)


def last_valid_token(seg: seg_lib.Segmentation, layout: seg_lib.PackedLayout) -> jax.Array:
    """`[N]` int: for each token, the token index of its row's last valid action (position min(ℓ, T − c))."""
    row = layout.row
    return seg_lib.token_position(seg, row, seg.num_valid_actions[row])


def _num_chunks(learner: Learner, batch: int) -> int:
    if learner.micro_batch is None or learner.micro_batch >= batch:
        return 1
    if batch % learner.micro_batch:
        raise ValueError(f"micro_batch={learner.micro_batch} must divide the batch size {batch}")
    return batch // learner.micro_batch


def _split(tree: PyTree, n: int) -> PyTree:
    """Leading axis B → [n, B / n] on every leaf."""
    return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), tree)


def _merge(tree: PyTree) -> PyTree:
    """[n, B / n, ...] → [B, ...] on every leaf."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), tree)


def _chunked_map(learner: Learner, fn, batched: PyTree, batch: int) -> PyTree:
    """`fn(batched)` evaluated in sequential chunks of `learner.micro_batch` trajectories (`lax.map`)."""
    n = _num_chunks(learner, batch)
    if n == 1:
        return fn(batched)
    return _merge(lax.map(fn, _split(batched, n)))


def _targets_chunk(learner: Learner, target_params: PyTree, episodes: buffer_lib.Episode,
                   seg: seg_lib.Segmentation, layout: seg_lib.PackedLayout, mean_proj: jax.Array,
                   L_proj: jax.Array, xi: jax.Array) -> tuple[jax.Array, dict]:
    """`critic_targets` for one chunk of trajectories, with the noise ξ `[b, R, k]` given."""
    T, dt, mp = seg.T, learner.dt, learner.mp
    b = episodes.rewards.shape[0]
    row = layout.row
    c_tok = seg.row_start[row]  # [N]
    c_row = jnp.minimum(seg.row_start, T - 1)  # row starts < T for valid rows; clip the unused slots

    # â: per-row weights with the relative-goal fix, decoded per token from the buffered init condition.
    w_rows = row_weights(mean_proj, L_proj, xi)  # [b, R, k]
    times = action_times(episodes.init_time, layout.time_index, dt)  # [b, N]
    if learner.enforce_initial_condition:
        seg_pos = episodes.desired_pos[:, c_row]  # [b, R, dof]
        seg_vel = episodes.desired_vel[:, c_row]
        w_fixed = fix_relative_goal_for_segments(mp, w_rows, episodes.desired_pos[:, 0], seg_pos)
        seg_init_time = action_times(episodes.init_time, c_tok, dt) - dt  # t_c − dt, [b, N]
        actions = decode_token_actions(mp, w_fixed[:, row], times, seg_init_time, seg_pos[:, row],
                                       seg_vel[:, row])
    else:  # ablation: the whole trajectory from the episode's initial condition, read at the row's times
        actions = decode_token_actions(mp, w_rows[:, row], times, episodes.init_time[:, None],
                                       episodes.init_pos[:, None, :], episodes.init_vel[:, None, :])
    # Padded actions (k ≥ T) cannot influence the valid tokens (causal rows); zero them like the buffer pads.
    actions = jnp.where((layout.is_action & layout.valid)[:, None], actions, 0.0)

    state_tok, _ = seg_lib.gather_tokens(layout, episodes.states, episodes.actions)
    q_hat = jnp.min(_ensemble_tokens(learner, target_params, state_tok, actions, layout), axis=0)  # [b, N]
    last = jnp.broadcast_to(last_valid_token(seg, layout), q_hat.shape)
    v_target = jnp.take_along_axis(q_hat, last, axis=1)

    # Q-token targets: discounted reward sums + bootstrapped V̄ of the next state (0 at T and beyond).
    v_bar = state_values(learner, target_params, episodes.states)  # [b, T]
    nxt = layout.time_index + 1
    v_nxt = jnp.where(nxt < T, v_bar[:, jnp.minimum(nxt, T - 1)], 0.0)
    boot = jnp.power(jnp.float32(learner.discount), (nxt - c_tok).astype(jnp.float32)) * v_nxt
    reward_sum = episodes.rewards.astype(jnp.float32) @ reward_weights(seg, layout, learner.discount).T
    q_target = reward_sum + boot

    targets = jnp.where(layout.is_state, v_target, jnp.where(layout.is_action & layout.valid, q_target, 0.0))
    aux = {"weights": w_rows, "actions": actions, "v_next": jnp.where(layout.is_action, boot, 0.0), "q_hat": q_hat}
    chex.assert_shape(targets, (b, layout.row.shape[0]))
    return targets, aux


def critic_targets(learner: Learner, target_params: PyTree, episodes: buffer_lib.Episode,
                   seg: seg_lib.Segmentation, layout: seg_lib.PackedLayout, mean_proj: jax.Array,
                   L_proj: jax.Array, key: jax.Array) -> tuple[jax.Array, dict]:
    """Packed n-step targets of spec §4 (upstream `segments_n_step_return_vf`), no gradient.

    Args:
        target_params: stacked target critic parameters `[C, ...]`.
        episodes: batch of B episodes (`[B, T, ...]` fields).
        seg, layout: a segmentation *with* the extra row and its packed layout (N tokens).
        mean_proj, L_proj: projected policy (`[B, k]`, `[k, k]` or `[B, k, k]`) that samples â.
        key: PRNG key for ξ = `row_noise(key, B, R, k)` (one per trajectory and row slot).

    Returns:
        targets `[B, N]`: G_0 = min_C Q̄(s_c, â_c … â_{c+ℓ−1}) at the last valid action at state tokens,
        G_l = Σ_{j<l} γ^j r_{c+j} + γ^l min_C V̄(s_{c+l}) (0 beyond T) at valid action tokens, 0 at padded action
        tokens (k ≥ T) and packing tokens;
        aux: `weights` `[B, R, k]` (the row samples μ̃ + L̃ξ before the relative-goal fix),
        `actions` `[B, N, 2·dof]` (decoded â, 0 at non-action and padded tokens), `v_next` `[B, N]`
        (γ^l V̄ term), `q_hat` `[B, N]` (min_C Q̄ of the â rows at every token).
    """
    mean_proj, L_proj, target_params = sg(mean_proj), sg(L_proj), sg(target_params)
    chex.assert_shape(episodes.rewards, (None, seg.T))
    B = episodes.rewards.shape[0]
    xi = row_noise(key, B, seg.row_start.shape[0], mean_proj.shape[-1])
    contextual = L_proj.ndim == 3

    def chunk(x):
        ep, m, xi_c, L_c = x
        return _targets_chunk(learner, target_params, ep, seg, layout, m, L_c if contextual else L_proj, xi_c)

    targets, aux = _chunked_map(learner, chunk, (episodes, mean_proj, xi, L_proj if contextual else None), B)
    return sg(targets), jax.tree.map(sg, aux)


def masked_mse(pred: jax.Array, targets: jax.Array, layout: seg_lib.PackedLayout,
               batch_size: int | None = None) -> jax.Array:
    """Upstream's critic MSE on the packed layout: `pred [..., b, N]`, `targets [b, N]` → `[...]`.

    Prediction and target are zeroed at padded action tokens (k ≥ T) and packing tokens; the mean is over
    B · num_rows · (1 + ℓ) entries — the padded action tokens *are* counted in the denominator (upstream's
    `mse_loss` over [B, rows, 1 + ℓ] after zeroing), the packing tokens after the last row are not.
    `batch_size` is B when `pred`/`targets` hold a chunk of b < B trajectories (default: b), so that the
    chunks' losses add up to the batch loss.
    """
    mask = layout.valid
    diff = jnp.where(mask, pred, 0.0) - jnp.where(mask, targets, 0.0)
    count = (targets.shape[0] if batch_size is None else batch_size) * jnp.sum(layout.in_row)
    return jnp.sum(jnp.square(diff), axis=(-2, -1)) / count


def critic_loss(learner: Learner, params: PyTree, episodes: buffer_lib.Episode, layout: seg_lib.PackedLayout,
                targets: jax.Array, dropout_key: jax.Array | None = None,
                batch_size: int | None = None) -> tuple[jax.Array, dict]:
    """Σ over critics of each critic's `masked_mse` (per-critic gradients as upstream's separate steps).

    Returns `(loss, {"critic_loss": [C] per-critic MSE, "pred": [C, B, N]})`. One pass over the whole batch
    (`batch_size`: see `masked_mse`); `critic_loss_and_grad` is the micro-batched version.
    """
    pred = critic_predictions(learner, params, episodes, layout, dropout_key)
    per_critic = masked_mse(pred, targets, layout, batch_size)
    return jnp.sum(per_critic), {"critic_loss": per_critic, "pred": pred}


def critic_loss_and_grad(learner: Learner, params: PyTree, episodes: buffer_lib.Episode,
                         layout: seg_lib.PackedLayout, targets: jax.Array,
                         dropout_key: jax.Array | None = None) -> tuple[jax.Array, PyTree]:
    """Per-critic losses `[C]` and the gradient of their sum, accumulated over chunks of `micro_batch`
    trajectories in a `lax.scan` (one pass when `micro_batch` is None)."""
    B = targets.shape[0]
    n = _num_chunks(learner, B)

    def grad_chunk(ep, tgt, key):
        def f(p):
            loss, aux = critic_loss(learner, p, ep, layout, tgt, key, batch_size=B)
            return loss, aux["critic_loss"]

        return jax.grad(f, has_aux=True)(params)

    if n == 1:
        grads, per_critic = grad_chunk(episodes, targets, dropout_key)
        return per_critic, grads

    keys = jax.random.split(dropout_key, n) if dropout_key is not None else None

    def body(acc, x):
        ep, tgt, key = x
        grads, per_critic = grad_chunk(ep, tgt, key)
        return jax.tree.map(jnp.add, acc, (per_critic, grads)), None

    C = jax.tree.leaves(params)[0].shape[0]
    zero = (jnp.zeros((C,), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    (per_critic, grads), _ = lax.scan(body, zero, (_split(episodes, n), _split(targets, n), keys))
    return per_critic, grads


def draw_segmentation(learner: Learner, key: jax.Array, extra_row: bool) -> seg_lib.Segmentation:
    """The segmentation of one update: random length and offset (spec §3), or the fixed
    `learner.segment_length` with a random offset (o ~ U{0 … ℓ − 1}, 0 when T // ℓ = 1)."""
    if learner.segment_length is None:
        return seg_lib.sample_segmentation(key, learner.T, learner.max_num_segments, extra_row)
    length = learner.segment_length
    offset = jax.random.randint(key, (), 0, length, dtype=jnp.int32) if learner.T // length > 1 else 0
    return seg_lib.make_segmentation(length, offset, learner.T, learner.max_num_segments, extra_row)


def critic_step(learner: Learner, state: CriticState, buffer: buffer_lib.TrajectoryBuffer, policy_params: PyTree,
                old_policy_params: PyTree, step, initial_entropy, key: jax.Array) -> tuple[CriticState, dict]:
    """One critic gradient step (spec §2.3): fresh uniform batch, fresh segmentation with the extra row,
    packed targets from the target critic and the projected policy, AdamW step, Polyak target update.

    Args:
        state: critic state.
        buffer: replay buffer of `Episode`s.
        policy_params, old_policy_params: current and old policy (for the projected policy that samples â).
        step: iteration count (1-based) for the entropy schedule.
        initial_entropy: H₀ of the entropy schedule.
        key: PRNG key (consumed).

    Returns:
        `(new_state, metrics)` with scalar metrics `critic_loss` (mean over critics), `target_mean`,
        `segment_length`.
    """
    k_batch, k_seg, k_noise, k_drop = jax.random.split(key, 4)
    episodes = buffer_lib.sample(buffer, k_batch, learner.batch_size)
    seg = draw_segmentation(learner, k_seg, extra_row=True)
    layout = seg_lib.packed_layout(seg)
    _, _, mean_p, L_p, _ = projected_policy(learner, policy_params, old_policy_params, decision_states(episodes),
                                            step, initial_entropy)
    targets, _ = critic_targets(learner, state.target_params, episodes, seg, layout, mean_p, L_p, k_noise)
    per_critic, grads = critic_loss_and_grad(learner, state.params, episodes, layout, targets, k_drop)
    updates, opt_state = learner.critic_optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    target_params = optax.incremental_update(params, state.target_params, learner.critic_tau)
    valid = layout.valid
    metrics = {
        "critic_loss": jnp.mean(per_critic),
        "target_mean": jnp.sum(jnp.where(valid, targets, 0.0)) / (targets.shape[0] * jnp.sum(valid)),
        "segment_length": seg.length,
    }
    return CriticState(params=params, target_params=target_params, opt_state=opt_state), metrics


def critic_update(learner: Learner, state: CriticState, buffer: buffer_lib.TrajectoryBuffer, policy_params: PyTree,
                  old_policy_params: PyTree, step, initial_entropy, key: jax.Array,
                  num_steps: int) -> tuple[CriticState, dict]:
    """`num_steps` (static, = epochs_critic) `critic_step`s in a `lax.scan`; metrics stacked `[num_steps]`."""

    def body(s, k):
        return critic_step(learner, s, buffer, policy_params, old_policy_params, step, initial_entropy, k)

    return lax.scan(body, state, jax.random.split(key, num_steps))


# ---------------------------------------------------------------------------------------------------------------
# Policy: packed q_loss, trust-region loss, Adam step, old-policy Polyak


def _q_loss_sum(learner: Learner, critic_params: PyTree, episodes: buffer_lib.Episode, seg: seg_lib.Segmentation,
                layout: seg_lib.PackedLayout, mean_proj: jax.Array, L_proj: jax.Array,
                xi: jax.Array) -> tuple[jax.Array, dict]:
    """Σ over (trajectory, valid row) of min_C Σ_l Q_C(s_c, â_{c:c+l}) for a chunk, with ξ given."""
    R = seg.row_start.shape[0]
    w_rows = row_weights(mean_proj, L_proj, xi)
    times = action_times(episodes.init_time, layout.time_index, learner.dt)
    actions = decode_token_actions(learner.mp, w_rows[:, layout.row], times, episodes.init_time[:, None],
                                   episodes.init_pos[:, None, :], episodes.init_vel[:, None, :])
    actions = jnp.where(layout.is_action[:, None], actions, 0.0)
    state_tok, _ = seg_lib.gather_tokens(layout, episodes.states, episodes.actions)
    q = _ensemble_tokens(learner, sg(critic_params), state_tok, actions, layout)  # [C, b, N]
    q_tokens = jnp.where(layout.is_action & layout.valid, q, 0.0)
    one_hot = (layout.row[:, None] == jnp.arange(R)[None, :]) & layout.in_row[:, None]  # [N, R]
    row_sums = jnp.einsum("cbn,nr->cbr", q_tokens, one_hot.astype(q_tokens.dtype))
    row_q = jnp.min(row_sums, axis=0)  # [b, R]
    total = jnp.sum(jnp.where(seg.row_valid, row_q, 0.0))
    return total, {"weights": w_rows, "actions": actions, "row_q": row_q}


def q_loss(learner: Learner, critic_params: PyTree, episodes: buffer_lib.Episode, seg: seg_lib.Segmentation,
           layout: seg_lib.PackedLayout, mean_proj: jax.Array, L_proj: jax.Array,
           key: jax.Array) -> tuple[jax.Array, dict]:
    """−mean over (trajectory, row) of min_C Σ_{l=1…ℓ} Q_C(s_c, â_{c:c+l}) (upstream `q_loss`), packed.

    The critic is frozen (stop_gradient on its parameters); gradients reach the policy through the
    reparameterised samples w = μ̃ + L̃ξ (ξ = `row_noise(key, B, R, k)`, one per trajectory and row), decoded
    per token with the *episode* initial condition (init_time, init_pos, init_vel) at
    t_k = init_time + (k + 1)·dt. One pass over the whole batch (see `policy_loss_and_grad` for chunks).

    Args:
        seg, layout: a segmentation *without* the extra row (all rows full) and its packed layout.

    Returns:
        `(q_loss, {"weights": [B, R, k], "actions": [B, N, 2·dof], "row_q": [B, R] min_C row sums})`.
    """
    B = mean_proj.shape[0]
    xi = row_noise(key, B, seg.row_start.shape[0], mean_proj.shape[-1])
    total, aux = _q_loss_sum(learner, critic_params, episodes, seg, layout, mean_proj, L_proj, xi)
    return -total / (B * seg.num_rows), aux


def policy_loss(learner: Learner, params: PyTree, old_params: PyTree, critic_params: PyTree,
                episodes: buffer_lib.Episode, seg: seg_lib.Segmentation, step, initial_entropy,
                key: jax.Array) -> tuple[jax.Array, dict]:
    """q_loss(π̃) + trust_region_coeff · mean KL(π_raw ‖ sg π̃) (spec §5); differentiable in `params` only.

    One pass over the whole batch; `policy_loss_and_grad` gives the same gradient in chunks.
    Returns `(loss, metrics)` with scalar `policy_loss`, `q_loss`, `trust_region_loss`, `entropy` (projected
    policy, batch mean), `fallback` (fraction of projection rows that fell back to the old factor).
    """
    layout = seg_lib.packed_layout(seg)
    mean, L, mean_p, L_p, info = projected_policy(learner, params, old_params, decision_states(episodes), step,
                                                  initial_entropy)
    ql, _ = q_loss(learner, critic_params, episodes, seg, layout, mean_p, L_p, key)
    tr = trust_region_loss(learner.projection, mean, L, mean_p, L_p) if learner.use_projection else jnp.zeros(())
    loss = ql + tr
    metrics = {"policy_loss": loss, "q_loss": ql, "trust_region_loss": tr,
               "entropy": jnp.mean(gaussian.entropy(L_p)),
               "fallback": jnp.mean(info["fallback"].astype(jnp.float32))}
    return loss, metrics


def policy_loss_and_grad(learner: Learner, params: PyTree, old_params: PyTree, critic_params: PyTree,
                         episodes: buffer_lib.Episode, seg: seg_lib.Segmentation, step, initial_entropy,
                         key: jax.Array) -> tuple[PyTree, dict]:
    """Gradient and metrics of `policy_loss`, with the critic passes in chunks of `micro_batch` trajectories.

    The projection runs once on the whole batch (`jax.vjp`); the q_loss gradient with respect to the
    projected (μ̃, L̃) is accumulated over chunks in a `lax.scan` and pulled back through the projection.
    Same value and gradient as `jax.grad(policy_loss)` (same ξ), less peak memory.
    """
    B = episodes.rewards.shape[0]
    n = _num_chunks(learner, B)
    if n == 1:
        grads, metrics = jax.grad(lambda p: policy_loss(learner, p, old_params, critic_params, episodes, seg, step,
                                                        initial_entropy, key), has_aux=True)(params)
        return grads, metrics

    layout = seg_lib.packed_layout(seg)

    def project(p):
        mean, L, mean_p, L_p, info = projected_policy(learner, p, old_params, decision_states(episodes), step,
                                                      initial_entropy)
        tr = (trust_region_loss(learner.projection, mean, L, mean_p, L_p) if learner.use_projection
              else jnp.zeros(()))
        return (mean_p, L_p, tr), info

    (mean_p, L_p, tr), pullback, info = jax.vjp(project, params, has_aux=True)
    xi = row_noise(key, B, seg.row_start.shape[0], mean_p.shape[-1])
    norm = B * seg.num_rows
    contextual = L_p.ndim == 3

    def body(acc_L, x):
        ep, m, xi_c, L_c = x
        L_in = L_c if contextual else L_p
        f = lambda m_, L_: -_q_loss_sum(learner, critic_params, ep, seg, layout, m_, L_, xi_c)[0] / norm
        ql, (d_m, d_L) = jax.value_and_grad(f, argnums=(0, 1))(m, L_in)
        if contextual:
            return acc_L, (ql, d_m, d_L)
        return acc_L + d_L, (ql, d_m, None)

    chunks = _split((episodes, mean_p, xi, L_p if contextual else None), n)
    acc_L, (ql, d_mean, d_L_ctx) = lax.scan(body, jnp.zeros_like(L_p), chunks)
    d_L = _merge(d_L_ctx) if contextual else acc_L
    (grads,) = pullback((_merge(d_mean), d_L, jnp.ones_like(tr)))
    ql = jnp.sum(ql)
    metrics = {"policy_loss": ql + tr, "q_loss": ql, "trust_region_loss": tr,
               "entropy": jnp.mean(gaussian.entropy(L_p)),
               "fallback": jnp.mean(info["fallback"].astype(jnp.float32))}
    return grads, metrics


def policy_step(learner: Learner, state: PolicyState, buffer: buffer_lib.TrajectoryBuffer, critic_params: PyTree,
                step, initial_entropy, key: jax.Array) -> tuple[PolicyState, dict]:
    """One policy gradient step: fresh batch, fresh segmentation without the extra row, Adam (coupled decay).

    The old policy is *not* updated here (see `old_policy_update`).
    """
    k_batch, k_seg, k_noise = jax.random.split(key, 3)
    episodes = buffer_lib.sample(buffer, k_batch, learner.batch_size)
    seg = draw_segmentation(learner, k_seg, extra_row=False)
    grads, metrics = policy_loss_and_grad(learner, state.params, state.old_params, critic_params, episodes, seg,
                                          step, initial_entropy, k_noise)
    updates, opt_state = learner.policy_optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(params=params, opt_state=opt_state), metrics


def old_policy_update(learner: Learner, state: PolicyState) -> PolicyState:
    """θ_old ← (1 − rate)·θ_old + rate·θ over every policy parameter (upstream `policy_old.copy_(policy, rate)`)."""
    return state.replace(old_params=optax.incremental_update(state.params, state.old_params,
                                                             learner.old_policy_rate))


def policy_update(learner: Learner, state: PolicyState, buffer: buffer_lib.TrajectoryBuffer, critic_params: PyTree,
                  step, initial_entropy, key: jax.Array, num_steps: int) -> tuple[PolicyState, dict]:
    """`num_steps` (static, = epochs_policy) `policy_step`s in a `lax.scan`, then one `old_policy_update`
    (upstream `update_policy`). Metrics stacked `[num_steps]`."""

    def body(s, k):
        return policy_step(learner, s, buffer, critic_params, step, initial_entropy, k)

    state, metrics = lax.scan(body, state, jax.random.split(key, num_steps))
    return old_policy_update(learner, state), metrics
