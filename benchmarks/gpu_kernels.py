"""Kernels an H100 runs one after another, counted in the compiled GPU program, and the iteration times they imply.

    pip install -e '.[cuda-aot]'       # jax's CUDA plugin, for the deviceless compile (benchmarks/aot_h100.py)
    python benchmarks/gpu_kernels.py   # box-dense and hopper-jump: rollout, critic step, policy step (6 compiles)
    python benchmarks/gpu_kernels.py --presets hopper-jump --solver 100 50    # also as if Newton 100 / 50 (before)

What it does (issue 25, item 5; no GPU needed):
1. compiles, deviceless for an H100 (benchmarks/aot_h100.py), per preset of variants/top_erl.py: one training
   rollout (`Program.rollout` of the preset's `num_envs` episodes, or `--rollout-episodes`), one critic step and
   one policy step at the preset's real shapes;
2. walks the optimized HLO from its entry computation: every fusion, custom call (cuBLAS GEMM, cuSolver) and
   unfused op that XLA's GPU backend runs as a kernel counts 1 (parameters, constants, tuples, bitcasts and
   get-tuple-elements are free), a `while` counts its body and condition times its trip count, a `conditional`
   its largest branch. Trip counts: XLA's `known_trip_count` where the loop is static (scans, fori_loops, MJX's
   line search, which is a scan of `ls_iterations` steps), otherwise the loop's bound: for MJX's Newton solver
   (mujoco/mjx/_src/solver.py, a `while_loop` that stops at `opt.iterations` or at the tolerance) 1 iteration
   (lower count) and `opt.iterations` (upper count); under `vmap` it runs until every episode of the batch has
   stopped. Host round trips (XLA reads a dynamic loop's predicate and a conditional's branch index on the host)
   are counted apart: dynamic `while` iterations + 1 per loop, conditionals;
3. projects seconds per iteration on an H100: kernels × launch latency (`--launch-us`, default 2 and 5 µs: a
   small kernel's launch plus its drain, back to back on one stream; CUDA graphs sit at the low end) + host round
   trips × `--sync-us` + the updates' arithmetic: GEMM FLOPs (2·M·N·K of every dot and cuBLAS call in the walk;
   XLA's `cost_analysis()` is None for a deviceless GPU executable) / `--tflops` (achieved TF32 tensor-core rate on
   these small GEMMs; defaults 200 and 100 TFLOP/s against a 495 dense peak) and bytes (every kernel's outputs and
   operands, an operand it only slices or gathers from counted at the output's size) / `--tbps` (achieved HBM
   bandwidth, 2.5 TB/s of 3.35). Rollout = 1 rollout call; updates = `epochs_critic` critic steps +
   `epochs_policy` policy steps.
Also per preset: the rollout's kernels per control step and per physics substep, and which loops hold them (by the
source line of each `while`). `--solver ITER LS [ITER LS ...]` also counts the same programs as if the task's MJCF
solver settings were ITER / LS (e.g. hopper's former MuJoCo defaults 100 / 50): the Newton loop's bound and the
line-search scan's trip count are replaced in the walk (the kernels per Newton iteration and per line-search step
do not depend on those bounds), so no recompile is needed.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before jax starts (benchmarks/aot_h100.py)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import collections
import dataclasses
import json
import pathlib
import re
import sys

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import aot_h100  # noqa: E402

te = aot_h100.te

FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "opt-barrier", "after-all",
        "add-dependency", "domain", "partition-id", "replica-id"}
"""Ops that launch no kernel (views, bookkeeping); every other op outside a fused computation launches one."""

_COMP = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][a-z0-9\-]*)\((.*)$")


@dataclasses.dataclass
class Instr:
    name: str
    opcode: str
    text: str
    shape: str = ""

    def operands(self) -> list[str]:
        """Names of the operands (the first parenthesised list after the opcode)."""
        body = self.text.split(f" {self.opcode}(", 1)[1]
        depth, end = 1, 0
        for end, ch in enumerate(body):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                break
        return re.findall(r"%([\w.\-]+)", body[:end])

    def attr(self, key: str) -> list[str]:
        """Computation names of attribute `key` (calls=, body=, condition=, branch_computations={...})."""
        m = re.search(rf"\b{key}=\{{([^}}]*)\}}", self.text) or re.search(rf"\b{key}=(%?[\w.\-]+)", self.text)
        return [s.strip().lstrip("%") for s in m.group(1).split(",")] if m else []

    @property
    def known_trip_count(self) -> int | None:
        m = re.search(r'"known_trip_count":\{"n":"(\d+)"', self.text)
        return int(m.group(1)) if m else None

    @property
    def stack_frame(self) -> int | None:
        m = re.search(r"stack_frame_id=(\d+)", self.text)
        return int(m.group(1)) if m else None


@dataclasses.dataclass
class Module:
    computations: dict[str, list[Instr]]
    entry: str
    frames: dict[int, tuple[int, int]]  # stack frame id → (file location id, parent frame id)
    locations: dict[int, tuple[str, str, int]]  # file location id → (file, function, line)

    def source(self, instr: Instr) -> str:
        """`file:line (function)` of the innermost frame of `instr` outside jax itself, or its op name."""
        frame = instr.stack_frame
        seen = set()
        while frame and frame in self.frames and frame not in seen:
            seen.add(frame)
            loc, parent = self.frames[frame]
            file, fn, line = self.locations.get(loc, ("?", "?", 0))
            if "/jax/" not in file and "/flax/" not in file:
                short = re.sub(r"^.*?/(mujoco/mjx/|toperl_jax/|variants/|benchmarks/)", r"\1", file)
                return f"{short}:{line} ({fn})"
            frame = parent
        m = re.search(r'op_name="([^"]+)"', instr.text)
        return m.group(1)[-80:] if m else instr.name


def parse(text: str) -> Module:
    """The computations of an optimized HLO module's text (`compiled.as_text()`), with its stack-frame tables."""
    comps, entry, current = {}, None, None
    files, functions, locations, frames = {}, {}, {}, {}
    section = None
    for line in text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            section = line
            continue
        if section and line.strip() and not line.startswith("%") and not line.startswith("ENTRY"):
            if section == "FileNames" and (m := re.match(r'\s*(\d+) "(.*)"', line)):
                files[int(m.group(1))] = m.group(2)
                continue
            if section == "FunctionNames" and (m := re.match(r'\s*(\d+) "(.*)"', line)):
                functions[int(m.group(1))] = m.group(2)
                continue
            if section == "FileLocations" and (m := re.match(
                    r"\s*(\d+) \{file_name_id=(\d+) function_name_id=(\d+) line=(\d+)", line)):
                locations[int(m.group(1))] = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
                continue
            if section == "StackFrames" and (m := re.match(
                    r"\s*(\d+) \{file_location_id=(\d+)(?: parent_frame_id=(\d+))?", line)):
                frames[int(m.group(1))] = (int(m.group(2)), int(m.group(3) or 0))
                continue
        if current is None:
            m = _COMP.match(line)
            if m and "=" not in line.split("{")[0].split("(")[0]:
                section = None
                current = m.group(2)
                comps[current] = []
                if m.group(1):
                    entry = current
            continue
        if line.strip() == "}":
            current = None
            continue
        m = _INSTR.match(line)
        if m:
            comps[current].append(Instr(m.group(1), m.group(3), line, m.group(2)))
    locs = {i: (files.get(f, "?"), functions.get(fn, "?"), ln) for i, (f, fn, ln) in locations.items()}
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return Module(comps, entry, frames, locs)


