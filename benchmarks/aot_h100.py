"""Compile variants/top_erl.py's programs for an NVIDIA H100 on a machine without a GPU (issue 25, item 3).

    pip install -e '.[cuda-aot]'         # jax's CUDA plugin (jax[cuda12]); best in a venv of its own
    JAX_PLATFORMS=cpu python benchmarks/aot_h100.py --presets box-dense hopper-jump metaworld
    JAX_PLATFORMS=cpu python benchmarks/aot_h100.py --presets box-dense --programs critic_step --hlo-dir /tmp/hlo

How: the CUDA plugin (jax-cuda12-plugin + jax-cuda12-pjrt, the same version as jaxlib) compiles for a device that
is described, not attached: `jax.experimental.topologies.get_topology_desc(platform='cuda',
target_config=<GpuTargetConfigProto text>)` returns compile-only devices, and a function jitted on arguments placed
on such a device (`jax.ShapeDtypeStruct(..., sharding=SingleDeviceSharding(device))`) is lowered and compiled by
XLA's full GPU pipeline for that device (fusion, Triton / cuBLAS GEMMs, PTX, SASS); nothing runs. `H100` below is
that description for an H100 SXM5 80 GB (compute capability 9.0), written from the card's data sheet. Set
`JAX_PLATFORMS=cpu` (done for you when this file runs as a script): the plugin then skips its CUDA driver checks,
which fail on a machine without a GPU, and registers the 'cuda' topology anyway.

Per program, the compiled executable's `memory_analysis()` (bytes of arguments, outputs, temporaries, generated
code; `device_bytes` = arguments + outputs + temporaries − donated aliases) and the compile time; `--hlo-dir`
writes the optimized HLO (benchmarks/gpu_kernels.py counts its kernels).

GPU compiler options: the runner's (`toperl_jax.runner.GPU_COMPILER_OPTIONS`, what a training run on a GPU compiles
with): XLA's Triton GEMM emitter off, the GEMMs on cuBLAS. With it on, the deviceless compile of the critic and
policy steps fails ("Couldn't find output tile sizes that satisfy hlo: %dot = f32[64000,128] ..."): a dot whose
operand is a transposed [..., features, tokens] tensor with a token count that is not a multiple of 16
(`repro_triton_tiling` below; docs/performance.md "GPU").
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before jax starts: the CUDA plugin must not look for a driver (see the docstring)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dataclasses
import importlib.util
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from toperl_jax import runner  # noqa: E402
from variants import top_erl as te  # noqa: E402

EXTRA = "cuda-aot"
PLUGIN_MISSING = (f"the deviceless H100 compile needs jax's CUDA plugin, which is not installed: "
                  f"pip install -e '.[{EXTRA}]' (jax[cuda12] at jaxlib's version; best in a venv of its own)")

GPU_COMPILER_OPTIONS = runner.GPU_COMPILER_OPTIONS
"""XLA options of every GPU compile here, the runner's (module docstring)."""

GB = 1e9
H100_MEMORY_BYTES = 85_045_477_376
"""An H100 SXM5 80 GB's device memory as CUDA reports it (81,106 MiB)."""
JAX_PREALLOCATED_FRACTION = 0.75
"""JAX preallocates 75 % of a GPU's memory (XLA_PYTHON_CLIENT_MEM_FRACTION) and allocates from that pool only."""

H100 = {
    # an H100 SXM5 80 GB HBM3 (compute capability 9.0): 132 SMs at up to 1.98 GHz, 128 FP32 lanes per SM,
    # 50 MiB L2, 3.35 TB/s HBM3; per SM 228 KiB shared memory (227 KiB per block opt-in) and 64 Ki registers
    "threads_per_block_limit": 1024, "threads_per_warp": 32, "shared_memory_per_block": 48 * 1024,
    "shared_memory_per_core": 228 * 1024, "shared_memory_per_block_optin": 227 * 1024,
    "threads_per_core_limit": 2048, "core_count": 132, "fpus_per_core": 128,
    "block_dim_limit_x": 2**31 - 1, "block_dim_limit_y": 65535, "block_dim_limit_z": 65535,
    "memory_bandwidth": 3_352_320_000_000, "l2_cache_size": 50 * 1024**2, "clock_rate_ghz": 1.98,
    "device_memory_size": H100_MEMORY_BYTES, "registers_per_core_limit": 65536, "registers_per_block_limit": 65536,
}
H100_NAME = "NVIDIA H100 80GB HBM3"
CUDNN_VERSION = (9, 8)
"""The cuDNN version the description claims (jax[cuda12] 0.10.2 needs cuDNN >= 9.8); no program here uses cuDNN."""


