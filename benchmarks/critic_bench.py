"""Throughput of the TOP-ERL updates (variants/top_erl.py) at the paper's shapes.

For each task it builds the upstream critic (E = 128, 2 layers, 8 heads, block 1024), policy, ProDMP and
trust-region settings, fills a replay buffer with random episodes and times the jitted
  - critic step: buffer sample + random segmentation + packed targets (projected-policy sampling, per-token
    ProDMP decode, target-critic pass, V-only pass over all T states) + loss + AdamW + Polyak target update,
  - policy step: buffer sample + segmentation + projection + packed q_loss + trust-region loss + Adam,
and, with `--breakdown`, the two halves of a critic step on their own (targets only; loss + gradient + AdamW
on fixed targets — the part that upstream's 2.39 s/step anchor measures).
Compile time is that of `jit(...).lower(...).compile()`; step times are the median (and IQR) of `--repeats`
calls, each with a fresh key, so the segment length changes from call to call (the packed layout makes the cost
independent of it).

Shapes (specs/toperl_results.md §3, specs/tasks_fancy_gym.md):
  box:    batch 512, T 100, state 29 (28 + time feature), 7 dof (actions 14), 8 basis (k = 63), dt 0.02,
          policy 2×256, bounds (0.05, 5e-4), linear entropy schedule; token budget 125 / 125.
  hopper: batch 256, T 250, state 17 (16 + time feature), 3 dof (actions 6), 3 basis (k = 12), dt 0.008,
          tau 0.8, policy 2×128, bounds (0.1, 0.02), no entropy control; token budget 275 / 275.

Design anchor (DESIGN.md): upstream PyTorch CriticGPT, one AdamW step at box-pushing shapes on the project's
2-core CPU, 2.39 s mean (1.83–3.16 s); target ≥ 1.5× faster *with* targets included.

`--micro-batch 0 8` (default) compares one pass over the whole batch with sequential chunks of 8 trajectories
(`Learner.micro_batch`: same numbers, less memory; on a CPU the attention tensors then stay cache-sized).

Run: `python benchmarks/critic_bench.py [--tasks box hopper] [--micro-batch 0 8] [--repeats 3] [--bf16]
[--json results/critic_bench.json]`
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import tyro
from timing import time_jitted

from toperl_jax import buffer as buffer_lib
from toperl_jax import segments as seg_lib
from variants import top_erl as U
from toperl_jax.critic import TransformerCritic
from toperl_jax.mp import ProDMPConfig
from toperl_jax.policy import GaussianPolicy
from toperl_jax.projection import ProjectionConfig

UPSTREAM_BOX_STEP_S = 2.39  # DESIGN.md anchor: upstream critic AdamW step, box shapes, this CPU


@dataclasses.dataclass(frozen=True)
class Args:
    tasks: tuple[Literal["box", "hopper"], ...] = ("box", "hopper")
    """which shape sets to benchmark"""
    repeats: int = 3
    """timed calls per measurement (after compilation and one warm-up call)"""
    micro_batch: tuple[int, ...] = (0, 8)
    """trajectories per sequential chunk of the critic / policy passes (`Learner.micro_batch`); 0 = the whole
    batch in one pass. Every value is benchmarked. On a CPU, 8–16 keeps the attention tensors cache-sized."""
    token_buckets: tuple[int, ...] = (3,)
    """static token budgets of the learner's passes (`Learner.token_buckets`, `--token-buckets` of the variant);
    every value is benchmarked. The step time then depends on the drawn segmentation: compare means over many
    repeats (each call draws a fresh one)"""
    bf16: bool = False
    """critic matmuls in bfloat16 (`compute_dtype`); parameters, targets and losses stay float32"""
    num_critics: int = 1
    """1 = upstream single_q (default), 2 = double critic"""
    breakdown: bool = True
    """also time the critic targets alone and the critic gradient step on fixed targets"""
    json: str | None = None
    """optional path for the raw results"""
    seed: int = 0

    def __post_init__(self):
        if self.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {self.repeats}")
        if any(k < 1 for k in self.token_buckets):
            raise ValueError(f"--token-buckets values must be >= 1, got {self.token_buckets}")
        if any(m < 0 for m in self.micro_batch):
            raise ValueError(f"--micro-batch values must be >= 0, got {self.micro_batch}")
        if self.num_critics not in (1, 2):
            raise ValueError(f"--num-critics must be 1 or 2, got {self.num_critics}")


@dataclasses.dataclass(frozen=True)
class Shapes:
    batch: int
    T: int
    state_dim: int
    num_dof: int
    num_basis: int
    dt: float
    tau: float
    weights_scale: float
    policy_hidden: tuple[int, ...]
    min_std: float
    mean_bound: float
    cov_bound: float
    entropy_schedule: str
    total_train_steps: int
    lr_policy: float
    lr_critic: float
    wd: float


SHAPES = {
    "box": Shapes(batch=512, T=100, state_dim=29, num_dof=7, num_basis=8, dt=0.02, tau=2.0, weights_scale=0.3,
                  policy_hidden=(256, 256), min_std=1e-5, mean_bound=0.05, cov_bound=5e-4, entropy_schedule="linear",
                  total_train_steps=35000, lr_policy=3e-4, lr_critic=5e-5, wd=1e-5),
    "hopper": Shapes(batch=256, T=250, state_dim=17, num_dof=3, num_basis=3, dt=0.008, tau=0.8, weights_scale=1.0,
                     policy_hidden=(128, 128), min_std=1e-4, mean_bound=0.1, cov_bound=0.02, entropy_schedule="none",
                     total_train_steps=15000, lr_policy=1e-4, lr_critic=1e-4, wd=5e-5),
}


def make_learner(s: Shapes, bf16: bool, micro_batch: int, token_buckets: int = 1) -> U.Learner:
    mp = ProDMPConfig(num_dof=s.num_dof, num_basis=s.num_basis, tau=s.tau, dt=s.dt, alpha_phase=3.0, alpha=10.0,
                      basis_bandwidth_factor=3.0, weights_scale=s.weights_scale, goal_scale=s.weights_scale,
                      auto_scale_basis=True)
    critic = TransformerCritic(state_dim=s.state_dim, action_dim=2 * s.num_dof,
                               compute_dtype=jnp.bfloat16 if bf16 else jnp.float32)
    policy = GaussianPolicy(action_dim=mp.num_params, hidden_sizes=s.policy_hidden, min_std=s.min_std)
    proj = ProjectionConfig(mean_bound=s.mean_bound, cov_bound=s.cov_bound, entropy_schedule=s.entropy_schedule,
                            target_entropy=0.0, temperature=0.7, total_train_steps=s.total_train_steps)
    return U.Learner(critic=critic, policy=policy, mp=mp, projection=proj,
                     critic_optimizer=U.critic_optimizer(s.lr_critic, s.wd),
                     policy_optimizer=U.policy_optimizer(s.lr_policy, s.wd), T=s.T, dt=s.dt, batch_size=s.batch,
                     micro_batch=micro_batch or None, token_buckets=token_buckets)


def random_buffer(s: Shapes, rng: np.random.Generator) -> buffer_lib.TrajectoryBuffer:
    n, T, dof = s.batch, s.T, s.num_dof
    k = dof * (s.num_basis + 1)
    f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    ep = buffer_lib.Episode(states=f(n, T, s.state_dim), actions=f(n, T, 2 * dof), rewards=f(n, T),
                            dones=jnp.zeros((n, T), bool), desired_pos=f(n, T, dof), desired_vel=f(n, T, dof),
                            init_time=jnp.zeros(n), init_pos=f(n, dof), init_vel=f(n, dof), params_mean=f(n, k),
                            params_L=jnp.zeros((n, k, k)))
    buf = buffer_lib.init(n, buffer_lib.episode_spec(T, s.state_dim, dof, k))
    return buffer_lib.add(buf, ep)


def bench_task(name: str, args: Args, micro_batch: int, token_buckets: int = 1) -> dict:
    s = SHAPES[name]
    if micro_batch and s.batch % micro_batch:
        raise ValueError(f"--micro-batch {micro_batch} must divide the {name} batch size {s.batch}")
    learner = make_learner(s, args.bf16, micro_batch, token_buckets)
    name = f"{name}, mb {micro_batch or s.batch}, K {token_buckets}"
    rng = np.random.default_rng(args.seed)
    buf = random_buffer(s, rng)
    key = jax.random.key(args.seed)
    cstate = U.init_critic_state(learner, jax.random.fold_in(key, 1), args.num_critics)
    pstate = U.init_policy_state(learner, jax.random.fold_in(key, 2))
    h0 = U.initial_entropy(learner, pstate.old_params, buf.data.states[:, 0])
    keys = lambda i: jax.random.fold_in(key, 100 + i)
    out = {"task": name, "micro_batch": micro_batch, "shapes": dataclasses.asdict(s),
           "token_budget_critic": seg_lib.token_budget(s.T, extra_row=True),
           "token_budget_policy": seg_lib.token_budget(s.T, extra_row=False),
           "token_buckets_critic": seg_lib.token_buckets(s.T, extra_row=True, num_buckets=token_buckets),
           "token_buckets_policy": seg_lib.token_buckets(s.T, extra_row=False, num_buckets=token_buckets)}

    critic_step = jax.jit(lambda c, p, k: U.critic_step(learner, c, buf, p.params, p.old_params, 1, h0, k))
    out["critic_step"] = time_jitted(critic_step, lambda i: (cstate, pstate, keys(i)), args.repeats)
    print(f"  {name} critic step: {out['critic_step']['median_s']:.3f} s", flush=True)

    policy_step = jax.jit(lambda c, p, k: U.policy_step(learner, p, buf, c.params, 1, h0, k))
    out["policy_step"] = time_jitted(policy_step, lambda i: (cstate, pstate, keys(i)), args.repeats)
    print(f"  {name} policy step: {out['policy_step']['median_s']:.3f} s", flush=True)

    if args.breakdown:
        def targets_only(c, p, k):
            k_batch, k_seg, k_noise = jax.random.split(k, 3)
            ep = buffer_lib.sample(buf, k_batch, learner.batch_size)
            seg = seg_lib.sample_segmentation(k_seg, s.T, extra_row=True)
            layout = seg_lib.packed_layout(seg)
            _, _, m, L, _ = U.projected_policy(learner, p.params, p.old_params, U.decision_states(ep), 1, h0)
            return U.critic_targets(learner, c.target_params, ep, seg, layout, m, L, k_noise)[0]

        out["critic_targets_only"] = time_jitted(jax.jit(targets_only), lambda i: (cstate, pstate, keys(i)),
                                           args.repeats)
        print(f"  {name} critic targets only: {out['critic_targets_only']['median_s']:.3f} s", flush=True)

        ep0 = buffer_lib.sample(buf, jax.random.key(7), learner.batch_size)

        def grad_step_fixed_targets(c, length, offset, targets):
            seg = seg_lib.make_segmentation(length, offset, s.T, extra_row=True)
            layout = seg_lib.packed_layout(seg)
            _, grads = U.critic_loss_and_grad(learner, c.params, ep0, layout, targets)
            updates, opt_state = learner.critic_optimizer.update(grads, c.opt_state, c.params)
            return jax.tree.map(jnp.add, c.params, updates), opt_state

        N = seg_lib.token_budget(s.T, extra_row=True)
        lengths = seg_lib.segment_lengths(s.T)
        tgt = jnp.asarray(rng.normal(size=(s.batch, N)), jnp.float32)
        out["critic_grad_step_only"] = time_jitted(
            jax.jit(grad_step_fixed_targets),
            lambda i: (cstate, jnp.int32(lengths[i % len(lengths)]), jnp.int32(0), tgt), args.repeats)
        print(f"  {name} critic grad step only: {out['critic_grad_step_only']['median_s']:.3f} s", flush=True)
    return out


def main(args: Args):
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}, "
          f"cpus {os.cpu_count()}, bf16={args.bf16}, num_critics={args.num_critics}, "
          f"micro_batch={args.micro_batch}", flush=True)
    results = {"jax": jax.__version__, "backend": jax.default_backend(), "platform": platform.platform(),
               "cpu_count": os.cpu_count(), "args": dataclasses.asdict(args), "tasks": {}}
    for name in args.tasks:
        for mb in args.micro_batch:
            for k in args.token_buckets:
                res = bench_task(name, args, mb, k)
                results["tasks"][res["task"]] = res

    rows = [("critic_step", "critic step (targets incl.)"), ("policy_step", "policy step"),
            ("critic_targets_only", "critic targets only"), ("critic_grad_step_only", "critic grad step only")]
    print("\n| task | measurement | compile (s) | median step (s) | mean step (s) | IQR (s) | steps/s (mean) |")
    print("|---|---|---|---|---|---|---|")
    for name, res in results["tasks"].items():
        for key, label in rows:
            if key in res:
                r = res[key]
                print(f"| {name} | {label} | {r['compile_s']:.1f} | {r['median_s']:.3f} | {r['mean_s']:.3f} | "
                      f"{r['q25_s']:.3f}–{r['q75_s']:.3f} | {1.0 / r['mean_s']:.2f} |")
    for name, res in results["tasks"].items():
        if name.startswith("box"):
            ours = res["critic_step"]["median_s"]
            print(f"{name}: critic step incl. targets vs upstream's {UPSTREAM_BOX_STEP_S} s AdamW step (no targets): "
                  f"{UPSTREAM_BOX_STEP_S / ours:.2f}× (target ≥ 1.5×)")
    if args.json:
        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main(tyro.cli(Args))
