"""Meta-World MT10 tasks (v2 reward functions as kept in Meta-World 3.x's `*_v3` environments).

Each class states Meta-World's numbers (ranges, offsets, thresholds) and its reward in a few lines; the
formulas are in the `evaluate` docstrings. Constants an episode fixes at reset live in `ctx` (EnvState.info):
"goal" (Meta-World's `_target_pos`), "obj_init_pos", "init_tcp", ... so that a state plus its ctx determine
reward and success (tests/test_metaworld.py checks them against Meta-World on recorded states).

Contacts (`pairs`): the geom pairs that Meta-World's scripted policies touch in the original simulation
(counted over 5 episodes per task with MuJoCo 3.3, docs/metaworld.md), plus the gripper against the table
and the task objects against the table where an object can rest on it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from toperl_jax.envs.metaworld.assets import HAND_MESH_GEOM, TABLE_GEOM
from toperl_jax.envs.metaworld.rewards import gripper_caging, hamacher_product, rect_prism_tolerance, tolerance
from toperl_jax.envs.metaworld.sawyer import FINGERS, SawyerTask, mat_to_quat_xyzw


def _pairs(a, b) -> tuple[tuple[str, str], ...]:
    return tuple((x, y) for x in a for y in b)


def _norm(x):
    return jnp.linalg.norm(x)


# -- puck tasks: reach, push, pick-place ------------------------------------------------------------------
class _PuckTask(SawyerTask):
    """A puck (cylinder r 0.02, half-height 0.02, free joint qpos[9:16]) on the table; rand = (puck xyz, goal
    xyz), redrawn while their xy are closer than 0.15."""

    pairs = _pairs(FINGERS, ("objGeom", TABLE_GEOM)) + (("objGeom", TABLE_GEOM),)
    rand_low = (-0.1, 0.6, 0.02, -0.1, 0.8, 0.05)
    rand_high = (0.1, 0.7, 0.02, 0.1, 0.9, 0.3)
    goal_low, goal_high = (-0.1, 0.8, 0.05), (0.1, 0.9, 0.3)
    min_obj_goal_xy = 0.15

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
        m = self.mj_model
        self._obj_body = m.body("obj").id

    def sample_rand_vec(self, key):
        return self._redraw_until(key, lambda v: _norm(v[:2] - v[3:5]) >= self.min_obj_goal_xy)

    def _place_puck(self, obj_pos):
        qpos = jnp.asarray(self.hand_reset.qpos, jnp.float32).at[9:12].set(obj_pos)
        qvel = jnp.asarray(self.hand_reset.qvel, jnp.float32).at[9:15].set(0.0)
        return qpos, qvel

    def episode_init(self, rand):
        obj, goal = rand[:3], rand[3:6]
        qpos, qvel = self._place_puck(obj)
        return qpos, qvel, {"goal": goal, "obj_init_pos": obj, "init_tcp": jnp.asarray(self.hand_reset.tcp,
                                                                                         jnp.float32)}

    def objects(self, data):
        _, rot = self.geom_frame(data, "objGeom")
        return jnp.concatenate([data.xpos[self._obj_body], mat_to_quat_xyzw(rot), jnp.zeros(7)])


class Reach(_PuckTask):
    """reach-v2: move the tcp to the goal; the puck is only an obstacle."""

    name = "metaworld-reach"
    xml = "sawyer_xyz/sawyer_reach_v3.xml"

    def evaluate(self, data, obs, action, ctx):
        """d = |tcp - goal|; r = 10 tol(d, [0, 0.05], margin |hand_init_pos - goal|, long tail);
        success d <= 0.05."""
        d = _norm(self.tcp_center(data) - ctx["goal"])
        margin = _norm(jnp.asarray(self.hand_init_pos) - ctx["goal"])
        return 10.0 * tolerance(d, (0.0, self.target_radius), margin, "long_tail"), d <= 0.05


class Push(_PuckTask):
    """push-v2: push the puck to a goal on the table (goal z = the puck's resting height)."""

    name = "metaworld-push"
    xml = "sawyer_xyz/sawyer_push_v3.xml"
    rand_low = (-0.1, 0.6, 0.02, -0.1, 0.8, 0.01)
    rand_high = (0.1, 0.7, 0.02, 0.1, 0.9, 0.02)
    goal_low, goal_high = (-0.1, 0.8, 0.01), (0.1, 0.9, 0.02)

    def episode_init(self, rand):
        z = jnp.asarray(self.hand_reset.data.xpos[self._obj_body][2], jnp.float32)  # fix_extreme_obj_pos
        obj = jnp.stack([rand[0], rand[1], z])
        goal = jnp.stack([rand[3], rand[4], z])
        qpos, qvel = self._place_puck(obj)
        return qpos, qvel, {"goal": goal, "obj_init_pos": obj,
                            "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32)}

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7], tcp_opened = obs[3]; in_place = tol(|obj - goal|, [0, 0.05], |obj_init - goal|);
        g = caging(obj radius 0.015, pad thresh 0.05, xz thresh 0.005, high density); r = 2g;
        if |obj - tcp| < 0.02 and tcp_opened > 0: r = 2r + 1 + 5 in_place; r = 10 if |obj - goal| < 0.05.
        success |obj - goal| <= 0.05."""
        obj, opened, tcp = obs[4:7], obs[3], self.tcp_center(data)
        tcp_to_obj, to_target = _norm(obj - tcp), _norm(obj - ctx["goal"])
        in_place = tolerance(to_target, (0.0, self.target_radius), _norm(ctx["obj_init_pos"] - ctx["goal"]),
                             "long_tail")
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, tcp, lp, rp, ctx["obj_init_pos"], ctx["init_tcp"],
                                 obj_radius=0.015, pad_success_thresh=0.05, object_reach_radius=0.01,
                                 xz_thresh=0.005, high_density=True)
        r = 2.0 * grasped
        r = jnp.where((tcp_to_obj < 0.02) & (opened > 0), 2.0 * r + 1.0 + 5.0 * in_place, r)
        r = jnp.where(to_target < self.target_radius, 10.0, r)
        return r, to_target <= self.target_radius


class PickPlace(_PuckTask):
    """pick-place-v2: grasp the puck and bring it to a goal in the air."""

    name = "metaworld-pick-place"
    xml = "sawyer_xyz/sawyer_pick_place_v3.xml"

    @staticmethod
    def caging(action, obj, tcp, left_pad, right_pad, ctx):
        """pick-place's own `_gripper_caging_reward` (always high density). Its margins are meant to use the pads'
        y at reset, but Meta-World stores `init_left_pad`/`init_right_pad` as live views of the simulation
        data (`data.body(...).xpos`), so they are the CURRENT pad positions; we reproduce that."""
        pad_margin, xz_margin, radius = 0.05, 0.005, 0.015
        right_m = jnp.abs(jnp.abs(obj[1] - right_pad[1]) - pad_margin)
        left_m = jnp.abs(jnp.abs(obj[1] - left_pad[1]) - pad_margin)
        right = tolerance(obj[1] - right_pad[1], (radius, pad_margin), right_m, "long_tail")
        left = tolerance(left_pad[1] - obj[1], (radius, pad_margin), left_m, "long_tail")
        y = hamacher_product(left, right)
        xz = jnp.array([0, 2])
        margin = _norm(ctx["obj_init_pos"][xz] - ctx["init_tcp"][xz]) - xz_margin
        x_z = tolerance(_norm(tcp[xz] - obj[xz]), (0.0, xz_margin), margin, "long_tail")
        closed = jnp.clip(action[-1], 0.0, 1.0)
        caging = hamacher_product(y, x_z)
        cg = hamacher_product(caging, jnp.where(caging > 0.97, closed, 0.0))
        return (cg + caging) / 2

    def evaluate(self, data, obs, action, ctx):
        """in_place = tol(|obj - goal|, [0, 0.05], |obj_init - goal|); g = caging; r = H(g, in_place);
        if |obj - tcp| < 0.02 and opened > 0 and obj_z - 0.01 > obj_init_z: r += 1 + 5 in_place;
        r = 10 if |obj - goal| < 0.05. success |obj - goal| <= 0.07."""
        obj, opened, tcp = obs[4:7], obs[3], self.tcp_center(data)
        to_target, tcp_to_obj = _norm(obj - ctx["goal"]), _norm(obj - tcp)
        in_place = tolerance(to_target, (0.0, 0.05), _norm(ctx["obj_init_pos"] - ctx["goal"]), "long_tail")
        lp, rp = self.pads(data)
        grasped = self.caging(action, obj, tcp, lp, rp, ctx)
        r = hamacher_product(grasped, in_place)
        lifted = (tcp_to_obj < 0.02) & (opened > 0) & (obj[2] - 0.01 > ctx["obj_init_pos"][2])
        r = jnp.where(lifted, r + 1.0 + 5.0 * in_place, r)
        r = jnp.where(to_target < 0.05, 10.0, r)
        return r, to_target <= 0.07


# -- articulated objects ----------------------------------------------------------------------------------
class _BodyTask(SawyerTask):
    """An articulated object whose base body is moved per episode to rand (model.body_pos)."""

    def _qpos_qvel(self):
        return (jnp.asarray(self.hand_reset.qpos, jnp.float32), jnp.asarray(self.hand_reset.qvel, jnp.float32))

    def _ctx(self, rand, goal):
        return {"goal": goal, "obj_init_pos": rand, "body_pos": rand,
                "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32)}


class DoorOpen(_BodyTask):
    """door-open-v2: pull the door open by its handle (hinge `doorjoint`, opening = negative angle)."""

    name = "metaworld-door-open"
    xml = "sawyer_xyz/sawyer_door_pull.xml"
    door_handle = tuple(f"door_link/g{k}" for k in (5, 6, 7, 8))
    pairs = (_pairs(FINGERS, door_handle) + _pairs((HAND_MESH_GEOM,), door_handle)
             + (("door_link/g9", "doorlockB/g1"),))
    episode_body = "door"
    rand_low, rand_high = (0.0, 0.85, 0.15), (0.1, 0.95, 0.15)
    goal_low, goal_high = (-0.3, 0.4, 0.1499), (-0.2, 0.5, 0.1501)

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
        m = self.mj_model
        self._door_qpos = int(m.jnt_qposadr[m.joint("doorjoint").id])
        self._door_dof = int(m.jnt_dofadr[m.joint("doorjoint").id])

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        qpos, qvel = qpos.at[self._door_qpos].set(0.0), qvel.at[self._door_dof].set(0.0)
        return qpos, qvel, self._ctx(rand, rand + jnp.array([-0.3, -0.45, 0.0]))

    def objects(self, data):
        pos, rot = self.geom_frame(data, "handle")
        return jnp.concatenate([pos, mat_to_quat_xyzw(rot), jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """hand = obs[:3], door = obs[4:7] - (0.05, 0, 0), theta = door angle; grab = (clip(a_g) + 1) / 2;
        radius = |hand_xy - door_xy|, floor = 0 if radius <= 0.12 else 0.04 ln(radius - 0.12) + 0.4;
        above = 1 if hand_z >= floor else tol(floor - hand_z, [0, 0.01], floor / 2);
        in_place = tol(|hand - door - (0.05, 0.03, -0.01)|, [0, 0.06], 0.5); ready = H(above, in_place);
        opened = 0.2 [theta < -pi/90] + 0.8 tol(2pi/3 + theta, [0, 0.5], pi/3);
        r = 2 H(ready, grab) + 8 opened; r = 10 if |obs[4] - goal_x| <= 0.08 (= success)."""
        theta = data.qpos[self._door_qpos]
        grab = (jnp.clip(action[3], -1.0, 1.0) + 1.0) / 2.0
        hand, door = obs[:3], obs[4:7] + jnp.array([-0.05, 0.0, 0.0])
        radius = _norm(hand[:2] - door[:2])
        floor = jnp.where(radius <= 0.12, 0.0, 0.04 * jnp.log(jnp.maximum(radius - 0.12, 1e-30)) + 0.4)
        above = jnp.where(hand[2] >= floor, 1.0,
                          tolerance(floor - hand[2], (0.0, 0.01), floor / 2.0, "long_tail"))
        in_place = tolerance(_norm(hand - door - jnp.array([0.05, 0.03, -0.01])), (0.0, 0.06), 0.5, "long_tail")
        ready = hamacher_product(above, in_place)
        opened = 0.2 * (theta < -jnp.pi / 90.0) + 0.8 * tolerance(
            jnp.pi / 2.0 + jnp.pi / 6 + theta, (0.0, 0.5), jnp.pi / 3.0, "long_tail")
        success = jnp.abs(obs[4] - ctx["goal"][0]) <= 0.08
        r = 2.0 * hamacher_product(ready, grab) + 8.0 * opened
        return jnp.where(success, 10.0, r), success


class _Drawer(_BodyTask):
    xml = "sawyer_xyz/sawyer_drawer.xml"
    episode_body = "drawer"
    handle = "drawer_link/g8"
    rand_low, rand_high = (-0.1, 0.9, 0.0), (0.1, 0.9, 0.0)

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
        m = self.mj_model
        self._drawer_link = m.body("drawer_link").id
        self._slide_qpos = int(m.jnt_qposadr[m.joint("goal_slidey").id])


class DrawerOpen(_Drawer):
    """drawer-open-v2: pull the drawer out by 0.2 m."""

    name = "metaworld-drawer-open"
    pairs = _pairs(FINGERS + (HAND_MESH_GEOM,), ("drawer_link/g8",))
    max_dist = 0.2

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        return qpos, qvel, self._ctx(rand, rand + jnp.array([0.0, -0.16 - self.max_dist, 0.09]))

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._drawer_link] + jnp.array([0.0, -0.16, 0.0]),
                                data.xquat[self._drawer_link], jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """handle = obs[4:7]; e = |handle - goal|; open = tol(e, [0, 0.02], 0.2);
        s = (3, 3, 1); caging = tol(|(handle - obs[:3]) s|, [0, 0.01], |(goal + (0, 0.2, 0) - init_tcp) s|);
        r = 5 (caging + open); success e <= 0.03."""
        gripper, handle = obs[:3], obs[4:7]
        err = _norm(handle - ctx["goal"])
        opening = tolerance(err, (0.0, 0.02), self.max_dist, "long_tail")
        scale = jnp.array([3.0, 3.0, 1.0])
        init = (ctx["goal"] + jnp.array([0.0, self.max_dist, 0.0]) - ctx["init_tcp"]) * scale
        caging = tolerance(_norm((handle - gripper) * scale), (0.0, 0.01), _norm(init), "long_tail")
        return 5.0 * (caging + opening), err <= 0.03


class DrawerClose(_Drawer):
    """drawer-close-v2: push the drawer (pulled out 0.15 m at reset) closed."""

    name = "metaworld-drawer-close"
    pairs = (_pairs(FINGERS, ("drawer_link/g8",))
             + _pairs(("drawer_link/g3", "drawer_link/g6"), ("drawercase_link/g3", "RetainingWall/g1")))
    max_dist = 0.15

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        qpos = qpos.at[self._slide_qpos].set(-self.max_dist)
        return qpos, qvel, self._ctx(rand, rand + jnp.array([0.0, -0.16, 0.09]))

    def episode_context(self, data, ctx):
        return {**ctx, "obj_init_pos": self.objects(data)[:3]}

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._drawer_link] + jnp.array([0.0, -0.16, 0.05]), jnp.zeros(11)])

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7]; d = |obj - goal|; in_place = tol(d, [0, 0.05], ||obj_init - goal| - 0.05|);
        reach = tol(|obj - tcp|, [0, 0.005], ||obj_init - init_tcp| - 0.005|, gaussian);
        reach = H(reach, clip(a_g, 0, 1)); r = 10 H(reach, in_place), 10 if d <= 0.065 (= success)."""
        obj, tcp = obs[4:7], self.tcp_center(data)
        d = _norm(obj - ctx["goal"])
        in_place = tolerance(d, (0.0, self.target_radius),
                             jnp.abs(_norm(ctx["obj_init_pos"] - ctx["goal"]) - self.target_radius), "long_tail")
        reach = tolerance(_norm(obj - tcp), (0.0, 0.005),
                          jnp.abs(_norm(ctx["obj_init_pos"] - ctx["init_tcp"]) - 0.005), "gaussian")
        reach = hamacher_product(reach, jnp.clip(action[-1], 0.0, 1.0))
        success = d <= self.target_radius + 0.015
        return 10.0 * jnp.where(success, 1.0, hamacher_product(reach, in_place)), success


class ButtonPressTopdown(_BodyTask):
    """button-press-topdown-v2: press a button down from above."""

    name = "metaworld-button-press-topdown"
    xml = "sawyer_xyz/sawyer_button_press_topdown.xml"
    button = ("button/g3", "button/g4")
    pairs = (_pairs(FINGERS, button + ("buttonbox/g3",))
             + _pairs(button, tuple(f"buttonbox/g{k}" for k in (3, 4, 5, 6))))
    episode_body = "box"
    hand_init_pos = (0.0, 0.4, 0.2)
    rand_low, rand_high = (-0.1, 0.8, 0.115), (0.1, 0.9, 0.115)

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
        m = self.mj_model
        self._button = m.body("button").id
        self._hole, self._start = m.site("hole").id, m.site("buttonStart").id

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        return qpos, qvel, self._ctx(rand, jnp.zeros(3))

    def episode_context(self, data, ctx):
        goal = data.site_xpos[self._hole]
        return {**ctx, "goal": goal, "obj_to_target_init": jnp.abs(goal[2] - data.site_xpos[self._start][2])}

    def objects(self, data):
        return jnp.concatenate([data.xpos[self._button] + jnp.array([0.0, 0.0, 0.193]), data.xquat[self._button],
                                jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """obj = obs[4:7]; near = tol(|obj - tcp|, [0, 0.01], |obj - init_tcp|); d = |goal_z - obj_z|;
        pressed = tol(d, [0, 0.005], obj_to_target_init); r = 5 H(1 - obs[3], near) + [|obj - tcp| <= 0.03]
        5 pressed; success d <= 0.024."""
        obj, tcp = obs[4:7], self.tcp_center(data)
        tcp_to_obj = _norm(obj - tcp)
        d = jnp.abs(ctx["goal"][2] - obj[2])
        near = tolerance(tcp_to_obj, (0.0, 0.01), _norm(obj - ctx["init_tcp"]), "long_tail")
        pressed = tolerance(d, (0.0, 0.005), ctx["obj_to_target_init"], "long_tail")
        r = 5.0 * hamacher_product(1.0 - obs[3], near) + jnp.where(tcp_to_obj <= 0.03, 5.0 * pressed, 0.0)
        return r, d <= 0.024


class PegInsertSide(SawyerTask):
    """peg-insert-side-v2: pick up the peg and insert it sideways into the hole of a box."""

    name = "metaworld-peg-insert-side"
    xml = "sawyer_xyz/sawyer_peg_insertion_side.xml"
    box_geoms = tuple(f"body35/g{k}" for k in (2, 3, 5, 6))
    pairs = (_pairs(FINGERS, ("peg", TABLE_GEOM) + box_geoms) + _pairs((HAND_MESH_GEOM,), box_geoms)
             + _pairs(("peg",), (TABLE_GEOM,) + box_geoms))
    episode_body = "box"
    target_radius = 0.07  # the class's TARGET_RADIUS
    rand_low = (0.0, 0.5, 0.02, -0.35, 0.4, -0.001)
    rand_high = (0.2, 0.7, 0.02, -0.25, 0.7, 0.001)
    goal_low, goal_high = (-0.32, 0.4, 0.129), (-0.22, 0.7, 0.131)

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
        m = self.mj_model
        self._grasp, self._head = m.site("pegGrasp").id, m.site("pegHead").id
        names = ("bottom_right_corner_collision_box_1", "top_left_corner_collision_box_1",
                 "bottom_right_corner_collision_box_2", "top_left_corner_collision_box_2")
        self._boxes = tuple(m.site(n).id for n in names)
        self._peg_head_init = self.hand_reset.data.site_xpos[self._head].copy()

    def sample_rand_vec(self, key):
        return self._redraw_until(key, lambda v: _norm(v[:2] - v[3:5]) >= 0.1)

    def episode_init(self, rand):
        peg, box = rand[:3], rand[3:6]
        qpos = jnp.asarray(self.hand_reset.qpos, jnp.float32).at[9:12].set(peg)
        qvel = jnp.asarray(self.hand_reset.qvel, jnp.float32).at[9:15].set(0.0)
        return qpos, qvel, {"goal": box + jnp.array([0.03, 0.0, 0.13]), "obj_init_pos": peg, "body_pos": box,
                            "init_tcp": jnp.asarray(self.hand_reset.tcp, jnp.float32),
                            "peg_head_pos_init": jnp.asarray(self._peg_head_init, jnp.float32)}

    def objects(self, data):
        return jnp.concatenate([data.site_xpos[self._grasp], mat_to_quat_xyzw(data.site_xmat[self._grasp]),
                                jnp.zeros(7)])

    def evaluate(self, data, obs, action, ctx):
        """head = pegHead site; s = (1, 2, 2); d = |(head - goal) s|; in_place = tol(d, [0, 0.07],
        |(peg_head_init - goal) s|) H-multiplied by the two collision-box prisms of the head; g = caging(obj
        radius 0.0075, pad thresh 0.03, xz 0.005, high density), 1 if lifted (|obj - tcp| < 0.08, opened > 0,
        obj_z - 0.01 > obj_init_z); r = H(g, in_place) (+ 1 + 5 in_place if lifted); 10 if d <= 0.07
        (= success)."""
        tcp, obj, opened = self.tcp_center(data), obs[4:7], obs[3]
        head = data.site_xpos[self._head]
        scale = jnp.array([1.0, 2.0, 2.0])
        tcp_to_obj = _norm(obj - tcp)
        d = _norm((head - ctx["goal"]) * scale)
        in_place = tolerance(d, (0.0, self.target_radius), _norm((ctx["peg_head_pos_init"] - ctx["goal"]) * scale),
                             "long_tail")
        b = [data.site_xpos[i] for i in self._boxes]
        boxes = hamacher_product(rect_prism_tolerance(head, b[2], b[3]), rect_prism_tolerance(head, b[0], b[1]))
        in_place = hamacher_product(in_place, boxes)
        lp, rp = self.pads(data)
        grasped = gripper_caging(action, obj, tcp, lp, rp, ctx["obj_init_pos"], ctx["init_tcp"],
                                 obj_radius=0.0075, pad_success_thresh=0.03, object_reach_radius=0.01,
                                 xz_thresh=0.005, high_density=True)
        lifted = (tcp_to_obj < 0.08) & (opened > 0) & (obj[2] - 0.01 > ctx["obj_init_pos"][2])
        grasped = jnp.where(lifted, 1.0, grasped)
        r = hamacher_product(grasped, in_place)
        r = jnp.where(lifted, r + 1.0 + 5.0 * in_place, r)
        return jnp.where(d <= 0.07, 10.0, r), d <= 0.07


class _Window(_BodyTask):
    xml = "sawyer_xyz/sawyer_window_horizontal.xml"
    episode_body = "window"
    hand_init_pos = (0.0, 0.4, 0.2)
    handle_site: str
    slide_start: float
    reach_sigmoid: str

    def __init__(self, episode_length: int | None = None):
        super().__init__(episode_length)
        m = self.mj_model
        self._handle = m.site(self.handle_site).id
        self._slide_qpos = int(m.jnt_qposadr[m.joint("window_slide").id])
        d = self.hand_reset.data  # window slide at 0: site offset from the window body
        self._handle_offset = d.site_xpos[self._handle] - d.xpos[m.body("window").id]

    def objects(self, data):
        return jnp.concatenate([data.site_xpos[self._handle], jnp.zeros(11)])

    def reset(self, key):
        """As SawyerTask.reset, plus Meta-World's stale `window_handle_pos_init`: it is read before a forward,
        i.e. with the window still where the previous reset drew it (an independent draw of the same range)."""
        key, sub, stale = jax.random.split(key, 3)
        state = self.reset_to(self.sample_rand_vec(sub), key)
        prev = self.sample_rand_vec(stale)
        return state.replace(info={**state.info, "window_handle_pos_init": self._stale_handle(prev)})

    def _stale_handle(self, prev_body_pos):
        return prev_body_pos + jnp.asarray(self._handle_offset, jnp.float32)

    def episode_init(self, rand):
        qpos, qvel = self._qpos_qvel()
        qpos = qpos.at[self._slide_qpos].set(self.slide_start)
        ctx = self._ctx(rand, self.goal_of(rand))
        return qpos, qvel, {**ctx, "window_handle_pos_init": self._stale_handle(rand)}

    def evaluate(self, data, obs, action, ctx):
        """obj = handle site; d = |obj_x - goal_x|; in_place = tol(d, [0, 0.05], |d_init - 0.05|);
        reach = tol(|obj - tcp|, [0, 0.02], ||window_handle_pos_init - init_tcp| - 0.02|);
        r = 10 H(reach, in_place); success d <= 0.05."""
        obj, tcp = data.site_xpos[self._handle], self.tcp_center(data)
        d = jnp.abs(obj[0] - ctx["goal"][0])
        in_place = tolerance(d, (0.0, self.target_radius), jnp.abs(self.init_x_dist(ctx) - self.target_radius),
                             "long_tail")
        reach = tolerance(_norm(obj - tcp), (0.0, 0.02),
                          jnp.abs(_norm(ctx["window_handle_pos_init"] - ctx["init_tcp"]) - 0.02), self.reach_sigmoid)
        return 10.0 * hamacher_product(reach, in_place), d <= self.target_radius


class WindowOpen(_Window):
    """window-open-v2: slide the window open by 0.2 m (handle to goal = start + (0.2, 0, 0))."""

    name = "metaworld-window-open"
    handle_site = "handleOpenStart"
    slide_start = 0.0
    reach_sigmoid = "long_tail"
    frame, sash = ("body34/g4",), tuple(f"windowb_a/g{k}" for k in (9, 10, 11, 12))
    pairs = (_pairs(FINGERS + (HAND_MESH_GEOM,), sash[:3]) + _pairs(frame, sash[3:]))
    rand_low, rand_high = (-0.1, 0.7, 0.16), (0.1, 0.9, 0.16)

    def goal_of(self, rand):
        return rand + jnp.array([0.2, 0.0, 0.0])

    def init_x_dist(self, ctx):
        return jnp.abs(ctx["obj_init_pos"][0] - ctx["goal"][0])


class WindowClose(_Window):
    """window-close-v2: slide the window (open by 0.2 m at reset) closed."""

    name = "metaworld-window-close"
    handle_site = "handleCloseStart"
    slide_start = 0.2
    reach_sigmoid = "gaussian"
    frame, sash = ("body34/g2",), tuple(f"windowb_a/g{k}" for k in (9, 10, 11, 13))
    pairs = (_pairs(FINGERS + (HAND_MESH_GEOM,), sash[:3]) + _pairs(frame, sash[3:]))
    rand_low, rand_high = (0.0, 0.75, 0.2), (0.0, 0.9, 0.2)

    def goal_of(self, rand):
        return rand

    def _stale_handle(self, prev_body_pos):
        return prev_body_pos + jnp.asarray(self._handle_offset, jnp.float32) + jnp.array([0.2, 0.0, 0.0])

    def init_x_dist(self, ctx):
        return jnp.abs(ctx["window_handle_pos_init"][0] - ctx["goal"][0])


TASKS = {cls.name: cls for cls in (Reach, Push, PickPlace, DoorOpen, DrawerOpen, DrawerClose, ButtonPressTopdown,
                                   PegInsertSide, WindowOpen, WindowClose)}
"""Registry name -> class of the ported Meta-World tasks."""

__all__ = ["TASKS"] + [c.__name__ for c in TASKS.values()]
