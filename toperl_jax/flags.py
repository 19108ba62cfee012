"""The flags TOP-ERL and its forks share (spec: top_erl.md; the numbers: the upstream configs named per preset).

One frozen dataclass (`Flags`, one line of help per flag), the preset numbers per task (`PRESETS`, plain data),
the checks (`check_env`, `check_args`, before anything compiles), the task (`make_task`) and the library configs
derived from the flags (`prodmp_config`, `critic_network`, `policy_network`, `projection_config`), each in this one
place. A variant's `Args` subclasses `Flags`, so flag names and `args.json` stay flat (why not nested:
docs/architecture.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import re
import sys
from typing import Literal, TypeVar

import jax
import jax.numpy as jnp
import tyro

from toperl_jax import envs
from toperl_jax import segments as seg_lib
from toperl_jax.cli import UsageError
from toperl_jax.critic import TransformerCritic
from toperl_jax.mp import ProDMPConfig
from toperl_jax.policy import GaussianPolicy
from toperl_jax.projection import ProjectionConfig


def _defaults(cls) -> dict:
    """The library's defaults of a config dataclass (or flax module), so that a flag never writes one again."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


_MP, _POLICY = _defaults(ProDMPConfig), _defaults(GaussianPolicy)
_CRITIC, _PROJECTION = _defaults(TransformerCritic), _defaults(ProjectionConfig)


