"""TOP-ERL: Transformer-based Off-Policy Episodic RL (Li et al., ICLR 2025), end to end in one jitted program.

    python variants/top_erl.py                       # `reach` preset: learns on a laptop CPU in minutes
    python variants/top_erl.py --task box-dense      # the paper's box pushing, upstream hyperparameters
    python variants/top_erl.py --task box-dense --num-seeds 4 --segment-length 25   # an ablation is a flag
    python variants/top_erl.py --task metaworld --env metaworld-push   # one Meta-World task (a GPU run)
    python variants/top_erl.py --help                # every knob, with the chosen preset's values

One iteration (spec `top_erl.md` §2), all inside `jax.lax.scan` on the accelerator: roll out `num_envs`
episodes (w ~ N(μ(s₀), LLᵀ) over ProDMP weights, the whole trajectory tracked by the task's PD controller),
add them to the trajectory buffer, `epochs_critic` critic steps (`critic_step`: n-step targets on random
segments, packed into one token sequence per trajectory), `epochs_policy` policy steps through the KL
trust-region projection (`policy_step`), then θ_old ← Polyak(θ_old, θ). The file reads top to bottom: flags →
task, networks, optimisers → rollout → targets → losses → updates → iteration → host entry point; the
library (`toperl_jax`) supplies the parts: envs, ProDMP decoding, Gaussian and projection, critic network,
segments and the packed layout, buffer, chunks, runner. Deviations from upstream: docs/top_erl.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
from typing import Any, Literal

import chex
import jax
import jax.numpy as jnp
import optax
import tyro
from flax import struct
from jax import lax

from toperl_jax import buffer as buffer_lib
from toperl_jax import chunks, envs, gaussian, runner
from toperl_jax import critic as critic_lib
from toperl_jax import segments as seg_lib
from toperl_jax.critic import TransformerCritic
from toperl_jax.mp import ProDMPConfig, decode_token_actions, fix_relative_goal, prodmp_trajectory
from toperl_jax.policy import GaussianPolicy
from toperl_jax.projection import ProjectionConfig, kl_projection, trust_region_loss

PyTree = Any
sg = lax.stop_gradient

# ---------------------------------------------------------------------------------------------------------------
# Flags


@dataclasses.dataclass(frozen=True)
class Args:
    """TOP-ERL. The defaults are the `reach` preset; `--task` selects another preset, other flags override it."""

    # --- run
    task: Literal["reach", "box-dense", "box-sparse", "hopper-jump", "hopper-jump-cpu", "metaworld"] = "reach"
    """preset: task plus the upstream hyperparameters for it (flags given alongside override the preset)"""
    env: str = "reacher"
    """environment (`toperl_jax.envs.task_names()`), set by the preset; `--task metaworld` takes a metaworld-* task"""
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
    """fill the buffer with ⌈batch / num_envs⌉ rollouts of the initial policy before iteration 1 (upstream's
    multi-processing agent; on in the upstream presets)"""
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
    """trajectories per sequential chunk of the critic / policy passes (same numbers); 0 = auto: 16 on a CPU, all on a GPU"""

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
    overwrite: bool = False
    """replace a run already in `logdir/run_name` (without it, starting a new run there is refused)"""
    compile_cache: str = "~/.cache/toperl-jax/xla"
    """persistent XLA compilation cache ('' disables; an already configured cache dir wins)"""
    video: bool = False
    """render the final mean policy to run_dir/final.mp4 (headless: MUJOCO_GL=egl; mp4: the `render` extra)"""

    @property
    def run_dir(self) -> pathlib.Path:
        default = f"{self.env}_s{self.seed}" if self.task == "metaworld" else f"{self.task}_s{self.seed}"
        return pathlib.Path(self.logdir) / (self.run_name or default)


_BOX_COMMON = {
    "buffer_warmup": True, "old_policy_rate": 0.005, "entropy_eq": False, "anneal_lr_policy": False,
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
        buffer_warmup=True,
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
        buffer_warmup=True,
        lr_policy=1e-3, lr_critic=5e-5, anneal_lr_policy=False, wd_policy=1e-5, wd_critic=1e-5, epochs_policy=15,
        epochs_critic=50,
        batch_size=256, critic_update_from=1, policy_update_from=200, buffer_size=3000,
        num_basis=8, tau=5.0, alpha_phase=3.0, alpha=10.0, basis_bandwidth_factor=5.0, num_basis_outside=0,
        weights_scale=0.1, goal_scale=0.1, auto_scale_basis=True, relative_goal=True, disable_goal=False,
        policy_hidden_sizes=(128, 128), min_std=1e-5, n_embd=128, n_layer=2, n_head=8, block_size=1024,
        mean_bound=0.005, cov_bound=5e-4, trust_region_coeff=1.0, entropy_schedule="none", entropy_eq=False,
        target_entropy=0.0, temperature=0.7, old_policy_rate=0.005, eval_interval=100, num_eval_episodes=152),
}
# CPU scale (issue 24, docs/fidelity.md): the upstream hopper-jump preset with smaller budgets only: 4 episodes per
# iteration (upstream 1), batch 64 (256), a 64-wide critic (128), 10 / 5 critic / policy steps (20 / 10), the
# learner on every 5th step (upstream: all 250), policy updates after the same 250 episodes (iteration 63), 700
# iterations = 0.7M env steps (upstream 3.75M): 4 seeds take ≈ 1.9 h on 2 CPU cores.
PRESETS["hopper-jump-cpu"] = dataclasses.replace(
    PRESETS["hopper-jump"], task="hopper-jump-cpu", num_envs=4, iterations=700, batch_size=64, n_embd=64,
    epochs_critic=10, epochs_policy=5, traj_downsample_factor=5, policy_update_from=63, eval_interval=25,
    num_eval_episodes=32)


def parse_args(argv: list[str] | None = None) -> Args:
    """`--task` picks the preset, then tyro parses every flag with that preset as the default."""
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", default="reach")
    task = pre.parse_known_args(argv)[0].task
    if task not in PRESETS:
        raise SystemExit(f"--task {task!r} is not a preset; choose one of {', '.join(PRESETS)}")
    return tyro.cli(Args, default=PRESETS[task], args=argv)


def warmup_episodes(args: Args) -> int:
    """Episodes of the initial policy stored before iteration 1: ⌈batch / num_envs⌉ rollouts, or 0."""
    return args.num_envs * math.ceil(args.batch_size / args.num_envs) if args.buffer_warmup else 0


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
    if args.micro_batch < 0 or (args.micro_batch and args.batch_size % args.micro_batch):
        fail("micro_batch", f"must be 0 (auto) or divide --batch-size={args.batch_size}, got {args.micro_batch}")
    if not 0.0 <= args.dropout < 1.0:
        fail("dropout", f"must be in [0, 1), got {args.dropout}")
    if args.checkpoint_interval < 0:
        fail("checkpoint_interval", f"must be ≥ 0, got {args.checkpoint_interval}")


# ---------------------------------------------------------------------------------------------------------------
# Task, networks, optimisers


@dataclasses.dataclass(frozen=True)
class Learner:
    """Everything static about the updates (hashable; closed over by the jitted functions). Built from the flags
    by `make_learner`, which `check_args` has validated; T and dt are the learner's (after downsampling)."""

    critic: TransformerCritic
    policy: GaussianPolicy
    mp: ProDMPConfig
    projection: ProjectionConfig
    critic_optimizer: optax.GradientTransformation
    policy_optimizer: optax.GradientTransformation
    T: int  # steps per episode seen by the learner
    dt: float  # its time step: t_k = init_time + (k + 1)·dt
    batch_size: int
    discount: float = 1.0
    max_num_segments: int = seg_lib.MAX_NUM_SEGMENTS
    critic_tau: float = 0.005
    old_policy_rate: float = 0.005
    micro_batch: int | None = None  # trajectories per sequential chunk (`toperl_jax.chunks`); None: one pass
    segment_length: int | None = None  # None: random ℓ per update (spec §3); an int: the fixed-ℓ ablation
    use_projection: bool = True  # False: raw policy, no trust-region loss, no entropy control (ablation)
    enforce_initial_condition: bool = True  # V-target â from the buffered desired pos/vel at the row start


