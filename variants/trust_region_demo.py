"""Placeholder quickstart: trust-region policy search over ProDMP weights on a toy reaching problem.

TOP-ERL itself (`variants/top_erl.py`) arrives with the TOP-ERL issue; until then, this script runs the
three cores it stands on, end to end, exactly as TOP-ERL's policy update uses them:

    goal g ~ U[-1, 1]^dof  →  π(w | g) = N(μ(g), LLᵀ)  →  KL projection onto the old policy's trust region
    →  w = μ̃ + L̃ξ  →  ProDMP decode from rest  →  return R = −‖pos(T) − g‖² − 0.1‖vel(T)‖²
    loss = −E[R] + trust_region_coeff · KL(π ‖ sg π̃);  old policy ← Polyak(0.005) after each update.

The return is differentiable, so it stands in for TOP-ERL's learned critic. No physics is simulated.
Run: `python variants/trust_region_demo.py --help`. Logs go to TensorBoard under `--logdir`.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import optax
import tyro
from flax import struct
from tensorboardX import SummaryWriter

from toperl_jax import cli, gaussian
from toperl_jax.mp import ProDMPConfig, prodmp_trajectory
from toperl_jax.policy import GaussianPolicy
from toperl_jax.projection import ProjectionConfig, kl_projection, trust_region_loss


@dataclasses.dataclass(frozen=True)
class Args:
    seed: int = 0
    """random seed"""
    iterations: int = 1000
    """policy updates"""
    batch_size: int = 128
    """goals (episodes) per update"""
    num_dof: int = 2
    """degrees of freedom of the reaching task"""
    num_basis: int = 4
    """ProDMP basis functions per degree of freedom (plus one goal weight)"""
    duration: float = 1.0
    """episode length in seconds (also the ProDMP tau)"""
    dt: float = 0.02
    """control time step in seconds"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """mean network hidden widths"""
    lr: float = 1e-3
    """Adam learning rate"""
    mean_bound: float = 0.05
    """trust region: bound on the mean part of KL(π̃ ‖ π_old)"""
    cov_bound: float = 0.005
    """trust region: bound on the covariance part of KL(π̃ ‖ π_old)"""
    polyak: float = 0.005
    """old-policy Polyak rate"""
    log_every: int = 100
    """iterations per jitted chunk; logging, printing and evaluation happen between chunks"""
    logdir: str = "runs/trust_region_demo"
    """TensorBoard log directory"""

    def __post_init__(self):
        for name in ("iterations", "batch_size", "num_dof", "num_basis", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.iterations % self.log_every:
            raise ValueError(f"--iterations ({self.iterations}) must be a multiple of --log-every ({self.log_every})")
        if not 0.0 < self.dt < self.duration:
            raise ValueError(f"--dt must be in (0, --duration), got dt={self.dt}, duration={self.duration}")


@struct.dataclass
class TrainState:
    params: dict
    old_params: dict
    opt_state: optax.OptState
    initial_entropy: jax.Array
    step: jax.Array
    key: jax.Array


def make_train(args: Args):
    """Static set-up; returns `(init, run_chunk, evaluate)`, all pure and jit-able."""
    mp = ProDMPConfig(num_dof=args.num_dof, num_basis=args.num_basis, tau=args.duration, dt=args.dt)
    k = args.num_dof * (args.num_basis + 1)
    times = jnp.arange(1, round(args.duration / args.dt) + 1) * args.dt
    policy = GaussianPolicy(action_dim=k, hidden_sizes=args.hidden_sizes, min_std=1e-5)
    proj = ProjectionConfig(mean_bound=args.mean_bound, cov_bound=args.cov_bound, entropy_schedule="linear",
                            target_entropy=-1.0, total_train_steps=args.iterations)
    optimizer = optax.adam(args.lr)

    def final_state(weights):
        """Position and velocity `[..., dof]` at the end of the trajectory decoded from rest at time 0."""
        zeros = jnp.zeros(weights.shape[:-1] + (args.num_dof,))
        pos, vel = prodmp_trajectory(mp, weights, times, jnp.zeros(weights.shape[:-1]), zeros, zeros)
        return pos[..., -1, :], vel[..., -1, :]

    def returns(weights, goals):
        pos, vel = final_state(weights)
        return -jnp.sum(jnp.square(pos - goals), -1) - 0.1 * jnp.sum(jnp.square(vel), -1)

    def init(key):
        key, init_key = jax.random.split(key)
        params = policy.init(init_key, jnp.zeros((args.num_dof,)))
        _, L = policy.apply(params, jnp.zeros((1, args.num_dof)))
        return TrainState(params, params, optimizer.init(params), gaussian.entropy(L), jnp.array(0), key)

    def update(state: TrainState, _):
        key, goal_key, noise_key = jax.random.split(state.key, 3)
        goals = jax.random.uniform(goal_key, (args.batch_size, args.num_dof), minval=-1.0, maxval=1.0)
        mean_old, L_old = policy.apply(state.old_params, goals)
        step = state.step + 1

        def loss_fn(params):
            mean, L = policy.apply(params, goals)
            mean_p, L_p, info = kl_projection(proj, mean, L, mean_old, L_old, step, state.initial_entropy)
            weights = gaussian.sample(noise_key, mean_p, L_p)
            ret = jnp.mean(returns(weights, goals))
            loss = -ret + trust_region_loss(proj, mean, L, mean_p, L_p)
            return loss, {"return": ret, "entropy": gaussian.entropy(L_p), "fallback": info["fallback"]}

        grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        old = optax.incremental_update(params, state.old_params, args.polyak)
        return state.replace(params=params, old_params=old, opt_state=opt_state, step=step, key=key), metrics

    def run_chunk(state):
        state, metrics = jax.lax.scan(update, state, None, length=args.log_every)
        return state, jax.tree.map(lambda m: jnp.mean(m.astype(jnp.float32)), metrics)

    def evaluate(params, key):
        goals = jax.random.uniform(key, (1024, args.num_dof), minval=-1.0, maxval=1.0)
        mean, _ = policy.apply(params, goals)
        pos, _ = final_state(mean)
        return jnp.mean(jnp.linalg.norm(pos - goals, axis=-1))

    return init, jax.jit(run_chunk), jax.jit(evaluate)


def main(args: Args):
    print("toperl-jax quickstart placeholder: trust-region policy search over ProDMP weights (no physics).")
    print("TOP-ERL itself is not implemented yet; it replaces this script in the README when it lands.\n")
    init, run_chunk, evaluate = make_train(args)
    state = init(jax.random.key(args.seed))
    eval_key = jax.random.key(args.seed + 1)
    writer = SummaryWriter(args.logdir)
    print(f"iteration 0: final distance to goal (mean policy) {float(evaluate(state.params, eval_key)):.3f}")
    start = time.perf_counter()
    for chunk in range(args.iterations // args.log_every):
        state, metrics = run_chunk(state)
        it = (chunk + 1) * args.log_every
        dist = float(evaluate(state.params, eval_key))
        for name, value in {**metrics, "eval/final_distance": dist}.items():
            writer.add_scalar(name if "/" in name else f"train/{name}", float(value), it)
        print(f"iteration {it}: return {float(metrics['return']):.4f}  entropy {float(metrics['entropy']):.2f}  "
              f"final distance {dist:.3f}  ({time.perf_counter() - start:.1f} s)")
    writer.close()
    print(f"\nTensorBoard logs: tensorboard --logdir {args.logdir}")
    return dist


if __name__ == "__main__":
    cli.main(lambda: main(tyro.cli(Args)))
