"""`chunks.switch`: `lax.switch` that stays a switch under `vmap` (each element at its own branch, or, `monotone`,
the batch at its largest index), on pytree operands, batched and unbatched."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toperl_jax import chunks


def branch(k):
    """Branch k: a pytree in, a pytree out; k leaves its mark, so the branch that ran can be read off."""
    return lambda x, aux: {"y": x["a"] * (k + 1) + aux, "k": jnp.full((), k)}


BRANCHES = [branch(k) for k in range(3)]


@pytest.mark.parametrize("monotone", [False, True])
def test_switch_alone_and_under_vmap(monotone):
    f = chunks.switch(BRANCHES, monotone)
    x = {"a": jnp.arange(4.0).reshape(2, 2)}
    for k in range(3):  # no vmap: lax.switch
        out = jax.jit(f)(jnp.int32(k), x, 1.0)
        np.testing.assert_array_equal(out["y"], np.arange(4.0).reshape(2, 2) * (k + 1) + 1.0)

    index = jnp.array([0, 2, 1, 0], jnp.int32)
    xs = {"a": jnp.arange(8.0).reshape(4, 2)}
    out = jax.jit(jax.vmap(f, in_axes=(0, 0, None)))(index, xs, 1.0)  # batched index, one operand unbatched
    ran = np.full(4, 2) if monotone else np.asarray(index)  # monotone: the largest index for the whole batch
    np.testing.assert_array_equal(out["k"], ran)
    np.testing.assert_array_equal(out["y"], np.arange(8.0).reshape(4, 2) * (ran[:, None] + 1) + 1.0)

    out = jax.jit(jax.vmap(f, in_axes=(None, 0, 0)))(jnp.int32(1), xs, jnp.arange(4.0))  # unbatched index
    np.testing.assert_array_equal(out["k"], np.ones(4))
    np.testing.assert_array_equal(out["y"], np.arange(8.0).reshape(4, 2) * 2 + np.arange(4.0)[:, None])

    nested = jax.jit(jax.vmap(jax.vmap(f, in_axes=(0, 0, None)), in_axes=(0, 0, None)))  # vmap of vmap
    out = nested(index.reshape(2, 2), {"a": jnp.arange(8.0).reshape(2, 2, 2)}, 0.0)
    want = np.full((2, 2), 2) if monotone else np.asarray(index).reshape(2, 2)
    np.testing.assert_array_equal(out["k"], want)


def test_switch_under_vmap_runs_one_branch_per_element():
    """Plain `vmap` of `lax.switch` with a batched index runs every branch and selects; `chunks.switch` does not:
    the compiled program holds no select over the branches' outputs."""
    f = chunks.switch(BRANCHES)
    index = jnp.array([0, 2], jnp.int32)
    xs = {"a": jnp.ones((2, 3))}
    plain = jax.make_jaxpr(jax.vmap(lambda i, x, a: jax.lax.switch(i, BRANCHES, x, a), in_axes=(0, 0, None)))(
        index, xs, 1.0)
    ours = jax.make_jaxpr(jax.vmap(f, in_axes=(0, 0, None)))(index, xs, 1.0)
    assert "select_n" in str(plain)  # what vmap of a switch does: all branches, then a select
    assert "select_n" not in str(ours)
