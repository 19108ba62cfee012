"""Package-level behaviour."""

import jax.numpy as jnp
import threadpoolctl
from jax.scipy.linalg import solve_triangular

import toperl_jax  # noqa: F401  (limits BLAS threads on import)


def test_blas_runs_single_threaded_after_a_lapack_call():
    """jaxlib loads its OpenBLAS lazily; every loaded BLAS must run on one thread (see toperl_jax/__init__)."""
    solve_triangular(jnp.eye(40), jnp.eye(40), lower=True).block_until_ready()
    blas = threadpoolctl.threadpool_info()
    assert blas and all(lib["num_threads"] == 1 for lib in blas if lib["user_api"] == "blas"), blas
