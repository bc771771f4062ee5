"""The MuJoCo twin: its devices pass the conformance suites, and its physics does what the facts
and the configured gains predict. Units: m, rad, s, kg."""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np
import pytest

from handover.drivers.conformance import (
    JointGroupConformance,
    JointGroupHarness,
    ObjectTrackerConformance,
    ObjectTrackerHarness,
)
from handover.runtime.cell_config import load_cell_config
from handover.sim_twin.devices import GROUPS, TwinDevices
from handover.sim_twin.model import build_model, export_mjcf
from handover.sim_twin.twin import EpisodeParams, Twin

CFG = load_cell_config()
FAR_AWAY = np.array([1.5, 1.5, 0.05])  # object parked on the floor, away from both robots


@pytest.fixture(scope="module")
def twin() -> Twin:
    return Twin(CFG)


def clamped_default() -> np.ndarray:
    cfg = CFG
    return np.clip(np.array(cfg.thrower.default + cfg.catcher.default),
                   np.array(cfg.thrower.lower + cfg.catcher.lower), np.array(cfg.thrower.upper + cfg.catcher.upper))


# --------------------------------------------------------------------------- conformance


@pytest.fixture(params=[f"{s}_{g}" for s, g in GROUPS])
def joint_group_harness(request):
    side, group = request.param.split("_")
    twin = Twin(CFG)
    twin.set_object_state(FAR_AWAY, np.zeros(3))  # the object would be pressed into the pedestal by some targets
    device = TwinDevices.create(twin).joint_groups[(side, group)]
    return JointGroupHarness(
        device=device,
        now=lambda: twin.time,
        advance=twin.advance,
        settle_s=2.5 if group == "arm" else 1.0,
        tolerance=0.02,
        make_failing=lambda: device.fail_next(OSError("simulated bus timeout")),
    )


class TestTwinJointGroups(JointGroupConformance):
    pass


@pytest.fixture
def object_tracker_harness():
    twin = Twin(CFG)
    device = TwinDevices.create(twin).tracker
    return ObjectTrackerHarness(
        device=device,
        now=lambda: twin.time,
        advance=twin.advance,
        period_s=1.0 / 90.0,
        observe_s=0.2,
        make_failing=lambda: device.fail_next(OSError("simulated USB disconnect")),
    )


class TestTwinTracker(ObjectTrackerConformance):
    pass


# --------------------------------------------------------------------------- the model


def test_model_names_and_structure():
    m = build_model(CFG)
    hinge = [m.joint(i).name for i in range(m.njnt) if m.jnt_type[i] == mujoco.mjtJoint.mjJNT_HINGE]
    assert hinge[:22] == list(CFG.thrower.joint_names) and hinge[22:] == list(CFG.catcher.joint_names)
    assert "thrower/joint2" in hinge and "catcher/joint_12.0" in hinge
    assert m.jnt_type[m.joint("object").id] == mujoco.mjtJoint.mjJNT_FREE
    assert m.camera("d435").id >= 0 and m.camera("overview").id >= 0
    assert m.nu == 44
    # training limits, PD gains and effort limits from the config / contract
    j = m.joint("catcher/joint5")
    np.testing.assert_allclose(m.jnt_range[j.id], [-1.69297, 3.14159265359])
    a = m.actuator("thrower/joint3")
    assert m.actuator_gainprm[a.id, 0] == 64.0 and m.actuator_biasprm[a.id, 1] == -64.0
    np.testing.assert_allclose(m.actuator_forcerange[a.id], [-32.0, 32.0])
    f = m.actuator("catcher/joint_9.0")
    assert m.actuator_gainprm[f.id, 0] == 30.0 and m.actuator_biasprm[f.id, 2] == -1.0
    np.testing.assert_allclose(m.actuator_forcerange[f.id], [-5.0, 5.0])
    # link masses (robot-cell.md)
    assert m.body("thrower/link2").mass[0] == pytest.approx(1.71)
    assert m.body("catcher/link_15.0").mass[0] == pytest.approx(0.131691)
    assert m.opt.timestep * 6 == pytest.approx(1 / 60)


