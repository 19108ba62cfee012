"""Meta-World models for MJX, built at runtime from the installed `metaworld` package's MJCF and meshes.

Nothing of Meta-World is copied into this repository: the XML files and meshes are read from the
installed package (`pip install --no-deps metaworld==3.1.1`, see docs/metaworld.md for why `--no-deps`),
found with `importlib.util.find_spec` without importing `metaworld` (its `__init__` needs gymnasium and
its pinned MuJoCo 3.3.0, neither of which this project installs).

`build_model` edits the original model with `mujoco.MjSpec`, so that MJX can simulate it and does only the
collision work a task needs:
  * every geom and body gets a name (unnamed ones: `<body>/g<k>`, `body<id>`) so pairs can be named;
  * all contype/conaffinity bits are cleared and the task's contacts are declared as explicit `<pair>`s
    whose parameters are the ones MuJoCo 3.3 (Meta-World's engine) derives for that geom pair: condim =
    max, friction = elementwise max, solref/solimp = solmix-weighted mean (solmix is 1 everywhere here:
    the plain mean), margin = max, gap = max;
  * cylinder geoms that take part in a pair with a box/mesh (MJX has no cylinder-box collision) are
    replaced by convex prisms (meshes with `CYLINDER_SIDES` sides, same radius, half-height and pose);
  * contact margins are emulated by geometry: a geom with a margin (only the four finger boxes have one,
    1 mm) collides through a massless twin `<name>/inflated` whose half-sizes are larger by the margin, and
    every pair gets margin 0. MJX's convex colliders (box-box, capsule-box, sphere-box, anything with a
    mesh) report a contact only once the geoms overlap, so a margin there would switch the contact on late
    and at once with the full margin as penetration; MuJoCo reports it from distance < margin on, with the
    constraint at distance - margin. The inflated twin gives the same constraint for face contacts (its
    edges are sharp where MuJoCo's margin rounds them). Without it a gripper holding or resting on an
    object is held by contacts MJX never sees (box-close, push-back, peg-unplug-side: docs/metaworld.md);
  * the hand's collision mesh `eGripperBase` (6693 vertices) is replaced by a box of its local bounding
    box where a task needs hand contacts;
  * the table top (a 1.4 x 0.8 x 0.92 m box, top at z = 0) collides as a plane at z = 0 with its
    contact parameters (all table contacts of the MT10 tasks are on its top face);
  * Meta-World's `reset_mocap_welds` is applied to the compiled model: the mocap-hand weld gets anchor 0,
    relative pose identity (quat (-1, 0, 0, 0)) and torquescale 5.
Solver options stay the original's (Newton, 50 iterations, 50 line-search iterations, elliptic cones,
timestep 0.0025) unless a task overrides them.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib

import mujoco
import numpy as np

CYLINDER_SIDES = 16
"""Sides of the convex prism that stands in for a cylinder in MJX collisions."""

TABLE_PLANE = "table_plane"
"""Name of the plane geom added at the table top (z = 0)."""

INSTALL_HINT = ("Meta-World's assets come from the `metaworld` package: `pip install --no-deps metaworld==3.1.1` "
                "(or `pip install -e '.[metaworld]' --no-deps` for the pinned version; docs/metaworld.md)")


@functools.cache
def asset_root() -> pathlib.Path:
    """Directory `metaworld/assets` of the installed package (without importing it)."""
    spec = importlib.util.find_spec("metaworld")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the Meta-World tasks need the `metaworld` package for their MJCF and meshes. "
                                  + INSTALL_HINT)
    root = pathlib.Path(next(iter(spec.submodule_search_locations))) / "assets"
    if not (root / "sawyer_xyz").is_dir():
        raise FileNotFoundError(f"{root}/sawyer_xyz not found; is metaworld 3.x installed? " + INSTALL_HINT)
    return root


def xml_path(name: str) -> pathlib.Path:
    """Path of a Meta-World MJCF, e.g. `sawyer_xyz/sawyer_reach_v3.xml`."""
    return asset_root() / name


def geom_names(m: mujoco.MjModel) -> list[str]:
    """Names of all geoms of a compiled model by the naming rule of `build_model` (own name if it has one,
    else `<body name>/g<index within the body>`); also valid for the original Meta-World model."""
    out = []
    for g in range(m.ngeom):
        name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g)
        if not name:
            b = int(m.geom_bodyid[g])
            name = f"{body_name(m, b)}/g{g - int(m.body_geomadr[b])}"
        out.append(name)
    return out


def body_name(m: mujoco.MjModel, b: int) -> str:
    """Body name, `body<id>` for unnamed bodies."""
    return mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, b) or f"body{b}"


def _name_everything(spec: mujoco.MjSpec) -> None:
    """Give unnamed bodies and geoms the names `geom_names`/`body_name` would report."""
    m = spec.compile()
    names = geom_names(m)
    bodies = list(spec.bodies)
    assert len(bodies) == m.nbody
    for b, body in enumerate(bodies):
        if not body.name:
            body.name = f"body{b}"
    geoms = list(spec.geoms)
    assert len(geoms) == m.ngeom
    for g, geom in enumerate(geoms):
        if not geom.name:
            geom.name = names[g]


def _prism_vertices(radius: float, half_height: float, sides: int) -> np.ndarray:
    ang = 2 * np.pi * np.arange(sides) / sides
    ring = np.stack([radius * np.cos(ang), radius * np.sin(ang)], -1)
    return np.concatenate([np.c_[ring, np.full(sides, -half_height)],
                           np.c_[ring, np.full(sides, half_height)]]).astype(np.float64)


def _mix_pair_params(m: mujoco.MjModel, g1: int, g2: int) -> dict:
    """Contact parameters MuJoCo 3.3 derives for geoms g1, g2 (no priorities in these models)."""
    assert m.geom_priority[g1] == m.geom_priority[g2]
    s1, s2 = m.geom_solmix[g1], m.geom_solmix[g2]
    mix = 0.5 if s1 + s2 == 0 else s1 / (s1 + s2)
    f = np.maximum(m.geom_friction[g1], m.geom_friction[g2])
    assert (m.geom_solref[g1][0] > 0) and (m.geom_solref[g2][0] > 0)
    return {
        "condim": int(max(m.geom_condim[g1], m.geom_condim[g2])),
        "friction": [f[0], f[0], f[1], f[2], f[2]],
        "solref": list(mix * m.geom_solref[g1] + (1 - mix) * m.geom_solref[g2]),
        "solimp": list(mix * m.geom_solimp[g1] + (1 - mix) * m.geom_solimp[g2]),
        "margin": float(max(m.geom_margin[g1], m.geom_margin[g2])),
        "gap": float(max(m.geom_gap[g1], m.geom_gap[g2])),
    }


HAND_MESH_GEOM = "right_hand/g0"
"""The hand's collision mesh (eGripperBase) in `geom_names` naming."""

