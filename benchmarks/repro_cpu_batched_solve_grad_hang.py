"""Reproducer: jaxlib's CPU runtime hangs on the gradient of a batched triangular solve.

Seen with jax/jaxlib 0.10.2 (the newest this project's package index serves) on a 2-core x86 CPU: `jax.grad`
of `sum(solve_triangular(A, B)²)` for a batch of 48 63×63 lower-triangular A and B (both traced) hangs in
`block_until_ready`. gdb shows the cause: jaxlib's LAPACK kernels split a batched call over XLA's intra-op
thread pool (`jax::ParallelBatchMap`) and block on a `BlockingCounter`; when as many batched calls run at once
as the pool has threads (2 here), each holds a pool thread while waiting for pieces that need one, forever.
With OPENBLAS_NUM_THREADS=1 (what `import toperl_jax` sets, for speed) it hangs 3 times out of 3 here; with 2
OpenBLAS threads it hangs less often. `--xla_cpu_multi_thread_eigen=false` and disabling async dispatch do not
help. toperl_jax avoids it by running batched linear algebra row by row on CPU (`gaussian.map_matrices`);
GPUs do not use this code path.

Run: `python benchmarks/repro_cpu_batched_solve_grad_hang.py [--trials 3]` — each trial runs in a subprocess
with a timeout and prints OK or HANG.
"""

import argparse
import subprocess
import sys

CHILD = """
import jax, jax.numpy as jnp, numpy as np
from jax.scipy.linalg import solve_triangular
k, batch = 63, 48
rng = np.random.default_rng(0)
A = jnp.asarray(np.tril(rng.normal(size=(batch, k, k))) * 0.01 + np.eye(k), jnp.float32)
grad = jax.jit(jax.grad(lambda a: jnp.sum(jnp.square(solve_triangular(a * 1.01, a, lower=True)))))
for _ in range(15):
    jax.block_until_ready(grad(A))
"""

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    for trial in range(args.trials):
        try:
            subprocess.run([sys.executable, "-c", CHILD], timeout=args.timeout, check=True, capture_output=True)
            print(f"trial {trial}: OK")
        except subprocess.TimeoutExpired:
            print(f"trial {trial}: HANG (no result after {args.timeout:.0f} s)")