def critic_optimizer(learning_rate, weight_decay: float) -> optax.GradientTransformation:
    """AdamW on the stacked critic parameters, decay on ≥ 2-D parameters only (upstream `configure_optimizer`)."""
    return critic_lib.make_optimizer(learning_rate, weight_decay, stacked_axes=1)


def policy_optimizer(learning_rate, weight_decay: float) -> optax.GradientTransformation:
    """Adam with coupled L2 decay, as `torch.optim.Adam(lr, weight_decay=wd)`: g ← g + wd·θ, then Adam."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate, b1=0.9, b2=0.999,
                                                                          eps=1e-8))


def make_learner(args: Args, task: envs.EpisodicTask) -> Learner:
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
    return Learner(
        critic=critic, policy=policy, mp=mp, projection=projection,
        critic_optimizer=critic_optimizer(args.lr_critic, args.wd_critic),
        policy_optimizer=policy_optimizer(policy_lr, args.wd_policy),
        T=task.episode_length // args.traj_downsample_factor, dt=task.dt * args.traj_downsample_factor,
        batch_size=args.batch_size, discount=args.discount,
        max_num_segments=args.max_num_segments, critic_tau=args.critic_tau, old_policy_rate=args.old_policy_rate,
        micro_batch=micro if 0 < micro < args.batch_size else None, segment_length=args.segment_length,
        use_projection=args.projection, enforce_initial_condition=args.initial_condition_enforcement)


@struct.dataclass
class CriticState:
    params: PyTree  # online critics, every leaf stacked [C, ...] (C = 1 single, 2 double critic)
    target_params: PyTree  # Polyak-averaged target critics
    opt_state: optax.OptState


@struct.dataclass
class PolicyState:
    params: PyTree
    old_params: PyTree  # Polyak-averaged old policy: the trust region's reference
    opt_state: optax.OptState


@struct.dataclass
class TrainState:
    """Everything a run carries from one iteration to the next (one seed; `--num-seeds` adds a leading axis)."""

    policy: PolicyState
    critic: CriticState
    buffer: buffer_lib.TrajectoryBuffer
    initial_entropy: jax.Array  # [] H₀ of the entropy schedule; NaN until the first update sets it
    key: jax.Array


def init_critic_state(learner: Learner, key: jax.Array, num_critics: int = 1) -> CriticState:
    """Fresh critic ensemble; the target starts as a copy of the online parameters (upstream deepcopy)."""
    params = critic_lib.init_ensemble(learner.critic, key, num_critics)
    return CriticState(params=params, target_params=jax.tree.map(jnp.copy, params),
                       opt_state=learner.critic_optimizer.init(params))


def init_policy_state(learner: Learner, key: jax.Array) -> PolicyState:
    """Fresh policy; the old policy starts as a copy (upstream deepcopy at init)."""
    params = learner.policy.init(key, jnp.zeros((1, learner.critic.state_dim)))
    return PolicyState(params=params, old_params=jax.tree.map(jnp.copy, params),
                       opt_state=learner.policy_optimizer.init(params))


# ---------------------------------------------------------------------------------------------------------------
# Rollout


def rollout(args: Args, task: envs.EpisodicTask, learner: Learner, policy_params, key, num_episodes: int,
            deterministic: bool):
    """`num_episodes` fresh episodes with w ~ N(μ(s₀), LLᵀ) (or w = μ): the whole desired trajectory is decoded
    from the measured initial state and tracked by the task's PD controller. Returns (Episode [n, T, ...] as
    the learner stores it, i.e. downsampled to T_env / F steps, final env states, per-episode stats {name: [n]}
    of the whole env episode)."""
    k = learner.mp.num_params
    k_reset, k_w = jax.random.split(key)
    start = jax.vmap(task.reset)(jax.random.split(k_reset, num_episodes))
    mean, L = learner.policy.apply(policy_params, start.obs)  # [n, k], [k, k] or [n, k, k]
    w = mean if deterministic else gaussian.sample(k_w, mean, L)
    pos, vel = prodmp_trajectory(learner.mp, w, task.action_times(), jnp.zeros(num_episodes), start.desired_pos,
                                 start.desired_vel)  # [n, T_env, dof] at t_k = (k + 1) dt
    final, ro = jax.vmap(task.rollout)(start, jnp.concatenate([pos, vel], axis=-1))
    rewards = jax.vmap(task.mdp_rewards)(ro) if args.reward_redistribution else ro.rewards
    episodes = buffer_lib.Episode(
        states=ro.obs, actions=ro.actions, rewards=rewards, dones=ro.dones, desired_pos=ro.desired_pos,
        desired_vel=ro.desired_vel, init_time=jnp.zeros(num_episodes), init_pos=ro.init_pos,
        init_vel=ro.init_vel, params_mean=mean, params_L=jnp.broadcast_to(L, (num_episodes, k, k)))
    episodes = buffer_lib.downsample_episode(episodes, args.traj_downsample_factor)  # [n, T, ...]
    stats = {"return": jnp.sum(ro.rewards, axis=-1), **ro.final_metrics}
    return episodes, final, stats


# ---------------------------------------------------------------------------------------------------------------
# The policy at the decision states, and the segmentation of an update


def decision_states(episodes: buffer_lib.Episode) -> jax.Array:
    """d = s_0 of each trajectory, `[B, S]`."""
    return episodes.states[:, 0]


def initial_entropy(learner: Learner, old_params, d_states: jax.Array) -> jax.Array:
    """H₀ of the entropy schedule: batch mean of H(π_old(d)) (upstream sets it at the first `make_new_pred`)."""
    _, L_old = learner.policy.apply(old_params, d_states)
    return jnp.mean(gaussian.entropy(L_old))


def projected_policy(learner: Learner, params, old_params, d_states: jax.Array, step, h0):
    """Raw and projected policy at the decision states (upstream `make_new_pred`): (μ [B, k], L, μ̃ [B, k], L̃,
    info), L and L̃ `[k, k]` (or `[B, k, k]` contextual). The old policy is a constant; gradients reach `params`
    through the projection."""
    mean, L = learner.policy.apply(params, d_states)
    if not learner.use_projection:
        return mean, L, mean, L, {"fallback": jnp.zeros(mean.shape[:-1], bool)}
    mean_old, L_old = learner.policy.apply(old_params, d_states)
    mean_p, L_p, info = kl_projection(learner.projection, mean, L, sg(mean_old), sg(L_old), step, h0)
    return mean, L, mean_p, L_p, info


def row_noise(key: jax.Array, batch: int, num_rows: int, k: int) -> jax.Array:
    """ξ ~ N(0, I) `[batch, num_rows, k]`: one weight sample μ̃ + L̃ξ per (trajectory, row)."""
    return jax.random.normal(key, (batch, num_rows, k), dtype=jnp.float32)


def draw_segmentation(learner: Learner, key: jax.Array, extra_row: bool) -> seg_lib.Segmentation:
    """Random length and offset (spec §3), or the fixed `segment_length` with a random offset."""
    if learner.segment_length is None:
        return seg_lib.sample_segmentation(key, learner.T, learner.max_num_segments, extra_row)
    length = learner.segment_length
    offset = jax.random.randint(key, (), 0, length, dtype=jnp.int32) if learner.T // length > 1 else 0
    return seg_lib.make_segmentation(length, offset, learner.T, learner.max_num_segments, extra_row)


# ---------------------------------------------------------------------------------------------------------------
# Critic targets (spec §4, upstream `segments_n_step_return_vf`), on the packed layout of `toperl_jax.segments`


def critic_targets(learner: Learner, target_params, episodes: buffer_lib.Episode, seg: seg_lib.Segmentation,
                   layout: seg_lib.PackedLayout, mean_proj: jax.Array, L_proj: jax.Array, key: jax.Array):
    """Packed n-step targets `[B, N]` (no gradient) and aux {weights [B, R, k], actions [B, N, 2·dof],
    q_hat [B, N]}, for a segmentation with the extra row:
    - state token of row c: V target G_0 = min_C Q̄(s_c, â_c … â_{c+ℓ−1}), read at the row's last valid action,
      with â ~ the projected policy (one ξ per trajectory and row), decoded per token from the buffered desired
      pos/vel at c (initial-condition enforcement) or from the episode start (ablation);
    - action token k: Q target G = Σ_{j=c…k} γ^{j−c} r_j + γ^{k+1−c} min_C V̄(s_{k+1}) (V̄ = 0 at k + 1 ≥ T);
    - 0 at padded action tokens (k ≥ T) and packing tokens."""
    mean_proj, L_proj, target_params = sg(mean_proj), sg(L_proj), sg(target_params)
    chex.assert_shape(episodes.rewards, (None, seg.T))
    B, T, dt, mp = episodes.rewards.shape[0], seg.T, learner.dt, learner.mp
    xi = row_noise(key, B, seg.row_start.shape[0], mean_proj.shape[-1])
    contextual = L_proj.ndim == 3
    row = layout.row
    c_tok = seg.row_start[row]  # [N] row start of each token
    c_row = jnp.minimum(seg.row_start, T - 1)  # [R]; valid rows start before T, the unused slots are clipped

    def chunk(x):
        ep, m, xi_c, L_c = x
        w_rows = gaussian.sample_rows(m, L_c if contextual else L_proj, xi_c)  # [b, R, k]
        times = seg_lib.action_times(ep.init_time, layout.time_index, dt)  # [b, N]
        if learner.enforce_initial_condition:
            seg_pos, seg_vel = ep.desired_pos[:, c_row], ep.desired_vel[:, c_row]  # [b, R, dof]
            w_fixed = fix_relative_goal(mp, w_rows, ep.desired_pos[:, :1], seg_pos)
            seg_init_time = seg_lib.action_times(ep.init_time, c_tok, dt) - dt  # t_c − dt, [b, N]
            actions = decode_token_actions(mp, w_fixed[:, row], times, seg_init_time, seg_pos[:, row],
                                           seg_vel[:, row])
        else:  # ablation: the whole trajectory from the episode's initial condition, read at the row's times
            actions = decode_token_actions(mp, w_rows[:, row], times, ep.init_time[:, None],
                                           ep.init_pos[:, None, :], ep.init_vel[:, None, :])
        actions = jnp.where((layout.is_action & layout.valid)[:, None], actions, 0.0)  # padded: 0, as upstream

        state_tok, _ = seg_lib.gather_tokens(layout, ep.states, ep.actions)
        q_hat = jnp.min(critic_lib.packed_values(learner.critic, target_params, state_tok, actions, layout), axis=0)
        last = jnp.broadcast_to(seg_lib.last_valid_token(seg, layout), q_hat.shape)
        v_target = jnp.take_along_axis(q_hat, last, axis=1)  # [b, N]

        v_bar = critic_lib.state_values(learner.critic, target_params, ep.states)  # [b, T]
        q_target = seg_lib.n_step_returns(seg, layout, ep.rewards, v_bar, learner.discount)
        targets = jnp.where(layout.is_state, v_target, jnp.where(layout.is_action & layout.valid, q_target, 0.0))
        aux = {"weights": w_rows, "actions": actions, "q_hat": q_hat}
        return targets, aux

    n = chunks.num_chunks(learner.micro_batch, B)
    targets, aux = chunks.chunked_map(chunk, (episodes, mean_proj, xi, L_proj if contextual else None), n)
    return sg(targets), jax.tree.map(sg, aux)


# ---------------------------------------------------------------------------------------------------------------
# Losses


def masked_mse(pred: jax.Array, targets: jax.Array, layout: seg_lib.PackedLayout, batch_size: int | None = None):
    """Upstream's critic MSE on the packed layout, `pred [..., b, N]`, `targets [b, N]` → `[...]`: prediction
    and target zeroed at padded action and packing tokens, divided by B · num_rows · (1 + ℓ) (upstream's
    `mse_loss` over [B, rows, 1 + ℓ] counts the padded action tokens; the packing tokens do not exist there).
    `batch_size`: B when `pred` holds a chunk of b < B trajectories."""
    mask = layout.valid
    diff = jnp.where(mask, pred, 0.0) - jnp.where(mask, targets, 0.0)
    count = (targets.shape[0] if batch_size is None else batch_size) * jnp.sum(layout.in_row)
    return jnp.sum(jnp.square(diff), axis=(-2, -1)) / count


def critic_loss(learner: Learner, params, episodes: buffer_lib.Episode, layout: seg_lib.PackedLayout,
                targets: jax.Array, dropout_key: jax.Array | None = None, batch_size: int | None = None):
    """Σ over critics of each critic's `masked_mse` (per-critic gradients, as upstream's separate steps).
    Returns `(loss, {"critic_loss": per-critic MSE [C], "pred": [C, B, N]})`."""
    state_tok, action_tok = seg_lib.gather_tokens(layout, episodes.states, episodes.actions)
    pred = critic_lib.packed_values(learner.critic, params, state_tok, action_tok, layout, dropout_key)
    per_critic = masked_mse(pred, targets, layout, batch_size)
    return jnp.sum(per_critic), {"critic_loss": per_critic, "pred": pred}


def q_loss(learner: Learner, critic_params, episodes: buffer_lib.Episode, seg: seg_lib.Segmentation,
           layout: seg_lib.PackedLayout, mean_proj: jax.Array, L_proj: jax.Array, xi: jax.Array, norm):
    """−Σ over (trajectory, valid row) of min_C Σ_{l=1…ℓ} Q_C(s_c, â_{c:c+l}) / `norm` (upstream `q_loss`, whose
    norm is B · num_rows), for a segmentation without the extra row. The critic is frozen; gradients reach
    (μ̃, L̃) through the samples w = μ̃ + L̃ξ, decoded per token from the *episode's* initial condition."""
    w_rows = gaussian.sample_rows(mean_proj, L_proj, xi)  # [b, R, k]
    times = seg_lib.action_times(episodes.init_time, layout.time_index, learner.dt)
    actions = decode_token_actions(learner.mp, w_rows[:, layout.row], times, episodes.init_time[:, None],
                                   episodes.init_pos[:, None, :], episodes.init_vel[:, None, :])
    actions = jnp.where(layout.is_action[:, None], actions, 0.0)
    state_tok, _ = seg_lib.gather_tokens(layout, episodes.states, episodes.actions)
    q = critic_lib.packed_values(learner.critic, sg(critic_params), state_tok, actions, layout)  # [C, b, N]
    q_tokens = jnp.where(layout.is_action & layout.valid, q, 0.0)
    row_q = jnp.min(seg_lib.sum_rows(q_tokens, layout, seg.row_start.shape[0]), axis=0)  # [b, R]
    return -jnp.sum(jnp.where(seg.row_valid, row_q, 0.0)) / norm


