"""TOP-ERL: Transformer-based Off-Policy Episodic RL (Li et al., ICLR 2025), end to end in one jitted program.

    python variants/top_erl.py                       # `reach` preset: learns on a laptop CPU in minutes
    python variants/top_erl.py --task box-dense      # the paper's box pushing, upstream hyperparameters
    python variants/top_erl.py --task box-dense --num-seeds 4 --segment-length 25   # an ablation is a flag
    python variants/top_erl.py --task metaworld --env metaworld-push   # one Meta-World task (a GPU run)
    python variants/top_erl.py --help                # every knob, with the chosen preset's values

One iteration (spec `top_erl.md` §2), all inside `jax.lax.scan` on the accelerator:
  1. roll out `num_envs` episodes with the raw policy: w ~ N(μ(s₀), LLᵀ) over ProDMP weights, decode the
     whole desired trajectory from the measured initial state, track it with the task's PD controller (MJX);
  2. add them to the FIFO trajectory buffer;
  3. from `critic_update_from` on: `epochs_critic` critic steps — transformer critic over (state, action
     sequence) tokens, random segment length per step, n-step targets from the Polyak target critic
     (`toperl_jax.updates.critic_step`);
  4. from `policy_update_from` on: `epochs_policy` policy steps through the KL trust-region projection
     (`toperl_jax.updates.policy_step`), then θ_old ← Polyak(θ_old, θ).
The host runs the program in chunks of `eval_interval` iterations; between chunks it evaluates the mean
policy on fresh episodes, logs to TensorBoard (one run per seed), prints a progress line and saves an orbax
checkpoint. `--num-seeds N` vmaps N independent runs into the same program.

Differences from the upstream code, on purpose:
- Sampling and learning are synchronous (upstream `TopErlAgent`); upstream's multi-processing agent samples
  with a policy one iteration old.
- The evaluation also runs at iteration 0 (the initial policy), so curves start at the random policy.
- `--traj-downsample-factor F` (Meta-World: 5) keeps the action at the end of each block of F steps, where the
  learner decodes it; upstream keeps the one at the start (`buffer.downsample_episode` explains).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro
from flax import struct
from jax import lax

from toperl_jax import buffer as buffer_lib
from toperl_jax import checkpoint as ckpt
from toperl_jax import envs, gaussian, updates
from toperl_jax.critic import TransformerCritic
from toperl_jax.logger import Progress, RunLogger, git_commit
from toperl_jax.mp import ProDMPConfig, prodmp_trajectory
from toperl_jax.policy import GaussianPolicy
from toperl_jax.projection import ProjectionConfig
from toperl_jax.segments import segment_lengths

# ---------------------------------------------------------------------------------------------------------------
# Flags


@dataclasses.dataclass(frozen=True)
class Args:
    """TOP-ERL. The defaults are the `reach` preset; `--task` selects another preset, other flags override it."""

    # --- run
    task: Literal["reach", "box-dense", "box-sparse", "hopper-jump", "metaworld"] = "reach"
    """preset: task plus the upstream hyperparameters for it (flags given alongside override the preset)"""
    env: str = "reacher"
    """environment (`toperl_jax.envs.task_names()`); set by the preset; with `--task metaworld`, one of the
    `metaworld-<name>` tasks (default metaworld-reach)"""
    seed: int = 0
    """random seed; seed i of `--num-seeds N` uses seed + i, so it equals a single run with that seed"""
    num_seeds: int = 1
    """independent runs trained side by side in one program (vmap), each logged as its own TensorBoard run"""
    iterations: int = 400
    """training iterations (each: one rollout of `num_envs` episodes plus the updates)"""
    num_envs: int = 64
    """episodes rolled out per iteration (upstream: num_env_train × episodes_per_train_env)"""
    random_init: bool = True
    """box pushing: random initial box pose (upstream BoxPushingRandomInit*); ignored by other tasks"""
    reward_redistribution: bool = False
    """hopper jump: move the sparse final reward to the take-off step (spec top_erl.md §6)"""
    traj_downsample_factor: int = 1
    """F: the env runs all T steps, the buffer and the learner see T / F steps of F·dt (states and desired pos/vel
    at the block starts, actions at the block ends, rewards summed per block × 1/F; `buffer.downsample_episode`);
    1 = off (upstream sampler `traj_downsample_factor`; Meta-World: 5)"""

    # --- agent (upstream `agent.args`)
    lr_policy: float = 5e-3
    """policy Adam learning rate"""
    lr_critic: float = 3e-4
    """critic AdamW learning rate"""
    anneal_lr_policy: bool = True
    """decay the policy learning rate linearly to 0 over the run's policy steps (not upstream, so off in the
    upstream presets; on in `reach`, where it settles the last evaluations; as CleanRL's `anneal_lr`)"""
    wd_policy: float = 1e-5
    """policy weight decay (coupled L2, as torch Adam)"""
    wd_critic: float = 1e-5
    """critic weight decay (decoupled AdamW, on ≥2-D parameters only)"""
    epochs_policy: int = 5
    """policy gradient steps per iteration"""
    epochs_critic: int = 20
    """critic gradient steps per iteration"""
    batch_size: int = 64
    """trajectories per critic / policy step (sampled uniformly with replacement from the buffer)"""
    critic_update_from: int = 5
    """first iteration (1-based) with critic updates"""
    policy_update_from: int = 20
    """first iteration (1-based) with policy updates"""
    buffer_size: int = 8000
    """replay buffer capacity in trajectories (FIFO)"""
    discount: float = 1.0
    """γ of the n-step targets"""
    critic_tau: float = 0.005
    """Polyak rate of the target critic, after every critic step (upstream critic `update_rate`)"""
    old_policy_rate: float = 0.05
    """Polyak rate of the old policy (the trust region's reference), once per iteration"""
    max_num_segments: int = 25
    """candidate segment counts 1 … M; lengths T // n"""
    segment_length: int | None = None
    """ablation: a fixed segment length (one of T // n) instead of a random one per update"""
    initial_condition_enforcement: bool = True
    """ablation switch: V targets decode â from the buffered desired pos/vel at the segment start (True) or from
    the episode start (False)"""
    micro_batch: int = 0
    """trajectories per sequential chunk of the critic / policy passes (same numbers, less memory);
    0 = auto: 16 on a CPU (reach preset: 0.53 iterations/s against 0.41–0.45 with 8; one critic step on the whole
    batch of 64 takes 1.7× as long as in chunks of 8), the whole batch on an accelerator"""

    # --- ProDMP (upstream `mp.args`; dof and dt come from the task)
    num_basis: int = 1
    """ProDMP basis functions per dof"""
    tau: float = 0.5
    """ProDMP duration in seconds"""
    alpha_phase: float = 3.0
    """phase convergence rate"""
    alpha: float = 25.0
    """DMP spring gain"""
    basis_bandwidth_factor: float = 3.0
    """basis width factor"""
    num_basis_outside: int = 0
    """extra basis functions beyond the phase range"""
    weights_scale: float = 1.0
    """scale of the basis weights"""
    goal_scale: float = 1.0
    """scale of the goal weight"""
    auto_scale_basis: bool = True
    """normalise the basis so that a unit weight moves the trajectory by about one unit"""
    relative_goal: bool = False
    """goal relative to the initial position"""
    disable_goal: bool = False
    """no goal weight (goal = initial position)"""

    # --- policy (upstream `policy.args`)
    policy_hidden_sizes: tuple[int, ...] = (128, 128)
    """mean-network hidden widths (leaky ReLU, orthogonal init)"""
    min_std: float = 1e-5
    """lower bound added to the diagonal of the Cholesky factor"""
    contextual_cov: bool = False
    """covariance from a state-dependent network (upstream: false)"""

    # --- critic (upstream `critic.args`)
    n_embd: int = 64
    """critic embedding width"""
    n_layer: int = 2
    """transformer blocks"""
    n_head: int = 4
    """attention heads"""
    block_size: int = 1024
    """size of the absolute position table (≥ 2T)"""
    dropout: float = 0.0
    """ablation: critic dropout"""
    use_layer_norm: bool = True
    """ablation switch: layer norm in the critic"""
    relative_pos: bool = False
    """ablation: position of a token relative to its segment start instead of its absolute time index"""
    double_critic: bool = False
    """ablation: two critics, min over both (upstream single_q: false)"""
    critic_bf16: bool = False
    """bf16 matmuls in the critic (upstream trains with mixed precision on GPU)"""

    # --- trust region (upstream `projection.args`)
    projection: bool = True
    """ablation switch: KL trust-region projection (off: raw policy, no trust-region loss, no entropy control)"""
    mean_bound: float = 0.1
    """bound on the mean part of KL(π̃ ‖ π_old)"""
    cov_bound: float = 0.02
    """bound on the covariance part of KL(π̃ ‖ π_old)"""
    trust_region_coeff: float = 1.0
    """weight of the trust-region regression loss"""
    entropy_schedule: Literal["linear", "exp", "none"] = "linear"
    """entropy control schedule over the iterations"""
    target_entropy: float = -1.5
    """per-dimension target entropy at the end of the schedule"""
    temperature: float = 0.7
    """base of the exp schedule"""
    entropy_eq: bool = True
    """entropy equality (instead of inequality) constraint"""
    entropy_first: bool = False
    """entropy projection before the trust-region projection"""

    # --- evaluation, logging, checkpoints
    eval_interval: int = 20
    """iterations per jitted chunk; evaluation, logging and checkpointing happen between chunks"""
    num_eval_episodes: int = 128
    """episodes of the deterministic (mean) policy per evaluation (upstream: 38 envs × 4)"""
    checkpoint_interval: int = 1
    """save an orbax checkpoint every this many chunks (0: never)"""
    logdir: str = "runs"
    """TensorBoard / checkpoint root"""
    run_name: str | None = None
    """run directory name under `logdir` (default: <task>_s<seed>)"""
    resume: bool = False
    """continue the run in `logdir/run_name` from its last checkpoint (the flags must match the saved ones)"""
    compile_cache: str = "~/.cache/toperl-jax/xla"
    """persistent XLA compilation cache, so that a second run skips the compile ('' disables; an already
    configured jax_compilation_cache_dir wins)"""
    video: bool = False
    """render one episode of the final mean policy to `run_dir/final.mp4` (headless: run with MUJOCO_GL=egl;
    mp4 needs the `render` extra)"""

    @property
    def run_dir(self) -> pathlib.Path:
        default = f"{self.env}_s{self.seed}" if self.task == "metaworld" else f"{self.task}_s{self.seed}"
        return pathlib.Path(self.logdir) / (self.run_name or default)