SLICING = {"slice", "dynamic-slice", "dynamic-update-slice", "gather", "scatter"}
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
          "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}


def shape_dims(shape: str) -> list[tuple[str, list[int]]]:
    """[(dtype, dims)] of every array in an HLO shape string (`f32[2,3]{1,0}` or a tuple of them)."""
    return [(t, [int(d) for d in dims.split(",") if d.strip()]) for t, dims in re.findall(r"(\w+)\[([\d,]*)\]", shape)]


def shape_bytes(shape: str) -> int:
    return sum(_BYTES.get(t, 4) * _prod(d) for t, d in shape_dims(shape) if t in _BYTES)


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


def dot_flops(ins: Instr, shapes: dict[str, str]) -> float:
    """2 · |output| · K of a `dot` or a cuBLAS GEMM custom call (K: the lhs contracting dimensions' sizes)."""
    if ins.opcode == "dot":
        m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", ins.text)
        contracting = [int(x) for x in m.group(1).split(",") if x] if m else []
    elif ins.opcode == "custom-call" and re.search(r'custom_call_target="__cublas', ins.text):
        m = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', ins.text)
        contracting = [int(x) for x in re.findall(r"\d+", m.group(1))] if m else []
    else:
        return 0.0
    ops = ins.operands()
    if not ops or ops[0] not in shapes:
        return 0.0
    lhs = shape_dims(shapes[ops[0]])[0][1]
    out = shape_dims(ins.shape)[0][1]
    return 2.0 * _prod(out) * _prod(lhs[i] for i in contracting)