def trust_region(learner: Learner, mean, L, mean_p, L_p) -> jax.Array:
    """coeff · mean KL(π_raw ‖ sg π̃) (spec §5), 0 without the projection."""
    return trust_region_loss(learner.projection, mean, L, mean_p, L_p) if learner.use_projection else jnp.zeros(())


def policy_loss(learner: Learner, params, old_params, critic_params, episodes: buffer_lib.Episode,
                seg: seg_lib.Segmentation, step, h0, key: jax.Array):
    """q_loss(π̃) + trust-region loss in one pass over the batch (`policy_loss_and_grad` is the update's form);
    differentiable in `params`. Returns `(loss, metrics)`."""
    layout = seg_lib.packed_layout(seg)
    mean, L, mean_p, L_p, info = projected_policy(learner, params, old_params, decision_states(episodes), step, h0)
    B = mean_p.shape[0]
    xi = row_noise(key, B, seg.row_start.shape[0], mean_p.shape[-1])
    ql = q_loss(learner, critic_params, episodes, seg, layout, mean_p, L_p, xi, B * seg.num_rows)
    tr = trust_region(learner, mean, L, mean_p, L_p)
    return ql + tr, policy_metrics(ql, tr, L_p, info)


def policy_metrics(ql, tr, L_p, info) -> dict:
    return {"policy_loss": ql + tr, "q_loss": ql, "trust_region_loss": tr, "entropy": jnp.mean(gaussian.entropy(L_p)),
            "fallback": jnp.mean(info["fallback"].astype(jnp.float32))}


