"""Meta-World (Sawyer, mocap control) tasks in MJX: see sawyer.py (shared task), tasks.py (MT10), assets.py
(the model, built from the installed `metaworld` package) and docs/metaworld.md."""

from toperl_jax.envs.metaworld.sawyer import SawyerTask, xla_cpu_options
from toperl_jax.envs.metaworld.tasks import TASKS

MT10 = ("reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close", "button-press-topdown",
        "peg-insert-side", "window-open", "window-close")
"""Meta-World's MT10 task names (registered as `metaworld-<name>`)."""

__all__ = ["MT10", "TASKS", "SawyerTask", "xla_cpu_options"]
