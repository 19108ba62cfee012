"""Matmul FLOPs of the critic in one learner step, counted from the shapes (a multiply-add is 2 FLOPs).

Counted: the critic's dense layers (encoders, 2·24·E² per token for QKV, projection and MLP, output) and the
attention scores and weighted values (4·E·w² per row of w tokens and layer). Not counted: layer norms, softmax,
GELU, the policy network, ProDMP decoding and the projection (elementwise or small). A backward pass through the
critic costs twice its forward pass when the weights get gradients (critic step) and once when only the inputs
do (policy step: the critic is frozen), so a critic gradient step is 3 forward passes and a policy step 2.

`ours` counts the work this project's packed layout does (every trajectory holds the token budget N, the
smallest of the `--token-buckets` static budgets that holds the draw; attention inside each row of width
w = ℓ + 1 over N // w rows, padding rows included, and inside the last N mod w tokens as one shorter block); `original` counts the original's per-row batches (R rows of ℓ + 1 tokens). Both compute
a V̄ pass over all T states as one-token sequences (no attention) for the targets.

Run: `python benchmarks/flops.py` prints the expected GFLOP per step at the box and hopper shapes (ℓ uniform over
the candidate lengths, o uniform over its offsets, as the learner draws them).
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
               action_dim: int, max_num_segments: int = seg_lib.MAX_NUM_SEGMENTS,
               token_buckets: int = 1) -> dict[str, float]:
    """{"ours": …, "original": …} FLOPs of `step` ∈ critic_update, critic_grad, targets, policy at (ℓ, o); ours at
    the smallest of its `token_buckets` static budgets that holds (ℓ, o) (`--token-buckets` of the variant)."""
    extra_row = step != "policy"
    w = length + 1
    R = int(seg_lib.num_rows(T, length, offset, extra_row))
    budgets = seg_lib.token_buckets(T, max_num_segments, extra_row, token_buckets)
    N = min(n for n in budgets if n >= seg_lib.num_tokens(T, length, offset, extra_row))
    fwd = lambda states, actions, pairs: forward_flops(E, n_layer, state_dim, action_dim, B * states,  # noqa: E731
                                                       B * actions, B * pairs)
    rows = {"ours": fwd(R, N - R, (N // w) * w * w + (N % w) ** 2), "original": fwd(R, R * length, R * w * w)}
    v_pass = fwd(T, 0, 0)
    passes = {"critic_update": 1 + 3, "critic_grad": 3, "targets": 1, "policy": 2}[step]
    with_v = step in ("critic_update", "targets")
    return {side: passes * f + (v_pass if with_v else 0.0) for side, f in rows.items()}


SHAPES = {"box": dict(B=512, T=100, state_dim=29, action_dim=14),  # docs/critic.md: E 128, 2 layers
          "hopper": dict(B=256, T=250, state_dim=17, action_dim=6)}


def expected_gflop(step: str, task: str, E: int = 128, n_layer: int = 2, token_buckets: int = 1) -> dict[str, float]:
    """{"ours": …, "original": …} mean GFLOP of `step` over the learner's draws of (ℓ, o) at a task's shapes."""
    T = SHAPES[task]["T"]
    lengths = seg_lib.segment_lengths(T)
    total = {"ours": 0.0, "original": 0.0}
    for length in lengths:
        offsets = range(length) if T // length > 1 else [0]
        for offset in offsets:
            f = step_flops(step, length=int(length), offset=offset, E=E, n_layer=n_layer, token_buckets=token_buckets,
                           **SHAPES[task])
            for side in total:
                total[side] += f[side] / (len(lengths) * len(offsets) * 1e9)
    return total


if __name__ == "__main__":
    print("| task | step | original GFLOP | ours GFLOP, 1 token budget | ours / original | ours GFLOP, 3 token "
          "budgets | ours / original |\n|---|---|---:|---:|---:|---:|---:|")
    for task in SHAPES:
        for step in ("critic_update", "critic_grad", "targets", "policy"):
            g, g3 = expected_gflop(step, task), expected_gflop(step, task, token_buckets=3)
            print(f"| {task} | {step} | {g['original']:.1f} | {g['ours']:.1f} | {g['ours'] / g['original']:.2f} | "
                  f"{g3['ours']:.1f} | {g3['ours'] / g3['original']:.2f} |")