_BOX_COMMON = {
    "old_policy_rate": 0.005, "entropy_eq": False, "anneal_lr_policy": False,
    "num_envs": 4, "iterations": 35000, "random_init": True, "lr_policy": 3e-4, "lr_critic": 5e-5, "wd_policy": 1e-5, "wd_critic": 1e-5,
    "epochs_policy": 15, "epochs_critic": 30, "batch_size": 512, "critic_update_from": 300, "policy_update_from": 2000,
    "num_basis": 8, "tau": 2.0, "alpha_phase": 3.0, "alpha": 10.0, "basis_bandwidth_factor": 3.0, "num_basis_outside": 0,
    "weights_scale": 0.3, "goal_scale": 0.3, "auto_scale_basis": True, "relative_goal": False, "disable_goal": False,
    "policy_hidden_sizes": (256, 256), "min_std": 1e-5, "n_embd": 128, "n_layer": 2, "n_head": 8, "block_size": 1024,
    "cov_bound": 5e-4, "trust_region_coeff": 1.0, "entropy_schedule": "linear", "target_entropy": 0.0, "temperature": 0.7,
    "eval_interval": 100, "num_eval_episodes": 152,
}

PRESETS: dict[str, Args] = {
    # Fast reaching task: tuned here to learn on a 2-core CPU in minutes (not an upstream config); in particular
    # tau = 0.5 s (half the episode) with alpha = 25 so that the goal weight alone holds the second half of the
    # episode, where success is read, one basis function per joint for the transit (docs/top_erl.md, third
    # tuning round), and the policy learning rate annealed to 0 (4 seeds: every final evaluation >= 0.91).
    "reach": Args(),
    # Upstream mprl/config/box_push_random_init/seq/entire/{shared,slurm}_dense.yaml.
    "box-dense": Args(task="box-dense", env="box-pushing-dense", buffer_size=5000, mean_bound=0.05, **_BOX_COMMON),
    # Upstream .../shared_sparse.yaml: mean bound 0.005, buffer 7000.
    "box-sparse": Args(task="box-sparse", env="box-pushing-sparse", buffer_size=7000, mean_bound=0.005,
                       **_BOX_COMMON),
    # Upstream mprl/config/hopper_jump/seq/entire/{shared,slurm}_hopper.yaml.
    "hopper-jump": Args(
        task="hopper-jump", env="hopper-jump-sparse", num_envs=1, iterations=15000, reward_redistribution=True,
        lr_policy=1e-4, lr_critic=1e-4, anneal_lr_policy=False, wd_policy=5e-5, wd_critic=5e-5, epochs_policy=10,
        epochs_critic=20,
        batch_size=256, critic_update_from=1, policy_update_from=250, buffer_size=1000,
        num_basis=3, tau=0.8, alpha_phase=3.0, alpha=10.0, basis_bandwidth_factor=3.0, num_basis_outside=0,
        weights_scale=1.0, goal_scale=1.0, auto_scale_basis=True, relative_goal=False, disable_goal=False,
        policy_hidden_sizes=(128, 128), min_std=1e-4, n_embd=128, n_layer=2, n_head=8, block_size=1024,
        mean_bound=0.1, cov_bound=0.02, trust_region_coeff=1.0, entropy_schedule="none", entropy_eq=False,
        target_entropy=0.0, old_policy_rate=0.005, eval_interval=100,
        num_eval_episodes=152),
    # Upstream mprl/config/metaworld/seq/entire/{shared,slurm}_meta.yaml (one `--env metaworld-<name>` per run;
    # upstream's grid runs 8 seeds per task). ProDMP = the tasks' `prodmp_config()`.
    "metaworld": Args(
        task="metaworld", env="metaworld-reach", num_envs=2, iterations=25000, traj_downsample_factor=5,
        lr_policy=1e-3, lr_critic=5e-5, anneal_lr_policy=False, wd_policy=1e-5, wd_critic=1e-5, epochs_policy=15,
        epochs_critic=50,
        batch_size=256, critic_update_from=1, policy_update_from=200, buffer_size=3000,
        num_basis=8, tau=5.0, alpha_phase=3.0, alpha=10.0, basis_bandwidth_factor=5.0, num_basis_outside=0,
        weights_scale=0.1, goal_scale=0.1, auto_scale_basis=True, relative_goal=True, disable_goal=False,
        policy_hidden_sizes=(128, 128), min_std=1e-5, n_embd=128, n_layer=2, n_head=8, block_size=1024,
        mean_bound=0.005, cov_bound=5e-4, trust_region_coeff=1.0, entropy_schedule="none", entropy_eq=False,
        target_entropy=0.0, temperature=0.7, old_policy_rate=0.005, eval_interval=100, num_eval_episodes=152),
}