TABLE_GEOM = "tablelink/g1"
"""The table-top collision box in `geom_names` naming."""


@functools.cache
def build_model(xml: str, pairs: tuple[tuple[str, str], ...], option: tuple[tuple[str, float], ...] = ()
                ) -> mujoco.MjModel:
    """Compile Meta-World's `xml` (relative to the assets directory) for MJX with exactly the contacts `pairs`.

    Args:
        xml: e.g. "sawyer_xyz/sawyer_reach_v3.xml".
        pairs: (geom, geom) names in `geom_names` naming of the original model; `TABLE_GEOM` stands for the
            table top (collides as the plane `TABLE_PLANE`), `HAND_MESH_GEOM` for the hand (as a box).
        option: (name, value) overrides of `mjOption` fields (e.g. (("iterations", 10),)).
    Returns:
        the compiled MjModel (cached; do not modify it).
    """
    spec = mujoco.MjSpec.from_file(str(xml_path(xml)))
    _name_everything(spec)
    orig = spec.compile()
    names = geom_names(orig)
    gid = {n: i for i, n in enumerate(names)}
    for a, b in pairs:
        for n in (a, b):
            if n not in gid:
                raise KeyError(f"{xml}: no geom {n!r}")
    # contact parameters from the original geoms (before any replacement)
    params = [_mix_pair_params(orig, gid[a], gid[b]) for a, b in pairs]
    involved = {n for p in pairs for n in p}

    for geom in spec.geoms:
        geom.contype, geom.conaffinity = 0, 0

    replaced: dict[str, str] = {}
    for name in sorted(involved):
        g = gid[name]
        geom = spec.geom(name)
        gtype = orig.geom_type[g]
        if name == TABLE_GEOM:
            plane = spec.worldbody.add_geom()
            plane.name = TABLE_PLANE
            plane.type = mujoco.mjtGeom.mjGEOM_PLANE
            plane.size = [0.7, 0.4, 0.01]
            plane.pos = [0.0, 0.6, 0.0]
            plane.rgba = [0, 0, 0, 0]
            plane.contype, plane.conaffinity = 0, 0
            replaced[name] = TABLE_PLANE
        elif name == HAND_MESH_GEOM:
            center, half = orig.geom_aabb[g][:3], orig.geom_aabb[g][3:]
            geom.type = mujoco.mjtGeom.mjGEOM_BOX
            geom.size = list(half)
            geom.pos = list(orig.geom_pos[g] + _rotate(orig.geom_quat[g], center))
            geom.quat = list(orig.geom_quat[g])
            geom.meshname = ""
        elif gtype == mujoco.mjtGeom.mjGEOM_CYLINDER:
            radius, half_height = orig.geom_size[g][:2]
            mesh = spec.add_mesh()
            mesh.name = f"prism_{name.replace('/', '_')}"
            mesh.uservert = _prism_vertices(radius, half_height, CYLINDER_SIDES).ravel().tolist()
            geom.type = mujoco.mjtGeom.mjGEOM_MESH
            geom.meshname = mesh.name
        elif orig.geom_margin[g] > 0:
            replaced[name] = _add_inflated_twin(spec, name, orig, g)
    for (a, b), p in zip(pairs, params):
        margins = [float(orig.geom_margin[gid[n]]) for n in (a, b)]
        if min(margins) > 0 or p["gap"] != 0:
            raise NotImplementedError(f"{xml}: pair {a}, {b}: margins {margins}, gap {p['gap']}; only one geom "
                                      "of a pair may have a margin, and none a gap")
        p = {**p, "margin": 0.0}  # the margin is in the inflated twin
        pair = spec.add_pair()
        pair.geomname1, pair.geomname2 = replaced.get(a, a), replaced.get(b, b)
        pair.condim = p["condim"]
        pair.friction = p["friction"]
        pair.solref = p["solref"]
        pair.solimp = p["solimp"]
        pair.margin = p["margin"]
        pair.gap = p["gap"]
    for k, v in option:
        setattr(spec.option, k, v)
    m = spec.compile()
    apply_mocap_weld(m)
    return m


