"""QT: Q-value regularized Transformer for offline RL (Hu et al., ICML 2024), one file (spec: specs/qt.md).

    python benchmarks/make_dataset.py                                 # reacher datasets in runs/datasets/
    python variants/qt.py --dataset runs/datasets/reacher-medium-replay-v0.hdf5 --preset cpu
    python variants/qt.py --dataset ... --preset cpu --eta 0          # the Decision-Transformer baseline
    python variants/qt.py --dataset ... --preset cpu --resume         # continue an interrupted run exactly
    python variants/qt.py --dataset ... --preset cpu --evaluate-only --selection softmax --num-eval-episodes 100
                                                                      # re-evaluate the run's last checkpoint
    python variants/qt.py --dataset ~/d4rl/hopper-medium-v2.hdf5 --env ... # D4RL file (needs an MJX env to evaluate)
    python variants/qt.py --help

The policy is a Decision Transformer (DT): (return-to-go, state, action) tokens of the last K steps, a pre-LN
GPT without positional embeddings (a learned timestep embedding instead), a tanh action head read at the state
tokens and a next-state head read at the action tokens. Two Mish MLP critics Q₁, Q₂(s, a) learn n-step targets
inside the sampled window, bootstrapped from the window's last state with an EMA copy of the actor and Polyak
target critics. The actor loss is behaviour cloning plus η times a normalised Q term:

    L_actor = η₂ (‖â − a‖² + ‖ŝ' − s'‖²) − η Q_i(s, â) / sg(E|Q_j(s, â)|)     (i random, j the other critic)

At evaluation every env step runs the actor on `num_candidates` rows whose current return-to-go differs (the
env targets, noisy copies, and one value derived from the critic) and executes the candidate action with the
highest target-critic Q (argmax; `--selection softmax` samples ∝ exp Q as upstream; `--eta 0` trains no critic
and runs plain DT with the first target).

One gradient step (spec §2, in this order): critic step (n-step targets, clipped Adam) → actor step with the
updated critic (clip, coupled L2 weight decay, Adam) → EMA actor → Polyak critic target. The learning rate
follows a cosine over iterations (one iteration = `steps_per_iter` steps). Everything inside an iteration is one
jitted `lax.scan`; `--num-seeds N` vmaps N runs; evaluation is one jitted scan over the episode's steps with all
episodes × candidates batched. `make_train` builds a `runner.Program` and the shared host loop
(`toperl_jax.runner.run`) runs it in chunks of `--eval-every` iterations: evaluation, logs, checkpoints,
`--resume`, divergence, seeds over devices and `--distributed` as for TOP-ERL (docs/runs.md).

Upstream bugs fixed here (spec §7; each is also named where the fix lives):
  §7.1 Q candidate in the wrong units → `_candidate_rtgs` uses (Q̄(s_{t−1}, a_{t−1}) − r_{t−1}) / γ / scale, and
       no Q candidate at t = 0 (upstream scored the zero pad state there). What no fix can change: Q̄ is a
       γ-discounted return (horizon ~1/(1−γ) steps), the RTG an undiscounted one, so on long episodes this
       candidate asks for less than the return still to come (on the CPU-sized hopper it was the largest single
       loss of QT's inference, docs/qt.md; `--no-q-candidate` drops it).
  §7.2 leftover candidate rows with random N(0,1) RTG histories, and all un-noised rows copies of target[0]
       (grouped repetition) → `_candidate_rtgs`: row c uses target c mod n; rows c ≥ n get the noise.
  §7.3 a terminal window drops its last reward (and its last position) → `nstep_targets` keeps r_{T−1} and
       trains Q(s_{T−1}, a_{T−1}) → r_{T−1} there (`--no-keep-terminal-reward` restores upstream); window starts
       are uniform over all steps, so short trajectories work and the hopper-only start rule is gone.
  §7.4 the EMA actor stays at the random init for `ema_start` steps and produces targets with dropout on →
       `_ema_update` copies the actor until `ema_start`; target actions are computed with dropout off.
  §7.6 training pads raw states (−μ/σ after normalising), inference pads normalised ones → both pad the
       normalised state with 0 (`toperl_jax.offline.windows`).
  §7.8 model selection on test returns, a fixed early-stop, a cosine that barely decays, a critic lr that
       ignores its flag → the final evaluation is the reported number (the best is logged, labelled `best`),
       the cosine spans `--lr-decay-iters` (default: the run's iterations), `--lr-critic` is honoured.
Kept as upstream on purpose: the next-state term of the BC loss (`--state-loss-coef 0` removes it) and the
Q normaliser on policy actions of the opposite critic (§7.5). Not implemented: `max_q_backup`, the
non-`k_rewards` 1-step TD path, `--reward_tune cql_antmaze` (§7.7: no antmaze here).

Datasets: D4RL HDF5 or Minari (`toperl_jax.offline`). Evaluation env (`toperl_jax.offline.evaluation`): an MJX
task of this project whose per-step action map exists (`toperl_jax.offline.actions`: reacher, hopper jump), or
brax's MJX locomotion tasks `brax-hopper`, `brax-walker2d`, `brax-halfcheetah` (datasets from
`benchmarks/make_locomotion_dataset.py`). Rewards count until the env's first termination.
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

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro
from flax import struct
from jax import lax

from toperl_jax import checkpoint as ckpt
from toperl_jax import cli, envs, offline, runner
from toperl_jax.cli import UsageError
from toperl_jax.offline.evaluation import check_physics, make_eval_env
from toperl_jax.offline.windows import Window, WindowData, prepare_windows, sample_windows

# ---------------------------------------------------------------------------------------------------------------
# Flags


@dataclasses.dataclass(frozen=True)
class Args:
    """QT. Defaults are the upstream hyperparameters (spec §5, hopper-medium row); `--preset cpu` is a small
    configuration for a CPU; flags given alongside a preset override it."""

    # --- run
    preset: Literal["paper", "cpu", "tiny"] = "paper"
    """paper: upstream sizes (H 256, 4 layers, K 20, B 256, 1000 steps/iteration); cpu: a small model that trains
    in minutes on 2 cores; tiny: for tests"""
    dataset: str = "runs/datasets/reacher-medium-replay-v0.hdf5"
    """D4RL-layout HDF5 file or Minari dataset (directory or main_data.hdf5)"""
    env: str | None = None
    """evaluation env (a task of `toperl_jax.envs` or brax-hopper/-walker2d/-halfcheetah); None: the dataset's
    `env` attribute"""
    physics_impl: Literal["jax", "warp"] = "jax"
    """MJX implementation of the evaluation env: jax (pure JAX, any device) or warp (MuJoCo Warp kernels, for CUDA
    GPUs; the `gpu` extra); this project's tasks only, brax's locomotion envs run on jax"""
    seed: int = 123
    """random seed (upstream run.sh: 123); seed i of `--num-seeds N` uses seed + i"""
    num_seeds: int = 1
    """independent runs trained side by side in one program (vmap)"""
    iterations: int = 100
    """training iterations (upstream: early stop after ~100)"""
    steps_per_iter: int = 1000
    """gradient steps per iteration (upstream num_steps_per_iter)"""

    # --- QT loss
    eta: float = 1.0
    """weight η of the normalised Q term; 0 = the Decision-Transformer baseline (no critic, plain DT inference)"""
    eta2: float = 1.0
    """weight of the behaviour-cloning term (upstream `lambda`)"""
    state_loss_coef: float = 1.0
    """weight of the next-state MSE inside the BC term (upstream: 1; 0 = standard DT loss)"""
    discount: float = 0.99
    """γ of the n-step critic targets"""
    tau: float = 0.005
    """Polyak rate of the target critics (every step)"""
    ema_decay: float = 0.995
    """decay of the EMA target actor"""
    ema_start: int = 1000
    """gradient steps before the EMA starts (before: EMA actor = actor)"""
    ema_every: int = 5
    """EMA update every this many steps"""
    keep_terminal_reward: bool = True
    """fix §7.3: a window ending in a terminal keeps r_{T−1} (False: upstream drops it)"""
    bootstrap_timeouts: bool | None = None
    """bootstrap the targets past a timeout; None: not if the dataset says `time_in_observation` (this project's
    MJX datasets), else yes (D4RL)"""

    # --- optimisation
    batch_size: int = 256
    """windows per gradient step"""
    lr: float = 3e-4
    """actor Adam learning rate"""
    lr_critic: float = 3e-4
    """critic Adam learning rate"""
    weight_decay: float = 1e-4
    """actor coupled L2 weight decay (torch Adam weight_decay)"""
    grad_norm: float = 9.0
    """global gradient-norm clip of both actor and critic"""
    lr_decay: bool = True
    """cosine learning-rate decay over iterations (upstream --lr_decay)"""
    lr_decay_iters: int | None = None
    """cosine period in iterations (None: `iterations`, a full decay; upstream: max_iters = 500)"""

    # --- model
    context_len: int = 20
    """K, steps per window (upstream: 20; halfcheetah-m/mr 5)"""
    n_embd: int = 256
    """transformer width H"""
    n_layer: int = 4
    """GPT blocks"""
    n_head: int = 4
    """attention heads"""
    dropout: float = 0.1
    """embedding / attention / residual dropout"""
    max_ep_len: int = 1000
    """size of the timestep-embedding table"""
    critic_hidden: int = 256
    """critic MLP width"""
    critic_depth: int = 3
    """critic hidden layers"""

    # --- inference / evaluation
    scale: float | None = None
    """return-to-go scale; None: the dataset's `scale` attribute (else 1000)"""
    env_targets: tuple[float, ...] | None = None
    """evaluation return targets (raw); None: the dataset's `env_targets` attribute"""
    num_candidates: int = 50
    """actor rows per env step (targets, noisy copies, Q candidate)"""
    candidate_noise: float = 0.1
    """std of the noise added to the current RTG of rows ≥ number of targets"""
    q_candidate: bool = True
    """the last row's current RTG comes from the critic (fixed §7.1)"""
    selection: Literal["argmax", "softmax", "first"] | None = None
    """candidate selection: argmax of Q̄, softmax sampling ∝ exp Q̄ (upstream), or first = plain DT with the first
    target only; None: argmax if eta > 0 else first"""
    eval_every: int = 1
    """iterations between evaluations (each evaluation is a jitted chunk boundary)"""
    num_eval_episodes: int = 10
    """episodes per evaluation"""
    evaluate_only: bool = False
    """evaluate the last checkpoint of the run in `logdir/run_name` instead of training, e.g. with another
    `--selection` or more episodes: the training flags must equal the saved run's, only INFERENCE_FLAGS may differ;
    writes run_dir/eval_<selection>[_c<candidates>_noise<σ>_[no]qcand]_<episodes>ep_seed<eval_seed>.json"""
    eval_seed: int = 0
    """with `--evaluate-only`: seed of the evaluation episodes (their keys are disjoint from training's evaluations)"""

    # --- logging / checkpoints
    logdir: str = "runs"
    """TensorBoard / checkpoint root"""
    run_name: str | None = None
    """run directory under logdir (default: qt_<dataset stem>_eta<eta>_s<seed>)"""
    checkpoint_interval: int = 1
    """save an orbax checkpoint every this many evaluations (0: never)"""
    resume: bool = False
    """continue the run in `logdir/run_name` from its last checkpoint (the flags must match the saved ones)"""
    overwrite: bool = False
    """replace a run already in `logdir/run_name` (without it, starting a new run there is refused)"""
    compile_cache: str = "~/.cache/toperl-jax/xla"
    """persistent XLA compilation cache ('' disables)"""
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
        stem = pathlib.Path(self.dataset).stem
        return pathlib.Path(self.logdir) / (self.run_name or f"qt_{stem}_eta{self.eta:g}_s{self.seed}")

    @property
    def eval_interval(self) -> int:
        """`--eval-every` under the name the runner reads (iterations per chunk)."""
        return self.eval_every

    @property
    def resolved_selection(self) -> str:
        return self.selection or ("argmax" if self.eta > 0 else "first")

    @property
    def train_critic(self) -> bool:
        return self.eta > 0 or self.resolved_selection != "first"