@dataclasses.dataclass(frozen=True)
class Flags:
    """The TOP-ERL family's flags; the defaults are the `reach` preset."""

    # --- run
    task: str = "reach"
    """preset: task plus the upstream hyperparameters for it (flags given alongside override the preset)"""
    env: str = "reacher"
    """environment (`toperl_jax.envs.task_names()`), set by the preset; `--task metaworld` takes a metaworld-* task"""
    physics_impl: Literal["jax", "warp"] = "jax"
    """MJX implementation: jax (pure JAX, any device) or warp (MuJoCo Warp kernels, for CUDA GPUs; the `gpu` extra)"""
    solver_iterations: tuple[int, int] | None = None
    """MJX constraint solver (iterations, line-search iterations), replacing the task's MJCF (box pushing 4 8, hopper
    6 6; None = keep them); docs/envs.md's solver study has the speed/parity trade-off, e.g. `100 50`"""
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
    """F: the learner sees every F-th step of F·dt (rewards summed per block × 1/F; Meta-World 5; 1 = off)"""

    # --- agent (upstream `agent.args`)
    lr_policy: float = 5e-3
    """policy Adam learning rate"""
    lr_critic: float = 3e-4
    """critic AdamW learning rate"""
    anneal_lr_policy: bool = True
    """decay the policy learning rate linearly to 0 (not upstream; on in `reach` only)"""
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
    buffer_warmup: bool = False
    """fill the buffer with ⌈batch / num_envs⌉ rollouts of the initial policy before iteration 1 (upstream)"""
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
    """ablation switch: V-target actions from the buffered desired pos/vel at the row start (else the episode start)"""
    micro_batch: int = 0
    """trajectories per sequential chunk of the learner's passes (same numbers); 0 = auto: 16 on a CPU, all on a GPU"""
    token_buckets: int = 1
    """static token budgets of the learner's passes: each update runs at the smallest that holds its segmentation
    (the same values, fewer padding tokens, one compiled branch each: faster steps, longer compile; docs/critic.md)"""

    # --- ProDMP (upstream `mp.args`; dof and dt come from the task) → `prodmp_config`
    num_basis: int = 1
    """ProDMP basis functions per dof"""
    tau: float = 0.5
    """ProDMP duration in seconds"""
    alpha_phase: float = _MP["alpha_phase"]
    """phase convergence rate"""
    alpha: float = _MP["alpha"]
    """DMP spring gain"""
    basis_bandwidth_factor: float = _MP["basis_bandwidth_factor"]
    """basis width factor"""
    num_basis_outside: int = _MP["num_basis_outside"]
    """extra basis functions beyond the phase range"""
    weights_scale: float = _MP["weights_scale"]
    """scale of the basis weights"""
    goal_scale: float = _MP["goal_scale"]
    """scale of the goal weight"""
    auto_scale_basis: bool = True  # every upstream TOP-ERL config; ProDMPConfig's False is MP_PyTorch's default
    """normalise the basis so that a unit weight moves the trajectory by about one unit"""
    relative_goal: bool = _MP["relative_goal"]
    """goal relative to the initial position"""
    disable_goal: bool = _MP["disable_goal"]
    """no goal weight (goal = initial position)"""

    # --- policy (upstream `policy.args`) → `policy_network`
    policy_hidden_sizes: tuple[int, ...] = (128, 128)
    """mean-network hidden widths (leaky ReLU, orthogonal init)"""
    min_std: float = _POLICY["min_std"]
    """lower bound added to the diagonal of the Cholesky factor"""
    contextual_cov: bool = _POLICY["contextual_cov"]
    """covariance from a state-dependent network (upstream: false)"""

    # --- critic (upstream `critic.args`) → `critic_network`
    n_embd: int = 64
    """critic embedding width"""
    n_layer: int = _CRITIC["n_layer"]
    """transformer blocks"""
    n_head: int = 4
    """attention heads"""
    block_size: int = _CRITIC["block_size"]
    """size of the absolute position table (≥ 2T)"""
    dropout: float = _CRITIC["dropout"]
    """ablation: critic dropout"""
    use_layer_norm: bool = _CRITIC["use_layer_norm"]
    """ablation switch: layer norm in the critic"""
    relative_pos: bool = _CRITIC["relative_pos"]
    """ablation: position of a token relative to its segment start instead of its absolute time index"""
    double_critic: bool = False
    """ablation: two critics, min over both (upstream single_q: false)"""
    critic_bf16: bool = False
    """bf16 matmuls in the critic (upstream trains with mixed precision on GPU)"""
    matmul_precision: Literal["default", "high", "highest"] = "default"
    """float32 matmul precision of the whole run: default = JAX's (TF32 on Ampere/Hopper GPUs, float32 on CPU)"""

    # --- trust region (upstream `projection.args`) → `projection_config`
    projection: bool = True
    """ablation switch: KL trust-region projection (off: raw policy, no trust-region loss, no entropy control)"""
    mean_bound: float = 0.1
    """bound on the mean part of KL(π̃ ‖ π_old)"""
    cov_bound: float = 0.02
    """bound on the covariance part of KL(π̃ ‖ π_old)"""
    trust_region_coeff: float = _PROJECTION["trust_region_coeff"]
    """weight of the trust-region regression loss"""
    entropy_schedule: Literal["linear", "exp", "none"] = _PROJECTION["entropy_schedule"]
    """entropy control schedule over the iterations"""
    target_entropy: float = -1.5
    """per-dimension target entropy at the end of the schedule"""
    temperature: float = 0.7
    """base of the exp schedule"""
    entropy_eq: bool = True
    """entropy equality (instead of inequality) constraint"""
    entropy_first: bool = _PROJECTION["entropy_first"]
    """entropy projection before the trust-region projection"""

    # --- evaluation, logging, checkpoints (read by `toperl_jax.runner`)
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
    overwrite: bool = False
    """replace a run already in `logdir/run_name` (without it, starting a new run there is refused)"""
    compile_cache: str = "~/.cache/toperl-jax/xla"
    """persistent XLA compilation cache ('' disables; an already configured cache dir wins)"""
    video: bool = False
    """render the final mean policy to run_dir/final.mp4 (headless: MUJOCO_GL=egl; mp4: the `render` extra)"""
    distributed: bool = False
    """several processes (hosts) share the seeds: `jax.distributed` (SLURM / Open MPI detected, else the next 3)"""
    coordinator_address: str | None = None
    """with --distributed outside SLURM / Open MPI: host:port of process 0"""
    num_processes: int | None = None
    """with --distributed outside SLURM / Open MPI: the number of processes"""
    process_id: int | None = None
    """with --distributed outside SLURM / Open MPI: this process's index, 0 … num_processes − 1"""

    @property
    def run_dir(self) -> pathlib.Path:
        default = f"{self.env}_s{self.seed}" if self.task == "metaworld" else f"{self.task}_s{self.seed}"
        return pathlib.Path(self.logdir) / (self.run_name or default)