@dataclasses.dataclass
class Count:
    kernels: float = 0.0
    syncs: float = 0.0
    flops: float = 0.0
    """2·M·N·K of every dot and cuBLAS GEMM executed (fused ones included), times its loops' trip counts"""
    bytes: float = 0.0
    """bytes every kernel reads and writes (its operands and outputs), times its loops' trip counts"""
    by_loop: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    """kernels by the innermost enclosing loop's source (`Module.source` of the while), '(top level)' outside"""
    loops: dict = dataclasses.field(default_factory=dict)
    """per while source: {trip: trip count used, known: static or not, entered: times entered per call}"""


def count(module: Module, dynamic_trips: dict[str, int] | None = None, default_trip: int = 1,
          override_trips: dict[str, int] | None = None) -> Count:
    """Sequential kernels and host round trips of one call of `module`'s entry computation. A while loop without
    `known_trip_count` runs `dynamic_trips[source]` iterations if its source (`Module.source`) contains a key of
    `dynamic_trips`, else `default_trip`; a loop whose source contains a key of `override_trips` runs that many,
    static or not (to count a program as if a loop bound were different)."""
    dynamic_trips, override_trips = dynamic_trips or {}, override_trips or {}
    out = Count()

    def fused_flops(comp: str) -> float:
        shapes = {i.name: i.shape for i in module.computations.get(comp, [])}
        total = 0.0
        for i in module.computations.get(comp, []):
            total += dot_flops(i, shapes)
            if i.opcode == "fusion":
                total += sum(fused_flops(c) for c in i.attr("calls"))
        return total

    def kernel_bytes(ins: Instr, shapes: dict[str, str]) -> float:
        """Output bytes + operand bytes; an operand larger than the output counts as the output's size where the
        kernel only indexes into it (slices, gathers, in-place updates of a buffer)."""
        arrays = shape_dims(ins.shape)
        if ins.opcode == "custom-call" and len(arrays) > 1 and arrays[-1][0] in ("s8", "u8"):
            arrays = arrays[:-1]  # (results..., scratch workspace) of a cuBLAS / cuSolver call: the results only
        written = sum(_BYTES.get(t, 4) * _prod(d) for t, d in arrays)
        indexing = ins.opcode in SLICING or any(i.opcode in SLICING for c in ins.attr("calls")
                                                for i in module.computations.get(c, []))
        read = [shape_bytes(shapes[o]) for o in ins.operands() if o in shapes]
        return written + sum(min(r, written) if indexing else r for r in read)

    def walk(comp: str, times: float, loop: str):
        shapes = {i.name: i.shape for i in module.computations[comp]}
        for ins in module.computations[comp]:
            op = ins.opcode
            if op in FREE:
                continue
            if op == "while":
                src = module.source(ins)
                trip = ins.known_trip_count
                known = trip is not None
                if not known:
                    trip = next((n for k, n in dynamic_trips.items() if k in src), default_trip)
                trip = next((n for k, n in override_trips.items() if k in src), trip)
                if not known:
                    out.syncs += times * (trip + 1)
                info = out.loops.setdefault(src, {"trip": trip, "known": known, "entered": 0.0})
                info["entered"] += times
                walk(ins.attr("body")[0], times * trip, src)
                walk(ins.attr("condition")[0], times * (trip + 1), src)
            elif op == "conditional":
                out.syncs += times
                branches = ins.attr("branch_computations") or (ins.attr("true_computation")
                                                               + ins.attr("false_computation"))
                sizes = {b: count_branch(b) for b in branches}
                walk(max(sizes, key=sizes.get), times, loop)
            elif op in ("call", "async-start") and ins.attr("calls") and ins.attr("calls")[0] in module.computations \
                    and op == "call":
                walk(ins.attr("calls")[0], times, loop)
            else:
                out.kernels += times
                out.by_loop[loop] += times
                out.flops += times * (dot_flops(ins, shapes) + (sum(fused_flops(c) for c in ins.attr("calls"))
                                                                if op == "fusion" else 0.0))
                out.bytes += times * kernel_bytes(ins, shapes)

    def count_branch(comp: str) -> float:
        sub = Count()
        saved = (out.kernels, out.syncs, out.flops, out.bytes, out.by_loop.copy(),
                 {k: dict(v) for k, v in out.loops.items()})
        walk(comp, 1.0, "(branch)")
        sub.kernels = out.kernels - saved[0]
        out.kernels, out.syncs, out.flops, out.bytes, out.by_loop, out.loops = saved
        return sub.kernels

    walk(module.entry, 1.0, "(top level)")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Driver