# ---------------------------------------------------------------------------------------------------------------
# Updates


def critic_loss_and_grad(learner: Learner, params, episodes: buffer_lib.Episode, layout: seg_lib.PackedLayout,
                         targets: jax.Array, dropout_key: jax.Array | None = None):
    """Per-critic losses `[C]` and the gradient of their sum, over chunks of `micro_batch` trajectories."""
    B = targets.shape[0]
    n = chunks.num_chunks(learner.micro_batch, B)
    keys = jax.random.split(dropout_key, n) if n > 1 and dropout_key is not None else dropout_key

    def f(p, _, data):
        ep, tgt, key = data
        loss, aux = critic_loss(learner, p, ep, layout, tgt, key, batch_size=B)
        return loss, aux["critic_loss"]

    (_, per_critic), (grads, _) = chunks.chunked_value_and_grad(f, params, (), (episodes, targets, keys), n)
    return per_critic, grads


def critic_step(learner: Learner, state: CriticState, buffer: buffer_lib.TrajectoryBuffer, policy_params,
                old_policy_params, step, h0, key: jax.Array):
    """One critic step (spec §2.3): a fresh uniform batch and segmentation (with the extra row), packed targets
    from the target critic and the projected policy, AdamW, Polyak target update."""
    k_batch, k_seg, k_noise, k_drop = jax.random.split(key, 4)
    episodes = buffer_lib.sample(buffer, k_batch, learner.batch_size)
    seg = draw_segmentation(learner, k_seg, extra_row=True)
    layout = seg_lib.packed_layout(seg)
    _, _, mean_p, L_p, _ = projected_policy(learner, policy_params, old_policy_params, decision_states(episodes),
                                            step, h0)
    targets, _ = critic_targets(learner, state.target_params, episodes, seg, layout, mean_p, L_p, k_noise)
    per_critic, grads = critic_loss_and_grad(learner, state.params, episodes, layout, targets, k_drop)
    updates, opt_state = learner.critic_optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    target_params = optax.incremental_update(params, state.target_params, learner.critic_tau)
    metrics = {"critic_loss": jnp.mean(per_critic), "segment_length": seg.length,
               "target_mean": jnp.sum(jnp.where(layout.valid, targets, 0.0)) / (targets.shape[0]
                                                                                 * jnp.sum(layout.valid))}
    return CriticState(params=params, target_params=target_params, opt_state=opt_state), metrics


