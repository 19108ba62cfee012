"""Host-side logging shared by the variants: TensorBoard (one writer per seed) and a console progress line.

    log = RunLogger(run_dir, num_seeds=4)
    log.scalars({"eval/success": per_seed_array, ...}, step=env_steps)    # run_dir/seed_<i>/events...
    progress = Progress(total_iterations=35000, env_steps_per_iteration=400)
    print(progress.line(iteration, {"success": 0.8}))

Nothing here runs under `jax.jit`; values are converted with numpy.
"""

from __future__ import annotations

import math
import pathlib
import subprocess
import time

import numpy as np
from tensorboardX import SummaryWriter


def git_commit(paths: tuple[str, ...] = ("toperl_jax", "variants")) -> str:
    """Short HEAD of the checkout this package runs from, plus the uncommitted files under `paths` (so that a
    result can be traced to its code), or "unknown" outside a git checkout."""
    root = pathlib.Path(__file__).resolve().parents[1]

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, check=True, timeout=10).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        dirty = [line[3:] for line in git("status", "--porcelain", "--", *paths).splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    more = f" and {len(dirty) - 4} more" if len(dirty) > 4 else ""
    return head + (f" (uncommitted: {', '.join(dirty[:4])}{more})" if dirty else "")


class RunLogger:
    """One tensorboardX writer per seed under `run_dir/seed_<i>`, so that TensorBoard overlays the seeds."""

    def __init__(self, run_dir: str | pathlib.Path, num_seeds: int):
        self.run_dir = pathlib.Path(run_dir)
        self.writers = [SummaryWriter(str(self.run_dir / f"seed_{i}")) for i in range(num_seeds)]

    def scalars(self, metrics: dict[str, np.ndarray], step: int) -> None:
        """Write `{tag: [num_seeds] values}` at `step`; NaN entries (e.g. updates not started yet) are skipped."""
        for tag, values in metrics.items():
            values = np.asarray(values, np.float64).reshape(len(self.writers))
            for writer, v in zip(self.writers, values):
                if np.isfinite(v):
                    writer.add_scalar(tag, float(v), step)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        for w in self.writers:
            w.close()


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


class Progress:
    """A one-line text progress bar with iterations/s, env steps and ETA.

    The rate is measured from the first `line` call onward (`start(iteration)`), so that compilation and a
    resumed run's earlier iterations do not distort it.
    """

    def __init__(self, total_iterations: int, env_steps_per_iteration: int, width: int = 20,
                 initial_env_steps: int = 0, unit: str = "env steps"):
        self.total = total_iterations
        self.unit = unit  # what the steps count (an offline learner: "grad steps")
        self.steps_per_it = env_steps_per_iteration
        self.initial_env_steps = initial_env_steps  # taken before iteration 1 (a buffer warm-up)
        self.width = width
        self._t0: float | None = None
        self._it0 = 0

    def start(self, iteration: int) -> None:
        """Start the rate clock at `iteration` (call after the first, compiling, chunk)."""
        self._t0, self._it0 = time.perf_counter(), iteration

    def rate(self, iteration: int) -> float:
        """Iterations per second since `start` (NaN before)."""
        if self._t0 is None or iteration <= self._it0:
            return float("nan")
        return (iteration - self._it0) / (time.perf_counter() - self._t0)

    def line(self, iteration: int, values: dict[str, float] | None = None) -> str:
        """`[#####-----]  50% it 500/1000 | 25.0k env steps | 12.3 it/s | ETA 0:41 | name value ...`."""
        frac = iteration / self.total if self.total else 1.0
        filled = round(frac * self.width)
        rate = self.rate(iteration)
        eta = (self.total - iteration) / rate if rate > 0 else float("nan")
        parts = [f"[{'#' * filled}{'-' * (self.width - filled)}] {100 * frac:3.0f}% it {iteration}/{self.total}",
                 f"{_count(self.initial_env_steps + iteration * self.steps_per_it)} {self.unit}",
                 f"{rate:.2f} it/s" if math.isfinite(rate) else "-- it/s", f"ETA {_clock(eta)}"]
        if values:
            parts.append("  ".join(f"{k} {v:.3g}" for k, v in values.items()))
        return " | ".join(parts)