INFERENCE_FLAGS = ("selection", "num_candidates", "candidate_noise", "q_candidate", "num_eval_episodes",
                   "evaluate_only", "eval_seed", "physics_impl")
"""The flags that `--evaluate-only` may change: they act only at inference, not on the trained parameters."""

PRESETS: dict[str, Args] = {
    "paper": Args(),
    "cpu": Args(preset="cpu", n_embd=64, n_layer=2, n_head=2, context_len=10, batch_size=64, critic_hidden=64,
                steps_per_iter=500, iterations=8, num_candidates=10, ema_start=500, max_ep_len=256),
    "tiny": Args(preset="tiny", n_embd=16, n_layer=1, n_head=2, context_len=4, batch_size=8, critic_hidden=16,
                 critic_depth=2, steps_per_iter=5, iterations=2, num_candidates=4, ema_start=3, ema_every=1,
                 num_eval_episodes=2, max_ep_len=64, dropout=0.0),
}


def parse_args(argv: list[str] | None = None) -> Args:
    """`--preset` picks the defaults, then tyro parses every flag."""
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="paper")
    name = pre.parse_known_args(argv)[0].preset
    if name not in PRESETS:
        raise SystemExit(f"--preset {name!r} is not a preset; choose one of {', '.join(PRESETS)}")
    return tyro.cli(Args, default=PRESETS[name], args=argv)


