"""Random segmentation of a trajectory into rows, and the packed token layout (spec: top_erl.md §3, §7(b)).

Index maps only; the critic and the targets use them.

## Segmentation (upstream `TopErlAgent.get_random_segments`)
With T steps and `max_num_segments` = M (25 upstream):
- candidate lengths ℓ = T // n for n = 1 … M; keep the unique values (`segment_lengths`) and draw one
  **uniformly over the unique lengths** (T = 100: 16 lengths 4 … 100; T = 250: 21 lengths 10 … 250).
  The number of segments is n = T // ℓ (for these ℓ, T // (T // ℓ) = ℓ).
- offset o = 0 if n = 1, else o ~ U{0, …, ℓ − 1}.
- rows: (T − o) // ℓ **full** rows start at o, o + ℓ, …; row r holds the action indices [c, c + ℓ) and the
  next-state index c + ℓ (c = o + rℓ).
- `extra_row=True` (critic updates, upstream `pad_additional`): one more row at c = o + ((T − o) // ℓ)·ℓ,
  whose action indices ≥ T are padding (masked); it is dropped when it would start at T (that is, when
  ℓ divides T − o). Then every action index o … T − 1 is in exactly one row. Without the extra row (policy
  updates) the tail [o + nℓ, T) that does not fill a whole row is not used.
- The head [0, o) is never covered: upstream starts the first row at o and does not add a partial row
  before it. Actions 0 … o − 1 take no part in that update (they are covered by other draws of o).
The segmentation is shared by all trajectories of a batch.

`sample_segmentation = sample_length_offset` (the random draw) + `make_segmentation(ℓ, o)` (deterministic),
so that tests and ablations can force any (ℓ, o). All shapes are static: a `Segmentation` has
R = `max_num_rows(T, M, extra_row)` row slots, of which the first `num_rows` are valid.

## Packed layout (§7(b))
All rows of a trajectory sit side by side in one token sequence of static length N (the budget): row r
occupies tokens [r(ℓ + 1), (r + 1)(ℓ + 1)): first its state token (time index c), then its ℓ action tokens
(time indices c … c + ℓ − 1, including padded ones ≥ T, as upstream feeds them to the position table).
Tokens after the last row are padding. Attention is causal inside a row and blocked across rows
(`attention_mask`, from `segment_id`).

The budget holds every token up to the last valid one: the maximum over every possible (ℓ, o) of
num_rows + min(num_rows·ℓ, T − o) (`num_tokens`; `token_budget`, found by enumeration). Only the extra row
has padded actions, and they come last in the sequence: no valid token attends to them (causal) and the loss
masks them, so those past N are not materialised, and the last row may be cut short by N. Upstream's rows are
num_rows·(ℓ + 1) tokens (`PackedLayout.num_row_tokens`; its critic MSE divides by B times that).

    T    M   extra_row  budget                      max rows   upstream's widest num_rows·(ℓ + 1)
    100  25  True       125  (ℓ = 4, o = 0: 25 + 100)  25         136  (ℓ = 33, o = 0: 4 × 34)
    100  25  False      125  (ℓ = 4: 25 × 5)           25         125
    250  25  True       275  (ℓ = 10, o = 0: 25 + 250) 25         336  (ℓ = 83, o = 0: 4 × 84)
    250  25  False      275  (ℓ = 10: 25 × 11)         25         275
"""

from __future__ import annotations

import functools

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from toperl_jax import chunks

MAX_NUM_SEGMENTS = 25  # upstream: torch.arange(1, 26)


# --------------------------------------------------------------------------------------------------------
# Static helpers (numpy; evaluated at trace time)
# --------------------------------------------------------------------------------------------------------

def _check_static(T: int, max_num_segments: int) -> None:
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"trajectory length T must be a positive int, got {T!r}")
    if not isinstance(max_num_segments, (int, np.integer)) or not 1 <= max_num_segments <= T:
        raise ValueError(f"max_num_segments must be an int in [1, T={T}], got {max_num_segments!r}")


