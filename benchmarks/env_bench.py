"""Reacher throughput: jitted MJX rollout vs native MuJoCo C stepping the same model (CPU).

Counts control steps per second (each = frame_skip physics substeps + one forward), summed over the
batch, from the median of `--repeats` timed calls (`benchmarks/timing.py`). Native rows: (a) a Python loop over mujoco.mj_step with the same PD + bias controller in
numpy (closed loop, one thread); (b) mujoco.rollout with open-loop controls, 2 threads (physics only,
no controller, an upper bound for native). Prints a markdown table.

    python benchmarks/env_bench.py [--batches 1 64 1024] [--repeats 3]
    python benchmarks/env_bench.py --hopper [--hopper-batches 1 64 1024] [--hopper-steps 250 250 50]
    python benchmarks/env_bench.py --box-pushing [--box-batches 1 64 1024] [--box-steps 100 100 20]

Hopper jump (`--hopper`): the same three columns on hopper-jump-sparse (RK4, 4 substeps per control step,
TCE PD without bias). Its native loop and mujoco.rollout start from the task's reset state (torso at 1.5 m);
`--hopper-steps` gives the control steps per episode timed at each batch (the episode starts with ~30 steps
of free fall, then contacts).

Box pushing (`--box-pushing`): box-pushing-dense (Euler, 10 substeps per control step, PD + bias), jitted
with `xla_cpu_options()` (box_pushing.py). Episodes start from the task's reset (box, goal, IK) and track
random ProDMP trajectories (TOP-ERL's decoder, weights ~ N(0, 1)), so the rod pushes the box; the native
loop replays the same desired trajectories on the same MJCF, and mujoco.rollout runs it open-loop from
the same start states (physics only).
"""

from __future__ import annotations

import argparse
import os
import platform

import jax
import mujoco
import numpy as np
from timing import time_calls, time_jitted

from toperl_jax.envs import make
from toperl_jax.envs.reacher import numpy_controller


def bench_mjx(task, batch: int, repeats: int) -> tuple[float, float]:
    """(compile seconds, control steps / s) of a jitted vmapped reset + rollout."""
    T, dof = task.episode_length, task.num_dof

    @jax.jit
    def run(key):
        k1, k2 = jax.random.split(key)
        states = jax.vmap(task.reset)(jax.random.split(k1, batch))
        desired = 0.5 * jax.random.normal(k2, (batch, T, 2 * dof))
        _, tr = jax.vmap(task.rollout)(states, desired)
        return tr.rewards.sum()

    r = time_jitted(run, lambda i: (jax.random.PRNGKey(i),), repeats)
    return r["compile_s"], batch * T / r["median_s"]


def bench_native_loop(task, batch: int, repeats: int) -> float:
    """Control steps / s of a Python loop over mj_step with the numpy PD + bias controller."""
    m = task.mj_model
    d = mujoco.MjData(m)
    T, dof = task.episode_length, task.num_dof
    rng = np.random.default_rng(0)
    desired = 0.5 * rng.standard_normal((batch, T, 2 * dof))

    def episodes():
        for b in range(batch):
            mujoco.mj_resetData(m, d)
            d.qpos[:] = rng.uniform(-0.1, 0.1, dof)
            mujoco.mj_forward(m, d)
            for k in range(T):
                d.ctrl[:] = numpy_controller(task, m, d, desired[b, k, :dof], desired[b, k, dof:])
                for _ in range(task.frame_skip):
                    mujoco.mj_step(m, d)
                mujoco.mj_forward(m, d)

    return batch * T / time_calls(episodes, repeats)["median_s"]


def bench_native_rollout(task, batch: int, repeats: int, nthread: int = 2) -> float | None:
    """Control steps / s (= physics steps / frame_skip) of mujoco.rollout, open-loop, nthread."""
    try:
        from mujoco import rollout
    except ImportError:
        return None
    m = task.mj_model
    datas = [mujoco.MjData(m) for _ in range(nthread)]
    nstep = task.episode_length * task.frame_skip
    state0 = np.zeros((batch, mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_FULLPHYSICS)))
    ctrl = np.random.default_rng(0).uniform(-1, 1, (batch, nstep, m.nu))
    rollout.rollout([m] * batch, datas, state0, ctrl)   # warm up the pool
    median = time_calls(lambda: rollout.rollout([m] * batch, datas, state0, ctrl), repeats)["median_s"]
    return batch * nstep / task.frame_skip / median