def target_config_text() -> str:
    """The H100 as XLA's `GpuTargetConfigProto` in protobuf text format."""
    info = "\n".join(f"  {k}: {v}" for k, v in H100.items())
    return (f"gpu_device_info {{\n{info}\n  cuda_compute_capability {{ major: 9 minor: 0 }}\n}}\n"
            f'platform_name: "CUDA"\n'
            f"dnn_version_info {{ major: {CUDNN_VERSION[0]} minor: {CUDNN_VERSION[1]} }}\n"
            f'device_description_str: "{H100_NAME}"\n')


def plugin_installed() -> bool:
    try:
        return importlib.util.find_spec("jax_plugins.xla_cuda12") is not None
    except ModuleNotFoundError:  # no jax_plugins namespace at all
        return False


_DEVICE = []


def h100_device():
    """A compile-only H100 (no GPU needed). Raises RuntimeError with `PLUGIN_MISSING` without the CUDA plugin, and
    a one-line hint if jax started with a platform list that made the plugin fail."""
    if _DEVICE:
        return _DEVICE[0]
    if not plugin_installed():
        raise RuntimeError(PLUGIN_MISSING)
    from jax.experimental import topologies

    try:
        topo = topologies.get_topology_desc("h100", "cuda", target_config=target_config_text(), topology="1x1x1")
    except NotImplementedError as e:  # the plugin failed to initialise (it looked for a CUDA driver)
        raise RuntimeError("the CUDA plugin did not register its 'cuda' topology: start Python with "
                           f"JAX_PLATFORMS=cpu on a machine without a GPU ({e})") from e
    _DEVICE.append(topo.devices[0])
    return _DEVICE[0]


def on_h100(tree):
    """`tree`'s arrays / shapes as `ShapeDtypeStruct`s placed on the compile-only H100."""
    sharding = jax.sharding.SingleDeviceSharding(h100_device())
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), x.dtype, sharding=sharding), tree)


def compile_for_h100(fn, *args, donate_argnums=(), options=None) -> tuple:
    """(compiled executable, seconds to trace + lower, seconds to compile) of `jax.jit(fn)` for the H100 on `args`
    (shapes, placed with `on_h100`), with `GPU_COMPILER_OPTIONS` unless `options` is given."""
    t0 = time.perf_counter()
    lowered = jax.jit(fn, donate_argnums=donate_argnums).trace(*args).lower()
    t1 = time.perf_counter()
    compiled = lowered.compile(GPU_COMPILER_OPTIONS if options is None else options)
    return compiled, t1 - t0, time.perf_counter() - t1