def parse_args(argv: list[str] | None = None) -> Args:
    """`--task` picks the preset, then tyro parses every flag with that preset as the default."""
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", default="reach")
    task = pre.parse_known_args(argv)[0].task
    if task not in PRESETS:
        raise SystemExit(f"--task {task!r} is not a preset; choose one of {', '.join(PRESETS)}")
    return tyro.cli(Args, default=PRESETS[task], args=argv)


def check_env(args: Args) -> None:
    """Reject an unknown `--env`, or a non-Meta-World one for the `metaworld` preset, before the task is built."""
    names = envs.task_names()
    metaworld = [n for n in names if n.startswith("metaworld-")]
    if args.env not in names:
        raise ValueError(f"--env: unknown task {args.env!r}; accepted: {', '.join(names)}"
                         + (" (the metaworld preset takes the metaworld-* ones)" if args.task == "metaworld" else ""))
    if args.task == "metaworld" and args.env not in metaworld:
        raise ValueError(f"--env: the metaworld preset needs a Meta-World task, got {args.env!r}; choose one of "
                         f"{', '.join(metaworld)}")


def check_args(args: Args, task: envs.EpisodicTask) -> None:
    """Reject inconsistent flags before anything is compiled, naming the flag (`--env` itself: `check_env`, before
    the task is built)."""

    def fail(flag, msg):
        raise ValueError(f"--{flag.replace('_', '-')}: {msg}")

    for name in ("iterations", "num_envs", "num_seeds", "epochs_policy", "epochs_critic", "batch_size",
                 "buffer_size", "eval_interval", "num_eval_episodes", "max_num_segments", "num_basis", "n_layer",
                 "n_head", "n_embd"):
        if getattr(args, name) < 1:
            fail(name, f"must be ≥ 1, got {getattr(args, name)}")
    if args.num_envs > args.buffer_size:
        fail("num_envs", f"{args.num_envs} episodes per iteration do not fit the buffer (--buffer-size "
                         f"{args.buffer_size})")
    if args.batch_size > args.buffer_size:
        fail("batch_size", f"{args.batch_size} is larger than the buffer (--buffer-size {args.buffer_size})")
    if not 1 <= args.critic_update_from <= args.iterations:
        fail("critic_update_from", f"must be in [1, --iterations={args.iterations}], got {args.critic_update_from}")
    if not args.critic_update_from <= args.policy_update_from <= args.iterations:
        fail("policy_update_from", f"must be in [--critic-update-from={args.critic_update_from}, --iterations="
                                   f"{args.iterations}], got {args.policy_update_from}")
    F = args.traj_downsample_factor
    if F < 1 or task.episode_length % F:
        fail("traj_downsample_factor", f"must be ≥ 1 and divide the episode length {task.episode_length} of "
                                       f"{task.name}, got {F}")
    T = task.episode_length // F  # the learner's T
    if args.max_num_segments > T:
        fail("max_num_segments", f"must be ≤ T = {T}, got {args.max_num_segments}")
    lengths = segment_lengths(T, args.max_num_segments).tolist()
    if args.segment_length is not None and args.segment_length not in lengths:
        fail("segment_length", f"must be one of T // n = {lengths} for T = {T}, got {args.segment_length}")
    if args.block_size < 2 * T:
        fail("block_size", f"must be ≥ 2T = {2 * T}, got {args.block_size}")
    if args.n_embd % args.n_head:
        fail("n_embd", f"must be divisible by --n-head={args.n_head}, got {args.n_embd}")
    if args.micro_batch < 0 or (args.micro_batch and args.batch_size % args.micro_batch):
        fail("micro_batch", f"must be 0 (auto) or divide --batch-size={args.batch_size}, got {args.micro_batch}")
    if not 0.0 <= args.dropout < 1.0:
        fail("dropout", f"must be in [0, 1), got {args.dropout}")
    if args.checkpoint_interval < 0:
        fail("checkpoint_interval", f"must be ≥ 0, got {args.checkpoint_interval}")