def bench_hopper(b: int, n: int, repeats: int) -> None:
    """One hopper jump row (batch b, n control steps per episode): MJX jit rollout vs a native mj_step
    loop with the same PD (on min(b, 64) episodes) and vs mujoco.rollout open-loop."""
    from mujoco import rollout

    from toperl_jax.envs.hopper_jump import numpy_action

    task = make("hopper-jump-sparse", episode_length=n)
    c, mjx_sps = bench_mjx(task, b, repeats if b <= 64 else 1)
    m = task.mj_model
    d = mujoco.MjData(m)
    rng = np.random.default_rng(0)
    nb = min(b, 64)
    desired = rng.uniform(-1.5, 1.5, (nb, n, 6))

    def episodes():
        for e in range(nb):
            mujoco.mj_resetData(m, d)
            d.qpos[:] = [0, 1.5, 0, rng.uniform(-0.5, 0), rng.uniform(-0.2, 0), rng.uniform(0, 0.785)]
            mujoco.mj_forward(m, d)
            for k in range(n):
                d.ctrl[:] = numpy_action(task, d.qpos, d.qvel, desired[e, k, :3], desired[e, k, 3:])
                for _ in range(task.frame_skip):
                    mujoco.mj_step(m, d)

    nat = nb * n / time_calls(episodes, 1 if b > 1 else repeats)["median_s"]
    datas = [mujoco.MjData(m) for _ in range(2)]
    d.qpos[:] = [0, 1.5, 0, -0.25, -0.1, 0.4]
    d.qvel[:] = 0
    mujoco.mj_forward(m, d)
    state = np.empty(mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_FULLPHYSICS))
    mujoco.mj_getState(m, d, state, mujoco.mjtState.mjSTATE_FULLPHYSICS)
    state0 = np.tile(state, (b, 1))
    ctrl = rng.uniform(-1, 1, (b, n * task.frame_skip, m.nu))
    rollout.rollout([m] * b, datas, state0, ctrl)
    ro = b * n / time_calls(lambda: rollout.rollout([m] * b, datas, state0, ctrl), repeats)["median_s"]
    print(f"| {b} | {n} | {mjx_sps:,.0f} | {c:.1f} | {nat:,.0f} | {ro:,.0f} | {mjx_sps / nat:.3f} |", flush=True)


