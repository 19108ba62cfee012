"""Sequential chunks of a batch (micro-batching): the same numbers with less peak memory.

Every trajectory of a critic or policy pass is independent, so a pass can run over `n` sequential chunks of
`B / n` trajectories: `chunked_map` for values, `chunked_value_and_grad` for a loss that is a sum over
trajectories. `n = 1` is the one-pass computation. On a CPU chunks of 8–16 trajectories keep the attention
tensors cache-sized (docs/critic.md); on a GPU use one chunk.

`switch` is `lax.switch` that stays a switch under `vmap` (the critic's row attention, the learner's token
buckets).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

PyTree = Any


def num_chunks(micro_batch: int | None, batch: int) -> int:
    """Chunks of `micro_batch` trajectories in a batch of `batch` (1 for None or micro_batch ≥ batch)."""
    if micro_batch is None or micro_batch >= batch:
        return 1
    if batch % micro_batch:
        raise ValueError(f"micro_batch={micro_batch} must divide the batch size {batch}")
    return batch // micro_batch


def split(tree: PyTree, n: int) -> PyTree:
    """Leading axis B → `[n, B / n]` on every leaf."""
    return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), tree)


def merge(tree: PyTree) -> PyTree:
    """`[n, B / n, ...]` → `[B, ...]` on every leaf."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), tree)


def chunked_map(fn: Callable, batched: PyTree, n: int) -> PyTree:
    """`fn(batched)`, evaluated over `n` sequential chunks of the leading axis (`lax.map`)."""
    return fn(batched) if n == 1 else merge(lax.map(fn, split(batched, n)))


def chunked_value_and_grad(f: Callable, shared: PyTree, per_row: PyTree, data: PyTree, n: int):
    """Value, aux and gradient of Σ_chunks f(shared, per_row_chunk, data_chunk) over `n` sequential chunks.

    `f(shared, per_row, data) -> (loss, aux)`; it is differentiated with respect to `shared` (used whole by
    every chunk; gradients summed) and `per_row` (split with the batch; gradients concatenated), not `data`
    (split with the batch). `loss` and `aux` must add up over chunks (sums, or means over the whole batch).
    Returns `(loss, aux), (d_shared, d_per_row)`.
    """
    grad = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)
    if n == 1:
        return grad(shared, per_row, data)

    def body(acc, chunk):
        (loss, aux), (d_shared, d_rows) = grad(shared, *chunk)
        acc_loss_aux, acc_shared = acc
        acc = jax.tree.map(jnp.add, acc_loss_aux, (loss, aux)), jax.tree.map(jnp.add, acc_shared, d_shared)
        return acc, d_rows

    loss, aux = jax.eval_shape(f, shared, *jax.tree.map(lambda x: x[0], split((per_row, data), n)))
    zero = (jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss, aux)), jax.tree.map(jnp.zeros_like, shared))
    (loss_aux, d_shared), d_rows = lax.scan(body, zero, split((per_row, data), n))
    return loss_aux, (d_shared, merge(d_rows))


def switch(branches, monotone: bool = False) -> Callable:
    """`f(index, *xs) = lax.switch(index, branches, *xs)`, kept a switch under `vmap` (plain `vmap` of a switch
    with a batched index runs every branch and selects). Under `vmap`, the branches are vmapped; with a batched
    index the batch is looped over (`lax.map`, each element at its own branch), or, when `monotone` (branch j
    gives branch i's result on inputs meant for branch i, for every j ≥ i: e.g. larger token budgets), the
    largest index runs for the whole batch, which keeps it one batched computation."""

    @jax.custom_batching.custom_vmap
    def f(index, *xs):
        return lax.switch(index, branches, *xs)

    @f.def_vmap
    def rule(axis_size, in_batched, index, *xs):
        index_batched, *xs_batched = in_batched
        xs = jax.tree.map(lambda x, b: x if b else jnp.broadcast_to(x, (axis_size, *jnp.shape(x))), tuple(xs),
                          tuple(xs_batched))
        if index_batched and not monotone:
            out = lax.map(lambda a: f(a[0], *a[1]), (index, xs))
        else:
            out = switch([jax.vmap(b) for b in branches], monotone)(jnp.max(index), *xs)
        return out, jax.tree.map(lambda _: True, out)

    return f