# ---------------------------------------------------------------------------------------------------------------
# Presets: flag values per task (plain data; a variant builds its `Args` presets from them)

_BOX_COMMON = {
    "buffer_warmup": True, "old_policy_rate": 0.005, "entropy_eq": False, "anneal_lr_policy": False,
    "num_envs": 4, "iterations": 35000, "random_init": True, "lr_policy": 3e-4, "lr_critic": 5e-5, "wd_policy": 1e-5,
    "wd_critic": 1e-5, "epochs_policy": 15, "epochs_critic": 30, "batch_size": 512, "critic_update_from": 300,
    "policy_update_from": 2000, "num_basis": 8, "tau": 2.0, "alpha_phase": 3.0, "alpha": 10.0,
    "basis_bandwidth_factor": 3.0, "num_basis_outside": 0, "weights_scale": 0.3, "goal_scale": 0.3,
    "auto_scale_basis": True, "relative_goal": False, "disable_goal": False, "policy_hidden_sizes": (256, 256),
    "min_std": 1e-5, "n_embd": 128, "n_layer": 2, "n_head": 8, "block_size": 1024, "cov_bound": 5e-4,
    "trust_region_coeff": 1.0, "entropy_schedule": "linear", "target_entropy": 0.0, "temperature": 0.7,
    "eval_interval": 100, "num_eval_episodes": 152,
}

PRESETS: dict[str, dict] = {
    # Fast reaching task: the `Flags` defaults, tuned here to learn on a 2-core CPU in minutes (not an upstream
    # config; docs/top_erl.md, third tuning round).
    "reach": {"task": "reach", "env": "reacher"},
    # Upstream mprl/config/box_push_random_init/seq/entire/{shared,slurm}_dense.yaml.
    "box-dense": {"task": "box-dense", "env": "box-pushing-dense", "buffer_size": 5000, "mean_bound": 0.05,
                  **_BOX_COMMON},
    # Upstream .../shared_sparse.yaml: mean bound 0.005, buffer 7000.
    "box-sparse": {"task": "box-sparse", "env": "box-pushing-sparse", "buffer_size": 7000, "mean_bound": 0.005,
                   **_BOX_COMMON},
    # Upstream mprl/config/hopper_jump/seq/entire/{shared,slurm}_hopper.yaml.
    "hopper-jump": {
        "task": "hopper-jump", "env": "hopper-jump-sparse", "num_envs": 1, "iterations": 15000,
        "reward_redistribution": True, "buffer_warmup": True, "lr_policy": 1e-4, "lr_critic": 1e-4,
        "anneal_lr_policy": False, "wd_policy": 5e-5, "wd_critic": 5e-5, "epochs_policy": 10, "epochs_critic": 20,
        "batch_size": 256, "critic_update_from": 1, "policy_update_from": 250, "buffer_size": 1000, "num_basis": 3,
        "tau": 0.8, "alpha_phase": 3.0, "alpha": 10.0, "basis_bandwidth_factor": 3.0, "num_basis_outside": 0,
        "weights_scale": 1.0, "goal_scale": 1.0, "auto_scale_basis": True, "relative_goal": False,
        "disable_goal": False, "policy_hidden_sizes": (128, 128), "min_std": 1e-4, "n_embd": 128, "n_layer": 2,
        "n_head": 8, "block_size": 1024, "mean_bound": 0.1, "cov_bound": 0.02, "trust_region_coeff": 1.0,
        "entropy_schedule": "none", "entropy_eq": False, "target_entropy": 0.0, "old_policy_rate": 0.005,
        "eval_interval": 100, "num_eval_episodes": 152},
    # Upstream mprl/config/metaworld/seq/entire/{shared,slurm}_meta.yaml (one `--env metaworld-<name>` per run;
    # upstream's grid runs 8 seeds per task). ProDMP = the tasks' `prodmp_config()`.
    "metaworld": {
        "task": "metaworld", "env": "metaworld-reach", "num_envs": 2, "iterations": 25000,
        "traj_downsample_factor": 5, "buffer_warmup": True, "lr_policy": 1e-3, "lr_critic": 5e-5,
        "anneal_lr_policy": False, "wd_policy": 1e-5, "wd_critic": 1e-5, "epochs_policy": 15, "epochs_critic": 50,
        "batch_size": 256, "critic_update_from": 1, "policy_update_from": 200, "buffer_size": 3000, "num_basis": 8,
        "tau": 5.0, "alpha_phase": 3.0, "alpha": 10.0, "basis_bandwidth_factor": 5.0, "num_basis_outside": 0,
        "weights_scale": 0.1, "goal_scale": 0.1, "auto_scale_basis": True, "relative_goal": True,
        "disable_goal": False, "policy_hidden_sizes": (128, 128), "min_std": 1e-5, "n_embd": 128, "n_layer": 2,
        "n_head": 8, "block_size": 1024, "mean_bound": 0.005, "cov_bound": 5e-4, "trust_region_coeff": 1.0,
        "entropy_schedule": "none", "entropy_eq": False, "target_entropy": 0.0, "temperature": 0.7,
        "old_policy_rate": 0.005, "eval_interval": 100, "num_eval_episodes": 152},
}
# CPU scale (issue 24, docs/fidelity.md): the upstream hopper-jump numbers with smaller budgets only; the update
# ratio (1 episode, 20 critic / 10 policy steps per iteration, policy from iteration 250) stays the paper's. 3 token
# budgets: its 2,000 iterations of learner updates gain more (2.3 → 1.8 h) than the ~2 min of extra compile cost
# (docs/critic.md, "Token buckets"); the same values as one budget up to float rounding.
PRESETS["hopper-jump-cpu"] = {
    **PRESETS["hopper-jump"], "task": "hopper-jump-cpu", "iterations": 2000, "batch_size": 64, "n_embd": 64,
    "traj_downsample_factor": 5, "eval_interval": 50, "num_eval_episodes": 16, "token_buckets": 3}