def test_forward_kinematics_matches_the_urdf_numbers():
    """Default pose: the thrower's palm_center, from a hand-chained transform of robot-cell.md's
    rows (worked out once with numpy, see test comment), is at (0.001, -0.334, 0.439)."""
    m = build_model(CFG)
    d = mujoco.MjData(m)
    mujoco.mj_resetDataKeyframe(m, d, m.key("home").id)
    mujoco.mj_forward(m, d)
    np.testing.assert_allclose(d.site("thrower/palm_center").xpos, [0.001, -0.334, 0.439], atol=1.5e-3)
    np.testing.assert_allclose(d.site("catcher/palm_center").xpos, [0.0, -1.016, 0.439], atol=1.5e-3)
    np.testing.assert_allclose(d.body("thrower/link1").xpos, [0.0, 0.0, 0.467], atol=1e-6)


def test_export_mjcf_loads_in_mujoco(tmp_path):
    path = export_mjcf(CFG, tmp_path / "cell.xml")
    m = mujoco.MjModel.from_xml_path(str(path))
    assert m.nu == 44 and m.joint("thrower/joint2").id >= 0 and m.body("object").id >= 0
    assert m.camera("d435").id >= 0


def test_export_mjcf_command(tmp_path, capsys):
    from handover.cli import main

    assert main(["twin", "export-mjcf", str(tmp_path / "out.xml")]) == 0
    assert mujoco.MjModel.from_xml_path(str(tmp_path / "out.xml")).nu == 44


# --------------------------------------------------------------------------- physics


def test_ballistic_flight_matches_the_integrator_prediction(twin):
    """Free flight with MuJoCo's semi-implicit Euler (v += g dt, then x += v dt) falls below the
    analytic parabola by exactly 1/2 |g| dt t: 4.09 mm after 0.3 s at dt = 1/360 s, none
    horizontally. The bound required by the issue is 5 mm."""
    twin.reset()
    x0, v0 = np.array([1.2, 1.0, 1.5]), np.array([-0.8, -2.0, 2.5])
    twin.set_object_state(x0, v0)
    t0 = twin.time
    twin.step(18)  # 0.3 s
    t = twin.time - t0
    assert t == pytest.approx(0.3)
    g = np.array([0.0, 0.0, -9.81])
    analytic = x0 + v0 * t + 0.5 * g * t**2
    predicted_error = -0.5 * 9.81 * twin.model.opt.timestep * t
    err = twin.object_position() - analytic
    assert np.linalg.norm(err) < 5e-3
    assert err[2] == pytest.approx(predicted_error, abs=1e-6)
    np.testing.assert_allclose(err[:2], 0.0, atol=1e-9)


def second_order_step(inertia: float, kp: float, kd: float, t: np.ndarray) -> np.ndarray:
    """Unit step response of  I x'' + kd x' + kp x = kp  from rest (closed form via the roots)."""
    a, b, c = inertia, kd, kp
    roots = np.roots([a, b, c]).astype(complex)
    r1, r2 = roots
    if abs(r1 - r2) < 1e-9:  # critically damped
        return (1 - (1 - r1.real * t) * np.exp(r1.real * t)).real
    c1 = r2 / (r1 - r2)
    c2 = -r1 / (r1 - r2)
    return (1 + c1 * np.exp(r1 * t) + c2 * np.exp(r2 * t)).real


def rise_time(t: np.ndarray, y: np.ndarray) -> float:
    """10 % to 90 % rise time of a unit-normalised response."""
    return float(t[np.argmax(y >= 0.9)] - t[np.argmax(y >= 0.1)])


def effective_inertia(twin: Twin, joint: str) -> float:
    """Diagonal entry of the joint-space mass matrix at the current pose (kg m^2)."""
    m, d = twin.model, twin.data
    i = m.jnt_dofadr[m.joint(joint).id]
    e = np.zeros(m.nv)
    e[i] = 1.0
    out = np.zeros(m.nv)
    mujoco.mj_mulM(m, d, out, e)
    return float(out[i] + m.dof_armature[i])


