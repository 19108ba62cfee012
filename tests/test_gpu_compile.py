"""The paper presets compiled for an NVIDIA H100 without a GPU, and their memory (issue 25, item 3).

Each preset of variants/top_erl.py at its real shapes (box-dense: 4 episodes per iteration, 512 × T = 100 critic
batches, a 5000-episode buffer; hopper-jump; metaworld), built for the GPU (`make_train(args, platform='cuda')`):
its training chunk (`eval_interval` iterations, state donated as the runner donates it) and its evaluation are
compiled by XLA's GPU pipeline for a described, not attached, H100 (benchmarks/aot_h100.py: jax's CUDA plugin and
a deviceless topology), and `compiled.memory_analysis()` must fit in what JAX gives a program on an 80 GB H100
(75 % of its memory, JAX's default preallocation). Compiling at the real shapes is also the check that XLA's GPU
compiler accepts every op at those shapes (the Triton GEMM tiling failure of issue 25 was one that only the
real compile shows; docs/performance.md "GPU").

Needs the `cuda-aot` extra (jax's CUDA plugin, several GB): `pip install -e '.[cuda-aot]'`, best in a venv of its
own. Without it the tests fail with a one-line message naming the extra. Each compile runs in a subprocess with
JAX_PLATFORMS=cpu (the plugin skips its driver checks, which fail without a GPU, only when CUDA is not among the
platforms jax starts). ~10–20 minutes per preset on a loaded 2-core CPU.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import aot_h100

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUDGET = aot_h100.JAX_PREALLOCATED_FRACTION * aot_h100.H100_MEMORY_BYTES


def compile_in_subprocess(preset: str, tmp_path: pathlib.Path) -> dict:
    if not aot_h100.plugin_installed():
        pytest.fail(aot_h100.PLUGIN_MISSING, pytrace=False)
    out, log = tmp_path / "aot.json", tmp_path / "aot.log"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "aot_h100.py"), "--presets", preset,
                               "--programs", "chunk", "evaluate", "--json", str(out)],
                              cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=3 * 3600)
    text = log.read_text()
    print(text[-3000:])
    assert proc.returncode == 0, text[-3000:]
    return json.loads(out.read_text())["presets"][preset]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["box-dense", "hopper-jump", "metaworld"])
def test_paper_preset_compiles_for_an_h100_and_fits_its_memory(preset, tmp_path):
    results = compile_in_subprocess(preset, tmp_path)
    for name in ("chunk", "evaluate"):
        r = results[name]
        assert "error" not in r, (preset, name, r.get("error"))
        m = r["memory"]
        assert m["device_bytes"] > 0 and m["argument"] > 0, (preset, name, m)
        assert m["device_bytes"] < BUDGET, (f"{preset} {name}: {m['device_bytes'] / 1e9:.1f} GB on the device, more "
                                            f"than JAX's {BUDGET / 1e9:.1f} GB on an 80 GB H100", m)
    # the chunk donates its state: XLA reuses the state's buffers for the new state
    assert results["chunk"]["memory"]["alias"] > 0


REPRO = """
import sys
sys.path.insert(0, {root!r})
from benchmarks import aot_h100
for tokens in (125, 136, 128):
    try:
        aot_h100.repro_triton_tiling(tokens, options={{}})
        print(tokens, "default: ok")
    except Exception as e:
        print(tokens, "default: failed:", str(e).splitlines()[0][:120])
    aot_h100.repro_triton_tiling(tokens)
    print(tokens, "runner options: ok")
