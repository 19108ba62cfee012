"""toperl-jax: TOP-ERL, its replanning extension and QT in JAX (see README.md)."""

import os

import threadpoolctl


def _limit_blas_threads() -> None:
    """Run the CPU BLAS/LAPACK that jaxlib calls on one thread.

    jaxlib's CPU LAPACK kernels (triangular solves, Cholesky, QR, eigh) call an OpenBLAS that is loaded at the
    first such call. XLA already parallelises over its own thread pool, and OpenBLAS worker threads on top of
    it contend for the same cores: a 63×63 triangular solve with a matrix right-hand side then takes ~8 ms
    instead of ~0.04 ms on a 2-core machine (docs/foundation.md). OPENBLAS_NUM_THREADS covers an OpenBLAS
    loaded later; threadpoolctl covers any already loaded (e.g. when scipy.linalg was imported first).
    No effect on GPU computations. Choose another count with TOPERL_JAX_BLAS_THREADS (0 = leave as is).
    """
    threads = int(os.environ.get("TOPERL_JAX_BLAS_THREADS", "1"))
    if threads > 0:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
        threadpoolctl.threadpool_limits(threads, user_api="blas")


_limit_blas_threads()