def bench_box_pushing(b: int, n: int, repeats: int) -> None:
    """One box-pushing row (batch b, n control steps per episode): MJX jit reset + rollout vs a native
    mj_step loop with the same PD + bias (on min(b, 64) episodes) and vs mujoco.rollout open-loop."""
    from mujoco import rollout

    from toperl_jax.envs.box_pushing import numpy_controller, xla_cpu_options
    from toperl_jax.mp import prodmp_trajectory

    task = make("box-pushing-dense", episode_length=n)
    cfg = task.prodmp_config()

    def plan(key):
        k1, k2 = jax.random.split(key)
        states = jax.vmap(task.reset)(jax.random.split(k1, b))
        w = jax.random.normal(k2, (b, cfg.num_params))
        pos, vel = jax.vmap(lambda w, p, v: prodmp_trajectory(cfg, w, task.action_times(), 0.0, p, v))(
            w, states.desired_pos, states.desired_vel)
        return states, jax.numpy.concatenate([pos, vel], -1)

    def run(key):
        states, desired = plan(key)
        _, tr = jax.vmap(task.rollout)(states, desired)
        return tr.rewards.sum()

    opts = xla_cpu_options()
    r = time_jitted(jax.jit(run, compiler_options=opts), lambda i: (jax.random.PRNGKey(i),),
                    repeats if b <= 64 else 1)
    c, mjx_sps = r["compile_s"], b * n / r["median_s"]
    states, desired = jax.jit(plan, compiler_options=opts)(jax.random.PRNGKey(0))
    qpos0 = np.asarray(states.mjx_data.qpos, np.float64)
    goal_pos, goal_quat = np.asarray(states.info["goal_pos"]), np.asarray(states.info["goal_quat"])
    desired = np.asarray(desired, np.float64)
    m = task.mj_model
    d = mujoco.MjData(m)
    nb = min(b, 64)

    def start(e):
        mujoco.mj_resetData(m, d)
        d.qpos[:] = qpos0[e]
        d.mocap_pos[0], d.mocap_quat[0] = goal_pos[e], goal_quat[e]
        mujoco.mj_forward(m, d)

    def episodes():
        for e in range(nb):
            start(e)
            for k in range(n):
                d.ctrl[:] = numpy_controller(task, d, desired[e, k, :7], desired[e, k, 7:])[0]
                for _ in range(task.frame_skip):
                    mujoco.mj_step(m, d)
                mujoco.mj_forward(m, d)

    nat = nb * n / time_calls(episodes, 1 if b > 1 else repeats)["median_s"]
    datas = [mujoco.MjData(m) for _ in range(2)]
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    state0 = np.empty((b, mujoco.mj_stateSize(m, spec)))
    for e in range(b):
        start(e)
        mujoco.mj_getState(m, d, state0[e], spec)
    ctrl = np.random.default_rng(0).uniform(-5, 5, (b, n * task.frame_skip, m.nu))
    rollout.rollout([m] * b, datas, state0, ctrl)
    ro = b * n / time_calls(lambda: rollout.rollout([m] * b, datas, state0, ctrl), repeats)["median_s"]
    print(f"| {b} | {n} | {mjx_sps:,.0f} | {c:.1f} | {nat:,.0f} | {ro:,.0f} | {mjx_sps / nat:.3f} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--hopper", action="store_true", help="benchmark hopper jump instead of the reacher")
    p.add_argument("--hopper-batches", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--hopper-steps", type=int, nargs="+", default=[250, 250, 50],
                   help="control steps per episode timed at each hopper batch size")
    p.add_argument("--box-pushing", action="store_true", help="benchmark box pushing instead of the reacher")
    p.add_argument("--box-batches", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--box-steps", type=int, nargs="+", default=[100, 100, 20],
                   help="control steps per episode timed at each box-pushing batch size")
    args = p.parse_args()
    if args.box_pushing:
        print(f"box-pushing-dense: dof 7, frame_skip 10 (Euler, Newton 4 iterations); jax {jax.__version__} on "
              f"{jax.devices()[0].platform}, mujoco {mujoco.__version__}, {os.cpu_count()} CPUs, "
              f"{platform.processor() or platform.machine()}\n")
        print("| batch | steps/episode | MJX jit reset + rollout (steps/s) | MJX compile (s) | native mj_step loop +"
              " numpy PD, 1 thread (steps/s) | native mujoco.rollout open-loop, 2 threads (steps/s) |"
              " MJX / native loop |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for b, n in zip(args.box_batches, args.box_steps):
            bench_box_pushing(b, n, args.repeats)
        print("\nsteps = control steps (10 physics substeps each); the native loop above batch 64 is timed on 64"
              " episodes; MJX above batch 64 on 1 call (its time includes the reset with IK).")
        return
    if args.hopper:
        print(f"hopper-jump-sparse: dof 3, frame_skip 4 (RK4); jax {jax.__version__} on "
              f"{jax.devices()[0].platform}, mujoco {mujoco.__version__}, {os.cpu_count()} CPUs, "
              f"{platform.processor() or platform.machine()}\n")
        print("| batch | steps/episode | MJX jit rollout (steps/s) | MJX compile (s) | native mj_step loop + numpy PD,"
              " 1 thread (steps/s) | native mujoco.rollout open-loop, 2 threads (steps/s) | MJX / native loop |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for b, n in zip(args.hopper_batches, args.hopper_steps):
            bench_hopper(b, n, args.repeats)
        print("\nsteps = control steps (4 RK4 physics substeps each); the native loop above batch 64 is timed on 64"
              " episodes; MJX above batch 64 on 1 call.")
        return
    task = make("reacher")
    print(f"reacher: dof {task.num_dof}, T {task.episode_length}, frame_skip {task.frame_skip}; "
          f"jax {jax.__version__} on {jax.devices()[0].platform}, mujoco {mujoco.__version__}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}\n")
    print("| batch | MJX jit rollout (steps/s) | MJX compile (s) | native mj_step loop + numpy PD, 1 thread"
          " (steps/s) | native mujoco.rollout open-loop, 2 threads (steps/s) | MJX / native loop |")
    print("|---:|---:|---:|---:|---:|---:|")
    for b in args.batches:
        c, mjx_sps = bench_mjx(task, b, args.repeats)
        nat = bench_native_loop(task, min(b, 256), 1 if b > 64 else args.repeats)
        ro = bench_native_rollout(task, b, args.repeats)
        ro_s = f"{ro:,.0f}" if ro is not None else "n/a"
        print(f"| {b} | {mjx_sps:,.0f} | {c:.1f} | {nat:,.0f} | {ro_s} | {mjx_sps / nat:.2f} |",
              flush=True)
    print("\nsteps = control steps (each: frame_skip physics substeps + one forward); "
          "the native loop at batch > 256 is timed on 256 episodes (per-step cost does not depend on batch).")


if __name__ == "__main__":
    main()
