"""Microbenchmark of the foundation at box-pushing shapes: batch 512, k = 63 (7 dof × (8 basis + goal)).

Times the jitted
  - ProDMP decode of 512 trajectories × 100 steps × 7 dof (positions and velocities),
  - KL projection forward, non-contextual covariance (TOP-ERL default: one factor, 512 means),
  - KL projection forward, contextual covariance (512 factors),
  - KL projection forward + backward of a loss through a reparameterised sample (both cases),
reporting the compile time and the median and interquartile range of `--repeats` timed calls
(after one warm-up call; `benchmarks/timing.py`).

Run: `python benchmarks/foundation_microbench.py [--repeats 30] [--json results/foundation.json]`
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import platform

import jax
import jax.numpy as jnp
import numpy as np
import tyro
from timing import time_jitted

from toperl_jax import gaussian
from toperl_jax.mp import ProDMPConfig, prodmp_trajectory
from toperl_jax.projection import ProjectionConfig, kl_projection, trust_region_loss


@dataclasses.dataclass(frozen=True)
class Args:
    batch: int = 512
    """trajectories / policy rows"""
    num_dof: int = 7
    num_basis: int = 8
    steps: int = 100
    """decoded time steps"""
    repeats: int = 30
    """timed calls per case (after one compile call)"""
    json: str | None = None
    """optional path for the raw results"""


def main(args: Args):
    k = args.num_dof * (args.num_basis + 1)
    rng = np.random.default_rng(0)
    mp = ProDMPConfig(num_dof=args.num_dof, num_basis=args.num_basis, tau=2.0, dt=0.02)
    proj = ProjectionConfig(mean_bound=0.05, cov_bound=5e-4, total_train_steps=35000)

    f32 = lambda x: jnp.asarray(x, jnp.float32)
    weights = f32(rng.normal(size=(args.batch, k)))
    times = f32(np.arange(1, args.steps + 1) * 0.02)
    init_pos, init_vel = f32(rng.normal(size=(args.batch, args.num_dof))), f32(rng.normal(size=(args.batch, args.num_dof)))
    decode = jax.jit(lambda w, p, v: prodmp_trajectory(mp, w, times, jnp.zeros(w.shape[:-1]), p, v))

    L_old = np.linalg.cholesky(np.cov(rng.normal(size=(4 * k, k)).T) + 0.5 * np.eye(k))
    noise = np.tril(rng.normal(size=(args.batch, k, k))) * rng.choice([0.001, 0.01], size=(args.batch, 1, 1))
    L_ctx = f32(L_old @ (np.eye(k) + noise))  # about half the rows outside the trust region
    L_nc = f32(L_old @ (np.eye(k) + 0.01 * np.tril(rng.normal(size=(k, k)))))
    mean_old = f32(rng.normal(size=(args.batch, k)))
    mean = mean_old + f32(0.3 * rng.normal(size=(args.batch, k)))
    L_old = f32(L_old)
    key = jax.random.key(0)

    def forward(mean, L):
        return kl_projection(proj, mean, L, mean_old, L_old, 100, 88.76)[:2]

    def loss(mean, L):
        mean_p, L_p, _ = kl_projection(proj, mean, L, mean_old, L_old, 100, 88.76)
        w = gaussian.sample(key, mean_p, L_p)
        return jnp.mean(jnp.square(w)) + trust_region_loss(proj, mean, L, mean_p, L_p)

    fwd = jax.jit(forward)
    fwd_bwd = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

    cases = {
        f"ProDMP decode {args.batch}×{args.steps}×{args.num_dof} (pos, vel)": (decode, weights, init_pos, init_vel),
        f"projection forward, non-contextual (1 factor, {args.batch} means)": (fwd, mean, L_nc),
        f"projection forward, contextual ({args.batch} factors)": (fwd, mean, L_ctx),
        "projection forward+backward, non-contextual": (fwd_bwd, mean, L_nc),
        "projection forward+backward, contextual": (fwd_bwd, mean, L_ctx),
    }
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}, {platform.processor() or platform.machine()}")
    print("\n| case | median ms | IQR ms | compile s |\n|---|---|---|---|")
    results = {}
    for name, (fn, *inputs) in cases.items():
        r = time_jitted(fn, lambda i, inputs=inputs: inputs, repeats=args.repeats)
        results[name] = r
        print(f"| {name} | {1e3 * r['median_s']:.2f} | {1e3 * r['q25_s']:.2f}–{1e3 * r['q75_s']:.2f} "
              f"| {r['compile_s']:.2f} |")
    if args.json:
        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"device": str(device.device_kind), "platform": device.platform,
                                    "jax": jax.__version__, "args": dataclasses.asdict(args), "results": results},
                                   indent=2))


if __name__ == "__main__":
    main(tyro.cli(Args))
