"""Side by side: the ORIGINAL TOP-ERL's (PyTorch) update code and ours, on the same inputs, one call at a time.

    python benchmarks/learner_vs_upstream.py --upstream /path/to/TOP_ERL_ICLR25_Code \
        [--upstream-python /path/to/upstream-venv/bin/python] [--tasks box hopper] \
        [--steps critic_update critic_grad targets policy] [--repeats 1] [--lengths 10 50] [--token-buckets 1]
        [--json out.json]

`--upstream` takes the path of a local checkout of BruceGeLi/TOP_ERL_ICLR25_Code (required: the original's
side cannot run without it). `--upstream-python` is a python whose environment runs that code (torch, mp_pytorch,
fancy_gymnasium, trust-region-layers with the C++ `cpp_projection`, cw2, pyyaml); this script runs in the
project's environment and starts that python on benchmarks/upstream_worker.py, which imports the original code
from the checkout at run time and builds its agent from its own yaml configs (see that file). The driver then
asks it for one timed call at a time and interleaves: original call, our call, original call, …

Steps (`--steps`; the same (ℓ, o) and the same batch on both sides; buffer sampling is timed on neither side):
- `critic_update`: one critic step with its targets. Original: `TopErlAgent.update_critic()` (one epoch):
  `get_random_segments(pad_additional=True)`, `segments_n_step_return_vf`, critic forward, masked MSE, backward,
  AdamW, Polyak target update. Ours: `make_segmentation` + `packed_layout`, `projected_policy`, `critic_targets`,
  `critic_loss_and_grad`, AdamW, Polyak target update (`variants/top_erl.py`'s `critic_step` without the buffer
  sample and the random draw).
- `critic_grad`: the same on fixed targets (original: `segments_n_step_return_vf` answers prepared targets).
- `targets`: the targets alone (original: `get_random_segments` + `segments_n_step_return_vf`; ours:
  segmentation, `projected_policy`, `critic_targets`).
- `policy`: one policy step. Original: `TopErlAgent.update_policy()` (one epoch: `make_new_pred` with the
  projection and trust-region loss, `q_loss`, backward, Adam, and its old-policy Polyak copy). Ours:
  `policy_loss_and_grad` (projection, q_loss, trust-region loss) + Adam.

Shapes: the original's configs `box_push_random_init/seq/entire/*_dense.yaml` and `hopper_jump/seq/entire/*` and
our presets `box-dense` / `hopper-jump` (`make_learner`, with its default micro-batch for the CPU): box batch
512 × T 100, state 29, 7 dof (k = 63), policy 2×256; hopper 256 × T 250, state 17, 3 dof (k = 12), policy
2×128; critic E 128, 2 layers, 8 heads, single critic. The worker's shapes are checked against ours.

Segment lengths: every unique candidate ℓ = T // n (n = 1 … 25: 16 for T = 100, 21 for T = 250), or `--lengths`,
each `--repeats` times per side, with one random offset per (repeat, ℓ) that both sides use. Inputs: one random
batch (seeded numpy) given to both; the policy's and old policy's covariance factors are set to the same
matrices on both sides with KL_cov(new ‖ old) = `--cov-kl-ratio` × the bound, so that the covariance projection
is active (the original skips its C++ solve when the bound holds; ours always solves). Network weights are each
side's own initialisation (the cost does not depend on their values).

Timing: our functions are jitted once per step with traced ℓ and o (compile time reported on its own); one
warm-up call per side and step is excluded; every timed call is synchronous (`block_until_ready`). Printed per
task: a markdown table of medians (and means: the expected cost of a training step, ℓ being uniform over the
candidates) per step, original/ours, the machine, jax and torch versions, torch threads and the load average
(`os.getloadavg()`) before and after. `--json` writes every call.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import pickle
import platform
import subprocess
import sys
import tempfile
import time
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from flops import step_flops
from timing import compile_timed, cpu_model

from toperl_jax import buffer as buffer_lib
from toperl_jax import cli, envs, flags
from toperl_jax import segments as seg_lib
from toperl_jax.cli import UsageError
from toperl_jax.policy import cholesky_to_vector
from variants import top_erl as U

WORKER = pathlib.Path(__file__).with_name("upstream_worker.py")
DEFAULT_UPSTREAM_PYTHON = "/work/scratch/upstream/venv/bin/python"  # this project's machine; else pass the flag
PRESET = {"box": "box-dense", "hopper": "hopper-jump"}
EPISODE_LENGTH = {"box": 100, "hopper": 250}  # T of the learner (checked against the preset's)
Step = Literal["critic_update", "critic_grad", "targets", "policy"]
STEP_LABELS = {"critic_update": "critic update incl. targets", "critic_grad": "critic grad step, fixed targets",
               "targets": "critic targets only", "policy": "policy step"}


@dataclasses.dataclass(frozen=True)
class Args:
    upstream: str | None = None
    """path of a local checkout of BruceGeLi/TOP_ERL_ICLR25_Code (required)"""
    upstream_python: str | None = DEFAULT_UPSTREAM_PYTHON if os.path.exists(DEFAULT_UPSTREAM_PYTHON) else None
    """python of an environment that runs the original code (torch, mp_pytorch, fancy_gymnasium, trust-region-layers
    with cpp_projection, cw2, pyyaml)"""
    tasks: tuple[Literal["box", "hopper"], ...] = ("box", "hopper")
    """shape sets (the original's configs and our presets box-dense / hopper-jump)"""
    steps: tuple[Step, ...] = ("critic_update", "critic_grad", "targets", "policy")
    """what to time (module docstring)"""
    repeats: int = 1
    """timed calls per segment length and side"""
    lengths: tuple[int, ...] = ()
    """segment lengths to time (each must be a candidate T // n of every task); default: all candidates"""
    torch_threads: int = 2
    """torch.set_num_threads in the worker"""
    cov_kl_ratio: float = 10.0
    """KL_cov(policy ‖ old policy) / cov_bound of the covariance factors given to both sides (> 1: projected)"""
    iteration: int = 1
    """iteration number given to the entropy schedule on both sides"""
    token_buckets: int = 1
    """ours: static token budgets per pass (`--token-buckets` of variants/top_erl.py; the critic's targets + loss +
    gradient and the policy's Q-loss gradient run at the smallest that holds the drawn (ℓ, o))"""
    seed: int = 0
    json: str | None = None
    """optional path for every call's result"""


def check_args(args: Args) -> None:
    """One-line errors for what would otherwise fail later (before any heavy work)."""
    if args.upstream is None:
        raise UsageError("--upstream: required: the path of a local checkout of BruceGeLi/TOP_ERL_ICLR25_Code "
                         "(the original code's side of the benchmark)")
    agent = pathlib.Path(args.upstream) / "mprl" / "rl" / "agent" / "top_erl_agent.py"
    if not agent.is_file():
        raise UsageError(f"--upstream: {args.upstream} is not a checkout of BruceGeLi/TOP_ERL_ICLR25_Code "
                         f"(no {agent.relative_to(args.upstream)})")
    if args.upstream_python is None or not os.access(args.upstream_python, os.X_OK):
        raise UsageError(f"--upstream-python: required, a python that runs the original code (got "
                         f"{args.upstream_python!r})")
    if args.repeats < 1:
        raise UsageError(f"--repeats: must be >= 1, got {args.repeats}")
    if args.token_buckets < 1:
        raise UsageError(f"--token-buckets: must be >= 1, got {args.token_buckets}")
    if args.cov_kl_ratio <= 0:
        raise UsageError(f"--cov-kl-ratio: must be > 0, got {args.cov_kl_ratio}")
    for task in args.tasks:
        T = EPISODE_LENGTH[task]
        bad = [length for length in args.lengths if length not in seg_lib.segment_lengths(T)]
        if bad:
            raise UsageError(f"--lengths: {bad} not candidate lengths of {task} (T = {T}): "
                             f"{seg_lib.segment_lengths(T).tolist()}")


# ---------------------------------------------------------------------------------------------------------------
# Inputs, shared by both sides


def encode(x: np.ndarray):
    """numpy array → (dtype string, shape, bytes) for the worker (whose numpy may be another major version)."""
    x = np.ascontiguousarray(x)
    return x.dtype.str, x.shape, x.tobytes()


def random_batch(rng: np.random.Generator, B: int, T: int, S: int, dof: int, k: int) -> dict[str, np.ndarray]:
    """A plausible replay batch in upstream's names (`TopErlReplayBuffer` data), float32."""
    f = lambda scale, *shape: (scale * rng.normal(size=shape)).astype(np.float32)
    init_pos, init_vel = f(0.5, B, dof), f(0.1, B, dof)
    desired_pos = init_pos[:, None] + np.cumsum(f(0.02, B, T, dof), axis=1)
    desired_pos[:, 0] = init_pos
    desired_vel = f(0.3, B, T, dof)
    desired_vel[:, 0] = init_vel
    actions = np.concatenate([np.roll(desired_pos, -1, axis=1), np.roll(desired_vel, -1, axis=1)], axis=-1)
    dones = np.zeros((B, T), bool)
    dones[:, -1] = True
    return {"step_states": f(1.0, B, T, S), "step_desired_pos": desired_pos.astype(np.float32),
            "step_desired_vel": desired_vel, "step_actions": actions.astype(np.float32),
            "step_rewards": -np.abs(f(0.1, B, T)), "step_dones": dones,
            "episode_init_idx": np.zeros(B, np.int64), "episode_init_time": np.zeros(B, np.float32),
            "episode_init_pos": init_pos, "episode_init_vel": init_vel,
            "episode_params_mean": np.zeros((B, k), np.float32),
            "episode_params_L": np.broadcast_to(np.eye(k, dtype=np.float32), (B, k, k)).copy()}


def episode(batch: dict[str, np.ndarray]) -> buffer_lib.Episode:
    """The same batch as our learner's `Episode`."""
    a = lambda name: jnp.asarray(batch[name])
    return buffer_lib.Episode(states=a("step_states"), actions=a("step_actions"), rewards=a("step_rewards"),
                              dones=a("step_dones"), desired_pos=a("step_desired_pos"),
                              desired_vel=a("step_desired_vel"), init_time=a("episode_init_time"),
                              init_pos=a("episode_init_pos"), init_vel=a("episode_init_vel"),
                              params_mean=a("episode_params_mean"), params_L=a("episode_params_L"))


def covariance_factors(rng: np.random.Generator, k: int, bound: float, ratio: float):
    """(L_old = I, L_new = diag(exp(s·g))) with KL_cov(N(0, L_new L_newᵀ) ‖ N(0, I)) = ratio · bound."""
    g = rng.normal(size=k)
    kl = lambda s: 0.5 * np.sum(np.exp(2 * s * g) - 1 - 2 * s * g)
    lo, hi = 0.0, 1.0
    while kl(hi) < ratio * bound:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if kl(mid) < ratio * bound else (lo, mid)
    s = 0.5 * (lo + hi)
    return np.eye(k, dtype=np.float32), np.diag(np.exp(s * g)).astype(np.float32), float(kl(s))


# ---------------------------------------------------------------------------------------------------------------
# The original's side: the worker process


class Worker:
    """benchmarks/upstream_worker.py under `--upstream-python`; its stderr (upstream's prints) goes to a log file."""

    def __init__(self, python: str, upstream: str):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="upstream_worker_", suffix=".log", delete=False)
        self.proc = subprocess.Popen([python, str(WORKER), "--upstream", str(upstream)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log)

    def call(self, **req) -> dict:
        try:
            pickle.dump(req, self.proc.stdin, protocol=4)
            self.proc.stdin.flush()
            reply = pickle.load(self.proc.stdout)
        except (EOFError, BrokenPipeError) as e:
            self.proc.wait(timeout=10)
            raise RuntimeError(f"the upstream worker exited (status {self.proc.returncode}); its log "
                               f"{self.log.name} ends with:\n{self.tail()}") from e
        if not reply["ok"]:
            print(reply.get("traceback", ""), file=sys.stderr)
            raise RuntimeError(f"upstream worker: {reply['error']} (log: {self.log.name})")
        return reply

    def tail(self, n: int = 3000) -> str:
        return pathlib.Path(self.log.name).read_text()[-n:]

    def close(self, keep_log: bool) -> None:
        """Stop the worker; its log is deleted unless `keep_log` (after a failure)."""
        if self.proc.poll() is None:
            try:
                self.call(cmd="quit")
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if keep_log:
            print(f"upstream worker log: {self.log.name}", file=sys.stderr)
        else:
            os.unlink(self.log.name)


# ---------------------------------------------------------------------------------------------------------------
# Our side


def our_learner(task_name: str, token_buckets: int):
    args = dataclasses.replace(U.PRESETS[PRESET[task_name]], token_buckets=token_buckets)
    task = envs.make(args.env, **({"random_init": args.random_init} if args.env.startswith("box") else {}))
    flags.check_args(args, task)
    return U.make_learner(args, task, "cpu"), task


def our_steps(learner: U.Learner) -> dict:
    """The jitted steps, every input an argument (ℓ and o traced: one compile per step). The critic's passes run
    as `critic_step` runs them: inside `segments.token_switch`, at the smallest token budget that holds (ℓ, o)."""
    T, M = learner.T, learner.max_num_segments

    def segmentation(length, offset, extra_row):
        return seg_lib.make_segmentation(length, offset, T, M, extra_row)

    def at_budget(passes):  # passes(layout, seg, *operands), run in `segments.token_switch`'s branch of each budget
        return lambda budget: lambda seg, *ops: passes(seg_lib.packed_layout(seg, budget=budget), seg, *ops)

    def projected_mean_and_cov(p, ep, step, h0):
        _, _, mean_p, L_p, _ = U.projected_policy(learner, p.params, p.old_params, U.decision_states(ep), step, h0)
        return mean_p, L_p

    def targets_pass(layout, seg, target_params, ep, mean_p, L_p, key):
        return U.critic_targets(learner, target_params, ep, seg, layout, mean_p, L_p, key)[0]

    def padded_targets_pass(layout, seg, *ops):  # every branch returns the full budget's shape
        tgt = targets_pass(layout, seg, *ops)
        return jnp.pad(tgt, ((0, 0), (0, seg_lib.token_budget(T, M, True) - tgt.shape[1])))

    def grad_pass(layout, seg, params, ep, tgt, key):
        return U.critic_loss_and_grad(learner, params, ep, layout, tgt[:, :layout.valid.shape[0]], key)

    def update_pass(layout, seg, params, target_params, ep, mean_p, L_p, k_noise, k_drop):
        tgt = targets_pass(layout, seg, target_params, ep, mean_p, L_p, k_noise)
        return grad_pass(layout, seg, params, ep, tgt, k_drop)

    def apply_grads(c, per_critic, grads):
        updates, opt_state = learner.critic_optimizer.update(grads, c.opt_state, c.params)
        params = optax.apply_updates(c.params, updates)
        target_params = optax.incremental_update(params, c.target_params, learner.critic_tau)
        return U.CriticState(params=params, target_params=target_params, opt_state=opt_state), per_critic

    def targets(c, p, ep, length, offset, step, h0, key):
        seg = segmentation(length, offset, True)
        mean_p, L_p = projected_mean_and_cov(p, ep, step, h0)
        return seg_lib.token_switch(seg, learner.token_buckets, at_budget(padded_targets_pass), seg, c.target_params,
                                    ep, mean_p, L_p, key)

    def critic_update(c, p, ep, length, offset, step, h0, key):
        k_noise, k_drop = jax.random.split(key)
        seg = segmentation(length, offset, True)
        mean_p, L_p = projected_mean_and_cov(p, ep, step, h0)
        per_critic, grads = seg_lib.token_switch(seg, learner.token_buckets, at_budget(update_pass), seg, c.params,
                                                 c.target_params, ep, mean_p, L_p, k_noise, k_drop)
        return apply_grads(c, per_critic, grads)

    def critic_grad(c, ep, length, offset, tgt, key):
        seg = segmentation(length, offset, True)
        return apply_grads(c, *seg_lib.token_switch(seg, learner.token_buckets, at_budget(grad_pass), seg, c.params,
                                                    ep, tgt, key))

    def policy(p, c, ep, length, offset, step, h0, key):
        seg = segmentation(length, offset, False)
        grads, metrics = U.policy_loss_and_grad(learner, p.params, p.old_params, c.params, ep, seg, step, h0, key)
        updates, opt_state = learner.policy_optimizer.update(grads, p.opt_state, p.params)
        return p.replace(params=optax.apply_updates(p.params, updates), opt_state=opt_state), metrics

    return {"critic_update": jax.jit(critic_update), "critic_grad": jax.jit(critic_grad),
            "targets": jax.jit(targets), "policy": jax.jit(policy)}


def with_cov(params, L: np.ndarray, min_std: float):
    """Policy parameters whose (non-contextual) covariance factor is `L`."""
    inner = dict(params["params"])
    if "cov_vector" not in inner:
        raise RuntimeError("expected a non-contextual policy with a `cov_vector` parameter")
    inner["cov_vector"] = cholesky_to_vector(jnp.asarray(L), min_std)
    return {**params, "params": inner}


# ---------------------------------------------------------------------------------------------------------------
# One task


def summary(times) -> dict:
    t = np.asarray(times, np.float64)
    return {"median_s": float(np.median(t)), "mean_s": float(np.mean(t)), "min_s": float(np.min(t)),
            "max_s": float(np.max(t)), "n": int(t.size)}


def bench_task(name: str, args: Args) -> dict:
    rng = np.random.default_rng(args.seed)
    learner, task = our_learner(name, args.token_buckets)
    T, S, dof, k, B = learner.T, task.obs_size, task.num_dof, learner.mp.num_params, learner.batch_size
    assert T == EPISODE_LENGTH[name], (T, EPISODE_LENGTH[name])
    batch = random_batch(rng, B, T, S, dof, k)
    L_old, L_new, kl0 = covariance_factors(rng, k, learner.projection.cov_bound, args.cov_kl_ratio)
    lengths = list(args.lengths) or seg_lib.segment_lengths(T).tolist()
    units = [(length, int(rng.integers(0, length)) if T // length > 1 else 0)
             for _ in range(args.repeats) for length in lengths]
    load_before = os.getloadavg()

    # Ours: states, inputs, compiled steps
    key = jax.random.key(args.seed)
    cstate = U.init_critic_state(learner, jax.random.fold_in(key, 1))
    pstate = U.init_policy_state(learner, jax.random.fold_in(key, 2))
    min_std = learner.policy.min_std
    pstate = pstate.replace(params=with_cov(pstate.params, L_new, min_std),
                            old_params=with_cov(pstate.old_params, L_old, min_std))
    pstate = pstate.replace(opt_state=learner.policy_optimizer.init(pstate.params))
    ep = episode(batch)
    step = jnp.int32(args.iteration)
    h0 = U.initial_entropy(learner, pstate.old_params, U.decision_states(ep))
    N = seg_lib.token_budget(T, learner.max_num_segments, extra_row=True)
    fixed_targets = jnp.asarray(rng.normal(size=(B, N)), jnp.float32)
    fns = our_steps(learner)
    i32 = jnp.int32

    def our_args(step_name, length, offset, i):
        kk = jax.random.fold_in(key, 1000 + i)
        if step_name == "critic_grad":
            return cstate, ep, i32(length), i32(offset), fixed_targets, kk
        if step_name == "policy":
            return pstate, cstate, ep, i32(length), i32(offset), step, h0, kk
        return cstate, pstate, ep, i32(length), i32(offset), step, h0, kk

    # The original's side
    worker = Worker(args.upstream_python, args.upstream)
    ok = False
    try:
        t0 = time.perf_counter()
        info = worker.call(cmd="setup", task=name, threads=args.torch_threads, seed=args.seed,
                           data={n: encode(x) for n, x in batch.items()}, L_old=encode(L_old),
                           L_new=encode(L_new), iteration=args.iteration)["info"]
        setup_s = time.perf_counter() - t0
        ours_info = {"T": T, "state_dim": S, "num_dof": dof, "num_params": k, "batch_size": B,
                     "n_embd": learner.critic.n_embd, "n_layer": learner.critic.n_layer,
                     "n_head": learner.critic.n_head}
        mismatch = {n: (info[n], v) for n, v in ours_info.items() if info[n] != v}
        if abs(info["dt"] - learner.dt) > 1e-9:
            mismatch["dt"] = (info["dt"], learner.dt)
        avg, num = info["policy_hidden"]
        if (avg,) * num != tuple(learner.policy.hidden_sizes):
            mismatch["policy_hidden"] = ((avg,) * num, tuple(learner.policy.hidden_sizes))
        bound = learner.projection.cov_bound
        if abs(info["cov_bound"] - bound) > 1e-6 * bound:  # the original holds it in float32
            mismatch["cov_bound"] = (info["cov_bound"], bound)
        if mismatch:
            raise RuntimeError(f"{name}: the original's config and our preset differ (original, ours): {mismatch}")
        print(f"\n## {name}: batch {B} × T {T}, state {S}, {dof} dof (k = {k}), critic E {learner.critic.n_embd} × "
              f"{learner.critic.n_layer} layers × {learner.critic.n_head} heads; ours: preset {PRESET[name]}, "
              f"micro-batch {learner.micro_batch or B}, token budgets "
              f"{seg_lib.token_buckets(T, learner.max_num_segments, True, args.token_buckets)} (critic) / "
              f"{seg_lib.token_buckets(T, learner.max_num_segments, False, args.token_buckets)} (policy); original: "
              f"{info['sampler_env']}, torch {info['torch']} ({info['threads']} threads), setup {setup_s:.1f} s; "
              f"KL_cov(new ‖ old) = {kl0:.3g} = {kl0 / bound:.1f} × bound {bound:g} (the original sees "
              f"{info['kl_cov']:.3g}, bound {info['cov_bound']:g}); "
              f"{len(units)} calls per side and step (lengths {lengths})", flush=True)

        results = {}
        for step_name in args.steps:
            compiled, compile_s = compile_timed(fns[step_name], *our_args(step_name, lengths[0], 0, -1))
            jax.block_until_ready(compiled(*our_args(step_name, lengths[0], 0, -2)))  # warm-up, excluded
            worker.call(cmd="time", step=step_name, length=lengths[0], offset=0)  # warm-up, excluded
            calls = []
            for i, (length, offset) in enumerate(units):
                up = worker.call(cmd="time", step=step_name, length=length, offset=offset)
                a = our_args(step_name, length, offset, i)
                t0 = time.perf_counter()
                jax.block_until_ready(compiled(*a))
                ours_s = time.perf_counter() - t0
                rows = up["rows"]
                flop = step_flops(step_name, B=B, T=T, length=length, offset=offset, E=learner.critic.n_embd,
                                  n_layer=learner.critic.n_layer, state_dim=S, action_dim=2 * dof,
                                  max_num_segments=learner.max_num_segments, token_buckets=args.token_buckets)
                calls.append({"length": length, "offset": offset, "original_s": up["seconds"], "ours_s": ours_s,
                              "original_rows": rows, "original_tokens_per_traj": rows * (length + 1),
                              "original_flop": flop["original"], "ours_flop": flop["ours"]})
            res = {"compile_s": compile_s, "original": summary([c["original_s"] for c in calls]),
                   "ours": summary([c["ours_s"] for c in calls]), "calls": calls}
            for side in ("original", "ours"):  # achieved rate: total critic matmul FLOPs / total time
                res[side]["gflop"] = float(np.mean([c[f"{side}_flop"] for c in calls])) / 1e9
                res[side]["gflop_per_s"] = res[side]["gflop"] / res[side]["mean_s"]
            res["ratio_median"] = res["original"]["median_s"] / res["ours"]["median_s"]
            res["ratio_mean"] = res["original"]["mean_s"] / res["ours"]["mean_s"]
            results[step_name] = res
            print(f"  {STEP_LABELS[step_name]}: original {res['original']['median_s']:.3f} s, ours "
                  f"{res['ours']['median_s']:.3f} s (compile {compile_s:.1f} s): {res['ratio_median']:.2f}×",
                  flush=True)
        ok = True
    finally:
        worker.close(keep_log=not ok)
    load_after = os.getloadavg()
    return {"task": name, "preset": PRESET[name], "shapes": ours_info, "dt": learner.dt,
            "micro_batch": learner.micro_batch, "token_budget_critic": N, "token_buckets": args.token_buckets,
            "original_info": info,
            "kl_cov": kl0, "lengths": lengths, "units": units, "load_before": load_before,
            "load_after": load_after, "steps": results}


def matmul_rates() -> dict[str, float]:
    """This CPU's float32 matmul rate under XLA: a square product and the critic's layer shape (a 16-trajectory
    chunk of box tokens, `seg_lib.token_budget(100)` each, times the MLP's first weight), each the median of 5 calls."""
    rates = {}
    for m, k, n in ((2048, 2048, 2048), (16 * seg_lib.token_budget(100), 128, 512)):
        a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
        f = jax.jit(jnp.matmul)
        jax.block_until_ready(f(a, b))
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            jax.block_until_ready(f(a, b))
            times.append(time.perf_counter() - t0)
        rates[f"{m}x{k}@{k}x{n}"] = 2 * m * k * n / float(np.median(times)) / 1e9
    return rates


def table(res: dict) -> str:
    lines = ["| step | original median (s) | ours median (s) | original/ours | original mean (s) | ours mean (s) | "
             "original/ours (means) | ours compile (s) |", "|---|---|---|---|---|---|---|---|"]
    for step_name, r in res["steps"].items():
        lines.append(f"| {STEP_LABELS[step_name]} | {r['original']['median_s']:.3f} | {r['ours']['median_s']:.3f} | "
                     f"{r['ratio_median']:.2f} | {r['original']['mean_s']:.3f} | {r['ours']['mean_s']:.3f} | "
                     f"{r['ratio_mean']:.2f} | {r['compile_s']:.1f} |")
    lines += ["", "| step | original GFLOP (mean) | original GFLOP/s | ours GFLOP (mean) | ours GFLOP/s |",
              "|---|---|---|---|---|"]
    for step_name, r in res["steps"].items():
        o, u = r["original"], r["ours"]
        lines.append(f"| {STEP_LABELS[step_name]} | {o['gflop']:.1f} | {o['gflop_per_s']:.1f} | {u['gflop']:.1f} | "
                     f"{u['gflop_per_s']:.1f} |")
    fmt = lambda la: " ".join(f"{x:.2f}" for x in la)
    lines.append(f"\nload average (1/5/15 min) before {fmt(res['load_before'])}, after {fmt(res['load_after'])}")
    return "\n".join(lines)


def main(args: Args) -> dict:
    check_args(args)
    machine = {"cpu": cpu_model(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
               "platform": platform.platform(), "jax": jax.__version__, "backend": jax.default_backend()}
    print(f"machine: {machine['cpu']} ({machine['processor'] or platform.machine()}), {machine['cpu_count']} CPUs, "
          f"{machine['platform']}; jax {machine['jax']} ({machine['backend']}); load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    machine["matmul_gflop_per_s"] = matmul_rates()
    print("XLA:CPU float32 matmul rate (GFLOP/s, median of 5): " + ", ".join(
        f"{shape} {rate:.0f}" for shape, rate in machine["matmul_gflop_per_s"].items()), flush=True)
    out = {"machine": machine, "args": dataclasses.asdict(args), "load_start": os.getloadavg(), "tasks": {}}
    for name in args.tasks:
        out["tasks"][name] = bench_task(name, args)
    out["load_end"] = os.getloadavg()
    for name, res in out["tasks"].items():
        print(f"\n### {name} (original: torch {res['original_info']['torch']}, {res['original_info']['threads']} "
              f"threads; ours: jax {machine['jax']}, micro-batch {res['micro_batch'] or res['shapes']['batch_size']}; "
              f"{machine['cpu']}, {machine['cpu_count']} CPUs)\n")
        print(table(res))
    if args.json:
        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2))
        print(f"wrote {path}")
    return out


if __name__ == "__main__":
    cli.main(lambda: main(tyro.cli(Args)))