@pytest.mark.parametrize(
    "joint, step, kp, kd, zeta_expected, overshoot_expected, rise_expected",
    [
        # catcher joint2 at the default pose: I = 0.510 kg m^2 -> zeta = 20 / (2 sqrt(100 * 0.510)) = 1.40:
        # no overshoot, 10-90 % rise time 0.383 s.
        ("catcher/joint2", 0.2, 100.0, 20.0, 1.40, 0.0, 0.383),
        # catcher joint5: I = 0.104 kg m^2 -> zeta = 6 / (2 sqrt(64 * 0.104)) = 1.16, rise time 0.169 s.
        ("catcher/joint5", 0.2, 64.0, 6.0, 1.16, 0.0, 0.169),
        # thrower joint_1.0 (index finger, proximal, carrying the rest of the finger):
        # I = 0.00298 + 0.001 armature = 0.00398 kg m^2 -> zeta = 1 / (2 sqrt(30 * 0.00398)) = 1.45,
        # no overshoot, rise time 0.064 s.
        ("thrower/joint_1.0", -0.1, 30.0, 1.0, 1.45, 0.0, 0.064),
    ],
)
def test_step_response_matches_the_pd_gains(twin, joint, step, kp, kd, zeta_expected, overshoot_expected, rise_expected):
    """A step on one joint, the others holding: the response is the one the configured PD gains
    predict for I q'' + kd q' + kp (q - q_target) = 0, with I the joint's mass-matrix entry plus
    armature at that pose. Expected numbers (stated in the parameters) were worked out from that
    equation; the simulation must agree within 10 % on rise time and 2 points on overshoot."""
    k = CFG.joint_names.index(joint)
    group = k % 22  # index within the side: 0..5 arm, 6..21 hand
    configured = (CFG.twin.arm_stiffness[group], CFG.twin.arm_damping[group]) if group < 6 else (CFG.twin.hand_stiffness, CFG.twin.hand_damping)
    assert configured == (kp, kd)
    twin.reset()
    twin.set_object_state(FAR_AWAY, np.zeros(3))
    twin.step(10)
    k = twin.cfg.joint_names.index(joint)
    q0 = twin.joint_positions()[k]
    inertia = effective_inertia(twin, joint)
    twin.data.ctrl[twin.actuator_ids[k]] = q0 + step
    times, qs = [], []
    for _ in range(int(1.5 / twin.model.opt.timestep)):
        twin.advance(twin.model.opt.timestep)
        times.append(twin.time)
        qs.append(twin.data.qpos[twin.qpos_adr[k]])
    t = np.array(times) - times[0] + twin.model.opt.timestep
    y = (np.array(qs) - q0) / step
    predicted = second_order_step(inertia, kp, kd, t)
    zeta = kd / (2 * np.sqrt(kp * inertia))
    overshoot_pred = max(0.0, predicted.max() - 1.0)
    overshoot_sim = max(0.0, y.max() - 1.0)
    assert zeta == pytest.approx(zeta_expected, abs=0.02), f"I = {inertia:.4g}"
    assert rise_time(t, predicted) == pytest.approx(rise_expected, rel=0.05)
    assert overshoot_pred == pytest.approx(overshoot_expected, abs=0.005)
    assert rise_time(t, y) == pytest.approx(rise_time(t, predicted), rel=0.10), f"zeta={zeta:.2f} I={inertia:.4g}"
    assert overshoot_sim == pytest.approx(overshoot_pred, abs=0.02)
    assert y[-1] == pytest.approx(1.0, abs=0.02)  # settles at the target


def test_targets_outside_limits_never_move_a_joint_outside(twin):
    """Every joint commanded 1 rad past its upper, then past its lower limit, through the devices
    (which clamp). MuJoCo's joint limits are soft constraints (time constant 2 physics steps here):
    with the targets clamped to the limits, no joint may pass a limit by more than 15 mrad, even
    with the object pressing on the closing fingers (11 mrad measured)."""
    twin.reset()
    devices = TwinDevices.create(twin)
    devices.bring_up()
    lower, upper = np.array(CFG.thrower.lower + CFG.catcher.lower), np.array(CFG.thrower.upper + CFG.catcher.upper)
    worst = 0.0
    for sign in (+1, -1):
        for (side, group), dev in devices.joint_groups.items():
            far = np.array(dev.info.upper if sign > 0 else dev.info.lower) + sign * 1.0
            sent = dev.command(far, twin.time)
            np.testing.assert_array_equal(sent, np.clip(far, dev.info.lower, dev.info.upper))
        for _ in range(150):  # 2.5 s
            twin.step()
            q = twin.joint_positions()
            worst = max(worst, float(np.max(np.maximum(q - upper, lower - q))))
    assert worst < 0.015, f"a joint went {worst:.4f} rad beyond its limit"


