"""Episodic MJX tasks behind one small interface (see `base.py`).

    task = make("reacher")
    state = task.reset(key)                          # EnvState, obs [task.obs_size]
    state = task.step(state, desired_pos, desired_vel)
    final, traj = task.rollout(state, desired)       # desired [T, 2 dof] -> Rollout

Task modules are imported on first use, so `import toperl_jax.envs` stays cheap and a task's
MJCF is only compiled when that task is made.
"""

import importlib

from toperl_jax.envs.base import PHYSICS_IMPLS, EnvState, EpisodicTask, Rollout, check_physics_impl, pd_torque

# name -> ("module:Class", constructor kwargs)
_REGISTRY: dict[str, tuple[str, dict]] = {
    "reacher": ("toperl_jax.envs.reacher:Reacher", {}),
    "box-pushing-dense": ("toperl_jax.envs.box_pushing:BoxPushing", {"reward_type": "dense"}),
    "box-pushing-sparse": ("toperl_jax.envs.box_pushing:BoxPushing",
                           {"reward_type": "temporal_sparse"}),
    "hopper-jump-sparse": ("toperl_jax.envs.hopper_jump:HopperJump", {"sparse": True}),
    "hopper-jump-dense": ("toperl_jax.envs.hopper_jump:HopperJump", {"sparse": False}),
    # goal-switching tasks for replanning (goal_switch.py)
    "reacher-switch": ("toperl_jax.envs.goal_switch:ReacherSwitch", {}),
    "box-pushing-dense-switch": ("toperl_jax.envs.goal_switch:BoxPushingSwitch", {"reward_type": "dense"}),
    "box-pushing-sparse-switch": ("toperl_jax.envs.goal_switch:BoxPushingSwitch",
                                  {"reward_type": "temporal_sparse"}),
    # Meta-World MT10 (docs/metaworld.md; assets from the `metaworld` package)
    "metaworld-reach": ("toperl_jax.envs.metaworld.tasks:Reach", {}),
    "metaworld-push": ("toperl_jax.envs.metaworld.tasks:Push", {}),
    "metaworld-pick-place": ("toperl_jax.envs.metaworld.tasks:PickPlace", {}),
    "metaworld-door-open": ("toperl_jax.envs.metaworld.tasks:DoorOpen", {}),
    "metaworld-drawer-open": ("toperl_jax.envs.metaworld.tasks:DrawerOpen", {}),
    "metaworld-drawer-close": ("toperl_jax.envs.metaworld.tasks:DrawerClose", {}),
    "metaworld-button-press-topdown": ("toperl_jax.envs.metaworld.tasks:ButtonPressTopdown", {}),
    "metaworld-peg-insert-side": ("toperl_jax.envs.metaworld.tasks:PegInsertSide", {}),
    "metaworld-window-open": ("toperl_jax.envs.metaworld.tasks:WindowOpen", {}),
    "metaworld-window-close": ("toperl_jax.envs.metaworld.tasks:WindowClose", {}),
    # further MT50 tasks (docs/metaworld.md)
    "metaworld-door-close": ("toperl_jax.envs.metaworld.tasks:DoorClose", {}),
    "metaworld-button-press": ("toperl_jax.envs.metaworld.tasks:ButtonPress", {}),
    "metaworld-button-press-wall": ("toperl_jax.envs.metaworld.tasks:ButtonPressWall", {}),
    "metaworld-button-press-topdown-wall": ("toperl_jax.envs.metaworld.tasks:ButtonPressTopdownWall", {}),
    "metaworld-reach-wall": ("toperl_jax.envs.metaworld.tasks:ReachWall", {}),
    "metaworld-push-wall": ("toperl_jax.envs.metaworld.tasks:PushWall", {}),
    "metaworld-pick-place-wall": ("toperl_jax.envs.metaworld.tasks:PickPlaceWall", {}),
    "metaworld-plate-slide": ("toperl_jax.envs.metaworld.tasks:PlateSlide", {}),
    "metaworld-plate-slide-side": ("toperl_jax.envs.metaworld.tasks:PlateSlideSide", {}),
    "metaworld-plate-slide-back": ("toperl_jax.envs.metaworld.tasks:PlateSlideBack", {}),
    "metaworld-plate-slide-back-side": ("toperl_jax.envs.metaworld.tasks:PlateSlideBackSide", {}),
    "metaworld-handle-press": ("toperl_jax.envs.metaworld.tasks:HandlePress", {}),
    "metaworld-handle-press-side": ("toperl_jax.envs.metaworld.tasks:HandlePressSide", {}),
    "metaworld-handle-pull": ("toperl_jax.envs.metaworld.tasks:HandlePull", {}),
    "metaworld-handle-pull-side": ("toperl_jax.envs.metaworld.tasks:HandlePullSide", {}),
    "metaworld-faucet-open": ("toperl_jax.envs.metaworld.tasks:FaucetOpen", {}),
    "metaworld-faucet-close": ("toperl_jax.envs.metaworld.tasks:FaucetClose", {}),
    "metaworld-coffee-button": ("toperl_jax.envs.metaworld.tasks:CoffeeButton", {}),
    "metaworld-door-lock": ("toperl_jax.envs.metaworld.tasks:DoorLock", {}),
    "metaworld-door-unlock": ("toperl_jax.envs.metaworld.tasks:DoorUnlock", {}),
    "metaworld-dial-turn": ("toperl_jax.envs.metaworld.tasks:DialTurn", {}),
    "metaworld-lever-pull": ("toperl_jax.envs.metaworld.tasks:LeverPull", {}),
    "metaworld-coffee-push": ("toperl_jax.envs.metaworld.tasks:CoffeePush", {}),
    "metaworld-coffee-pull": ("toperl_jax.envs.metaworld.tasks:CoffeePull", {}),
    "metaworld-box-close": ("toperl_jax.envs.metaworld.tasks:BoxClose", {}),
    "metaworld-peg-unplug-side": ("toperl_jax.envs.metaworld.tasks:PegUnplugSide", {}),
    "metaworld-push-back": ("toperl_jax.envs.metaworld.tasks:PushBack", {}),
    "metaworld-sweep": ("toperl_jax.envs.metaworld.tasks:Sweep", {}),
    "metaworld-sweep-into": ("toperl_jax.envs.metaworld.tasks:SweepInto", {}),
    "metaworld-soccer": ("toperl_jax.envs.metaworld.tasks:Soccer", {}),
    "metaworld-pick-out-of-hole": ("toperl_jax.envs.metaworld.tasks:PickOutOfHole", {}),
    "metaworld-shelf-place": ("toperl_jax.envs.metaworld.tasks:ShelfPlace", {}),
    "metaworld-basketball": ("toperl_jax.envs.metaworld.tasks:Basketball", {}),
    "metaworld-bin-picking": ("toperl_jax.envs.metaworld.tasks:BinPicking", {}),
    "metaworld-hand-insert": ("toperl_jax.envs.metaworld.tasks:HandInsert", {}),
    "metaworld-hammer": ("toperl_jax.envs.metaworld.tasks:Hammer", {}),
    "metaworld-stick-push": ("toperl_jax.envs.metaworld.tasks:StickPush", {}),
    "metaworld-stick-pull": ("toperl_jax.envs.metaworld.tasks:StickPull", {}),
    "metaworld-assembly": ("toperl_jax.envs.metaworld.tasks:Assembly", {}),
    "metaworld-disassemble": ("toperl_jax.envs.metaworld.tasks:Disassemble", {}),
}


def task_names() -> tuple[str, ...]:
    """Names accepted by `make`."""
    return tuple(sorted(_REGISTRY))


def make(name: str, **kwargs) -> EpisodicTask:
    """Build a task by name; kwargs go to its constructor (e.g. episode_length, random_init; every task takes
    physics_impl 'jax' or 'warp' and warp_worlds, see `EpisodicTask.init_physics`)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; accepted task names: {', '.join(task_names())}")
    target, defaults = _REGISTRY[name]
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(**{**defaults, **kwargs})


__all__ = ["PHYSICS_IMPLS", "EnvState", "EpisodicTask", "Rollout", "check_physics_impl", "make", "pd_torque",
           "task_names"]