def check_args(args: Args) -> None:
    """Reject bad flags before loading data or compiling, naming the flag."""

    def fail(flag, msg):
        raise UsageError(f"--{flag.replace('_', '-')}: {msg}")

    for name in ("iterations", "steps_per_iter", "batch_size", "context_len", "n_embd", "n_layer", "n_head",
                 "max_ep_len", "critic_hidden", "critic_depth", "num_candidates", "eval_every",
                 "num_eval_episodes", "num_seeds", "ema_every"):
        if getattr(args, name) < 1:
            fail(name, f"must be ≥ 1, got {getattr(args, name)}")
    if args.n_embd % args.n_head:
        fail("n_embd", f"must be divisible by --n-head={args.n_head}, got {args.n_embd}")
    for name in ("lr", "lr_critic", "grad_norm"):
        if not getattr(args, name) > 0:
            fail(name, f"must be > 0, got {getattr(args, name)}")
    if not 0.0 < args.tau <= 1.0:
        fail("tau", f"must be in (0, 1], got {args.tau}")
    if not 0.0 <= args.ema_decay < 1.0:
        fail("ema_decay", f"must be in [0, 1) (1 would freeze the EMA actor), got {args.ema_decay}")
    for name in ("eta", "eta2", "state_loss_coef", "weight_decay", "candidate_noise", "ema_start"):
        if getattr(args, name) < 0:
            fail(name, f"must be ≥ 0, got {getattr(args, name)}")
    if not 0.0 <= args.dropout < 1.0:
        fail("dropout", f"must be in [0, 1), got {args.dropout}")
    if not 0.0 < args.discount <= 1.0:
        fail("discount", f"must be in (0, 1], got {args.discount}")
    if args.lr_decay_iters is not None and args.lr_decay_iters < 1:
        fail("lr_decay_iters", f"must be ≥ 1, got {args.lr_decay_iters}")
    if args.scale is not None and args.scale <= 0:
        fail("scale", f"must be > 0, got {args.scale}")
    if args.checkpoint_interval < 0:
        fail("checkpoint_interval", f"must be ≥ 0, got {args.checkpoint_interval}")
    if args.eval_seed != 0 and not args.evaluate_only:
        fail("eval_seed", "only used with --evaluate-only (training's evaluations use --seed)")
    if args.evaluate_only and args.resume:
        fail("evaluate_only", "evaluates a run's last checkpoint; it cannot be combined with --resume")
    if not pathlib.Path(args.dataset).expanduser().exists():
        fail("dataset", f"no file or directory at {args.dataset} (make one with benchmarks/make_dataset.py)")


# ---------------------------------------------------------------------------------------------------------------
# Networks