# ---------------------------------------------------------------------------------------------------------------
# The jitted program


@struct.dataclass
class TrainState:
    """Everything a run carries from one iteration to the next (one seed; `--num-seeds` adds a leading axis)."""

    policy: updates.PolicyState
    critic: updates.CriticState
    buffer: buffer_lib.TrajectoryBuffer
    initial_entropy: jax.Array  # [] H₀ of the entropy schedule; NaN until the first update sets it
    key: jax.Array


def make_learner(args: Args, task: envs.EpisodicTask) -> updates.Learner:
    # The ProDMP keeps the env's dt (its table grid, as upstream's `mp.args.dt`); the learner's T and dt are the
    # downsampled ones: t_k = init_time + (k + 1)·F·dt lies on that grid.
    mp = ProDMPConfig(num_dof=task.num_dof, num_basis=args.num_basis, tau=args.tau, dt=task.dt,
                      alpha_phase=args.alpha_phase, alpha=args.alpha,
                      basis_bandwidth_factor=args.basis_bandwidth_factor, num_basis_outside=args.num_basis_outside,
                      weights_scale=args.weights_scale, goal_scale=args.goal_scale,
                      auto_scale_basis=args.auto_scale_basis, relative_goal=args.relative_goal,
                      disable_goal=args.disable_goal)
    critic = TransformerCritic(state_dim=task.obs_size, action_dim=task.action_size, n_embd=args.n_embd,
                               n_layer=args.n_layer, n_head=args.n_head, block_size=args.block_size,
                               dropout=args.dropout, use_layer_norm=args.use_layer_norm,
                               relative_pos=args.relative_pos,
                               compute_dtype=jnp.bfloat16 if args.critic_bf16 else jnp.float32)
    policy = GaussianPolicy(action_dim=mp.num_params, hidden_sizes=args.policy_hidden_sizes, min_std=args.min_std,
                            contextual_cov=args.contextual_cov)
    projection = ProjectionConfig(mean_bound=args.mean_bound, cov_bound=args.cov_bound,
                                  trust_region_coeff=args.trust_region_coeff,
                                  entropy_schedule=args.entropy_schedule, target_entropy=args.target_entropy,
                                  temperature=args.temperature, entropy_eq=args.entropy_eq,
                                  entropy_first=args.entropy_first, total_train_steps=args.iterations)
    policy_steps = max(1, (args.iterations - args.policy_update_from + 1) * args.epochs_policy)
    policy_lr = optax.linear_schedule(args.lr_policy, 0.0, policy_steps) if args.anneal_lr_policy else args.lr_policy
    micro = args.micro_batch or (16 if jax.default_backend() == "cpu" and args.batch_size % 16 == 0 else 0)
    return updates.Learner(
        critic=critic, policy=policy, mp=mp, projection=projection,
        critic_optimizer=updates.critic_optimizer(args.lr_critic, args.wd_critic),
        policy_optimizer=updates.policy_optimizer(policy_lr, args.wd_policy),
        T=task.episode_length // args.traj_downsample_factor, dt=task.dt * args.traj_downsample_factor,
        batch_size=args.batch_size, discount=args.discount,
        max_num_segments=args.max_num_segments, critic_tau=args.critic_tau, old_policy_rate=args.old_policy_rate,
        micro_batch=micro if 0 < micro < args.batch_size else None, segment_length=args.segment_length,
        use_projection=args.projection, enforce_initial_condition=args.initial_condition_enforcement)