def memory(compiled) -> dict:
    """`memory_analysis()` of a compiled GPU executable in bytes; device_bytes = arguments + outputs + temporaries −
    aliased (donated) bytes: what the program holds on the device while it runs."""
    m = compiled.memory_analysis()
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp", "generated_code")}
    out["device_bytes"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def repro_triton_tiling(tokens: int, rows: int = 512, features: int = 128, options=None):
    """Compile, for the H100, the op that XLA's Triton GEMM emitter fails on (without autotuning): a dot whose lhs is
    a [1, rows, 3·features, tokens] tensor transposed to [rows·tokens, 3·features] (the attention backward leaves
    the tokens minor; the c_attn kernel's transpose then contracts the 3·features), scaled by a LayerNorm weight.
    Raises XLA's "Couldn't find output tile sizes" with the Triton GEMM on and tokens % 16 != 0 (e.g. 125, 136)."""
    def f(g, w, scale):
        return (jnp.swapaxes(g, -1, -2).reshape(rows * tokens, 3 * features) @ w) * scale

    shapes = on_h100((jax.ShapeDtypeStruct((1, rows, 3 * features, tokens), jnp.float32),
                      jax.ShapeDtypeStruct((3 * features, features), jnp.float32),
                      jax.ShapeDtypeStruct((features,), jnp.float32)))
    return compile_for_h100(f, *shapes, options=options)[0]


# ---------------------------------------------------------------------------------------------------------------
# The programs of a preset, at its real shapes


def programs(preset: str, names=None, rollout_episodes: int | None = None, args=None) -> dict:
    """{name: (fn, shaped args, donate_argnums)} of variants/top_erl.py's `preset`, built for the GPU
    (`make_train(args, platform='cuda')`), shapes from `jax.eval_shape` (nothing runs):
      chunk        `run_chunk(state, first_it)`: `eval_interval` iterations (rollout, buffer add, critic and policy
                   updates), one seed, the state donated as the runner donates it;
      evaluate     `evaluate(policy params, key)`: `num_eval_episodes` deterministic episodes;
      rollout      `Program.rollout` of `rollout_episodes` (default `num_envs`) training episodes;
      critic_step, policy_step   one update step each (`te.critic_step` / `te.policy_step`), at an iteration past
                   `policy_update_from`."""
    args = args or te.PRESETS[preset]
    program = te.make_train(args, platform="cuda")
    learner = program.learner
    state = on_h100(jax.eval_shape(program.init, jax.random.PRNGKey(0)))
    key = on_h100(jax.eval_shape(lambda: jax.random.PRNGKey(0)))
    scalar = on_h100(jax.ShapeDtypeStruct((), jnp.int32))
    it = jnp.int32(args.policy_update_from)
    n = rollout_episodes or args.num_envs

    def h0(s):
        return te.initial_entropy(learner, s.policy.old_params, s.buffer.data.states[:8, 0])

    def critic_step(s, k):
        return te.critic_step(learner, s.critic, s.buffer, s.policy.params, s.policy.old_params, it, h0(s), k)

    def policy_step(s, k):
        return te.policy_step(learner, s.policy, s.buffer, s.critic.params, it, h0(s), k)

    def rollout(params, k):
        return program.rollout(params, k, n, False)

    table = {"chunk": (program.run_chunk, (state, scalar), (0,)),
             "evaluate": (program.evaluate, (state.policy.params, key), ()),
             "rollout": (rollout, (state.policy.params, key), ()),
             "critic_step": (critic_step, (state, key), ()),
             "policy_step": (policy_step, (state, key), ())}
    return {name: table[name] for name in (names or table)}


def compile_preset(preset: str, names=("chunk", "evaluate"), hlo_dir: str | None = None, say=print,
                   rollout_episodes: int | None = None, args=None, options=None) -> dict:
    """Compile `names` of `preset` for the H100: {name: {lower_s, compile_s, memory: {...}} or {error}}."""
    results = {}
    for name, (fn, a, donate) in programs(preset, names, rollout_episodes, args).items():
        try:
            compiled, lower_s, compile_s = compile_for_h100(fn, *a, donate_argnums=donate, options=options)
        except Exception as e:  # noqa: BLE001 - report the failure, go on with the next program
            results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:500]}"}
            say(f"{preset} {name}: FAILED {results[name]['error']}")
            continue
        results[name] = {"lower_s": round(lower_s, 1), "compile_s": round(compile_s, 1), "memory": memory(compiled)}
        if hlo_dir:
            path = pathlib.Path(hlo_dir) / f"{preset}_{name}.hlo"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(compiled.as_text())
            results[name]["hlo"] = str(path)
        m = results[name]["memory"]
        say(f"{preset} {name}: lowered in {lower_s:.1f} s, compiled in {compile_s:.1f} s; device memory "
            f"{m['device_bytes'] / GB:.3f} GB (arguments {m['argument'] / GB:.3f}, outputs {m['output'] / GB:.3f}, "
            f"temporaries {m['temp'] / GB:.3f}, donated {m['alias'] / GB:.3f})")
    return results


@dataclasses.dataclass(frozen=True)
class Args:
    """Compile variants/top_erl.py's programs for an H100 without a GPU; print memory_analysis and compile times."""

    presets: tuple[str, ...] = ("box-dense", "hopper-jump", "metaworld")
    """presets of variants/top_erl.py, at their real shapes"""
    programs: tuple[str, ...] = ("chunk", "evaluate")
    """chunk, evaluate, rollout, critic_step, policy_step (see `programs`)"""
    hlo_dir: str = ""
    """write each program's optimized HLO here ('' = don't)"""
    json: str = ""
    """write the results here as JSON ('' = don't)"""


def main(argv: list[str] | None = None) -> dict:
    import tyro

    args = tyro.cli(Args, args=argv)
    if not plugin_installed():
        raise SystemExit(PLUGIN_MISSING)
    print(f"target: {H100_NAME} (compute capability 9.0), deviceless; jax {jax.__version__}; "
          f"options {GPU_COMPILER_OPTIONS}", flush=True)
    out = {"device": H100_NAME, "jax": jax.__version__, "options": GPU_COMPILER_OPTIONS, "presets": {}}
    for preset in args.presets:
        out["presets"][preset] = compile_preset(preset, args.programs, args.hlo_dir or None,
                                                say=lambda s: print(s, flush=True))
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
