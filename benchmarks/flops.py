"""Matmul FLOPs of the critic in one learner step, counted from the shapes (a multiply-add is 2 FLOPs).

Counted: the critic's dense layers (encoders, 2·24·E² per token for QKV, projection and MLP, output) and the
attention scores and weighted values (4·E·w² per row of w tokens and layer). Not counted: layer norms, softmax,
GELU, the policy network, ProDMP decoding and the projection (elementwise or small). A backward pass through the
critic costs twice its forward pass when the weights get gradients (critic step) and once when only the inputs
do (policy step: the critic is frozen), so a critic gradient step is 3 forward passes and a policy step 2.

`ours` counts the work this project's packed layout does (every trajectory holds the token budget N; attention
inside each row of width ℓ + 1 over floor(N / (ℓ + 1)) rows, padding rows included); `original` counts the
original's per-row batches (R rows of ℓ + 1 tokens). Both compute a V̄ pass over all T states as one-token
sequences (no attention) for the targets.
"""

from __future__ import annotations

from toperl_jax import segments as seg_lib


def forward_flops(E: int, n_layer: int, state_dim: int, action_dim: int, state_tokens: float, action_tokens: float,
                  attention_pairs: float) -> float:
    """One forward pass over `state_tokens + action_tokens` tokens with `attention_pairs` (query, key) pairs."""
    tokens = state_tokens + action_tokens
    dense = 2 * E * (state_dim * state_tokens + action_dim * action_tokens) + tokens * (n_layer * 24 * E * E + 2 * E)
    return dense + n_layer * 4 * E * attention_pairs


def step_flops(step: str, *, B: int, T: int, length: int, offset: int, E: int, n_layer: int, state_dim: int,
               action_dim: int, max_num_segments: int = seg_lib.MAX_NUM_SEGMENTS) -> dict[str, float]:
    """{"ours": …, "original": …} FLOPs of `step` ∈ critic_update, critic_grad, targets, policy at (ℓ, o)."""
    extra_row = step != "policy"
    w = length + 1
    R = int(seg_lib.num_rows(T, length, offset, extra_row))
    N = seg_lib.token_budget(T, max_num_segments, extra_row)
    fwd = lambda states, actions, pairs: forward_flops(E, n_layer, state_dim, action_dim, B * states,  # noqa: E731
                                                       B * actions, B * pairs)
    rows = {"ours": fwd(R, N - R, (N // w) * w * w), "original": fwd(R, R * length, R * w * w)}
    v_pass = fwd(T, 0, 0)
    passes = {"critic_update": 1 + 3, "critic_grad": 3, "targets": 1, "policy": 2}[step]
    with_v = step in ("critic_update", "targets")
    return {side: passes * f + (v_pass if with_v else 0.0) for side, f in rows.items()}