SOLVER_SRC = "mujoco/mjx/_src/solver.py"
"""MJX's Newton solver loop (`solve`'s `while_loop`, the only dynamic loop in that file; the line search is a
scan): 1 to `opt.iterations` iterations per physics substep."""
OTHER_TRIPS = {"envs/box_pushing.py:294": 86}
"""Other dynamic loops: box pushing's reset IK (`inverse_kinematics`, once per episode) stops after 86 accepted
iterations on each of 64 random resets measured on a CPU (the goal-distance resampling loop: 1 draw)."""


@dataclasses.dataclass(frozen=True)
class Args:
    """Count sequential kernels of the H100 program and project H100 iteration times (no GPU needed)."""

    presets: tuple[str, ...] = ("box-dense", "hopper-jump")
    """presets of variants/top_erl.py"""
    programs: tuple[str, ...] = ("rollout", "critic_step", "policy_step")
    """which programs to compile and count"""
    rollout_episodes: int = 0
    """episodes per rollout call (0 = the preset's num_envs: box 4, hopper 1)"""
    solver: tuple[int, ...] = ()
    """ITERATIONS LS_ITERATIONS pairs: also count as if the task's MJX solver settings were these (e.g. 100 50)"""
    launch_us: tuple[float, ...] = (2.0, 5.0)
    """assumed µs per sequential kernel (launch + drain), low and high"""
    sync_us: float = 10.0
    """assumed µs per host round trip (a dynamic loop's predicate or a conditional's index read on the host)"""
    tflops: tuple[float, ...] = (200.0, 100.0)
    """achieved TF32 TFLOP/s of the updates' GEMMs, optimistic and pessimistic"""
    tbps: float = 2.5
    """achieved HBM TB/s of the updates' memory traffic"""
    hlo_dir: str = ""
    """keep the optimized HLO here ('' = don't)"""
    from_hlo: str = ""
    """count the HLO kept in this directory by an earlier --hlo-dir run instead of compiling"""
    json: str = ""
    """write the counts and projections here as JSON ('' = don't)"""


LINE_SEARCH_SRC = "(_while_loop_scan)"
"""MJX's line search: a scan of `opt.ls_iterations` steps (each a `cond`, a `select` under vmap), in the Newton loop."""


def counts(module: Module, iterations: int, ls_iterations: int | None = None) -> tuple[Count, Count]:
    """(lower, upper) counts of a program: MJX's Newton loop at 1 and at `iterations` iterations per substep; with
    `ls_iterations`, the line-search scan's trip count replaced by it (the program counted as if compiled with those
    settings: the kernels per Newton iteration and per line-search step do not depend on the bounds)."""
    override = {LINE_SEARCH_SRC: ls_iterations} if ls_iterations else None
    return tuple(count(module, {**OTHER_TRIPS, SOLVER_SRC: n}, override_trips=override) for n in (1, iterations))


def record(lo: Count, hi: Count) -> dict:
    return {"kernels": [lo.kernels, hi.kernels], "syncs": [lo.syncs, hi.syncs], "flops": hi.flops, "bytes": hi.bytes,
            "loops": {src: {**v, "kernels_upper": hi.by_loop.get(src, 0.0)} for src, v in hi.loops.items()},
            "top_level_kernels_upper": hi.by_loop.get("(top level)", 0.0)}


