"""Meta-World (Sawyer, mocap control) tasks in MJX: see sawyer.py (shared task), tasks.py (MT10 and more),
assets.py (the model, built from the installed `metaworld` package) and docs/metaworld.md."""

from toperl_jax.envs.metaworld.sawyer import SawyerTask, reset_compiler_options, xla_cpu_options
from toperl_jax.envs.metaworld.tasks import TASKS

MT10 = ("reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close", "button-press-topdown",
        "peg-insert-side", "window-open", "window-close")
"""Meta-World's MT10 task names (registered as `metaworld-<name>`)."""

MORE = ("door-close", "button-press", "button-press-wall", "button-press-topdown-wall", "reach-wall", "push-wall",
        "pick-place-wall", "plate-slide", "plate-slide-side", "plate-slide-back", "plate-slide-back-side",
        "handle-press", "handle-press-side", "handle-pull", "handle-pull-side", "faucet-open", "faucet-close",
        "coffee-button", "door-lock", "door-unlock")
"""Further MT50 tasks ported beyond MT10 (registered as `metaworld-<name>` too)."""

REST = ("dial-turn", "lever-pull", "coffee-push", "coffee-pull", "box-close", "peg-unplug-side", "push-back",
        "sweep", "sweep-into", "soccer", "pick-out-of-hole", "shelf-place", "basketball", "bin-picking",
        "hand-insert", "hammer", "stick-push", "stick-pull", "assembly", "disassemble")
"""The remaining MT50 tasks (registered as `metaworld-<name>` too)."""

MT50 = MT10 + MORE + REST
"""All 50 Meta-World tasks of MT50, MT10 first."""

__all__ = ["MORE", "MT10", "MT50", "REST", "TASKS", "SawyerTask", "reset_compiler_options", "xla_cpu_options"]