def nan_like(fn, *a):
    """The metrics (second output) of `fn(*a)` as float32 NaN, for an iteration or update that is skipped."""
    return jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, jnp.float32), jax.eval_shape(fn, *a)[1])


def as_f32(out):
    """(state, metrics) with the metrics cast to float32 (so both branches of a `lax.cond` agree)."""
    state, metrics = out
    return state, jax.tree.map(lambda m: m.astype(jnp.float32), metrics)


class Program(NamedTuple):
    """What `make_train` builds: pure single-seed functions (vmap them over seeds, jit them) and the statics."""

    init: Callable  # init(key) -> TrainState
    run_chunk: Callable  # run_chunk(state, first_it) -> (state, {name: [eval_interval]})
    evaluate: Callable  # evaluate(policy_params, key) -> {name: []}
    rollout: Callable  # rollout(policy_params, key, num_episodes, deterministic) -> (Episode, final, stats)
    task: envs.EpisodicTask
    learner: updates.Learner


def make_train(args: Args) -> Program:
    """Static set-up: the task, the learner and the pure functions of one run (see `Program`)."""
    check_env(args)
    task = envs.make(args.env, **({"random_init": args.random_init} if args.env.startswith("box") else {}))
    check_args(args, task)
    learner = make_learner(args, task)
    T, dof, k = learner.T, task.num_dof, learner.mp.num_params  # T: the learner's (T_env / F)
    times = task.action_times()  # [T_env] t_k = (k + 1) dt: the whole episode is executed at the env's dt

    def rollout(policy_params, key, num_episodes: int, deterministic: bool):
        """`num_episodes` fresh episodes with w ~ N(μ(s₀), LLᵀ) (or w = μ): (Episode [n, ...] as the learner
        stores it, i.e. downsampled to T_env / F steps, final env states, per-episode stats {name: [n]} of the
        whole env episode)."""
        k_reset, k_w = jax.random.split(key)
        start = jax.vmap(task.reset)(jax.random.split(k_reset, num_episodes))
        mean, L = learner.policy.apply(policy_params, start.obs)  # [n, k], [k, k] or [n, k, k]
        w = mean if deterministic else gaussian.sample(k_w, mean, L)
        pos, vel = prodmp_trajectory(learner.mp, w, times, jnp.zeros(num_episodes), start.desired_pos,
                                     start.desired_vel)  # [n, T_env, dof]
        final, ro = jax.vmap(task.rollout)(start, jnp.concatenate([pos, vel], axis=-1))
        rewards = jax.vmap(task.mdp_rewards)(ro) if args.reward_redistribution else ro.rewards
        episodes = buffer_lib.Episode(
            states=ro.obs, actions=ro.actions, rewards=rewards, dones=ro.dones, desired_pos=ro.desired_pos,
            desired_vel=ro.desired_vel, init_time=jnp.zeros(num_episodes), init_pos=ro.init_pos,
            init_vel=ro.init_vel, params_mean=mean, params_L=jnp.broadcast_to(L, (num_episodes, k, k)))
        episodes = buffer_lib.downsample_episode(episodes, args.traj_downsample_factor)  # [n, T, ...]
        stats = {"return": jnp.sum(ro.rewards, axis=-1), **ro.final_metrics}
        return episodes, final, stats

    def init(key) -> TrainState:
        k_pol, k_crit, key = jax.random.split(key, 3)
        example = buffer_lib.episode_spec(T, task.obs_size, dof, k)
        return TrainState(policy=updates.init_policy_state(learner, k_pol),
                          critic=updates.init_critic_state(learner, k_crit, 2 if args.double_critic else 1),
                          buffer=buffer_lib.init(args.buffer_size, example),
                          initial_entropy=jnp.full((), jnp.nan), key=key)

    def iteration(state: TrainState, it):
        """Iteration `it` (1-based, shared by all seeds so that the update gates stay real branches)."""
        key, k_roll, k_crit, k_pol = jax.random.split(state.key, 4)
        episodes, _, stats = rollout(state.policy.params, k_roll, args.num_envs, deterministic=False)
        buffer = buffer_lib.add(state.buffer, episodes)
        h0 = jnp.where(jnp.isnan(state.initial_entropy) & (it >= args.critic_update_from),
                       updates.initial_entropy(learner, state.policy.old_params, episodes.states[:, 0]),
                       state.initial_entropy)

        def critic_fn(c):
            return as_f32(updates.critic_update(learner, c, buffer, state.policy.params, state.policy.old_params, it, h0,
                                         k_crit, args.epochs_critic))

        critic, c_metrics = lax.cond(it >= args.critic_update_from, critic_fn,
                                     lambda c: (c, nan_like(critic_fn, c)), state.critic)

        def policy_fn(p):
            return as_f32(updates.policy_update(learner, p, buffer, critic.params, it, h0, k_pol,
                                                args.epochs_policy))

        policy, p_metrics = lax.cond(it >= args.policy_update_from, policy_fn,
                                     lambda p: (p, nan_like(policy_fn, p)), state.policy)
        metrics = {**{f"rollout/{n}": jnp.mean(v) for n, v in stats.items()},
                   **{f"critic/{n}": jnp.mean(v) for n, v in c_metrics.items()},
                   **{f"policy/{n}": jnp.mean(v) for n, v in p_metrics.items()}}
        metrics = {n: v.astype(jnp.float32) for n, v in metrics.items()}
        return TrainState(policy=policy, critic=critic, buffer=buffer, initial_entropy=h0, key=key), metrics

    def run_chunk(state: TrainState, first_it):
        """Iterations first_it … first_it + eval_interval − 1 (those past `iterations` are skipped).
        Returns the new state and the per-iteration metrics `{name: [eval_interval]}` (NaN where skipped)."""

        def body(s, i):
            it = first_it + i
            return lax.cond(it <= args.iterations, iteration, lambda s_, it_: (s_, nan_like(iteration, s_, it_)),
                            s, it)

        return lax.scan(body, state, jnp.arange(args.eval_interval, dtype=jnp.int32))

    def evaluate(policy_params, key):
        """Mean over `num_eval_episodes` fresh episodes of the deterministic policy: {return, task metrics}."""
        _, _, stats = rollout(policy_params, key, args.num_eval_episodes, deterministic=True)
        return {n: jnp.mean(v) for n, v in stats.items()}

    return Program(init, run_chunk, evaluate, rollout, task, learner)