def measure(preset: str, a: Args) -> dict:
    """Compile (or read, --from-hlo) and count `a.programs` of `preset`; projections per iteration at the task's
    solver settings and, with --solver, as if they were ITER / LS."""
    args = te.PRESETS[preset]
    episodes = a.rollout_episodes or args.num_envs
    built = {n: None for n in a.programs} if a.from_hlo else aot_h100.programs(preset, a.programs, episodes)
    task = te.make_train(args, platform="cuda").task
    iterations, ls_iterations = int(task.mj_model.opt.iterations), int(task.mj_model.opt.ls_iterations)
    settings = [(iterations, ls_iterations)] + [(a.solver[i], a.solver[i + 1]) for i in range(0, len(a.solver), 2)
                                                 if (a.solver[i], a.solver[i + 1]) != (iterations, ls_iterations)]
    out = {"preset": preset, "env": args.env, "episodes_per_rollout": episodes, "T": task.episode_length,
           "frame_skip": task.frame_skip, "epochs_critic": args.epochs_critic, "epochs_policy": args.epochs_policy,
           "compiled_solver": [iterations, ls_iterations], "settings": {}}
    modules, meta = {}, {}
    for name, what in built.items():
        if what is None:  # --from-hlo: count a kept program
            text = (pathlib.Path(a.from_hlo) / f"{preset}_{name}.hlo").read_text()
            meta[name] = {}
        else:
            fn, shaped, donate = what
            compiled, lower_s, compile_s = aot_h100.compile_for_h100(fn, *shaped, donate_argnums=donate)
            text = compiled.as_text()
            meta[name] = {"compile_s": round(compile_s, 1), "lower_s": round(lower_s, 1),
                          "memory": aot_h100.memory(compiled)}
            print(f"{preset} {name}: compiled in {compile_s:.0f} s", flush=True)
            if a.hlo_dir:
                pathlib.Path(a.hlo_dir).mkdir(parents=True, exist_ok=True)
                (pathlib.Path(a.hlo_dir) / f"{preset}_{name}.hlo").write_text(text)
        modules[name] = parse(text)
    for it, ls in settings:
        key = f"{it}/{ls}"
        res = {"solver_iterations": it, "ls_iterations": ls, "programs": {}}
        for name, module in modules.items():
            rec = {**meta[name], **record(*counts(module, it, None if (it, ls) == settings[0] else ls))}
            res["programs"][name] = rec
            print(f"{preset} {name} (solver {key}): kernels {rec['kernels'][0]:,.0f}–{rec['kernels'][1]:,.0f}, host "
                  f"round trips {rec['syncs'][0]:,.0f}–{rec['syncs'][1]:,.0f}, {rec['flops'] / 1e9:.2f} GFLOP, "
                  f"{rec['bytes'] / 1e9:.3f} GB", flush=True)
        if "rollout" in res["programs"]:
            r = res["programs"]["rollout"]
            r["kernels_per_control_step"] = [k / out["T"] for k in r["kernels"]]
            r["kernels_per_substep"] = [k / (out["T"] * out["frame_skip"]) for k in r["kernels"]]
        res["projection"] = project({**out, **res}, a)
        out["settings"][key] = res
    return out