def test_object_stays_in_the_throwers_palm_at_reset(twin):
    """After reset, with both hands holding their default pose for 3 s, the 5 cm cube stays in the
    thrower's hand: within 4 cm of where it started, above 0.3 m, touching thrower geoms only."""
    twin.reset()
    start = twin.object_position()
    for _ in range(180):
        twin.step()
    pos = twin.object_position()
    assert np.linalg.norm(pos - start) < 0.04 and pos[2] > 0.3
    m, d = twin.model, twin.data
    touching = set()
    for c in d.contact[: d.ncon]:
        for g, other in ((c.geom1, c.geom2), (c.geom2, c.geom1)):
            if g == twin.object_geom:
                touching.add(m.body(m.geom_bodyid[other]).name.split("/")[0])
    assert touching == {"thrower"}


def test_episode_params_change_the_object_and_hand_gains(twin):
    twin.reset(EpisodeParams(mass_factor=1.5, friction_factor=0.7, scale_factor=1.05, hand_stiffness_scale=1.2,
                             hand_damping_scale=0.5))
    m = twin.model
    assert m.body_mass[twin.object_body] == pytest.approx(0.22867 * 1.5)
    assert m.geom_friction[twin.object_geom, 0] == pytest.approx(0.7)
    np.testing.assert_allclose(m.geom_size[twin.object_geom], [0.02625] * 3)
    a = m.actuator("thrower/joint_5.0").id
    assert m.actuator_gainprm[a, 0] == pytest.approx(36.0) and m.actuator_biasprm[a, 2] == pytest.approx(-0.5)
    twin.reset()  # back to nominal
    assert m.body_mass[twin.object_body] == pytest.approx(0.22867)
    assert m.actuator_gainprm[a, 0] == pytest.approx(30.0)
    with pytest.raises(ValueError, match="mass_factor"):
        EpisodeParams(mass_factor=0.0)


@pytest.mark.parametrize("mass_factor", [0.5, 1.5, 1.0])
def test_a_changed_object_mass_still_falls_at_g(twin, mass_factor):
    # Regression: MuJoCo caches mass-derived constants; a light object used to fall at g/2.
    twin.reset(EpisodeParams(mass_factor=mass_factor))
    twin.set_object_state(np.array([0.5, 0.5, 1.5]), np.zeros(3))
    twin.step(6)  # 0.1 s of free fall
    assert twin.object_velocity()[2] == pytest.approx(-9.81 * 6 * twin.cfg.control_period_s, rel=1e-3)


def test_reset_pose_and_object_start(twin):
    twin.reset()
    twin.step(3)
    twin.reset()
    np.testing.assert_allclose(twin.joint_positions(), clamped_default(), atol=1e-9)
    np.testing.assert_allclose(twin.object_position(), CFG.object.start_position, atol=1e-9)
    assert twin.time == 0.0


def test_tracker_noise_latency_and_dropout():
    cfg = dataclasses.replace(CFG, twin=dataclasses.replace(
        CFG.twin, tracker=dataclasses.replace(CFG.twin.tracker, latency_s=0.05, noise_std=0.003, dropout=0.3)))
    twin = Twin(cfg, seed=1)
    dev = TwinDevices.create(twin).tracker
    dev.configure()
    errors, valid, lags = [], 0, []
    for _ in range(240):  # 4 s at 60 Hz
        twin.step()
        obs = dev.read(twin.time)
        lags.append(twin.time - obs.stamp)
        if obs.valid:
            valid += 1
            errors.append(obs.position - twin.object_position())  # object nearly at rest: noise only
        else:
            assert obs.position is None
    errors = np.array(errors)
    lags = np.array(lags)
    assert np.isinf(lags[:2]).all()  # nothing arrives before 50 ms
    arrived = lags[np.isfinite(lags)]
    # capture age at a read: the latency plus up to one frame period (frames at 90 Hz, reads at 60 Hz)
    assert arrived.min() >= 0.05 - 1e-9 and arrived.max() <= 0.05 + 1 / 90 + 1e-9
    assert 0.5 < valid / 240 < 0.85  # about 70 % of frames carry a detection
    assert np.std(errors) == pytest.approx(0.003, rel=0.3)
