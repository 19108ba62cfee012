"""Episodic MJX tasks behind one small interface (see `base.py`).

    task = make("reacher")
    state = task.reset(key)                          # EnvState, obs [task.obs_size]
    state = task.step(state, desired_pos, desired_vel)
    final, traj = task.rollout(state, desired)       # desired [T, 2 dof] -> Rollout
"""

from toperl_jax.envs.base import EnvState, EpisodicTask, Rollout, pd_torque
from toperl_jax.envs.reacher import Reacher

_REGISTRY = {"reacher": Reacher}


def task_names() -> tuple[str, ...]:
    """Names accepted by `make`."""
    return tuple(sorted(_REGISTRY))


def make(name: str, **kwargs) -> EpisodicTask:
    """Build a task by name; kwargs go to its constructor (e.g. episode_length)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; accepted task names: {', '.join(task_names())}")
    return _REGISTRY[name](**kwargs)


__all__ = ["EnvState", "EpisodicTask", "Reacher", "Rollout", "make", "pd_torque", "task_names"]