def project(out: dict, a: Args) -> dict:
    """Seconds per iteration on an H100, each as [at the low assumptions, at the high ones] (launch µs, TFLOP/s):
    rollout_s at 1 Newton iteration per solve and rollout_max_s at `opt.iterations`; critic_step_s, policy_step_s,
    updates_s (epochs × steps); iteration_s = rollout_s + updates_s."""
    p = out["programs"]

    def seconds(rec, which: int, best: bool, compute: bool) -> float:
        launch = a.launch_us[0] if best else a.launch_us[-1]
        t = rec["kernels"][which] * launch * 1e-6 + rec["syncs"][which] * a.sync_us * 1e-6
        if compute:
            rate = a.tflops[0] if best else a.tflops[-1]
            t += rec["flops"] / (rate * 1e12) + rec["bytes"] / (a.tbps * 1e12)
        return t

    res = {}
    if "rollout" in p:
        res["rollout_s"] = [seconds(p["rollout"], 0, b, False) for b in (True, False)]
        res["rollout_max_s"] = [seconds(p["rollout"], 1, b, False) for b in (True, False)]
    if "critic_step" in p and "policy_step" in p:
        res["critic_step_s"] = [seconds(p["critic_step"], 1, b, True) for b in (True, False)]
        res["policy_step_s"] = [seconds(p["policy_step"], 1, b, True) for b in (True, False)]
        res["updates_s"] = [out["epochs_critic"] * c + out["epochs_policy"] * q
                            for c, q in zip(res["critic_step_s"], res["policy_step_s"])]
    if "rollout_s" in res and "updates_s" in res:
        res["iteration_s"] = [r + u for r, u in zip(res["rollout_s"], res["updates_s"])]
    return res


def main(argv: list[str] | None = None) -> dict:
    import tyro

    a = tyro.cli(Args, args=argv)
    if not aot_h100.plugin_installed() and not a.from_hlo:
        raise SystemExit(aot_h100.PLUGIN_MISSING)
    if len(a.solver) % 2:
        raise SystemExit("--solver takes pairs of numbers: ITERATIONS LS_ITERATIONS [ITERATIONS LS_ITERATIONS ...]")
    results = {"device": aot_h100.H100_NAME, "jax": jax.__version__, "options": aot_h100.GPU_COMPILER_OPTIONS,
               "assumptions": {"launch_us": a.launch_us, "sync_us": a.sync_us, "tflops": a.tflops, "tbps": a.tbps},
               "presets": {}}
    for preset in a.presets:
        results["presets"][preset] = measure(preset, a)
        if a.json:
            pathlib.Path(a.json).write_text(json.dumps(results, indent=1))
    print_tables(results)
    return results


def print_tables(results: dict) -> None:
    print("\n| preset | solver (iter / ls) | program | kernels (1 – max Newton iterations) | host round trips | "
          "GFLOP |")
    print("|---|---|---|---:|---:|---:|")
    for preset, r in results["presets"].items():
        for key, res in r["settings"].items():
            for name, p in res["programs"].items():
                print(f"| {preset} | {key} | {name} | {p['kernels'][0]:,.0f} – {p['kernels'][1]:,.0f} | "
                      f"{p['syncs'][0]:,.0f} – {p['syncs'][1]:,.0f} | {p['flops'] / 1e9:.2f} |")
    print("\n| preset | solver (iter / ls) | rollout (s), 1 Newton it. | rollout (s), max Newton it. | critic step (ms) | "
          "policy step (ms) | updates (s) | iteration (s), 1 Newton it. |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for preset, r in results["presets"].items():
        for key, res in r["settings"].items():
            pr = res["projection"]
            fmt = lambda k, f=1.0, d=2: (f"{pr[k][0] * f:.{d}f} – {pr[k][1] * f:.{d}f}"  # noqa: E731
                                         if k in pr else "–")
            print(f"| {preset} | {key} | {fmt('rollout_s')} | {fmt('rollout_max_s')} | "
                  f"{fmt('critic_step_s', 1e3, 1)} | {fmt('policy_step_s', 1e3, 1)} | {fmt('updates_s')} | "
                  f"{fmt('iteration_s')} |")
    for preset, r in results["presets"].items():
        for key, res in r["settings"].items():
            if "rollout" in res["programs"]:
                ro = res["programs"]["rollout"]
                print(f"\n{preset} rollout, solver {key}: {ro['kernels_per_control_step'][0]:,.0f} – "
                      f"{ro['kernels_per_control_step'][1]:,.0f} kernels per control step; by innermost loop "
                      f"(upper count):")
                for src, v in sorted(ro["loops"].items(), key=lambda kv: -kv[1]["kernels_upper"])[:8]:
                    print(f"  {v['kernels_upper']:>12,.0f}  {src}  (trip {v['trip']}"
                          f"{'' if v['known'] else ', dynamic'}, entered {v['entered']:,.0f}×)")
                print(f"  {ro['top_level_kernels_upper']:>12,.0f}  (outside every loop)")


if __name__ == "__main__":
    main()