# CPU scale for box pushing (dense): the upstream numbers with smaller budgets and an earlier start of the updates
# (upstream: critic from iteration 300, policy from 2000 = 0.8M env steps, which no CPU run here reaches); the
# per-iteration ratio (4 episodes, 30 critic / 15 policy steps) stays the paper's (docs/fidelity.md).
PRESETS["box-dense-cpu"] = {
    **PRESETS["box-dense"], "task": "box-dense-cpu", "iterations": 400, "batch_size": 64, "n_embd": 64,
    "traj_downsample_factor": 2, "critic_update_from": 1, "policy_update_from": 100, "eval_interval": 25,
    "num_eval_episodes": 16}

F = TypeVar("F", bound=Flags)


def parse(cls: type[F], presets: dict[str, F], argv: list[str] | None = None) -> F:
    """`--task` picks the preset (default: `cls`'s), then tyro parses every flag with that preset as the default."""
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", default=cls.task)
    task = pre.parse_known_args(argv)[0].task
    if task not in presets:
        raise SystemExit(f"--task {task!r} is not a preset; choose one of {', '.join(presets)}")
    return tyro.cli(cls, default=presets[task], args=argv)


# ---------------------------------------------------------------------------------------------------------------
# Checks (before anything is built or compiled; every error names its flag)


def warmup_episodes(args: Flags) -> int:
    """Episodes of the initial policy stored before iteration 1: ⌈batch / num_envs⌉ rollouts, or 0."""
    return args.num_envs * math.ceil(args.batch_size / args.num_envs) if args.buffer_warmup else 0