# ---------------------------------------------------------------------------------------------------------------
# Host loop: chunks, evaluation, logging, checkpoints


def _to_host(tree) -> dict[str, np.ndarray]:
    return {n: np.asarray(v, np.float64) for n, v in tree.items()}


def _per_seed_summary(history: list[dict], num_seeds: int) -> list[dict]:
    """Final and best evaluation metrics per seed (best = highest success if the task has it, else return)."""
    key = "eval/is_success" if "eval/is_success" in history[-1] else "eval/return"
    out = []
    for s in range(num_seeds):
        rows = [{n: v[s] if isinstance(v, list) else v for n, v in h.items()} for h in history]
        best = max(rows, key=lambda r: r[key])
        out.append({"seed_index": s, "final": rows[-1], "best": best, "best_by": key})
    return out


def run(args: Args, max_chunks: int | None = None, verbose: bool = True, *, program: Program | None = None,
        title: str = "TOP-ERL", render_final=None) -> dict:
    """Train (or continue with `args.resume`) and return the summary dict (also written to run_dir/summary.json).

    `max_chunks` stops after that many chunks in this call (a checkpoint is written), e.g. to split a run
    across jobs; `--resume` continues it exactly. Other variants reuse this host loop with their own
    `program` (default: `make_train(args)`), `title` for the console and
    `render_final(args, program, state, run_dir, say)` for `--video` (default: `_render_final`).
    """
    say = print if verbose else (lambda *a, **k: None)
    if args.compile_cache and jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(args.compile_cache).expanduser()))
    program = make_train(args) if program is None else program
    render_final = _render_final if render_final is None else render_final
    init, run_chunk, evaluate, task = program.init, program.run_chunk, program.evaluate, program.task
    run_dir = args.run_dir
    if args.resume and not ckpt.has_checkpoint(run_dir):  # before anything is created or compiled
        raise ValueError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}")
    run_dir.mkdir(parents=True, exist_ok=True)
    args_json = ckpt.run_flags(args)
    keys = jnp.stack([jax.random.PRNGKey(args.seed + i) for i in range(args.num_seeds)])
    eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0x5EED))(keys)
    opts = task.compiler_options()
    if args.resume:  # only the shapes: the values come from the checkpoint
        state = jax.eval_shape(jax.vmap(init), keys)
    else:
        state = jax.jit(jax.vmap(init), compiler_options=opts)(keys)
    mgr = ckpt.manager(run_dir) if args.checkpoint_interval or args.resume else None
    chunk, history, wall_before = 0, [], 0.0
    if args.resume:
        # a flag added since the run was saved counts as saved with its default
        ckpt.check_same_flags(ckpt.saved_args(run_dir / "args.json", args), args_json)
        state, meta = ckpt.restore(mgr, state)
        chunk, history, wall_before = meta["chunk"], meta["history"], meta["wall_time"]
        say(f"resumed {run_dir} at iteration {min(chunk * args.eval_interval, args.iterations)}")
    else:
        (run_dir / "args.json").write_text(json.dumps(args_json, indent=1))

    chunk_fn = jax.jit(jax.vmap(run_chunk, in_axes=(0, None)), donate_argnums=0, compiler_options=opts)
    eval_fn = jax.jit(jax.vmap(evaluate), compiler_options=opts)
    logger = RunLogger(run_dir, args.num_seeds)
    steps_per_it = args.num_envs * task.episode_length
    progress = Progress(args.iterations, steps_per_it)
    num_chunks = math.ceil(args.iterations / args.eval_interval)
    learner_T = f" (learner: {program.learner.T} steps of {program.learner.dt:g} s)" \
        if program.learner.T != task.episode_length else ""
    say(f"{title} on {task.name} (preset {args.task}): {args.iterations} iterations × {args.num_envs} episodes × "
        f"T={task.episode_length}{learner_T}, {args.num_seeds} seed(s), logs in {run_dir}")

    def do_eval(it):
        m = _to_host(eval_fn(state.policy.params, jax.vmap(lambda k: jax.random.fold_in(k, it))(eval_keys)))
        return {f"eval/{n}": v for n, v in m.items()}

    if chunk == 0:
        ev = do_eval(0)
        logger.scalars(ev, 0)
        history.append({"iteration": 0, "env_steps": 0, **{n: v.tolist() for n, v in ev.items()}})
        say(progress.line(0, _headline(ev)))
    t_start, chunks_run, warned = time.perf_counter(), 0, set()
    while chunk < num_chunks and (max_chunks is None or chunks_run < max_chunks):
        first_it = chunk * args.eval_interval + 1
        if chunks_run == 0:
            say(f"compiling and running iterations {first_it}…{min(first_it + args.eval_interval - 1, args.iterations)}"
                " (the first chunk includes compilation)")
        state, metrics = chunk_fn(state, jnp.int32(first_it))
        chunk, chunks_run = chunk + 1, chunks_run + 1
        it = min(chunk * args.eval_interval, args.iterations)
        with np.errstate(all="ignore"):  # all-NaN means: that update has not started yet
            train = {n: np.nanmean(np.asarray(v, np.float64), axis=1) for n, v in metrics.items()}
        ev = do_eval(it)
        wall = wall_before + time.perf_counter() - t_start
        env_steps = it * steps_per_it
        logger.scalars({**train, **ev, "charts/wall_time": np.full(args.num_seeds, wall),
                        "charts/iteration": np.full(args.num_seeds, it)}, env_steps)
        history.append({"iteration": it, "env_steps": env_steps, "wall_time": wall,
                        **{n: v.tolist() for n, v in ev.items()}})
        if chunks_run == 1:
            progress.start(it)
        say(progress.line(it, _headline(ev, train)))
        for s in nonfinite_seeds(ev, warned):
            warned.add(s)
            print(f"WARNING: seed {args.seed + s} has non-finite evaluation metrics at iteration {it} (diverged: its "
                  "policy parameters are NaN/inf); the other seeds go on. Last finite evaluation: see summary.json",
                  file=sys.stderr)
        if mgr is not None and args.checkpoint_interval and (chunk % args.checkpoint_interval == 0
                                                             or chunk == num_chunks or chunks_run == max_chunks):
            ckpt.save(mgr, chunk, state, {"chunk": chunk, "history": history, "wall_time": wall})
    logger.close()
    summary = {"task": args.task, "env": args.env, "run_dir": str(run_dir), "iterations_done": history[-1]["iteration"],
               "env_steps": history[-1]["env_steps"], "wall_time": history[-1].get("wall_time", 0.0),
               "seeds": [args.seed + i for i in range(args.num_seeds)],
               "git_commit": git_commit(), "per_seed": _per_seed_summary(history, args.num_seeds),
               "history": history}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    if chunk == num_chunks:
        say(f"done: {summary['env_steps']} env steps in {summary['wall_time']:.0f} s; summary in "
            f"{run_dir / 'summary.json'}; TensorBoard: tensorboard --logdir {run_dir}")
        if args.video:
            render_final(args, program, state, run_dir, say)
    summary["state"] = state
    return summary