def critic_update(learner: Learner, state: CriticState, buffer, policy_params, old_policy_params, step, h0, key,
                  num_steps: int):
    """`num_steps` (= epochs_critic) critic steps in a `lax.scan`; metrics stacked `[num_steps]`."""
    return lax.scan(lambda s, k: critic_step(learner, s, buffer, policy_params, old_policy_params, step, h0, k),
                    state, jax.random.split(key, num_steps))


def policy_loss_and_grad(learner: Learner, params, old_params, critic_params, episodes: buffer_lib.Episode,
                         seg: seg_lib.Segmentation, step, h0, key: jax.Array):
    """Gradient and metrics of `policy_loss`: the projection runs once on the whole batch (`jax.vjp`), the
    q_loss gradient with respect to (μ̃, L̃) is accumulated over chunks of `micro_batch` trajectories and
    pulled back through it."""
    B = episodes.rewards.shape[0]
    layout = seg_lib.packed_layout(seg)

    def project(p):
        mean, L, mean_p, L_p, info = projected_policy(learner, p, old_params, decision_states(episodes), step, h0)
        return (mean_p, L_p, trust_region(learner, mean, L, mean_p, L_p)), info

    (mean_p, L_p, tr), pullback, info = jax.vjp(project, params, has_aux=True)
    xi = row_noise(key, B, seg.row_start.shape[0], mean_p.shape[-1])
    contextual = L_p.ndim == 3

    def f(L_shared, rows, data):
        m, L_rows = rows
        ep, xi_c = data
        L_c = L_rows if contextual else L_shared
        return q_loss(learner, critic_params, ep, seg, layout, m, L_c, xi_c, B * seg.num_rows), ()

    shared = () if contextual else L_p
    rows = (mean_p, L_p if contextual else None)
    (ql, _), (d_shared, (d_mean, d_L_rows)) = chunks.chunked_value_and_grad(
        f, shared, rows, (episodes, xi), chunks.num_chunks(learner.micro_batch, B))
    (grads,) = pullback((d_mean, d_L_rows if contextual else d_shared, jnp.ones_like(tr)))
    return grads, policy_metrics(ql, tr, L_p, info)


