"""Transformer critic: parameter count and init against upstream, causality, absolute positions, packed vs
per-row equivalence, an independent numpy forward pass, padding safety, optimiser mask, and a small fit."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import erf

from toperl_jax import segments as seg_lib
from toperl_jax.critic import (
    TransformerCritic,
    apply_ensemble,
    init_critic,
    init_ensemble,
    layer_norm,
    make_optimizer,
    weight_decay_mask,
)

S, A = 5, 3  # small state / action dims for the fast tests
TINY = dict(state_dim=S, action_dim=A, n_embd=16, n_layer=2, n_head=4, block_size=64)


@partial(jax.jit, static_argnums=0, static_argnames=("method", "deterministic"))
def _apply(critic, params, *args, **kwargs):
    """`critic.apply`, jitted (op-by-op dispatch of a transformer is slow on CPU)."""
    return critic.apply(params, *args, **kwargs)


_apply_ensemble = jax.jit(apply_ensemble, static_argnums=0, static_argnames=("method",))


def _leaves(params):
    return {"/".join(str(k.key) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(params)}


def _rows(key, batch, L, c0=3):
    """Random rows: states [B, S], actions [B, L, A], state_idx [B], action_idx [B, L] (row b starts at c0 + b)."""
    ks, ka = jax.random.split(key)
    states = jax.random.normal(ks, (batch, S))
    actions = jax.random.normal(ka, (batch, L, A))
    state_idx = c0 + jnp.arange(batch)
    action_idx = state_idx[:, None] + jnp.arange(L)[None]
    return states, actions, state_idx, action_idx


@pytest.fixture(scope="module")
def tiny():
    critic = TransformerCritic(**TINY)
    return critic, init_critic(critic, jax.random.key(0))


# --------------------------------------------------------------------------------------------------------------
# numpy reference


def np_forward(params, cfg, states, actions, is_state, positions, mask):
    """Plain numpy forward pass from the param tree. Inputs `[N, S]`, `[N, A]`, `[N]`, `[N]`, `[N, N]` → `[N]`."""
    p = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64), params["params"])
    E, H, nl = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    use_ln = cfg.get("use_layer_norm", True)

    def ln(x, q):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        y = (x - mu) / np.sqrt(var + 1e-5) * q["scale"]
        return y + q["bias"] if "bias" in q else y

    def lin(x, q):
        y = x @ q["kernel"]
        return y + q["bias"] if "bias" in q else y

    x = np.where(is_state[:, None], states @ p["state_encoder"]["kernel"], actions @ p["action_encoder"]["kernel"])
    x = x + p["pos_enc"]["embedding"][positions]
    N, D = x.shape[0], E // H
    for i in range(nl):
        b = p[f"h_{i}"]
        h = ln(x, b["ln_1"]) if use_ln else x
        q, k, v = np.split(lin(h, b["attn"]["c_attn"]), 3, axis=-1)
        out = np.zeros((N, E))
        for hd in range(H):
            sl = slice(hd * D, (hd + 1) * D)
            logits = q[:, sl] @ k[:, sl].T / math.sqrt(D)
            logits = np.where(mask, logits, -np.inf)
            w = np.exp(logits - logits.max(-1, keepdims=True))
            w = w / w.sum(-1, keepdims=True)
            out[:, sl] = w @ v[:, sl]
        x = x + lin(out, b["attn"]["c_proj"])
        h = ln(x, b["ln_2"]) if use_ln else x
        h = lin(h, b["mlp"]["c_fc"])
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = x + lin(h, b["mlp"]["c_proj"])
    if use_ln:
        x = ln(x, p["ln_f"])
    return (x @ p["output_layer"]["kernel"])[:, 0]


def np_row(params, cfg, state, actions, state_idx, action_idx):
    """Reference for one row: `[S]`, `[L, A]`, int, `[L]` → `[1 + L]`."""
    L = actions.shape[0]
    states = np.zeros((1 + L, S)); states[0] = state
    acts = np.zeros((1 + L, A)); acts[1:] = actions
    is_state = np.arange(1 + L) == 0
    positions = np.concatenate([[state_idx], action_idx]).astype(int)
    return np_forward(params, cfg, states, acts, is_state, positions, np.tril(np.ones((1 + L, 1 + L), bool)))


def pack(rows, n_tokens):
    """Lay rows `[(state [S], actions [L, A], state_idx, action_idx [L])]` side by side in one sequence of
    n_tokens, then padding (segment id -1, a junk position). Returns the `tokens` inputs and each row's slice."""
    states, actions = np.zeros((n_tokens, S)), np.zeros((n_tokens, A))
    is_state = np.zeros(n_tokens, bool)
    positions = np.full(n_tokens, 10_000)  # out of the table: must be ignored at padding
    seg = np.full(n_tokens, -1)
    slices, t = [], 0
    for r, (s, a, si, ai) in enumerate(rows):
        L = a.shape[0]
        states[t] = s; is_state[t] = True; actions[t + 1:t + 1 + L] = a
        positions[t] = si; positions[t + 1:t + 1 + L] = ai
        seg[t:t + 1 + L] = r
        slices.append(slice(t, t + 1 + L))
        t += 1 + L
    assert t <= n_tokens
    inputs = tuple(jnp.asarray(v) for v in (states, actions, is_state, positions, seg))
    return inputs, slices


