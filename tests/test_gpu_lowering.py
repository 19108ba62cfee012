"""GPU readiness without a GPU: every preset's jitted programs lowered for CUDA on this CPU-only machine.

`jax.jit(f).trace(*args).lower(lowering_platforms=('cuda',))` needs no GPU and no CUDA plugin: the CUDA lowering
rules (cuSolver's FFI targets among them) ship with jaxlib. Lowered here, per preset of variants/top_erl.py at a tiny
budget (the same ops as the preset: its task, ProDMP, networks and update code; only counts and widths shrink),
with `make_train(args, platform='cuda')` so that the learner is the GPU one (no CPU micro-batching):
- the training chunk (`run_chunk`, one seed) and the evaluation (`evaluate`); vmapping over seeds, as the runner
  does, doubles the tracing time and adds no custom call (checked once, on reach);
- asserted: no host callback anywhere (a `*callback*` custom call would stop the device loop for a host
  round-trip every iteration; on this GPU-less machine jax 0.10.2 even refuses to lower one for CUDA), no
  infeed/outfeed, and every custom call a cuSolver / cuBLAS one or one of jaxlib's own CUDA kernels
  (`GPU_TARGETS`).
The traced programs are built once per preset (module fixture) and shared by the tests.
"""

import dataclasses
import functools
import re
import time

import jax
import jax.numpy as jnp
import pytest

from variants import top_erl as te

TINY = {"iterations": 4, "eval_interval": 2, "num_envs": 2, "batch_size": 4, "buffer_size": 8, "epochs_critic": 1,
        "epochs_policy": 1, "critic_update_from": 1, "policy_update_from": 1, "num_eval_episodes": 2,
        "buffer_warmup": False, "micro_batch": 0}
"""The budget shrunk; every preset keeps its task, ProDMP, network and trust-region settings."""

GPU_TARGETS = re.compile(r"^(cusolver_\w+|cublas\w*|cu_lu_pivots_to_permutation)$")
"""Custom calls allowed in a CUDA program: cuSolver (Cholesky potrf, eigh syevd, LU getrf, …), cuBLAS, and
jaxlib's CUDA kernel that turns LU pivots into a permutation (`jnp.linalg.solve` on GPU)."""

def custom_call_targets(text: str) -> set[str]:
    """Targets of every `stablehlo.custom_call` in a StableHLO module's text (`@name` or `call_target_name`)."""
    return set(re.findall(r"custom_call\s*@([\w.]+)", text)) | set(re.findall(r'call_target_name\s*=\s*"([^"]+)"',
                                                                                text))


def host_round_trips(text: str) -> list[str]:
    """What in a lowered module would leave the device: host callbacks, infeed/outfeed, send/recv."""
    found = [t for t in custom_call_targets(text) if "callback" in t.lower()]
    found += [op for op in ("infeed", "outfeed", "stablehlo.send", "stablehlo.recv") if op in text]
    if "callback" in text.lower() and not found:
        found.append("callback (in the text)")
    return found


def lower_for_cuda(fn, *args) -> tuple[str, float]:
    """(StableHLO text of the jitted `fn` lowered for CUDA, seconds for trace + lower)."""
    t0 = time.perf_counter()
    text = jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    return text, time.perf_counter() - t0


@functools.cache
def lowered_programs(preset: str, seeds: int = 0) -> dict[str, tuple[str, float]]:
    """{program name: (StableHLO text, seconds)} of `preset`'s training chunk and evaluation lowered for CUDA: one
    seed (`seeds=0`), or `seeds` vmapped as the runner runs them (`jit(vmap(run_chunk))`)."""
    args = dataclasses.replace(te.PRESETS[preset], **TINY)
    program = te.make_train(args, platform="cuda")
    assert program.learner.micro_batch is None  # the GPU learner: one pass over the batch
    chunk, evaluate = program.run_chunk, program.evaluate
    key = jax.random.PRNGKey(0)
    if seeds:
        chunk, evaluate = jax.vmap(chunk, in_axes=(0, None)), jax.vmap(evaluate)
        key = jnp.stack([jax.random.PRNGKey(i) for i in range(seeds)])
    init = jax.vmap(program.init) if seeds else program.init
    state = jax.eval_shape(init, key)  # shapes only: nothing runs on this CPU
    out = {"chunk": lower_for_cuda(chunk, state, jnp.int32(1))}
    if not seeds:
        out["evaluate"] = lower_for_cuda(evaluate, state.policy.params, key)
    print(f"\n{preset}{f' ({seeds} seeds)' if seeds else ''}: " + "; ".join(
        f"{n} lowered for CUDA in {s:.1f} s, custom calls {sorted(custom_call_targets(t))}" for n, (t, s) in out.items()))
    return out


@pytest.fixture(scope="module", params=["reach", "box-dense", "hopper-jump", "metaworld"])
def lowered(request):
    return request.param, lowered_programs(request.param)


def test_no_host_round_trip_in_the_cuda_programs(lowered):
    preset, programs = lowered
    for name, (text, _) in programs.items():
        assert "stablehlo" in text and "func.func public @main" in text, (preset, name)
        assert host_round_trips(text) == [], (preset, name)


def test_every_custom_call_is_a_gpu_library_call(lowered):
    preset, programs = lowered
    chunk_targets = custom_call_targets(programs["chunk"][0])
    for name, (text, _) in programs.items():
        targets = custom_call_targets(text)
        assert all(GPU_TARGETS.match(t) for t in targets), (preset, name, sorted(targets))
    # the trust-region projection's Cholesky and eigendecomposition go to cuSolver
    assert {"cusolver_potrf_ffi", "cusolver_syevd_ffi"} <= chunk_targets, sorted(chunk_targets)


def test_seeds_vmapped_as_the_runner_add_no_custom_call():
    """`jit(vmap(run_chunk))` over 2 seeds (the runner's program) lowers to the same custom calls as one seed."""
    (text, _), = lowered_programs("reach", seeds=2).values()
    assert host_round_trips(text) == []
    assert custom_call_targets(text) == custom_call_targets(lowered_programs("reach")["chunk"][0])


def test_the_checks_see_what_they_look_for():
    """Not vacuous: a host callback in a program makes its CUDA lowering fail on this GPU-less machine (jax lowers a
    callback against the backend at hand, a CPU), and the text checks find it in the CPU lowering; a CPU-only
    custom call (LAPACK) is not a GPU target, the CUDA Cholesky is."""
    def with_callback(x):
        jax.debug.callback(lambda v: None, x)
        return jnp.linalg.cholesky(x @ x.T + jnp.eye(3))

    with pytest.raises(Exception, match="different from the lowering platform cuda"):
        lower_for_cuda(with_callback, jnp.ones((3, 3)))
    cpu_text = jax.jit(with_callback).trace(jnp.ones((3, 3))).lower(lowering_platforms=("cpu",)).as_text()
    assert any("callback" in r for r in host_round_trips(cpu_text))
    cpu_targets = custom_call_targets(cpu_text)
    assert any(t.startswith("lapack_") for t in cpu_targets)
    assert not all(GPU_TARGETS.match(t) for t in cpu_targets)
    cuda_text, _ = lower_for_cuda(jnp.linalg.cholesky, jnp.eye(3))
    assert custom_call_targets(cuda_text) == {"cusolver_potrf_ffi"} and host_round_trips(cuda_text) == []
