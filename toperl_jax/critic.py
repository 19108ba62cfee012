"""Transformer critic over (state, action sequence) tokens (spec: top_erl.md §4, §7).

A nanoGPT-style decoder that reads one state token followed by action tokens and returns one scalar per token:

    tokens   s_c      a_c          a_c+1               …   a_c+ℓ−1
    output   V(s_c)   Q(s_c, a_c)  Q(s_c, a_c, a_c+1)  …   Q(s_c, a_c … a_c+ℓ−1)

    x = state_encoder(s) or action_encoder(a)      Dense, no bias
      + pos_enc[absolute time index]               learned table [block_size, E]
    x = dropout(x)
    n_layer × { x = x + attn(ln_1(x));  x = x + mlp(ln_2(x)) }   pre-LayerNorm, causal multi-head attention
    out = output_layer(ln_f(x))                    Dense(E → 1), no bias

Two ways to call the same parameters:
- `critic.apply(params, states, actions, state_idx, action_idx)` — the upstream per-row semantics: a batch of
  rows, each `[state token, L action tokens]`, plain causal attention within the row. `L = 0` gives V only.
- `critic.apply(params, states, actions, is_state, positions, segment_ids, method=TransformerCritic.tokens)` —
  an arbitrary sequence of N tokens, e.g. several rows packed side by side in one fixed-length sequence
  (the static-shape layout of spec §7). A token attends to the tokens at or before it with the same segment
  id (block-diagonal causal mask). Padding tokens have a negative segment id: they only see other padding
  (at least themselves, so no softmax row is empty and nothing is NaN), no real token sees them, they read
  position 0 of the table, and their output is 0. With `rows=layout.rows` (the packed layout's promise that
  every segment is a row of the same width ℓ + 1, one after another from token 0, the last one possibly cut
  short by N) attention is computed inside each row only: the values are the same, the work is that of the
  drawn ℓ (S·(ℓ + 1)² score pairs per trajectory, as upstream's per-row batches) instead of N²
  (`row_attention`: one `lax.switch` over the candidate widths, kept a switch under `vmap` over seeds).

Matches upstream (`CriticGPT` in mprl/util/util_nanogpt.py) in: parameter layout and count (533,504 for
S = 29, A = 14 at the defaults), init (weights N(0, 0.02), residual projections N(0, 0.02/√(2·n_layer)),
biases 0, layer norms 1/0), LayerNorm eps 1e-5 (torch's default; flax's is 1e-6), exact (erf) GELU,
attention scale 1/√head_dim, dropout on the embedding sum, the attention probabilities and both residual
branches. `bias=False` removes the biases of the linear layers *and* of the layer norms (the scales stay).

Mixed precision: upstream runs the critic under `torch.autocast` (fp16 + GradScaler). Here `compute_dtype`
(e.g. `jnp.bfloat16` on a GPU) sets the dtype of the matmuls only; parameters, the residual stream, the layer
norms, the softmax and the output stay float32, which is what autocast does too.

Double critic (`single_q = False`): stack independent parameter sets along a leading axis with
`init_ensemble` and evaluate them with `apply_ensemble` (a `jax.vmap` over the parameters); targets take
`values.min(axis=0)`. One critic is the same code with `num_critics = 1`. Upstream's policy loss takes the
min over the two critics of the *row sums* of Q, the targets the elementwise min.

Optimiser: `make_optimizer` = AdamW(β 0.9, 0.999) with decoupled weight decay on the ≥ 2-D parameters only
(all Dense kernels, the encoders, the output layer and the position table; not biases and layer norms), as
upstream's `configure_optimizer`. Target network: `optax.incremental_update(params, target, tau)` gives
`tau·params + (1 − tau)·target`, upstream's Polyak update.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from toperl_jax import chunks

PyTree = Any

# Upstream uses torch.nn.LayerNorm's default epsilon.
LAYER_NORM_EPS = 1e-5


def _normal(std: float):
    return nn.initializers.normal(stddev=std)


def _softmax_attention(q: jax.Array, k: jax.Array, mask: jax.Array) -> jax.Array:
    """`q, k [..., N, H, D]` (the compute dtype), `mask [..., N, N]` (query i may see key j) → probabilities
    `[..., H, N, N]` float32: softmax in float32 with a large finite negative for masked keys."""
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k).astype(jnp.float32) / math.sqrt(q.shape[-1])
    logits = jnp.where(mask[..., None, :, :], logits, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(logits, axis=-1)


def _weighted_values(probs: jax.Array, v: jax.Array, dtype) -> jax.Array:
    """`probs [..., H, N, N]`, `v [..., N, H, D]` → `[..., N, H, D]`, the product in `dtype`."""
    return jnp.einsum("...hqk,...khd->...qhd", probs.astype(dtype), v)


def _split_heads(qkv: jax.Array, n_head: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`qkv [..., N, 3E]` → q, k, v `[..., N, H, D]`."""
    *batch, N, E3 = qkv.shape
    return tuple(t.reshape(*batch, N, n_head, E3 // (3 * n_head)) for t in jnp.split(qkv, 3, axis=-1))


def _row_attention(qkv: jax.Array, width: int, n_head: int, dtype) -> jax.Array:
    """Causal attention inside consecutive rows of `width` tokens from token 0, `qkv [..., N, 3E]` → `[..., N, E]`.

    N need not be a multiple of `width`: the last N mod `width` tokens form one shorter block. A row that N
    cuts short loses only its last tokens, which no kept token attends to (causal), so its kept tokens get the
    values of the whole row; padding tokens after the rows attend causally inside their blocks."""
    *batch, N, E3 = qkv.shape
    M, rest = divmod(N, width)

    def blocks(x: jax.Array, n: int, w: int) -> jax.Array:  # [..., n·w, 3E] → [..., n·w, E], causal per block
        q, k, v = _split_heads(x.reshape(*batch, n, w, E3), n_head)  # [..., n, w, H, D]
        probs = _softmax_attention(q, k, jnp.tril(jnp.ones((w, w), bool)))  # [..., n, H, w, w]
        return _weighted_values(probs, v, dtype).reshape(*batch, n * w, E3 // 3)

    y = blocks(qkv[..., :M * width, :], M, width)
    if rest:
        y = jnp.concatenate([y, blocks(qkv[..., M * width:, :], 1, rest)], axis=-2)
    return y


@functools.lru_cache(maxsize=None)
def row_attention(widths: tuple[int, ...], n_head: int, dtype) -> Callable:
    """`attend(qkv, index)`: `_row_attention` with the row width `widths[index]` (`index` traced), as one
    switch over the static candidate widths, so that the work is that of the drawn width only. Its gradient is
    a switch too (custom VJP), and both stay switches under `vmap` over seeds (`chunks.switch`)."""
    dtype = jnp.dtype(dtype)
    fwds = [functools.partial(_row_attention, width=w, n_head=n_head, dtype=dtype) for w in widths]
    fwd = chunks.switch(fwds)
    bwd = chunks.switch([lambda qkv, dy, f=f: jax.vjp(f, qkv)[1](dy)[0] for f in fwds])

    @jax.custom_vjp
    def attend(qkv, index):
        return fwd(index, qkv)

    def attend_fwd(qkv, index):
        return fwd(index, qkv), (qkv, index)

    def attend_bwd(res, dy):
        qkv, index = res
        return bwd(index, qkv, dy), None

    attend.defvjp(attend_fwd, attend_bwd)
    return attend


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention `x [..., N, E]` → `[..., N, E]`, under either
    - a boolean `mask [..., N, N]` (`mask[..., i, j]`: query i may attend to key j; every row must allow at least
      one key), or
    - `rows = (widths, index)`: causal attention inside consecutive rows of `widths[index]` tokens (the packed
      layout; `row_attention`), which costs the attention of the drawn width only.
    """

    n_embd: int
    n_head: int
    n_layer: int
    dropout: float
    bias: bool
    compute_dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None, deterministic: bool, rows=None) -> jax.Array:
        *batch, N, E = x.shape
        H = self.n_head
        qkv = nn.Dense(3 * E, use_bias=self.bias, dtype=self.compute_dtype, kernel_init=_normal(0.02),
                       name="c_attn")(x)
        if N == 1 and (deterministic or self.dropout == 0.0):  # softmax over one key is exactly 1: y = v
            y = qkv[..., 2 * E:]
        elif rows is not None:
            widths, index = rows
            y = row_attention(tuple(widths), H, self.compute_dtype)(qkv, index)
        else:
            q, k, v = _split_heads(qkv, H)
            probs = _softmax_attention(q, k, mask)
            probs = nn.Dropout(self.dropout)(probs, deterministic=deterministic)
            y = _weighted_values(probs, v, self.compute_dtype).reshape(*batch, N, E)
        y = nn.Dense(E, use_bias=self.bias, dtype=self.compute_dtype,
                     kernel_init=_normal(0.02 / math.sqrt(2 * self.n_layer)), name="c_proj")(y)
        return nn.Dropout(self.dropout)(y, deterministic=deterministic)


class MLP(nn.Module):
    """`[..., E]` → Dense(4E) → exact GELU → Dense(E) → dropout → `[..., E]`."""

    n_embd: int
    n_layer: int
    dropout: float
    bias: bool
    compute_dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        x = nn.Dense(4 * self.n_embd, use_bias=self.bias, dtype=self.compute_dtype, kernel_init=_normal(0.02),
                     name="c_fc")(x)
        x = nn.gelu(x, approximate=False)  # torch.nn.GELU() default is the erf form
        x = nn.Dense(self.n_embd, use_bias=self.bias, dtype=self.compute_dtype,
                     kernel_init=_normal(0.02 / math.sqrt(2 * self.n_layer)), name="c_proj")(x)
        return nn.Dropout(self.dropout)(x, deterministic=deterministic)


@jax.custom_vjp
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """`(x − mean) / sqrt(var + eps) · scale + bias` over the last axis (torch.nn.LayerNorm, eps 1e-5).

    Its gradient is written out (custom VJP) from the saved normalised input: XLA:CPU otherwise fuses the
    layer norm's automatic backward into its consumers and recomputes it there, which made the critic's
    gradient step ~1.5× slower on a CPU (docs/critic.md).
    """
    return _layer_norm_fwd(x, scale, bias)[0]


def _layer_norm_fwd(x, scale, bias):
    centred = x - jnp.mean(x, axis=-1, keepdims=True)
    inv_std = lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + LAYER_NORM_EPS)
    normed = centred * inv_std
    return normed * scale + bias, (normed, inv_std, scale)


def _layer_norm_bwd(res, dy):
    normed, inv_std, scale = res
    g = dy * scale
    dx = inv_std * (g - jnp.mean(g, axis=-1, keepdims=True) - normed * jnp.mean(g * normed, axis=-1, keepdims=True))
    batch_axes = tuple(range(dy.ndim - 1))
    return dx, jnp.sum(dy * normed, axis=batch_axes), jnp.sum(dy, axis=batch_axes)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
    """float32 layer norm with a scale and (when `use_bias`) a bias, the parameters of `nn.LayerNorm`."""

    use_bias: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        E = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (E,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (E,), jnp.float32) if self.use_bias else jnp.zeros(E)
        return layer_norm(x.astype(jnp.float32), scale, bias)


class Block(nn.Module):
    """Pre-LayerNorm transformer block on the float32 residual stream `x [..., N, E]`."""

    n_embd: int
    n_head: int
    n_layer: int
    dropout: float
    bias: bool
    use_layer_norm: bool
    compute_dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None, deterministic: bool, rows=None) -> jax.Array:
        ln_1 = LayerNorm(self.bias, name="ln_1") if self.use_layer_norm else (lambda h: h)
        ln_2 = LayerNorm(self.bias, name="ln_2") if self.use_layer_norm else (lambda h: h)
        attn = CausalSelfAttention(self.n_embd, self.n_head, self.n_layer, self.dropout, self.bias,
                                   self.compute_dtype, name="attn")
        mlp = MLP(self.n_embd, self.n_layer, self.dropout, self.bias, self.compute_dtype, name="mlp")
        x = x + attn(ln_1(x), mask, deterministic, rows).astype(jnp.float32)
        x = x + mlp(ln_2(x), deterministic).astype(jnp.float32)
        return x


class TransformerCritic(nn.Module):
    """The TOP-ERL critic. Config fields mirror upstream's `critic.args` (defaults = every upstream config)."""

    state_dim: int
    action_dim: int
    n_embd: int = 128
    n_layer: int = 2
    n_head: int = 8
    block_size: int = 1024
    dropout: float = 0.0
    bias: bool = True
    use_layer_norm: bool = True
    relative_pos: bool = False
    """Upstream option (false in every config): per-row positions 0, 1, … instead of absolute time indices."""
    compute_dtype: Any = jnp.float32
    """Dtype of the matmuls (e.g. jnp.bfloat16 on a GPU); params, layer norms, softmax and output stay float32."""

    def setup(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        dense = dict(use_bias=False, dtype=self.compute_dtype, kernel_init=_normal(0.02))
        self.state_encoder = nn.Dense(self.n_embd, **dense)
        self.action_encoder = nn.Dense(self.n_embd, **dense)
        self.pos_enc = nn.Embed(self.block_size, self.n_embd, embedding_init=_normal(0.02))
        self.drop = nn.Dropout(self.dropout)
        self.h = [
            Block(self.n_embd, self.n_head, self.n_layer, self.dropout, self.bias, self.use_layer_norm,
                  self.compute_dtype)
            for _ in range(self.n_layer)
        ]
        if self.use_layer_norm:
            self.ln_f = LayerNorm(self.bias, name="ln_f")
        self.output_layer = nn.Dense(1, **dense)

    def _transformer(self, x: jax.Array, positions: jax.Array, mask: jax.Array | None, deterministic: bool,
                     rows=None) -> jax.Array:
        """Token embeddings (without positions) `x [..., N, E]`, `positions [..., N]` int, `mask [..., N, N]`
        bool or `rows` (see `CausalSelfAttention`) → `[..., N]` float32."""
        x = x.astype(jnp.float32) + self.pos_enc(positions)
        x = self.drop(x, deterministic=deterministic)
        for block in self.h:
            x = block(x, mask, deterministic, rows)
        if self.use_layer_norm:
            x = self.ln_f(x)
        return self.output_layer(x)[..., 0].astype(jnp.float32)

    def __call__(
        self,
        states: jax.Array,
        actions: jax.Array | None,
        state_idx: jax.Array,
        action_idx: jax.Array | None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Per-row values, upstream semantics.

        Args:
            states: `[..., S]` the state s_c at the start of each row.
            actions: `[..., L, A]` the row's actions a_c … a_{c+L−1}, or None (= L = 0: V only).
            state_idx: `[...]` int, absolute time index of the state (its position in the table). Indices must
                lie in [0, block_size): outside, the table reads NaN (jnp.take's fill mode; torch would raise).
            action_idx: `[..., L]` int, absolute time indices of the actions, or None with `actions`.
            deterministic: False enables dropout (needs an rng named 'dropout').

        Returns:
            `[..., 1 + L]` float32: `[V(s_c), Q(s_c, a_c), Q(s_c, a_c, a_{c+1}), …]`.
        """
        x = self.state_encoder(states)[..., None, :]
        positions = state_idx[..., None]
        if actions is not None:
            x = jnp.concatenate([x, self.action_encoder(actions).astype(x.dtype)], axis=-2)
            positions = jnp.concatenate([positions, action_idx], axis=-1)
        N = x.shape[-2]
        if self.relative_pos:
            positions = jnp.broadcast_to(jnp.arange(N), positions.shape)
        mask = jnp.tril(jnp.ones((N, N), dtype=bool))
        return self._transformer(x, positions, mask, deterministic)

    def tokens(
        self,
        states: jax.Array,
        actions: jax.Array,
        is_state: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array,
        deterministic: bool = True,
        rows: tuple[tuple[int, ...], jax.Array] | None = None,
    ) -> jax.Array:
        """One output per token of an arbitrary token sequence (e.g. packed rows, spec §7 layout (b)).

        Args:
            states: `[..., N, S]` the state vector of each state token (ignored at action tokens; zeros are fine).
            actions: `[..., N, A]` the action vector of each action token (ignored at state tokens).
            is_state: `[..., N]` bool, True where the token is a state token.
            positions: `[..., N]` int in [0, block_size), absolute time index of each token
                (ignored at padding tokens, which read position 0).
            segment_ids: `[..., N]` int; token i attends to token j iff j ≤ i and both ids are equal.
                Negative ids mark padding tokens (output 0, invisible to real tokens).
            deterministic: False enables dropout (needs an rng named 'dropout').
            rows: optional `(widths, index)`, a promise about the layout that makes attention cheaper: every
                segment is a row of `widths[index]` tokens (`index` traced, `widths` static; the last row may be
                cut short by N), the rows sit one after another from token 0, and the tokens after them are
                padding (the packed layout, `segments.PackedLayout.rows`). Attention is then computed inside
                each row only (`row_attention`), with the same values as the mask; ignored when dropout is
                active (the mask path runs).

        Returns:
            `[..., N]` float32: for a row `[s_c, a_c, …]` laid out with one segment id, the same values as
            `__call__` gives for that row; 0 at padding tokens.
        """
        x = jnp.where(is_state[..., None], self.state_encoder(states), self.action_encoder(actions))
        is_pad = segment_ids < 0
        positions = jnp.where(is_pad, 0, positions)
        if rows is not None and (deterministic or self.dropout == 0.0):
            out = self._transformer(x, positions, None, deterministic, rows)
        else:
            N = x.shape[-2]
            causal = jnp.tril(jnp.ones((N, N), dtype=bool))
            mask = causal & (segment_ids[..., :, None] == segment_ids[..., None, :])
            out = self._transformer(x, positions, mask, deterministic)
        return jnp.where(is_pad, 0.0, out)


# ---------------------------------------------------------------------------------------------------------------
# Double critic: a stack of independent parameter sets


def init_critic(critic: TransformerCritic, key: jax.Array) -> PyTree:
    """Parameters of one critic (initialised on a 1-token input; the parameters do not depend on L)."""
    states = jnp.zeros((1, critic.state_dim))
    actions = jnp.zeros((1, 1, critic.action_dim))
    idx = jnp.zeros((1,), jnp.int32)
    return jax.jit(critic.init)(key, states, actions, idx, idx[:, None])


def init_ensemble(critic: TransformerCritic, key: jax.Array, num_critics: int) -> PyTree:
    """`num_critics` independent parameter sets stacked on a leading axis of every leaf
    (1 = upstream `single_q: true`, 2 = `single_q: false`)."""
    return jax.vmap(lambda k: init_critic(critic, k))(jax.random.split(key, num_critics))


def apply_ensemble(
    critic: TransformerCritic,
    params: PyTree,
    *args,
    method=None,
    dropout_key: jax.Array | None = None,
    **kwargs,
) -> jax.Array:
    """Evaluate every member of a stacked ensemble on the same inputs: `[C, ...]` (C = num critics).

    `args`/`kwargs`/`method` are those of `critic.apply`; `dropout_key` (with `deterministic=False`) is split
    into one key per member. For targets: `apply_ensemble(...).min(axis=0)`.
    """
    num = jax.tree_util.tree_leaves(params)[0].shape[0]
    keys = jax.random.split(dropout_key, num) if dropout_key is not None else None

    def one(p, k):
        rngs = {"dropout": k} if k is not None else None
        return critic.apply(p, *args, method=method, rngs=rngs, **kwargs)

    return jax.vmap(one)(params, keys)


def packed_values(critic: TransformerCritic, params: PyTree, state_tok: jax.Array, action_tok: jax.Array, layout,
                  dropout_key: jax.Array | None = None) -> jax.Array:
    """Every critic of a stack on packed tokens (`segments.PackedLayout`): `[C, B, N]`, 0 at packing tokens.

    Token t holds V(s_c) at a state token and Q(s_c, a_c … a_k) at the action token of time k. `dropout_key`
    enables dropout (training mode) when the critic has dropout > 0.
    """
    deterministic = dropout_key is None or critic.dropout == 0.0
    return apply_ensemble(critic, params, state_tok, action_tok, layout.is_state, layout.time_index,
                          layout.segment_id, method=TransformerCritic.tokens,
                          dropout_key=None if deterministic else dropout_key, deterministic=deterministic,
                          rows=layout.rows)


def state_values(critic: TransformerCritic, params: PyTree, states: jax.Array) -> jax.Array:
    """V of every state on its own (one-token sequences at their absolute index), min over critics: `[B, T]`."""
    T = states.shape[-2]
    v = apply_ensemble(critic, params, states, None, jnp.arange(T, dtype=jnp.int32), None)  # [C, B, T, 1]
    return jnp.min(v[..., 0], axis=0)


# ---------------------------------------------------------------------------------------------------------------
# Optimiser


def weight_decay_mask(params: PyTree, stacked_axes: int = 0) -> PyTree:
    """True for the parameters that are ≥ 2-D per critic (`stacked_axes` leading ensemble axes not counted)."""
    return jax.tree_util.tree_map(lambda p: p.ndim - stacked_axes >= 2, params)


def make_optimizer(
    learning_rate: float | optax.Schedule,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    stacked_axes: int = 0,
) -> optax.GradientTransformation:
    """AdamW with decoupled weight decay on the ≥ 2-D parameters only (upstream `configure_optimizer`).

    Adam is elementwise, so one optimiser over an ensemble's stacked parameters (`stacked_axes=1`) equals
    upstream's one optimiser per critic.
    """
    return optax.adamw(
        learning_rate,
        b1=betas[0],
        b2=betas[1],
        eps=1e-8,
        weight_decay=weight_decay,
        mask=lambda p: weight_decay_mask(p, stacked_axes),
    )
