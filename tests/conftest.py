"""Test-session settings: a persistent XLA compilation cache (CPU compiles dominate the suite's time).

x64 stays off globally (as in training); float64 tests use `with jax.enable_x64(True):`.
"""

import os
import pathlib

import jax

_CACHE = pathlib.Path(os.environ.get("TOPERL_JAX_TEST_CACHE", pathlib.Path(__file__).parents[1] / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