def torch_dense(features: int, fan_in: int, name: str | None = None) -> nn.Dense:
    """nn.Linear's default init: weights and biases U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Dense(features, name=name, kernel_init=nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                    bias_init=lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d, -bound, bound))


def _ln(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-5, name=name)


class Block(nn.Module):
    """Pre-LN GPT-2 block with ReLU MLP: x + attn(ln₁ x), then + mlp(ln₂ x). Weights N(0, 0.02), biases 0."""

    n_embd: int
    n_head: int
    dropout: float

    @nn.compact
    def __call__(self, x, allowed, deterministic: bool):
        """x [B, N, E]; allowed [B, N, N] bool (causal and key padding)."""
        B, N, E = x.shape
        H, D = self.n_head, E // self.n_head
        init = nn.initializers.normal(0.02)
        h = _ln("ln_1")(x)
        q, k, v = jnp.split(nn.Dense(3 * E, kernel_init=init, name="c_attn")(h), 3, axis=-1)
        q, k, v = (t.reshape(B, N, H, D) for t in (q, k, v))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(D)
        logits = jnp.where(allowed[:, None], logits, -1e4)  # upstream: additive −1e4 on masked keys
        probs = nn.Dropout(self.dropout)(jax.nn.softmax(logits, axis=-1), deterministic=deterministic)
        y = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(B, N, E)
        y = nn.Dense(E, kernel_init=init, name="attn_proj")(y)
        x = x + nn.Dropout(self.dropout)(y, deterministic=deterministic)
        h = _ln("ln_2")(x)
        h = nn.Dense(self.n_embd, kernel_init=init, name="mlp_proj")(
            nn.relu(nn.Dense(4 * E, kernel_init=init, name="c_fc")(h)))
        return x + nn.Dropout(self.dropout)(h, deterministic=deterministic)


class DTActor(nn.Module):
    """Decision Transformer over (R_t, s_t, a_t) tokens; returns (â [B, K, A] from the state tokens, tanh;
    ŝ_{t+1} [B, K, S] from the action tokens)."""

    state_dim: int
    act_dim: int
    n_embd: int
    n_layer: int
    n_head: int
    dropout: float
    max_ep_len: int

    @nn.compact
    def __call__(self, obs, actions, rtg, timesteps, mask, deterministic: bool = True):
        """obs [B, K, S] normalised; actions [B, K, A]; rtg [B, K] (/scale); timesteps [B, K] int; mask [B, K]."""
        B, K = mask.shape
        E = self.n_embd
        t_emb = nn.Embed(self.max_ep_len, E, embedding_init=nn.initializers.normal(1.0), name="embed_timestep")(
            timesteps)
        r = torch_dense(E, 1, "embed_return")(rtg[..., None]) + t_emb
        s = torch_dense(E, self.state_dim, "embed_state")(obs) + t_emb
        a = torch_dense(E, self.act_dim, "embed_action")(actions) + t_emb
        x = jnp.stack([r, s, a], axis=2).reshape(B, 3 * K, E)  # R_1, s_1, a_1, R_2, …
        x = nn.Dropout(self.dropout)(_ln("embed_ln")(x), deterministic=deterministic)
        key_ok = jnp.repeat(mask > 0, 3, axis=1)  # [B, 3K]
        allowed = jnp.tril(jnp.ones((3 * K, 3 * K), bool))[None] & key_ok[:, None, :]
        for i in range(self.n_layer):
            x = Block(E, self.n_head, self.dropout, name=f"h_{i}")(x, allowed, deterministic)
        x = _ln("ln_f")(x).reshape(B, K, 3, E)
        a_pred = jnp.tanh(torch_dense(self.act_dim, E, "predict_action")(x[:, :, 1]))
        s_pred = torch_dense(self.state_dim, E, "predict_state")(x[:, :, 2])
        return a_pred, s_pred


def mish(x):
    """Mish activation x · tanh(softplus(x))."""
    return x * jnp.tanh(jax.nn.softplus(x))


class TwinQ(nn.Module):
    """Two independent Mish MLPs Q_i([s, a]) → stacked [2, ...] (PyTorch default init)."""

    hidden: int
    depth: int

    @nn.compact
    def __call__(self, s, a):
        x0 = jnp.concatenate([s, a], axis=-1)
        out = []
        for i in range(2):
            x, fan = x0, x0.shape[-1]
            for j in range(self.depth):
                x = mish(torch_dense(self.hidden, fan, f"q{i + 1}_{j}")(x))
                fan = self.hidden
            out.append(torch_dense(1, fan, f"q{i + 1}_out")(x)[..., 0])
        return jnp.stack(out)


# ---------------------------------------------------------------------------------------------------------------
# Losses (pure; tested against numpy references)


def masked_mean(x, mask):
    """Σ x·m / max(Σ m, 1) (mask broadcast on the leading axes of x)."""
    m = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    denom = jnp.maximum(jnp.sum(jnp.broadcast_to(m, x.shape)), 1.0)
    return jnp.sum(x * m) / denom


def nstep_targets(rewards, mask, q_boot, no_boot, gamma: float, keep_terminal_reward: bool = True):
    """QT's per-position n-step targets inside a window (spec §2) and the positions the critic loss uses.

    y_t = Σ_{k=t}^{K−2} γ^{k−t} r_k + γ^{K−1−t} [(1 − d) Q̄(s_{K−1}, ā) + d·r_{K−1}·keep]    for every position t,
    with d = no_boot. Loss positions: the valid ones except the last, plus the last where d and keep (there
    y_{K−1} = r_{K−1}, the exact value of a terminal step). keep = False is upstream (§7.3: r_{K−1} lost).

    Args: rewards [B, K] raw; mask [B, K] (left padded); q_boot [B]; no_boot [B] bool.
    Returns: (y [B, K], loss_mask [B, K] float32).
    """
    K = rewards.shape[-1]
    d = no_boot.astype(jnp.float32)
    keep = d if keep_terminal_reward else jnp.zeros_like(d)
    r = rewards.at[:, -1].set(rewards[:, -1] * keep)
    k = jnp.arange(K)
    W = jnp.where(k[None, :] >= k[:, None], jnp.power(gamma, (k[None, :] - k[:, None]).astype(jnp.float32)), 0.0)
    disc = jnp.power(gamma, (K - 1 - k).astype(jnp.float32))
    y = r @ W.T + disc[None, :] * ((1.0 - d) * q_boot)[:, None]
    loss_mask = mask.astype(jnp.float32).at[:, -1].multiply(keep)
    return y, loss_mask


# ---------------------------------------------------------------------------------------------------------------
# The jitted program


@struct.dataclass
class QTState:
    actor: dict
    actor_ema: dict
    actor_opt: optax.OptState
    critic: dict
    critic_target: dict
    critic_opt: optax.OptState
    step: jax.Array  # [] int32 gradient steps done
    key: jax.Array


class Learner(NamedTuple):
    """QT's static parts (`runner.Program.learner`; the program's `task` is the evaluation env)."""

    actor: DTActor
    critic: TwinQ
    choose_action: Callable  # see make_train
    data: WindowData
    info: dict  # what the flags and the dataset resolved to: env, scale, targets, references, state statistics


EVAL_SALT = 0xE7A1
"""Folded into seed i's key PRNGKey(seed + i) to give its evaluation keys (`runner.seed_keys`)."""