def nonfinite_seeds(ev: dict[str, np.ndarray], already: set[int] = frozenset()) -> list[int]:
    """Seed indices whose evaluation metrics (`{name: [num_seeds]}`) contain NaN/inf, minus `already`."""
    bad = ~np.all([np.isfinite(np.asarray(v, np.float64)) for v in ev.values()], axis=0)
    return [int(i) for i in np.flatnonzero(bad) if int(i) not in already]


def _headline(ev: dict, train: dict | None = None) -> dict[str, float]:
    """A few numbers for the progress line (seed mean)."""
    out = {}
    for name in ("eval/is_success", "eval/max_height", "eval/return"):
        if name in ev:
            out[name.split("/")[1].replace("is_", "")] = float(np.mean(ev[name]))
    if train:
        for name in ("critic/critic_loss", "policy/entropy"):
            v = train.get(name)
            if v is not None and np.isfinite(v).all():
                out[name.split("/")[1]] = float(np.mean(v))
    return out


def _render_final(args: Args, program: Program, state, run_dir: pathlib.Path, say) -> None:
    """Render one episode of seed 0's deterministic policy to run_dir/final.mp4 (failures are reported, not
    raised, so that a finished run is never lost to a missing GL backend)."""
    try:
        from toperl_jax.envs import render

        task, learner = program.task, program.learner

        params = jax.tree.map(lambda x: x[0], state.policy.params)
        start = task.reset(jax.random.PRNGKey(args.seed))
        mean, _ = learner.policy.apply(params, start.obs[None])
        pos, vel = prodmp_trajectory(learner.mp, mean[0], task.action_times(), 0.0, start.desired_pos,
                                     start.desired_vel)
        states = jax.jit(lambda s, d: render.episode_states(task, s, d))(start, jnp.concatenate([pos, vel], -1))
        path = render.render_episode(task, states, run_dir / "final.mp4")
        say(f"video of the final policy (seed {args.seed}): {path}")
    except Exception as e:  # noqa: BLE001 - report and keep the run's results
        say(f"--video failed: {type(e).__name__}: {e}\n(headless rendering needs MUJOCO_GL=egl or osmesa set "
            "before start, and `pip install -e .[render]` for mp4)")


if __name__ == "__main__":
    run(parse_args())
