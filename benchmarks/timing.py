"""Timing helpers shared by the benchmark scripts: compile time, then the median and IQR of repeated calls."""

from __future__ import annotations

import pathlib
import platform
import time

import jax
import numpy as np


def device_platform() -> str:
    """Platform of the device the benchmark runs on ('cpu', 'gpu', …)."""
    return jax.devices()[0].platform


def jit_options(task) -> dict | None:
    """XLA options for a benchmark's jitted programs that step `task`: what a training run compiles with on the device
    at hand (`runner.compiler_options`: the task's own options, plus cuBLAS GEMMs on a GPU). The task's options alone
    leave XLA's Triton GEMM emitter on, whose compile of the critic step on an H100 did not finish in 4 minutes even at
    the reach preset's shapes (docs/performance.md "GPU")."""
    from toperl_jax import runner

    return runner.compiler_options(task, device_platform())


def time_calls(call, repeats: int) -> dict:
    """Wall time of `repeats` calls of `call()` (which must block until its work is done)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    q25, q50, q75 = np.percentile(times, [25, 50, 75])
    return {"median_s": float(q50), "mean_s": float(np.mean(times)), "q25_s": float(q25), "q75_s": float(q75),
            "times_s": times}


def compile_timed(fn, *args):
    """(`fn.lower(*args).compile()`, seconds it took) for a jitted `fn`."""
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def time_jitted(fn, args_fn, repeats: int) -> dict:
    """Compile the jitted `fn` for `args_fn(0)` (timed as `compile_s`), warm up on `args_fn(1)`, then time
    `repeats` calls on `args_fn(2)`, `args_fn(3)`, … (e.g. a fresh PRNG key per call)."""
    compiled, compile_s = compile_timed(fn, *args_fn(0))
    jax.block_until_ready(compiled(*args_fn(1)))
    calls = iter(range(2, 2 + repeats))
    result = time_calls(lambda: jax.block_until_ready(compiled(*args_fn(next(calls)))), repeats)
    return {"compile_s": compile_s, **result}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what `platform` knows)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