# --------------------------------------------------------------------------------------------------------------
# structure and init


def test_parameter_count_matches_upstream():
    critic = TransformerCritic(state_dim=29, action_dim=14)
    params = jax.eval_shape(lambda k: init_critic(critic, k), jax.random.key(0))
    assert sum(v.size for v in jax.tree_util.tree_leaves(params)) == 533_504


def test_init_statistics():
    critic = TransformerCritic(state_dim=29, action_dim=14)  # defaults: E = 128, 2 layers
    leaves = _leaves(init_critic(critic, jax.random.key(1)))
    resid_std = 0.02 / math.sqrt(2 * critic.n_layer)
    for name, v in leaves.items():
        if name.endswith("c_proj/kernel"):
            assert abs(v.std() / resid_std - 1) < 0.05, name
        elif name.endswith("kernel") or name.endswith("embedding"):
            assert abs(v.std() / 0.02 - 1) < 0.1, name
        elif name.endswith("bias"):
            assert np.all(v == 0), name
        elif name.endswith("scale"):
            assert np.all(v == 1), name
        else:
            raise AssertionError(name)
        if v.ndim == 2:
            assert abs(v.mean()) < 4 * v.std() / math.sqrt(v.size), name
    for module in ("state_encoder", "action_encoder", "output_layer"):
        assert set(k for k in leaves if k.startswith(f"params/{module}/")) == {f"params/{module}/kernel"}

    no_bias = _leaves(init_critic(TransformerCritic(**TINY, bias=False), jax.random.key(1)))
    assert not [k for k in no_bias if k.endswith("bias")]
    assert sum(k.endswith("scale") for k in no_bias) == 2 * TINY["n_layer"] + 1  # LayerNorm keeps its weight
    no_ln = _leaves(init_critic(TransformerCritic(**TINY, use_layer_norm=False), jax.random.key(1)))
    assert not [k for k in no_ln if "ln_" in k]


# --------------------------------------------------------------------------------------------------------------
# numerics against the numpy reference


