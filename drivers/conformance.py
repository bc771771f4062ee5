"""Reusable conformance suites: every joint-group and object-tracker backend must pass them.

Use (one test module per backend)::

    from handover.drivers.conformance import JointGroupConformance, JointGroupHarness

    @pytest.fixture
    def joint_group_harness() -> JointGroupHarness:   # function scope; may also yield
        clock = ...                                    # the device's time source
        return JointGroupHarness(device=MyArm(...), now=clock.now, advance=clock.advance,
                                 settle_s=0.5, tolerance=0.01, make_failing=...)

    class TestMyArm(JointGroupConformance):
        pass

The fixture must give a fresh, UNCONFIGURED device; the suites close it after each test. Test
values are derived from the device's own limits (mid-range targets, targets beyond the limits),
so the suites know nothing about any particular backend. Units: rad, s, m.

Commands pass the command gate (:mod:`handover.runtime.command_gate`), which limits each command's
change to ``max_step``: the joint-group suite streams its targets at the device's control period
(``info.control_period_s``, advancing the harness clock between commands) and checks every target
sent. Its ``test_gate_*`` tests check the gate's rules on the backend; :func:`check_command_gate`
runs the same checks as one function (``GATE_CHECKS`` lists them).

The suites move the device: on hardware, run them only with a clear workspace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Protocol

import numpy as np
import pytest

from handover.drivers.device import Device, DeviceError, DeviceFault, DeviceStopped, Lifecycle
from handover.drivers.joint_group import JointGroup, JointGroupInfo, JointState
from handover.drivers.object_tracker import ObjectObservation, ObjectTracker
from handover.runtime.command_gate import GateMode


@dataclass
class JointGroupHarness:
    """How the joint-group suite drives one backend.

    - ``device``: a fresh, UNCONFIGURED joint group.
    - ``now()``: the device's current time (s), the value passed to ``read``/``command``.
    - ``advance(dt)``: let ``dt`` seconds pass (step a simulation or sleep); returns the new now.
    - ``settle_s``: time (s) within which a reachable target is reached and a held position settles.
    - ``tolerance``: allowed position error (rad).
    - ``make_failing()``: makes the next read or write of the device fail (once), to test FAULT;
      ``None`` skips the fault tests.
    """

    device: JointGroup
    now: Callable[[], float]
    advance: Callable[[float], float]
    settle_s: float
    tolerance: float
    make_failing: Optional[Callable[[], None]] = None


@dataclass
class ObjectTrackerHarness:
    """How the object-tracker suite drives one backend.

    - ``device``: a fresh, UNCONFIGURED object tracker; its scene must show the object.
    - ``now()`` / ``advance(dt)``: as in :class:`JointGroupHarness` (s).
    - ``period_s``: time between two reads of the suite (s), e.g. the camera frame period.
    - ``observe_s``: time (s) within which at least one valid observation must arrive.
    - ``make_failing()``: makes the next read fail (once); ``None`` skips the fault tests.
    """

    device: ObjectTracker
    now: Callable[[], float]
    advance: Callable[[float], float]
    period_s: float
    observe_s: float
    make_failing: Optional[Callable[[], None]] = None


class _Harness(Protocol):
    """What the lifecycle tests need from either harness."""

    device: Device
    now: Callable[[], float]
    advance: Callable[[float], float]
    make_failing: Optional[Callable[[], None]]


# -------------------------------------------------------------------------------------------------
# Shared lifecycle tests


_STATES = [s.value for s in Lifecycle]


class _DeviceConformance:
    """Lifecycle tests common to all devices. Each suite defines the ``harness`` fixture (a
    :class:`_Harness`) from its own public fixture and closes the device afterwards."""

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _read(h: _Harness):
        return h.device.read(h.now())  # type: ignore[attr-defined]

    def _stimulate(self, h: _Harness, k: int) -> None:
        """Something to do at step ``k`` of a run besides reading (joint groups: command)."""

    @staticmethod
    def _require_failing(h: _Harness) -> Callable[[], None]:
        if h.make_failing is None:
            pytest.skip("the harness cannot make the device fail (make_failing is None)")
        return h.make_failing

    def _bring_to(self, h: _Harness, state: Lifecycle) -> None:
        """Drive the fresh device into ``state`` through the public API only."""
        dev = h.device
        if state is Lifecycle.UNCONFIGURED:
            return
        dev.configure()
        if state is Lifecycle.ACTIVE:
            dev.activate()
        elif state is Lifecycle.STOPPED:
            dev.stop(h.now())  # type: ignore[attr-defined]
        elif state is Lifecycle.FAULT:
            self._require_failing(h)()
            with pytest.raises(DeviceFault):
                self._read(h)
        assert dev.state is state

    def _assert_commandable_after_reconnect(self, h: _Harness) -> None:
        """``configure()`` + ``activate()`` works and reads work; joint groups also check commands."""
        h.device.configure()
        h.device.activate()
        assert h.device.state is Lifecycle.ACTIVE
        self._read(h)

    # -- tests ------------------------------------------------------------------------------------

    def test_starts_unconfigured(self, harness: _Harness) -> None:
        assert harness.device.state is Lifecycle.UNCONFIGURED
        assert harness.device.fault_reason is None
        assert isinstance(harness.device.name, str) and harness.device.name

    def test_read_before_configure_is_refused(self, harness: _Harness) -> None:
        with pytest.raises(DeviceError, match="cannot read") as err:
            self._read(harness)
        assert not isinstance(err.value, (DeviceFault, DeviceStopped))
        assert harness.device.name in str(err.value)
        assert harness.device.state is Lifecycle.UNCONFIGURED

    def test_transitions_out_of_order_are_refused(self, harness: _Harness) -> None:
        dev = harness.device
        for call in (dev.activate, dev.deactivate):
            with pytest.raises(DeviceError):
                call()
        dev.configure()
        for call in (dev.configure, dev.deactivate):
            with pytest.raises(DeviceError):
                call()
        dev.activate()
        for call in (dev.configure, dev.activate):
            with pytest.raises(DeviceError):
                call()
        assert dev.state is Lifecycle.ACTIVE

    def test_configure_activate_deactivate_activate(self, harness: _Harness) -> None:
        dev = harness.device
        dev.configure()
        assert dev.state is Lifecycle.INACTIVE
        self._read(harness)
        dev.activate()
        assert dev.state is Lifecycle.ACTIVE
        self._read(harness)
        dev.deactivate()
        assert dev.state is Lifecycle.INACTIVE
        self._read(harness)
        dev.activate()
        assert dev.state is Lifecycle.ACTIVE
        self._read(harness)

    @pytest.mark.parametrize("state", _STATES)
    def test_close_from_any_state(self, harness: _Harness, state: str) -> None:
        self._bring_to(harness, Lifecycle(state))
        harness.device.close()
        assert harness.device.state is Lifecycle.UNCONFIGURED
        assert harness.device.fault_reason is None
        harness.device.close()  # closing a closed device is harmless
        self._assert_commandable_after_reconnect(harness)

    def test_context_manager_closes(self, harness: _Harness) -> None:
        with harness.device as dev:
            dev.configure()
            dev.activate()
        assert harness.device.state is Lifecycle.UNCONFIGURED

    def test_stop_latches_until_reconnect(self, harness: _Harness) -> None:
        dev = harness.device
        self._bring_to(harness, Lifecycle.ACTIVE)
        dev.stop(harness.now())  # type: ignore[attr-defined]
        assert dev.state is Lifecycle.STOPPED
        self._read(harness)  # reads still work
        for call in (dev.activate, dev.deactivate, dev.configure):
            with pytest.raises(DeviceStopped):
                call()
        assert dev.state is Lifecycle.STOPPED
        dev.close()
        self._assert_commandable_after_reconnect(harness)

    def test_stop_from_inactive(self, harness: _Harness) -> None:
        self._bring_to(harness, Lifecycle.STOPPED)
        self._read(harness)
        with pytest.raises(DeviceStopped):
            harness.device.activate()

    def test_stop_is_idempotent(self, harness: _Harness) -> None:
        self._bring_to(harness, Lifecycle.ACTIVE)
        harness.device.stop(harness.now())  # type: ignore[attr-defined]
        harness.device.stop(harness.now())  # type: ignore[attr-defined]
        harness.device.stop(harness.advance(0.01))  # type: ignore[attr-defined]
        assert harness.device.state is Lifecycle.STOPPED

    def test_stop_before_configure_is_refused(self, harness: _Harness) -> None:
        with pytest.raises(DeviceError):
            harness.device.stop(harness.now())  # type: ignore[attr-defined]
        assert harness.device.state is Lifecycle.UNCONFIGURED

    def _check_run_stamps(self, h: _Harness, dt: float, steps: int) -> list:
        """Read ``steps`` times, ``dt`` apart (with :meth:`_stimulate`); every stamp is
        ``<= now`` and none decreases. Returns the readings."""
        readings = []
        previous = -np.inf
        for k in range(steps):
            self._stimulate(h, k)
            now = h.advance(dt)
            reading = h.device.read(now)  # type: ignore[attr-defined]
            assert reading.stamp <= now, f"stamp {reading.stamp} is in the future (now {now})"
            assert reading.stamp >= previous, f"stamp went back from {previous} to {reading.stamp}"
            previous = reading.stamp
            readings.append(reading)
        return readings

    def test_failing_read_faults_until_reconnect(self, harness: _Harness) -> None:
        self._bring_to(harness, Lifecycle.ACTIVE)
        self._require_failing(harness)()
        with pytest.raises(DeviceFault):
            self._read(harness)
        self._assert_fault_latched(harness)

    def _assert_fault_latched(self, h: _Harness) -> None:
        """In FAULT, every call but ``close()`` raises DeviceFault naming the reason; ``close()`` +
        ``configure()`` recovers."""
        dev = h.device
        assert dev.state is Lifecycle.FAULT
        assert isinstance(dev.fault_reason, str) and dev.fault_reason
        calls: list[Callable[[], object]] = [
            lambda: self._read(h),
            lambda: dev.stop(h.now()),  # type: ignore[attr-defined]
            dev.activate,
            dev.deactivate,
            dev.configure,
            *self._fault_refused_calls(h),
        ]
        for call in calls:
            with pytest.raises(DeviceFault) as err:
                call()
            assert dev.fault_reason in str(err.value) and dev.name in str(err.value)
            assert dev.state is Lifecycle.FAULT
        dev.close()
        assert dev.state is Lifecycle.UNCONFIGURED and dev.fault_reason is None
        self._assert_commandable_after_reconnect(h)

    def _fault_refused_calls(self, h: _Harness) -> list[Callable[[], object]]:
        """Device-specific calls that FAULT must refuse."""
        return []


# -------------------------------------------------------------------------------------------------
# Joint groups


def _targets(info: JointGroupInfo, low: float, high: float) -> np.ndarray:
    """Per-joint targets inside the limits (rad): joint ``i`` at a fraction of its range going from
    ``low`` (first joint) to ``high`` (last), so the joints get distinct targets (order shows)."""
    lower, upper = np.asarray(info.lower), np.asarray(info.upper)
    return lower + np.linspace(low, high, info.size) * (upper - lower)


def _target_a(info: JointGroupInfo) -> np.ndarray:
    return _targets(info, 0.3, 0.7)


def _target_b(info: JointGroupInfo) -> np.ndarray:
    return _targets(info, 0.7, 0.3)


def _bad_commands(n: int) -> dict[str, np.ndarray]:
    one_nan = np.zeros(n)
    one_nan[n // 2] = np.nan
    return {
        "nan": np.full(n, np.nan),
        "one_nan": one_nan,
        "inf": np.full(n, np.inf),
        "minus_inf": np.full(n, -np.inf),
        "too_short": np.zeros(n - 1),
        "too_long": np.zeros(n + 1),
        "empty": np.zeros(0),
    }


# -- the command gate: checks every backend must pass ----------------------------------------------
#
# The gate lives in the JointGroup base class (handover.runtime.command_gate); these checks make
# sure a backend does not bypass or break it: the targets a backend is sent are the gated ones, a
# refusal leaves the device active and holding, a stale stream holds, and holds target the
# measured position. Each check takes a JointGroupHarness, brings the device to ACTIVE (any
# state: it reconnects) and leaves it ACTIVE; :func:`check_command_gate` runs them all.

_EXACT = 1e-12  # rad: the gate's arithmetic is exact up to rounding


def _period(h: JointGroupHarness) -> float:
    """The control period (s): the suites stream commands at this rate, as a controller would."""
    return float(h.device.info.control_period_s)


def _step(h: JointGroupHarness) -> np.ndarray:
    return np.asarray(h.device.gate_limits.max_step)


def _limits(h: JointGroupHarness) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(h.device.gate_limits.lower), np.asarray(h.device.gate_limits.upper)


def _gated(h: JointGroupHarness, reference: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """What the gate must send for ``raw`` (rad) from ``reference``: clamp, then limit the step."""
    lower, upper = _limits(h)
    step = _step(h)
    return np.clip(np.clip(raw, lower, upper), reference - step, reference + step)


def _activate(h: JointGroupHarness) -> JointGroup:
    """The device ACTIVE, from whatever state it is in (reconnecting it if needed)."""
    dev = h.device
    if dev.state in (Lifecycle.STOPPED, Lifecycle.FAULT):
        dev.close()
    if dev.state is Lifecycle.UNCONFIGURED:
        dev.configure()
    if dev.state is Lifecycle.INACTIVE:
        dev.activate()
    assert dev.state is Lifecycle.ACTIVE
    return dev


def _command_checked(h: JointGroupHarness, raw: np.ndarray, names=None) -> np.ndarray:
    """Command ``raw`` now (by ``names`` if given) and check the gate's invariants on what was sent:
    finite, clamped to the limits, within ``max_step`` of the reference, and what the rules say."""
    dev = h.device
    raw = np.asarray(raw, dtype=np.float64)
    sent = dev.command(raw, h.now()) if names is None else dev.command_by_name(names, raw, h.now())
    decision = dev.last_gate
    assert decision is not None and decision.accepted, f"{dev.name}: last_gate does not show the accepted command"
    np.testing.assert_array_equal(sent, decision.targets, err_msg="command() returned other targets than it sent")
    assert sent.shape == (dev.info.size,) and np.isfinite(sent).all(), f"not finite: {sent}"
    reference = np.asarray(decision.reference)
    in_order = raw if names is None else np.array([raw[list(names).index(n)] for n in dev.info.names])
    np.testing.assert_allclose(sent, _gated(h, reference, in_order), rtol=0, atol=_EXACT,
                               err_msg=f"{dev.name}: sent (rad) is not the clamped, rate-limited target")
    assert (np.abs(sent - reference) <= _step(h) + _EXACT).all(), f"a step beyond max_step: {sent - reference}"
    lower, upper = _limits(h)
    reachable = (reference >= lower - _step(h)) & (reference <= upper + _step(h))
    assert ((sent >= lower - _EXACT) & (sent <= upper + _EXACT) | ~reachable).all(), f"outside the limits: {sent}"
    outside = [n for n, v, lo, hi in zip(dev.info.names, in_order, lower, upper) if not lo <= v <= hi]
    assert list(decision.clamped) == outside, f"clamped flags {decision.clamped}, expected {outside}"
    return sent


def _stream(h: JointGroupHarness, raw: np.ndarray) -> np.ndarray:
    """Command ``raw`` once per control period (each command checked) until the gate lets its
    clamped value through unchanged; returns the last targets sent. Fails if that takes more
    commands than the distance and ``max_step`` allow."""
    lower, upper = _limits(h)
    goal = np.clip(raw, lower, upper)
    sent = _command_checked(h, raw)
    distance = np.abs(goal - np.asarray(h.device.last_gate.reference))
    budget = int(np.ceil(np.max(distance / _step(h)))) + 1
    for _ in range(budget):
        if np.array_equal(sent, goal):
            return sent
        h.advance(_period(h))
        sent = _command_checked(h, raw)
    np.testing.assert_array_equal(sent, goal, err_msg=f"{h.device.name}: not at the goal after {budget + 1} commands")
    return sent


def _assert_at(h: JointGroupHarness, expected: np.ndarray, wait_s: float) -> JointState:
    """After ``wait_s`` the measured position is within ``tolerance`` of ``expected`` (rad)."""
    state = h.device.read(h.advance(wait_s))
    np.testing.assert_allclose(state.position, expected, rtol=0, atol=h.tolerance,
                               err_msg=f"{h.device.name}: position (rad) in {h.device.info.names} order")
    return state


def _move_to(h: JointGroupHarness, target: np.ndarray) -> JointState:
    """Stream ``target`` (inside the limits) until sent, wait ``settle_s``; asserts it was reached."""
    np.testing.assert_array_equal(_stream(h, target), target)  # inside the limits: sent unchanged at last
    return _assert_at(h, target, h.settle_s)


def _assert_holding_measured(h: JointGroupHarness, held: Optional[np.ndarray] = None) -> np.ndarray:
    """The gate HOLDS, its reference being the position measured now (and ``held`` if given)."""
    gate = h.device.gate_state
    assert gate is not None and gate.mode is GateMode.HOLDING, f"{h.device.name}: gate is {gate and gate.mode}"
    measured = h.device.read(h.now()).position
    np.testing.assert_allclose(gate.reference, measured, rtol=0, atol=h.tolerance,
                               err_msg="a hold must target the measured position")
    if held is not None:
        np.testing.assert_array_equal(gate.reference, held)
    return np.array(gate.reference)


def check_gate_info(h: JointGroupHarness) -> None:
    """The gate's limits come from the device's info: names, position limits, velocity limit x control
    period per command (rad), stale periods x control period (s)."""
    info, limits = h.device.info, h.device.gate_limits
    assert limits.names == tuple(info.names)
    assert limits.lower == tuple(info.lower) and limits.upper == tuple(info.upper)
    assert len(info.velocity_limit) == info.size and all(np.isfinite(v) and v > 0 for v in info.velocity_limit)
    assert np.isfinite(info.control_period_s) and info.control_period_s > 0
    np.testing.assert_allclose(limits.max_step, np.asarray(info.velocity_limit) * info.control_period_s, rtol=1e-12)
    assert limits.stale_s == pytest.approx(info.stale_periods * info.control_period_s, rel=1e-12)


def check_gate_starts_holding(h: JointGroupHarness) -> None:
    """After activate() the gate holds (a hold never goes stale) and the first command moves at most
    ``max_step`` from the measured position."""
    dev = h.device
    if dev.state is not Lifecycle.UNCONFIGURED:
        dev.close()
    _activate(h)
    assert dev.gate_state is None or dev.gate_state.mode is GateMode.HOLDING
    h.advance(2 * dev.gate_limits.stale_s)
    assert dev.poll(h.now()) is None, "a holding group must not go stale"
    measured = dev.read(h.now()).position
    lower, upper = _limits(h)
    far = np.where(measured - lower > upper - measured, lower, upper)  # the farther limit, every joint
    _command_checked(h, far)
    np.testing.assert_allclose(dev.last_gate.reference, measured, rtol=0, atol=h.tolerance,
                               err_msg="the first command after activate() must start from the measured position")


def check_gate_limits_each_step(h: JointGroupHarness) -> None:
    """A jump is cut to ``max_step`` per command (an arm's 0.9 rad: 0.157 rad at 3.14 rad/s x 0.05 s)
    and reached by streaming; every joint also beyond its limit is clamped."""
    dev = _activate(h)
    a = _target_a(dev.info)
    _move_to(h, a)
    lower, upper = _limits(h)
    far = np.where(a - lower > upper - a, lower - 1.0, upper + 1.0)  # 1 rad past the farther limit
    sent = _command_checked(h, far)
    reference = np.asarray(dev.last_gate.reference)
    np.testing.assert_allclose(reference, a, rtol=0, atol=h.tolerance)
    cut = [n for n, r, g, s in zip(dev.info.names, reference, np.clip(far, lower, upper), _step(h)) if abs(g - r) > s]
    assert list(dev.last_gate.rate_limited) == cut, f"rate-limited flags {dev.last_gate.rate_limited}, expected {cut}"
    assert list(dev.last_gate.clamped) == list(dev.info.names)
    if cut:
        assert not np.array_equal(sent, np.clip(far, lower, upper)), "a jump beyond max_step went through"
    h.advance(_period(h))
    _stream(h, far)
    _assert_at(h, np.clip(far, lower, upper), h.settle_s)


def check_gate_refuses_non_finite_and_holds(h: JointGroupHarness) -> None:
    """A NaN target while following: ValueError naming the device and the joint, no fault, the group
    holds its measured position and the next command starts from there."""
    dev = _activate(h)
    _move_to(h, _target_a(dev.info))
    b = _target_b(dev.info)
    _command_checked(h, b)
    h.advance(_period(h))
    bad = b.copy()
    k = dev.info.size // 2
    bad[k] = np.nan
    with pytest.raises(ValueError, match=re.escape(dev.name)) as err:
        dev.command(bad, h.now())
    assert dev.info.names[k] in str(err.value) and "not finite" in str(err.value)
    assert dev.state is Lifecycle.ACTIVE and dev.fault_reason is None
    assert dev.last_gate is not None and not dev.last_gate.accepted and dev.last_gate.hold
    held = _assert_holding_measured(h)
    _assert_at(h, held, h.settle_s)
    _command_checked(h, b)
    np.testing.assert_array_equal(dev.last_gate.reference, held, err_msg="the next command must start from the hold")


def check_gate_matches_names(h: JointGroupHarness) -> None:
    """``command_by_name`` reorders by name; duplicate, unknown and missing names (and lengths that do
    not match) are refused with the names in the message; the group holds and does not fault."""
    dev = _activate(h)
    a = _target_a(dev.info)
    _move_to(h, a)
    names = list(dev.info.names)
    lower, upper = _limits(h)
    c = np.clip(a + np.linspace(-0.4, 0.4, dev.info.size) * _step(h), lower, upper)  # distinct, within one step
    h.advance(_period(h))
    _command_checked(h, c)  # from the settled position
    h.advance(_period(h))
    sent = _command_checked(h, c[::-1], names=names[::-1])
    np.testing.assert_array_equal(sent, c, err_msg="targets given in reverse name order must land by name")
    held = None
    for label, bad_names, values in (
        ("duplicate", [names[0]] + names[:-1], c),
        ("unknown", ["no/such_joint"] + names[1:], c),
        ("missing", names[:-1], c[:-1]),
        ("names but", names, c[:-1]),
    ):
        h.advance(_period(h))
        with pytest.raises(ValueError, match=re.escape(dev.name)) as err:
            dev.command_by_name(bad_names, values, h.now())
        assert label in str(err.value), f"{label!r} not in {err.value}"
        if label in ("duplicate", "unknown"):
            assert (names[0] if label == "duplicate" else "no/such_joint") in str(err.value)
        assert dev.state is Lifecycle.ACTIVE and dev.fault_reason is None
        held = _assert_holding_measured(h, held)
    _assert_at(h, held, h.settle_s)


def check_gate_stale_stream_holds(h: JointGroupHarness) -> None:
    """A followed stream that pauses for more than ``stale_s``: ``poll`` holds the measured position
    (once) and says why; a pause shorter than that changes nothing."""
    dev = _activate(h)
    _move_to(h, _target_a(dev.info))
    b = _target_b(dev.info)
    for _ in range(3):
        h.advance(_period(h))
        _command_checked(h, b)
    stale_s = dev.gate_limits.stale_s
    assert dev.poll(h.now()) is None
    h.advance(0.5 * stale_s)
    assert dev.poll(h.now()) is None, "not stale yet"
    assert dev.gate_state.mode is GateMode.FOLLOWING
    holds = dev.stale_holds
    h.advance(stale_s)
    reason = dev.poll(h.now())
    assert isinstance(reason, str) and "stale" in reason, f"poll after a pause of more than {stale_s} s: {reason!r}"
    assert dev.stale_holds == holds + 1
    held = _assert_holding_measured(h)
    assert dev.poll(h.now()) is None, "a hold is not repeated"
    _assert_at(h, held, h.settle_s)
    _command_checked(h, b)
    np.testing.assert_array_equal(dev.last_gate.reference, held)


def check_gate_hold_restarts_from_held(h: JointGroupHarness) -> None:
    """``hold()`` makes the gate hold the measured position, even while moving; the next command is
    rate-limited from there. After deactivate()/activate() it starts from the measured position."""
    dev = _activate(h)
    _move_to(h, _target_a(dev.info))
    b = _target_b(dev.info)
    _command_checked(h, b)
    h.advance(_period(h) / 2)
    held = dev.hold(h.now())
    _assert_holding_measured(h, held)
    h.advance(_period(h))
    _command_checked(h, b)
    np.testing.assert_array_equal(dev.last_gate.reference, held)
    dev.deactivate()
    _activate(h)
    measured = dev.read(h.now()).position
    _command_checked(h, _target_a(dev.info))
    np.testing.assert_allclose(dev.last_gate.reference, measured, rtol=0, atol=h.tolerance)


def check_gate_invariants(h: JointGroupHarness, commands: int = 40, seed: int = 0) -> None:
    """Random commands (up to 1 rad past the limits, some not finite) at random intervals (one or two
    control periods, sometimes a stale pause), with polls: every target sent is finite, clamped, within
    ``max_step`` of the reference; refusals leave the group active and holding."""
    dev = _activate(h)
    rng = np.random.default_rng(seed)
    lower, upper = _limits(h)
    period = _period(h)
    pauses = [0.0, period, period, period, 2 * period, dev.gate_limits.stale_s + period]
    for k in range(commands):
        h.advance(float(rng.choice(pauses)))
        if k % 5 == 4:
            dev.poll(h.now())
        raw = rng.uniform(lower - 1.0, upper + 1.0)
        if k % 7 == 6:
            raw[rng.integers(dev.info.size)] = rng.choice([np.nan, np.inf, -np.inf])
            with pytest.raises(ValueError, match=re.escape(dev.name)):
                dev.command(raw, h.now())
            assert dev.state is Lifecycle.ACTIVE and dev.gate_state.mode is GateMode.HOLDING
            continue
        _command_checked(h, raw)


GATE_CHECKS = (check_gate_info, check_gate_starts_holding, check_gate_limits_each_step,
               check_gate_refuses_non_finite_and_holds, check_gate_matches_names, check_gate_stale_stream_holds,
               check_gate_hold_restarts_from_held, check_gate_invariants)


def check_command_gate(h: JointGroupHarness) -> None:
    """Every gate check, one after the other, on one harness (the device is reconnected between them
    and closed at the end). :class:`JointGroupConformance` runs them as separate tests."""
    try:
        for check in GATE_CHECKS:
            if h.device.state is not Lifecycle.UNCONFIGURED:
                h.device.close()
            check(h)
    finally:
        h.device.close()


class JointGroupConformance(_DeviceConformance):
    """Conformance tests for :class:`JointGroup` backends (fixture: ``joint_group_harness``), the
    command gate's checks included (``test_gate_*``)."""

    @pytest.fixture
    def harness(self, joint_group_harness: JointGroupHarness) -> Iterator[JointGroupHarness]:
        yield joint_group_harness
        joint_group_harness.device.close()

    # -- helpers ----------------------------------------------------------------------------------

    def _stimulate(self, h: JointGroupHarness, k: int) -> None:
        """Alternate between the two test targets so the device moves during a run."""
        if h.device.state is Lifecycle.ACTIVE and k % 4 == 0:
            info = h.device.info
            h.device.command(_target_a(info) if k % 8 == 0 else _target_b(info), h.now())

    def _fault_refused_calls(self, h: JointGroupHarness) -> list[Callable[[], object]]:
        target = _target_a(h.device.info)
        return [lambda: h.device.command(target, h.now()), lambda: h.device.hold(h.now()),
                lambda: h.device.command_by_name(h.device.info.names, target, h.now())]

    def _assert_commandable_after_reconnect(self, h: JointGroupHarness) -> None:
        super()._assert_commandable_after_reconnect(h)
        self._move_to(h, _target_b(h.device.info))

    def _move_to(self, h: JointGroupHarness, target: np.ndarray) -> JointState:
        """Stream ``target`` (inside the limits) at the control rate until the gate sends it
        unchanged, then wait ``settle_s``; asserts it was reached."""
        return _move_to(h, target)

    _assert_at = staticmethod(_assert_at)

    def _assert_honest(self, h: JointGroupHarness, state: JointState) -> None:
        info = h.device.info
        assert isinstance(state, JointState)
        assert np.isfinite(state.stamp), "a measurement has a finite time"
        assert state.position.shape == (info.size,) and np.isfinite(state.position).all()
        for label, value, provided in (("velocity", state.velocity, info.provides_velocity),
                                       ("effort", state.effort, info.provides_effort)):
            if not provided:
                assert value is None, f"{label} is not provided, yet read returned {value}"
            else:
                assert value is not None, f"info says {label} is provided, read returned None"
                assert value.shape == (info.size,) and np.isfinite(value).all(), f"{label}: {value}"

    # -- tests ------------------------------------------------------------------------------------

    def test_info_names_and_limits(self, harness: JointGroupHarness) -> None:
        info = harness.device.info
        assert info.size > 0 and len(set(info.names)) == info.size
        assert all(isinstance(n, str) and n for n in info.names)
        assert len(info.lower) == len(info.upper) == info.size
        lower, upper = np.asarray(info.lower), np.asarray(info.upper)
        assert np.isfinite(lower).all() and np.isfinite(upper).all()
        assert (lower <= upper).all(), f"lower > upper at {np.flatnonzero(lower > upper)}"
        assert isinstance(info.provides_velocity, bool) and isinstance(info.provides_effort, bool)

    def test_read_shapes_and_optional_data(self, harness: JointGroupHarness) -> None:
        """Position has ``size`` finite entries; velocity/effort are None exactly when not provided,
        in every readable state and while moving."""
        dev = harness.device
        dev.configure()
        self._assert_honest(harness, self._read(harness))
        dev.activate()
        for state in self._check_run_stamps(harness, harness.settle_s / 4, 8):
            self._assert_honest(harness, state)
        dev.stop(harness.now())
        self._assert_honest(harness, self._read(harness))

    def test_stamps_monotonic_and_not_in_future(self, harness: JointGroupHarness) -> None:
        harness.device.configure()
        self._check_run_stamps(harness, harness.settle_s / 10, 5)  # inactive
        harness.device.activate()
        self._check_run_stamps(harness, harness.settle_s / 10, 30)  # moving between two targets

    def test_command_while_inactive_is_refused(self, harness: JointGroupHarness) -> None:
        dev = harness.device
        target = _target_a(dev.info)
        with pytest.raises(DeviceError):
            dev.command(target, harness.now())  # unconfigured
        dev.configure()
        for call in (lambda: dev.command(target, harness.now()), lambda: dev.hold(harness.now()),
                     lambda: dev.command_by_name(dev.info.names, target, harness.now())):
            with pytest.raises(DeviceError) as err:
                call()
            assert not isinstance(err.value, (DeviceFault, DeviceStopped))
        assert dev.poll(harness.now()) is None  # a timer may poll in any state
        dev.activate()
        dev.deactivate()
        with pytest.raises(DeviceError):
            dev.command(target, harness.now())
        assert dev.state is Lifecycle.INACTIVE

    def test_reachable_targets_are_reached_in_joint_order(self, harness: JointGroupHarness) -> None:
        """Distinct per-joint targets (rad) are reached within ``settle_s``: the measured numbers
        equal the commanded ones joint by joint, in ``info.names`` order."""
        self._bring_to(harness, Lifecycle.ACTIVE)
        self._move_to(harness, _target_a(harness.device.info))
        self._move_to(harness, _target_b(harness.device.info))

    def test_hold_keeps_position(self, harness: JointGroupHarness) -> None:
        self._bring_to(harness, Lifecycle.ACTIVE)
        at = self._move_to(harness, _target_a(harness.device.info))
        held = harness.device.hold(harness.now())
        assert held.shape == (harness.device.info.size,)
        np.testing.assert_allclose(held, at.position, rtol=0, atol=harness.tolerance)
        self._assert_at(harness, held, harness.settle_s)
        self._assert_at(harness, held, harness.settle_s)

    def test_hold_while_moving_settles_at_hold_target(self, harness: JointGroupHarness) -> None:
        dev = harness.device
        self._bring_to(harness, Lifecycle.ACTIVE)
        self._move_to(harness, _target_a(dev.info))
        dev.command(_target_b(dev.info), harness.now())
        harness.advance(harness.settle_s / 10)
        measured = dev.read(harness.now()).position
        held = dev.hold(harness.now())
        # hold targets the measured position as it is (a hold never moves a joint, not even into the limits)
        np.testing.assert_allclose(held, measured, rtol=0, atol=harness.tolerance)
        self._assert_at(harness, held, harness.settle_s)

    def test_out_of_limit_targets_are_clamped(self, harness: JointGroupHarness) -> None:
        """Targets past the limits, streamed: every target sent is clamped (and rate-limited); the
        stream ends at the limits, and the joints stay within them."""
        dev = harness.device
        info = dev.info
        lower, upper = np.asarray(info.lower), np.asarray(info.upper)
        beyond = np.maximum(1.0, upper - lower)  # rad past the limit
        below_or_above = np.where(np.arange(info.size) % 2 == 0, lower - beyond, upper + beyond)
        self._bring_to(harness, Lifecycle.ACTIVE)
        for raw in (below_or_above, lower - beyond, upper + beyond):
            sent = _stream(harness, raw)
            np.testing.assert_array_equal(sent, np.clip(raw, lower, upper))
            state = self._assert_at(harness, sent, harness.settle_s)
            assert (state.position >= lower - harness.tolerance).all()
            assert (state.position <= upper + harness.tolerance).all()

    @pytest.mark.parametrize("bad", list(_bad_commands(3)))
    def test_invalid_command_is_refused_and_holds(self, harness: JointGroupHarness, bad: str) -> None:
        """Refused with ValueError naming the device, no fault; the group holds where it is."""
        dev = harness.device
        self._bring_to(harness, Lifecycle.ACTIVE)
        at = _target_a(dev.info)
        self._move_to(harness, at)
        with pytest.raises(ValueError, match=re.escape(dev.name)):
            dev.command(_bad_commands(dev.info.size)[bad], harness.now())
        assert dev.state is Lifecycle.ACTIVE and dev.fault_reason is None
        assert not dev.last_gate.accepted and dev.gate_state.mode is GateMode.HOLDING
        self._assert_at(harness, at, harness.settle_s)

    def test_stop_holds_and_refuses_commands(self, harness: JointGroupHarness) -> None:
        dev = harness.device
        self._bring_to(harness, Lifecycle.ACTIVE)
        at = _target_a(dev.info)
        self._move_to(harness, at)
        dev.stop(harness.now())
        target = _target_b(dev.info)
        for call in (lambda: dev.command(target, harness.now()), lambda: dev.hold(harness.now())):
            with pytest.raises(DeviceStopped):
                call()
        self._assert_at(harness, at, harness.settle_s)
        self._assert_at(harness, at, harness.settle_s)
        dev.stop(harness.now())  # idempotent, still held
        dev.close()
        self._assert_commandable_after_reconnect(harness)  # ... and moves to target B

    def test_failing_write_faults_until_reconnect(self, harness: JointGroupHarness) -> None:
        self._bring_to(harness, Lifecycle.ACTIVE)
        harness.device.hold(harness.now())  # the gate knows where the joints are: the command only writes
        self._require_failing(harness)()
        with pytest.raises(DeviceFault):
            harness.device.command(_target_a(harness.device.info), harness.now())
        self._assert_fault_latched(harness)

    # -- the command gate (see check_command_gate) ------------------------------------------------

    def test_gate_info(self, harness: JointGroupHarness) -> None:
        check_gate_info(harness)

    def test_gate_starts_holding(self, harness: JointGroupHarness) -> None:
        check_gate_starts_holding(harness)

    def test_gate_limits_each_step(self, harness: JointGroupHarness) -> None:
        check_gate_limits_each_step(harness)

    def test_gate_refuses_non_finite_and_holds(self, harness: JointGroupHarness) -> None:
        check_gate_refuses_non_finite_and_holds(harness)

    def test_gate_matches_names(self, harness: JointGroupHarness) -> None:
        check_gate_matches_names(harness)

    def test_gate_stale_stream_holds(self, harness: JointGroupHarness) -> None:
        check_gate_stale_stream_holds(harness)

    def test_gate_hold_restarts_from_held(self, harness: JointGroupHarness) -> None:
        check_gate_hold_restarts_from_held(harness)

    def test_gate_invariants(self, harness: JointGroupHarness) -> None:
        check_gate_invariants(harness)

# -------------------------------------------------------------------------------------------------
# Object trackers


class ObjectTrackerConformance(_DeviceConformance):
    """Conformance tests for :class:`ObjectTracker` backends (fixture: ``object_tracker_harness``)."""

    @pytest.fixture
    def harness(self, object_tracker_harness: ObjectTrackerHarness) -> Iterator[ObjectTrackerHarness]:
        yield object_tracker_harness
        object_tracker_harness.device.close()

    def _observe(self, h: ObjectTrackerHarness) -> list[ObjectObservation]:
        steps = max(1, int(np.ceil(h.observe_s / h.period_s)))
        return self._check_run_stamps(h, h.period_s, steps)

    def test_stamps_monotonic_and_not_in_future(self, harness: ObjectTrackerHarness) -> None:
        """Capture stamps (older than their arrival is fine) never decrease and are ``<= now``."""
        harness.device.configure()
        self._observe(harness)
        harness.device.activate()
        self._observe(harness)

    def test_observations_are_honest(self, harness: ObjectTrackerHarness) -> None:
        """Valid: a finite (3,) position (m); invalid: position None. At least one valid one
        arrives within ``observe_s``."""
        harness.device.configure()
        harness.device.activate()
        observations = self._observe(harness)
        for obs in observations:
            assert isinstance(obs, ObjectObservation) and isinstance(obs.valid, (bool, np.bool_))
            if obs.valid:
                assert obs.position is not None and obs.position.shape == (3,)
                assert np.isfinite(obs.position).all() and np.isfinite(obs.stamp)
            else:
                assert obs.position is None, f"invalid observation with a position: {obs}"
        assert any(o.valid for o in observations), f"no valid observation within {harness.observe_s} s"