"""


@pytest.mark.slow
def test_triton_gemm_tiling_failure_and_the_runner_option_that_avoids_it(tmp_path):
    """XLA's Triton GEMM (default options, no autotuning) fails on a dot over a transposed [..., 3·128, tokens]
    operand unless tokens % 16 == 0: 125 (box-dense's critic rows) and 136 (issue 25's report) fail, 128 compiles.
    With the runner's GPU options (Triton GEMM off, cuBLAS) all three compile. If the default ones start to compile
    too (a newer XLA), `runner.GPU_COMPILER_OPTIONS` may go: this test then says so."""
    if not aot_h100.plugin_installed():
        pytest.fail(aot_h100.PLUGIN_MISSING, pytrace=False)
    log = tmp_path / "repro.log"
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-c", REPRO.format(root=str(ROOT))], cwd=ROOT, stdout=f,
                              stderr=subprocess.STDOUT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=1800)
    text = log.read_text()
    print(text[-2000:])
    assert proc.returncode == 0, text[-3000:]
    for tokens in (125, 136, 128):
        assert f"{tokens} runner options: ok" in text
    assert "128 default: ok" in text
    for tokens in (125, 136):
        assert f"{tokens} default: failed: INTERNAL: Couldn't find output tile sizes" in text, (
            f"XLA now compiles the Triton GEMM at {tokens} tokens: runner.GPU_COMPILER_OPTIONS may no longer be needed")


def test_runner_compiles_gpu_programs_with_the_gpu_options():
    """A GPU run (a device's platform 'gpu', or lowering for 'cuda') compiles with `GPU_COMPILER_OPTIONS` on top of
    the task's options; a CPU run with the task's alone."""
    from toperl_jax import envs, runner

    task = envs.make("reacher")
    for platform in ("gpu", "cuda"):
        opts = runner.compiler_options(task, platform)
        assert opts["xla_gpu_enable_triton_gemm"] is False
        assert not any(k.startswith("xla_cpu") for k in opts)
    assert runner.compiler_options(task, "cpu") == task.compiler_options(platform="cpu")


def test_target_config_describes_an_h100():
    """The deviceless target (no plugin needed to check the text): compute capability 9.0, 132 SMs, 80 GB."""
    text = aot_h100.target_config_text()
    assert "cuda_compute_capability { major: 9 minor: 0 }" in text
    assert "core_count: 132" in text and f"device_memory_size: {aot_h100.H100_MEMORY_BYTES}" in text
    assert 79 * 2**30 < aot_h100.H100_MEMORY_BYTES < 80 * 2**30


HLO = """HloModule toy, is_scheduled=true

%fused_neg (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  ROOT %n = f32[8]{0} negate(%p)
}

%body (t: (f32[8])) -> (f32[8]) {
  %t = (f32[8]{0}) parameter(0)
  %g = f32[8]{0} get-tuple-element(%t), index=0
  %f1 = f32[8]{0} fusion(%g), kind=kLoop, calls=%fused_neg
  %f2 = f32[8]{0} fusion(%f1), kind=kLoop, calls=%fused_neg
  ROOT %r = (f32[8]{0}) tuple(%f2)
}

%cond (t: (f32[8])) -> pred[] {
  %t = (f32[8]{0}) parameter(0)
  %g = f32[8]{0} get-tuple-element(%t), index=0
  ROOT %c = pred[] fusion(%g), kind=kLoop, calls=%fused_neg
}

%small (t: (f32[8])) -> (f32[8]) {
  %t = (f32[8]{0}) parameter(0)
  %g = f32[8]{0} get-tuple-element(%t), index=0
  %f = f32[8]{0} fusion(%g), kind=kLoop, calls=%fused_neg
  ROOT %r = (f32[8]{0}) tuple(%f)
}

ENTRY %main (x: f32[8], a: f32[4,8], b: f32[8,16], i: s32[]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %a = f32[4,8]{1,0} parameter(1)
  %b = f32[8,16]{1,0} parameter(2)
  %i = s32[] parameter(3)
  %f0 = f32[8]{0} fusion(%x), kind=kLoop, calls=%fused_neg
  %t0 = (f32[8]{0}) tuple(%f0)
  %w1 = (f32[8]{0}) while(%t0), condition=%cond, body=%body, metadata={op_name="jit(f)/scan"}, backend_config={"known_trip_count":{"n":"5"}}
  %w2 = (f32[8]{0}) while(%w1), condition=%cond, body=%body, metadata={op_name="jit(f)/solver_loop"}
  %k = (f32[8]{0}) conditional(%i, %w2, %w2), branch_computations={%small, %body}
  %gemm = (f32[4,16]{1,0}, s8[1024]{0}) custom-call(%a, %b), custom_call_target="__cublas$lt$matmul", backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"]}}}
  ROOT %out = f32[8]{0} get-tuple-element(%k), index=0
}
"""


def test_kernel_count_of_a_known_program():
    """benchmarks/gpu_kernels.py's walk of an optimized HLO text: a fusion 1 kernel; a while its body and condition
    times the trip count (static from `known_trip_count`, dynamic from the table by source); a conditional its
    largest branch and one host round trip; a cuBLAS GEMM 1 kernel and 2·M·N·K FLOPs."""
    from benchmarks import gpu_kernels as gk

    module = gk.parse(HLO)
    c = gk.count(module, {"solver_loop": 3})
    # 1 + (5 × 2 + 6 × 1) + (3 × 2 + 4 × 1) + 2 (largest branch) + 1 (GEMM)
    assert c.kernels == 1 + 16 + 10 + 2 + 1
    assert c.syncs == (3 + 1) + 1  # the dynamic loop's predicate reads and the conditional's index
    assert c.flops == 2 * 4 * 16 * 8
    assert c.loops["jit(f)/scan"] == {"trip": 5, "known": True, "entered": 1.0}
    assert c.loops["jit(f)/solver_loop"]["trip"] == 3 and not c.loops["jit(f)/solver_loop"]["known"]
    assert gk.count(module).kernels == 1 + 16 + (1 * 2 + 2 * 1) + 2 + 1  # unknown loops: 1 iteration by default
