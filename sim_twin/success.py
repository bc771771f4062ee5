"""Whether a handover succeeded: the one definition, used by evaluation, training and the README.

The rule is :data:`SUCCESS_RULE`. It is judged on the twin's state at the end of an episode, from
MuJoCo's contacts of the object geom (the model's robot geoms touch the object only, the object
also touches the floor and the pedestals; see :mod:`handover.sim_twin.model`).

The judge never changes the twin: it recomputes positions and contacts for the current ``qpos``
in its own ``MjData`` (after ``mj_step`` the twin's ``data.contact`` describes the state *before*
the step's integration, one physics step old).

Names come from the model: bodies ``<side>/<urdf link>``; the Allegro hand of a side is its
``<side>/base_link`` (the palm, collision geom ``<side>/palm_box``) and every body below it
(``<side>/link_0.0`` .. ``<side>/link_15.0``, the finger links and fingertips); everything else of
a side is the xArm. The palm centre is the site ``catcher/palm_center`` (0.03 m in front of the
palm frame's origin along its -z; about (0, -1.016, 0.439) world at the reset pose).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import mujoco
import numpy as np

CATCHER_PALM_SITE = "catcher/palm_center"
THROWER_PALM_SITE = "thrower/palm_center"
MAX_PALM_DISTANCE_M = 0.10  # object centre to the catcher palm centre, m
MIN_HEIGHT_M = 0.15  # object centre above the floor, m (the contract's termination height)
CONTACT_TOLERANCE_M = 1e-3  # a contact counts as touching up to this separation, m

SUCCESS_RULE = (
    "A handover succeeds when, at the end of the episode, the object is held by the catcher's hand: "
    f"(a) the object's centre is within {MAX_PALM_DISTANCE_M:.2f} m of the catcher's palm centre "
    f"(site {CATCHER_PALM_SITE}); (b) it is off the floor: its centre is above z = {MIN_HEIGHT_M:.2f} m "
    "(the training environment's termination height) and it touches neither the floor nor a pedestal; "
    "(c) it touches at least one finger link of the catcher's Allegro hand (a geom below catcher/base_link, "
    "the palm alone does not count); (d) it touches no geom of the thrower."
)

# Short machine-readable outcome kinds (for counting reasons), most to least severe.
KINDS = ("thrower", "dropped", "on_pedestal", "away", "not_gripped", "held")


@dataclass(frozen=True)
class Outcome:
    """The judgement of one episode's final state. Positions in m, world frame."""

    success: bool
    reason: str  # one short human sentence
    object_position: np.ndarray  # (3,) world, m
    distance_to_catcher_palm: float  # object centre to the catcher palm centre, m
    touches_catcher_fingers: bool
    touches_thrower: bool
    kind: str = "held"  # one of KINDS: what decided the outcome


def _descendants(model: mujoco.MjModel, root: int) -> set[int]:
    """Body ``root`` and every body below it."""
    out = {root}
    for b in range(root + 1, model.nbody):  # MuJoCo orders bodies parents first
        if int(model.body_parentid[b]) in out:
            out.add(b)
    return out


class SuccessJudge:
    """The success rule for one compiled model (geom sets computed once)."""

    def __init__(self, model: mujoco.MjModel):
        self.model = model
        self._scratch = mujoco.MjData(model)
        body_of = model.geom_bodyid
        geoms_on = lambda bodies: frozenset(int(g) for g in range(model.ngeom) if int(body_of[g]) in bodies)  # noqa: E731
        names = [model.body(b).name for b in range(model.nbody)]
        catcher_hand = _descendants(model, model.body("catcher/base_link").id)
        thrower_hand = _descendants(model, model.body("thrower/base_link").id)
        self.object_geom = model.geom("object").id
        self.object_body = model.body("object").id
        self.catcher_finger_geoms = geoms_on(catcher_hand - {model.body("catcher/base_link").id})
        self.thrower_geoms = geoms_on({b for b, n in enumerate(names) if n.startswith("thrower/")})
        self.thrower_hand_geoms = geoms_on(thrower_hand)
        self.floor_geom = model.geom("floor").id
        self.pedestal_geoms = frozenset(model.geom(f"{s}/pedestal").id for s in ("thrower", "catcher"))
        self.catcher_palm_site = model.site(CATCHER_PALM_SITE).id

    def touching(self, data: mujoco.MjData) -> set[int]:
        """Geoms in contact with the object in ``data`` (contacts as computed there)."""
        out = set()
        for c in data.contact[: data.ncon]:
            if c.dist > CONTACT_TOLERANCE_M:
                continue
            if c.geom1 == self.object_geom:
                out.add(int(c.geom2))
            elif c.geom2 == self.object_geom:
                out.add(int(c.geom1))
        return out

    def judge(self, data: mujoco.MjData) -> Outcome:
        """Apply :data:`SUCCESS_RULE` to the state (``qpos``) in ``data``; ``data`` is not changed."""
        m, s = self.model, self._scratch
        s.qpos[:] = data.qpos
        s.time = data.time
        mujoco.mj_fwdPosition(m, s)  # kinematics and contacts of exactly this qpos
        position = s.xpos[self.object_body].copy()
        distance = float(np.linalg.norm(position - s.site_xpos[self.catcher_palm_site]))
        touching = self.touching(s)
        fingers = bool(touching & self.catcher_finger_geoms)
        thrower = bool(touching & self.thrower_geoms)
        z = float(position[2])

        def out(kind: str, reason: str) -> Outcome:
            return Outcome(kind == "held", reason, position, distance, fingers, thrower, kind)

        if thrower:
            if touching & self.thrower_hand_geoms:
                return out("thrower", "still in the thrower's hand")
            return out("thrower", "touching the thrower's arm")
        if self.floor_geom in touching or z < MIN_HEIGHT_M:
            where = " (on the floor)" if self.floor_geom in touching else ""
            return out("dropped", f"dropped: object at z={z:.2f} m{where}")
        if touching & self.pedestal_geoms:
            side = "thrower" if m.geom("thrower/pedestal").id in touching else "catcher"
            return out("on_pedestal", f"resting on the {side}'s pedestal at z={z:.2f} m")
        if distance > MAX_PALM_DISTANCE_M:
            return out("away", f"not at the catcher: object {distance:.2f} m from its palm centre")
        if not fingers:
            return out("not_gripped", f"near the catcher's palm ({distance:.3f} m) but it does not touch the fingers")
        return out("held", "held by the catcher")


# A few recent judges. (Not a WeakKeyDictionary: a judge holds its model, so it would never expire.)
_JUDGES: "OrderedDict[int, SuccessJudge]" = OrderedDict()
_CACHE_SIZE = 8


def judge_for(model: mujoco.MjModel) -> SuccessJudge:
    """The judge of ``model``, cached for the few most recently judged models."""
    j = _JUDGES.get(id(model))
    if j is None or j.model is not model:
        j = _JUDGES[id(model)] = SuccessJudge(model)
        while len(_JUDGES) > _CACHE_SIZE:
            _JUDGES.popitem(last=False)
    _JUDGES.move_to_end(id(model))
    return j


def judge(twin) -> Outcome:
    """Judge the MuJoCo twin's current state (call it after the episode's last step)."""
    return judge_for(twin.model).judge(twin.data)
