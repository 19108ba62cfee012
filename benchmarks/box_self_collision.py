"""Box pushing self-collision: our MJCF's capsules against fancy_gym's mesh hulls.

fancy_gym 0.3.0's Panda meshes collide with each other (MuJoCo collides meshes as convex hulls), and an
untrained TOP-ERL policy folds the hand into link5 in most episodes. Our MJCF (box_pushing.xml) models
the pairs that matter with capsules and explicit <pair>s. This script samples arm poses uniformly within
the joint limits and computes signed distances with `mujoco.mj_geomDistance` in both models: fancy_gym's
XML is loaded in this venv's MuJoCo from a temporary copy of its assets (its MuJoCo-2.3-only `collision`
option attribute dropped). It prints, for every pair of arm bodies that MuJoCo would collide upstream
(not parent and child, not welded together), how often the hulls touch, and for our three pairs how often
our capsules touch and how often both agree. `--fixture` writes the poses near contact with the hulls'
distances for tests/test_box_pushing.py.

    python3 -m venv /tmp/fgvenv && /tmp/fgvenv/bin/pip install fancy_gym==0.3.0 "gymnasium[mujoco]<1.0"
    python benchmarks/box_self_collision.py \
        --fancy-assets /tmp/fgvenv/lib/python3.11/site-packages/fancy_gym/envs/mujoco/box_pushing/assets \
        [--poses 6000] [--fixture tests/fixtures/box_self_collision.npz]
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import tempfile

import mujoco
import numpy as np

# (ours, fancy_gym) geoms of the modelled pairs; fancy_gym's rod geom has no name (found by its body)
PAIRS = {"link5-hand": (("link5_col", "hand_col"), ("panda_link5:geom2", "panda_hand:geom2")),
         "link5-link7": (("link5_col", "link7_col"), ("panda_link5:geom2", "panda_link7:geom2")),
         "link4-rod": (("link4_col", "rod_col"), ("panda_link4:geom2", "push_rod"))}
Q_LOW = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])   # the task's soft limits
Q_HIGH = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])


def load_fancy(assets: pathlib.Path) -> mujoco.MjModel:
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp, "assets")
        shutil.copytree(assets, root)
        xml = root / "box_pushing.xml"
        xml.write_text(re.sub(r' collision="\w+"', "", xml.read_text()))
        return mujoco.MjModel.from_xml_path(str(xml))


def geom_id(m: mujoco.MjModel, name: str) -> int:
    """A geom by name, or the only collision geom of the body of that name."""
    try:
        return m.geom(name).id
    except KeyError:
        body = m.body(name).id
        (g,) = [g for g in range(m.ngeom) if m.geom_bodyid[g] == body and m.geom_contype[g] | m.geom_conaffinity[g]]
        return g


def arm_pairs(m: mujoco.MjModel) -> list[tuple[int, int]]:
    """fancy_gym's arm-arm geom pairs that MuJoCo collides: colliding geoms on the panda's bodies whose
    weld bodies differ and are not parent and child (MuJoCo's filterparent rule)."""
    arm = [g for g in range(m.ngeom) if (m.geom_contype[g] | m.geom_conaffinity[g]) and m.body(
        m.geom_bodyid[g]).name.startswith(("panda_link", "panda_joint", "panda_hand", "panda_left", "panda_right",
                                           "push_rod"))]
    weld = m.body_weldid
    pairs = []
    for i, a in enumerate(arm):
        for b in arm[i + 1:]:
            wa, wb = weld[m.geom_bodyid[a]], weld[m.geom_bodyid[b]]
            if wa != wb and weld[m.body_parentid[wa]] != wb and weld[m.body_parentid[wb]] != wa:
                pairs.append((a, b))
    return pairs


def distances(m, d, Q, pairs) -> np.ndarray:
    """[n, len(pairs)] signed distances (negative: penetration; capped at 0.5 m)."""
    out = np.empty((len(Q), len(pairs)))
    for i, q in enumerate(Q):
        d.qpos[:7] = q
        mujoco.mj_kinematics(m, d)
        for j, (a, b) in enumerate(pairs):
            out[i, j] = mujoco.mj_geomDistance(m, d, a, b, 0.5, None)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fancy-assets", required=True, type=pathlib.Path,
                   help="fancy_gym 0.3.0's fancy_gym/envs/mujoco/box_pushing/assets folder")
    p.add_argument("--poses", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fixture", type=pathlib.Path, default=None,
                   help="write the poses within 2 cm of contact (and 40 others) with the hulls' distances here")
    args = p.parse_args()

    from toperl_jax.envs import make

    fm = load_fancy(args.fancy_assets)
    om = make("box-pushing-dense").mj_model
    Q = np.random.default_rng(args.seed).uniform(Q_LOW, Q_HIGH, (args.poses, 7))

    every = arm_pairs(fm)
    d_all = distances(fm, mujoco.MjData(fm), Q, every)
    print(f"{args.poses} arm poses uniform in the joint limits; fancy_gym's arm-arm hull pairs that touch:")
    for j in np.argsort(-(d_all < 0).mean(0)):
        frac = (d_all[:, j] < 0).mean()
        if frac > 0:
            a, b = every[j]
            print(f"  {fm.geom(a).name or fm.body(fm.geom_bodyid[a]).name:22s} "
                  f"{fm.geom(b).name or fm.body(fm.geom_bodyid[b]).name:22s} {100 * frac:.2f} %")

    ref = distances(fm, mujoco.MjData(fm), Q, [(geom_id(fm, a), geom_id(fm, b)) for _, (a, b) in PAIRS.values()])
    ours = distances(om, mujoco.MjData(om), Q, [(geom_id(om, a), geom_id(om, b)) for (a, b), _ in PAIRS.values()])
    print("\n| pair | hulls touch | our capsules touch | agree | agree within 2 cm of contact |"
          "\n|---|---:|---:|---:|---:|")
    for j, name in enumerate(PAIRS):
        near = np.abs(ref[:, j]) < 0.02
        agree = (ref[:, j] < 0) == (ours[:, j] < 0)
        print(f"| {name} | {100 * (ref[:, j] < 0).mean():.2f} % | {100 * (ours[:, j] < 0).mean():.2f} % | "
              f"{100 * agree.mean():.1f} % | {100 * agree[near].mean():.1f} % ({near.sum()} poses) |")

    if args.fixture:
        near = (np.abs(ref) < 0.02).any(1)
        far = np.flatnonzero(~near)[:40]
        keep = np.concatenate([np.flatnonzero(near), far])
        args.fixture.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.fixture, qpos=Q[keep].astype(np.float32), hull_distance=ref[keep].astype(np.float32),
                            pairs=np.array(list(PAIRS)))
        print(f"\nwrote {args.fixture}: {len(keep)} poses")


if __name__ == "__main__":
    main()
