"""Random segmentation and packed layout against a plain numpy per-row reference of spec §3."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from toperl_jax import segments as sg

M = 25


# ---------------------------------------------------------------- reference (written from the spec text)

def ref_rows(T, length, offset, extra_row):
    """Row starts: full rows from o while they fit, then (critic) one padded row if it starts before T."""
    starts, c = [], offset
    while c + length <= T:
        starts.append(c)
        c += length
    if extra_row and c < T:
        starts.append(c)
    return starts


def ref_tokens(T, length, offset, extra_row, N):
    """Packed per-token arrays built by concatenating the rows one after another, cut at N (only padded actions
    k ≥ T may lie past it), then padded to N. `used`: the tokens up to the last valid one."""
    time, is_state, seg_id, pos = [], [], [], []
    for r, c in enumerate(ref_rows(T, length, offset, extra_row)):
        time += [c] + list(range(c, c + length))  # state token at c, then actions c … c + ℓ − 1
        is_state += [True] + [False] * length
        seg_id += [r] * (length + 1)
        pos += list(range(length + 1))
    assert all(t >= T and not s for t, s in zip(time[N:], is_state[N:]))
    time, is_state, seg_id, pos = time[:N], is_state[:N], seg_id[:N], pos[:N]
    used = 1 + max(i for i, t in enumerate(time) if t < T)
    pad = N - len(time)
    time = np.array(time + [0] * pad)
    seg_id = np.array(seg_id + [-1] * pad)
    valid = (seg_id >= 0) & (time < T)
    return dict(time_index=time, is_state=np.array(is_state + [False] * pad, bool), segment_id=seg_id,
                valid=valid, pos_in_row=np.array(pos + [0] * pad), in_row=seg_id >= 0), used


def all_choices(T):
    out = []
    for length in sorted({T // n for n in range(1, M + 1)}):
        offsets = range(length) if T // length > 1 else [0]
        out += [(length, o) for o in offsets]
    return out


@functools.lru_cache(maxsize=None)
def batched_layout(T, extra_row):
    """jit(vmap(make_segmentation + packed_layout + row_token_index)) over arrays of (ℓ, o)."""

    def one(length, offset):
        seg = sg.make_segmentation(length, offset, T, M, extra_row)
        return seg, sg.packed_layout(seg, T), sg.row_token_index(seg)

    return jax.jit(jax.vmap(one))


# ---------------------------------------------------------------- static helpers

def test_lengths_and_budgets():
    assert list(sg.segment_lengths(100, M)) == [4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 20, 25, 33, 50, 100]
    assert len(sg.segment_lengths(250, M)) == 21 and sg.segment_lengths(250, M)[0] == 10
    for T in (100, 250):
        for length in sg.segment_lengths(T, M):
            assert T // (T // length) == length  # n = T // ℓ reproduces ℓ
        for extra in (True, False):
            counts = [len(ref_rows(T, ln, o, extra)) for ln, o in all_choices(T)]
            # state tokens and the actions below T: the extra row's padded actions past them are dropped
            tokens = [sum(1 + min(ln, T - c) for c in ref_rows(T, ln, o, extra)) for ln, o in all_choices(T)]
            assert sg.max_num_rows(T, M, extra) == max(counts)
            assert sg.token_budget(T, M, extra) == max(tokens)
    # ℓ = 4, o = 0: 25 rows hold 100 actions. Upstream's rows of ℓ = 33, o = 0 (4 × 34 = 136 tokens; 4 × 84 = 336
    # for T = 250) end in padded actions that no valid token sees: the budget no longer holds them.
    assert sg.token_budget(100, M, True) == 125 == 25 + 100
    assert sg.token_budget(250, M, True) == 275 == 25 + 250
    assert sg.token_budget(100, M, False) == 125 and sg.token_budget(250, M, False) == 275
    assert sg.max_num_rows(100, M) == sg.max_num_rows(250, M) == 25


def test_known_cases_upstream_semantics():
    # ℓ = 33 (n = 3), T = 100.
    assert ref_rows(100, 33, 0, True) == [0, 33, 66, 99]  # extra row holds action 99 + 32 padded
    assert ref_rows(100, 33, 1, True) == [1, 34, 67]  # extra row would start at T = 100: dropped
    assert ref_rows(100, 33, 5, False) == [5, 38]  # tail 71 … 99 unused without the extra row
    assert ref_rows(100, 33, 5, True) == [5, 38, 71]
    assert ref_rows(100, 100, 0, True) == [0]  # n = 1: the extra row would start at T
    assert ref_rows(100, 50, 49, False) == [49]
    for T, length, o, extra in [(100, 33, 0, True), (100, 33, 1, True), (100, 33, 5, False), (100, 4, 3, True),
                                (250, 83, 0, True), (250, 10, 9, False)]:
        idx = sg.index_in_segments(T, length, o, extra)
        starts = ref_rows(T, length, o, extra)
        np.testing.assert_array_equal(idx, np.array([list(range(c, c + length + 1)) for c in starts]))


@pytest.mark.parametrize("T", [100, 250])
@pytest.mark.parametrize("extra_row", [True, False])
def test_packed_layout_every_length_and_offset(T, extra_row):
    choices = all_choices(T)  # every ℓ, every valid offset
    ls = np.array([c[0] for c in choices], np.int32)
    os_ = np.array([c[1] for c in choices], np.int32)
    seg, lay, inv = jax.device_get(batched_layout(T, extra_row)(ls, os_))
    N = sg.token_budget(T, M, extra_row)
    R = sg.max_num_rows(T, M, extra_row)
    assert lay.time_index.shape == (len(choices), N) and inv.shape == (len(choices), R, T + 1)
    max_used = 0
    for i, (length, o) in enumerate(choices):
        ref, used = ref_tokens(T, length, o, extra_row, N)
        max_used = max(max_used, used)
        for name, want in ref.items():
            np.testing.assert_array_equal(getattr(lay, name)[i], want, err_msg=f"{name} ℓ={length} o={o}")
        starts = ref_rows(T, length, o, extra_row)
        nr = len(starts)
        assert seg.num_rows[i] == nr and seg.length[i] == length and seg.offset[i] == o
        np.testing.assert_array_equal(seg.row_start[i][:nr], starts)
        np.testing.assert_array_equal(seg.row_valid[i], np.arange(R) < nr)
        np.testing.assert_array_equal(seg.next_state_index[i][:nr], np.array(starts) + length)
        np.testing.assert_array_equal(seg.num_valid_actions[i][:nr], [min(length, T - c) for c in starts])
        assert not seg.num_valid_actions[i][nr:].any()
        assert lay.num_row_tokens[i] == nr * (length + 1)  # upstream's rows, padded actions included
        # Inverse map: (row r, position l) → token with the right time index, row, position and validity;
        # −1 past the budget (padded actions only).
        for r, c in enumerate(starts):
            tok = r * (length + 1) + np.arange(length + 1)
            times = np.array([c] + list(range(c, c + length)))
            kept = tok < N
            assert (times[~kept] >= T).all()
            np.testing.assert_array_equal(inv[i, r, : length + 1], np.where(kept, tok, -1))
            tok, times = tok[kept], times[kept]
            np.testing.assert_array_equal(lay.time_index[i][tok], times)
            np.testing.assert_array_equal(lay.segment_id[i][tok], r)
            np.testing.assert_array_equal(lay.pos_in_row[i][tok], np.arange(len(tok)))
            np.testing.assert_array_equal(lay.valid[i][tok], times < T)
            assert (inv[i, r, length + 1:] == -1).all()
        assert (inv[i, nr:] == -1).all()
        # Coverage: actions o … T − 1 exactly once with the extra row; the head [0, o) never.
        acts = lay.time_index[i][lay.valid[i] & ~lay.is_state[i]]
        assert len(set(acts.tolist())) == len(acts)
        if extra_row:
            assert sorted(acts.tolist()) == list(range(o, T))
        else:
            assert sorted(acts.tolist()) == list(range(o, o + (T - o) // length * length))
    assert max_used == N  # the budget is tight


def test_gather_tokens_attention_and_unpack():
    T, S, A, B = 100, 3, 4, 2
    rng = np.random.default_rng(0)
    states = rng.normal(size=(B, T, S)).astype(np.float32)
    actions = rng.normal(size=(B, T, A)).astype(np.float32)
    N = sg.token_budget(T, M, True)

    @jax.jit
    def run(length, offset, s, a):
        seg = sg.make_segmentation(length, offset, T, M, extra_row=True)
        lay = sg.packed_layout(seg, T, N)
        st, at = sg.gather_tokens(lay, s, a)
        rows, mask = sg.unpack_rows(st, seg, feature_dims=1)
        tok_time, _ = sg.unpack_rows(lay.time_index, seg)
        return lay, sg.attention_mask(lay), st, at, rows, mask, tok_time

    for length, o in [(33, 0), (33, 7), (4, 3), (100, 0), (50, 49)]:
        lay, mask, st, at, rows, rmask, tok_time = jax.device_get(run(length, o, states, actions))
        starts = ref_rows(T, length, o, True)
        # Per-row reference inputs (upstream: c_state = states[:, start], actions zero-padded past T).
        padded = np.concatenate([actions, np.zeros((B, length, A), np.float32)], axis=1)
        for r, c in enumerate(starts):
            tok = r * (length + 1)
            n = min(length, N - tok - 1)  # action tokens of the row within the budget (fewer: padded ones cut)
            np.testing.assert_array_equal(st[:, tok], states[:, c])
            np.testing.assert_array_equal(at[:, tok], 0)
            np.testing.assert_array_equal(at[:, tok + 1: tok + 1 + n], padded[:, c: c + n])
            np.testing.assert_array_equal(st[:, tok + 1: tok + 1 + n], 0)
            np.testing.assert_array_equal(rows[:, r, 0], states[:, c])
            np.testing.assert_array_equal(tok_time[r, : n + 1], [c] + list(range(c, c + n)))
            assert rmask[r, : n + 1].all() and not rmask[r, n + 1:].any()
        used = min(len(starts) * (length + 1), N)
        np.testing.assert_array_equal(st[:, used:], 0)
        np.testing.assert_array_equal(at[:, used:], 0)
        assert not rmask[len(starts):].any()
        # Attention: block-diagonal causal from the rows; padding tokens see only themselves.
        want = np.eye(N, dtype=bool)
        for r in range(len(starts)):
            lo, hi = r * (length + 1), min((r + 1) * (length + 1), N)
            want[lo:hi, lo:hi] = np.tril(np.ones((hi - lo, hi - lo), bool))
        np.testing.assert_array_equal(mask, want)


def test_sampling_distribution():
    T = 100
    lengths = sg.segment_lengths(T, M)
    keys = jax.random.split(jax.random.key(0), 48000)
    ls, os_ = jax.device_get(jax.jit(jax.vmap(lambda k: sg.sample_length_offset(k, T, M)))(keys))
    # ℓ uniform over the 16 unique lengths (not over n: P(ℓ = 4) would be 2/25 then).
    counts = np.array([(ls == ln).sum() for ln in lengths])
    assert counts.sum() == len(keys)
    assert stats.chisquare(counts).pvalue > 1e-3
    for ln in lengths:
        o = os_[ls == ln]
        if T // ln == 1:
            assert (o == 0).all()
        else:
            assert o.min() >= 0 and o.max() < ln
            assert stats.chisquare(np.bincount(o, minlength=ln)).pvalue > 1e-4, ln


def test_jit_no_retrace_and_errors():
    T = 250
    traces = []

    @jax.jit
    def step(key):
        traces.append(1)
        seg = sg.sample_segmentation(key, T, M, extra_row=True)
        return seg, sg.packed_layout(seg, T, sg.token_budget(T, M, True))

    seen = set()
    for i in range(20):
        seg, lay = step(jax.random.key(i))
        assert lay.time_index.shape == (275,)
        seen.add(int(seg.length))
        assert int(lay.num_row_tokens) == int(seg.num_rows) * (int(seg.length) + 1)
        assert int(lay.in_row.sum()) == min(int(lay.num_row_tokens), 275)
    assert len(traces) == 1 and len(seen) > 3
    with pytest.raises(ValueError, match="max_num_segments"):
        sg.segment_lengths(10, 11)
    with pytest.raises(ValueError, match="segment length"):
        sg.make_segmentation(32, 0, 100, M)
    with pytest.raises(ValueError, match="offset"):
        sg.make_segmentation(100, 3, 100, M)
    with pytest.raises(ValueError, match="budget 103 < 104 tokens"):  # 4 rows + 100 actions
        sg.packed_layout(sg.make_segmentation(33, 0, 100, M, True), 100, 103)
    assert sg.packed_layout(sg.make_segmentation(33, 0, 100, M, True), 100, 104).in_row.all()
    # Policy segmentation (no extra row) has its own, smaller static budget.
    lay = sg.packed_layout(sg.make_segmentation(jnp.int32(4), jnp.int32(0), 100, M, False))
    assert lay.time_index.shape == (125,) and bool(lay.in_row.all())


# ---------------------------------------------------------------- token buckets

@pytest.mark.parametrize("T", [100, 40])
@pytest.mark.parametrize("extra_row", [True, False])
def test_token_buckets_minimise_the_expected_budget(T, extra_row):
    """`token_buckets` against brute force: every choice of the K − 1 smaller budgets among the token counts of the
    reference layout (`ref_tokens`), each (ℓ, o) weighted by the draw (ℓ uniform over the unique lengths, o uniform)."""
    import itertools

    choices = all_choices(T)
    lengths = sorted({length for length, _ in choices})
    prob = np.array([1 / len(lengths) / (length if T // length > 1 else 1) for length, _ in choices])
    assert prob.sum() == pytest.approx(1.0)
    N = sg.token_budget(T, M, extra_row)
    need = np.array([ref_tokens(T, length, o, extra_row, N)[1] for length, o in choices])
    values = np.unique(need)
    assert values[-1] == N and sg.token_buckets(T, M, extra_row, 1) == (N,)
    for K in (2, 3):
        best = min(sum(p * min(b for b in (*c, N) if b >= n) for p, n in zip(prob, need))
                   for c in itertools.combinations(values[:-1], K - 1))
        got = sg.token_buckets(T, M, extra_row, K)
        assert len(got) == K and got[-1] == N and list(got) == sorted(set(got))
        cost = sum(p * min(b for b in got if b >= n) for p, n in zip(prob, need))
        assert cost == pytest.approx(best, rel=1e-12), (K, got)
    assert sg.token_buckets(T, M, extra_row, 10_000) == tuple(int(v) for v in values)  # one budget per count
    with pytest.raises(ValueError, match="num_buckets"):
        sg.token_buckets(T, M, extra_row, 0)


@pytest.mark.parametrize("extra_row", [True, False])
def test_bucket_index_picks_the_smallest_budget_that_holds_the_draw(extra_row):
    """For every (ℓ, o) of T = 100: the picked budget holds the draw's tokens and the next smaller one does not,
    and the layout at that budget is the full budget's, cut where only padding follows."""
    T = 100
    budgets = sg.token_buckets(T, M, extra_row, 3)
    N = budgets[-1]
    choices = all_choices(T)
    ls = np.array([c[0] for c in choices], np.int32)
    os_ = np.array([c[1] for c in choices], np.int32)

    @jax.jit
    @jax.vmap
    def picks(length, offset):
        seg = sg.make_segmentation(length, offset, T, M, extra_row)
        index = sg.bucket_index(seg, budgets)
        small = sg.packed_layout(seg, T, budgets[0])  # traced ℓ, o: trusted, even where it does not hold the draw
        return index, sg.packed_layout(seg, T), small

    index, full, small = jax.device_get(picks(ls, os_))
    for i, (length, o) in enumerate(choices):
        need = ref_tokens(T, length, o, extra_row, N)[1]
        k = int(index[i])
        assert budgets[k] >= need and (k == 0 or budgets[k - 1] < need), (length, o, k)
        assert not full.valid[i, need:].any()  # past the draw's tokens: padding or the extra row's padded actions
        if k == 0:
            for name in ("time_index", "is_state", "segment_id", "valid", "pos_in_row", "in_row"):
                np.testing.assert_array_equal(getattr(small, name)[i], getattr(full, name)[i, :budgets[0]])
    assert set(index.tolist()) == {0, 1, 2}