@functools.lru_cache(maxsize=None)
def _lengths(T: int, max_num_segments: int) -> tuple[int, ...]:
    _check_static(T, max_num_segments)
    return tuple(sorted({T // n for n in range(1, max_num_segments + 1)}))


def segment_lengths(T: int, max_num_segments: int = MAX_NUM_SEGMENTS) -> np.ndarray:
    """Sorted unique candidate segment lengths {T // n : n = 1 … max_num_segments}, `[num_lengths]` int64."""
    return np.array(_lengths(int(T), int(max_num_segments)), dtype=np.int64)


def num_rows(T, length, offset, extra_row: bool):
    """Number of rows for segment length ℓ and offset o (numpy or jax integers, broadcasting).

    (T − o) // ℓ full rows, plus one when `extra_row`, unless that extra row would start at T.
    """
    full = (T - offset) // length
    if not extra_row:
        return full
    return full + 1 - ((offset + full * length) == T)


def num_tokens(T, length, offset, extra_row: bool):
    """Packed tokens up to the last valid one for segment length ℓ and offset o (numpy or jax integers,
    broadcasting): a state token per row and the row actions of index < T, num_rows + min(num_rows·ℓ, T − o).
    Without the extra row every action is valid: num_rows·(ℓ + 1)."""
    rows = num_rows(T, length, offset, extra_row)
    minimum = jnp.minimum if isinstance(rows, jax.Array) else np.minimum
    return rows + minimum(rows * length, T - offset)


def _all_choices(T: int, max_num_segments: int):
    """Every possible (ℓ, o) pair, as two int64 arrays."""
    ls, os_ = [], []
    for length in _lengths(T, max_num_segments):
        offsets = range(length) if T // length > 1 else [0]
        ls.extend([length] * len(offsets))
        os_.extend(offsets)
    return np.array(ls, np.int64), np.array(os_, np.int64)


@functools.lru_cache(maxsize=None)
def max_num_rows(T: int, max_num_segments: int = MAX_NUM_SEGMENTS, extra_row: bool = True) -> int:
    """Largest number of rows over every possible (ℓ, o): the static row count R of a `Segmentation`."""
    ls, os_ = _all_choices(int(T), int(max_num_segments))
    return int(np.max(num_rows(T, ls, os_, extra_row)))


@functools.lru_cache(maxsize=None)
def token_budget(T: int, max_num_segments: int = MAX_NUM_SEGMENTS, extra_row: bool = True) -> int:
    """Static packed-sequence length N: max over every possible (ℓ, o) of `num_tokens` (the extra row's padded
    action tokens past it are dropped)."""
    ls, os_ = _all_choices(int(T), int(max_num_segments))
    return int(np.max(num_tokens(T, ls, os_, extra_row)))


@functools.lru_cache(maxsize=None)
def token_buckets(T: int, max_num_segments: int = MAX_NUM_SEGMENTS, extra_row: bool = True,
                  num_buckets: int = 1) -> tuple[int, ...]:
    """Static token budgets N₁ < … < N_K = `token_budget(T, M, extra_row)` for a switch over packed lengths: a step
    runs at the smallest budget that holds its draw's `num_tokens` (`bucket_index`). Chosen to minimise the
    expected budget under the segmentation's draw (ℓ uniform over the unique lengths, then o uniform over
    0 … ℓ − 1, or 0 when T // ℓ = 1), by dynamic programming over the distinct token counts (exact). K = 1
    gives `(token_budget,)`; fewer than `num_buckets` when there are fewer distinct counts."""
    if not isinstance(num_buckets, (int, np.integer)) or num_buckets < 1:
        raise ValueError(f"num_buckets must be an int >= 1, got {num_buckets!r}")
    ls, os_ = _all_choices(int(T), int(max_num_segments))
    count = num_tokens(T, ls, os_, extra_row)
    per_length = {int(length): (1 if T // length == 1 else int(length)) for length in ls}
    prob = np.array([1.0 / len(per_length) / per_length[int(length)] for length in ls])
    values = np.unique(count)  # sorted distinct token counts; a budget is always one of them
    mass = np.array([prob[count == v].sum() for v in values])
    cum = np.concatenate([[0.0], np.cumsum(mass)])
    m, k_max = len(values), min(int(num_buckets), len(values))
    # cost[k][i]: least expected budget covering values[:i + 1] with k budgets, the largest values[i]
    cost = np.full((k_max + 1, m), np.inf)
    back = np.zeros((k_max + 1, m), np.int64)
    cost[1] = values * cum[1:]
    for k in range(2, k_max + 1):
        for i in range(m):
            for j in range(i):
                c = cost[k - 1][j] + values[i] * (cum[i + 1] - cum[j + 1])
                if c < cost[k][i]:
                    cost[k][i], back[k][i] = c, j
    budgets, i = [], m - 1
    for k in range(k_max, 0, -1):
        budgets.append(int(values[i]))
        i = back[k][i]
    return tuple(sorted(budgets))


def bucket_index(seg: "Segmentation", budgets: tuple[int, ...]) -> jax.Array:
    """[] int32, index of the smallest of the sorted static `budgets` that holds the segmentation's tokens
    (`num_tokens` of its traced ℓ and o)."""
    need = num_tokens(seg.T, seg.length, seg.offset, seg.extra_row)
    return jnp.searchsorted(jnp.asarray(budgets, jnp.int32), need.astype(jnp.int32)).astype(jnp.int32)


def token_switch(seg: "Segmentation", num_buckets: int, at_budget, *operands):
    """`at_budget(N)(*operands)` at the smallest of the `num_buckets` static token budgets N (`token_buckets`) that
    holds the drawn segmentation: the values of the full budget (the tokens past N are padding for this draw; a
    dropout mask is drawn at N), the work of N tokens. One compiled branch per budget; under `vmap` over seeds the
    seeds share the largest of their budgets (`chunks.switch(monotone=True)`)."""
    budgets = token_buckets(seg.T, seg.max_num_segments, seg.extra_row, num_buckets)
    if len(budgets) == 1:
        return at_budget(budgets[0])(*operands)
    branches = [at_budget(n) for n in budgets]
    return chunks.switch(branches, monotone=True)(bucket_index(seg, budgets), *operands)


def index_in_segments(T: int, length: int, offset: int, extra_row: bool) -> np.ndarray:
    """Per-row index map in upstream's layout (numpy, concrete ℓ and o): `[num_rows, ℓ + 1]` int64.

    Row r is [c, c + 1, …, c + ℓ − 1, c + ℓ] with c = o + rℓ: ℓ action indices, then the next-state index.
    Indices ≥ T are padding. Meant for per-row reference implementations in tests.
    """
    rows = int(num_rows(T, int(length), int(offset), extra_row))
    starts = offset + length * np.arange(rows, dtype=np.int64)
    return starts[:, None] + np.arange(length + 1, dtype=np.int64)[None, :]


# --------------------------------------------------------------------------------------------------------
# Segmentation (traced ℓ and o, static shapes)
# --------------------------------------------------------------------------------------------------------

@flax.struct.dataclass
class Segmentation:
    """One random segmentation, shared by a batch of trajectories. R = max_num_rows(T, M, extra_row).

    Attributes:
        length: [] int32, segment length ℓ.
        offset: [] int32, start of the first row o.
        num_rows: [] int32, number of valid rows (≤ R).
        row_start: [R] int32, c_r = o + rℓ (defined for every slot; slots r ≥ num_rows are not rows).
        row_valid: [R] bool, r < num_rows.
        next_state_index: [R] int32, c_r + ℓ (may be ≥ T: V̄ and r are 0 there).
        num_valid_actions: [R] int32, action indices of the row below T: clip(T − c_r, 0, ℓ), 0 for slots
            that are not rows.
        T: static trajectory length.
        max_num_segments: static M.
        extra_row: static, whether the padded extra row was added (critic updates).
    """

    length: jax.Array
    offset: jax.Array
    num_rows: jax.Array
    row_start: jax.Array
    row_valid: jax.Array
    next_state_index: jax.Array
    num_valid_actions: jax.Array
    T: int = flax.struct.field(pytree_node=False)
    max_num_segments: int = flax.struct.field(pytree_node=False)
    extra_row: bool = flax.struct.field(pytree_node=False)


def _concrete_int(x):
    try:
        return int(x)
    except jax.errors.ConcretizationTypeError:
        return None


def make_segmentation(length, offset, T: int, max_num_segments: int = MAX_NUM_SEGMENTS,
                      extra_row: bool = False) -> Segmentation:
    """Deterministic segmentation for a given segment length ℓ and offset o (scalars, may be traced).

    ℓ must be one of `segment_lengths(T, max_num_segments)` and 0 ≤ o < ℓ, o = 0 when T // ℓ = 1; this is
    checked when ℓ and o are concrete (traced values are trusted, as `sample_length_offset` produces them).
    """
    _check_static(T, max_num_segments)
    cl, co = _concrete_int(length), _concrete_int(offset)
    if cl is not None and cl not in _lengths(T, max_num_segments):
        raise ValueError(f"segment length {cl} is not one of segment_lengths({T}, {max_num_segments}) = "
                         f"{list(_lengths(T, max_num_segments))}")
    if cl is not None and co is not None and not (0 <= co < cl and (co == 0 or T // cl > 1)):
        raise ValueError(f"offset {co} is invalid for segment length {cl} (need 0 ≤ o < ℓ, o = 0 if T // ℓ = 1)")
    R = max_num_rows(T, max_num_segments, extra_row)
    length = jnp.asarray(length, jnp.int32)
    offset = jnp.asarray(offset, jnp.int32)
    chex.assert_shape((length, offset), ())
    rows = num_rows(T, length, offset, extra_row).astype(jnp.int32)
    r = jnp.arange(R, dtype=jnp.int32)
    start = offset + r * length
    valid = r < rows
    return Segmentation(length=length, offset=offset, num_rows=rows, row_start=start, row_valid=valid,
                        next_state_index=start + length,
                        num_valid_actions=jnp.where(valid, jnp.clip(T - start, 0, length), 0),
                        T=int(T), max_num_segments=int(max_num_segments), extra_row=bool(extra_row))


def sample_length_offset(key: jax.Array, T: int, max_num_segments: int = MAX_NUM_SEGMENTS):
    """Draw (ℓ, o): ℓ uniform over the unique candidate lengths; o = 0 if T // ℓ = 1 else o ~ U{0 … ℓ − 1}.

    Returns two [] int32 arrays.
    """
    lengths = jnp.asarray(segment_lengths(T, max_num_segments), jnp.int32)
    k_len, k_off = jax.random.split(key)
    length = lengths[jax.random.randint(k_len, (), 0, lengths.shape[0])]
    offset = jax.random.randint(k_off, (), 0, length, dtype=jnp.int32)
    offset = jnp.where(T // length > 1, offset, 0)
    return length, offset


def sample_segmentation(key: jax.Array, T: int, max_num_segments: int = MAX_NUM_SEGMENTS,
                        extra_row: bool = False) -> Segmentation:
    """A random segmentation (spec §3): `make_segmentation(*sample_length_offset(key, T, M), ...)`.

    Use `extra_row=True` for critic updates and `False` for policy updates.
    """
    length, offset = sample_length_offset(key, T, max_num_segments)
    return make_segmentation(length, offset, T, max_num_segments, extra_row)


def draw_segmentation(key: jax.Array, T: int, max_num_segments: int = MAX_NUM_SEGMENTS, extra_row: bool = False,
                      fixed_length: int | None = None) -> Segmentation:
    """`sample_segmentation`, or the fixed-length ablation: `fixed_length` (one of T // n) with a random offset."""
    if fixed_length is None:
        return sample_segmentation(key, T, max_num_segments, extra_row)
    offset = jax.random.randint(key, (), 0, fixed_length, dtype=jnp.int32) if T // fixed_length > 1 else 0
    return make_segmentation(fixed_length, offset, T, max_num_segments, extra_row)


# --------------------------------------------------------------------------------------------------------
# Packed layout
# --------------------------------------------------------------------------------------------------------

@flax.struct.dataclass
class PackedLayout:
    """Per-token description of the packed sequence, N = budget tokens. Shared by the batch.

    Attributes:
        time_index: [N] int32, absolute time index: c for the state token of a row starting at c, k for the
            token of action k (also for padded actions k ≥ T); 0 for padding tokens.
        is_state: [N] bool, state token of a row.
        segment_id: [N] int32, row number, −1 for padding tokens after the last row.
        valid: [N] bool, token of a row whose time index is < T (False for padding tokens and for padded
            action tokens k ≥ T).
        row: [N] int32, row number clipped to [0, R − 1] (safe for gathers; use `segment_id` for masks).
        pos_in_row: [N] int32, 0 for the state token, l for the l-th action token (l = 1 … ℓ); 0 for padding.
        in_row: [N] bool, segment_id ≥ 0.
        num_row_tokens: [] int32, num_rows·(ℓ + 1): the tokens of upstream's per-row layout, padded actions
            included, also those past the budget that the packed sequence drops (upstream's critic MSE divides by
            B times this).
        width_index: [] int32, index of the row width ℓ + 1 in `widths`.
        widths: static, ℓ + 1 for every candidate length ℓ (`segment_lengths`).
    """

    time_index: jax.Array
    is_state: jax.Array
    segment_id: jax.Array
    valid: jax.Array
    row: jax.Array
    pos_in_row: jax.Array
    in_row: jax.Array
    num_row_tokens: jax.Array
    width_index: jax.Array
    widths: tuple[int, ...] = flax.struct.field(pytree_node=False)

    @property
    def rows(self) -> tuple[tuple[int, ...], jax.Array]:
        """`(widths, width_index)`: rows of `widths[width_index]` tokens from token 0 (the last one possibly cut
        short by N), padding after them; the critic then attends inside each row only
        (`TransformerCritic.tokens(rows=...)`)."""
        return self.widths, self.width_index

    @property
    def is_action(self) -> jax.Array:
        """[N] bool, action token of a row (padded actions included; `valid` excludes them)."""
        return self.in_row & ~self.is_state


def packed_layout(seg: Segmentation, T: int | None = None, budget: int | None = None) -> PackedLayout:
    """Packed token layout of a segmentation.

    Args:
        seg: the segmentation.
        T: trajectory length (optional; must equal `seg.T`).
        budget: static N (default `token_budget(seg.T, seg.max_num_segments, seg.extra_row)`, which every
            possible segmentation fits). A smaller budget must hold this segmentation's `num_tokens`: checked
            when ℓ and o are concrete, trusted when traced (a bucket of `token_buckets` chosen by
            `bucket_index`); tokens past it are padding for such a draw, so the values do not change.

    Returns:
        `PackedLayout` with [N] arrays; token t belongs to row t // (ℓ + 1) at position t mod (ℓ + 1). Tokens
        t ≥ N do not exist (only padded actions of the extra row fall there).
    """
    if T is not None and T != seg.T:
        raise ValueError(f"T={T} does not match the segmentation's T={seg.T}")
    T = seg.T
    N = token_budget(T, seg.max_num_segments, seg.extra_row) if budget is None else int(budget)
    length, offset = _concrete_int(seg.length), _concrete_int(seg.offset)
    if length is not None and offset is not None and N < (need := num_tokens(T, length, offset, seg.extra_row)):
        raise ValueError(f"token budget {N} < {need} tokens of the segmentation (T={T}, ℓ={length}, o={offset}, "
                         f"extra_row={seg.extra_row})")
    R = seg.row_start.shape[0]
    t = jnp.arange(N, dtype=jnp.int32)
    stride = seg.length + 1
    row = t // stride
    pos = t % stride
    in_row = row < seg.num_rows
    time = seg.offset + row * seg.length + jnp.maximum(pos - 1, 0)
    time = jnp.where(in_row, time, 0)
    lengths = _lengths(T, seg.max_num_segments)
    return PackedLayout(time_index=time, is_state=in_row & (pos == 0), segment_id=jnp.where(in_row, row, -1),
                        valid=in_row & (time < T), row=jnp.minimum(row, R - 1),
                        pos_in_row=jnp.where(in_row, pos, 0), in_row=in_row,
                        num_row_tokens=(seg.num_rows * stride).astype(jnp.int32),
                        width_index=jnp.searchsorted(jnp.asarray(lengths, jnp.int32), seg.length).astype(jnp.int32),
                        widths=tuple(length + 1 for length in lengths))


def attention_mask(layout: PackedLayout) -> jax.Array:
    """[N, N] bool, True where query token i may attend to key token j: same row and j ≤ i.

    Block-diagonal causal. Padding tokens attend only to themselves (so that no softmax row is empty);
    no row token ever attends to padding or to another row.
    """
    seg = layout.segment_id
    n = seg.shape[0]
    i = jnp.arange(n)
    same = (seg[:, None] == seg[None, :]) & (seg[:, None] >= 0)
    return (same & (i[None, :] <= i[:, None])) | (i[:, None] == i[None, :])


def token_position(seg: Segmentation, r, l):
    """Token index of row r, position l (0 = state, 1 … ℓ = actions): r(ℓ + 1) + l. Broadcasts."""
    return r * (seg.length + 1) + l


def row_token_index(seg: Segmentation, budget: int | None = None) -> jax.Array:
    """Inverse map `[R, T + 1]` int32: token index of (row r, position l), −1 where r ≥ num_rows or l > ℓ, or
    where the token would lie at or past the budget N (a padded action the packed sequence drops).

    The width T + 1 holds the longest row (ℓ = T); for a row r and l ≤ ℓ, the token has time index
    c_r + max(l − 1, 0). `budget`: N (default `token_budget(seg.T, seg.max_num_segments, seg.extra_row)`).
    """
    N = token_budget(seg.T, seg.max_num_segments, seg.extra_row) if budget is None else int(budget)
    R = seg.row_start.shape[0]
    r = jnp.arange(R, dtype=jnp.int32)[:, None]
    l = jnp.arange(seg.T + 1, dtype=jnp.int32)[None, :]
    tok = token_position(seg, r, l)
    exists = (r < seg.num_rows) & (l <= seg.length) & (tok < N)
    return jnp.where(exists, tok, -1)


def unpack_rows(x: jax.Array, seg: Segmentation, feature_dims: int = 0) -> tuple[jax.Array, jax.Array]:
    """Per-token values → per-row values, for comparing with a per-row implementation.

    Args:
        x: [..., N, *F] per-token values, with `feature_dims` = len(F) trailing feature axes.
        seg: the segmentation.
        feature_dims: number of trailing feature axes after the token axis.

    Returns:
        rows [..., R, T + 1, *F]: entry (r, l) is the value at row r, position l (0 = state token);
        mask [R, T + 1] bool: the slot has a token (r < num_rows, l ≤ ℓ and its token index < N); other slots
        are 0. Padded actions (index ≥ T) within N are kept and not masked here (use `seg.num_valid_actions`
        for that); those past N are not in the packed sequence.
    """
    axis = x.ndim - 1 - feature_dims
    idx = row_token_index(seg, x.shape[axis])
    mask = idx >= 0
    rows = jnp.take(x, jnp.maximum(idx, 0), axis=axis)
    m = mask.reshape(mask.shape + (1,) * feature_dims)
    return jnp.where(m, rows, 0), mask


def gather_tokens(layout: PackedLayout, states: jax.Array, actions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-token inputs of a batch of trajectories.

    Args:
        layout: packed layout, [N] arrays.
        states: [..., T, S].
        actions: [..., T, A].

    Returns:
        state_tok [..., N, S]: the row's state s_c at state tokens, 0 elsewhere;
        action_tok [..., N, A]: action a_k at valid action tokens (k < T), 0 elsewhere (padded actions are
        zero, as upstream pads them). With bias-free encoders, `enc_s(state_tok) + enc_a(action_tok)` is the
        token embedding.
    """
    T = states.shape[-2]
    chex.assert_equal_shape_prefix((states, actions), states.ndim - 1)
    idx = jnp.clip(layout.time_index, 0, T - 1)
    s = jnp.take(states, idx, axis=-2)
    a = jnp.take(actions, idx, axis=-2)
    s = jnp.where(layout.is_state[:, None], s, 0)
    a = jnp.where((layout.is_action & layout.valid)[:, None], a, 0)
    return s, a


# ---------------------------------------------------------------------------------------------------------------
# Per-token quantities of the packed layout (targets and losses are written with these)


def action_times(init_time: jax.Array, time_index: jax.Array, dt: float) -> jax.Array:
    """t_k = init_time + (k + 1)·dt: `init_time [B]`, `time_index [N]` → `[B, N]`."""
    return init_time[:, None] + (time_index[None, :].astype(init_time.dtype) + 1.0) * dt


def reward_weights(seg: Segmentation, layout: PackedLayout, discount: float) -> jax.Array:
    """`[N, T]` weights W with (rewards @ Wᵀ)[t] = Σ_{j=c…k} γ^{j−c} r_j at an action token (row start c,
    time k); 0 rows at state and packing tokens. Columns stop at T, so nothing beyond the episode can enter."""
    T = seg.T
    c = seg.row_start[layout.row][:, None]  # [N, 1]
    k = layout.time_index[:, None]
    j = jnp.arange(T, dtype=jnp.int32)[None, :]
    inside = layout.is_action[:, None] & (j >= c) & (j <= k)
    power = jnp.power(jnp.float32(discount), jnp.maximum(j - c, 0).astype(jnp.float32))
    return jnp.where(inside, power, 0.0)


def n_step_returns(seg: Segmentation, layout: PackedLayout, rewards: jax.Array, v_bar: jax.Array,
                   discount: float) -> jax.Array:
    """Q-token targets of spec §4 at every action token of time k in a row starting at c, `[b, N]`:
    Σ_{j=c…k} γ^{j−c} r_j + γ^{k+1−c} V̄(s_{k+1}), with V̄ = 0 at k + 1 ≥ T. `rewards [b, T]`, `v_bar [b, T]`.
    Also at state and padded tokens (mask them); nothing at or beyond T can enter."""
    T = seg.T
    nxt = layout.time_index + 1
    v_nxt = jnp.where(nxt < T, v_bar[:, jnp.minimum(nxt, T - 1)], 0.0)
    boot = jnp.power(jnp.float32(discount), (nxt - seg.row_start[layout.row]).astype(jnp.float32)) * v_nxt
    return rewards.astype(jnp.float32) @ reward_weights(seg, layout, discount).T + boot


def last_valid_token(seg: Segmentation, layout: PackedLayout) -> jax.Array:
    """`[N]` int: for each token, the token index of its row's last valid action (position min(ℓ, T − c))."""
    return token_position(seg, layout.row, seg.num_valid_actions[layout.row])


def sum_rows(x: jax.Array, layout: PackedLayout, num_rows: int) -> jax.Array:
    """Per-token values `[..., N]` summed per row → `[..., R]` (packing tokens excluded)."""
    one_hot = (layout.row[:, None] == jnp.arange(num_rows)[None, :]) & layout.in_row[:, None]  # [N, R]
    return jnp.einsum("...n,nr->...r", x, one_hot.astype(x.dtype))