def check_env(args: Flags) -> None:
    """Reject an unknown `--env`, or a non-Meta-World one for the `metaworld` preset, before the task is built."""
    names = envs.task_names()
    metaworld = [n for n in names if n.startswith("metaworld-")]
    if args.env not in names:
        raise UsageError(f"--env: unknown task {args.env!r}; accepted: {', '.join(names)}"
                         + (" (the metaworld preset takes the metaworld-* ones)" if args.task == "metaworld" else ""))
    if args.task == "metaworld" and args.env not in metaworld:
        raise UsageError(f"--env: the metaworld preset needs a Meta-World task, got {args.env!r}; choose one of "
                         f"{', '.join(metaworld)}")
    try:
        envs.check_physics_impl(args.physics_impl)
    except ValueError as e:
        raise UsageError(f"--physics-impl: {e}") from None


def make_task(args: Flags) -> envs.EpisodicTask:
    """The task of `--env` (checked by `check_env` first) on `--physics-impl`. With MJX-Warp every episode that one
    vmapped call steps shares one contact list (`envs.base.make_data`), sized here for the largest such call:
    `--num-seeds` × the most episodes of one rollout (training, warm-up or evaluation)."""
    check_env(args)
    kwargs = {"random_init": args.random_init} if args.env.startswith("box") else {}
    worlds = args.num_seeds * max(args.num_envs, args.num_eval_episodes, warmup_episodes(args))
    task = envs.make(args.env, physics_impl=args.physics_impl, warp_worlds=worlds, **kwargs)
    if args.solver_iterations is not None:
        try:
            task.set_solver(*args.solver_iterations)
        except ValueError as e:
            raise UsageError(f"--solver-iterations: {e}") from None
    return task