def cosine_lr(lr0: float, steps_per_iter: int, decay_iters: int | None) -> Callable | float:
    """lr_i = lr0 · ½(1 + cos(π i / decay_iters)), i = completed iterations (upstream CosineAnnealingLR, η_min 0,
    stepped once per iteration); constant when decay_iters is None."""
    if decay_iters is None:
        return lr0

    def sched(count):
        i = jnp.minimum(count // steps_per_iter, decay_iters).astype(jnp.float32)
        return lr0 * 0.5 * (1.0 + jnp.cos(jnp.pi * i / decay_iters))

    return sched


def _ema_update(step, ema, params, args: Args):
    """Fix §7.4: before `ema_start` the EMA actor is a copy of the actor (upstream keeps the random init);
    afterwards ema ← decay·ema + (1 − decay)·actor every `ema_every` steps."""
    copy = step < args.ema_start
    do = (step % args.ema_every) == 0
    return jax.tree.map(lambda e, p: jnp.where(copy, p, jnp.where(do, args.ema_decay * e + (1 - args.ema_decay) * p, e)),
                        ema, params)


def select_candidate(q, key, mode: str):
    """Index [...] of the chosen candidate from q [..., C]: argmax, or sampled ∝ softmax(q) (upstream)."""
    if mode == "softmax":
        return jax.random.categorical(key, q, axis=-1)
    return jnp.argmax(q, axis=-1)


def resolve_dataset(args: Args):
    """Load the dataset and resolve env, scale, targets, references from flags or its metadata."""
    try:
        ds = offline.load_dataset(pathlib.Path(args.dataset).expanduser())
    except (offline.DatasetError, OSError) as e:  # a malformed, unreadable or non-HDF5 file
        raise UsageError(f"--dataset: {e}") from None
    meta = ds.metadata
    env = args.env or meta.get("env")
    if env is None:
        raise UsageError(f"--env: the dataset {args.dataset} has no `env` attribute; name the evaluation env "
                         f"({', '.join(envs.task_names())}, brax-hopper, brax-walker2d, brax-halfcheetah)")
    scale = float(args.scale or meta.get("scale", 1000.0))
    targets = tuple(float(t) for t in (args.env_targets or meta.get("env_targets") or ()))
    if not targets:
        raise UsageError(f"--env-targets: the dataset {args.dataset} has no `env_targets`; give them")
    boot = args.bootstrap_timeouts
    if boot is None:
        boot = not bool(meta.get("time_in_observation", False))
    return ds, {"env": env, "scale": scale, "env_targets": targets, "bootstrap_timeouts": boot,
                "ref_min_score": meta.get("ref_min_score"), "ref_max_score": meta.get("ref_max_score")}


def make_train(args: Args) -> runner.Program:
    """Static set-up (data on the device, networks, optimisers) and the pure single-seed functions of one run, as
    the `runner.Program` the shared host loop runs: chunks of `--eval-every` iterations, each one `lax.scan` over
    `--steps-per-iter` gradient steps; evaluation of (actor, target critic) by rollouts in the evaluation env."""
    check_args(args)
    ds, info = resolve_dataset(args)
    try:
        check_physics(info["env"], args.physics_impl)
    except ValueError as e:
        raise UsageError(f"--physics-impl: {e}") from None
    try:  # with MJX-Warp, one contact list for the episodes of every seed (`envs.base.make_data`)
        env = make_eval_env(info["env"], args.physics_impl, warp_worlds=args.num_seeds * args.num_eval_episodes)
    except ValueError as e:
        raise UsageError(f"--env: {e}") from None
    if ds.obs_dim != env.obs_size or ds.act_dim != env.action_size:
        raise UsageError(f"--dataset: obs/act dims {ds.obs_dim}/{ds.act_dim} do not match the env {env.name} "
                         f"({env.obs_size}/{env.action_size})")
    worst = int(np.argmax(np.abs(ds.actions).max(axis=1)))
    if np.abs(ds.actions[worst]).max() > 1.0 + 1e-6:
        raise UsageError(f"--dataset: actions must lie in [-1, 1] (the range of QT's tanh action head and of the "
                         f"envs' controls), got |a| = {np.abs(ds.actions[worst]).max():.4g} at step {worst} of "
                         f"{args.dataset}")
    if env.episode_length > args.max_ep_len:
        raise UsageError(f"--max-ep-len: must be ≥ the env's {env.episode_length} steps, got {args.max_ep_len}")
    data, mean, std = prepare_windows(ds, info["scale"], args.max_ep_len, info["bootstrap_timeouts"])
    info.update(state_mean=mean.tolist(), state_std=std.tolist(), dataset_summary=ds.summary())
    S, A, K = ds.obs_dim, ds.act_dim, args.context_len
    actor = DTActor(S, A, args.n_embd, args.n_layer, args.n_head, args.dropout, args.max_ep_len)
    critic = TwinQ(args.critic_hidden, args.critic_depth)
    decay = (args.lr_decay_iters or args.iterations) if args.lr_decay else None
    actor_tx = optax.chain(optax.clip_by_global_norm(args.grad_norm), optax.add_decayed_weights(args.weight_decay),
                           optax.adam(cosine_lr(args.lr, args.steps_per_iter, decay), b1=0.9, b2=0.999))
    critic_tx = optax.chain(optax.clip_by_global_norm(args.grad_norm),
                            optax.adam(cosine_lr(args.lr_critic, args.steps_per_iter, decay)))
    train_critic, eta = args.train_critic, args.eta

    def init(key) -> QTState:
        k_a, k_c, key = jax.random.split(key, 3)
        a_params = actor.init(k_a, jnp.zeros((1, K, S)), jnp.zeros((1, K, A)), jnp.zeros((1, K)),
                              jnp.zeros((1, K), jnp.int32), jnp.ones((1, K)))
        c_params = critic.init(k_c, jnp.zeros((1, S)), jnp.zeros((1, A)))
        return QTState(actor=a_params, actor_ema=a_params, actor_opt=actor_tx.init(a_params), critic=c_params,
                       critic_target=c_params, critic_opt=critic_tx.init(c_params), step=jnp.zeros((), jnp.int32),
                       key=key)

    def critic_loss(c_params, w: Window, y, loss_mask):
        q = critic.apply(c_params, w.obs, w.actions)  # [2, B, K]
        return sum(masked_mean(jnp.square(q[i] - y), loss_mask) for i in range(2)), q

    def actor_loss(a_params, c_params, w: Window, k_drop, k_pick):
        a_hat, s_hat = actor.apply(a_params, w.obs, w.actions, w.rtg, w.timesteps, w.mask, deterministic=False,
                                   rngs={"dropout": k_drop})
        m = w.mask
        bc_a = masked_mean(jnp.square(a_hat - w.actions), m)
        bc_s = masked_mean(jnp.square(s_hat[:, :-1] - w.obs[:, 1:]), m[:, :-1] * m[:, 1:])
        bc = bc_a + args.state_loss_coef * bc_s
        if eta > 0:
            q = critic.apply(c_params, w.obs, a_hat)  # [2, B, K]
            pick = jax.random.bernoulli(k_pick)
            qi, qj = jnp.where(pick, q[0], q[1]), jnp.where(pick, q[1], q[0])
            lq = -masked_mean(qi, m) / lax.stop_gradient(masked_mean(jnp.abs(qj), m))
        else:
            lq = jnp.zeros(())
        return args.eta2 * bc + eta * lq, {"bc_action": bc_a, "bc_state": bc_s, "q_loss": lq}

    def train_step(state: QTState, _):
        key, k_batch, k_drop, k_pick = jax.random.split(state.key, 4)
        w = sample_windows(data, k_batch, args.batch_size, K)
        metrics = {}
        critic_params, critic_opt, critic_target = state.critic, state.critic_opt, state.critic_target
        if train_critic:
            # ā: EMA actor's action at the window's last state, dropout off (fix §7.4)
            a_bar = actor.apply(state.actor_ema, w.obs, w.actions, w.rtg, w.timesteps, w.mask)[0][:, -1]
            q_boot = jnp.min(critic.apply(critic_target, w.obs[:, -1], a_bar), axis=0)
            y, loss_mask = nstep_targets(w.rewards, w.mask, q_boot, w.no_bootstrap[:, -1], args.discount,
                                         args.keep_terminal_reward)
            (lc, q), g = jax.value_and_grad(critic_loss, has_aux=True)(critic_params, w, lax.stop_gradient(y),
                                                                        loss_mask)
            upd, critic_opt = critic_tx.update(g, critic_opt, critic_params)
            critic_params = optax.apply_updates(critic_params, upd)
            metrics.update(critic_loss=lc, q_mean=masked_mean(q[0], loss_mask), target_mean=masked_mean(y, loss_mask),
                           critic_grad_norm=optax.tree.norm(g))
        (la, aux), g = jax.value_and_grad(actor_loss, has_aux=True)(state.actor, critic_params, w, k_drop, k_pick)
        upd, actor_opt = actor_tx.update(g, state.actor_opt, state.actor)
        actor_params = optax.apply_updates(state.actor, upd)
        metrics.update(actor_loss=la, actor_grad_norm=optax.tree.norm(g), **aux)
        ema = _ema_update(state.step, state.actor_ema, actor_params, args) if train_critic else state.actor_ema
        if train_critic:
            critic_target = optax.incremental_update(critic_params, critic_target, args.tau)
        new = QTState(actor=actor_params, actor_ema=ema, actor_opt=actor_opt, critic=critic_params,
                      critic_target=critic_target, critic_opt=critic_opt, step=state.step + 1, key=key)
        return new, metrics

    def iteration(state: QTState):
        """`steps_per_iter` gradient steps; the metrics' means over them."""
        state, m = lax.scan(train_step, state, None, length=args.steps_per_iter)
        return state, {f"train/{n}": jnp.mean(v) for n, v in m.items()}

    def run_chunk(state: QTState, first_it):
        """Iterations first_it … first_it + eval_every − 1 (those past `iterations` are skipped): the new state and
        the per-iteration metrics `{name: [eval_every]}` (NaN where skipped)."""

        def body(s, i):
            return runner.run_if(first_it + i <= args.iterations, iteration, s)

        return lax.scan(body, state, jnp.arange(args.eval_every, dtype=jnp.int32))

    # --- inference
    mode = args.resolved_selection
    targets = jnp.asarray(info["env_targets"], jnp.float32) / info["scale"]
    n_t = len(info["env_targets"])
    C = 1 if mode == "first" else args.num_candidates
    E, T = args.num_eval_episodes, env.episode_length
    mean_j, std_j, scale, gamma = jnp.asarray(mean), jnp.asarray(std), info["scale"], args.discount

    def choose_action(actor_params, critic_params, obs, acts, rtg, ts, mask, s_now, key):
        """Run the actor on C candidate rows per episode and pick one action per episode.

        obs [E, C, K, S], acts [E, C, K, A], rtg [E, C, K], ts [E, C, K], mask [E, C, K]; s_now [E, S] normalised.
        Returns (action [E, A], index [E], q [E, C] = min_i Q̄_i(s_now, â_c), candidates â [E, C, A]).
        """
        e, c = rtg.shape[:2]
        flat = lambda x: x.reshape((e * c,) + x.shape[2:])
        a_hat = actor.apply(actor_params, flat(obs), flat(acts), flat(rtg), flat(ts), flat(mask))[0][:, -1]
        a_hat = a_hat.reshape(e, c, -1)
        if mode == "first":
            q = jnp.zeros((e, c))
        else:
            q = jnp.min(critic.apply(critic_params, jnp.broadcast_to(s_now[:, None], (e, c, s_now.shape[-1])), a_hat),
                        axis=0)
        idx = select_candidate(q, key, mode)
        return jnp.take_along_axis(a_hat, idx[:, None, None], axis=1)[:, 0], idx, q, a_hat

    q_row = mode != "first" and args.q_candidate and C > n_t  # the last row carries the critic's candidate

    def _candidate_rtgs(rtg_hist, t, prev, critic_params, key):
        """[E, C, K] candidate RTG histories. Fix §7.2: row c follows target c mod n (upstream: grouped repeats, so
        the un-noised rows were all target[0], and leftover rows got random N(0,1) histories); rows c ≥ n get
        candidate_noise·N(0,1) on the current RTG. Fix §7.1: the last row's current RTG is the critic's value of
        the current state, (min Q̄(s_{t−1}, a_{t−1}) − r_{t−1}) / γ / scale, in RTG units; none at t = 0."""
        rows = rtg_hist[:, jnp.arange(C) % n_t]  # [E, C, K]
        if mode == "first":
            return rows
        noise = args.candidate_noise * jax.random.normal(key, (E, C)) * (jnp.arange(C) >= n_t)
        rows = rows.at[:, :, -1].add(noise)
        if q_row:
            s_prev, a_prev, r_prev = prev
            qv = jnp.min(critic.apply(critic_params, s_prev, a_prev), axis=0)
            cand = (qv - r_prev) / gamma / scale
            rows = rows.at[:, -1, -1].set(jnp.where(t > 0, cand, rows[:, -1, -1]))
        return rows

    def evaluate(params, key):
        """(actor, target critic) `params` on E episodes with candidate selection; means of {return, episode_length,
        final task metrics}, and with a Q candidate its diagnostics: q_candidate_share (fraction of the steps t > 0
        that executed the critic's row) and q_candidate_rtg (that row's current RTG, raw units, averaged over those
        steps). Rewards count until an episode's first `done` (locomotion terminations); the env keeps stepping
        afterwards."""
        actor_params, critic_params = params
        k_reset, key = jax.random.split(key)
        env0 = jax.vmap(env.reset)(jax.random.split(k_reset, E))
        carry = {"env": env0, "obs": jnp.zeros((E, K, S)), "act": jnp.zeros((E, K, A)),
                 "ts": jnp.zeros((E, K), jnp.int32), "mask": jnp.zeros((E, K)), "rtg": jnp.zeros((E, n_t, K)),
                 "ret": jnp.zeros(E), "alive": jnp.ones(E, bool), "len": jnp.zeros(E),
                 "prev": (jnp.zeros((E, S)), jnp.zeros((E, A)), jnp.zeros(E)), "key": key,
                 "q_chosen": jnp.zeros(E), "q_rtg": jnp.zeros(E)}

        def step(c, t):
            key, k_noise, k_sel = jax.random.split(c["key"], 3)
            s = (c["env"].obs - mean_j) / std_j
            shift = lambda h, new: jnp.concatenate([h[:, 1:], new[:, None]], axis=1)
            obs, act = shift(c["obs"], s), shift(c["act"], jnp.zeros((E, A)))
            ts = shift(c["ts"], jnp.full((E,), jnp.minimum(t, args.max_ep_len - 1), jnp.int32))
            mask = shift(c["mask"], jnp.ones(E))
            cur = jnp.where(t == 0, jnp.broadcast_to(targets, (E, n_t)), c["rtg"][:, :, -1] - c["prev"][2][:, None] / scale)
            rtg = jnp.concatenate([c["rtg"][:, :, 1:], cur[..., None]], axis=-1)
            rows = _candidate_rtgs(rtg, t, c["prev"], critic_params, k_noise)
            rep = lambda x: jnp.broadcast_to(x[:, None], (E, C) + x.shape[1:])
            a, idx, _, _ = choose_action(actor_params, critic_params, rep(obs), rep(act), rows, rep(ts), rep(mask), s,
                                         k_sel)
            nxt = jax.vmap(env.step)(c["env"], a)
            act = act.at[:, -1].set(a)
            alive = c["alive"]
            counted = alive & (t > 0)  # steps that had a Q candidate
            return {"env": nxt, "obs": obs, "act": act, "ts": ts, "mask": mask, "rtg": rtg,
                    "ret": c["ret"] + jnp.where(alive, nxt.reward, 0.0), "alive": alive & ~(nxt.done > 0),
                    "len": c["len"] + alive, "prev": (s, a, nxt.reward), "key": key,
                    "q_chosen": c["q_chosen"] + (counted & (idx == C - 1)),
                    "q_rtg": c["q_rtg"] + jnp.where(counted, rows[:, -1, -1] * scale, 0.0)}, None

        c, _ = lax.scan(step, carry, jnp.arange(T))
        out = {"return": jnp.mean(c["ret"]), "episode_length": jnp.mean(c["len"])}
        out.update({n: jnp.mean(c["env"].metrics[n]) for n in env.final_metrics})
        if q_row:
            n_q = jnp.maximum(jnp.sum(c["len"] - 1), 1.0)  # counted steps: every alive step but t = 0
            out.update(q_candidate_share=jnp.sum(c["q_chosen"]) / n_q, q_candidate_rtg=jnp.sum(c["q_rtg"]) / n_q)
        return out

    ref, has_ref = _references(info)
    resolved = _resolved(info)
    return runner.Program(
        init, run_chunk, evaluate, None, env, Learner(actor, critic, choose_action, data, info),
        eval_params=lambda s: (s.actor, s.critic_target), eval_salt=EVAL_SALT,
        host_metrics=(lambda m: {"normalized_score": offline.normalized_score(m["return"], *ref)}) if has_ref else None,
        steps_per_iteration=args.steps_per_iter, step_unit="grad_steps",
        score="eval/normalized_score" if has_ref else "eval/return",
        headline=("eval/return", "eval/normalized_score", "train/bc_action", "train/critic_loss"),
        saved_info={"resolved": resolved},
        summary_info={"dataset": args.dataset, "env": env.name, "eta": args.eta, "selection": mode,
                      "iterations": args.iterations, "steps_per_iter": args.steps_per_iter, "resolved": resolved},
        header=f"{pathlib.Path(args.dataset).name} → {env.name}: eta {args.eta}, selection {mode}, "
               f"{args.iterations} iterations × {args.steps_per_iter} gradient steps")


# ---------------------------------------------------------------------------------------------------------------
# Host entry point: the shared runner trains; --evaluate-only re-evaluates a checkpoint

def _resolved(info: dict) -> dict:
    """The dataset-derived settings saved in args.json (JSON-normalised, so that saved and current compare)."""
    return json.loads(json.dumps({k: v for k, v in info.items() if k not in ("state_mean", "state_std")}))


def _check_saved_run(run_dir: pathlib.Path, flags: dict, what: str) -> dict:
    """Fail before loading data or compiling when `run_dir` has no checkpoint or was run with other `flags`; `what`
    (--resume, --evaluate-only) starts the message. Returns the saved args.json (flags added since the run count as
    saved with their defaults)."""
    if not ckpt.has_checkpoint(run_dir):
        raise UsageError(f"{what}: no checkpoint in {run_dir / 'checkpoints'}")
    if not (run_dir / "args.json").is_file():
        raise UsageError(f"{what}: {run_dir} has checkpoints but no args.json (not a run directory of "
                         "variants/qt.py?)")
    saved = ckpt.saved_args(run_dir / "args.json", Args)
    ckpt.check_same_flags(saved, flags, what)
    return saved


def _check_same_data(saved: dict, resolved: dict, dataset: str, what: str) -> None:
    if saved.get("resolved") != resolved:
        old = saved.get("resolved") or {}
        diff = {n: (old.get(n), v) for n, v in resolved.items() if old.get(n) != v}
        raise UsageError(f"{what}: the dataset {dataset} is not the one the run was trained on (saved vs now): "
                         + ", ".join(f"{n}: {a} vs {b}" for n, (a, b) in diff.items()))


def _references(info: dict, say=None) -> tuple[tuple, bool]:
    """The dataset's (random, expert) reference returns and whether they give a normalised score (else `say` a
    warning)."""
    ref = (info["ref_min_score"], info["ref_max_score"])
    has_ref = offline.references_usable(*ref)
    if say is not None and None not in ref and not has_ref:
        say(f"WARNING: the dataset's expert reference return {ref[1]:.4g} is not above its random one {ref[0]:.4g}; "
            "no normalised score is reported (raw returns only, and the best evaluation is picked by return)")
    return ref, has_ref


def heldout_eval_keys(eval_keys, eval_seed: int):
    """`--evaluate-only`'s episode keys per seed: fold_in(fold_in(k, 0x5E1EC7), eval_seed), a derivation disjoint
    from training's evaluations (fold_in(k, iteration))."""
    return jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 0x5E1EC7), eval_seed))(eval_keys)