def policy_step(learner: Learner, state: PolicyState, buffer: buffer_lib.TrajectoryBuffer, critic_params, step, h0,
                key: jax.Array):
    """One policy step: a fresh batch and segmentation (without the extra row), Adam with coupled decay."""
    k_batch, k_seg, k_noise = jax.random.split(key, 3)
    episodes = buffer_lib.sample(buffer, k_batch, learner.batch_size)
    seg = draw_segmentation(learner, k_seg, extra_row=False)
    grads, metrics = policy_loss_and_grad(learner, state.params, state.old_params, critic_params, episodes, seg,
                                          step, h0, k_noise)
    updates, opt_state = learner.policy_optimizer.update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state), metrics


def old_policy_update(learner: Learner, state: PolicyState) -> PolicyState:
    """θ_old ← (1 − rate)·θ_old + rate·θ (upstream `policy_old.copy_(policy, rate)`), once per iteration."""
    return state.replace(old_params=optax.incremental_update(state.params, state.old_params,
                                                             learner.old_policy_rate))


def policy_update(learner: Learner, state: PolicyState, buffer, critic_params, step, h0, key, num_steps: int):
    """`num_steps` (= epochs_policy) policy steps in a `lax.scan`, then the old-policy Polyak update."""
    state, metrics = lax.scan(lambda s, k: policy_step(learner, s, buffer, critic_params, step, h0, k),
                              state, jax.random.split(key, num_steps))
    return old_policy_update(learner, state), metrics