def check_args(args: Flags, task: envs.EpisodicTask) -> None:
    """Reject inconsistent flags (`--env` itself: `check_env`, before the task is built). The ProDMP flags are
    checked by `ProDMPConfig` itself, its error renamed to the flag."""

    def fail(flag, msg):
        raise UsageError(f"--{flag.replace('_', '-')}: {msg}")

    for name in ("iterations", "num_envs", "num_seeds", "epochs_policy", "epochs_critic", "batch_size",
                 "buffer_size", "eval_interval", "num_eval_episodes", "max_num_segments", "n_layer", "n_head",
                 "n_embd"):
        if getattr(args, name) < 1:
            fail(name, f"must be ≥ 1, got {getattr(args, name)}")
    for name in ("lr_policy", "lr_critic", "mean_bound", "cov_bound"):
        if not getattr(args, name) > 0:
            fail(name, f"must be > 0, got {getattr(args, name)}")
    for name in ("critic_tau", "old_policy_rate"):
        if not 0 < getattr(args, name) <= 1:
            fail(name, f"must be in (0, 1], got {getattr(args, name)}")
    for name in ("wd_policy", "wd_critic", "trust_region_coeff"):
        if not getattr(args, name) >= 0:
            fail(name, f"must be ≥ 0, got {getattr(args, name)}")
    if not 0 <= args.discount <= 1:
        fail("discount", f"must be in [0, 1], got {args.discount}")
    if args.num_envs > args.buffer_size:
        fail("num_envs", f"{args.num_envs} episodes per iteration do not fit the buffer (--buffer-size "
                         f"{args.buffer_size})")
    if warmup_episodes(args) > args.buffer_size:
        fail("buffer_warmup", f"the warm-up's {warmup_episodes(args)} episodes do not fit the buffer (--buffer-size "
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
    lengths = seg_lib.segment_lengths(T, args.max_num_segments).tolist()
    if args.segment_length is not None and args.segment_length not in lengths:
        fail("segment_length", f"must be one of T // n = {lengths} for T = {T}, got {args.segment_length}")
    if args.block_size < 2 * T:
        fail("block_size", f"must be ≥ 2T = {2 * T}, got {args.block_size}")
    if args.n_embd % args.n_head:
        fail("n_embd", f"must be divisible by --n-head={args.n_head}, got {args.n_embd}")
    if args.token_buckets < 1:
        fail("token_buckets", f"must be ≥ 1, got {args.token_buckets}")
    if args.micro_batch < 0 or (args.micro_batch and args.batch_size % args.micro_batch):
        fail("micro_batch", f"must be 0 (auto) or divide --batch-size={args.batch_size}, got {args.micro_batch}")
    if not 0.0 <= args.dropout < 1.0:
        fail("dropout", f"must be in [0, 1), got {args.dropout}")
    if args.checkpoint_interval < 0:
        fail("checkpoint_interval", f"must be ≥ 0, got {args.checkpoint_interval}")
    try:
        prodmp_config(args, task)
    except ValueError as e:  # "ProDMPConfig.<field> must be …": the field is the flag
        m = re.match(r"ProDMPConfig\.(\w+) (.*)", str(e), re.S)
        if m is None:
            raise
        fail("tau" if m.group(1) == "dt" else m.group(1), m.group(2))  # dt is the task's; tau is too short for it


# ---------------------------------------------------------------------------------------------------------------
# The library configs, derived from the flags and the task (the only place that does)


def learner_grid(args: Flags, task: envs.EpisodicTask) -> tuple[int, float]:
    """(T, dt) the learner sees: T_env / F steps of F·dt (`--traj-downsample-factor` F)."""
    F = args.traj_downsample_factor
    return task.episode_length // F, task.dt * F


def prodmp_config(args: Flags, task: envs.EpisodicTask) -> ProDMPConfig:
    """The ProDMP on the env's dt (its table grid, as upstream's `mp.args.dt`): the learner's downsampled times
    t_k = init_time + (k + 1)·F·dt lie on that grid."""
    return ProDMPConfig(num_dof=task.num_dof, num_basis=args.num_basis, tau=args.tau, dt=task.dt,
                        alpha_phase=args.alpha_phase, alpha=args.alpha,
                        basis_bandwidth_factor=args.basis_bandwidth_factor, num_basis_outside=args.num_basis_outside,
                        weights_scale=args.weights_scale, goal_scale=args.goal_scale,
                        auto_scale_basis=args.auto_scale_basis, relative_goal=args.relative_goal,
                        disable_goal=args.disable_goal)


def critic_network(args: Flags, task: envs.EpisodicTask) -> TransformerCritic:
    """The transformer critic over (observation, action) tokens of the task."""
    return TransformerCritic(state_dim=task.obs_size, action_dim=task.action_size, n_embd=args.n_embd,
                             n_layer=args.n_layer, n_head=args.n_head, block_size=args.block_size,
                             dropout=args.dropout, use_layer_norm=args.use_layer_norm, relative_pos=args.relative_pos,
                             compute_dtype=jnp.bfloat16 if args.critic_bf16 else jnp.float32)


def policy_network(args: Flags, num_weights: int) -> GaussianPolicy:
    """The Gaussian policy over `num_weights` ProDMP weights."""
    return GaussianPolicy(action_dim=num_weights, hidden_sizes=args.policy_hidden_sizes, min_std=args.min_std,
                          contextual_cov=args.contextual_cov)


def projection_config(args: Flags) -> ProjectionConfig:
    """The trust region and entropy schedule (over `--iterations`)."""
    return ProjectionConfig(mean_bound=args.mean_bound, cov_bound=args.cov_bound,
                            trust_region_coeff=args.trust_region_coeff, entropy_schedule=args.entropy_schedule,
                            target_entropy=args.target_entropy, temperature=args.temperature,
                            entropy_eq=args.entropy_eq, entropy_first=args.entropy_first,
                            total_train_steps=args.iterations)


def matmul_precision(args: Flags):
    """Context manager that runs the enclosed tracing at `--matmul-precision` ('default': JAX's own setting, no
    override; 'high': bf16_3x; 'highest': float32)."""
    return jax.default_matmul_precision(None if args.matmul_precision == "default" else args.matmul_precision)


def micro_batch(args: Flags, platform: str | None = None) -> int | None:
    """Trajectories per sequential chunk of the learner's passes (`toperl_jax.chunks`) on the target `platform`
    (default: the backend at hand); None: one pass."""
    cpu = (platform or jax.default_backend()) == "cpu"
    micro = args.micro_batch or (16 if cpu and args.batch_size % 16 == 0 else 0)
    return micro if 0 < micro < args.batch_size else None