def eval_file_name(args: Args) -> str:
    """`--evaluate-only`'s output name; it spells every inference flag that acts, so results under different
    flags do not overwrite each other: eval_first_<n>ep_seed<s>.json, or for Q-based selection
    eval_<selection>_c<candidates>_noise<σ>_[no]qcand_<n>ep_seed<s>.json."""
    sel = args.resolved_selection
    parts = [sel] if sel == "first" else [sel, f"c{args.num_candidates}", f"noise{args.candidate_noise:g}",
                                          "qcand" if args.q_candidate else "noqcand"]
    return "eval_" + "_".join(parts + [f"{args.num_eval_episodes}ep", f"seed{args.eval_seed}"]) + ".json"


def evaluate_checkpoint(args: Args, verbose: bool = True) -> dict:
    """`--evaluate-only`: the last checkpoint of the run in `args.run_dir`, evaluated with today's inference flags
    (INFERENCE_FLAGS: selection rule, candidates, episodes) on held-out episode keys. The training flags and the
    dataset must be the run's; the run itself (checkpoints, logs, summary) is not touched. Returns the result, also
    written to run_dir/`eval_file_name(args)`."""
    say = print if verbose else (lambda *a, **k: None)
    check_args(args)
    run_dir, what = args.run_dir, "--evaluate-only"
    flags = {k: v for k, v in ckpt.run_flags(args).items() if k not in INFERENCE_FLAGS}
    saved = _check_saved_run(run_dir, flags, what)
    if args.resolved_selection != "first" and not dataclasses.replace(args, selection=saved["selection"]).train_critic:
        raise UsageError(f"--selection: the run in {run_dir} trained no critic (--eta 0, selection first), so only "
                         f"--selection first can evaluate it, got {args.resolved_selection}")
    runner.use_compile_cache(args)
    prog = make_train(args)
    info = prog.learner.info
    _check_same_data(saved, _resolved(info), args.dataset, what)
    keys, eval_keys = runner.seed_keys(args.seed, args.num_seeds, EVAL_SALT)
    shard = runner.seed_sharding(args.num_seeds)  # the seeds on the devices that trained them
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shard),
                        jax.eval_shape(jax.vmap(prog.init), jnp.asarray(keys)))
    mgr = ckpt.manager(run_dir)
    state, meta, _ = ckpt.restore(mgr, like, say=lambda m: print(m, file=sys.stderr))
    mgr.close()
    iteration = meta["history"][-1]["iteration"]
    _, has_ref = _references(info, say)
    t0 = time.perf_counter()
    ev = {n: np.asarray(v, np.float64) for n, v in jax.jit(jax.vmap(prog.evaluate))(
        prog.eval_params(state), heldout_eval_keys(eval_keys, args.eval_seed)).items()}
    if has_ref:
        ev.update(prog.host_metrics(ev))
    key = "normalized_score" if has_ref else "return"
    sel = args.resolved_selection
    result = {"run_dir": str(run_dir), "dataset": args.dataset, "checkpoint_iteration": iteration,
              "selection": sel, "num_candidates": 1 if sel == "first" else args.num_candidates,
              **({} if sel == "first" else {"candidate_noise": args.candidate_noise, "q_candidate": args.q_candidate}),
              "num_eval_episodes": args.num_eval_episodes, "eval_seed": args.eval_seed, "score_key": key,
              "mean": float(ev[key].mean()), "std": float(ev[key].std()),
              "per_seed": [{"seed": args.seed + i, **{n: float(v[i]) for n, v in ev.items()}}
                           for i in range(args.num_seeds)],
              "wall_time_s": time.perf_counter() - t0}
    out = run_dir / eval_file_name(args)
    out.write_text(json.dumps(result, indent=1))
    say(f"{run_dir} at iteration {iteration}, selection {sel}, {args.num_eval_episodes} episodes × "
        f"{args.num_seeds} seed(s): {key} {result['mean']:.2f} ± {result['std']:.2f}; written to {out}")
    return result