def collision_geom(m: mujoco.MjModel, name: str) -> int:
    """Id of the geom through which geom `name` collides in a model from `build_model`: its inflated twin where it
    has one (a geom with a contact margin), else itself. Contacts in `data.contact` name this id."""
    twin = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, _twin_name(name))
    return twin if twin >= 0 else m.geom(name).id


def _twin_name(name: str) -> str:
    return f"{name}/inflated"


def _add_inflated_twin(spec: mujoco.MjSpec, name: str, orig: mujoco.MjModel, g: int) -> str:
    """Add a massless, invisible, non-colliding copy of box geom `g` (original model) whose half-sizes are larger by
    its margin; return the twin's name (the pairs use it instead of `name`)."""
    if orig.geom_type[g] != mujoco.mjtGeom.mjGEOM_BOX:
        raise NotImplementedError(f"margin emulation for geom {name} of type {orig.geom_type[g]} (boxes only)")
    body = spec.body(body_name(orig, int(orig.geom_bodyid[g])))
    twin = body.add_geom()
    twin.name = _twin_name(name)
    twin.type = mujoco.mjtGeom.mjGEOM_BOX
    twin.size = list(orig.geom_size[g] + orig.geom_margin[g])
    twin.pos, twin.quat = list(orig.geom_pos[g]), list(orig.geom_quat[g])
    twin.mass, twin.margin, twin.gap = 0.0, 0.0, 0.0
    twin.contype, twin.conaffinity = 0, 0
    twin.rgba = [0, 0, 0, 0]
    twin.group = 5
    return twin.name


@functools.cache
def original_geom_frames(xml: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (geom_pos [3], geom_quat [4]) in its body frame, in the original model. Observations of geoms
    that `build_model` turned into prisms use these: MuJoCo re-aligns a mesh geom's frame with the mesh's
    principal axes, which for a prism may rotate it about (or swap) its axis."""
    m = mujoco.MjModel.from_xml_path(str(xml_path(xml)))
    return {n: (m.geom_pos[g].copy(), m.geom_quat[g].copy()) for g, n in enumerate(geom_names(m))}


def _rotate(quat: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = np.zeros(3)
    mujoco.mju_rotVecQuat(out, np.asarray(v, np.float64), np.asarray(quat, np.float64) / np.linalg.norm(quat))
    return out


def apply_mocap_weld(m: mujoco.MjModel) -> None:
    """Meta-World's `reset_mocap_welds`: every weld gets anchor 0, relpose identity (quat (-1,0,0,0)),
    torquescale 5 (MuJoCo 4's eq_data layout: anchor 3, relpos 3, relquat 4, torquescale 1, one spare)."""
    for i in range(m.neq):
        if m.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
            m.eq_data[i, :11] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0]