@pytest.mark.parametrize("extra", [{}, dict(bias=False), dict(use_layer_norm=False)])
def test_matches_numpy_reference(extra):
    cfg = dict(TINY, **extra)
    critic = TransformerCritic(**cfg)
    params = init_critic(critic, jax.random.key(2))
    # Non-trivial biases / layer-norm parameters so that the reference checks their use.
    params = jax.tree_util.tree_map_with_path(
        lambda path, v: v + 0.1 * jax.random.normal(jax.random.key(len(str(path))), v.shape)
        if str(path[-1].key) in ("bias", "scale") else v, params)
    states, actions, sidx, aidx = _rows(jax.random.key(3), batch=3, L=5)
    out = _apply(critic, params, states, actions, sidx, aidx)
    assert out.shape == (3, 6) and out.dtype == jnp.float32
    for b in range(3):
        ref = np_row(params, cfg, *(np.asarray(v[b]) for v in (states, actions, sidx, aidx)))
        np.testing.assert_allclose(out[b], ref, atol=1e-5, rtol=1e-5)


def test_state_only_and_leading_dims(tiny):
    critic, params = tiny
    states, actions, sidx, aidx = _rows(jax.random.key(4), batch=6, L=4)
    full = _apply(critic, params, states, actions, sidx, aidx)
    v_only = _apply(critic, params, states, None, sidx, None)
    assert v_only.shape == (6, 1)
    np.testing.assert_allclose(v_only[:, 0], full[:, 0], atol=1e-6)
    # Arbitrary leading dims: [2, 3, ...] gives the same numbers as [6, ...].
    nested = _apply(critic, params, states.reshape(2, 3, S), actions.reshape(2, 3, 4, A),
                          sidx.reshape(2, 3), aidx.reshape(2, 3, 4))
    np.testing.assert_allclose(nested.reshape(6, 5), full, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# causality, positions, packing


def test_causal_per_row(tiny):
    critic, params = tiny
    states, actions, sidx, aidx = _rows(jax.random.key(5), batch=2, L=6)
    base = _apply(critic, params, states, actions, sidx, aidx)
    for k in range(6):
        changed = _apply(critic, params, states, actions.at[:, k].add(1.0), sidx, aidx)
        # Output index t belongs to token t; action k is token k + 1.
        np.testing.assert_array_equal(changed[:, :k + 1], base[:, :k + 1])
        assert np.all(np.abs(changed[:, k + 1:] - base[:, k + 1:]) > 1e-7)


def test_absolute_positions(tiny):
    critic, params = tiny
    states, actions, sidx, aidx = _rows(jax.random.key(6), batch=2, L=3)
    base = _apply(critic, params, states, actions, sidx, aidx)
    shifted = _apply(critic, params, states, actions, sidx + 7, aidx + 7)
    assert np.all(np.abs(shifted - base) > 1e-7)
    # Shifting only an action index changes that token and the ones after it.
    moved = _apply(critic, params, states, actions, sidx, aidx.at[:, 1].add(20))
    np.testing.assert_array_equal(moved[:, :2], base[:, :2])
    assert np.all(np.abs(moved[:, 2:] - base[:, 2:]) > 1e-7)
    # The table is read at exactly those indices.
    ref = np_row(params, TINY, np.asarray(states[0]), np.asarray(actions[0]), int(sidx[0]) + 7,
                 np.asarray(aidx[0]) + 7)
    np.testing.assert_allclose(shifted[0], ref, atol=1e-5, rtol=1e-5)
    # relative_pos: the same parameters read positions 0, 1, … whatever the indices.
    rel = TransformerCritic(**TINY, relative_pos=True)
    rel_idx = jnp.broadcast_to(jnp.arange(1, 4), aidx.shape)
    np.testing.assert_allclose(_apply(rel, params, states, actions, sidx + 7, aidx + 7),
                               _apply(critic, params, states, actions, 0 * sidx, rel_idx), atol=1e-6)


def _packed_rows(key):
    """Four rows of lengths 3, 3, 3, 1 starting at 2, 5, 8, 11 (one trajectory's segmentation, last row short)."""
    ks, ka = jax.random.split(key)
    st = np.asarray(jax.random.normal(ks, (4, S)))
    ac = np.asarray(jax.random.normal(ka, (4, 3, A)))
    rows = [(st[r], ac[r], 2 + 3 * r, 2 + 3 * r + np.arange(3)) for r in range(3)]
    rows.append((st[3], ac[3, :1], 11, np.array([11])))
    return rows


def test_packed_equals_per_row(tiny):
    critic, params = tiny
    rows = _packed_rows(jax.random.key(7))
    inputs, slices = pack(rows, n_tokens=18)  # 14 real tokens + 4 padding
    out = _apply(critic, params, *inputs, method=TransformerCritic.tokens)
    assert out.shape == (18,) and out.dtype == jnp.float32
    for (s, a, si, ai), sl in zip(rows, slices):
        per_row = _apply(critic, params, jnp.asarray(s), jnp.asarray(a), jnp.asarray(si), jnp.asarray(ai))
        np.testing.assert_allclose(out[sl], per_row, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(out[14:], 0.0)
    # A batch of packed sequences ([2, N]) gives the same as each alone.
    batched = _apply(critic, params, *(jnp.stack([v, v]) for v in inputs), method=TransformerCritic.tokens)
    np.testing.assert_allclose(batched, jnp.stack([out, out]), atol=1e-6)


def test_packed_segments_isolated(tiny):
    critic, params = tiny
    inputs, slices = pack(_packed_rows(jax.random.key(8)), n_tokens=18)
    states, actions, is_state, positions, seg = inputs
    base = _apply(critic, params, *inputs, method=TransformerCritic.tokens)
    # Change the state and the last action of row 1: rows 0, 2, 3 and the padding are untouched.
    changed = _apply(critic, params, states.at[4].add(1.0), actions.at[7].add(1.0), is_state, positions, seg,
                           method=TransformerCritic.tokens)
    others = np.r_[slices[0], slices[2], slices[3], 14:18]
    np.testing.assert_array_equal(changed[others], base[others])
    assert np.all(np.abs(changed[slices[1]] - base[slices[1]]) > 1e-7)
    # Changing padding inputs changes nothing.
    junk = _apply(critic, params, states.at[15].set(1e3), actions.at[16].set(1e3), is_state, positions, seg,
                        method=TransformerCritic.tokens)
    np.testing.assert_array_equal(junk, base)


def test_padding_is_finite_with_gradients(tiny):
    critic, params = tiny
    inputs, _ = pack(_packed_rows(jax.random.key(9)), n_tokens=18)
    # A whole sequence of padding as well (e.g. a batch entry with nothing in it).
    all_pad = tuple(jnp.zeros_like(v) if i < 3 else (jnp.full_like(v, -1) if i == 4 else v)
                    for i, v in enumerate(inputs))
    batch = tuple(jnp.stack([a, b]) for a, b in zip(inputs, all_pad))

    def loss(p):
        return jnp.sum(_apply(critic, p, *batch, method=TransformerCritic.tokens) ** 2)

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


# --------------------------------------------------------------------------------------------------------------
# attention inside rows (the packed layout's `rows`): the cost of the drawn segment length only

T_ROWS, M_ROWS = 12, 4  # candidate lengths 3, 4, 6, 12


def _layout_inputs(key, length, offset, batch=None):
    """A packed layout of T_ROWS steps (traced length/offset) and random token inputs for it."""
    seg = seg_lib.make_segmentation(length, offset, T_ROWS, M_ROWS, extra_row=True)
    layout = seg_lib.packed_layout(seg)
    N = layout.segment_id.shape[0]
    ks, ka = jax.random.split(key)
    shape = (N,) if batch is None else (batch, N)
    return layout, jax.random.normal(ks, (*shape, S)), jax.random.normal(ka, (*shape, A))


def _tokens(critic, params, layout, states, actions, rows):
    return critic.apply(params, states, actions, layout.is_state, layout.time_index, layout.segment_id,
                        method=TransformerCritic.tokens, rows=layout.rows if rows else None)


def test_row_attention_matches_numpy_reference(tiny):
    critic, params = tiny

    @jax.jit
    def run(length, offset):
        layout, states, actions = _layout_inputs(jax.random.key(30), length, offset)
        return _tokens(critic, params, layout, states, actions, rows=True), layout, states, actions

    for length in seg_lib.segment_lengths(T_ROWS, M_ROWS):
        for offset in ([0, int(length) - 1] if T_ROWS // length > 1 else [0]):
            out, layout, states, actions = run(jnp.int32(length), jnp.int32(offset))
            real = np.asarray(layout.in_row)
            mask = np.asarray(seg_lib.attention_mask(layout))
            ref = np_forward(params, TINY, np.asarray(states, np.float64), np.asarray(actions, np.float64),
                             np.asarray(layout.is_state), np.asarray(layout.time_index), mask)
            np.testing.assert_allclose(out[real], ref[real], atol=2e-5, rtol=1e-4, err_msg=f"ℓ={length} o={offset}")
            np.testing.assert_array_equal(out[~real], 0.0)


def test_row_attention_gradients_equal_mask_path_under_vmap(tiny):
    """Gradients through `rows` equal those through the block-diagonal mask, also when the row width differs
    across a vmapped axis (the seeds of a run) and over a critic ensemble (one width, several parameter sets)."""
    critic, _ = tiny
    params = init_ensemble(critic, jax.random.key(31), num_critics=2)
    lengths = jnp.asarray([3, 12, 4], jnp.int32)  # one per vmapped "seed"
    offsets = jnp.asarray([2, 0, 1], jnp.int32)

    def loss(p, actions, length, offset, rows):
        layout, states, _ = _layout_inputs(jax.random.key(32), length, offset, batch=2)
        q = apply_ensemble(critic, p, states, actions, layout.is_state, layout.time_index, layout.segment_id,
                           method=TransformerCritic.tokens, rows=layout.rows if rows else None)
        return jnp.sum(jnp.sin(q) * jnp.arange(q.shape[-1]))

    N = seg_lib.token_budget(T_ROWS, M_ROWS, True)
    actions = jax.random.normal(jax.random.key(33), (3, 2, N, A))
    grads = {rows: jax.jit(jax.vmap(jax.grad(partial(loss, rows=rows), argnums=(0, 1)), in_axes=(None, 0, 0, 0)))(
        params, actions, lengths, offsets) for rows in (True, False)}
    for a, b in zip(jax.tree_util.tree_leaves(grads[True]), jax.tree_util.tree_leaves(grads[False])):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)
    assert float(jnp.abs(grads[True][1]).max()) > 0


def test_padded_actions_past_the_budget_change_no_valid_output(tiny):
    """The critic budget holds the tokens up to the last valid one; the extra row's padded actions past it (the
    end of upstream's rows) are dropped. On every valid token, values and parameter gradients are those of the
    critic on upstream's whole rows (budget max num_rows·(ℓ + 1)) and of the block-diagonal mask path."""
    critic, params = tiny
    T, M = 20, 5  # candidate lengths 4, 5, 6, 10, 20; ℓ = 6, o = 0 or 1 (4 rows × 7 tokens) is cut to 25 tokens
    choices = [(int(ln), o) for ln in seg_lib.segment_lengths(T, M) for o in (range(ln) if T // ln > 1 else [0])]
    N = seg_lib.token_budget(T, M, True)
    N_full = max(int(seg_lib.num_rows(T, ln, o, True)) * (ln + 1) for ln, o in choices)
    assert (N, N_full) == (25, 28)
    ks, ka, kw = jax.random.split(jax.random.key(37), 3)
    states, actions = jax.random.normal(ks, (2, N_full, S)), jax.random.normal(ka, (2, N_full, A))
    weights = jax.random.normal(kw, (2, N_full))

    @partial(jax.jit, static_argnums=(2, 3))
    def run(length, offset, budget, rows):
        seg = seg_lib.make_segmentation(length, offset, T, M, extra_row=True)
        layout = seg_lib.packed_layout(seg, budget=budget)

        def loss(p):
            out = _tokens(critic, p, layout, states[:, :budget], actions[:, :budget], rows)  # [2, budget]
            out = jnp.where(layout.valid, out, 0.0)
            return jnp.sum(out * weights[:, :budget]), out

        grads, out = jax.grad(loss, has_aux=True)(params)
        return out[:, :N], layout.valid[:N], grads

    for length, offset in choices:
        out, valid, grads = run(length, offset, N, True)
        for budget, rows in ((N_full, True), (N, False)):
            out_ref, valid_ref, grads_ref = run(length, offset, budget, rows)
            msg = f"ℓ={length} o={offset} budget {budget} rows {rows}"
            np.testing.assert_array_equal(valid, valid_ref, err_msg=msg)
            np.testing.assert_allclose(out, out_ref, atol=1e-6, rtol=1e-6, err_msg=msg)
            for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(grads_ref)):
                # float32 sums in another order: the rounding scales with the leaf's largest entries (a ~0.02
                # entry beside ~8 ones differed by 1.3e-6 on one CPU), so atol is relative to the leaf
                np.testing.assert_allclose(a, b, atol=1e-6 * max(1.0, float(np.abs(b).max())), rtol=1e-5,
                                           err_msg=msg)


def test_layer_norm_matches_flax():
    """The hand-written VJP equals autodiff through flax's two-pass LayerNorm, with a large common offset."""
    import flax.linen as nn

    x = 1e2 + jax.random.normal(jax.random.key(34), (3, 7, 16))
    scale, bias = 1 + jax.random.normal(jax.random.key(35), (2, 16)) * 0.1
    ref_ln = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False)

    def ref(x, scale, bias):
        return ref_ln.apply({"params": {"scale": scale, "bias": bias}}, x)

    w = jax.random.normal(jax.random.key(36), x.shape)
    for f in (layer_norm, ref):
        assert f(x, scale, bias).shape == x.shape
    np.testing.assert_allclose(layer_norm(x, scale, bias), ref(x, scale, bias), atol=2e-4)
    g = jax.grad(lambda *a: jnp.sum(w * layer_norm(*a)), argnums=(0, 1, 2))(x, scale, bias)
    g_ref = jax.grad(lambda *a: jnp.sum(w * ref(*a)), argnums=(0, 1, 2))(x, scale, bias)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-3)


# --------------------------------------------------------------------------------------------------------------
# options: dropout, compute dtype, ensemble


def test_dropout_switch():
    critic = TransformerCritic(**TINY, dropout=0.2)
    params = init_critic(critic, jax.random.key(10))
    args = _rows(jax.random.key(11), batch=2, L=3)
    det = _apply(critic, params, *args)
    np.testing.assert_allclose(det, _apply(TransformerCritic(**TINY), params, *args), atol=1e-6)
    noisy = _apply(critic, params, *args, deterministic=False, rngs={"dropout": jax.random.key(12)})
    assert not np.allclose(noisy, det)


def test_bfloat16_compute(tiny):
    critic, params = tiny
    args = _rows(jax.random.key(13), batch=4, L=3)
    bf = _apply(TransformerCritic(**TINY, compute_dtype=jnp.bfloat16), params, *args)
    assert bf.dtype == jnp.float32
    np.testing.assert_allclose(bf, _apply(critic, params, *args), atol=2e-2 * float(jnp.abs(bf).max()) + 1e-3)


def test_double_critic_ensemble(tiny):
    critic, _ = tiny
    params = init_ensemble(critic, jax.random.key(14), num_critics=2)
    args = _rows(jax.random.key(15), batch=3, L=2)
    values = _apply_ensemble(critic, params, *args)
    assert values.shape == (2, 3, 3)
    for c in range(2):
        member = jax.tree_util.tree_map(lambda v: v[c], params)
        np.testing.assert_allclose(values[c], _apply(critic, member, *args), atol=1e-6)
    assert not np.allclose(values[0], values[1])  # independent initialisations
    np.testing.assert_allclose(values.min(axis=0), jnp.minimum(values[0], values[1]))
    # The token method goes through the same helper.
    inputs, _ = pack(_packed_rows(jax.random.key(16)), n_tokens=18)
    assert _apply_ensemble(critic, params, *inputs, method=TransformerCritic.tokens).shape == (2, 18)


# --------------------------------------------------------------------------------------------------------------
# optimiser


def test_weight_decay_mask_and_optimizer(tiny):
    critic, params = tiny
    mask = _leaves(weight_decay_mask(params))
    for name, v in _leaves(params).items():
        assert mask[name] == (v.ndim >= 2), name
    assert mask["params/pos_enc/embedding"] and mask["params/state_encoder/kernel"]
    assert not mask["params/h_0/attn/c_attn/bias"] and not mask["params/ln_f/scale"]

    # With zero gradients AdamW's update is the decay alone: only the >= 2-D parameters move.
    lr, wd = 0.1, 0.5
    for p, axes in ((params, 0), (init_ensemble(critic, jax.random.key(17), 2), 1)):
        opt = make_optimizer(lr, wd, stacked_axes=axes)

        @jax.jit
        def zero_grad_step(p):
            updates, _ = opt.update(jax.tree_util.tree_map(jnp.zeros_like, p), opt.init(p), p)
            return optax.apply_updates(p, updates)

        new = zero_grad_step(p)
        for (name, before), after in zip(_leaves(p).items(), _leaves(new).values()):
            expect = before * (1 - lr * wd) if before.ndim - axes >= 2 else before
            np.testing.assert_allclose(after, expect, rtol=1e-6, err_msg=name)

    # Polyak target update (upstream eta = 0.005) is optax.incremental_update.
    target = jax.tree_util.tree_map(jnp.zeros_like, params)
    new_target = optax.incremental_update(params, target, step_size=0.005)
    np.testing.assert_allclose(new_target["params"]["pos_enc"]["embedding"],
                               0.005 * params["params"]["pos_enc"]["embedding"], rtol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# learning


def test_fits_synthetic_returns():
    """Per-token targets Q_l = w_s·s + Σ_{k<l} w_a·a_k (token 0: w_s·s) are learnable: MSE drops > 10x."""
    critic = TransformerCritic(state_dim=S, action_dim=A, n_embd=32, n_layer=1, n_head=2, block_size=32)
    key_p, key_d, key_w = jax.random.split(jax.random.key(18), 3)
    params = init_critic(critic, key_p)
    B, L = 256, 4
    states, actions, sidx, aidx = _rows(key_d, batch=B, L=L, c0=0)
    sidx = sidx % 16  # rows start at 0 … 15: positions vary per row and stay inside the table
    aidx = sidx[:, None] + jnp.arange(L)
    w_s, w_a = jax.random.normal(key_w, (S,)), jax.random.normal(jax.random.fold_in(key_w, 1), (A,))
    prefix = jnp.concatenate([jnp.zeros((B, 1)), jnp.cumsum(actions @ w_a, axis=-1)], axis=-1)
    targets = (states @ w_s)[:, None] + prefix  # [B, 1 + L]

    opt = make_optimizer(3e-3, 1e-5)

    @jax.jit
    def train(params):
        def loss_fn(p):
            return jnp.mean((_apply(critic, p, states, actions, sidx, aidx) - targets) ** 2)

        def step(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        (p, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=250)
        return losses, loss_fn(p)

    losses, final = train(params)
    assert final < losses[0] / 10, (float(losses[0]), float(final))