def run(args: Args, max_chunks: int | None = None, verbose: bool = True) -> dict:
    """Train (or continue with `args.resume`) with the shared host loop (`toperl_jax.runner.run`) and return its
    summary (also written to run_dir/summary.json) plus the final `state`. With `args.evaluate_only`:
    `evaluate_checkpoint`.

    One chunk = `eval_every` iterations, then an evaluation (and one of the untrained policy at iteration 0).
    `max_chunks` stops after that many chunks in this call (a checkpoint is written), e.g. to split a run across
    jobs; `--resume` then continues it exactly: parameters, optimiser states (hence the cosine position), EMA actor,
    target critics, the training key and the step count come from the checkpoint, the evaluation history from its
    metadata, and the evaluation keys are a function of seed and iteration. A resumed run's flags and dataset must
    be the saved run's (checked here before the data are loaded, and the dataset right after).
    """
    if args.evaluate_only:
        return evaluate_checkpoint(args, verbose)
    runner.init_distributed(args)
    check_args(args)
    saved = _check_saved_run(args.run_dir, ckpt.run_flags(args), "--resume") if args.resume else None
    prog = make_train(args)
    if saved is not None:
        _check_same_data(saved, prog.saved_info["resolved"], args.dataset, "--resume")
    _references(prog.learner.info, print if verbose and jax.process_index() == 0 else None)
    return runner.run(args, prog, max_chunks, verbose, title="QT")


if __name__ == "__main__":
    cli.main(lambda: run(parse_args()))