# ---------------------------------------------------------------------------------------------------------------
# One iteration, and the program the host runs in chunks


def make_train(args: Args) -> runner.Program:
    """Static set-up (task, learner) and the pure single-seed functions of one run (`runner.Program`)."""
    check_env(args)
    task = envs.make(args.env, **({"random_init": args.random_init} if args.env.startswith("box") else {}))
    check_args(args, task)
    learner = make_learner(args, task)
    T, dof, k = learner.T, task.num_dof, learner.mp.num_params  # T: the learner's (T_env / F)

    def collect(policy_params, key, num_episodes: int, deterministic: bool):
        return rollout(args, task, learner, policy_params, key, num_episodes, deterministic)

    warmup = warmup_episodes(args)

    def init(key) -> TrainState:
        k_pol, k_crit, key = jax.random.split(key, 3)
        policy = init_policy_state(learner, k_pol)
        buffer = buffer_lib.init(args.buffer_size, buffer_lib.episode_spec(T, task.obs_size, dof, k))
        if warmup:  # upstream collects until the buffer holds a batch, then starts iteration 1
            episodes, _, _ = collect(policy.params, jax.random.fold_in(key, 0x3A11), warmup, deterministic=False)
            buffer = buffer_lib.add(buffer, episodes)
        return TrainState(policy=policy, critic=init_critic_state(learner, k_crit, 2 if args.double_critic else 1),
                          buffer=buffer, initial_entropy=jnp.full((), jnp.nan), key=key)

    def iteration(state: TrainState, it):
        """Iteration `it` (1-based, shared by all seeds so that the update gates stay real branches)."""
        key, k_roll, k_crit, k_pol = jax.random.split(state.key, 4)
        episodes, _, stats = collect(state.policy.params, k_roll, args.num_envs, deterministic=False)
        buffer = buffer_lib.add(state.buffer, episodes)
        h0 = jnp.where(jnp.isnan(state.initial_entropy) & (it >= args.critic_update_from),
                       initial_entropy(learner, state.policy.old_params, episodes.states[:, 0]),
                       state.initial_entropy)
        critic, c_metrics = runner.run_if(
            it >= args.critic_update_from,
            lambda c: critic_update(learner, c, buffer, state.policy.params, state.policy.old_params, it, h0,
                                    k_crit, args.epochs_critic), state.critic)
        policy, p_metrics = runner.run_if(
            it >= args.policy_update_from,
            lambda p: policy_update(learner, p, buffer, critic.params, it, h0, k_pol, args.epochs_policy),
            state.policy)
        metrics = {**{f"rollout/{n}": jnp.mean(v) for n, v in stats.items()},
                   **{f"critic/{n}": jnp.mean(v) for n, v in c_metrics.items()},
                   **{f"policy/{n}": jnp.mean(v) for n, v in p_metrics.items()}}
        metrics = {n: v.astype(jnp.float32) for n, v in metrics.items()}
        return TrainState(policy=policy, critic=critic, buffer=buffer, initial_entropy=h0, key=key), metrics

    def run_chunk(state: TrainState, first_it):
        """Iterations first_it … first_it + eval_interval − 1 (those past `iterations` are skipped).
        Returns the new state and the per-iteration metrics `{name: [eval_interval]}` (NaN where skipped)."""

        def body(s, i):
            return runner.run_if(first_it + i <= args.iterations, iteration, s, first_it + i)

        return lax.scan(body, state, jnp.arange(args.eval_interval, dtype=jnp.int32))

    def evaluate(policy_params, key):
        """Mean over `num_eval_episodes` fresh episodes of the deterministic policy: {return, task metrics}."""
        _, _, stats = collect(policy_params, key, args.num_eval_episodes, deterministic=True)
        return {n: jnp.mean(v) for n, v in stats.items()}

    return runner.Program(init, run_chunk, evaluate, collect, task, learner, warmup * task.episode_length)


# ---------------------------------------------------------------------------------------------------------------
# Host entry point


def run(args: Args, max_chunks: int | None = None, verbose: bool = True) -> dict:
    """Train (or continue with `--resume`) with the shared host loop (`toperl_jax.runner.run`); returns the
    summary dict (also written to run_dir/summary.json)."""
    return runner.run(args, make_train(args), max_chunks, verbose, title="TOP-ERL", render_final=_render_final)


def _render_final(args: Args, program: runner.Program, state, run_dir: pathlib.Path, say) -> None:
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
